/**
 * Hostile configuration archives, through the agent's own unpacking path
 * (src/fs/config-workspace.ts `extractConfiguration`, which uses src/core/tar-archive.ts), as the
 * run executor calls it for a lease's configuration_tar_gz: path traversal, absolute paths,
 * symlinks and hardlinks leaving the directory, writes through links, devices and FIFOs, size and
 * gzip bombs, too many entries, malformed tar. Each is refused with its code, and a snapshot of
 * everything around the configuration directory (a sentinel directory with a secret file, the
 * workspace root) is byte-for-byte unchanged afterwards; the configuration directory itself is
 * gone. Random mutations of a valid archive (fast-check) are either unpacked inside the directory
 * or refused with a code, never anything else.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_CODES, isAgentError } from "../../src/core/errors.js";
import { parseTar, type ArchiveLimits } from "../../src/core/tar-archive.js";
import { extractConfiguration } from "../../src/fs/config-workspace.js";
import { FULL, recordFigures, reliabilityCases, Tally } from "../support/reliability-figures.js";
import { tar, tarGzOf, type TarEntrySpec } from "../support/reliability-tar.js";

const LIMITS: ArchiveLimits = { maxBytes: 1024 * 1024, maxEntries: 100 };

let root: string;
let sentinel: string;
let workspaces: string;
let counter = 0;

async function snapshot(dir: string, skip: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      if (p === skip) continue;
      const st = await lstat(p);
      const rel = relative(dir, p);
      if (st.isSymbolicLink()) out[rel] = `link:${await readlink(p)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir:${(st.mode & 0o7777).toString(8)}`;
        await walk(p);
      } else
        out[rel] = `file:${st.size}:${st.nlink}:${createHash("sha256")
          .update(await readFile(p))
          .digest("hex")}`;
    }
  };
  await walk(dir);
  return out;
}

/** Every entry under `dir`, with the real path of each resolved link (to prove it stays inside). */
async function entriesUnder(dir: string): Promise<{ path: string; real: string | undefined }[]> {
  const out: { path: string; real: string | undefined }[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const p = join(e.parentPath, e.name);
    out.push({ path: p, real: e.isSymbolicLink() ? await realpath(p).catch(() => undefined) : p });
  }
  return out;
}

function isInside(dir: string, p: string): boolean {
  const rel = relative(dir, p);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith("/"));
}

interface Attempt {
  code: string | undefined;
  foreign: string | undefined;
  ms: number;
  dest: string;
}

async function attempt(archive: Uint8Array, limits: ArchiveLimits = LIMITS): Promise<Attempt> {
  const dest = join(workspaces, `run-${++counter}`);
  const before = await snapshot(root, dest);
  const t0 = performance.now();
  let code: string | undefined;
  let foreign: string | undefined;
  try {
    await extractConfiguration(archive, dest, limits);
  } catch (error) {
    if (isAgentError(error) && Object.hasOwn(ERROR_CODES, error.code)) code = error.code;
    else
      foreign =
        error instanceof Error
          ? `${error.name}: ${(error as NodeJS.ErrnoException).code ?? error.message}`
          : String(error);
  }
  const ms = performance.now() - t0;
  expect(await snapshot(root, dest), "nothing outside the configuration directory changed").toEqual(before);
  if (code !== undefined || foreign !== undefined)
    expect(existsSync(dest), "a refused archive leaves no directory").toBe(false);
  else
    for (const e of await entriesUnder(dest))
      expect(e.real === undefined || isInside(dest, e.real), `${e.path} resolves outside`).toBe(true);
  return { code, foreign, ms, dest };
}

const figures = { hostile_cases: 0, refused: 0, accepted_hostile: 0, written_outside: 0, max_ms: 0 };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "oca-archive-"));
  sentinel = join(root, "sentinel");
  workspaces = join(root, "workspaces");
  await mkdir(sentinel);
  await mkdir(workspaces, { mode: 0o700 });
  // Beside the configuration directories: a symlink resolving here has left its directory.
  await mkdir(join(workspaces, "outside-target"));
  await writeFile(join(sentinel, "secret.txt"), "do not touch\n");
});

afterAll(async () => {
  recordFigures("archive-hostile", figures);
  await rm(root, { recursive: true, force: true });
});

const file = (name: string, data = "x\n"): TarEntrySpec => ({ name, data });
const dir = (name: string): TarEntrySpec => ({ name, type: "5", mode: 0o755 });
const symlink = (name: string, linkname: string): TarEntrySpec => ({ name, type: "2", linkname });
const hardlink = (name: string, linkname: string): TarEntrySpec => ({ name, type: "1", linkname });

function hostileCases(): [string, () => Uint8Array, string][] {
  return [
    ["a relative path with ..", () => tarGzOf([file("../evil")]), "ARCHIVE_UNSAFE_PATH"],
    ["a path that climbs out after descending", () => tarGzOf([file("a/../../evil")]), "ARCHIVE_UNSAFE_PATH"],
    ["./../ prefix", () => tarGzOf([file("./../evil")]), "ARCHIVE_UNSAFE_PATH"],
    [
      "a deep climb into the sentinel",
      () => tarGzOf([file("../../sentinel/secret.txt", "overwritten")]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    ["an absolute path", () => tarGzOf([file(join(root, "abs-evil"))]), "ARCHIVE_UNSAFE_PATH"],
    [
      "an absolute path to the sentinel",
      () => tarGzOf([file(join(sentinel, "secret.txt"), "overwritten")]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    [
      "a pax path with ..",
      () => tarGzOf([{ name: "innocent", data: "x", pax: { path: "../evil" } }]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    [
      "a pax absolute path",
      () => tarGzOf([{ name: "innocent", data: "x", pax: { path: join(root, "abs-evil") } }]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    [
      "a GNU long name with ..",
      () => tarGzOf([{ name: `${"d".repeat(120)}/../../evil`, data: "x", gnuLongName: true }]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    ["a ustar prefix of ..", () => tarGzOf([{ name: "evil", prefix: "..", data: "x" }]), "ARCHIVE_UNSAFE_PATH"],
    ["a control character in a name", () => tarGzOf([file("a\nb")]), "ARCHIVE_UNSAFE_PATH"],
    ["the same path twice", () => tarGzOf([file("main.tf", "a"), file("main.tf", "b")]), "ARCHIVE_UNSAFE_PATH"],
    ["a directory and a file at one path", () => tarGzOf([dir("m"), file("m")]), "ARCHIVE_UNSAFE_PATH"],
    ["an entry beneath a regular file", () => tarGzOf([file("m"), file("m/inner")]), "ARCHIVE_UNSAFE_PATH"],
    ["a symlink to an absolute path", () => tarGzOf([symlink("l", "/etc")]), "ARCHIVE_UNSAFE_LINK"],
    ["a symlink to the sentinel", () => tarGzOf([symlink("l", "../../sentinel")]), "ARCHIVE_UNSAFE_LINK"],
    ["a nested symlink climbing out", () => tarGzOf([dir("d"), symlink("d/l", "../../x")]), "ARCHIVE_UNSAFE_LINK"],
    [
      "a pax linkpath climbing out",
      () => tarGzOf([{ name: "l", type: "2", linkname: "ok", pax: { linkpath: "../../sentinel" } }]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "a write through an archive symlink",
      () => tarGzOf([dir("sub"), symlink("l", "sub"), file("l/evil")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "a write through a symlink declared as a directory",
      () => tarGzOf([symlink("l", "."), dir("l/x")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "a symlink that escapes through another symlink to .",
      () => tarGzOf([symlink("t", "."), symlink("e", "t/../outside-target")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "a symlink that escapes through a later symlink",
      () => tarGzOf([symlink("e", "t/../outside-target"), symlink("t", ".")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "a symlink that escapes through a chain of symlinks",
      () => tarGzOf([dir("a"), symlink("a/up", ".."), symlink("b", "a/up"), symlink("e", "b/../outside-target")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    [
      "an entry declared beneath a path that later becomes a symlink",
      () => tarGzOf([file("l/evil"), symlink("l", ".")]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    [
      "a file declared after entries beneath its path",
      () => tarGzOf([file("m/inner"), file("m")]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    [
      "a symlink that escapes through a nested symlink to ..",
      () => tarGzOf([dir("d"), symlink("d/t", ".."), symlink("e", "d/t/../../sentinel")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    ["a symlink loop", () => tarGzOf([symlink("a", "b"), symlink("b", "a")]), "ARCHIVE_UNSAFE_LINK"],
    [
      "a hardlink to an absolute path",
      () => tarGzOf([hardlink("h", join(sentinel, "secret.txt"))]),
      "ARCHIVE_UNSAFE_PATH",
    ],
    ["a hardlink climbing out", () => tarGzOf([hardlink("h", "../../sentinel/secret.txt")]), "ARCHIVE_UNSAFE_PATH"],
    ["a hardlink to nothing in the archive", () => tarGzOf([hardlink("h", "missing")]), "ARCHIVE_UNSAFE_LINK"],
    [
      "a hardlink to a symlink",
      () => tarGzOf([file("f"), symlink("l", "f"), hardlink("h", "l")]),
      "ARCHIVE_UNSAFE_LINK",
    ],
    ["a character device", () => tarGzOf([{ name: "tty", type: "3" }]), "ARCHIVE_ENTRY_UNSUPPORTED"],
    ["a block device", () => tarGzOf([{ name: "sda", type: "4" }]), "ARCHIVE_ENTRY_UNSUPPORTED"],
    ["a FIFO", () => tarGzOf([{ name: "fifo", type: "6" }]), "ARCHIVE_ENTRY_UNSUPPORTED"],
    ["a GNU sparse file", () => tarGzOf([{ name: "sparse", type: "S", data: "x" }]), "ARCHIVE_ENTRY_UNSUPPORTED"],
    [
      "files past the size limit",
      () => tarGzOf([file("a", "a".repeat(600 * 1024)), file("b", "b".repeat(600 * 1024))]),
      "ARCHIVE_TOO_LARGE",
    ],
    [
      "hardlinks amplifying one file past the size limit",
      () => tarGzOf([file("a", "a".repeat(400 * 1024)), hardlink("b", "a"), hardlink("c", "a")]),
      "ARCHIVE_TOO_LARGE",
    ],
    [
      "a gzip bomb (64 MiB of zeros behind a 1 MiB limit)",
      () => gzipSync(tar([{ name: "zeros", data: new Uint8Array(64 * 1024 * 1024) }]), { level: 9 }),
      "ARCHIVE_TOO_LARGE",
    ],
    ["too many entries", () => tarGzOf(Array.from({ length: 101 }, (_, i) => file(`f${i}`))), "ARCHIVE_TOO_LARGE"],
    ["too many directories", () => tarGzOf(Array.from({ length: 101 }, (_, i) => dir(`d${i}`))), "ARCHIVE_TOO_LARGE"],
    [
      "a size past the end of the archive",
      () => tarGzOf([{ name: "f", data: "x", declaredSize: 10_000 }]),
      "ARCHIVE_INVALID",
    ],
    [
      "a pax size past the end of the archive",
      () => tarGzOf([{ name: "f", data: "x", pax: { size: "999999999" } }]),
      "ARCHIVE_INVALID",
    ],
    [
      "a header checksum mismatch",
      () =>
        gzipSync(
          (() => {
            const t = tar([file("f")]);
            t[0] = 0x67;
            return t;
          })(),
        ),
      "ARCHIVE_INVALID",
    ],
    ["not gzip", () => tar([file("f")]), "ARCHIVE_INVALID"],
    ["truncated gzip", () => tarGzOf([file("f", "y".repeat(5000))]).subarray(0, 40), "ARCHIVE_INVALID"],
  ];
}

describe("hostile configuration archives", () => {
  it("unpacks a benign archive with directories, files, an inner symlink and a hardlink", async () => {
    const out = await attempt(
      tarGzOf([
        dir("modules"),
        file("main.tf", 'module "m" { source = "./modules" }\n'),
        file("modules/x.tf", "# x\n"),
        symlink("modules/link.tf", "x.tf"),
        hardlink("copy.tf", "main.tf"),
        symlink("up", "modules/.."),
      ]),
    );
    expect(out.code ?? out.foreign).toBeUndefined();
    expect(await readFile(join(out.dest, "copy.tf"), "utf8")).toContain("module");
    expect(await readFile(join(out.dest, "modules/link.tf"), "utf8")).toBe("# x\n");
  });

  for (const [what, build, code] of hostileCases()) {
    it(`refuses ${what} (${code}) and writes nothing outside`, async () => {
      figures.hostile_cases++;
      const out = await attempt(build());
      figures.max_ms = Math.max(figures.max_ms, Math.round(out.ms));
      if (out.code !== undefined) figures.refused++;
      else if (out.foreign === undefined) figures.accepted_hostile++;
      expect(out.foreign).toBeUndefined();
      expect(out.code).toBe(code);
      expect(out.ms).toBeLessThan(30_000);
    });
  }

  it("refuses a gzip bomb behind the default 256 MiB limit in bounded memory (full run only at full size)", async () => {
    // CI: 300 MiB of zeros against a 64 MiB limit; the full run tries 1 GiB against 256 MiB.
    const limit = FULL ? 256 * 1024 * 1024 : 64 * 1024 * 1024;
    const zeros = FULL ? 1024 : 300;
    const chunks: Buffer[] = [];
    const block = gzipSync(Buffer.alloc(1024 * 1024), { level: 9 });
    // Concatenated gzip members gunzip to the concatenation: a small archive that expands hugely.
    const head = gzipSync(
      Buffer.from(
        tar([{ name: "zeros", data: new Uint8Array(0), declaredSize: zeros * 1024 * 1024 }]).subarray(0, 512),
      ),
    );
    chunks.push(head);
    for (let i = 0; i < zeros; i++) chunks.push(block);
    const archive = Buffer.concat(chunks);
    const rssBefore = process.memoryUsage().rss;
    const out = await attempt(archive, { maxBytes: limit, maxEntries: 100_000 });
    const grownMb = Math.round((process.memoryUsage().rss - rssBefore) / 1024 / 1024);
    recordFigures("archive-gzip-bomb", {
      compressed_kib: Math.round(archive.byteLength / 1024),
      expands_to_mib: zeros,
      limit_mib: limit / 1024 / 1024,
      code: out.code ?? out.foreign ?? null,
      ms: Math.round(out.ms),
      rss_growth_mib: grownMb,
    });
    expect(out.code).toBe("ARCHIVE_TOO_LARGE");
  });
});

describe("mutated archives (fast-check)", () => {
  const base = tar([
    dir("modules"),
    file("main.tf", 'module "m" {\n  source = "./modules"\n}\n'),
    file("modules/x.tf", "# x\n"),
    symlink("modules/l.tf", "x.tf"),
    hardlink("copy.tf", "main.tf"),
    { name: "long", data: "p", pax: { path: "pax/name.tf" } },
  ]);
  const parseCases = reliabilityCases(3000);
  const extractCases = FULL ? 5000 : 150;

  const mutated = fc.oneof(
    fc
      .array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 1, max: 255 })), {
        minLength: 1,
        maxLength: 8,
      })
      .map((flips) => {
        const t = Buffer.from(base);
        for (const [i, x] of flips) t[i]! ^= x;
        return t;
      }),
    // Flips inside headers, then a fixed checksum, so the parser looks past the checksum check.
    fc
      .array(
        fc.tuple(
          fc.constantFrom(0, 512 * 2, 512 * 4, 512 * 6, 512 * 8),
          fc.nat({ max: 511 }),
          fc.integer({ min: 1, max: 255 }),
        ),
        { minLength: 1, maxLength: 6 },
      )
      .map((flips) => {
        const t = Buffer.from(base);
        for (const [h, i, x] of flips) if (h + i < t.length && (i < 148 || i >= 156)) t[h + i]! ^= x;
        for (let h = 0; h + 512 <= t.length; h += 512) {
          if (t.subarray(h, h + 512).every((b) => b === 0)) continue;
          const sumField = t.subarray(h + 148, h + 156).toString("latin1");
          if (!/^[0-7]{6}\0 $/.test(sumField)) continue;
          t.fill(0x20, h + 148, h + 156);
          let sum = 0;
          for (let i = h; i < h + 512; i++) sum += t[i]!;
          t.write(`${sum.toString(8).padStart(6, "0")}\0 `, h + 148, "latin1");
        }
        return t;
      }),
    fc.nat({ max: base.length }).map((n) => base.subarray(0, n)),
    fc.uint8Array({ maxLength: 4096 }).map((u) => Buffer.from(u)),
  );

  it(`parses ${parseCases} mutated tar streams: entries inside the directory, or a refusal with a code`, () => {
    const codes = new Tally();
    let accepted = 0;
    let maxMs = 0;
    fc.assert(
      fc.property(mutated, (t) => {
        const t0 = performance.now();
        try {
          const entries = parseTar(t, LIMITS);
          accepted++;
          for (const e of entries) {
            if (e.path.startsWith("/") || e.path.split("/").includes("..")) return false;
          }
        } catch (error) {
          if (!isAgentError(error) || !Object.hasOwn(ERROR_CODES, error.code)) return false;
          codes.add(error.code);
        } finally {
          maxMs = Math.max(maxMs, performance.now() - t0);
        }
        return true;
      }),
      { numRuns: parseCases },
    );
    recordFigures("archive-parse-fuzz", {
      cases: parseCases,
      accepted_inside: accepted,
      refused: codes.total,
      by_code: codes.counts,
      max_ms: Number(maxMs.toFixed(2)),
    });
    expect(maxMs).toBeLessThan(5000);
  });

  it(`unpacks ${extractCases} mutated archives: inside the directory, or refused with nothing written outside`, async () => {
    const codes = new Tally();
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(mutated, async (t) => {
        const out = await attempt(gzipSync(t));
        if (out.foreign !== undefined) return false;
        if (out.code === undefined) {
          accepted++;
          await rm(out.dest, { recursive: true, force: true });
        } else codes.add(out.code);
        return true;
      }),
      { numRuns: extractCases },
    );
    recordFigures("archive-extract-fuzz", {
      cases: extractCases,
      accepted_inside: accepted,
      refused: codes.total,
      by_code: codes.counts,
      written_outside: 0,
    });
    // The sentinel is intact after everything.
    expect(await readFile(join(sentinel, "secret.txt"), "utf8")).toBe("do not touch\n");
    expect(gunzipSync(gzipSync(base)).equals(base)).toBe(true);
  });
});
