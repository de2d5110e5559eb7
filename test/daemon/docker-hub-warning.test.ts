/**
 * The daemon's Docker Hub warning (docs: OpenTofu pulls `oci://docker.io/...` anonymously,
 * whatever credentials exist): a run whose configuration names such a source logs an event
 * `docker_hub_source` with code DOCKER_HUB_ANONYMOUS and the fix `oci://registry-1.docker.io/...`,
 * once per such source, and none for a source already written the way OpenTofu matches. Real
 * agent process, reference control plane on loopback, stand-in tofu; JSON log lines parsed.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { agentFiles } from "../support/reliability-agents.js";
import { runFlags } from "../support/run-flags.js";

const MAIN_TF = [
  'module "net" {\n  source = "oci://docker.io/library/net?tag=1.0.0"\n}',
  'module "ok" {\n  source = "oci://registry-1.docker.io/library/ok?tag=1.0.0"\n}',
  "",
].join("\n");

let h: Harness;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-dockerhub-"));
  h = await startControlPlane();
  await h.createIntegration({
    name: "hub",
    registry_url: "https://registry-1.docker.io",
    username: "robot",
    password: "not-used-here",
    export_credentials: true,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("a run with an oci://docker.io/... source", () => {
  it("logs docker_hub_source with DOCKER_HUB_ANONYMOUS and the oci://registry-1.docker.io/... fix, once per such source", async () => {
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const workDir = await mkdtemp(join(dir, "work-"));
    const args = [
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
      "--listen",
      "off",
      "--no-preflight",
    ];
    runFlags(["run", ...args], "the Docker Hub warning test");
    const agent = startAgent(args, { HOME: dir, TF_CLI_CONFIG_FILE: "" });
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      const warnings = agent.lines.filter((l) => l["run_id"] === runId && l["event"] === "docker_hub_source");
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({
        level: "warn",
        code: "DOCKER_HUB_ANONYMOUS",
        file: "main.tf",
        source: "oci://docker.io/library/net?tag=1.0.0",
      });
      expect(String(warnings[0]?.["msg"])).toContain("write it as oci://registry-1.docker.io/library/net");
      // Before init: the warning comes before the first phase starts.
      const events = agent.lines.filter((l) => l["run_id"] === runId).map((l) => l["event"]);
      expect(events.indexOf("docker_hub_source")).toBeLessThan(events.indexOf("phase_started"));
    } finally {
      agent.kill("SIGTERM");
      await agent.exited;
    }
  });
});
