/**
 * A cleanup that fails after a failed write must not hide what it leaves behind. For each place
 * the agent removes its own half-written file or directory (a new key file, a credential file's
 * temporary name, a run directory being created), a failure injected at the FileSystem edge
 * makes the write fail and then the removal: the write's failure stays the error (its code, its
 * message first), and the error names the leftover path (message and details.leftover) and why
 * it stayed (details.cleanup_error). Where a failure is expected (a key link that leads nowhere),
 * only that errno is taken as the answer; any other failure is refused as itself.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentError } from "../../src/core/errors.js";
import { generatePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { createKeyFile } from "../../src/fs/key-file.js";
import { MARKER_NAME, createRunDir, wipeRunDir } from "../../src/fs/run-dir.js";
import { isTempNameFor, realFs, writeSecretFileAtomic, type FileSystem } from "../../src/fs/secure-fs.js";
import { loadKeySource } from "../../src/keys/key-source.js";
import { refusal } from "../support/refusal.js";

const META = { runId: "run-1", agentId: "agent-1", createdAt: "2026-11-22T10:00:00.000Z" };
let base: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "oca-cleanup-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

function errnoError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`injected ${code}`), { code });
}

interface Faults {
  /** Files whose handle's writeFile fails with this errno. */
  readonly writeFails?: { readonly match: (path: string) => boolean; readonly errno: string };
  readonly unlinkFails?: { readonly match: (path: string) => boolean; readonly errno: string };
  readonly mkdirFails?: { readonly match: (path: string) => boolean; readonly errno: string };
  readonly chmodFails?: { readonly match: (path: string) => boolean; readonly errno: string };
  readonly rmdirFails?: { readonly match: (path: string) => boolean; readonly errno: string };
  readonly realpathFails?: { readonly match: (path: string) => boolean; readonly errno: string };
}

/** The real file system with failures injected at the given calls. */
function faultyFs(faults: Faults): FileSystem {
  const open = (async (path: string, flags?: number, mode?: number) => {
    const handle = await realFs.open(path, flags, mode);
    const w = faults.writeFails;
    if (w === undefined || !w.match(path)) return handle;
    return new Proxy(handle, {
      get(target, prop, receiver) {
        if (prop === "writeFile") return () => Promise.reject(errnoError(w.errno));
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }) as FileSystem["open"];
  const failing = <K extends "unlink" | "mkdir" | "chmod" | "rmdir" | "realpath">(
    name: K,
    fault: Faults[`${K}Fails`],
  ): FileSystem[K] =>
    (async (path: string, ...rest: unknown[]) => {
      if (fault?.match(path)) throw errnoError(fault.errno);
      return (realFs[name] as (p: string, ...r: unknown[]) => Promise<unknown>)(path, ...rest);
    }) as FileSystem[K];
  return {
    ...realFs,
    open,
    unlink: failing("unlink", faults.unlinkFails),
    mkdir: failing("mkdir", faults.mkdirFails),
    chmod: failing("chmod", faults.chmodFails),
    rmdir: failing("rmdir", faults.rmdirFails),
    realpath: failing("realpath", faults.realpathFails),
  };
}

describe("a new key file whose write fails", () => {
  it("is removed, and the failure is KEY_FILE_WRITE_FAILED with a fix", async () => {
    const path = join(base, "agent.key");
    const e = await refusal(
      createKeyFile(
        faultyFs({ writeFails: { match: (p) => p === path, errno: "ENOSPC" } }),
        path,
        generatePrivateKeyPem(),
      ),
    );
    expect(e.code).toBe("KEY_FILE_WRITE_FAILED");
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/ENOSPC.*file system is full.*keygen again/);
    expect(e.details).toMatchObject({ path, errno: "ENOSPC" });
    expect((e.details as Readonly<Record<string, unknown>>)["leftover"]).toBeUndefined();
    expect(existsSync(path)).toBe(false);
  });

  it("when its removal fails too, stays KEY_FILE_WRITE_FAILED and names the file to delete", async () => {
    const path = join(base, "agent.key");
    const pem = generatePrivateKeyPem();
    const fs = faultyFs({
      writeFails: { match: (p) => p === path, errno: "EIO" },
      unlinkFails: { match: (p) => p === path, errno: "EBUSY" },
    });
    const e = await refusal(createKeyFile(fs, path, pem));
    expect(e.code).toBe("KEY_FILE_WRITE_FAILED");
    expect(e.message).toMatch(/^writing the new key file .* failed \(EIO\)/);
    expect(e.message).toContain(`Removing ${path} afterwards failed too (EBUSY)`);
    expect(e.message).toContain(`rm ${path}`);
    expect(e.details).toMatchObject({ path, errno: "EIO", leftover: path, cleanup_error: "EBUSY" });
    expect(e.cause).toBeInstanceOf(AgentError);
    expect((e.cause as AgentError).code).toBe("KEY_FILE_WRITE_FAILED");
    expect(existsSync(path)).toBe(true);
    expect(e.message).not.toContain("PRIVATE KEY");
  });
});

describe("a credential file whose write fails", () => {
  it("when its temporary file cannot be removed, stays RUN_DIR_WRITE_FAILED and names the temporary file; wipe removes it", async () => {
    await createRunDir(realFs, join(base, "run"), META);
    const dir = join(base, "run", "docker");
    const temp = (p: string): boolean => isTempNameFor(p.split("/").pop() ?? "", "config.json");
    const fs = faultyFs({ writeFails: { match: temp, errno: "ENOSPC" }, unlinkFails: { match: temp, errno: "EIO" } });
    const e = await refusal(writeSecretFileAtomic(fs, dir, "config.json", "SECRET-CONTENT"));
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(e.message).toMatch(/ENOSPC.*file system is full/);
    const left = readdirSync(dir);
    expect(left).toHaveLength(1);
    const leftover = join(dir, left[0] ?? "");
    expect(e.details).toMatchObject({ errno: "ENOSPC", leftover, cleanup_error: "EIO" });
    expect(e.message).toContain(`Removing ${leftover} afterwards failed too (EIO)`);
    expect(e.message).toContain("oci-cred-agent wipe --run-dir");
    expect(e.message).not.toContain("SECRET-CONTENT");
    await wipeRunDir(realFs, join(base, "run"));
    expect(existsSync(join(base, "run"))).toBe(false);
  });

  it("keeps a refusal's own code (RUN_DIR_ENTRY_UNSAFE) when the temporary file cannot be removed", async () => {
    await createRunDir(realFs, join(base, "run"), META);
    const dir = join(base, "run", "docker");
    writeFileSync(join(dir, "config.json"), "planted");
    const temp = (p: string): boolean => isTempNameFor(p.split("/").pop() ?? "", "config.json");
    const e = await refusal(
      writeSecretFileAtomic(
        faultyFs({ unlinkFails: { match: temp, errno: "EPERM" } }),
        dir,
        "config.json",
        "SECRET-CONTENT",
      ),
    );
    expect(e.code).toBe("RUN_DIR_ENTRY_UNSAFE");
    expect(e.message).toMatch(
      /exists already .*Removing .*\.config\.json\.tmp-[0-9a-f]{16} afterwards failed too \(EPERM\)/,
    );
    expect(e.details).toMatchObject({ cleanup_error: "EPERM" });
    expect(String((e.details as Readonly<Record<string, unknown>>)["leftover"])).toMatch(
      /\.config\.json\.tmp-[0-9a-f]{16}$/,
    );
  });
});

describe("a run directory whose creation fails", () => {
  it("is wiped, and the creation's failure is thrown unchanged", async () => {
    const runDir = join(base, "run");
    const e = await refusal(
      createRunDir(faultyFs({ mkdirFails: { match: (p) => p === join(runDir, "tofu"), errno: "EIO" } }), runDir, META),
    );
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect((e.details as Readonly<Record<string, unknown>>)["leftover"]).toBeUndefined();
    expect(existsSync(runDir)).toBe(false);
  });

  it("when the wipe fails too, stays the creation's failure and names the directory left behind", async () => {
    const runDir = join(base, "run");
    const fs = faultyFs({
      mkdirFails: { match: (p) => p === join(runDir, "tofu"), errno: "EIO" },
      unlinkFails: { match: (p) => p.endsWith(MARKER_NAME), errno: "EROFS" },
    });
    const e = await refusal(createRunDir(fs, runDir, META));
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(e.message).toMatch(/^writing .*tofu failed \(EIO\)/);
    expect(e.message).toContain(`Removing ${runDir} afterwards failed too (WIPE_FAILED, EROFS)`);
    expect(e.message).toContain(`oci-cred-agent wipe --run-dir ${runDir}`);
    expect(e.details).toMatchObject({ leftover: runDir, cleanup_error: "WIPE_FAILED, EROFS" });
    expect(existsSync(join(runDir, MARKER_NAME))).toBe(true);
  });

  it("names the directory left behind also when the creation failed with a plain system error", async () => {
    const runDir = join(base, "run");
    const fs = faultyFs({
      chmodFails: { match: (p) => p === join(runDir, "docker"), errno: "EIO" },
      rmdirFails: { match: (p) => p === runDir, errno: "EBUSY" },
    });
    const e = await refusal(createRunDir(fs, runDir, META));
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(e.details).toMatchObject({ errno: "EIO", leftover: runDir, cleanup_error: "WIPE_FAILED, EBUSY" });
    expect(existsSync(runDir)).toBe(true);
  });
});

describe("a key directory's symbolic link", () => {
  function keyDir(): { dir: string; link: string } {
    const dir = join(base, "keys");
    mkdirSync(join(dir, "..data"), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, "..data", "agent.key"), generatePrivateKeyPem(), { mode: 0o600 });
    const link = join(dir, "agent.key");
    symlinkSync("..data/agent.key", link);
    return { dir, link };
  }

  it("that leads nowhere (dangling, or a loop) is refused as KEY_FILE_SYMLINK", async () => {
    const { dir, link } = keyDir();
    rmSync(join(dir, "..data", "agent.key"));
    const dangling = await refusal(loadKeySource({ kind: "file", path: dir }, { fs: realFs, env: {} }));
    expect(dangling.code).toBe("KEY_FILE_SYMLINK");
    expect(dangling.message).toContain(`${link} is a symbolic link that leads nowhere`);
    rmSync(link);
    symlinkSync("agent.key", link);
    const loop = await refusal(loadKeySource({ kind: "file", path: dir }, { fs: realFs, env: {} }));
    expect(loop.code).toBe("KEY_FILE_SYMLINK");
  });

  it("that cannot be followed for another reason (EACCES) is refused as that, not as a bad link", async () => {
    const { dir, link } = keyDir();
    const e = await refusal(
      loadKeySource(
        { kind: "file", path: dir },
        { fs: faultyFs({ realpathFails: { match: (p) => p === link, errno: "EACCES" } }), env: {} },
      ),
    );
    expect(e.code).toBe("INPUT_UNREADABLE");
    expect(e.message).toContain(`cannot follow the key link ${link} (EACCES)`);
    expect(errnoOf(e.cause)).toBe("EACCES");
  });

  it("inside the directory is followed", async () => {
    const { dir } = keyDir();
    const loaded = await loadKeySource({ kind: "file", path: dir }, { fs: realFs, env: {} });
    expect(loaded.keys).toHaveLength(1);
  });
});

function errnoOf(error: unknown): unknown {
  return typeof error === "object" && error !== null && "code" in error ? error.code : undefined;
}
