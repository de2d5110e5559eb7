/**
 * A kill -9 of the real control plane (the built CLI, bin/oci-cred-agent) under load loses
 * nothing it acknowledged. Workers drive it concurrently over HTTP: an admin creates and deletes
 * integrations, creates and cancels runs; three enrolled agents lease runs, post events and logs,
 * heartbeat and complete. Right after the Nth acknowledged request (an answer 2xx read whole),
 * the test SIGKILLs the process, with other requests in flight, and starts it again on the same
 * file. Then every acknowledged change must be there: integrations created (and not deleted),
 * runs created, queued or running or finished as acknowledged, events and logs, completions,
 * cancels; each acknowledged lease still held (a heartbeat answers 200) and each agent's
 * credential still valid. Several rounds, kills at different points; at the end the database
 * passes SQLite's integrity check. No sleeps: kills follow observed acknowledgements.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteStorage } from "../../src/control-plane/sqlite-storage.js";
import { spawnCliControlPlane, type CliControlPlane } from "../support/cli-control-plane.js";
import { tarGz } from "../support/control-plane-harness.js";
import { queryDataFile, writeDataKey } from "../support/data-file.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";
import { refusal } from "../support/refusal.js";

type Outcome = "succeeded" | "failed" | "canceled";

interface RunModel {
  /** The lease an agent was handed, acknowledged. */
  lease?: { id: string; agent: number };
  events: string[];
  logs: string[];
  completed?: Outcome;
  /** A completion sent but not acknowledged before a kill: it may or may not have happened. */
  completing?: Outcome | undefined;
  canceled: boolean;
  canceling: boolean;
}

const adminToken = randomBytes(24).toString("base64url");
const agentToken = randomBytes(24).toString("base64url");
/** Kill after this many acknowledged requests in each round. */
const KILL_AFTER = [20, 90, 45, 150];
const AGENTS = 3;

let dir: string;
let dataFile: string;
let keyFile: string;
let dataKey: Buffer;
let archive: Buffer;
const processes: CliControlPlane[] = [];

const integrations = new Map<string, { id?: string; created: boolean; deleted: boolean; deleting: boolean }>();
const runs = new Map<string, RunModel>();
const agents: Enrolled[] = [];
let counter = 0;
const next = (): number => ++counter;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-kill-"));
  await mkdir(join(dir, "state"), { mode: 0o700 });
  await mkdir(join(dir, "etc"), { mode: 0o700 });
  dataFile = join(dir, "state", "cp.db");
  keyFile = join(dir, "etc", "data.key");
  dataKey = await writeDataKey(keyFile);
  await writeFile(join(dir, "etc", "admin.token"), adminToken, { mode: 0o600 });
  await writeFile(join(dir, "etc", "agent.token"), agentToken, { mode: 0o600 });
  archive = await tarGz({ "main.tf": "\n" });
});

afterAll(async () => {
  for (const cp of processes) await cp.stop();
  await rm(dir, { recursive: true, force: true });
});

async function startControlPlane(): Promise<CliControlPlane> {
  const cp = await spawnCliControlPlane([
    "--admin-token-file",
    join(dir, "etc", "admin.token"),
    "--agent-token-file",
    join(dir, "etc", "agent.token"),
    "--data-file",
    dataFile,
    "--data-key-file",
    keyFile,
  ]);
  processes.push(cp);
  return cp;
}

interface Answer {
  status: number;
  json: Record<string, unknown>;
}

/** One round of load against `cp`, ended by a SIGKILL right after the `killAfter`th acknowledgement. */
async function loadUntilKilled(cp: CliControlPlane, killAfter: number): Promise<{ inFlightAtKill: number }> {
  let acks = 0;
  let inFlight = 0;
  let inFlightAtKill = -1;
  let killed = false;
  const exited = once(cp.child, "exit");

  async function request(method: string, path: string, body: unknown, bearer: string): Promise<Answer | undefined> {
    if (killed) return undefined;
    inFlight++;
    try {
      const res = await fetch(`${cp.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
    } catch {
      return undefined; // the process was killed under it: not acknowledged
    } finally {
      inFlight--;
    }
  }

  /** Counts an acknowledgement (after the model took it in); the Nth kills the process. */
  function acknowledged(): void {
    acks++;
    if (acks === killAfter && !killed) {
      killed = true;
      inFlightAtKill = inFlight;
      cp.child.kill("SIGKILL");
    }
  }

  const admin = (method: string, path: string, body?: unknown): Promise<Answer | undefined> =>
    request(method, `/api/admin/v1${path}`, body, adminToken);

  async function adminWorker(): Promise<void> {
    while (!killed) {
      const roll = Math.random();
      if (roll < 0.6) {
        const made = await admin("POST", "/runs", {
          configuration_tar_gz_base64: archive.toString("base64"),
          phases: ["init"],
        });
        if (made?.status !== 201) continue;
        runs.set(made.json["id"] as string, { events: [], logs: [], canceled: false, canceling: false });
        acknowledged();
      } else if (roll < 0.8) {
        const name = `int-${next()}`;
        integrations.set(name, { created: false, deleted: false, deleting: false });
        const made = await admin("POST", "/integrations", {
          name,
          registry_url: `https://${name}.example`,
          credential_helper: "ecr-login",
        });
        if (made?.status !== 201) continue;
        integrations.set(name, { id: made.json["id"] as string, created: true, deleted: false, deleting: false });
        acknowledged();
      } else if (roll < 0.9) {
        const victim = [...integrations.values()].find((i) => i.created && !i.deleting);
        if (!victim?.id) continue;
        victim.deleting = true;
        const gone = await admin("DELETE", `/integrations/${victim.id}`);
        if (gone?.status !== 204) continue;
        victim.deleted = true;
        acknowledged();
      } else {
        const target = [...runs.entries()].find(([, r]) => !r.lease && !r.canceling);
        if (!target) continue;
        target[1].canceling = true;
        const canceled = await admin("POST", `/runs/${target[0]}/cancel`);
        if (canceled?.status !== 202) continue;
        if ((canceled.json["status"] as string) === "canceled") target[1].canceled = true;
        acknowledged();
      }
    }
  }

  async function agentWorker(index: number): Promise<void> {
    const agent = agents[index] as Enrolled;
    const as = (path: string, body: unknown): Promise<Answer | undefined> =>
      request("POST", `/api/agent/v1${path}`, body, agent.credential);
    while (!killed) {
      const held = [...runs.entries()].find(
        ([, r]) => r.lease?.agent === index && r.completed === undefined && r.completing === undefined,
      );
      if (!held) {
        const got = await as(`/agents/${agent.agentId}/leases`, { max: 1, wait_seconds: 1 });
        if (got?.status !== 200) continue;
        for (const lease of got.json["leases"] as { lease_id: string; run: { id: string } }[]) {
          const run = runs.get(lease.run.id) ?? { events: [], logs: [], canceled: false, canceling: false };
          run.lease = { id: lease.lease_id, agent: index };
          runs.set(lease.run.id, run);
        }
        acknowledged();
        continue;
      }
      const [, run] = held;
      const lease = run.lease?.id ?? "";
      const roll = Math.random();
      if (roll < 0.3) {
        const marker = `event-${next()}`;
        const sent = await as(`/leases/${lease}/events`, {
          events: [{ type: "note", at: new Date().toISOString(), marker }],
        });
        if (sent?.status !== 204) continue;
        run.events.push(marker);
      } else if (roll < 0.6) {
        const text = `log-${next()}\n`;
        const sent = await as(`/leases/${lease}/logs`, { phase: "init", seq: run.logs.length, text });
        if (sent?.status !== 204) continue;
        run.logs.push(text);
      } else if (roll < 0.8) {
        const beat = await as(`/leases/${lease}/heartbeat`, {});
        if (beat?.status !== 200) continue;
      } else {
        const outcome = (["succeeded", "failed", "canceled"] as const)[next() % 3] as Outcome;
        run.completing = outcome;
        const done = await as(`/leases/${lease}/complete`, {
          outcome,
          phases: [{ name: "init", exit_code: outcome === "succeeded" ? 0 : 1, signal: null, duration_ms: 1 }],
          credentials_wiped: true,
        });
        if (done?.status !== 200) continue;
        run.completed = outcome;
        run.completing = undefined;
      }
      acknowledged();
    }
  }

  await Promise.all([adminWorker(), adminWorker(), ...agents.map((_, i) => agentWorker(i))]);
  await exited;
  expect(cp.child.signalCode).toBe("SIGKILL");
  return { inFlightAtKill };
}

/** Checks that the restarted control plane holds everything acknowledged. */
async function verify(cp: CliControlPlane): Promise<void> {
  const get = async (path: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`${cp.url}/api/admin/v1${path}`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(res.status, path).toBe(200);
    return (await res.json()) as Record<string, unknown>;
  };
  const present = new Set(
    (
      (await get("/integrations"))["integrations"] as {
        id: string;
        name: string;
      }[]
    ).map((i) => i.name),
  );
  for (const [name, i] of integrations) {
    if (i.created && !i.deleting) expect(present.has(name), `integration ${name} was acknowledged`).toBe(true);
    if (i.deleted) expect(present.has(name), `integration ${name} was deleted`).toBe(false);
  }
  for (const name of present) expect(integrations.has(name), `integration ${name} was never sent`).toBe(true);

  const listed = new Set(((await get("/runs"))["runs"] as { id: string }[]).map((r) => r.id));
  for (const [id, model] of runs) {
    expect(listed.has(id), `run ${id} was acknowledged`).toBe(true);
    const view = await get(`/runs/${id}`);
    const status = view["status"] as string;
    const allowed = new Set<string>();
    if (model.completed) allowed.add(model.completed);
    else if (model.lease) {
      allowed.add("running");
      if (model.completing) allowed.add(model.completing);
    } else if (model.canceled) allowed.add("canceled").add("running");
    else {
      allowed.add("queued").add("running"); // running: leased in an answer the kill cut off
      if (model.canceling) allowed.add("canceled");
    }
    // A lease nobody received expires: the run fails (or ends canceled), LEASE_EXPIRED.
    const expired = (view["error"] as { code?: string } | null)?.code === "LEASE_EXPIRED";
    if (!model.lease && expired) allowed.add("failed").add("canceled");
    expect([...allowed], `run ${id}`).toContain(status);
    if (model.completing && status === model.completing) {
      model.completed = model.completing;
      model.completing = undefined;
    } else if (model.completing) model.completing = undefined;
    const events = view["events"] as Record<string, unknown>[];
    for (const marker of model.events)
      expect(
        events.some((e) => e["marker"] === marker),
        `event ${marker} of run ${id}`,
      ).toBe(true);
    const logs = (view["logs"] as { text: string }[]).map((l) => l.text);
    for (const text of model.logs) expect(logs, `log of run ${id}`).toContain(text);
  }

  // Each agent's credential still works, and each acknowledged lease is still held.
  for (const agent of agents) {
    const ping = await fetch(`${cp.url}/api/agent/v1/ping`, {
      headers: { authorization: `Bearer ${agent.credential}` },
    });
    expect(ping.status).toBe(200);
  }
  for (const [id, model] of runs) {
    if (!model.lease || model.completed) continue;
    const agent = agents[model.lease.agent] as Enrolled;
    const beat = await fetch(`${cp.url}/api/agent/v1/leases/${model.lease.id}/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent.credential}`, "content-type": "application/json" },
      body: "{}",
    });
    expect(beat.status, `the lease of run ${id}`).toBe(200);
  }
}

describe("kill -9 under load", () => {
  it("loses nothing acknowledged, round after round, and leaves a database that passes its integrity check", async () => {
    let cp = await startControlPlane();
    for (let i = 0; i < AGENTS; i++) agents.push(await enrollAgent(cp.url, agentToken, undefined, { concurrency: 8 }));
    const inFlight: number[] = [];
    for (const killAfter of KILL_AFTER) {
      const { inFlightAtKill } = await loadUntilKilled(cp, killAfter);
      inFlight.push(inFlightAtKill);
      cp = await startControlPlane();
      await verify(cp);
    }
    // Every kill cut requests off mid-flight.
    for (const n of inFlight) expect(n).toBeGreaterThan(0);
    // The rounds did what they are for: runs in every state, leases that outlived a kill.
    const models = [...runs.values()];
    expect(models.filter((r) => r.completed).length).toBeGreaterThan(3);
    expect(models.filter((r) => r.lease && !r.completed).length).toBeGreaterThan(0);
    expect(models.filter((r) => !r.lease).length).toBeGreaterThan(3);
    expect(models.some((r) => r.logs.length > 0 && r.events.length > 0)).toBe(true);
    expect(await cp.stop()).toBe(0);
    expect(queryDataFile(dataFile, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
    // Every value the processes sealed opens under the key in the key file, and no other.
    const storage = await SqliteStorage.open(dataFile, dataKey);
    try {
      const held = storage.load();
      expect(held.runs.length).toBeGreaterThanOrEqual(runs.size);
      expect(held.runs.some((r) => r.events.length > 0 && r.logs.length > 0)).toBe(true);
    } finally {
      storage.close();
    }
    expect((await refusal(SqliteStorage.open(dataFile, randomBytes(32)))).code).toBe("DATA_KEY_WRONG");
  }, 180_000);
});
