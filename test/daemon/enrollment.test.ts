/**
 * Enrollment through the composition root: the agent proves its key for a per-agent credential,
 * keeps it only in memory (and in the redactor, never in the log), and enrolls again when the
 * control plane refuses it (here: an operator deleted the agent). A disabled agent waits to be
 * enabled; an agent enrolled with a single-use enrollment token cannot enroll with it again.
 * In process, against the reference control plane on loopback with the stand-in tofu.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, type LogLine } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { startFaultProxy } from "../support/fault-proxy.js";
import { composeInProcess } from "../support/in-process-agent.js";
import { logCollector } from "../support/log-collector.js";
import { agentFiles } from "../support/reliability-agents.js";

let h: Harness;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-enroll-"));
  // Short long-polls, so the agent meets the refusal soon after the control plane forgets it.
  h = await startControlPlane({
    agentApi: { heartbeatIntervalSeconds: 0.2, pollWaitSeconds: 0.2, bundleTtlSeconds: 120 },
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("enrollment", () => {
  it("enrolls with proof of its key, and enrolls again when its credential is refused", async () => {
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const log = logCollector();
    const env = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir };
    const agent = await composeInProcess(
      {
        control_plane_url: h.url,
        token_file: tokenFile,
        key_file: keyFile,
        work_dir: await mkdtemp(join(dir, "work-")),
        tofu_bin: FAKE_TOFU,
        cancel_grace: "1s",
        run_timeout: "60s",
        preflight: false,
      },
      env,
      log.sink,
    );
    const ended = agent.run();
    try {
      const first = (await log.next((l) => l["event"] === "registered"))["agent_id"] as string;
      expect(h.cp.store.agents.get(first)?.credential_sha256).toMatch(/^[0-9a-f]{64}$/);
      // An operator deletes the agent: its credential is refused at the next poll.
      expect((await h.admin("DELETE", `/agents/${first}`)).status).toBe(204);
      const again = await log.next((l) => l["event"] === "reregistering");
      expect(again["code"]).toBe("CONTROL_PLANE_UNAUTHORIZED");
      const second = (await log.next((l) => l["event"] === "registered" && l["agent_id"] !== first))[
        "agent_id"
      ] as string;
      expect(h.cp.store.agents.has(second)).toBe(true);
      const runId = await h.createRun({ "main.tf": "\n" }, ["init"]);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("succeeded");
      expect(run.events.find((e) => e.type === "leased")?.["agent_id"]).toBe(second);
      expect(log.lines.some((l) => l["event"] === "unauthorized")).toBe(false);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
    }
    // Both credentials stay redacted; neither reached the log, nor did a lease id at info.
    expect(agent.redactor.size).toBe(3);
    expect(log.raw()).not.toMatch(/oca1_/);
    expect(log.lines.filter((l) => "lease_id" in l)).toEqual([]);
  });
});

describe("enrollment across a control plane that lost the challenge", () => {
  it("answered after the control plane forgot the challenge (CHALLENGE_FAILED), the agent enrolls again instead of stopping", async () => {
    const proxy = await startFaultProxy(h.url);
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const log = logCollector();
    // The first answer meets a control plane that restarted between the two steps.
    const isAnswer = (method: string, path: string): boolean => method === "POST" && path.endsWith("/credential");
    proxy.setMode(
      {
        kind: "status",
        status: 403,
        body: JSON.stringify({ error: { code: "CHALLENGE_FAILED", message: "no pending challenge" } }),
      },
      { only: isAnswer },
    );
    const agent = await composeInProcess(
      {
        control_plane_url: proxy.url,
        token_file: tokenFile,
        key_file: keyFile,
        work_dir: await mkdtemp(join(dir, "work-")),
        tofu_bin: FAKE_TOFU,
        cancel_grace: "1s",
        run_timeout: "60s",
        preflight: false,
        retry_base: "50ms",
        retry_max: "200ms",
      },
      { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir },
      log.sink,
    );
    const ended = agent.run();
    try {
      await proxy.waitForRequest((r) => isAnswer(r.method, r.path) && r.status === 403);
      proxy.setMode({ kind: "pass" });
      const registered = await log.next((l) => l["event"] === "registered");
      expect(h.cp.store.agents.has(registered["agent_id"] as string)).toBe(true);
      const lost = log.lines.find((l) => l["event"] === "control_plane_error" && l["during"] === "register");
      expect(lost).toMatchObject({ code: "CONTROL_PLANE_UNAVAILABLE", kind: "challenge_lost" });
      expect(proxy.requests.filter((r) => r.method === "POST" && r.path.endsWith("/agents")).length).toBe(2);
      expect(log.lines.some((l) => l["event"] === "unauthorized")).toBe(false);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
      await proxy.close();
    }
  });
});

describe("operators' decisions reach the daemon", () => {
  const env = (): NodeJS.ProcessEnv => ({ PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir });
  const flags = async (token: string): Promise<Record<string, string | boolean>> => {
    const { keyFile, tokenFile } = await agentFiles(dir, token);
    return {
      control_plane_url: h.url,
      token_file: tokenFile,
      key_file: keyFile,
      work_dir: await mkdtemp(join(dir, "work-")),
      tofu_bin: FAKE_TOFU,
      cancel_grace: "1s",
      run_timeout: "60s",
      preflight: false,
      // Asked again soon while disabled, so the test sees it asking and resuming.
      retry_base: "50ms",
      retry_max: "200ms",
    };
  };

  it("disabled, the agent aborts and wipes its run, keeps asking without enrolling anew, and leases again once enabled", async () => {
    const log = logCollector();
    const agent = await composeInProcess(await flags(h.agentToken), env(), log.sink);
    const ended = agent.run();
    // Fails at once, rather than at the test's timeout, if the agent stops.
    const running = <T>(p: Promise<T>): Promise<T> =>
      Promise.race([
        p,
        ended.then((exit) => {
          throw new Error(`the agent stopped (exit ${exit.code}): ${log.raw().slice(-600)}`);
        }),
      ]);
    try {
      const agentId = (await running(log.next((l) => l["event"] === "registered")))["agent_id"] as string;
      const hung = await h.createRun({ "main.tf": "\n", "fake-tofu.json": JSON.stringify({ hang: "init" }) }, ["init"]);
      await running(log.next((l) => l["run_id"] === hung && l["msg"] === "FAKE-TOFU-READY init"));
      expect((await h.admin("POST", `/agents/${agentId}/disable`)).status).toBe(200);
      expect(h.cp.store.runs.get(hung)).toMatchObject({ status: "failed", error: { code: "AGENT_DISABLED" } });
      // Its next heartbeat is refused: the run is aborted and its credentials wiped.
      expect((await running(log.next((l) => l["run_id"] === hung && l["event"] === "run_finished")))["code"]).toBe(
        "LEASE_LOST",
      );
      await running(log.next((l) => l["run_id"] === hung && l["event"] === "credentials_wiped"));
      const queued = await h.createRun({ "main.tf": "\n" }, ["init"]);
      const asked = (l: LogLine): boolean => l["event"] === "control_plane_error" && l["kind"] === "disabled";
      await running(log.next(asked));
      const first = log.lines.findIndex(asked);
      await running(log.next((l) => asked(l) && log.lines.indexOf(l) > first));
      expect(h.cp.store.runs.get(queued)?.status).toBe("queued");
      expect((await h.admin("POST", `/agents/${agentId}/enable`)).status).toBe(200);
      const run = await running(h.waitForStatus(queued, ["succeeded", "failed", "canceled"]));
      expect(run.status).toBe("succeeded");
      expect(run.events.find((e) => e.type === "leased")?.["agent_id"]).toBe(agentId);
      expect(log.lines.filter((l) => l["event"] === "registered")).toHaveLength(1);
      expect(log.lines.some((l) => l["event"] === "unauthorized")).toBe(false);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
    }
  });

  it("enrolls with an enrollment token in --token-file; deleted, it cannot enroll with it again and stops", async () => {
    const made = await h.admin("POST", "/enrollment-tokens", { name: "daemon" });
    const { id, token } = made.json as { id: string; token: string };
    const log = logCollector();
    const agent = await composeInProcess(await flags(token), env(), log.sink);
    const ended = agent.run();
    const agentId = (await log.next((l) => l["event"] === "registered"))["agent_id"] as string;
    expect(h.cp.store.agents.get(agentId)?.enrollment_token_id).toBe(id);
    const runId = await h.createRun({ "main.tf": "\n" }, ["init"]);
    expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    expect((await h.admin("DELETE", `/agents/${agentId}`)).status).toBe(204);
    const stopped = await log.next((l) => l["event"] === "unauthorized");
    expect(stopped["msg"]).toMatch(/ENROLLMENT_TOKEN_USED/);
    expect((await ended).code).toBe(1);
    expect(log.raw()).not.toContain(token);
  });
});
