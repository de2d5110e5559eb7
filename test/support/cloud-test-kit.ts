/**
 * What the cloud_auth tests (test/cloud/) share: the real registry holding one module package,
 * a run's RunCredentials opened from a bundle sealed with one cloud entry, writing (or failing to
 * write) the run's files, the pull checks with skopeo and OpenTofu's lookup
 * (src/core/opentofu-resolver.ts), and the real-agent run harness with its checks on a mint, a
 * renewal and a refused identity.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Dispatcher } from "undici";
import { expect } from "vitest";
import { isAgentError, type AgentError } from "../../src/core/errors.js";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";
import { ReplayCache } from "../../src/core/replay-cache.js";
import { generatePrivateKeyPem, parsePrivateKeyPem, type AgentPrivateKey } from "../../src/crypto/agent-key.js";
import { sealBundle } from "../../src/crypto/sealed-bundle.js";
import { prepareOperatorConfig } from "../../src/credentials/operator-config.js";
import { RunCredentials, type WrittenCredentials } from "../../src/credentials/run-credentials.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { PREFLIGHT_LIMITS, PreflightChecker } from "../../src/registry/preflight.js";
import { FAKE_TOFU, startAgent, type LogLine } from "./agent-process.js";
import { startControlPlane, type Harness } from "./control-plane-harness.js";
import { leakForms } from "./leak-forms.js";
import type { LocalRegistry } from "./registry-fixture.js";
import { startRegistryPair, type RegistryPair } from "./registry-pair.js";
import { agentFiles } from "./reliability-agents.js";

const execFileAsync = promisify(execFile);

const REPO = "modules/network";
const TAG = "1.2.0";

/** A real registry (htpasswd) whose repository REPO holds a module package tagged TAG. */
export function startModuleRegistry(): Promise<RegistryPair> {
  return startRegistryPair({
    pusherPassword: "pusher-password",
    htpasswdUsers: {},
    tokenUsers: {},
    tag: TAG,
    htpasswdRepositories: [REPO],
    tokenRepositories: [],
  });
}

export function newAgentKey(): Promise<AgentPrivateKey> {
  return parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
}

/** A run's credentials, opened from a bundle sealed to `key` with the one registry entry given. */
export async function openCloudRun(
  key: AgentPrivateKey,
  agentId: string,
  runId: string,
  entry: { id: string; url: string; cloud_auth: Record<string, unknown> },
): Promise<RunCredentials> {
  const bundle = await sealBundle({
    recipient: { kid: key.kid, publicKey: key.publicKey },
    agentId,
    runId,
    plaintext: Buffer.from(JSON.stringify({ version: 1, registries: [entry] })),
    issuedAtMs: Date.now(),
    ttlSeconds: 600,
  });
  return RunCredentials.open({
    bundle: Buffer.from(bundle),
    keys: new Map([[key.kid, key]]),
    agentId,
    runId,
    nowMs: Date.now(),
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 120,
    replayCache: new ReplayCache(),
    onWipe: () => undefined,
  });
}

/** Writes the run's files under `runDir`, as the agent does before init. */
export function writeRun(credentials: RunCredentials, runDir: string): Promise<WrittenCredentials> {
  return credentials.write({ runDir, fs: realFs, operator: prepareOperatorConfig({ tofuCliConfigSources: [] }) });
}

/** Writing the run's files is refused, and nothing is left at `runDir`. */
export async function expectNothingWritten(credentials: RunCredentials, runDir: string): Promise<void> {
  await expect(writeRun(credentials, runDir)).rejects.toMatchObject({ code: "INTERNAL" });
  await expect(realFs.lstat(runDir)).rejects.toMatchObject({ code: "ENOENT" });
}

/** The CLOUD_AUTH_FAILED error `pending` rejects with (anything else throws). */
export async function cloudAuthFailure(pending: Promise<unknown>): Promise<AgentError> {
  const error: unknown = await pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isAgentError(error, "CLOUD_AUTH_FAILED")) throw new Error(`expected CLOUD_AUTH_FAILED, got ${String(error)}`);
  return error;
}

/** Pre-flight as the agent runs it, uncached, through `dispatcher`, passes for REPO at `host`. */
export async function expectPreflightOk(
  credentials: RunCredentials,
  dispatcher: Dispatcher,
  host: string,
  signal: AbortSignal,
): Promise<void> {
  const checker = new PreflightChecker({ cacheMs: 0, ...PREFLIGHT_LIMITS, now: () => Date.now(), dispatcher });
  const outcomes = await credentials.check(checker, new Map([[host, [REPO]]]), signal);
  expect(outcomes.map((o) => o.result)).toEqual(["ok"]);
}

export interface PullChecks {
  /** `skopeo inspect --raw` of REPO:TAG reading exactly the run's REGISTRY_AUTH_FILE. */
  skopeoInspect: (env: Readonly<Record<string, string>>) => Promise<{ ok: boolean; text: string }>;
  /** What OpenTofu's lookup resolves for REPO:TAG with the run's environment (a static credential). */
  tofuResolves: (env: Readonly<Record<string, string>>) => {
    username: string | undefined;
    password: string | undefined;
  };
  /**
   * The run's docker config holds an ordinary auth entry (never identitytoken) for `user` and
   * `password`, which OpenTofu's lookup resolves and with which skopeo pulls the module package.
   */
  expectWrittenAndPulled: (written: WrittenCredentials, user: string, password: string | undefined) => Promise<void>;
}

/** Pulls from `host` (whose CA is in `certDir`) with a run's files, HOME being `home`. */
export function pullChecks(host: () => string, certDir: () => string, home: () => string): PullChecks {
  const checks: PullChecks = {
    skopeoInspect: async (env) => {
      try {
        const { stdout } = await execFileAsync(
          "skopeo",
          ["inspect", "--raw", "--cert-dir", certDir(), `docker://${host()}/${REPO}:${TAG}`],
          {
            env: {
              PATH: process.env["PATH"] ?? "/usr/bin:/bin",
              HOME: home(),
              REGISTRY_AUTH_FILE: env["REGISTRY_AUTH_FILE"] ?? "",
            },
            encoding: "utf8",
          },
        );
        return { ok: true, text: stdout };
      } catch (error) {
        return { ok: false, text: (error as { stderr?: string }).stderr ?? String(error) };
      }
    },
    tofuResolves: (env) => {
      const r = resolveOpenTofuCredential(`oci://${host()}/${REPO}?tag=${TAG}`, { ...env, HOME: home() }, (path) => {
        try {
          return readFileSync(path, "utf8");
        } catch {
          return undefined;
        }
      });
      expect(r.source).toBe("static");
      return { username: r.username, password: r.password };
    },
    expectWrittenAndPulled: async (written, user, password) => {
      const dockerConfig = readFileSync(join(written.runDir, "docker", "config.json"), "utf8");
      expect(dockerConfig).not.toContain("identitytoken");
      expect(JSON.parse(dockerConfig)).toEqual({
        auths: { [host()]: { auth: Buffer.from(`${user}:${password ?? ""}`).toString("base64") } },
      });
      expect(checks.tofuResolves(written.env)).toEqual({ username: user, password });
      const pulled = await checks.skopeoInspect(written.env);
      expect(pulled.text).toContain("application/vnd.opentofu.modulepkg");
      expect(pulled.ok).toBe(true);
    },
  };
  return checks;
}

/**
 * The pool's AWS web identity (as IRSA gives it to a pod), STS and ECR at the stand-ins'
 * `endpoint`, and no instance metadata, config or shared credentials file (under `dir`).
 */
export function awsWebIdentityEnv(
  roleArn: string,
  tokenFile: string,
  endpoint: string,
  dir: string,
): NodeJS.ProcessEnv {
  return {
    AWS_ROLE_ARN: roleArn,
    AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
    AWS_ROLE_SESSION_NAME: "oci-cred-agent",
    AWS_ENDPOINT_URL_STS: endpoint,
    AWS_ENDPOINT_URL_ECR: endpoint,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: join(dir, "no-aws-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "no-aws-credentials"),
  };
}

/** A real agent process's view of cloud_auth: a control plane with one integration, the registry. */
export interface CloudAgentBed {
  dir: string;
  h: Harness;
  registry: LocalRegistry;
  /** The agent's environment besides the registry's trust (set by the test once its stand-ins run). */
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

interface CloudAgentRun {
  lines: LogLine[];
  output: string;
  record: string;
  runId: string;
}

export async function startCloudAgentBed(prefix: string, integration: Record<string, unknown>): Promise<CloudAgentBed> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const pair = await startModuleRegistry();
  const h = await startControlPlane();
  const made = await h.admin("POST", "/integrations", {
    ...integration,
    registry_url: pair.registry.url,
    export_credentials: true,
  });
  expect(made.status).toBe(201);
  return {
    dir,
    h,
    registry: pair.registry,
    env: {},
    async close() {
      await h.close();
      await pair.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The command line of an agent that leases from `url` and runs the stand-in tofu (FAKE_TOFU). */
export function fakeTofuAgentArgs(o: {
  url: string;
  tokenFile: string;
  keyFile: string;
  workDir: string;
  listen: string;
}): string[] {
  return [
    "--control-plane-url",
    o.url,
    "--token-file",
    o.tokenFile,
    "--key-file",
    o.keyFile,
    "--work-dir",
    o.workDir,
    "--tofu-bin",
    FAKE_TOFU,
    "--listen",
    o.listen,
  ];
}

/** One agent process leases one run of `phases` pulling REPO:TAG, then stops. */
async function runCloudAgent(bed: CloudAgentBed, phases: string[]): Promise<CloudAgentRun> {
  const { dir, h, registry } = bed;
  const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
  const workDir = await mkdtemp(join(dir, "work-"));
  const recordFile = join(dir, `${workDir.split("/").pop() ?? "w"}.jsonl`);
  const agent = startAgent(
    [
      ...fakeTofuAgentArgs({ url: h.url, tokenFile, keyFile, workDir, listen: "off" }),
      "--isolation",
      "none",
      // The registry is a local stand-in, not the cloud's own: the operator trusts it.
      "--cloud-auth-host",
      registry.host,
    ],
    { ...registry.trustEnv, HOME: dir, TF_CLI_CONFIG_FILE: "", ...bed.env, FAKE_TOFU_RECORD: recordFile },
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

/** No form of any minted token (user `user`) is in any of `texts`. */
function expectNoMintedToken(issued: readonly string[], user: string, texts: readonly string[]): void {
  for (const password of issued)
    for (const form of leakForms(password, user))
      for (const text of texts) expect(text.includes(form), "a minted token leaked").toBe(false);
}

/**
 * A run of init and plan with tokens that expire at once: minted before pre-flight, renewed
 * before plan, each phase resolving its own token (user `user`), plan pulling with the new one
 * after the first was revoked; no token in the output or in what reached the control plane.
 */
export async function expectMintedAndRenewed(
  bed: CloudAgentBed,
  expected: { provider: string; identity: string; user: string; issued: readonly string[] },
): Promise<void> {
  const { h, registry } = bed;
  const { provider, identity, user, issued } = expected;
  const { lines, output, record, runId } = await runCloudAgent(bed, ["init", "plan"]);
  const run = h.cp.store.runs.get(runId);
  expect(run?.error).toBeUndefined();
  expect(run?.status).toBe("succeeded");
  const events = lines.filter((l) => l["run_id"] === runId).map((l) => l["event"]);
  expect(events.indexOf("cloud_credentials_minted")).toBeLessThan(events.indexOf("preflight_finished"));
  expect(events.indexOf("cloud_credentials_renewed")).toBeGreaterThan(events.indexOf("phase_started"));
  expect(lines.find((l) => l["event"] === "cloud_credentials_minted")).toMatchObject({
    provider,
    identity,
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
    ["init", user, issued[0]],
    ["plan", user, issued[1]],
  ]);
  expect(await registry.probe(user, issued[0] ?? "")).toBe(401);
  expect(phases[1]?.pulls.map((p) => p.status)).toEqual([200]);
  // Nothing the agent logged, and nothing shipped to the control plane, holds a token.
  expectNoMintedToken(issued, user, [output, JSON.stringify(run?.logs ?? []), JSON.stringify(run?.events ?? [])]);
}

/**
 * A run of init whose identity is refused: failed with CLOUD_AUTH_FAILED before any phase
 * started, tofu never ran, no token in the output. Returns the error's message.
 */
export async function refusedBeforeInit(
  bed: CloudAgentBed,
  issued: readonly string[],
  user: string,
): Promise<string | undefined> {
  const { lines, output, record, runId } = await runCloudAgent(bed, ["init"]);
  const run = bed.h.cp.store.runs.get(runId);
  expect(run?.status).toBe("failed");
  expect(run?.error?.code).toBe("CLOUD_AUTH_FAILED");
  expect(lines.some((l) => l["run_id"] === runId && l["event"] === "phase_started")).toBe(false);
  expect(record).toBe("");
  expectNoMintedToken(issued, user, [output]);
  return run?.error?.message;
}
