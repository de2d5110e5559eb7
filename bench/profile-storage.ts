// Ad-hoc: what the data file costs the control plane, and what synchronous=FULL costs over
// NORMAL (docs/operations.md, "The reference control plane's data file"). Runs the shipped build:
// `npx tsc -p tsconfig.build.json && npx tsx bench/profile-storage.ts [runs] [concurrency]`.
import { createControlPlane, SqliteStorage } from "./support/shipped.js";
import { runsCreatedPerSecond, type StorageMode } from "./support/storage-bench.js";

const runs = Number(process.argv[2] ?? 2000);
const concurrency = Number(process.argv[3] ?? 8);
const figures: Record<string, unknown> = {};
for (const mode of ["memory", "FULL", "NORMAL", "memory", "FULL", "NORMAL"] as StorageMode[]) {
  figures[mode] = await runsCreatedPerSecond({ createControlPlane, SqliteStorage }, mode, runs, concurrency);
  console.log(mode, JSON.stringify(figures[mode]));
}
