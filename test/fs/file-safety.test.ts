/**
 * File safety of the run directory (src/fs/run-dir.ts, src/fs/secure-fs.ts): modes, the rules
 * for an existing run directory, and a symlink, hardlink or foreign file planted at every path
 * the agent writes or removes. Each refusal must name its code and leave everything outside the
 * run directory exactly as it was.
 */
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { materializeRun } from "../../src/credentials/materialize.js";
import type { AgentError } from "../../src/core/errors.js";
import type { ErrorCode } from "../../src/core/errors.js";
import { generatePrivateKeyPem, parsePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { sealBundle } from "../../src/crypto/sealed-bundle.js";
import {
  MARKER_NAME,
  RUN_FILES,
  createRunDir,
  runFilePath,
  wipeRunDir,
  writeRunFile,
  type RunFileId,
} from "../../src/fs/run-dir.js";
import {
  isTempNameFor,
  makePrivateDir,
  realFs,
  tempNameFor,
  writeSecretFileAtomic,
  type FileSystem,
} from "../../src/fs/secure-fs.js";
import { ownedByAnotherUser } from "../support/foreign-owner.js";
import { refusal } from "../support/refusal.js";

const META = { runId: "run-1", agentId: "agent-1", createdAt: "2026-11-22T10:00:00.000Z" };

let base: string;
let outside: string;
let runDir: string;
let outsideFile: string;
let outsideDir: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "file-safety-"));
  outside = join(base, "outside");
  mkdirSync(outside);
  outsideFile = join(outside, "precious.txt");
  writeFileSync(outsideFile, "precious", { mode: 0o644 });
  outsideDir = join(outside, "dir");
  mkdirSync(outsideDir);
  writeFileSync(join(outsideDir, "config.json"), "outside-config");
  runDir = join(base, "run");
});

afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

/** Everything under `outside`, with contents and modes, to prove nothing was touched. */
function snapshotOutside(): string {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.push(`${p} ${st.mode.toString(8)} ${st.isFile() ? readFileSync(p, "utf8") : ""}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(outside);
  return out.join("\n");
}

function mode(path: string): number {
  return lstatSync(path).mode & 0o777;
}

async function materializeAll(dir = runDir): Promise<void> {
  await createRunDir(realFs, dir, META);
  for (const id of Object.keys(RUN_FILES) as RunFileId[]) await writeRunFile(realFs, dir, id, `{"file":"${id}"}\n`);
}

describe("modes and layout", () => {
  it("directories are 0700 and files 0600, whatever the umask", async () => {
    const old = process.umask(0o000);
    try {
      await materializeAll();
    } finally {
      process.umask(old);
    }
    expect(mode(runDir)).toBe(0o700);
    for (const f of Object.values(RUN_FILES)) {
      expect(mode(join(runDir, f.dir))).toBe(0o700);
      expect(mode(join(runDir, f.dir, f.name))).toBe(0o600);
    }
    expect(mode(join(runDir, MARKER_NAME))).toBe(0o600);
    expect(readdirSync(runDir).sort()).toEqual([MARKER_NAME, "containers", "docker", "tofu"].sort());
    for (const f of Object.values(RUN_FILES)) expect(readdirSync(join(runDir, f.dir))).toEqual([f.name]);
  });

  it("writes the marker the wipe trusts", async () => {
    await createRunDir(realFs, runDir, META);
    const marker = JSON.parse(readFileSync(join(runDir, MARKER_NAME), "utf8")) as Record<string, unknown>;
    expect(marker).toMatchObject({
      kind: "oci-cred-agent-run",
      version: 1,
      run_id: "run-1",
      agent_id: "agent-1",
      created_at: META.createdAt,
    });
  });

  it("runFilePath names the fixed layout", () => {
    expect(runFilePath("/r", "dockerConfig")).toBe("/r/docker/config.json");
    expect(runFilePath("/r", "containersAuth")).toBe("/r/containers/auth.json");
    expect(runFilePath("/r", "tofuCliConfig")).toBe("/r/tofu/cli.tfrc");
  });

  it("temporary names are hidden, random and recognised only in their exact form", () => {
    const a = tempNameFor("config.json");
    expect(a).toMatch(/^\.config\.json\.tmp-[0-9a-f]{16}$/);
    expect(tempNameFor("config.json")).not.toBe(a);
    expect(isTempNameFor(a, "config.json")).toBe(true);
    expect(isTempNameFor(a, "auth.json")).toBe(false);
    expect(isTempNameFor(".config.json.tmp-xyz", "config.json")).toBe(false);
    expect(isTempNameFor(".config.json.tmp-0123456789abcdef0", "config.json")).toBe(false);
  });
});

describe("the run directory", () => {
  it("is created when missing", async () => {
    expect((await createRunDir(realFs, runDir, META)).created).toBe(true);
  });

  it("may be an empty directory of ours, whose mode is then tightened to 0700", async () => {
    mkdirSync(runDir, { mode: 0o755 });
    chmodSync(runDir, 0o755);
    expect((await createRunDir(realFs, runDir, META)).created).toBe(false);
    expect(mode(runDir)).toBe(0o700);
  });

  it.each<[string, () => void, ErrorCode, RegExp]>([
    ["its parent is missing", () => undefined, "RUN_DIR_PARENT_MISSING", /parent .* does not exist/],
    [
      "it is not empty",
      () => {
        mkdirSync(runDir);
        writeFileSync(join(runDir, "leftover"), "x");
      },
      "RUN_DIR_UNSAFE",
      /not empty.*wipe --run-dir/,
    ],
    ["it is a regular file", () => writeFileSync(runDir, "x"), "RUN_DIR_UNSAFE", /not a directory/],
    [
      "it is a symlink to an empty directory",
      () => symlinkSync(join(outside, "empty"), runDir),
      "RUN_DIR_UNSAFE",
      /symbolic link/,
    ],
    [
      "it is a symlink to a directory with files",
      () => symlinkSync(outsideDir, runDir),
      "RUN_DIR_UNSAFE",
      /symbolic link/,
    ],
    [
      "it is a dangling symlink",
      () => symlinkSync(join(outside, "nowhere"), runDir),
      "RUN_DIR_UNSAFE",
      /symbolic link/,
    ],
  ])("is refused when %s", async (name, plant, code, message) => {
    mkdirSync(join(outside, "empty"));
    const before = snapshotOutside();
    plant();
    const target = name === "its parent is missing" ? join(base, "missing-parent", "run") : runDir;
    const e = await refusal(createRunDir(realFs, target, META));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
    expect(snapshotOutside()).toBe(before);
    expect(existsSync(join(outside, "nowhere"))).toBe(false);
    expect(existsSync(join(outside, "empty", MARKER_NAME))).toBe(false);
  });

  it("is refused when it is an empty directory owned by another user", async () => {
    mkdirSync(runDir);
    const fs = ownedByAnotherUser(runDir);
    const e = await refusal(createRunDir(fs, runDir, META));
    expect(e.code).toBe("RUN_DIR_UNSAFE");
    expect(e.message).toContain("uid 4242");
    expect(readdirSync(runDir)).toEqual([]);
  });
});

/** A file system that plants something at `path` just before the agent's own `op` reaches it. */
function plantingFs(op: "mkdir" | "open", match: (path: string) => boolean, plant: (path: string) => void): FileSystem {
  const mkdir = (async (path: string, options?: object) => {
    if (op === "mkdir" && match(path)) plant(path);
    return realFs.mkdir(path, options);
  }) as FileSystem["mkdir"];
  const open = (async (path: string, flags?: number, m?: number) => {
    if (op === "open" && match(path)) plant(path);
    return realFs.open(path, flags, m);
  }) as FileSystem["open"];
  return { ...realFs, mkdir, open };
}

describe("something planted where the agent writes", () => {
  const plants: [string, (p: string) => void][] = [
    ["a symlink to a file outside", (p) => symlinkSync(outsideFile, p)],
    ["a dangling symlink", (p) => symlinkSync(join(outside, "created-through-link"), p)],
    ["a symlink to a directory outside", (p) => symlinkSync(outsideDir, p)],
    ["a hardlink to a file outside", (p) => linkSync(outsideFile, p)],
    ["a foreign regular file", (p) => writeFileSync(p, "foreign")],
  ];

  describe.each(Object.entries(RUN_FILES))("at %s's final path", (id, f) => {
    it.each(plants)("%s is refused with RUN_DIR_ENTRY_UNSAFE", async (_name, plant) => {
      await createRunDir(realFs, runDir, META);
      const before = snapshotOutside();
      const final = join(runDir, f.dir, f.name);
      plant(final);
      const e = await refusal(writeRunFile(realFs, runDir, id as RunFileId, "SECRET-CONTENT"));
      expect(e.code).toBe("RUN_DIR_ENTRY_UNSAFE");
      expect(e.message).toContain(final);
      expect(snapshotOutside()).toBe(before);
      expect(existsSync(join(outside, "created-through-link"))).toBe(false);
      // No temporary file is left behind.
      expect(readdirSync(join(runDir, f.dir))).toEqual([f.name]);
    });
  });

  it.each(plants)("at the marker's path: %s is refused with RUN_DIR_ENTRY_UNSAFE", async (_name, plant) => {
    const before = snapshotOutside();
    const fs = plantingFs(
      "open",
      (p) => isTempNameFor(p.split("/").pop() ?? "", MARKER_NAME),
      () => plant(join(runDir, MARKER_NAME)),
    );
    const e = await refusal(createRunDir(fs, runDir, META));
    expect(e.code).toBe("RUN_DIR_ENTRY_UNSAFE");
    expect(snapshotOutside()).toBe(before);
    expect(existsSync(join(outside, "created-through-link"))).toBe(false);
  });

  it.each(plants)("at a temporary name (a race): %s is refused with RUN_DIR_WRITE_FAILED", async (_name, plant) => {
    await createRunDir(realFs, runDir, META);
    const before = snapshotOutside();
    const fs = plantingFs("open", (p) => isTempNameFor(p.split("/").pop() ?? "", "config.json"), plant);
    const e = await refusal(writeRunFile(fs, runDir, "dockerConfig", "SECRET-CONTENT"));
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(snapshotOutside()).toBe(before);
    expect(existsSync(join(outside, "created-through-link"))).toBe(false);
    expect(existsSync(runFilePath(runDir, "dockerConfig"))).toBe(false);
  });

  it.each(["docker", "containers", "tofu"])(
    "at the %s/ directory (a race): a symlink to a directory outside is refused",
    async (dir) => {
      const before = snapshotOutside();
      const fs = plantingFs(
        "mkdir",
        (p) => p === join(runDir, dir),
        (p) => symlinkSync(outsideDir, p),
      );
      const e = await refusal(createRunDir(fs, runDir, META));
      expect(e.code).toBe("RUN_DIR_UNSAFE");
      expect(e.message).toContain("symbolic link");
      expect(snapshotOutside()).toBe(before);
    },
  );

  it.each(["docker", "containers", "tofu"])(
    "at the %s/ directory (a race): a foreign directory is refused",
    async (dir) => {
      const fs = plantingFs(
        "mkdir",
        (p) => p === join(runDir, dir),
        (p) => mkdirSync(p),
      );
      const e = await refusal(createRunDir(fs, runDir, META));
      expect(e.code).toBe("RUN_DIR_ENTRY_UNSAFE");
    },
  );

  it("a run directory swapped for a symlink before its marker is written is refused", async () => {
    const before = snapshotOutside();
    const fs = plantingFs(
      "mkdir",
      (p) => p === runDir,
      () => symlinkSync(outsideDir, runDir),
    );
    const e = await refusal(createRunDir(fs, runDir, META));
    expect(e.code).toBe("RUN_DIR_UNSAFE");
    expect(snapshotOutside()).toBe(before);
  });
});

describe("a write that fails part-way", () => {
  function failingWrites(failOn: (path: string) => boolean, errno: string): FileSystem {
    const open = (async (path: string, flags?: number, m?: number) => {
      const handle = await realFs.open(path, flags, m);
      if (!failOn(path)) return handle;
      return new Proxy(handle, {
        get(target, prop, receiver) {
          if (prop === "writeFile") {
            return () => Promise.reject(Object.assign(new Error(errno), { code: errno }));
          }
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    }) as FileSystem["open"];
    return { ...realFs, open };
  }

  it("ENOSPC is RUN_DIR_WRITE_FAILED with a fix, and the temporary file is removed", async () => {
    await createRunDir(realFs, runDir, META);
    const fs = failingWrites((p) => p.includes(".auth.json.tmp-"), "ENOSPC");
    const e = await refusal(writeSecretFileAtomic(fs, join(runDir, "containers"), "auth.json", "SECRET"));
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(e.message).toMatch(/ENOSPC.*file system is full/);
    expect(readdirSync(join(runDir, "containers"))).toEqual([]);
  });

  it("materialize wipes what it wrote when the last file fails", async () => {
    const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "k");
    const now = Date.now();
    const bundle = await sealBundle({
      recipient: { kid: key.kid, publicKey: key.publicKey },
      agentId: "agent-1",
      runId: "run-1",
      plaintext: new TextEncoder().encode(
        JSON.stringify({
          version: 1,
          registries: [{ id: "i", url: "https://ghcr.io", username: "u", password: "CANARY-pw" }],
        }),
      ),
      issuedAtMs: now,
      ttlSeconds: 600,
    });
    const fs = failingWrites((p) => p.includes(".cli.tfrc.tmp-"), "EIO");
    const e = await refusal(
      materializeRun({
        bundle: new TextEncoder().encode(bundle),
        keys: new Map([[key.kid, key]]),
        agentId: "agent-1",
        runId: "run-1",
        runDir,
        nowMs: now,
        maxLifetimeSeconds: 3600,
        clockSkewSeconds: 120,
        tofuCliConfigSources: [],
        fs,
      }),
    );
    expect(e.code).toBe("RUN_DIR_WRITE_FAILED");
    expect(e.message).not.toContain("CANARY");
    expect(existsSync(runDir)).toBe(false);
  });
});

describe("wipe", () => {
  it("removes everything the agent wrote and the directory; a second wipe finds nothing", async () => {
    await materializeAll();
    const report = await wipeRunDir(realFs, runDir);
    expect(report.absent).toBe(false);
    expect([...report.removed].sort()).toEqual(
      ["containers/auth.json", "docker/config.json", "tofu/cli.tfrc", MARKER_NAME].sort(),
    );
    expect(existsSync(runDir)).toBe(false);
    expect(await wipeRunDir(realFs, runDir)).toEqual({ removed: [], absent: true });
  });

  it("removes the temporary files of an interrupted write", async () => {
    await materializeAll();
    const stray = [
      join(runDir, "docker", ".config.json.tmp-0123456789abcdef"),
      join(runDir, "tofu", ".cli.tfrc.tmp-fedcba9876543210"),
      join(runDir, `.${MARKER_NAME}.tmp-00112233445566ff`),
    ];
    for (const p of stray) writeFileSync(p, "SECRET", { mode: 0o600 });
    const report = await wipeRunDir(realFs, runDir);
    expect(report.removed).toEqual(
      expect.arrayContaining(["docker/.config.json.tmp-0123456789abcdef", "tofu/.cli.tfrc.tmp-fedcba9876543210"]),
    );
    expect(existsSync(runDir)).toBe(false);
  });

  it("wipes a directory created but interrupted before its marker (empty)", async () => {
    mkdirSync(runDir, { mode: 0o700 });
    expect(await wipeRunDir(realFs, runDir)).toEqual({ removed: [], absent: false });
    expect(existsSync(runDir)).toBe(false);
  });

  it("wipes a run whose files were never written (marker and empty subdirectories)", async () => {
    await createRunDir(realFs, runDir, META);
    await wipeRunDir(realFs, runDir);
    expect(existsSync(runDir)).toBe(false);
  });

  it.each<[string, () => void]>([
    [
      "a directory of someone else's files without the marker",
      () => {
        mkdirSync(runDir);
        writeFileSync(join(runDir, "important.txt"), "keep");
        mkdirSync(join(runDir, "docker"));
        writeFileSync(join(runDir, "docker", "config.json"), "keep");
      },
    ],
    [
      "a marker that is a symlink to a file outside",
      () => {
        mkdirSync(runDir);
        symlinkSync(outsideFile, join(runDir, MARKER_NAME));
        mkdirSync(join(runDir, "docker"));
        writeFileSync(join(runDir, "docker", "config.json"), "keep");
      },
    ],
    [
      "a marker that is a directory",
      () => {
        mkdirSync(runDir);
        mkdirSync(join(runDir, MARKER_NAME));
      },
    ],
  ])("refuses %s with WIPE_NOT_AGENT_DIR and removes nothing", async (_name, plant) => {
    plant();
    const before = snapshotOutside();
    const listing = readdirSync(runDir, { recursive: true }).sort();
    const e = await refusal(wipeRunDir(realFs, runDir));
    expect(e.code).toBe("WIPE_NOT_AGENT_DIR");
    expect(e.message).toContain(MARKER_NAME);
    expect(readdirSync(runDir, { recursive: true }).sort()).toEqual(listing);
    expect(snapshotOutside()).toBe(before);
  });

  it.each<[string, () => void, RegExp]>([
    ["a symlink", () => symlinkSync(outsideDir, runDir), /symbolic link/],
    ["a regular file", () => writeFileSync(runDir, "x"), /not a directory/],
  ])("refuses a run directory that is %s", async (_name, plant, message) => {
    plant();
    const before = snapshotOutside();
    const e = await refusal(wipeRunDir(realFs, runDir));
    expect(e.code).toBe("WIPE_NOT_AGENT_DIR");
    expect(e.message).toMatch(message);
    expect(snapshotOutside()).toBe(before);
    expect(lstatSync(runDir)).toBeTruthy();
  });

  it("refuses a run directory owned by another user", async () => {
    await materializeAll();
    const fs = ownedByAnotherUser(runDir);
    const e = await refusal(wipeRunDir(fs, runDir));
    expect(e.code).toBe("WIPE_NOT_AGENT_DIR");
    expect(existsSync(runFilePath(runDir, "dockerConfig"))).toBe(true);
  });

  const swaps: [string, string, (p: string) => void, boolean][] = [
    ["docker/config.json", "a symlink to a file outside", (p) => symlinkSync(outsideFile, p), true],
    ["containers/auth.json", "a symlink to a file outside", (p) => symlinkSync(outsideFile, p), true],
    ["tofu/cli.tfrc", "a symlink to a file outside", (p) => symlinkSync(outsideFile, p), true],
    ["docker/config.json", "a directory", (p) => mkdirSync(p), true],
    [
      "docker/.config.json.tmp-0123456789abcdef",
      "a symlink to a file outside",
      (p) => symlinkSync(outsideFile, p),
      true,
    ],
    ["docker/notes.txt", "a foreign file beside the agent's", (p) => writeFileSync(p, "foreign"), false],
    ["extra", "a foreign entry at the top", (p) => writeFileSync(p, "foreign"), false],
    [".config.json.tmp-xyz", "a look-alike of a temporary name", (p) => writeFileSync(p, "foreign"), false],
  ];

  it.each(swaps)(
    "leaves %s when it is %s, reports WIPE_FOREIGN_ENTRIES, and removes the agent's files",
    async (rel, _what, plant, replacesOurs) => {
      await materializeAll();
      const planted = join(runDir, rel);
      if (replacesOurs && existsSync(planted)) rmSync(planted);
      plant(planted);
      const before = snapshotOutside();
      const e = await refusal(wipeRunDir(realFs, runDir));
      expect(e.code).toBe("WIPE_FOREIGN_ENTRIES");
      expect((e as AgentError<"WIPE_FOREIGN_ENTRIES">).details["foreign"]).toContain(rel);
      expect(lstatSync(planted)).toBeTruthy();
      expect(snapshotOutside()).toBe(before);
      // Every credential file the agent wrote is gone, except what stands at the planted path.
      for (const id of Object.keys(RUN_FILES) as RunFileId[]) {
        const p = runFilePath(runDir, id);
        if (p !== planted) expect(existsSync(p)).toBe(false);
      }
      // The marker stays, so wipe can be run again once the foreign entry is dealt with.
      expect(existsSync(join(runDir, MARKER_NAME))).toBe(true);
      rmSync(planted, { recursive: true });
      await wipeRunDir(realFs, runDir);
      expect(existsSync(runDir)).toBe(false);
    },
  );

  it.each(["docker", "containers", "tofu"])(
    "leaves %s/ when it was swapped for a symlink to a directory outside",
    async (dir) => {
      await materializeAll();
      rmSync(join(runDir, dir), { recursive: true });
      symlinkSync(outsideDir, join(runDir, dir));
      const before = snapshotOutside();
      const e = await refusal(wipeRunDir(realFs, runDir));
      expect(e.code).toBe("WIPE_FOREIGN_ENTRIES");
      expect((e as AgentError<"WIPE_FOREIGN_ENTRIES">).details["foreign"]).toEqual([dir]);
      expect(snapshotOutside()).toBe(before);
      expect(readFileSync(join(outsideDir, "config.json"), "utf8")).toBe("outside-config");
    },
  );

  it("a hardlink to a file outside is unlinked from the run directory only: the outside file keeps its content", async () => {
    await materializeAll();
    rmSync(runFilePath(runDir, "dockerConfig"));
    linkSync(outsideFile, runFilePath(runDir, "dockerConfig"));
    await wipeRunDir(realFs, runDir).catch(() => undefined);
    expect(readFileSync(outsideFile, "utf8")).toBe("precious");
    expect(lstatSync(outsideFile).nlink).toBe(1);
  });

  it("leaves a file of another user at an agent path and reports it", async () => {
    await materializeAll();
    const p = runFilePath(runDir, "containersAuth");
    const fs = ownedByAnotherUser(p);
    const e = await refusal(wipeRunDir(fs, runDir));
    expect(e.code).toBe("WIPE_FOREIGN_ENTRIES");
    expect((e as AgentError<"WIPE_FOREIGN_ENTRIES">).details["foreign"]).toEqual(["containers/auth.json"]);
    expect(existsSync(p)).toBe(true);
    expect(existsSync(runFilePath(runDir, "dockerConfig"))).toBe(false);
  });
});

describe("makePrivateDir", () => {
  it("refuses an existing subdirectory when it must create it", async () => {
    mkdirSync(runDir);
    const e = await refusal(makePrivateDir(realFs, runDir, false));
    expect(e.code).toBe("RUN_DIR_ENTRY_UNSAFE");
  });
});
