// Ad-hoc profiling helper: runs N runs through one agent at concurrency C under --cpu-prof.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { RunRecord } from "../src/control-plane/store.js";
import { profileSetup } from "./support/profile-setup.js";
const N = Number(process.argv[2] ?? 500),
  C = Number(process.argv[3] ?? 64);
const { dir, cp, archive, runArgs } = await profileSetup("/tmp/prof-");
const nodeFlags = (process.env["NODEFLAGS"] ?? "").split(" ").filter(Boolean);
const child = spawn(
  process.execPath,
  [
    ...nodeFlags,
    ...(process.env["PROF"] ? ["--cpu-prof", "--cpu-prof-dir", dir] : []),
    "dist/cli/main.js",
    ...runArgs(C, "w", process.env["LOGLEVEL"] ?? "info"),
  ],
  { stdio: ["ignore", "ignore", "inherit"] },
);
await new Promise((r) => setTimeout(r, 800));
const ids = new Set<string>();
const done = new Promise<void>((resolve) =>
  cp.store.on("run-changed", (run: RunRecord) => {
    if (run.status !== "running" && ids.delete(run.id) && ids.size === 0) resolve();
  }),
);
const stat0 = (await readFile(`/proc/${child.pid}/stat`, "utf8")).split(" ");
const t0 = performance.now();
for (let i = 0; i < N; i++) ids.add(cp.store.createRun(archive, ["init", "plan", "apply"]).id);
await done;
const wall = performance.now() - t0;
const stat1 = (await readFile(`/proc/${child.pid}/stat`, "utf8")).split(" ");
const cpu = (Number(stat1[13]) + Number(stat1[14]) - Number(stat0[13]) - Number(stat0[14])) * 10;
const cpu0 = process.cpuUsage();
console.log(
  `${N} runs c${C}: ${(N / (wall / 1000)).toFixed(1)} runs/s; agent CPU ${(cpu / N).toFixed(2)} ms/run (user+sys), wall ${(wall / N).toFixed(2)} ms/run; bench+CP cpu total ${((cpu0.user + cpu0.system) / 1000 / N).toFixed(2)} ms/run`,
);
console.log(
  `agent RSS at the end: ${(Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? "0") / 1024).toFixed(0)} MB`,
);
child.kill("SIGTERM");
await new Promise((r) => child.once("exit", r));
await cp.close();
console.log(dir);
