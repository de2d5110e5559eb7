/**
 * A tofu that floods its output (a provider or module printing in a loop) while the control
 * plane's log endpoint is slow. The output is shipped in bounded chunks, and what waits to be
 * sent is bounded too (LogShipper in src/daemon/log-shipper.ts, 4 MiB): the rest is counted
 * and a line says so. Before that bound, the agent kept all of the output in memory and the run
 * completed only when the last chunk was sent, long after tofu exited. The test fails fast, as
 * soon as the agent's RSS passes the bound.
 *
 * Stand-in tofu: `yes | head -c N` in sh. The fault proxy holds each POST .../logs for 50 ms.
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunRecord } from "../../src/control-plane/store.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.js";
import { addCanaryIntegration, agentFiles, launchAgent, MAIN_TF, newCanary } from "../support/reliability-agents.js";
import { recordFigures, rssBytes } from "../support/reliability-figures.js";

const MIB = 1024 * 1024;
const OUTPUT_MIB = 150;
/** About 100 MiB idle; a bounded shipper adds a few MiB. With the bug it passes this within a second. */
const RSS_BOUND = 200 * MIB;

let h: Harness;
let proxy: FaultProxy;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-flood-"));
  h = await startControlPlane({ leaseTtlSeconds: 60 });
  proxy = await startFaultProxy(h.url);
  await addCanaryIntegration(h, newCanary());
});

afterAll(async () => {
  await proxy.close();
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("output flood", () => {
  it(`a tofu printing ${OUTPUT_MIB} MiB while the log endpoint is slow: agent memory stays under ${RSS_BOUND / MIB} MiB and the run completes`, async () => {
    const tofu = join(dir, "flood-tofu");
    await writeFile(
      tofu,
      `#!/bin/sh\nyes "module.net: still creating... [10s elapsed] some provider output" | head -c ${OUTPUT_MIB * MIB}\n`,
    );
    await chmod(tofu, 0o755);
    const files = await agentFiles(dir, h.agentToken);
    proxy.setMode({ kind: "delay", ms: 50 }, { only: (m, p) => m === "POST" && p.endsWith("/logs") });
    const agent = launchAgent(proxy.url, files, join(dir, "work"), ["--tofu-bin", tofu, "--log-level", "warn"]);
    let maxRss = 0;
    let sampler: NodeJS.Timeout | undefined;
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      // Whichever comes first: the run ends, or the agent's memory passes the bound.
      const outcome = await new Promise<RunRecord | "over" | "timeout">((resolve) => {
        sampler = setInterval(() => {
          maxRss = Math.max(maxRss, rssBytes(agent.child.pid ?? 0) ?? 0);
          if (maxRss > RSS_BOUND) resolve("over");
        }, 50);
        h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 60_000).then(resolve, () => {
          resolve("timeout");
        });
      });
      recordFigures("output-flood", {
        output_mib: OUTPUT_MIB,
        agent_max_rss_mib: Math.round(maxRss / MIB),
        rss_bound_mib: RSS_BOUND / MIB,
        outcome: typeof outcome === "string" ? outcome : outcome.status,
      });
      expect(typeof outcome === "string" ? outcome : outcome.status).toBe("succeeded");
      expect(maxRss).toBeLessThan(RSS_BOUND);
      // What did not fit is said, not silently lost.
      const run = h.cp.store.runs.get(runId);
      expect(run?.logs.some((l) => /characters of init output were not sent/.test(l.text))).toBe(true);
    } finally {
      if (sampler) clearInterval(sampler);
      proxy.setMode({ kind: "pass" });
      // With the bug, the agent would ship for minutes before it could drain: stop it hard.
      agent.kill("SIGKILL");
      await agent.exited;
    }
  }, 150_000);
});
