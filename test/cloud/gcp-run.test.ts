/**
 * A real agent process runs with a Google Artifact Registry integration of the reference control
 * plane (`cloud_auth: {provider: "gcp"}`): the agent finds the metadata server (GKE workload
 * identity, GCE) and mints a cloud-platform access token before pre-flight, the stand-in tofu's
 * OpenTofu lookup reads it as an ordinary `auth` entry (user `oauth2accesstoken`), a token that
 * expires is renewed before the next phase (which pulls with the new one after the old one was
 * revoked), a refused identity fails the run before init with CLOUD_AUTH_FAILED, and no token
 * appears in any log line or output.
 *
 * Google Cloud cannot run here: the metadata server is a local stand-in
 * (test/support/gcp-standins.ts) reached through GCE_METADATA_HOST in the agent's environment. It
 * issues tokens that have already expired (`expires_in: -1`), so every phase after the first needs
 * a new one (no clock, no sleep). The registry is real (Debian's docker-registry, htpasswd user
 * `oauth2accesstoken`).
 */
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent, type LogLine } from "../support/agent-process.js";
import { startGcpStandIns, type GcpStandIns } from "../support/gcp-standins.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { leakForms } from "../support/leak-forms.js";
import type { LocalRegistry } from "../support/registry-fixture.js";
import { startRegistryPair, type RegistryPair } from "../support/registry-pair.js";
import { agentFiles } from "../support/reliability-agents.js";

const USER = "oauth2accesstoken";
const IDENTITY = "the metadata server's default service account";
const REPO = "modules/network";
const TAG = "1.2.0";

let dir: string;
let h: Harness;
let pair: RegistryPair;
let registry: LocalRegistry;
let gcp: GcpStandIns;
const issued: string[] = [];
let agentEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-gcp-run-"));
  pair = await startRegistryPair({
    pusherPassword: "pusher-password",
    htpasswdUsers: {},
    tokenUsers: {},
    tag: TAG,
    htpasswdRepositories: [REPO],
    tokenRepositories: [],
  });
  registry = pair.registry;
  gcp = await startGcpStandIns({
    expiresInSeconds: () => -1,
    onAccessToken: async (token) => {
      issued.push(token);
      await registry.setPassword(USER, token);
    },
  });
  h = await startControlPlane();
  const made = await h.admin("POST", "/integrations", {
    name: "gar",
    registry_url: registry.url,
    cloud_auth: { provider: "gcp" },
    export_credentials: true,
  });
  expect(made.status).toBe(201);
  agentEnv = {
    ...registry.trustEnv,
    HOME: dir,
    TF_CLI_CONFIG_FILE: "",
    GOOGLE_APPLICATION_CREDENTIALS: "",
    GOOGLE_SDK_NODE_LOGGING: "",
    GCE_METADATA_HOST: gcp.host,
  };
}, 120_000);

afterAll(async () => {
  await h.close();
  await gcp.close();
  await pair.stop();
  await rm(dir, { recursive: true, force: true });
});

async function runOnce(phases: string[]): Promise<{ lines: LogLine[]; output: string; record: string; runId: string }> {
  const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
  const workDir = await mkdtemp(join(dir, "work-"));
  const recordFile = join(dir, `${workDir.split("/").pop() ?? "w"}.jsonl`);
  const agent = startAgent(
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
      "--listen",
      "off",
      "--isolation",
      "none",
      // The registry is a local stand-in, not the cloud's own: the operator trusts it.
      "--cloud-auth-host",
      registry.host,
    ],
    { ...agentEnv, FAKE_TOFU_RECORD: recordFile },
  );
  try {
    await agent.waitForLog((l) => l["event"] === "registered");
    const runId = await h.createRun(
      {
        "main.tf": `module "net" {\n  source = "oci://${registry.host}/${REPO}?tag=${TAG}"\n}\n`,
        "fake-tofu.json": JSON.stringify({ pull: "plan" }),
      },
      phases,
    );
    await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
    await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
    const record = await readFile(recordFile, "utf8").catch(() => "");
    return { lines: agent.lines, output: agent.output(), record, runId };
  } finally {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

function expectNoToken(texts: readonly string[]): void {
  for (const password of issued)
    for (const form of leakForms(password, USER))
      for (const text of texts) expect(text.includes(form), "a minted token leaked").toBe(false);
}

describe("an agent with a cloud_auth gcp integration", () => {
  it("mints before pre-flight, renews the expired token before the next phase, pulls with it; no token in any log", async () => {
    const { lines, output, record, runId } = await runOnce(["init", "plan"]);
    const run = h.cp.store.runs.get(runId);
    expect(run?.error).toBeUndefined();
    expect(run?.status).toBe("succeeded");
    const events = lines.filter((l) => l["run_id"] === runId).map((l) => l["event"]);
    expect(events.indexOf("cloud_credentials_minted")).toBeLessThan(events.indexOf("preflight_finished"));
    expect(events.indexOf("cloud_credentials_renewed")).toBeGreaterThan(events.indexOf("phase_started"));
    expect(lines.find((l) => l["event"] === "cloud_credentials_minted")).toMatchObject({
      provider: "gcp",
      identity: IDENTITY,
      registry: registry.host,
    });
    // Two tokens: one for init, a new one for plan (the first was revoked when it was replaced).
    expect(issued).toHaveLength(2);
    const phases = record
      .trim()
      .split("\n")
      .map(
        (l) =>
          JSON.parse(l) as {
            phase: string;
            resolutions: { resolved: { username: string; password: string } }[];
            pulls: { status: number }[];
          },
      );
    expect(
      phases.map((p) => [p.phase, p.resolutions[0]?.resolved.username, p.resolutions[0]?.resolved.password]),
    ).toEqual([
      ["init", USER, issued[0]],
      ["plan", USER, issued[1]],
    ]);
    expect(await registry.probe(USER, issued[0] ?? "")).toBe(401);
    expect(phases[1]?.pulls.map((p) => p.status)).toEqual([200]);
    // Nothing the agent logged, and nothing shipped to the control plane, holds a token.
    expectNoToken([output, JSON.stringify(run?.logs ?? []), JSON.stringify(run?.events ?? [])]);
  });

  it("a refused identity fails the run before init with CLOUD_AUTH_FAILED naming gcp and the metadata server's service account", async () => {
    gcp.denyMetadata = 404;
    try {
      const { lines, output, record, runId } = await runOnce(["init"]);
      const run = h.cp.store.runs.get(runId);
      expect(run?.status).toBe("failed");
      expect(run?.error?.code).toBe("CLOUD_AUTH_FAILED");
      expect(run?.error?.message).toContain(
        `gcp gave no registry credential for ${registry.host} to identity ${IDENTITY}: HTTP 404`,
      );
      expect(lines.some((l) => l["run_id"] === runId && l["event"] === "phase_started")).toBe(false);
      expect(record).toBe("");
      expectNoToken([output]);
    } finally {
      gcp.denyMetadata = undefined;
    }
  });
});
