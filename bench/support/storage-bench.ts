/**
 * Runs created per second through the admin API (POST /runs over loopback HTTP, `concurrency`
 * clients), with the state in memory or in a data file: what write-through to SQLite, one
 * committed and synced transaction per acknowledged change, costs. Used by `npm run bench` (the
 * shipped build) and `bench/profile-storage.ts` (which also measures synchronous=NORMAL).
 */
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as ServerModule from "../../src/control-plane/server.js";
import type * as SqliteStorageModule from "../../src/control-plane/sqlite-storage.js";

export interface StorageBenchParts {
  readonly createControlPlane: typeof ServerModule.createControlPlane;
  readonly SqliteStorage: typeof SqliteStorageModule.SqliteStorage;
}

export type StorageMode = "memory" | "FULL" | "NORMAL";

export interface StorageFigure {
  readonly runs_per_s: number;
  readonly p50_ms: number;
  readonly p99_ms: number;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

/** Creates `runs` runs with `concurrency` clients against a fresh control plane in `mode`. */
export async function runsCreatedPerSecond(
  parts: StorageBenchParts,
  mode: StorageMode,
  runs: number,
  concurrency: number,
): Promise<StorageFigure> {
  const dir = await mkdtemp(join(tmpdir(), "oca-storage-bench-"));
  const adminToken = randomBytes(24).toString("base64url");
  const storage =
    mode === "memory"
      ? undefined
      : await parts.SqliteStorage.open(join(dir, "cp.db"), randomBytes(32), { synchronous: mode });
  const cp = await parts.createControlPlane({
    adminToken,
    agentToken: randomBytes(24).toString("base64url"),
    probe: () => Promise.resolve({ warnings: [] }),
    // The figure is the storage's throughput, not the admin rate limit's (100/s by default).
    limits: { rates: { admin: { perSecond: 1_000_000, burst: 1_000_000 } } },
    ...(storage === undefined ? {} : { persistence: storage }),
  });
  try {
    const { url } = await cp.listen("127.0.0.1", 0);
    const cfg = join(dir, "cfg");
    await mkdir(cfg);
    await writeFile(join(cfg, "main.tf"), 'variable "x" {}\n');
    await writeFile(join(cfg, "terraform.tfvars"), `x = "${randomBytes(512).toString("hex")}"\n`);
    const body = JSON.stringify({
      configuration_tar_gz_base64: execFileSync("tar", ["czf", "-", "-C", cfg, "."]).toString("base64"),
      phases: ["init", "plan", "apply"],
    });
    const post = async (): Promise<number> => {
      const t0 = performance.now();
      const res = await fetch(`${url}/api/admin/v1/runs`, {
        method: "POST",
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body,
      });
      await res.arrayBuffer();
      if (res.status !== 201) throw new Error(`POST /runs answered ${res.status}`);
      return performance.now() - t0;
    };
    for (let i = 0; i < Math.min(50, runs); i++) await post(); // warm-up
    const latencies: number[] = [];
    let left = runs;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left > 0) {
          left--;
          latencies.push(await post());
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    latencies.sort((a, b) => a - b);
    const r1 = (x: number): number => Math.round(x * 10) / 10;
    return {
      runs_per_s: r1(runs / seconds),
      p50_ms: r1(percentile(latencies, 50)),
      p99_ms: r1(percentile(latencies, 99)),
    };
  } finally {
    await cp.close();
    storage?.close();
    await rm(dir, { recursive: true, force: true });
  }
}
