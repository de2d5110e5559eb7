// Ad-hoc: RSS of one agent over batches of runs at concurrency 64 (`tsx bench/profile-memory.ts
// [batches]`). With GC=1 the agent also reports, after each batch, its heap in use after two full
// GCs (bench/support/heap-report.mjs): growth there is retained objects, not heap sizing.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { RunRecord } from "../src/control-plane/store.js";
import { profileSetup } from "./support/profile-setup.js";
const { cp, archive, runArgs } = await profileSetup("/tmp/mem-");
const flags = [
  ...(process.env["NODEFLAGS"] ?? "--max-semi-space-size=1").split(" ").filter(Boolean),
  ...(process.env["GC"] === "1"
    ? ["--expose-gc", "--import", new URL("./support/heap-report.mjs", import.meta.url).href]
    : []),
];
const batches = Number(process.argv[2] ?? 6);
const child = spawn(process.execPath, [...flags, "dist/cli/main.js", ...runArgs(64, "m", "warn")], {
  stdio: ["ignore", "ignore", "inherit"],
  env: { MALLOC_ARENA_MAX: "1", ...process.env },
});
await new Promise((r) => setTimeout(r, 800));
const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${child.pid}/status`, "utf8"))?.[1]) / 1024;
console.log("idle", (await rss()).toFixed(1));
for (let b = 0; b < batches; b++) {
  const ids = new Set<string>();
  const done = new Promise<void>((resolve) => {
    const f = (run: RunRecord) => {
      if (run.status !== "running" && ids.delete(run.id) && ids.size === 0) {
        cp.store.off("run-changed", f);
        resolve();
      }
    };
    cp.store.on("run-changed", f);
  });
  const t0 = performance.now();
  for (let i = 0; i < 500; i++) ids.add(cp.store.createRun(archive, ["init", "plan", "apply"]).id);
  await done;
  if (process.env["GC"] === "1") {
    child.kill("SIGUSR2");
    await new Promise((r) => setTimeout(r, 300));
  }
  console.log(
    `after ${(b + 1) * 500}: rss ${(await rss()).toFixed(1)} MB, ${(500 / ((performance.now() - t0) / 1000)).toFixed(0)} runs/s`,
  );
}
child.kill("SIGTERM");
await new Promise((r) => child.once("exit", r));
await cp.close();
