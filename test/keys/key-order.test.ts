/**
 * Which key of a key directory is the newest (the one bundles are sealed to): status change
 * time, then name; never the modification time, which whoever writes a file can set. A key
 * planted with a far-future mtime does not outrank a later `keygen --rotate`; `keygen --rotate`
 * refuses to leave a new key that is not the newest; a key directory that group or others may
 * write is warned about, unless it is mounted read-only (a Kubernetes Secret volume). Real
 * files in temp dirs and the real CLI; one file system that reports a ctime the kernel would
 * never give, because no real file can have one.
 */
import { execFile, execFileSync } from "node:child_process";
import { type BigIntStats } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { isAgentError } from "../../src/core/errors.js";
import { realFs, type FileSystem } from "../../src/fs/secure-fs.js";
import { addKeyFile, compareKeyFiles, listKeyFiles } from "../../src/keys/key-directory.js";
import { loadKeySource } from "../../src/keys/key-source.js";
import { AGENT_BIN } from "../support/agent-process.js";

const execFileAsync = promisify(execFile);
let dir: string;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await execFileAsync(AGENT_BIN, args, { env: { ...process.env, HOME: dir } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

function kidOf(r: CliResult): string {
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { kid: string }).kid;
}

const FAR_FUTURE = new Date("2035-01-01T00:00:00Z");

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-key-order-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the ordering rule", () => {
  it("orders by ctime, then name, and ignores everything else", () => {
    const e = (name: string, ctimeNs: bigint) => ({ name, path: `/k/${name}`, ctimeNs });
    const sorted = [e("a.key", 3n), e("z.key", 1n), e("b.key", 2n), e("a.key", 2n)].sort(compareKeyFiles);
    expect(sorted.map((x) => `${x.name}@${x.ctimeNs}`)).toEqual(["z.key@1", "a.key@2", "b.key@2", "a.key@3"]);
  });
});

describe("a key planted with a far-future modification time", () => {
  it("does not stay the newest: keygen --rotate afterwards gives the newest key, as pubkey and the load order show", async () => {
    const keyDir = join(dir, "planted");
    await mkdir(keyDir, { mode: 0o700 });
    const first = kidOf(await cli(["keygen", "--key", `file:${keyDir}`]));

    // The planted key: a valid key file, named to sort last, dated 2035 (touch -d).
    const outside = join(dir, "planted-source.key");
    const planted = kidOf(await cli(["keygen", "--key-file", outside]));
    const plantedPath = join(keyDir, "zzz-planted.key");
    await copyFile(outside, plantedPath);
    await chmod(plantedPath, 0o600);
    await utimes(plantedPath, FAR_FUTURE, FAR_FUTURE);

    const rotated = kidOf(await cli(["keygen", "--rotate", "--key", `file:${keyDir}`]));
    expect(kidOf(await cli(["pubkey", "--key", `file:${keyDir}`]))).toBe(rotated);
    const all = JSON.parse((await cli(["pubkey", "--all", "--key", `file:${keyDir}`])).stdout) as { kid: string }[];
    expect(all.map((k) => k.kid)).toEqual([first, planted, rotated]);

    // The same order in process, from the same listing the agent loads keys through.
    const loaded = await loadKeySource({ kind: "file", path: keyDir }, { fs: realFs, env: {} });
    expect(loaded.keys.at(-1)?.kid).toBe(rotated);
    const files = await listKeyFiles(realFs, keyDir);
    expect(files.at(-1)?.name).toMatch(/^agent-.*\.key$/);
    expect(files.map((f) => f.name)).toContain("zzz-planted.key");
  });
});

describe("keygen --rotate", () => {
  it("refuses to leave a new key that another file sorts after (KEY_ROTATION_NOT_NEWEST), removes it, and names the file in the way", async () => {
    const keyDir = join(dir, "future-ctime");
    await mkdir(keyDir, { mode: 0o700 });
    expect((await cli(["keygen", "--key", `file:${keyDir}`])).code).toBe(0);
    const planted = join(keyDir, "planted.key");
    await writeFile(planted, generatePrivateKeyPem(), { mode: 0o600 });
    const before = (await readdir(keyDir)).sort();

    // No file can get a ctime after now (only a clock set back can do that): report one.
    const lstat = (async (path: string, options?: { bigint?: boolean }) => {
      const st = await realFs.lstat(path, { bigint: options?.bigint === true });
      if (options?.bigint !== true || path !== planted) return st;
      return Object.assign(Object.create(Object.getPrototypeOf(st) as object) as BigIntStats, st, {
        ctimeNs: BigInt(FAR_FUTURE.getTime()) * 1_000_000n,
      });
    }) as FileSystem["lstat"];
    const futureFs: FileSystem = { ...realFs, lstat };

    const error = await addKeyFile(futureFs, keyDir, generatePrivateKeyPem(), new Date()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isAgentError(error, "KEY_ROTATION_NOT_NEWEST")).toBe(true);
    expect((error as Error).message).toContain(`${planted} sorts after it`);
    expect((error as Error).message).toContain("remove it, then run keygen --rotate again");
    expect((await readdir(keyDir)).sort()).toEqual(before);

    // With the real file system, the same call adds the newest key.
    const added = await addKeyFile(realFs, keyDir, generatePrivateKeyPem(), new Date());
    expect(join(keyDir, (await listKeyFiles(realFs, keyDir)).at(-1)?.name ?? "")).toBe(added);
  });
});

describe("a key directory that group or others may write", () => {
  it("is warned about by pubkey and doctor, with the fix; a private one is not", async () => {
    const keyDir = join(dir, "loose-dir");
    await mkdir(keyDir, { mode: 0o700 });
    expect((await cli(["keygen", "--key", `file:${keyDir}`])).code).toBe(0);
    const quiet = await cli(["pubkey", "--key", `file:${keyDir}`]);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stderr).toBe("");

    await chmod(keyDir, 0o770);
    const loose = await cli(["pubkey", "--key", `file:${keyDir}`]);
    expect(loose.code, loose.stderr).toBe(0);
    expect(loose.stderr).toContain(
      `warning: the key directory ${keyDir} has mode 0770: its group may add, rename or remove files in it`,
    );
    expect(loose.stderr).toContain(`run: chmod go-w ${keyDir}`);

    const doctor = await cli(["doctor", "--key", `file:${keyDir}`, "--format", "json"]);
    const checks = (JSON.parse(doctor.stdout) as { checks: { check: string; status: string; detail: string }[] })
      .checks;
    const warned = checks.filter((c) => c.check === "keys" && c.status === "warn").map((c) => c.detail);
    expect(warned.join("\n")).toContain(`chmod go-w ${keyDir}`);
  });

  it("is not warned about when it is mounted read-only (a Kubernetes Secret volume: mode 1777, ro)", async () => {
    const keyDir = join(dir, "secret-volume");
    await mkdir(keyDir);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", keyDir], { stdio: "pipe" });
    try {
      expect((await cli(["keygen", "--key", `file:${keyDir}`])).code).toBe(0);
      const writable = await cli(["pubkey", "--key", `file:${keyDir}`]);
      expect(writable.stderr).toContain(`the key directory ${keyDir} has mode 1777: its group and every user may`);
      execFileSync("mount", ["-o", "remount,ro", keyDir], { stdio: "pipe" });
      const readOnly = await cli(["pubkey", "--key", `file:${keyDir}`]);
      expect(readOnly.code, readOnly.stderr).toBe(0);
      expect(readOnly.stderr).toBe("");
    } finally {
      execFileSync("umount", [keyDir], { stdio: "pipe" });
    }
  });
});
