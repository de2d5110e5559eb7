/**
 * CI runs the benchmark once, quick, as a smoke test: it must run to the end and write every
 * figure the results file promises (docs/performance.md). No thresholds: timings are not tested.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let dir: string | undefined;

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const REQUIRED = [
  "machine.cpus",
  "pickup_ms.p50",
  "pickup_ms.p99",
  "pickup_ms.max",
  "interval_poll_pickup_ms.p50",
  "throughput_runs_per_s.c1",
  "throughput_runs_per_s.c8",
  "throughput_runs_per_s.c64",
  "floor_runs_per_s",
  "overhead_ratio",
  "materialize_ms.1",
  "materialize_ms.10",
  "materialize_ms.100",
  "materialize_ms.1000",
  "materialize_ms.10000",
  "rss_mb.idle",
  "rss_mb.after_10k_runs",
  "startup_ms.version",
  "startup_ms.first_lease",
  "login_hook_ms",
  "materialize_same_registries_ms",
  // The three ways phases run, side by side (a runner runs one phase at a time: no c64 for it).
  ...(["sandbox", "runner", "none"] as const).flatMap((mode) =>
    ["ms_per_run", "c1_runs_per_s", "in_agent_ms_per_run", "ms_added_per_phase", "phase_process_ms"].map(
      (figure) => `isolation.${mode}.${figure}`,
    ),
  ),
  "isolation.sandbox.c64_runs_per_s",
  "isolation.none.c64_runs_per_s",
  "isolation.ratios.sandbox_over_none_per_run",
  "isolation.ratios.runner_over_none_per_run",
  "isolation.ratios.sandbox_over_none_per_phase",
  "isolation.ratios.runner_over_none_per_phase",
  "isolation.ratios.sandbox_over_none_c64_throughput",
];

describe("npm run bench -- --quick", () => {
  it("runs to the end and writes every promised figure as a positive number", async () => {
    dir = await mkdtemp(join(tmpdir(), "oca-bench-"));
    const out = join(dir, "results.json");
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        join(ROOT, "node_modules", ".bin", "tsx"),
        ["bench/run-bench.ts", "--quick", "--out", out],
        { cwd: ROOT, encoding: "utf8", maxBuffer: 16 * 1024 * 1024 },
        (error, so, se) => {
          if (error) reject(new Error(`bench failed: ${error.message}\n${se.slice(-2000)}`));
          else resolve(so);
        },
      );
    });
    const results = JSON.parse(await readFile(out, "utf8")) as Record<string, unknown>;
    for (const path of REQUIRED) {
      let v: unknown = results;
      for (const k of path.split(".")) v = (v as Record<string, unknown> | undefined)?.[k];
      expect(typeof v === "number" && Number.isFinite(v) && v > 0, `${path} = ${JSON.stringify(v)}`).toBe(true);
    }
    expect((results["machine"] as { quick?: unknown }).quick).toBe(true);
    // The table names each measurement.
    for (const label of [
      "pickup latency",
      "throughput",
      "isolation, per run",
      "isolation, added per phase",
      "isolation, c64",
      "floor",
      "materialize",
      "RSS",
      "start-up",
      "skopeo login hook",
    ])
      expect(stdout).toContain(label);
  }, 300_000);
});
