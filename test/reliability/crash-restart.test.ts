/**
 * Crash and restart, repeatedly: the agent is SIGKILLed while a run's tofu is in apply (the
 * credentials on disk), restarted on the same work directory, and killed again, RESTARTS times
 * (CI 3, full run 25). test/daemon/endings.test.ts covers one such crash; this one counts.
 *
 * Asserted: each restart sweeps what the crash left (a `swept_credentials` line naming the run),
 * every crashed run ends at the control plane as failed with LEASE_EXPIRED and was leased and
 * run exactly once, the agent survives every restart and runs a clean run at the end, and then
 * no credential file, workspace or canary byte remains under the work directory.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import {
  addCanaryIntegration,
  agentFiles,
  canaryLeaks,
  filesUnder,
  forRun,
  launchAgent,
  MAIN_TF,
  newCanary,
  stopAgent,
  type AgentFiles,
  type Canary,
} from "../support/reliability-agents.js";
import { FULL, recordFigures } from "../support/reliability-figures.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";

const RESTARTS = FULL ? 25 : 3;

let h: Harness;
let dir: string;
let files: AgentFiles;
let canary: Canary;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-crash-"));
  h = await startControlPlane({ leaseTtlSeconds: 2 });
  files = await agentFiles(dir, h.agentToken);
  canary = newCanary();
  await addCanaryIntegration(h, canary);
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

async function recorded(file: string): Promise<{ pid: number; phase: string; cwd: string }[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { pid: number; phase: string; cwd: string });
}

describe("crash and restart", () => {
  it(
    `survives ${RESTARTS} SIGKILLs mid-apply: each restart sweeps, each crashed run ends once, nothing remains`,
    async () => {
      const workDir = join(dir, "work");
      const record = join(dir, "tofu.jsonl");
      const crashed: string[] = [];
      let swept = 0;
      let agent: AgentProcess | undefined;
      try {
        for (let i = 0; i <= RESTARTS; i++) {
          agent = launchAgent(h.url, files, workDir, [], fakeTofuRecord(record));
          await agent.waitForLog((l) => l["event"] === "registered");
          const previous = crashed[crashed.length - 1];
          if (previous !== undefined) {
            const line = await agent.waitForLog((l) => l["event"] === "swept_credentials");
            expect(line["run_id"]).toBe(previous);
            swept++;
          }
          if (i === RESTARTS) break;
          const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "apply" }) });
          await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY apply"));
          agent.kill("SIGKILL");
          await agent.exited;
          crashed.push(runId);
          expect((await filesUnder(join(workDir, "credentials", runId))).length).toBeGreaterThan(0);
          // The orphaned stand-in tofu is not the agent's to stop after SIGKILL.
          for (const r of await recorded(record)) {
            try {
              process.kill(r.pid, "SIGKILL");
            } catch {
              // gone already
            }
          }
        }
        if (!agent) throw new Error("no agent");
        const ended = await Promise.all(
          crashed.map((id) => h.waitForStatus(id, ["succeeded", "failed", "canceled"], 20_000)),
        );
        for (const run of ended) {
          expect(run.status).toBe("failed");
          expect(run.error?.code).toBe("LEASE_EXPIRED");
          expect(run.events.filter((e) => e.type === "leased")).toHaveLength(1);
        }
        const rec = await recorded(record);
        for (const id of crashed)
          expect(rec.filter((r) => r.phase === "apply" && r.cwd.endsWith(`/${id}`))).toHaveLength(1);
        const clean = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
        expect((await h.waitForStatus(clean, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
        await agent.waitForLog(forRun(clean, "credentials_wiped"));
        await stopAgent(agent);
        expect(await readdir(join(workDir, "credentials"))).toEqual([]);
        expect(await readdir(join(workDir, "workspaces"))).toEqual([]);
        expect(await canaryLeaks(workDir, canary)).toEqual([]);
        recordFigures("crash-restart", {
          restarts_survived: RESTARTS,
          swept_at_restart: swept,
          crashed_runs: crashed.length,
          crashed_runs_ended: ended.map((r) => r.error?.code).filter((c) => c === "LEASE_EXPIRED").length,
          leased_twice: 0,
          credential_files_left: 0,
          canary_leaks: 0,
        });
        expect(swept).toBe(RESTARTS);
      } finally {
        if (agent) await stopAgent(agent);
      }
    },
    FULL ? 600_000 : 90_000,
  );
});
