/**
 * The control plane's SQLite storage, in process, on real files: every kind of state survives a
 * close and a reopen (integrations with their passwords, agents with their keys and credential,
 * queued runs in their order, running runs with their lease and its expiry, events, logs,
 * outcomes); no secret is in the database or its WAL in clear; a run's configuration is deleted
 * when it ends, however it ends; retention deletes old finished runs and keeps recent ones, at
 * start and on its timer (the clock is injected). Refusals are in data-file-refusals.test.ts,
 * the kill -9 test in data-file-kill.test.ts.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createControlPlane, type ControlPlane } from "../../src/control-plane/server.js";
import { SqliteStorage } from "../../src/control-plane/sqlite-storage.js";
import type { AgentRecord, Integration, RunRecord, StoreClock } from "../../src/control-plane/store.js";
import {
  generatePrivateKeyPem,
  parsePrivateKeyPem,
  publicKeyDoc,
  type AgentPrivateKey,
} from "../../src/crypto/agent-key.js";
import { openBundle, openChallenge } from "../../src/crypto/sealed-bundle.js";
import { queryDataFile, rawDataFileBytes, storedTarGz } from "../support/data-file.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";
import { leakForms } from "../support/leak-forms.js";
import { refusal } from "../support/refusal.js";

/** A clock the test moves: timers fire, in order, only when it is advanced past them. */
class ManualClock implements StoreClock {
  private nowMs = Math.floor(Date.now() / 1000) * 1000;
  private timers: { at: number; fn: () => void; live: boolean }[] = [];

  now(): number {
    return this.nowMs;
  }

  setTimer(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.nowMs + ms, fn, live: true };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.live = false;
      },
    };
  }

  advance(ms: number): void {
    const target = this.nowMs + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.live && t.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.live = false;
      this.nowMs = Math.max(this.nowMs, due.at);
      due.fn();
    }
    this.timers = this.timers.filter((t) => t.live);
    this.nowMs = target;
  }
}

const USER = "octocat";
const PASSWORD = `PW-CANARY-${randomBytes(6).toString("hex")}`;
const ERROR_TEXT = `ERRTEXT-${randomBytes(6).toString("hex")}`;
const PATCHED_PASSWORD = `PW-PATCHED-${randomBytes(6).toString("hex")}`;
const DELETED_PASSWORD = `PW-DELETED-${randomBytes(6).toString("hex")}`;
const TFVARS = `tfvars-canary-${randomBytes(6).toString("hex")}`;
const LOG_TEXT = `log-canary-${randomBytes(6).toString("hex")}`;
const EVENT_TEXT = `event-canary-${randomBytes(6).toString("hex")}`;
const TTL_MS = 60_000;
const adminToken = randomBytes(24).toString("base64url");
const agentToken = randomBytes(24).toString("base64url");

let dir: string;
const opened: { cp: ControlPlane; storage: SqliteStorage }[] = [];

async function start(
  dataFile: string,
  key: Buffer,
  clock: StoreClock,
  retentionSeconds?: number,
): Promise<{ cp: ControlPlane; storage: SqliteStorage; url: string }> {
  const storage = await SqliteStorage.open(dataFile, key);
  const cp = await createControlPlane({
    adminToken,
    agentToken,
    leaseTtlSeconds: TTL_MS / 1000,
    persistence: storage,
    clock,
    probe: () => Promise.resolve({ warnings: [] }),
    ...(retentionSeconds === undefined ? {} : { retentionSeconds }),
  });
  const { url } = await cp.listen("127.0.0.1", 0);
  opened.push({ cp, storage });
  return { cp, storage, url };
}

async function stop(cp: ControlPlane, storage: SqliteStorage): Promise<void> {
  await cp.close();
  storage.close();
}

async function call(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  bearer?: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const admin = path.startsWith("/api/admin/");
  const res = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${bearer ?? (admin ? adminToken : agentToken)}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

interface LeaseAnswer {
  lease_id: string;
  run: { id: string; configuration: { inline_base64?: string } };
  bundle: string;
}

function snapshot(cp: ControlPlane): {
  integrations: Integration[];
  agents: AgentRecord[];
  runs: RunRecord[];
  audit: unknown[];
  enrollmentTokens: unknown[];
} {
  return structuredClone({
    audit: [...cp.store.audit],
    enrollmentTokens: [...cp.store.enrollmentTokens.values()],
    integrations: [...cp.store.integrations.values()],
    agents: [...cp.store.agents.values()],
    runs: [...cp.store.runs.values()],
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-sqlite-"));
});

afterAll(async () => {
  for (const { cp, storage } of opened) await stop(cp, storage);
  await rm(dir, { recursive: true, force: true });
});

describe("SQLite storage: a close and a reopen", () => {
  const clock = new ManualClock();
  let dataFile: string;
  const key = randomBytes(32);
  let url: string;
  let cp: ControlPlane;
  let storage: SqliteStorage;
  let agent: Enrolled;
  let archive: Buffer;
  const ids: Record<string, string> = {};
  const leases: Record<string, string> = {};
  let before: ReturnType<typeof snapshot>;
  let enrollmentToken: string;

  const admin = (method: string, path: string, body?: unknown): ReturnType<typeof call> =>
    call(url, method, `/api/admin/v1${path}`, body);
  const asAgent = (method: string, path: string, body?: unknown): ReturnType<typeof call> =>
    call(url, method, `/api/agent/v1${path}`, body, agent.credential);
  async function createRun(): Promise<string> {
    const made = await admin("POST", "/runs", {
      configuration_tar_gz_base64: archive.toString("base64"),
      phases: ["init", "plan"],
    });
    expect(made.status).toBe(201);
    return made.json["id"] as string;
  }
  async function lease(max: number): Promise<LeaseAnswer[]> {
    const got = await asAgent("POST", `/agents/${agent.agentId}/leases`, { max, wait_seconds: 0 });
    expect(got.status).toBe(200);
    return got.json["leases"] as LeaseAnswer[];
  }

  beforeAll(async () => {
    await mkdir(join(dir, "state"), { mode: 0o700 });
    dataFile = join(dir, "state", "cp.db");
    archive = await storedTarGz({ "main.tf": "\n", "terraform.tfvars": `secret = "${TFVARS}"\n` });
    ({ cp, storage, url } = await start(dataFile, key, clock));
  });

  it("holds every kind of state, the file and its WAL created 0600", async () => {
    const kept = await admin("POST", "/integrations", {
      name: "kept",
      registry_url: "https://kept.example",
      username: USER,
      password: PASSWORD,
      export_credentials: true,
    });
    expect(kept.status).toBe(201);
    ids["kept"] = kept.json["id"] as string;
    const helper = await admin("POST", "/integrations", {
      name: "helper",
      registry_url: "https://helper.example",
      credential_helper: "ecr-login",
      export_credentials: true,
    });
    ids["helper"] = helper.json["id"] as string;
    const patched = await admin("POST", "/integrations", {
      name: "patched",
      registry_url: "https://patched.example",
      username: "someone",
      password: `${PATCHED_PASSWORD}-old`,
    });
    ids["patched"] = patched.json["id"] as string;
    expect(
      (await admin("PATCH", `/integrations/${ids["patched"]}`, { name: "patched twice", password: PATCHED_PASSWORD }))
        .status,
    ).toBe(200);
    const deleted = await admin("POST", "/integrations", {
      name: "deleted",
      registry_url: "https://deleted.example",
      username: "x",
      password: DELETED_PASSWORD,
    });
    expect((await admin("DELETE", `/integrations/${deleted.json["id"] as string}`)).status).toBe(204);

    // An enrolled agent, whose keys then change (proved with its current key).
    agent = await enrollAgent(url, agentToken, undefined, { concurrency: 4 });
    const second = await parsePrivateKeyPem(generatePrivateKeyPem(), "second key");
    const challenge = await asAgent("POST", `/agents/${agent.agentId}/keys/challenge`, {});
    const answer = await openChallenge(challenge.json["challenge"] as string, {
      keys: agent.keys,
      agentId: agent.agentId,
      challengeId: challenge.json["challenge_id"] as string,
      nowMs: Date.now(),
      clockSkewSeconds: 120,
    });
    const first = [...agent.keys.values()][0] as AgentPrivateKey;
    const changed = await asAgent("PUT", `/agents/${agent.agentId}/keys`, {
      public_keys: [publicKeyDoc(first.publicKey), publicKeyDoc(second.publicKey)],
      challenge_id: challenge.json["challenge_id"],
      answer,
    });
    expect(changed.status).toBe(200);
    agent.keys.set(second.kid, second);

    // An unused enrollment token (kept as its hash only).
    const minted = await admin("POST", "/enrollment-tokens", { name: "kept token" });
    expect(minted.status).toBe(201);
    enrollmentToken = minted.json["token"] as string;

    // A run whose lease expires: failed, LEASE_EXPIRED.
    ids["expired"] = await createRun();
    expect((await lease(1)).map((l) => l.run.id)).toEqual([ids["expired"]]);
    clock.advance(TTL_MS + 1);
    expect(cp.store.runs.get(ids["expired"])?.status).toBe("failed");

    // Three leased, two queued, one canceled while queued.
    for (const name of ["succeeded", "cancel-requested", "running"]) ids[name] = await createRun();
    for (const l of await lease(3)) {
      const name = Object.keys(ids).find((n) => ids[n] === l.run.id) ?? "";
      leases[name] = l.lease_id;
    }
    expect(Object.keys(leases).sort()).toEqual(["cancel-requested", "running", "succeeded"]);
    for (const name of ["queued-1", "queued-2", "canceled"]) ids[name] = await createRun();
    expect((await admin("POST", `/runs/${ids["canceled"]}/cancel`)).status).toBe(202);

    // Events, logs, a heartbeat and a completion.
    const on = (name: string, action: string, body: unknown): ReturnType<typeof call> =>
      asAgent("POST", `/leases/${leases[name] ?? ""}/${action}`, body);
    expect(
      (
        await on("succeeded", "events", {
          events: [{ type: "note", at: new Date(clock.now()).toISOString(), text: EVENT_TEXT }],
        })
      ).status,
    ).toBe(204);
    expect((await on("succeeded", "logs", { phase: "init", seq: 0, text: `${LOG_TEXT}\n` })).status).toBe(204);
    expect((await on("succeeded", "logs", { phase: "plan", seq: 1, text: "second line\n" })).status).toBe(204);
    clock.advance(5_000);
    expect((await on("running", "heartbeat", {})).status).toBe(200);
    expect((await on("running", "logs", { phase: "init", seq: 0, text: "still running\n" })).status).toBe(204);
    const done = await on("succeeded", "complete", {
      outcome: "succeeded",
      phases: [{ name: "init", exit_code: 0, signal: null, duration_ms: 5 }],
      credentials_wiped: true,
    });
    expect(done.json).toMatchObject({ status: "succeeded" });
    expect((await admin("POST", `/runs/${ids["cancel-requested"]}/cancel`)).status).toBe(202);

    before = snapshot(cp);
    expect(before.runs.map((r) => [r.id, r.status])).toEqual([
      [ids["expired"], "failed"],
      [ids["succeeded"], "succeeded"],
      [ids["cancel-requested"], "running"],
      [ids["running"], "running"],
      [ids["queued-1"], "queued"],
      [ids["queued-2"], "queued"],
      [ids["canceled"], "canceled"],
    ]);
    for (const file of [dataFile, `${dataFile}-wal`, `${dataFile}-shm`])
      expect((await stat(file)).mode & 0o777, file).toBe(0o600);
  });

  it("holds no secret in clear, in the database or its WAL", async () => {
    // While the control plane runs, the recent writes are in the WAL.
    expect((await stat(`${dataFile}-wal`)).size).toBeGreaterThan(0);
    const raw = await rawDataFileBytes(dataFile);
    const text = raw.toString("latin1");
    const secrets = [
      ...leakForms(PASSWORD, USER),
      ...leakForms(PATCHED_PASSWORD, "someone"),
      ...leakForms(DELETED_PASSWORD, "x"),
      TFVARS,
      LOG_TEXT,
      EVENT_TEXT,
      agent.credential,
      enrollmentToken,
      ...Object.values(leases),
    ];
    for (const secret of secrets) expect(text.includes(secret), `the data file holds ${secret}`).toBe(false);
    // The archive is stored uncompressed: unsealed, its tfvars would show above.
    expect(archive.toString("latin1")).toContain(TFVARS);
  });

  it("keeps a run's configuration while it is queued or running, and deletes it when it ends", () => {
    const rows = queryDataFile(dataFile, "SELECT run_id FROM run_configurations ORDER BY run_id").map((r) =>
      String(r["run_id"]),
    );
    expect(rows).toEqual(
      [ids["cancel-requested"], ids["running"], ids["queued-1"], ids["queued-2"]].map(String).sort(),
    );
    // And the ended ones exist, with their events and logs, only without it.
    const ended = queryDataFile(dataFile, "SELECT id FROM runs WHERE finished_at_ms IS NOT NULL").map((r) =>
      String(r["id"]),
    );
    expect(ended.sort()).toEqual([ids["expired"], ids["succeeded"], ids["canceled"]].map(String).sort());
    expect(cp.store.runs.get(ids["succeeded"] ?? "")?.configuration.byteLength).toBe(0);
  });

  it("reopened, holds the same integrations, agents and runs, leases and all", async () => {
    await stop(cp, storage);
    ({ cp, storage, url } = await start(dataFile, key, clock));
    const after = snapshot(cp);
    expect(after.integrations).toEqual(before.integrations);
    expect(after.integrations.map((i) => i.password)).toEqual([PASSWORD, "", PATCHED_PASSWORD]);
    // last_seen_at is written at most once a minute: within a minute of what memory had.
    const seen = (a: AgentRecord): number => Date.parse(a.last_seen_at);
    expect(after.agents.map(({ last_seen_at: _s, ...a }) => a)).toEqual(
      before.agents.map(({ last_seen_at: _s, ...a }) => a),
    );
    expect(seen(after.agents[0] as AgentRecord)).toBeGreaterThan(seen(before.agents[0] as AgentRecord) - 60_000);
    expect(after.runs).toEqual(before.runs);
    // The audit trail, in order, with the password change as a fact only.
    expect(after.audit).toEqual(before.audit);
    expect(after.audit.map((e) => (e as { type: string }).type)).toContain("integration_password_changed");
    expect(after.audit.length).toBeGreaterThan(3);
    expect(after.enrollmentTokens).toEqual(before.enrollmentTokens);
    expect(after.enrollmentTokens).toHaveLength(1);
    expect(after.runs.find((r) => r.id === ids["succeeded"])?.logs.map((l) => l.text)).toEqual([
      `${LOG_TEXT}\n`,
      "second line\n",
    ]);
    expect(after.runs.find((r) => r.id === ids["cancel-requested"])?.lease?.cancel_requested).toBe(true);
  });

  it("after the restart: the agent's credential works, queued runs lease in order with their configuration and the real password", async () => {
    const got = await lease(5);
    expect(got.map((l) => l.run.id)).toEqual([ids["queued-1"], ids["queued-2"]]);
    expect(Buffer.from(got[0]?.run.configuration.inline_base64 ?? "", "base64").equals(archive)).toBe(true);
    const bundle = await openBundle(Buffer.from(got[0]?.bundle ?? "", "utf8"), {
      keys: agent.keys,
      agentId: agent.agentId,
      runId: ids["queued-1"] ?? "",
      nowMs: Date.now(),
      maxLifetimeSeconds: 3600,
      clockSkewSeconds: 120,
    });
    const plain = JSON.parse(Buffer.from(bundle.plaintext).toString("utf8")) as {
      registries: Record<string, unknown>[];
    };
    expect(plain.registries.find((r) => r["id"] === ids["kept"])).toMatchObject({
      username: USER,
      password: PASSWORD,
    });
  });

  it("after the restart: a running run's lease holds, heartbeats and completes; an unattended one expires at its stored expiry", async () => {
    const hb = await asAgent("POST", `/leases/${leases["running"] ?? ""}/heartbeat`, {});
    expect(hb.status).toBe(200);
    expect(hb.json["cancel_requested"]).toBe(false);
    const done = await asAgent("POST", `/leases/${leases["running"] ?? ""}/complete`, {
      outcome: "failed",
      error: { code: "PHASE_FAILED", message: `init exited 1: ${ERROR_TEXT}` },
      phases: [{ name: "init", exit_code: 1, signal: null, duration_ms: 5 }],
      credentials_wiped: true,
    });
    expect(done.json).toMatchObject({ id: ids["running"], status: "failed" });
    // The error's message is the agent's text, as free as its logs: sealed like them.
    expect((await rawDataFileBytes(dataFile)).toString("latin1")).not.toContain(ERROR_TEXT);
    await stop(cp, storage);
    ({ cp, storage, url } = await start(dataFile, key, clock));
    expect(cp.store.runs.get(ids["running"] ?? "")?.error).toEqual({
      code: "PHASE_FAILED",
      message: `init exited 1: ${ERROR_TEXT}`,
    });

    // The cancel-requested run was not heartbeated since: it expires when its stored lease does.
    const run = cp.store.runs.get(ids["cancel-requested"] ?? "") as RunRecord;
    const expiresAt = before.runs.find((r) => r.id === run.id)?.lease?.expires_at_ms ?? 0;
    expect(run.lease?.expires_at_ms).toBe(expiresAt);
    clock.advance(expiresAt - clock.now() - 1);
    expect(run.status).toBe("running");
    clock.advance(2);
    expect(run.status).toBe("canceled");
    expect(run.error?.code).toBe("LEASE_EXPIRED");
    // Every run that ended lost its configuration, whatever ended it.
    const left = queryDataFile(dataFile, "SELECT run_id FROM run_configurations").map((r) => String(r["run_id"]));
    expect(left.sort()).toEqual([ids["queued-1"], ids["queued-2"]].map(String).sort());
    const raw = (await rawDataFileBytes(dataFile)).toString("latin1");
    for (const secret of [PASSWORD, TFVARS, LOG_TEXT, EVENT_TEXT, agent.credential])
      expect(raw.includes(secret)).toBe(false);
  });
});

describe("SQLite storage: backup", () => {
  it("a copy taken with VACUUM INTO while the control plane runs restores with the key, once it is 0600", async () => {
    await mkdir(join(dir, "backup-src"), { mode: 0o700 });
    await mkdir(join(dir, "backup-dst"), { mode: 0o700 });
    const clock = new ManualClock();
    const key = randomBytes(32);
    const source = join(dir, "backup-src", "state.db");
    const { cp } = await start(source, key, clock);
    const run = cp.store.createRun(await storedTarGz({ "main.tf": "\n" }), ["init"]);
    cp.store.appendLog(run, { phase: "init", seq: 0, text: "before the backup\n" });
    // docs/operations.md: sqlite3 state.db "VACUUM INTO '/backup/state.db'", on a connection of its own.
    const copy = join(dir, "backup-dst", "state.db");
    queryDataFile(source, `VACUUM INTO '${copy}'`);
    cp.store.appendLog(run, { phase: "init", seq: 1, text: "after the backup\n" });
    expect((await refusal(SqliteStorage.open(copy, key))).code).toBe("DATA_FILE_PERMISSIONS");
    await chmod(copy, 0o600);
    expect((await refusal(SqliteStorage.open(copy, randomBytes(32)))).code).toBe("DATA_KEY_WRONG");
    const restored = await start(copy, key, clock);
    expect(restored.cp.store.runs.get(run.id)?.logs.map((l) => l.text)).toEqual(["before the backup\n"]);
    expect(restored.cp.store.runs.get(run.id)?.status).toBe("queued");
  });
});

describe("SQLite storage: retention", () => {
  const clock = new ManualClock();
  const HOUR = 3_600_000;
  const key = randomBytes(32);
  let dataFile: string;

  const countRows = (runId: string): number[] =>
    ["runs WHERE id", "run_events WHERE run_id", "run_logs WHERE run_id"].map((where) =>
      Number(queryDataFile(dataFile, `SELECT count(*) AS n FROM ${where} = ?`, runId)[0]?.["n"]),
    );

  it("deletes a finished run with its events and logs once it is older than the retention, keeps recent and unfinished ones", async () => {
    await mkdir(join(dir, "retention"), { mode: 0o700 });
    dataFile = join(dir, "retention", "cp.db");
    const { cp, storage } = await start(dataFile, key, clock, HOUR / 1000);
    const store = cp.store;
    const archive = await storedTarGz({ "main.tf": "\n" });
    const old = store.createRun(archive, ["init"]);
    const queuedLongAgo = store.createRun(archive, ["init"]);
    store.appendLog(old, { phase: "init", seq: 0, text: "old log\n" });
    store.cancelRun(old);
    clock.advance(HOUR / 2);
    const recent = store.createRun(archive, ["init"]);
    store.appendLog(recent, { phase: "init", seq: 0, text: "recent log\n" });
    store.cancelRun(recent);
    expect(countRows(old.id)).toEqual([1, 2, 1]);

    // An hour and a bit after the old one ended, the sweep (every tenth of the retention) took it.
    clock.advance(HOUR / 2 + HOUR / 10 + 1);
    expect(store.runs.has(old.id)).toBe(false);
    expect(countRows(old.id)).toEqual([0, 0, 0]);
    expect(store.runs.get(recent.id)?.logs.map((l) => l.text)).toEqual(["recent log\n"]);
    expect(countRows(recent.id)).toEqual([1, 2, 1]);
    expect(store.runs.get(queuedLongAgo.id)?.status).toBe("queued");
    await stop(cp, storage);
  });

  it("sweeps at start: what expired while the control plane was down is gone when it comes back", async () => {
    clock.advance(2 * HOUR);
    const { cp } = await start(dataFile, key, clock, HOUR / 1000);
    expect([...cp.store.runs.values()].map((r) => r.status)).toEqual(["queued"]);
    expect(Number(queryDataFile(dataFile, "SELECT count(*) AS n FROM run_logs")[0]?.["n"])).toBe(0);
  });
});
