/**
 * Optional persistence of the reference control plane's state (--data-file). Passwords are
 * encrypted at rest with AES-256-GCM under a 32-byte key kept beside the data file
 * (`<data-file>.key`, mode 0600, created on first use). Writes are atomic (temp file, fsync,
 * rename). Runs that were in flight when the control plane stopped are failed on load: their
 * leases died with the process, and a run never runs twice.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, rename } from "node:fs/promises";
import { errnoCode } from "../core/errors.js";
import { openNewFile, realFs } from "../fs/secure-fs.js";
import type { ControlPlaneStore, Integration, RunRecord } from "./store.js";

interface SealedSecret {
  iv: string;
  ct: string;
  tag: string;
}

interface DataFileV1 {
  version: 1;
  integrations: (Omit<Integration, "password"> & { password: SealedSecret })[];
  runs: (Omit<RunRecord, "configuration" | "lease"> & { configuration: string })[];
}

async function loadOrCreateKey(path: string): Promise<Buffer> {
  try {
    const key = await readFile(path);
    if (key.byteLength !== 32) throw new Error(`${path} must hold exactly 32 bytes`);
    return key;
  } catch (error) {
    if (errnoCode(error) !== "ENOENT") throw error;
    const key = randomBytes(32);
    const handle = await openNewFile(realFs, path);
    await handle.writeFile(key);
    await handle.sync();
    await handle.close();
    return key;
  }
}

function seal(key: Buffer, text: string): SealedSecret {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const ct = Buffer.concat([cipher.update(text, "utf8"), cipher.final()]);
  return { iv: iv.toString("base64"), ct: ct.toString("base64"), tag: cipher.getAuthTag().toString("base64") };
}

function unseal(key: Buffer, s: SealedSecret): string {
  const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(s.iv, "base64"));
  decipher.setAuthTag(Buffer.from(s.tag, "base64"));
  return Buffer.concat([decipher.update(Buffer.from(s.ct, "base64")), decipher.final()]).toString("utf8");
}

export class DataFile {
  private constructor(
    private readonly path: string,
    private readonly key: Buffer,
  ) {}

  static async open(path: string): Promise<DataFile> {
    return new DataFile(path, await loadOrCreateKey(`${path}.key`));
  }

  async load(store: ControlPlaneStore): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if (errnoCode(error) === "ENOENT") return;
      throw error;
    }
    const data = JSON.parse(text) as DataFileV1;
    for (const i of data.integrations) store.integrations.set(i.id, { ...i, password: unseal(this.key, i.password) });
    for (const r of data.runs) {
      const run: RunRecord = { ...r, configuration: Buffer.from(r.configuration, "base64"), lease: undefined };
      store.runs.set(run.id, run);
      if (run.status === "running" || run.status === "queued") {
        store.finish(run, "failed", {
          code: "CONTROL_PLANE_RESTARTED",
          message: "the control plane restarted while the run was queued or running",
        });
      }
    }
  }

  async save(store: ControlPlaneStore): Promise<void> {
    const data: DataFileV1 = {
      version: 1,
      integrations: [...store.integrations.values()].map((i) => ({ ...i, password: seal(this.key, i.password) })),
      runs: [...store.runs.values()].map(({ configuration, lease: _lease, ...r }) => ({
        ...r,
        configuration: configuration.toString("base64"),
      })),
    };
    const tmp = `${this.path}.tmp-${randomBytes(6).toString("hex")}`;
    const handle = await openNewFile(realFs, tmp);
    try {
      await handle.writeFile(JSON.stringify(data));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.path);
  }
}
