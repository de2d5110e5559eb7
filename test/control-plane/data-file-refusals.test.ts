/**
 * What the control plane refuses about its data file and its data key, each with its code and a
 * message that names the fix: no key, a key beside the data, a key others may read, a malformed
 * key, the wrong key, the JSON data file of earlier versions, a damaged, foreign or newer
 * database, a data file others may read. A second control plane on the same file takes it over
 * and the first stops at its next write; a write that fails (a full file system) stops the real
 * CLI process with DATA_FILE_WRITE_FAILED, after a 500, and the restarted one serves what was
 * committed.
 */
import { execFile, execFileSync } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readDataKey } from "../../src/control-plane/data-key.js";
import { SqliteStorage } from "../../src/control-plane/sqlite-storage.js";
import type { AgentRecord } from "../../src/control-plane/store.js";
import type { AgentError } from "../../src/core/errors.js";
import { AGENT_BIN } from "../support/agent-process.js";
import { spawnCliControlPlane, type CliControlPlane } from "../support/cli-control-plane.js";
import { writeDataKey } from "../support/data-file.js";
import { refusal } from "../support/refusal.js";

const execFileAsync = promisify(execFile);
const adminToken = randomBytes(24).toString("base64url");
const agentToken = randomBytes(24).toString("base64url");

let dir: string;
let keysDir: string;
let dataDir: string;
let key: Buffer;
let keyFile: string;
const mounted: string[] = [];
const running: CliControlPlane[] = [];

const agentRecord = (id: string): AgentRecord => ({
  id,
  name: "a",
  version: "1",
  concurrency: 1,
  public_keys: [],
  credential_sha256: "0".repeat(64),
  registered_at: "2026-01-01T00:00:00.000Z",
  last_seen_at: "2026-01-01T00:00:00.000Z",
  disabled: false,
  enrollment_token_id: null,
  role: "agent",
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-datafile-"));
  keysDir = join(dir, "keys");
  dataDir = join(dir, "data");
  await mkdir(keysDir, { mode: 0o700 });
  await mkdir(dataDir, { mode: 0o700 });
  keyFile = join(keysDir, "data.key");
  key = await writeDataKey(keyFile);
  await writeFile(join(dir, "admin.token"), adminToken, { mode: 0o600 });
  await writeFile(join(dir, "agent.token"), agentToken, { mode: 0o600 });
});

afterAll(async () => {
  for (const cp of running) await cp.stop();
  for (const path of mounted) execFileSync("umount", [path]);
  await rm(dir, { recursive: true, force: true });
});

/** The CLI's refusal at start: exit 1 and `error CODE: message` on stderr. */
async function cliRefusal(args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    await execFileAsync(
      AGENT_BIN,
      [
        "control-plane",
        "--listen",
        "127.0.0.1:0",
        "--admin-token-file",
        join(dir, "admin.token"),
        "--agent-token-file",
        join(dir, "agent.token"),
        ...args,
      ],
      { env: { ...process.env, CREDENTIALS_DIRECTORY: "", ...env }, timeout: 30_000 },
    );
  } catch (error) {
    const e = error as { code?: number; stderr?: string };
    expect(e.code).toBe(1);
    return e.stderr ?? "";
  }
  throw new Error("the control plane started");
}

describe("the data key", () => {
  const source = (keyFileArg: string | undefined, env: Record<string, string> = {}) => ({
    dataFile: join(dataDir, "cp.db"),
    keyFile: keyFileArg,
    env,
  });

  it("is required with --data-file: refused at start with DATA_KEY_REQUIRED, naming both ways to give one", async () => {
    const stderr = await cliRefusal(["--data-file", join(dataDir, "cp.db")]);
    expect(stderr).toMatch(/^oci-cred-agent: error DATA_KEY_REQUIRED: .*--data-key-file.*LoadCredential=data-key/m);
    // And with $CREDENTIALS_DIRECTORY set, but no data-key in it.
    const empty = await mkdtemp(join(dir, "creds-"));
    const e = await refusal(readDataKey(source(undefined, { CREDENTIALS_DIRECTORY: empty })));
    expect(e.code).toBe("DATA_KEY_REQUIRED");
    expect(e.message).toContain(join(empty, "data-key"));
  });

  it("without --data-file is refused: it would seal nothing", async () => {
    const stderr = await cliRefusal(["--data-key-file", keyFile]);
    expect(stderr).toMatch(/^oci-cred-agent: error INVALID_ARGUMENT: --data-key-file seals the data of --data-file/m);
  });

  it("is read from --data-key-file, or from the systemd credential data-key", async () => {
    expect((await readDataKey(source(keyFile))).equals(key)).toBe(true);
    const creds = await mkdtemp(join(dir, "creds-"));
    await writeFile(join(creds, "data-key"), key.toString("base64"), { mode: 0o400 });
    expect((await readDataKey(source(undefined, { CREDENTIALS_DIRECTORY: creds }))).equals(key)).toBe(true);
    // systemd shows the ACL that grants a service user its credential as group bits.
    await chmod(join(creds, "data-key"), 0o440);
    expect((await readDataKey(source(undefined, { CREDENTIALS_DIRECTORY: creds }))).equals(key)).toBe(true);
    await chmod(join(creds, "data-key"), 0o444);
    expect((await refusal(readDataKey(source(undefined, { CREDENTIALS_DIRECTORY: creds })))).code).toBe(
      "DATA_KEY_PERMISSIONS",
    );
  });

  it("beside the data file, or below its directory, is refused with DATA_KEY_BESIDE_DATA", async () => {
    const beside = join(dataDir, "data.key");
    await writeDataKey(beside);
    const stderr = await cliRefusal(["--data-file", join(dataDir, "cp.db"), "--data-key-file", beside]);
    expect(stderr).toMatch(/^oci-cred-agent: error DATA_KEY_BESIDE_DATA: .*keep the key elsewhere/m);
    await mkdir(join(dataDir, "sub"), { mode: 0o700 });
    await writeDataKey(join(dataDir, "sub", "data.key"));
    expect((await refusal(readDataKey(source(join(dataDir, "sub", "data.key"))))).code).toBe("DATA_KEY_BESIDE_DATA");
    // Nothing was created: the refusal comes before the data file.
    await expect(stat(join(dataDir, "cp.db"))).rejects.toThrow(/ENOENT/);
  });

  it("that group or others may read is refused with DATA_KEY_PERMISSIONS and the chmod that fixes it", async () => {
    const loose = join(keysDir, "loose.key");
    await writeDataKey(loose);
    await chmod(loose, 0o640);
    const e = await refusal(readDataKey(source(loose)));
    expect(e.code).toBe("DATA_KEY_PERMISSIONS");
    expect(e.message).toContain(`chmod 600 ${loose}`);
  });

  it("that is not base64 of 32 bytes is refused with DATA_KEY_INVALID and how to make one", async () => {
    for (const content of [randomBytes(32), randomBytes(16).toString("hex"), randomBytes(24).toString("base64"), ""]) {
      const bad = join(keysDir, `bad-${randomBytes(4).toString("hex")}.key`);
      await writeFile(bad, content, { mode: 0o600 });
      const e = await refusal(readDataKey(source(bad)));
      expect(e.code).toBe("DATA_KEY_INVALID");
      expect(e.message).toContain("head -c 32 /dev/urandom | base64");
    }
  });

  it("that is not the one the data file was written with is refused with DATA_KEY_WRONG", async () => {
    const path = join(dataDir, "wrong-key.db");
    (await SqliteStorage.open(path, key)).close();
    const e = await refusal(SqliteStorage.open(path, randomBytes(32)));
    expect(e.code).toBe("DATA_KEY_WRONG");
    expect(e.message).toContain("the key it was created with");
    (await SqliteStorage.open(path, key)).close();
  });
});

describe("the data file", () => {
  it("is created 0600 even under a permissive umask; an existing one others may read is refused with DATA_FILE_PERMISSIONS", async () => {
    const path = join(dataDir, "mode.db");
    const umask = process.umask(0o000);
    try {
      (await SqliteStorage.open(path, key)).close();
    } finally {
      process.umask(umask);
    }
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await chmod(path, 0o644);
    const e = await refusal(SqliteStorage.open(path, key));
    expect(e.code).toBe("DATA_FILE_PERMISSIONS");
    expect(e.message).toContain(`chmod 600 ${path}`);
  });

  it("of an earlier version (JSON) is refused with DATA_FILE_OLD_FORMAT, by the CLI too", async () => {
    const path = join(dataDir, "state.json");
    await writeFile(path, JSON.stringify({ version: 1, integrations: [], runs: [] }), { mode: 0o600 });
    const e = await refusal(SqliteStorage.open(path, key));
    expect(e.code).toBe("DATA_FILE_OLD_FORMAT");
    const stderr = await cliRefusal(["--data-file", path, "--data-key-file", keyFile]);
    expect(stderr).toMatch(/^oci-cred-agent: error DATA_FILE_OLD_FORMAT: .*start with a new --data-file/m);
  });

  it("that is not a database, or a damaged one, is refused with DATA_FILE_CORRUPT", async () => {
    const garbage = join(dataDir, "garbage.db");
    await writeFile(garbage, randomBytes(8192), { mode: 0o600 });
    expect((await refusal(SqliteStorage.open(garbage, key))).code).toBe("DATA_FILE_CORRUPT");

    // A real data file with runs, whose pages past the first are then overwritten.
    const damaged = join(dataDir, "damaged.db");
    const storage = await SqliteStorage.open(damaged, key);
    storage.putAgent(agentRecord("agent-1"));
    for (let i = 0; i < 200; i++) storage.putAgent(agentRecord(`agent-${i}-${"x".repeat(200)}`));
    storage.close();
    const handle = await open(damaged, "r+");
    try {
      const size = (await handle.stat()).size;
      expect(size).toBeGreaterThan(3 * 4096);
      await handle.write(Buffer.alloc(size - 4096 - 100, 0xa5), 0, size - 4096 - 100, 4096 + 100);
    } finally {
      await handle.close();
    }
    const e = await refusal(SqliteStorage.open(damaged, key));
    expect(e.code).toBe("DATA_FILE_CORRUPT");
    expect(e.message).toContain("restore it from a backup");
  });

  it("of another application is refused with DATA_FILE_FOREIGN; a newer schema with DATA_FILE_TOO_NEW", async () => {
    const foreign = join(dataDir, "foreign.db");
    await writeFile(foreign, "", { mode: 0o600 });
    const db = new DatabaseSync(foreign);
    db.exec("CREATE TABLE t (x)");
    db.close();
    expect((await refusal(SqliteStorage.open(foreign, key))).code).toBe("DATA_FILE_FOREIGN");

    const newer = join(dataDir, "newer.db");
    (await SqliteStorage.open(newer, key)).close();
    const raw = new DatabaseSync(newer);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    const e = await refusal(SqliteStorage.open(newer, key));
    expect(e.code).toBe("DATA_FILE_TOO_NEW");
    expect(e.message).toContain("schema version 99");
  });

  it("in a directory that does not exist is refused with DATA_FILE_OPEN_FAILED, naming it", async () => {
    const e = await refusal(SqliteStorage.open(join(dataDir, "missing", "cp.db"), key));
    expect(e.code).toBe("DATA_FILE_OPEN_FAILED");
    expect(e.message).toContain(`create its directory ${join(dataDir, "missing")}`);
  });

  it("opened by a second control plane is taken over: the first stops at its next write (DATA_FILE_TAKEN_OVER)", async () => {
    const path = join(dataDir, "shared.db");
    const failures: AgentError[] = [];
    const first = await SqliteStorage.open(path, key, { onFailure: (e) => failures.push(e) });
    first.putAgent(agentRecord("agent-first"));
    const second = await SqliteStorage.open(path, key);
    expect(() => {
      first.putAgent(agentRecord("agent-late"));
    }).toThrow(expect.objectContaining({ code: "DATA_FILE_TAKEN_OVER" }));
    // Every later write is refused the same way; onFailure was called once.
    expect(() => {
      first.deleteAgent("agent-first");
    }).toThrow(expect.objectContaining({ code: "DATA_FILE_TAKEN_OVER" }));
    expect(failures.map((f) => f.code)).toEqual(["DATA_FILE_TAKEN_OVER"]);
    second.putAgent(agentRecord("agent-second"));
    expect(second.load().agents.map((a) => a.id)).toEqual(["agent-first", "agent-second"]);
    first.close();
    second.close();
  });
});

describe("a write that fails", () => {
  it("answers 500 and stops the CLI with DATA_FILE_WRITE_FAILED; restarted, it serves what was committed", async () => {
    const full = join(dir, "full");
    await mkdir(full, { mode: 0o700 });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", full]);
    mounted.push(full);
    const args = ["--data-file", join(full, "cp.db"), "--data-key-file", keyFile];
    const tokens = ["--admin-token-file", join(dir, "admin.token"), "--agent-token-file", join(dir, "agent.token")];
    const cp = await spawnCliControlPlane([...tokens, ...args]);
    running.push(cp);
    const admin = async (method: string, path: string, body?: unknown): Promise<Response> =>
      fetch(`${cp.url}/api/admin/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const made = await admin("POST", "/integrations", {
      name: "committed",
      registry_url: "https://committed.example",
      credential_helper: "ecr-login",
    });
    expect(made.status).toBe(201);
    const id = ((await made.json()) as { id: string }).id;
    // A 2 MiB archive does not fit in a 1 MiB file system.
    const archive = Buffer.concat([Buffer.from([0x1f, 0x8b]), randomBytes(2 * 1024 * 1024)]);
    const exited = once(cp.child, "exit") as Promise<[number | null]>;
    const refused = await admin("POST", "/runs", { configuration_tar_gz_base64: archive.toString("base64") });
    expect(refused.status).toBe(500);
    const [code] = await exited;
    expect(code).toBe(1);
    expect(cp.output()).toMatch(/oci-cred-agent: error DATA_FILE_WRITE_FAILED: writing --data-file .*full/);

    const again = await spawnCliControlPlane([...tokens, ...args]);
    running.push(again);
    const list = await fetch(`${again.url}/api/admin/v1/integrations`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    expect(((await list.json()) as { integrations: { id: string }[] }).integrations.map((i) => i.id)).toEqual([id]);
    const runs = await fetch(`${again.url}/api/admin/v1/runs`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(((await runs.json()) as { runs: unknown[] }).runs).toEqual([]);
    expect(await again.stop()).toBe(0);
  });
});
