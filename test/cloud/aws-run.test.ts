/**
 * A real agent process runs with an ECR integration of the reference control plane
 * (`cloud_auth: {provider: "aws"}`): the sealed export carries cloud_auth, the agent mints the
 * credential from its web identity before pre-flight, the stand-in tofu's OpenTofu lookup reads
 * it as an ordinary `auth` entry, a token that expires is renewed before the next phase (and the
 * next phase pulls with the new one after the old one was revoked), a refused identity fails the
 * run before init with CLOUD_AUTH_FAILED, and no token appears in any log line or output.
 *
 * AWS cannot run here: STS and ECR are local stand-ins (test/support/aws-standins.ts) reached
 * through AWS_ENDPOINT_URL_STS and AWS_ENDPOINT_URL_ECR in the agent's environment. They issue
 * ECR tokens that expire at once, so every phase after the first needs a new one (no clock, no
 * sleep). The registry is real (Debian's docker-registry, htpasswd user `AWS`).
 */
import { readFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent, type LogLine } from "../support/agent-process.js";
import { startAwsStandIns, type AwsStandIns } from "../support/aws-standins.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { leakForms } from "../support/leak-forms.js";
import type { LocalRegistry } from "../support/registry-fixture.js";
import { startRegistryPair, type RegistryPair } from "../support/registry-pair.js";
import { agentFiles } from "../support/reliability-agents.js";

const ROLE_ARN = "arn:aws:iam::123456789012:role/oca-pool";
const ASSUMED_ARN = "arn:aws:sts::123456789012:assumed-role/oca-pool/oci-cred-agent";
const REPO = "modules/network";
const TAG = "1.2.0";

let dir: string;
let h: Harness;
let pair: RegistryPair;
let registry: LocalRegistry;
let aws: AwsStandIns;
const issued: string[] = [];
let agentEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-aws-run-"));
  pair = await startRegistryPair({
    pusherPassword: "pusher-password",
    htpasswdUsers: {},
    tokenUsers: {},
    tag: TAG,
    htpasswdRepositories: [REPO],
    tokenRepositories: [],
  });
  registry = pair.registry;
  aws = await startAwsStandIns({
    assumedRoleArn: ASSUMED_ARN,
    ecrExpiresAtMs: () => Date.now(),
    onEcrPassword: async (password) => {
      issued.push(password);
      await registry.setPassword("AWS", password);
    },
  });
  h = await startControlPlane();
  const made = await h.admin("POST", "/integrations", {
    name: "ecr",
    registry_url: registry.url,
    cloud_auth: { provider: "aws", region: "eu-west-1" },
    export_credentials: true,
  });
  expect(made.status).toBe(201);
  const tokenFile = join(dir, "web-identity-token");
  await writeFile(tokenFile, "eyJ.projected-token.sig", { mode: 0o600 });
  agentEnv = {
    ...registry.trustEnv,
    HOME: dir,
    TF_CLI_CONFIG_FILE: "",
    AWS_ACCESS_KEY_ID: "",
    AWS_PROFILE: "",
    AWS_ROLE_ARN: ROLE_ARN,
    AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
    AWS_ROLE_SESSION_NAME: "oci-cred-agent",
    AWS_ENDPOINT_URL_STS: aws.url,
    AWS_ENDPOINT_URL_ECR: aws.url,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(dir, "no-aws-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-aws-credentials"),
  };
}, 120_000);

afterAll(async () => {
  await h.close();
  await aws.close();
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
    for (const form of leakForms(password, "AWS"))
      for (const text of texts) expect(text.includes(form), "a minted token leaked").toBe(false);
}

describe("an agent with a cloud_auth aws integration", () => {
  it("mints before pre-flight, renews the expired token before the next phase, pulls with it; no token in any log", async () => {
    const { lines, output, record, runId } = await runOnce(["init", "plan"]);
    const run = h.cp.store.runs.get(runId);
    expect(run?.error).toBeUndefined();
    expect(run?.status).toBe("succeeded");
    const events = lines.filter((l) => l["run_id"] === runId).map((l) => l["event"]);
    expect(events.indexOf("cloud_credentials_minted")).toBeLessThan(events.indexOf("preflight_finished"));
    expect(events.indexOf("cloud_credentials_renewed")).toBeGreaterThan(events.indexOf("phase_started"));
    expect(lines.find((l) => l["event"] === "cloud_credentials_minted")).toMatchObject({
      provider: "aws",
      identity: ROLE_ARN,
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
      ["init", "AWS", issued[0]],
      ["plan", "AWS", issued[1]],
    ]);
    expect(await registry.probe("AWS", issued[0] ?? "")).toBe(401);
    expect(phases[1]?.pulls.map((p) => p.status)).toEqual([200]);
    // Nothing the agent logged, and nothing shipped to the control plane, holds a token.
    expectNoToken([output, JSON.stringify(run?.logs ?? []), JSON.stringify(run?.events ?? [])]);
  });

  it("a refused identity fails the run before init with CLOUD_AUTH_FAILED naming aws, the role and ecr:GetAuthorizationToken", async () => {
    aws.denyEcr = ASSUMED_ARN;
    try {
      const { lines, output, record, runId } = await runOnce(["init"]);
      const run = h.cp.store.runs.get(runId);
      expect(run?.status).toBe("failed");
      expect(run?.error?.code).toBe("CLOUD_AUTH_FAILED");
      expect(run?.error?.message).toContain(
        `aws gave no registry credential for ${registry.host} to identity ${ASSUMED_ARN}`,
      );
      expect(run?.error?.message).toContain("missing permission ecr:GetAuthorizationToken");
      expect(lines.some((l) => l["run_id"] === runId && l["event"] === "phase_started")).toBe(false);
      expect(record).toBe("");
      expectNoToken([output]);
    } finally {
      aws.denyEcr = undefined;
    }
  });
});
