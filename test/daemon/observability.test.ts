/**
 * What operators see: JSON log lines that tell a run's story by run_id, value-based redaction
 * of every secret form at every level (including tofu output that prints a password), and the
 * /healthz, /readyz and /metrics endpoints during and after a run. Real agent process, real
 * control plane over loopback, stand-in tofu (test/fixtures/fake-tofu.mjs).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent, type AgentProcess } from "../support/agent-process.js";
import { agentFiles } from "../support/reliability-agents.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";

const CANARY = `CANARY-${randomBytes(6).toString("hex")}-"quoted"\\slash`;
const FORMS = [
  CANARY,
  JSON.stringify(CANARY).slice(1, -1),
  Buffer.from(`robot:${CANARY}`).toString("base64"),
  Buffer.from(CANARY).toString("base64"),
];
const HOST = "obs.canary.test";
const MAIN_TF = `module "m" {\n  source = "oci://${HOST}/team/mod?tag=1"\n}\n`;

let h: Harness;
let dir: string;
let keyFile: string;
let tokenFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-obs-"));
  h = await startControlPlane();
  ({ keyFile, tokenFile } = await agentFiles(dir, h.agentToken));
  await h.createIntegration({
    name: "obs",
    registry_url: `https://${HOST}`,
    username: "robot",
    password: CANARY,
    export_credentials: true,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

async function launch(extra: string[] = [], url = h.url): Promise<{ agent: AgentProcess; endpoint: string }> {
  const workDir = await mkdtemp(join(dir, "work-"));
  const agent = startAgent(
    [
      "--control-plane-url",
      url,
      "--token-file",
      tokenFile,
      "--key-file",
      keyFile,
      "--work-dir",
      workDir,
      "--tofu-bin",
      FAKE_TOFU,
      "--listen",
      "127.0.0.1:0",
      ...extra,
    ],
    { ...fakeTofuRecord(join(workDir, "..", "record.jsonl")), HOME: dir },
  );
  const listening = await agent.waitForLog((l) => l["event"] === "listening");
  return { agent, endpoint: String(listening["url"]) };
}

async function stop(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url);
  return { status: res.status, text: await res.text() };
}

function metricValue(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe("logs", () => {
  it("at trace level, masks the password, its auth form and its JSON-escaped form, also in tofu's own output", async () => {
    const { agent } = await launch(["--log-level", "trace"]);
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({
        "main.tf": MAIN_TF,
        "fake-tofu.json": JSON.stringify({ echo_secret_phase: "plan" }),
      });
      expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      const output = agent.output();
      for (const form of FORMS) expect(output).not.toContain(form);
      const leak = agent.lines.find(
        (l) => l["run_id"] === runId && typeof l["msg"] === "string" && l["msg"].startsWith("leaked password"),
      );
      expect(leak?.["msg"]).toContain("[REDACTED]");
      const shipped =
        h.cp.store.runs
          .get(runId)
          ?.logs.map((l) => l.text)
          .join("") ?? "";
      expect(shipped).toContain("leaked password: [REDACTED]");
      for (const form of FORMS) expect(shipped).not.toContain(form);
      for (const form of FORMS) expect(JSON.stringify(h.cp.store.runs.get(runId)?.events)).not.toContain(form);
    } finally {
      await stop(agent);
    }
  });

  it("writes one JSON line per event, every line of a run carrying its run_id, telling the run's story in order", async () => {
    const { agent } = await launch();
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": MAIN_TF });
      await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      expect(agent.lines.every((l) => !("unparsed" in l))).toBe(true);
      const story = agent.lines.filter((l) => l["run_id"] === runId);
      const events = story.map((l) => l["event"]).filter((e) => e !== "phase_output");
      expect(events).toEqual([
        "run_leased",
        "configuration_extracted",
        // Pre-flight checks the credentials in memory, before any file is written.
        "preflight",
        "preflight_finished",
        "credentials_written",
        "credentials_ready",
        "phase_started",
        "phase_finished",
        "phase_started",
        "phase_finished",
        "phase_started",
        "phase_finished",
        "credentials_wiped",
        "run_finished",
      ]);
      const written = story.find((l) => l["event"] === "credentials_written");
      expect(written?.["registry"]).toBe(HOST);
      expect(typeof written?.["integration_id"]).toBe("string");
      expect(story.filter((l) => l["event"] === "phase_finished").map((l) => l["phase"])).toEqual([
        "init",
        "plan",
        "apply",
      ]);
      expect(story.every((l) => typeof l["level"] === "string" && typeof l["time"] === "string")).toBe(true);
    } finally {
      await stop(agent);
    }
  });
});

describe("health and metrics", () => {
  it("answers /healthz, /readyz and /metrics during a run, and counts it", async () => {
    const { agent, endpoint } = await launch();
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ hang: "apply" }) });
      await agent.waitForLog((l) => l["run_id"] === runId && l["msg"] === "FAKE-TOFU-READY apply");
      expect((await get(`${endpoint}/healthz`)).status).toBe(200);
      const ready = await get(`${endpoint}/readyz`);
      expect(ready.status).toBe(200);
      expect(JSON.parse(ready.text)).toEqual({ ready: true, reasons: [], isolation: "sandbox" });
      const during = (await get(`${endpoint}/metrics`)).text;
      expect(metricValue(during, "oci_cred_agent_active_runs")).toBe(1);
      expect(metricValue(during, "oci_cred_agent_credentials_written_total")).toBe(1);
      expect(metricValue(during, "oci_cred_agent_pickup_latency_seconds_count")).toBe(1);
      expect(during).toMatch(/oci_cred_agent_build_info\{version="[^"]+",node="v\d+/);

      await h.admin("POST", `/runs/${runId}/cancel`);
      await h.waitForStatus(runId, ["canceled", "failed", "succeeded"]);
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      const after = (await get(`${endpoint}/metrics`)).text;
      expect(metricValue(after, "oci_cred_agent_active_runs")).toBe(0);
      expect(metricValue(after, 'oci_cred_agent_runs_total{outcome="canceled"}')).toBe(1);
      expect(metricValue(after, 'oci_cred_agent_wipes_total{result="ok"}')).toBe(1);
      expect(metricValue(after, 'oci_cred_agent_phase_duration_seconds_count{phase="init",result="ok"}')).toBe(1);
      expect(after).not.toContain(CANARY);
    } finally {
      await stop(agent);
    }
  });

  it("is not ready while the control plane is down, says why, and becomes ready when it comes up", async () => {
    // Reserve a port, start the agent against it while nothing listens, then start a control plane there.
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => {
          resolve(p);
        });
      });
    });
    const { agent, endpoint } = await launch(["--retry-max", "1s"], `http://127.0.0.1:${port}`);
    try {
      await agent.waitForLog((l) => l["event"] === "control_plane_error");
      const down = await get(`${endpoint}/readyz`);
      expect(down.status).toBe(503);
      // A reason code only; what failed is in the log.
      expect(JSON.parse(down.text)).toEqual({ ready: false, reasons: ["not_registered"], isolation: "sandbox" });
      expect(
        agent.lines.some((l) => l["event"] === "control_plane_error" && l["code"] === "CONTROL_PLANE_UNAVAILABLE"),
      ).toBe(true);
      expect((await get(`${endpoint}/healthz`)).status).toBe(200);
      const metrics = (await get(`${endpoint}/metrics`)).text;
      expect(metricValue(metrics, 'oci_cred_agent_poll_errors_total{kind="network"}')).toBeGreaterThanOrEqual(1);

      const late = await startControlPlaneOn(port);
      try {
        await agent.waitForLog((l) => l["event"] === "registered");
        const up = await get(`${endpoint}/readyz`);
        expect(up.status).toBe(200);
      } finally {
        await late.close();
      }
    } finally {
      await stop(agent);
    }
  });
});

async function startControlPlaneOn(port: number): Promise<{ close(): Promise<void> }> {
  const { createControlPlane } = await import("../../src/control-plane/server.js");
  const cp = await createControlPlane({
    adminToken: "admin-token-for-late-start",
    agentToken: h.agentToken,
    probe: () => Promise.resolve({ warnings: [] }),
  });
  await cp.listen("127.0.0.1", port);
  return { close: () => cp.close() };
}
