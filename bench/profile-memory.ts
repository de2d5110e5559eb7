// Ad-hoc: RSS of one agent over batches of runs at concurrency 64 (`tsx bench/profile-memory.ts
// [batches]`). With GC=1 the agent also reports, after each batch, its heap in use after two full
// GCs (bench/support/heap-report.mjs): growth there is retained objects, not heap sizing.
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createControlPlane } from "../src/control-plane/server.js";
import type { RunRecord } from "../src/control-plane/store.js";
import { generatePrivateKeyPem } from "../src/crypto/agent-key.js";
const dir = await mkdtemp("/tmp/mem-");
await writeFile(join(dir, "agent.key"), generatePrivateKeyPem(), { mode: 0o600 });
const agentToken = randomBytes(24).toString("base64url");
await writeFile(join(dir, "token"), agentToken, { mode: 0o600 });
const cp = await createControlPlane({ adminToken: "x".repeat(20), agentToken, leaseTtlSeconds: 120, agentApi: { heartbeatIntervalSeconds: 30 }, probe: () => Promise.resolve({ warnings: [] }) });
const { url } = await cp.listen("127.0.0.1", 0);
cp.store.integrations.set("i", { id: "i", name: "b", registry_url: "https://r.test", username: "u", password: "p", credential_helper: null, export_credentials: true, created_at: "", updated_at: "" });
await mkdir(join(dir, "cfg")); await writeFile(join(dir, "cfg", "main.tf"), "# x\n");
const archive = execFileSync("tar", ["czf", "-", "-C", join(dir, "cfg"), "."]);
const flags = [...(process.env["NODEFLAGS"] ?? "--max-semi-space-size=1").split(" ").filter(Boolean), ...(process.env["GC"] === "1" ? ["--expose-gc", "--import", new URL("./support/heap-report.mjs", import.meta.url).href] : [])];
const batches = Number(process.argv[2] ?? 6);
const child = spawn(process.execPath, [...flags, "dist/cli/main.js", "run", "--control-plane-url", url, "--token-file", join(dir, "token"), "--key-file", join(dir, "agent.key"), "--work-dir", join("/dev/shm", `m${Date.now()}`), "--tofu-bin", "/bin/true", "--concurrency", "64", "--listen", "off", "--no-preflight", "--log-level", "warn"], { stdio: ["ignore", "ignore", "inherit"], env: { MALLOC_ARENA_MAX: "1", ...process.env } });
await new Promise((r) => setTimeout(r, 800));
const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${child.pid}/status`, "utf8"))?.[1]) / 1024;
console.log("idle", (await rss()).toFixed(1));
for (let b = 0; b < batches; b++) {
  const ids = new Set<string>();
  const done = new Promise<void>((resolve) => { const f = (run: RunRecord) => { if (run.status !== "running" && ids.delete(run.id) && ids.size === 0) { cp.store.off("run-changed", f); resolve(); } }; cp.store.on("run-changed", f); });
  const t0 = performance.now();
  for (let i = 0; i < 500; i++) ids.add(cp.store.createRun(archive, ["init", "plan", "apply"]).id);
  await done;
  if (process.env["GC"] === "1") {
    child.kill("SIGUSR2");
    await new Promise((r) => setTimeout(r, 300));
  }
  console.log(`after ${(b + 1) * 500}: rss ${(await rss()).toFixed(1)} MB, ${(500 / ((performance.now() - t0) / 1000)).toFixed(0)} runs/s`);
}
child.kill("SIGTERM"); await new Promise((r) => child.once("exit", r)); await cp.close();
