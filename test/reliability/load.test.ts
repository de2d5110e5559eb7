/**
 * Load: several agents (real processes) at high concurrency against one reference control plane,
 * many runs with the three phases, each run's credentials really written and checked by the
 * stand-in tofu (a one-line `sh` that fails without the run's Docker config).
 *
 * Sizes: the CI subset is 2 agents × concurrency 8 × 200 runs; RELIABILITY_FULL=1 runs the full
 * size, 5 agents × concurrency 50 × 10,000 runs. Never skipped, only smaller.
 *
 * Asserted: every run succeeds and completes exactly once (one lease, one completion at the
 * control plane), no credential file or workspace remains and no canary byte is anywhere under
 * the work directories, and each agent's resident memory (VmRSS from /proc, sampled) stays under
 * a bound.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunRecord } from "../../src/control-plane/store.js";
import type { AgentProcess } from "../support/agent-process.js";
import { startControlPlane, tarGz, type Harness } from "../support/control-plane-harness.js";
import {
  addCanaryIntegration,
  agentFiles,
  canaryLeaks,
  filesUnder,
  launchAgent,
  MAIN_TF,
  newCanary,
  shTofu,
  stopAgent,
  type Canary,
} from "../support/reliability-agents.js";
import { FULL, recordFigures, rssBytes } from "../support/reliability-figures.js";

const AGENTS = FULL ? 5 : 2;
const CONCURRENCY = FULL ? 50 : 8;
const RUNS = FULL ? 10_000 : 200;
const MIB = 1024 * 1024;
const RSS_BOUND = (FULL ? 768 : 400) * MIB;
const TIMEOUT_MS = FULL ? 3 * 60 * 60_000 : 150_000;

let h: Harness;
let dir: string;
let canary: Canary;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-load-"));
  h = await startControlPlane({
    leaseTtlSeconds: 60,
    agentApi: { heartbeatIntervalSeconds: 5, pollWaitSeconds: 5, bundleTtlSeconds: 900 },
  });
  canary = newCanary();
  await addCanaryIntegration(h, canary);
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

function allTerminal(runs: readonly RunRecord[], timeoutMs: number): Promise<void> {
  const pending = new Set(runs.filter((r) => r.status === "queued" || r.status === "running").map((r) => r.id));
  if (pending.size === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onChange = (run: RunRecord): void => {
      if (run.status !== "queued" && run.status !== "running") pending.delete(run.id);
      if (pending.size === 0) {
        clearTimeout(timer);
        h.cp.store.off("run-changed", onChange);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      h.cp.store.off("run-changed", onChange);
      reject(new Error(`${pending.size} of ${runs.length} runs did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    h.cp.store.on("run-changed", onChange);
  });
}

describe("load", () => {
  it(
    `${AGENTS} agents × concurrency ${CONCURRENCY} × ${RUNS} runs: each completes once, nothing remains, RSS bounded`,
    async () => {
      const tofu = await shTofu(dir);
      const agents: { agent: AgentProcess; workDir: string; maxRss: number }[] = [];
      const sampler = setInterval(() => {
        for (const a of agents) a.maxRss = Math.max(a.maxRss, rssBytes(a.agent.child.pid ?? 0) ?? 0);
      }, 200);
      try {
        for (let i = 0; i < AGENTS; i++) {
          const files = await agentFiles(dir, h.agentToken);
          const workDir = join(dir, `work-${i}`);
          const agent = launchAgent(h.url, files, workDir, [
            "--concurrency",
            String(CONCURRENCY),
            "--tofu-bin",
            tofu,
            "--log-level",
            "warn",
            "--drain-timeout",
            "30s",
          ]);
          agents.push({ agent, workDir, maxRss: 0 });
        }
        // At warn level there is no "registered" line; the agents register on their own.
        const archive = await tarGz({ "main.tf": MAIN_TF });
        const started = performance.now();
        const runs: RunRecord[] = [];
        for (let i = 0; i < RUNS; i++) runs.push(h.cp.store.createRun(archive, ["init", "plan", "apply"]));
        await allTerminal(runs, TIMEOUT_MS);
        const seconds = (performance.now() - started) / 1000;

        const statuses: Record<string, number> = {};
        let leasedTwice = 0;
        let completedTwice = 0;
        const byAgent: Record<string, number> = {};
        for (const run of runs) {
          const key = run.status === "succeeded" ? "succeeded" : `${run.status}:${run.error?.code ?? "?"}`;
          statuses[key] = (statuses[key] ?? 0) + 1;
          const leased = run.events.filter((e) => e.type === "leased");
          if (leased.length !== 1) leasedTwice++;
          if (run.events.filter((e) => e.type === "completed").length !== 1) completedTwice++;
          const agentId = typeof leased[0]?.["agent_id"] === "string" ? leased[0]["agent_id"] : "?";
          byAgent[agentId] = (byAgent[agentId] ?? 0) + 1;
        }
        expect(statuses).toEqual({ succeeded: RUNS });
        expect(leasedTwice).toBe(0);
        expect(completedTwice).toBe(0);
        for (const a of agents) expect(a.agent.child.exitCode).toBeNull();
        for (const a of agents) await stopAgent(a.agent);
        clearInterval(sampler);
        let leftover = 0;
        let leaks = 0;
        for (const a of agents) {
          expect(await readdir(join(a.workDir, "credentials"))).toEqual([]);
          expect(await readdir(join(a.workDir, "workspaces"))).toEqual([]);
          leftover += (await filesUnder(join(a.workDir, "credentials"))).length;
          leaks += (await canaryLeaks(a.workDir, canary)).length;
          expect(a.agent.output()).not.toContain(canary.secret);
        }
        expect(leftover).toBe(0);
        expect(leaks).toBe(0);
        const maxRss = Math.max(...agents.map((a) => a.maxRss));
        recordFigures("load", {
          agents: AGENTS,
          concurrency: CONCURRENCY,
          runs: RUNS,
          phases_per_run: 3,
          statuses,
          leased_twice: leasedTwice,
          completed_twice: completedTwice,
          runs_per_agent: Object.values(byAgent).sort((x, y) => y - x),
          credential_files_left: leftover,
          canary_leaks: leaks,
          seconds: Number(seconds.toFixed(1)),
          runs_per_second: Number((RUNS / seconds).toFixed(1)),
          max_agent_rss_mib: Math.round(maxRss / MIB),
          rss_bound_mib: RSS_BOUND / MIB,
        });
        expect(maxRss).toBeGreaterThan(0);
        expect(maxRss).toBeLessThan(RSS_BOUND);
      } finally {
        clearInterval(sampler);
        for (const a of agents) await stopAgent(a.agent);
      }
    },
    TIMEOUT_MS + 120_000,
  );
});
