/**
 * A flood of unauthenticated connections does not keep agents out (issue 15: 300 idle sockets
 * used to lock agents out). Against the reference control plane with its default limits, on
 * 127.0.0.1 (the attacker shares the agents' address, as behind a NAT, and also floods from
 * 127.0.0.2-6): 300 idle sockets, 20 sockets trickling headers and 20 trickling a body with the
 * pool token, then the same flood reconnecting whenever a socket is evicted. Through it, an
 * agent enrolled before leases and completes runs on fresh connections, and real agents
 * (`oci-cred-agent run`) started during the flood enroll and run a run.
 *
 * Recorded (`RELIABILITY control_plane_flood`): lease latency on a fresh connection, an agent
 * process's time to register and a run's time from queued to succeeded, without the flood,
 * during it, and while it reconnects; and the connections the control plane evicted.
 */
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, tarGz, type Harness } from "../support/control-plane-harness.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";
import { httpText, rawConnect, trickle, type RawClient } from "../support/raw-socket.js";
import { agentFiles, launchAgent, MAIN_TF, stopAgent, type AgentFiles } from "../support/reliability-agents.js";
import { recordFigures } from "../support/reliability-figures.js";

const API = "/api/agent/v1";
const ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"];
const IDLE = 300;
const SLOW = 20;
const SAMPLES = 10;

let h: Harness;
let dir: string;
let files: AgentFiles;
let archive: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-flood-"));
  // The default connection limits and timeouts: nothing here is made small for the test. Only the
  // agent rate is raised: the sampling agent makes 60 requests in a second or two, as an agent
  // of a high concurrency would (this test is about connections, abuse-limits.test.ts about rates).
  h = await startControlPlane({
    leaseTtlSeconds: 30,
    limits: { rates: { agent: { perSecond: 1000, burst: 1000 } } },
  });
  files = await agentFiles(dir, h.agentToken);
  archive = (await tarGz({ "main.tf": MAIN_TF })).toString("base64");
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

/** Idle connections from several addresses; with `reconnect`, each one closed is opened again. */
class Flood {
  reconnect = false;
  opened = 0;
  private stopped = false;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly port: number) {}

  open(address: string): void {
    if (this.stopped) return;
    const socket = connect({ port: this.port, host: "127.0.0.1", localAddress: address });
    this.opened++;
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.sockets.delete(socket);
      if (this.reconnect) this.open(address);
    });
    this.sockets.add(socket);
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.destroy();
  }
}

/** Resolves once the server has accepted `n` more connections. */
function serverAccepts(n: number): Promise<void> {
  let seen = 0;
  return new Promise((resolve) => {
    const onConnection = (): void => {
      if (++seen < n) return;
      h.cp.server.off("connection", onConnection);
      resolve();
    };
    h.cp.server.on("connection", onConnection);
  });
}

async function queueRun(): Promise<string> {
  const res = await h.admin("POST", "/runs", { configuration_tar_gz_base64: archive, phases: ["init"] });
  expect(res.status).toBe(201);
  return (res.json as { id: string }).id;
}

/** One lease on a new connection (the request a flood could keep out), then its completion: ms to the lease. */
async function leaseSample(agent: Enrolled): Promise<number> {
  const runId = await queueRun();
  const dispatcher = new Agent({ connections: 1 });
  try {
    const headers = { authorization: `Bearer ${agent.credential}`, "content-type": "application/json" };
    const started = performance.now();
    const res = await request(`${h.url}${API}/agents/${agent.agentId}/leases`, {
      method: "POST",
      dispatcher,
      headers,
      body: JSON.stringify({ max: 1, wait_seconds: 5 }),
    });
    const body = (await res.body.json()) as { leases: { lease_id: string; run: { id: string } }[] };
    const ms = performance.now() - started;
    expect(res.statusCode).toBe(200);
    expect(body.leases.map((l) => l.run.id)).toEqual([runId]);
    const done = await request(`${h.url}${API}/leases/${body.leases[0]?.lease_id ?? ""}/complete`, {
      method: "POST",
      dispatcher,
      headers,
      body: JSON.stringify({ outcome: "succeeded", phases: [], credentials_wiped: true }),
    });
    await done.body.dump();
    expect(done.statusCode).toBe(200);
    return ms;
  } finally {
    await dispatcher.close();
  }
}

async function samples(agent: Enrolled): Promise<{ p50_ms: number; max_ms: number }> {
  const ms: number[] = [];
  for (let i = 0; i < SAMPLES; i++) ms.push(await leaseSample(agent));
  ms.sort((a, b) => a - b);
  const round = (x: number): number => Math.round(x * 10) / 10;
  return { p50_ms: round(ms[Math.floor(ms.length / 2)] ?? 0), max_ms: round(ms[ms.length - 1] ?? 0) };
}

/** An agent process started now: ms until it registered, and ms from a run queued to succeeded. */
async function agentProcessRound(name: string): Promise<{ register_ms: number; run_ms: number }> {
  const started = performance.now();
  const agent = launchAgent(h.url, files, join(dir, `work-${name}`));
  try {
    await agent.waitForLog((l) => l["event"] === "registered", 60_000);
    const registered = performance.now();
    const runId = await queueRun();
    expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 60_000)).status).toBe("succeeded");
    return { register_ms: Math.round(registered - started), run_ms: Math.round(performance.now() - registered) };
  } finally {
    await stopAgent(agent);
  }
}

describe("a flood of unauthenticated connections", () => {
  it(`${IDLE} idle sockets and ${2 * SLOW} slowloris sockets, then reconnecting: agents enroll, lease and complete runs`, async () => {
    const port = Number(new URL(h.url).port);
    const agent = await enrollAgent(h.url, h.agentToken);

    const quiet = { lease: await samples(agent), agent: await agentProcessRound("quiet") };

    const flood = new Flood(port);
    const slow: RawClient[] = [];
    try {
      const accepted = serverAccepts(IDLE + 2 * SLOW);
      for (let i = 0; i < IDLE; i++) flood.open(ADDRESSES[i % ADDRESSES.length] ?? "127.0.0.1");
      for (let i = 0; i < SLOW; i++) {
        const address = ADDRESSES[i % ADDRESSES.length];
        const headers = await rawConnect(port, address);
        trickle(headers, httpText("GET", "/healthz", { "X-Pad": "a".repeat(10_000) }), 100);
        const body = await rawConnect(port, address);
        body.socket.write(
          httpText("POST", `${API}/agents`, {
            Authorization: `Bearer ${h.agentToken}`,
            "Content-Type": "application/json",
            // Under the route's body limit (64 KiB), so the server waits for it.
            "Content-Length": "60000",
          }),
        );
        trickle(body, " ".repeat(60_000), 100);
        slow.push(headers, body);
      }
      await accepted;
      const afterFlood = h.cp.connectionStats();
      // More unproven connections came than the caps hold: the oldest were evicted, none refused.
      expect(afterFlood.evicted).toBeGreaterThanOrEqual(IDLE + 2 * SLOW - 256);
      expect(afterFlood.unproven).toBeLessThanOrEqual(256);

      const flooded = { lease: await samples(agent), agent: await agentProcessRound("flooded") };

      // Now every evicted socket comes back at once: 10 chains of evict-and-reconnect run all along.
      flood.reconnect = true;
      const churnFrom = h.cp.connectionStats().evicted;
      for (let i = 0; i < 10; i++) flood.open(ADDRESSES[i % ADDRESSES.length] ?? "127.0.0.1");
      await once(h.cp.server, "connection");
      const churning = { lease: await samples(agent), agent: await agentProcessRound("churning") };
      const churned = h.cp.connectionStats().evicted - churnFrom;
      expect(churned).toBeGreaterThan(0);

      const stats = h.cp.connectionStats();
      expect(stats.refused).toBe(0);
      recordFigures("control_plane_flood", {
        idle_sockets: IDLE,
        slowloris_sockets: 2 * SLOW,
        addresses: ADDRESSES.length,
        samples_per_phase: SAMPLES,
        quiet,
        flooded,
        churning,
        flood_connections_opened: flood.opened + 2 * SLOW,
        evicted: stats.evicted,
        evicted_while_churning: churned,
        refused: stats.refused,
      });
    } finally {
      flood.stop();
      for (const c of slow) c.socket.destroy();
    }
  });
});
