/**
 * What a real agent (`oci-cred-agent run`) does when the control plane enforces its limits
 * (docs/protocol.md, Limits): a 429 with Retry-After delays its requests but loses nothing and
 * never fails the run; a run over its log or event limit (422 LOG_LIMIT_REACHED,
 * EVENT_LIMIT_REACHED) stops sending that kind, says so once, and still succeeds. The stand-in
 * tofu prints about 150 KB per phase (several log chunks).
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlaneOptions } from "../../src/control-plane/server.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { agentFiles, forRun, launchAgent, stopAgent, type AgentFiles } from "../support/reliability-agents.js";

const LINES = 3000;
let dir: string;
let chattyTofu: string;
const harnesses: Harness[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-cp-limits-"));
  chattyTofu = join(dir, "chatty-tofu");
  await writeFile(
    chattyTofu,
    `#!/bin/sh\ni=0\nwhile [ $i -lt ${LINES} ]; do echo "$1 line $i padding padding padding padding"; i=$((i+1)); done\nexit 0\n`,
  );
  await chmod(chattyTofu, 0o755);
});

afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Answered {
  readonly path: string;
  readonly status: number;
}

async function start(
  options: Partial<ControlPlaneOptions>,
): Promise<{ h: Harness; answered: Answered[]; files: AgentFiles }> {
  const h = await startControlPlane(options);
  harnesses.push(h);
  const answered: Answered[] = [];
  h.cp.server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    res.on("finish", () => answered.push({ path: req.url ?? "", status: res.statusCode }));
  });
  return { h, answered, files: await agentFiles(dir, h.agentToken) };
}

describe("the agent under the control plane's limits", () => {
  it("429 with Retry-After: requests are delayed, the run succeeds and its whole output arrives", async () => {
    const { h, answered, files } = await start({
      agentApi: { heartbeatIntervalSeconds: 1, pollWaitSeconds: 5, bundleTtlSeconds: 120 },
      // Each phase's output comes at once, as five log chunks: more than the burst, so some are
      // refused; one second later the bucket is full again.
      limits: { rates: { agent: { perSecond: 10, burst: 4 } } },
    });
    const agent = launchAgent(h.url, files, join(dir, "work-throttled"), ["--tofu-bin", chattyTofu]);
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": "" }, ["init", "plan", "apply"]);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 90_000);
      expect(run.status).toBe("succeeded");
      await agent.waitForLog(forRun(runId, "run_finished"));
      const throttled = answered.filter((a) => a.status === 429);
      expect(throttled.length).toBeGreaterThan(0);
      const output = run.logs.map((l) => l.text).join("");
      for (const phase of ["init", "plan", "apply"]) expect(output).toContain(`${phase} line ${LINES - 1} `);
      expect(agent.lines.filter((l) => l["event"] === "log_upload_failed")).toEqual([]);
      expect(agent.lines.filter((l) => l["event"] === "events_upload_failed")).toEqual([]);
      expect(agent.lines.filter((l) => l["event"] === "completion_failed")).toEqual([]);
    } finally {
      await stopAgent(agent);
    }
  });

  it("a run over its log and event limits stops sending them, says so once, and succeeds", async () => {
    const { h, answered, files } = await start({
      agentApi: {
        heartbeatIntervalSeconds: 0.2,
        pollWaitSeconds: 5,
        bundleTtlSeconds: 120,
        maxLogEntriesPerRun: 2,
        maxLogBytesPerRun: 8 * 1024 * 1024,
        maxEventsPerRun: 2,
        maxEventBytesPerRun: 1024 * 1024,
      },
    });
    const agent = launchAgent(h.url, files, join(dir, "work-capped"), ["--tofu-bin", chattyTofu]);
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": "" }, ["init", "plan", "apply"]);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 60_000);
      expect(run.status).toBe("succeeded");
      await agent.waitForLog(forRun(runId, "run_finished"));
      expect(run.logs).toHaveLength(2);
      const logCalls = answered.filter((a) => a.path.endsWith("/logs"));
      // Two accepted, one refused, then nothing more for this run.
      expect(logCalls.map((a) => a.status)).toEqual([204, 204, 422]);
      const eventCalls = answered.filter((a) => a.path.endsWith("/events"));
      expect(eventCalls.filter((a) => a.status === 422)).toHaveLength(1);
      expect(eventCalls.at(-1)?.status).toBe(422);
      const said = (event: string): number => agent.lines.filter(forRun(runId, event)).length;
      expect(said("log_limit_reached")).toBe(1);
      expect(said("events_limit_reached")).toBe(1);
      expect(agent.lines.find(forRun(runId, "log_limit_reached"))).toMatchObject({
        level: "warn",
        code: "CONTROL_PLANE_REJECTED",
        api_code: "LOG_LIMIT_REACHED",
      });
      // The output not sent is counted, and still in the agent's own log.
      expect(said("log_upload_failed")).toBeGreaterThan(0);
      expect(
        agent.lines.some(
          (l) =>
            l["event"] === "phase_output" && l["msg"] === `apply line ${LINES - 1} padding padding padding padding`,
        ),
      ).toBe(true);
    } finally {
      await stopAgent(agent);
    }
  });
});
