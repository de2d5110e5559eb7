/**
 * Outages between the agent and the control plane, through a fault-injecting proxy
 * (test/support/fault-proxy.ts) in front of the reference control plane: 5xx, 429 with
 * Retry-After, connection resets, stalled and dropped long-polls, and the control plane down
 * when the agent starts. The agent is a real process with --retry-base 100ms --retry-max 2s.
 *
 * Asserted: the request rate during an outage stays under the bound that full-jitter backoff with
 * that cap allows; Retry-After is honoured; after recovery the agent is back within one backoff
 * interval (the cap, plus a margin for a loaded machine); no run is ever leased or run twice
 * (control-plane events and the stand-in tofu's own record); /readyz says why it is not ready and
 * turns 200 when the control plane comes up; no canary byte is left behind.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.js";
import {
  addCanaryIntegration,
  agentFiles,
  canaryLeaks,
  launchAgent,
  MAIN_TF,
  newCanary,
  stopAgent,
  type AgentFiles,
  type Canary,
} from "../support/reliability-agents.js";
import { recordFigures } from "../support/reliability-figures.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";

const BASE_MS = 100;
const CAP_MS = 2000;
/** Margin for a loaded 2-core machine on top of timing bounds; bounds only ever get looser. */
const SLACK_MS = 2500;
const LEASES = /\/leases$/;
const TERMINAL = ["succeeded", "failed", "canceled"] as const;

let h: Harness;
let proxy: FaultProxy;
let dir: string;
let files: AgentFiles;
let canary: Canary;
const figures: Record<string, unknown> = {};

/**
 * The most requests full jitter allows in a window of `windowMs` with good probability: the ramp
 * (attempts until base·2^n reaches the cap) plus twice the mean rate once capped (mean delay
 * cap/2), plus a constant. Immediate retries would be hundreds.
 */
function maxRequests(windowMs: number): number {
  const ramp = Math.ceil(Math.log2(CAP_MS / BASE_MS)) + 1;
  return ramp + Math.ceil((2 * windowMs) / (CAP_MS / 2)) + 5;
}

async function waitMs(ms: number): Promise<void> {
  // Measuring a rate needs a window of wall time; this is not used to synchronize with the agent.
  await new Promise((r) => setTimeout(r, ms));
}

async function recordFile(name: string): Promise<{ phase: string; cwd: string }[]> {
  const file = join(dir, `${name}.jsonl`);
  if (!existsSync(file)) return [];
  return (await readFile(file, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { phase: string; cwd: string });
}

function startAgentBehindProxy(name: string, extra: string[] = []): { agent: AgentProcess; workDir: string } {
  const workDir = join(dir, `work-${name}`);
  const agent = launchAgent(
    proxy.url,
    files,
    workDir,
    ["--retry-base", `${BASE_MS}ms`, "--retry-max", `${CAP_MS}ms`, ...extra],
    fakeTofuRecord(join(dir, `${name}.jsonl`)),
  );
  return { agent, workDir };
}

function leasedCount(runId: string): number {
  return h.cp.store.runs.get(runId)?.events.filter((e) => e.type === "leased").length ?? 0;
}

async function expectRanOnceEach(runIds: readonly string[], recordName: string): Promise<void> {
  const rec = await recordFile(recordName);
  for (const id of runIds) {
    expect(leasedCount(id), `run ${id} leased once`).toBe(1);
    const inits = rec.filter((r) => r.phase === "init" && r.cwd.endsWith(`/${id}`)).length;
    expect(inits, `run ${id} ran init at most once`).toBeLessThanOrEqual(1);
    if (h.cp.store.runs.get(id)?.status === "succeeded") expect(inits).toBe(1);
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-outages-"));
  h = await startControlPlane();
  proxy = await startFaultProxy(h.url);
  files = await agentFiles(dir, h.agentToken);
  canary = newCanary();
  await addCanaryIntegration(h, canary);
});

afterAll(async () => {
  recordFigures("outages", figures);
  await proxy.close();
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("control-plane outages", () => {
  it("5xx: backs off with full jitter (rate bounded), resumes within the cap, runs the queued run once", async () => {
    const { agent, workDir } = startAgentBehindProxy("five");
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const windowMs = 4000;
      proxy.setMode({ kind: "status", status: 503 }, { cutInFlight: true });
      const from = Date.now();
      const runId = await h.createRun({ "main.tf": MAIN_TF });
      await waitMs(windowMs);
      const during = proxy.count(from, Date.now());
      expect(during).toBeGreaterThanOrEqual(2);
      expect(during).toBeLessThanOrEqual(maxRequests(windowMs));
      const healedAt = Date.now();
      proxy.setMode({ kind: "pass" });
      const first = await proxy.waitForRequest((r) => r.at >= healedAt && r.mode === "pass", CAP_MS + 10_000);
      const resumeMs = first.at - healedAt;
      expect(resumeMs).toBeLessThanOrEqual(CAP_MS + SLACK_MS);
      const run = await h.waitForStatus(runId, TERMINAL);
      expect(run.status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "credentials_wiped");
      await expectRanOnceEach([runId], "five");
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      figures["status_503"] = {
        window_ms: windowMs,
        requests: during,
        bound: maxRequests(windowMs),
        resume_ms: resumeMs,
        cap_ms: CAP_MS,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("429 with Retry-After: waits at least that long between attempts, then resumes", async () => {
    const { agent } = startAgentBehindProxy("throttle");
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const windowMs = 4000;
      proxy.setMode({ kind: "status", status: 429, headers: { "retry-after": "1" } }, { cutInFlight: true });
      const from = Date.now();
      await waitMs(windowMs);
      const to = Date.now();
      const hits = proxy.requests.filter((r) => r.at >= from && r.at < to && r.mode === "status");
      const gaps = hits.slice(1).map((r, i) => r.at - hits[i]!.at);
      // Retry-After: 1 means no attempt sooner than 1 s after the previous answer (minus timer slop).
      expect(hits.length).toBeGreaterThanOrEqual(2);
      expect(Math.min(...gaps)).toBeGreaterThanOrEqual(900);
      expect(hits.length).toBeLessThanOrEqual(Math.ceil(windowMs / 1000) + 2);
      const healedAt = Date.now();
      proxy.setMode({ kind: "pass" });
      const first = await proxy.waitForRequest((r) => r.at >= healedAt && r.mode === "pass", CAP_MS + 10_000);
      expect(first.at - healedAt).toBeLessThanOrEqual(CAP_MS + SLACK_MS);
      const runId = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      expect((await h.waitForStatus(runId, TERMINAL)).status).toBe("succeeded");
      figures["status_429_retry_after_1s"] = {
        window_ms: windowMs,
        requests: hits.length,
        min_gap_ms: Math.min(...gaps),
        resume_ms: first.at - healedAt,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("connection resets: bounded retries, then the run queued during the outage runs once", async () => {
    const { agent, workDir } = startAgentBehindProxy("reset");
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const windowMs = 3000;
      proxy.setMode({ kind: "reset" }, { cutInFlight: true });
      const from = Date.now();
      const runId = await h.createRun({ "main.tf": MAIN_TF }, ["init", "plan"]);
      await waitMs(windowMs);
      const during = proxy.count(from, Date.now());
      expect(during).toBeLessThanOrEqual(maxRequests(windowMs));
      const healedAt = Date.now();
      proxy.setMode({ kind: "pass" });
      const first = await proxy.waitForRequest((r) => r.at >= healedAt && r.mode === "pass", CAP_MS + 10_000);
      expect(first.at - healedAt).toBeLessThanOrEqual(CAP_MS + SLACK_MS);
      expect((await h.waitForStatus(runId, TERMINAL)).status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "credentials_wiped");
      await expectRanOnceEach([runId], "reset");
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      figures["connection_reset"] = {
        window_ms: windowMs,
        requests: during,
        bound: maxRequests(windowMs),
        resume_ms: first.at - healedAt,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("stalled and dropped long-polls: no run leased or run twice, every run ends, the agent carries on", async () => {
    const { agent, workDir } = startAgentBehindProxy("drop", ["--concurrency", "4"]);
    const runIds: string[] = [];
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      // A load balancer that holds long-polls and never answers, then cuts them when it recovers.
      proxy.setMode(
        { kind: "stall" },
        { cutInFlight: true, only: (m, p) => LEASES.test(p) && m === "POST" && p.includes("/agents/") },
      );
      const stalled = await proxy.waitForRequest((r) => r.mode === "stall");
      runIds.push(await h.createRun({ "main.tf": MAIN_TF }, ["init"]));
      await waitMs(1000);
      // Then one that cuts every long-poll after 300 ms, dropping leases the control plane handed out.
      proxy.setMode(
        { kind: "drop-after", ms: 300 },
        { only: (m, p) => LEASES.test(p) && m === "POST" && p.includes("/agents/") },
      );
      for (let i = 0; i < 4; i++) {
        runIds.push(await h.createRun({ "main.tf": MAIN_TF }, ["init"]));
        await waitMs(250);
      }
      // Then one that lets the control plane hand out the lease and loses the answer: the run is
      // leased to the agent, which never hears of it; the lease expires and the run fails, once.
      proxy.setMode(
        { kind: "drop-response" },
        { only: (m, p) => LEASES.test(p) && m === "POST" && p.includes("/agents/") },
      );
      const lost: string[] = [];
      for (let i = 0; i < 2; i++) {
        const t0 = Date.now();
        const id = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
        lost.push(id);
        runIds.push(id);
        await h.waitForStatus(id, ["running", ...TERMINAL]);
        await proxy.waitForRequest(
          (r) => r.mode === "drop-response" && r.doneAt !== undefined && r.doneAt >= t0 && r.status === undefined,
        );
      }
      const healedAt = Date.now();
      proxy.setMode({ kind: "pass" });
      runIds.push(await h.createRun({ "main.tf": MAIN_TF }, ["init"]));
      const ended = await Promise.all(runIds.map((id) => h.waitForStatus(id, TERMINAL, 30_000)));
      const outcomes: Record<string, number> = {};
      for (const r of ended) {
        const key = r.status === "succeeded" ? "succeeded" : `${r.status}:${r.error?.code ?? "?"}`;
        outcomes[key] = (outcomes[key] ?? 0) + 1;
        // A dropped lease is failed by the control plane, never queued again.
        if (r.status !== "succeeded")
          expect(["LEASE_UNDELIVERED", "LEASE_EXPIRED", "LEASE_LOST"]).toContain(r.error?.code);
      }
      // The last run, queued after recovery, runs; the lost leases expired and were never run.
      expect(ended[ended.length - 1]?.status).toBe("succeeded");
      for (const id of lost) {
        const r = h.cp.store.runs.get(id);
        if (r?.events.some((e) => e.type === "leased"))
          expect(r.error?.code ?? r.status).toMatch(/LEASE_EXPIRED|succeeded/);
      }
      await expectRanOnceEach(runIds, "drop");
      for (const id of runIds)
        if (h.cp.store.runs.get(id)?.status === "succeeded")
          await agent.waitForLog((l) => l["run_id"] === id && l["event"] === "credentials_wiped");
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      figures["stall_and_drop"] = {
        runs: runIds.length,
        outcomes,
        stalled_at: stalled.at > 0,
        resumed_within_ms: Date.now() - healedAt,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("heartbeats failing with 5xx until the lease expires: the run is aborted and wiped, expires once at the control plane, the agent takes the next run", async () => {
    const { agent, workDir } = startAgentBehindProxy("heartbeat");
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "plan" }) });
      await agent.waitForLog(
        (l) => l["run_id"] === runId && l["event"] === "phase_output" && l["msg"] === "FAKE-TOFU-READY plan",
      );
      proxy.setMode({ kind: "status", status: 503 }, { only: (_m, p) => p.endsWith("/heartbeat") });
      const finished = await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished", 30_000);
      expect(finished["code"]).toBe("LEASE_LOST");
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "credentials_wiped");
      const run = await h.waitForStatus(runId, TERMINAL);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("LEASE_EXPIRED");
      proxy.setMode({ kind: "pass" });
      expect(await readdir(join(workDir, "credentials"))).toEqual([]);
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      const next = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      expect((await h.waitForStatus(next, TERMINAL)).status).toBe("succeeded");
      await expectRanOnceEach([runId, next], "heartbeat");
      figures["heartbeats_5xx_until_expiry"] = {
        agent: finished["code"],
        control_plane: run.error?.code,
        next_run: "succeeded",
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  // Heartbeats used to stop when the run ended, before its completion was reported, so a
  // completion delayed by an outage longer than the lease TTL found the lease expired and the run
  // recorded as failed (LEASE_EXPIRED) although it succeeded. They now run until completion.
  it("a completion delayed by a 5xx outage longer than the lease TTL still records the run's real outcome", async () => {
    const { agent } = startAgentBehindProxy("complete");
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      proxy.setMode({ kind: "status", status: 503 }, { only: (_m, p) => p.endsWith("/complete") });
      const runId = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      // Longer than the control plane's lease TTL (3 s in these tests).
      await waitMs(4500);
      proxy.setMode({ kind: "pass" });
      const run = await h.waitForStatus(runId, TERMINAL);
      figures["completion_after_outage_longer_than_ttl"] = { status: run.status, code: run.error?.code ?? null };
      expect(run.status).toBe("succeeded");
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("control plane down at start: keeps trying, /readyz 503 says why, 200 once the control plane is up", async () => {
    proxy.setMode({ kind: "refuse" }, { cutInFlight: true });
    const { agent } = startAgentBehindProxy("down");
    try {
      const listening = await agent.waitForLog((l) => l["event"] === "listening");
      const url = String(listening["url"]);
      await agent.waitForLog((l) => l["event"] === "control_plane_error" && l["during"] === "register");
      const down = await fetch(`${url}/readyz`);
      const body = (await down.json()) as { ready: boolean; reasons: string[] };
      expect(down.status).toBe(503);
      expect(body.ready).toBe(false);
      expect(body.reasons).toEqual(["not_registered"]);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const healedAt = Date.now();
      proxy.setMode({ kind: "pass" });
      await agent.waitForLog((l) => l["event"] === "registered", CAP_MS + 15_000);
      const registeredMs = Date.now() - healedAt;
      const up = await fetch(`${url}/readyz`);
      expect(up.status).toBe(200);
      expect(registeredMs).toBeLessThanOrEqual(CAP_MS + SLACK_MS + 1000);
      figures["down_at_start"] = {
        readyz_while_down: down.status,
        reason: body.reasons[0],
        readyz_after: up.status,
        registered_after_ms: registeredMs,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });
});
