/**
 * The daemon against the reference control plane over real HTTP on loopback, as a real
 * process, with a stand-in tofu (test/fixtures/fake-tofu.mjs: no OpenTofu binary can be
 * installed here) that records at each phase which credential OpenTofu's rules resolve.
 * Every ending is covered; after each, no byte of the canary secret remains under the work
 * directory and the run's status at the control plane is the right one.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent, type AgentProcess, type LogLine } from "../support/agent-process.js";
import { agentFiles } from "../support/reliability-agents.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";
import { liveProcessesWhere } from "../support/proc-scan.js";

const CANARY = `CANARY-${randomBytes(6).toString("hex")}:pw"with\\odd`;
const CANARY_FORMS = [CANARY, Buffer.from(`octocat:${CANARY}`).toString("base64"), JSON.stringify(CANARY).slice(1, -1)];
const HOST = "registry.canary.test";
const MAIN_TF = `module "net" {\n  source = "oci://${HOST}/acme/net?tag=1.0.0"\n}\n`;

let h: Harness;
let dir: string;
let keyFile: string;
let tokenFile: string;

interface Recorded {
  pid: number;
  phase: string;
  cwd: string;
  env: Record<string, string | undefined>;
  resolutions: {
    address: string;
    resolved: { username: string; password: string; key: string; file: string } | null;
  }[];
}

async function records(file: string): Promise<Recorded[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Recorded);
}

async function filesUnder(root: string): Promise<string[]> {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

async function expectNoCanaryUnder(root: string): Promise<void> {
  for (const file of await filesUnder(root)) {
    const text = await readFile(file, "latin1");
    for (const form of CANARY_FORMS) expect(text.includes(form), `${form} found in ${file}`).toBe(false);
  }
}

/** Running, not a zombie (an orphan is reparented; its new parent reaps it when it pleases). */
function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

async function expectEmptyRunDirs(workDir: string): Promise<void> {
  expect(await readdir(join(workDir, "credentials"))).toEqual([]);
  expect(await readdir(join(workDir, "workspaces"))).toEqual([]);
}

interface Started {
  agent: AgentProcess;
  workDir: string;
  recordFile: string;
}

async function newWorkDir(): Promise<{ workDir: string; recordFile: string }> {
  const workDir = await mkdtemp(join(dir, "work-"));
  return { workDir, recordFile: join(workDir, "..", `${workDir.split("/").pop() ?? "w"}.record.jsonl`) };
}

function launch(workDir: string, recordFile: string, extra: string[] = []): AgentProcess {
  return startAgent(
    [
      "--control-plane-url",
      h.url,
      "--token-file",
      tokenFile,
      "--key-file",
      keyFile,
      "--work-dir",
      workDir,
      "--tofu-bin",
      FAKE_TOFU,
      "--cancel-grace",
      "500ms",
      "--listen",
      "127.0.0.1:0",
      ...extra,
    ],
    { ...fakeTofuRecord(recordFile), HOME: dir, TF_CLI_CONFIG_FILE: "" },
  );
}

async function startRegisteredAgent(extra: string[] = []): Promise<Started> {
  const { workDir, recordFile } = await newWorkDir();
  const agent = launch(workDir, recordFile, extra);
  await agent.waitForLog((l) => l["event"] === "registered");
  return { agent, workDir, recordFile };
}

async function stop(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

/** Processes (on this host, any PID namespace) but the agent whose environment holds `entry`. */
async function processesWithEnv(entry: string, agent: AgentProcess): Promise<number[]> {
  const found = await liveProcessesWhere((environ) => environ.includes(entry), "environ");
  return found.filter((pid) => pid !== agent.child.pid);
}

/** Polls `condition` until it holds (bounded): for what the kernel does on its own time. */
async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const forRun =
  (runId: string, event: string, extra: (l: LogLine) => boolean = () => true) =>
  (l: LogLine): boolean =>
    l["run_id"] === runId && l["event"] === event && extra(l);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-daemon-"));
  h = await startControlPlane();
  ({ keyFile, tokenFile } = await agentFiles(dir, h.agentToken));
  // The older integration for the host loses to the newer one; the export-off one never reaches a run.
  await h.createIntegration({
    name: "old",
    registry_url: `https://${HOST}`,
    username: "octocat",
    password: "stale-password",
    export_credentials: true,
  });
  await h.createIntegration({
    name: "current",
    registry_url: `https://${HOST}`,
    username: "octocat",
    password: CANARY,
    export_credentials: true,
  });
  await h.createIntegration({
    name: "not exported",
    registry_url: "https://other.canary.test",
    username: "x",
    password: "other-secret",
    export_credentials: false,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("daemon endings", () => {
  it("succeeds: every phase resolves the winning integration's credential, then everything is wiped", async () => {
    const { agent, workDir, recordFile } = await startRegisteredAgent();
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF });
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("succeeded");
      const rec = await records(recordFile);
      expect(rec.map((r) => r.phase)).toEqual(["init", "plan", "apply"]);
      for (const r of rec) {
        expect(r.resolutions).toHaveLength(1);
        expect(r.resolutions[0]?.resolved?.username).toBe("octocat");
        expect(r.resolutions[0]?.resolved?.password).toBe(CANARY);
        expect(r.resolutions[0]?.resolved?.key).toBe(HOST);
        expect(r.env["TF_CLI_CONFIG_FILE"]).toMatch(new RegExp(`^${workDir}/credentials/${runId}/`));
        expect(r.cwd).toBe(join(workDir, "workspaces", runId));
      }
      const leftOut = run.events.filter((e) => e.type === "integration_left_out").map((e) => e["integration_name"]);
      expect(leftOut).toEqual(expect.arrayContaining(["old", "not exported"]));
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
      await expectNoCanaryUnder(workDir);
      for (const form of CANARY_FORMS) expect(agent.output()).not.toContain(form);
    } finally {
      await stop(agent);
    }
  });

  it.each(["init", "plan", "apply"])("fails when %s exits non-zero, runs no later phase, and wipes", async (phase) => {
    const { agent, workDir, recordFile } = await startRegisteredAgent();
    try {
      const runId = await h.createRun({
        "main.tf": MAIN_TF,
        "fake-tofu.json": JSON.stringify({ fail: { [phase]: 3 } }),
      });
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("PHASE_FAILED");
      const phases = (await records(recordFile)).map((r) => r.phase);
      expect(phases[phases.length - 1]).toBe(phase);
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
      await expectNoCanaryUnder(workDir);
    } finally {
      await stop(agent);
    }
  });

  it("fails when tofu is killed by a signal", async () => {
    const { agent, workDir } = await startRegisteredAgent();
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ self_kill: "plan" }) });
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.events.find((e) => e.type === "phase_result" && e["phase"] === "plan")?.["signal"]).toBe("SIGKILL");
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
    } finally {
      await stop(agent);
    }
  });

  it("cancels from the control plane (SIGTERM, grace, SIGKILL for a tofu that ignores SIGTERM), wipes, and leases the next run", async () => {
    const { agent, workDir, recordFile } = await startRegisteredAgent();
    try {
      const runId = await h.createRun({
        "main.tf": MAIN_TF,
        "fake-tofu.json": JSON.stringify({ hang: "apply", ignore_sigterm: true }),
      });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY apply"));
      const cancel = await h.admin("POST", `/runs/${runId}/cancel`);
      expect(cancel.status).toBe(202);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("canceled");
      // Nothing of the phase is left (the recorded pid is the sandbox's own; look for its environment).
      expect(await processesWithEnv(`FAKE_TOFU_RECORD=${recordFile}`, agent)).toEqual([]);
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
      await expectNoCanaryUnder(workDir);
      const next = await h.createRun({ "main.tf": MAIN_TF });
      expect((await h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    } finally {
      await stop(agent);
    }
  });

  it("aborts and wipes when the lease is lost (409), and stays healthy", async () => {
    const { agent, workDir } = await startRegisteredAgent();
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "plan" }) });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY plan"));
      const run = h.cp.store.runs.get(runId);
      expect(run).toBeDefined();
      // The control plane takes the lease away (as when it expires or an operator reassigns it).
      if (run) h.cp.store.finish(run, "failed", { code: "TEST_LEASE_REVOKED", message: "revoked by the test" });
      const finished = await agent.waitForLog(forRun(runId, "run_finished"));
      expect(finished["code"]).toBe("LEASE_LOST");
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
      expect(h.cp.store.runs.get(runId)?.status).toBe("failed");
      const next = await h.createRun({ "main.tf": MAIN_TF });
      expect((await h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    } finally {
      await stop(agent);
    }
  });

  it("fails a run that exceeds --run-timeout", async () => {
    const { agent, workDir } = await startRegisteredAgent(["--run-timeout", "1s"]);
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "init" }) });
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("RUN_TIMEOUT");
      await agent.waitForLog(forRun(runId, "credentials_wiped"));
      await expectEmptyRunDirs(workDir);
    } finally {
      await stop(agent);
    }
  });

  it("drains on SIGTERM: leases nothing new, lets the running run finish, exits 0", async () => {
    const { agent, workDir, recordFile } = await startRegisteredAgent();
    let queuedId: string | undefined;
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ block: "apply" }) });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY apply"));
      agent.kill("SIGTERM");
      await agent.waitForLog((l) => l["event"] === "shutdown_requested");
      queuedId = await h.createRun({ "main.tf": MAIN_TF });
      const cwd = (await records(recordFile)).find((r) => r.phase === "apply")?.cwd;
      expect(cwd).toBeDefined();
      await writeFile(join(cwd ?? "", "release"), "");
      expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      expect((await agent.exited).code).toBe(0);
      expect(h.cp.store.runs.get(queuedId)?.status).toBe("queued");
      await expectEmptyRunDirs(workDir);
    } finally {
      await stop(agent);
      if (queuedId) await h.admin("POST", `/runs/${queuedId}/cancel`);
    }
  });

  it("cancels what is still running when the drain timeout passes, wipes, exits 0", async () => {
    const { agent, workDir } = await startRegisteredAgent(["--drain-timeout", "500ms"]);
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "plan" }) });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY plan"));
      agent.kill("SIGTERM");
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("canceled");
      expect(run.error?.code).toBe("AGENT_SHUTDOWN");
      expect((await agent.exited).code).toBe(0);
      await expectEmptyRunDirs(workDir);
      await expectNoCanaryUnder(workDir);
    } finally {
      await stop(agent);
    }
  });

  it("cancels at once on a second signal", async () => {
    const { agent, workDir } = await startRegisteredAgent(["--drain-timeout", "10m"]);
    try {
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "init" }) });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY init"));
      agent.kill("SIGTERM");
      await agent.waitForLog((l) => l["event"] === "shutdown_requested");
      agent.kill("SIGINT");
      await agent.waitForLog((l) => l["event"] === "shutdown_forced");
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 10_000);
      expect(run.status).toBe("canceled");
      expect((await agent.exited).code).toBe(0);
      await expectEmptyRunDirs(workDir);
    } finally {
      await stop(agent);
    }
  });

  it("in the sandbox, a SIGKILLed agent's running phase dies with it", async () => {
    const { workDir, recordFile } = await newWorkDir();
    const agent = launch(workDir, recordFile);
    try {
      const runId = await h.createRun({
        "main.tf": MAIN_TF,
        "fake-tofu.json": JSON.stringify({ hang: "apply", ignore_sigterm: true }),
      });
      await agent.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY apply"));
      expect(await processesWithEnv(`FAKE_TOFU_RECORD=${recordFile}`, agent)).not.toEqual([]);
      agent.kill("SIGKILL");
      await agent.exited;
      // bubblewrap's --die-with-parent: the kernel ends the sandbox's PID namespace.
      await waitUntil(
        async () => (await processesWithEnv(`FAKE_TOFU_RECORD=${recordFile}`, agent)).length === 0,
        10_000,
      );
    } finally {
      await stop(agent);
    }
  });

  it("with --isolation none, after SIGKILL, the control plane fails the run when the lease expires; the restarted agent stops the orphaned tofu and sweeps the credentials", async () => {
    const { workDir, recordFile } = await newWorkDir();
    // Without the sandbox a phase outlives a killed agent: the start-up orphan stop is for that.
    const first = launch(workDir, recordFile, ["--isolation", "none"]);
    let second: AgentProcess | undefined;
    let orphanPid: number | undefined;
    try {
      // A tofu that ignores SIGTERM, so the restart has to escalate to SIGKILL.
      const runId = await h.createRun({
        "main.tf": MAIN_TF,
        "fake-tofu.json": JSON.stringify({ hang: "apply", ignore_sigterm: true }),
      });
      await first.waitForLog(forRun(runId, "phase_output", (l) => l["msg"] === "FAKE-TOFU-READY apply"));
      first.kill("SIGKILL");
      await first.exited;
      // The crash left the credentials on disk, and tofu running: that is what the sweep is for.
      const leftovers = await filesUnder(join(workDir, "credentials"));
      expect(leftovers.some((f) => f.endsWith("docker/config.json"))).toBe(true);
      orphanPid = (await records(recordFile)).find((r) => r.phase === "apply")?.pid;
      expect(orphanPid).toBeDefined();
      expect(processRunning(orphanPid ?? 0)).toBe(true);
      const run = await h.waitForStatus(runId, ["failed", "canceled", "succeeded"], 15_000);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("LEASE_EXPIRED");

      second = launch(workDir, recordFile, ["--isolation", "none"]);
      const found = await second.waitForLog((l) => l["event"] === "orphan_found");
      expect(found).toMatchObject({ run_id: runId, pid: orphanPid });
      const stopped = await second.waitForLog((l) => l["event"] === "orphan_stopped");
      expect(stopped).toMatchObject({ run_id: runId, pid: orphanPid, signal: "SIGKILL" });
      expect(processRunning(orphanPid ?? 0)).toBe(false);
      const swept = await second.waitForLog((l) => l["event"] === "swept_credentials");
      expect(swept["run_id"]).toBe(runId);
      await second.waitForLog((l) => l["event"] === "registered");
      await expectEmptyRunDirs(workDir);
      await expectNoCanaryUnder(workDir);
      const next = await h.createRun({ "main.tf": MAIN_TF });
      expect((await h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    } finally {
      await stop(first);
      if (second) await stop(second);
      if (orphanPid !== undefined && processRunning(orphanPid)) process.kill(orphanPid, "SIGKILL");
    }
  });

  it("stops with a clear error when the control plane refuses the token (401)", async () => {
    const { workDir, recordFile } = await newWorkDir();
    const badToken = join(dir, "bad.token");
    await writeFile(badToken, "not-the-pool-token\n", { mode: 0o600 });
    const agent = startAgent(
      [
        "--control-plane-url",
        h.url,
        "--token-file",
        badToken,
        "--key-file",
        keyFile,
        "--work-dir",
        workDir,
        "--tofu-bin",
        FAKE_TOFU,
        "--listen",
        "127.0.0.1:0",
      ],
      fakeTofuRecord(recordFile),
    );
    const exit = await agent.exited;
    expect(exit.code).toBe(1);
    expect(agent.output()).toContain("CONTROL_PLANE_UNAUTHORIZED");
    expect(agent.output()).not.toContain("not-the-pool-token");
  });
});
