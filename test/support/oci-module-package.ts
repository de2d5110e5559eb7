/**
 * An OpenTofu module package as OpenTofu expects it at an `oci://` source
 * (https://opentofu.org/docs/cli/oci_registries/module-package): an OCI image manifest with
 * `artifactType: application/vnd.opentofu.modulepkg`, the empty config blob
 * (`application/vnd.oci.empty.v1+json`, `{}`) and exactly one `archive/zip` layer holding the
 * module's files. Built as an OCI image layout directory on disk (oci-layout, index.json,
 * blobs/sha256/...) and pushed with `skopeo copy`, credentials through a 0600 auth file.
 *
 * The zip writer is minimal (deflate through node:zlib, fixed timestamps) so the package's
 * digests are reproducible.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { crc32, deflateRawSync, inflateRawSync } from "node:zlib";

const execFileAsync = promisify(execFile);

const MODULE_PACKAGE_ARTIFACT_TYPE = "application/vnd.opentofu.modulepkg";
const MODULE_PACKAGE_LAYER_TYPE = "archive/zip";
const OCI_EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json";
const OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX_TYPE = "application/vnd.oci.image.index.v1+json";

interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface ModulePackage {
  /** The OCI image layout directory. */
  readonly layoutDir: string;
  readonly tag: string;
  readonly zip: Buffer;
  readonly zipDigest: string;
  readonly manifestDigest: string;
  readonly manifest: Readonly<Record<string, unknown>>;
}

function digestOf(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** A zip archive of `files` (name → content), deflated, with a fixed 1980-01-01 timestamp. */
function makeZip(files: Readonly<Record<string, string | Uint8Array>>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  const dosTime = 0;
  const dosDate = (0 << 9) | (1 << 5) | 1; // 1980-01-01
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);
    const nameBytes = Buffer.from(name, "utf8");
    const compressed = deflateRawSync(data);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // flags: UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(dosTime, 10);
    local.writeUInt16LE(dosDate, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(0, 28);
    locals.push(local, nameBytes, compressed);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x0314, 4); // made by: Unix, 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(dosTime, 12);
    central.writeUInt16LE(dosDate, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(compressed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt16LE(0, 30); // extra
    central.writeUInt16LE(0, 32); // comment
    central.writeUInt16LE(0, 34); // disk
    central.writeUInt16LE(0, 36); // internal attributes
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // external: regular file 0644
    central.writeUInt32LE(offset, 42);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + compressed.length;
  }
  const centralDir = Buffer.concat(centrals);
  const count = Object.keys(files).length;
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(count, 8);
  end.writeUInt16LE(count, 10);
  end.writeUInt32LE(centralDir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, centralDir, end]);
}

/** Reads back the files of a zip made by `makeZip` (or any deflate/stored zip without data descriptors). */
export function readZip(zip: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new Error("not a zip (no end of central directory)");
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error("bad central directory entry");
    const method = zip.readUInt16LE(p + 10);
    const csize = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const localOffset = zip.readUInt32LE(p + 42);
    const name = zip.subarray(p + 46, p + 46 + nameLen).toString("utf8");
    const lNameLen = zip.readUInt16LE(localOffset + 26);
    const lExtraLen = zip.readUInt16LE(localOffset + 28);
    const start = localOffset + 30 + lNameLen + lExtraLen;
    const raw = zip.subarray(start, start + csize);
    out[name] = (method === 8 ? inflateRawSync(raw) : raw).toString("utf8");
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** The default module: one main.tf with an output, so a test can tell packages apart by `marker`. */
function moduleFiles(marker: string): Record<string, string> {
  return {
    "main.tf": `output "marker" {\n  value = ${JSON.stringify(marker)}\n}\n`,
    "versions.tf": 'terraform {\n  required_version = ">= 1.10"\n}\n',
  };
}

async function writeBlob(layoutDir: string, data: Uint8Array): Promise<Descriptor & { mediaType: "" }> {
  const digest = digestOf(data);
  await writeFile(join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length)), data);
  return { mediaType: "", digest, size: data.length };
}

/**
 * Writes an OCI image layout holding one module package tagged `tag`. `files` defaults to
 * `moduleFiles(tag)`. The caller removes `layoutDir` (or passes a directory it owns).
 */
export async function buildModulePackage(options: {
  readonly layoutDir?: string;
  readonly tag?: string;
  readonly files?: Readonly<Record<string, string | Uint8Array>>;
}): Promise<ModulePackage> {
  const tag = options.tag ?? "1.0.0";
  const layoutDir = options.layoutDir ?? (await mkdtemp(join(tmpdir(), "oca-modpkg-")));
  await mkdir(join(layoutDir, "blobs", "sha256"), { recursive: true });
  const zip = makeZip(options.files ?? moduleFiles(tag));
  const config = await writeBlob(layoutDir, Buffer.from("{}"));
  const layer = await writeBlob(layoutDir, zip);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST_TYPE,
    artifactType: MODULE_PACKAGE_ARTIFACT_TYPE,
    config: { mediaType: OCI_EMPTY_CONFIG_TYPE, digest: config.digest, size: config.size },
    layers: [{ mediaType: MODULE_PACKAGE_LAYER_TYPE, digest: layer.digest, size: layer.size }],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestBlob = await writeBlob(layoutDir, manifestBytes);
  await writeFile(join(layoutDir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    join(layoutDir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX_TYPE,
      manifests: [
        {
          mediaType: OCI_MANIFEST_TYPE,
          artifactType: MODULE_PACKAGE_ARTIFACT_TYPE,
          digest: manifestBlob.digest,
          size: manifestBlob.size,
          annotations: { "org.opencontainers.image.ref.name": tag },
        },
      ],
    }),
  );
  return { layoutDir, tag, zip, zipDigest: layer.digest, manifestDigest: manifestBlob.digest, manifest };
}

/** A containers-style auth file (0600, in its own 0700 directory) for one registry key. */
export async function writeAuthFile(
  key: string,
  username: string,
  password: string,
): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "oca-authfile-"));
  const path = join(dir, "auth.json");
  const auth = Buffer.from(`${username}:${password}`, "utf8").toString("base64");
  await writeFile(path, JSON.stringify({ auths: { [key]: { auth } } }), { mode: 0o600 });
  return {
    path,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface PushTarget {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly repository: string;
  /** The registry CA for skopeo (`--dest-cert-dir`). */
  readonly certDir: string;
  readonly username: string;
  readonly password: string;
}

/** Pushes a module package with `skopeo copy`, credentials through a temporary 0600 auth file. */
export async function pushModulePackage(pkg: ModulePackage, target: PushTarget): Promise<void> {
  const authFile = await writeAuthFile(target.host, target.username, target.password);
  try {
    await execFileAsync(
      "skopeo",
      [
        "copy",
        "--quiet",
        "--dest-authfile",
        authFile.path,
        "--dest-cert-dir",
        target.certDir,
        `oci:${pkg.layoutDir}:${pkg.tag}`,
        `docker://${target.host}/${target.repository}:${pkg.tag}`,
      ],
      { env: { ...process.env, REGISTRY_AUTH_FILE: authFile.path } },
    );
  } finally {
    await authFile.remove();
  }
}

export interface PulledPackage {
  readonly manifest: {
    readonly artifactType?: string;
    readonly config: Descriptor;
    readonly layers: readonly Descriptor[];
  };
  readonly manifestDigest: string;
  /** The first layer's bytes. */
  readonly layer: Buffer;
}

/** Reads the (single) manifest of an OCI image layout and its first layer. */
export async function readModulePackageLayout(layoutDir: string): Promise<PulledPackage> {
  const index = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as { manifests: Descriptor[] };
  const desc = index.manifests[0];
  if (desc === undefined) throw new Error(`${layoutDir}/index.json lists no manifest`);
  const blob = (digest: string): Promise<Buffer> =>
    readFile(join(layoutDir, "blobs", "sha256", digest.replace(/^sha256:/, "")));
  const manifest = JSON.parse((await blob(desc.digest)).toString("utf8")) as PulledPackage["manifest"];
  const first = manifest.layers[0];
  if (first === undefined) throw new Error("the manifest has no layer");
  return { manifest, manifestDigest: desc.digest, layer: await blob(first.digest) };
}
