/**
 * `oci-cred-agent dev` (what `npm start` runs): the whole flow on one machine in a minute, with
 * no setup. It starts the reference control plane on loopback, creates sample integrations
 * (two for one host, to show which one wins, one with export off, and one `cloud_auth` aws
 * integration for an ECR registry), starts one agent, queues a run whose configuration uses
 * `oci://` module sources, and prints a readable summary. Without `tofu` on PATH a labelled
 * stand-in shows which credential OpenTofu would use for each source and from which file. The
 * ECR credential is minted by the agent's own code from a web identity, against a labelled AWS
 * stand-in on loopback (src/app/dev-cloud-standin.ts) that the SDK reaches through its endpoint
 * overrides: no cloud account and no network. It prints no secret and leaves no credential file.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { composeAgent } from "../../app/compose-agent.js";
import { awsOverrides, startDevAwsStandIn, type DevAwsStandIn } from "../../app/dev-cloud-standin.js";
import { errnoCode } from "../../core/errors.js";
import { prepareAgent } from "../../app/prepare-agent.js";
import { loadSettings, requireSettings } from "../../config/load-run-config.js";
import { createControlPlane } from "../../control-plane/server.js";
import type { RunRecord } from "../../control-plane/store.js";
import { generatePrivateKeyPem } from "../../crypto/agent-key.js";
import { createKeyFile } from "../../fs/key-file.js";
import { findExecutable } from "../../fs/executables.js";
import { realFs } from "../../fs/secure-fs.js";
import type { TofuCommand } from "../../execution/phase-executor.js";
import { packageVersion } from "../version.js";

const execFileAsync = promisify(execFile);

/** AWS's documentation account; the registry is never reached (pre-flight is off, tofu a stand-in without it). */
const ECR_ACCOUNT = "123456789012";
const ECR_HOST = `${ECR_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com`;
const DEV_ROLE_ARN = `arn:aws:iam::${ECR_ACCOUNT}:role/oci-cred-agent-dev`;

const SAMPLE_MAIN_TF = `# A sample configuration whose modules come from private OCI registries.
module "network" {
  source = "oci://ghcr.io/acme/modules/network?tag=1.4.0"
}

module "vpc" {
  source = "oci://registry-1.docker.io/acme/vpc?tag=2.0.0"
}

module "dns" {
  source = "oci://registry.gitlab.com/acme/infra/dns?tag=0.3.0"
}

module "iam" {
  # A cloud_auth integration: the agent mints this registry's credential from its AWS identity.
  source = "oci://${ECR_HOST}/acme/modules/iam?tag=1.1.0"
}

module "legacy" {
  # OpenTofu never sends credentials for docker.io; see the summary.
  source = "oci://docker.io/acme/legacy?tag=1.0.0"
}
`;

const SAMPLE_INTEGRATIONS = [
  { name: "GHCR (old token)", registry_url: "https://ghcr.io", username: "acme-bot", export_credentials: true },
  {
    name: "GHCR (platform team)",
    registry_url: "https://ghcr.io",
    username: "acme-platform",
    export_credentials: true,
  },
  { name: "Docker Hub", registry_url: "https://registry-1.docker.io", username: "acmeinc", export_credentials: true },
  {
    name: "GitLab (export off)",
    registry_url: "https://registry.gitlab.com",
    username: "acme-deploy",
    export_credentials: false,
  },
  {
    name: "ECR (cloud_auth aws)",
    registry_url: `https://${ECR_HOST}`,
    cloud_auth: { provider: "aws", region: "eu-west-1" },
    export_credentials: true,
  },
];

function setEnv(name: string, value: string | undefined): void {
  if (value === undefined) Reflect.deleteProperty(process.env, name);
  else process.env[name] = value;
}

/**
 * The directory the package's dependencies are installed in (the stand-in imports them): the
 * package's own node_modules, a hoisted one above it, or where a symbolic link points.
 */
function dependenciesDir(): string {
  return dirname(dirname(fileURLToPath(import.meta.resolve("commander"))));
}

async function tarGz(dir: string): Promise<Buffer> {
  const { stdout } = await execFileAsync("tar", ["czf", "-", "-C", dir, "."], {
    encoding: "buffer",
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

async function filesUnder(root: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true, recursive: true });
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return [];
    throw error;
  }
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

function waitForEnd(
  store: { on(e: string, f: (r: RunRecord) => void): unknown; off(e: string, f: (r: RunRecord) => void): unknown },
  runId: string,
): Promise<RunRecord> {
  return new Promise((resolveRun) => {
    const onChange = (run: RunRecord): void => {
      if (run.id === runId && (run.status === "succeeded" || run.status === "failed" || run.status === "canceled")) {
        store.off("run-changed", onChange);
        resolveRun(run);
      }
    };
    store.on("run-changed", onChange);
  });
}

export async function dev(opts: { workDir?: string; logLevel: string; offline?: boolean }): Promise<number> {
  const out = (text: string): void => {
    process.stdout.write(`${text}\n`);
  };
  const ownWorkDir = opts.workDir === undefined;
  const workDir = resolve(opts.workDir ?? (await mkdtemp(join(tmpdir(), "oci-cred-agent-dev-"))));
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const secretsDir = await mkdtemp(join(tmpdir(), "oci-cred-agent-dev-keys-"));
  const adminToken = randomBytes(24).toString("base64url");
  const agentToken = randomBytes(24).toString("base64url");
  const cp = await createControlPlane({
    adminToken,
    agentToken,
    agentApi: { heartbeatIntervalSeconds: 2, pollWaitSeconds: 30 },
    ...(opts.offline === true ? { probe: () => Promise.resolve({ warnings: ["not probed (--offline)"] }) } : {}),
  });
  const { url } = await cp.listen("127.0.0.1", 0);
  out(`oci-cred-agent dev: reference control plane at ${url} (admin API ${url}/api/admin/v1)`);

  const admin = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${url}/api/admin/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return (await res.json()) as Record<string, unknown>;
  };

  let awsStandIn: DevAwsStandIn | undefined;
  const savedEnv = new Map<string, string | undefined>();
  try {
    out("\nSample integrations (passwords are random and never shown; the cloud_auth one has none):");
    for (const sample of SAMPLE_INTEGRATIONS) {
      const created = await admin("POST", "/integrations", {
        ...sample,
        ...("username" in sample ? { password: `sample-${randomBytes(12).toString("hex")}` } : {}),
      });
      const warnings = Array.isArray(created["warnings"]) ? (created["warnings"] as string[]) : [];
      out(
        `  ${String(created["id"])}  ${sample.name.padEnd(22)} ${sample.registry_url.padEnd(52)} export ${sample.export_credentials ? "on " : "off"}${warnings.length > 0 ? `  (${warnings.join("; ")})` : ""}`,
      );
      // Distinct updated_at values, so the later GHCR integration wins deterministically.
      await new Promise((r) => setTimeout(r, 5));
    }

    // The agent's AWS identity for the tour: a web identity (as IRSA gives a pod) whose STS and
    // ECR are a labelled stand-in on loopback. The SDK reads the agent's own environment.
    const webIdentityToken = `dev-web-identity.${randomBytes(24).toString("base64url")}`;
    awsStandIn = await startDevAwsStandIn({ webIdentityToken, accountId: ECR_ACCOUNT });
    const webIdentityTokenFile = join(secretsDir, "aws-web-identity-token");
    await writeFile(webIdentityTokenFile, webIdentityToken, { mode: 0o600 });
    const overrides = awsOverrides(
      awsStandIn,
      { webIdentityTokenFile, absentFile: join(secretsDir, "no-aws-config") },
      DEV_ROLE_ARN,
    );
    for (const [name, value] of Object.entries(overrides)) {
      savedEnv.set(name, process.env[name]);
      setEnv(name, value);
    }
    out(
      `\nAWS identity: web identity for ${DEV_ROLE_ARN}; STS and ECR are a stand-in at ${awsStandIn.url} (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL_ECR).`,
    );

    const keyFile = join(secretsDir, "agent.key");
    await createKeyFile(realFs, keyFile, generatePrivateKeyPem());
    const tokenFile = join(secretsDir, "agent.token");
    await writeFile(tokenFile, agentToken, { mode: 0o600 });

    const realTofu = await findExecutable("tofu");
    const mainJs = fileURLToPath(new URL("../main.js", import.meta.url));
    const tofu: TofuCommand = realTofu
      ? { file: realTofu, argsPrefix: [] }
      : // The stand-in is this package run by this node: the sandbox shows both, read-only.
        {
          file: process.execPath,
          argsPrefix: [mainJs, "tofu-standin"],
          needs: [process.execPath, fileURLToPath(new URL("../../../", import.meta.url)), dependenciesDir()],
        };
    out(
      realTofu
        ? `\nUsing OpenTofu at ${realTofu}.`
        : "\nNo tofu on PATH: phases run a labelled stand-in that shows what OpenTofu would resolve.",
    );

    const logSink = { write: (text: string) => process.stderr.write(text) };
    // The same settings pipeline as `run`: defaults come from the schema, not from a copy here.
    const loaded = await loadSettings(
      {
        control_plane_url: url,
        token_file: tokenFile,
        key_file: keyFile,
        work_dir: workDir,
        concurrency: "1",
        drain_timeout: "30s",
        run_timeout: "10m",
        max_config_bytes: "64MiB",
        name: "dev-agent",
        // The sample passwords are made up: a pre-flight check would (rightly) stop the run.
        preflight: false,
        log_level: opts.logLevel,
        log_format: "pretty",
        listen: "off",
      },
      {},
    );
    const prepared = await prepareAgent(requireSettings(loaded), realFs, process.env);
    const agent = await composeAgent(prepared, { version: packageVersion(), env: process.env, sink: logSink, tofu });
    const { daemon } = agent;
    const daemonDone = agent.run();

    const configDir = join(secretsDir, "configuration");
    await mkdir(configDir);
    await writeFile(join(configDir, "main.tf"), SAMPLE_MAIN_TF);
    const archive = await tarGz(configDir);
    const ended = new Map<string, RunRecord>();
    const onChange = (r: RunRecord): void => {
      if (r.status === "succeeded" || r.status === "failed" || r.status === "canceled") ended.set(r.id, r);
    };
    cp.store.on("run-changed", onChange);
    const created = await admin("POST", "/runs", {
      configuration_tar_gz_base64: archive.toString("base64"),
      phases: ["init", "plan", "apply"],
    });
    const runId = String(created["id"]);
    out(`\nQueued run ${runId} (init, plan, apply). The agent's log follows on stderr.\n`);
    const finished = ended.get(runId) ?? waitForEnd(cp.store, runId);
    cp.store.off("run-changed", onChange);
    const run = await finished;
    daemon.requestShutdown();
    const exit = await daemonDone;

    out(
      `\nSummary of run ${run.id}: ${run.status.toUpperCase()}${run.error ? ` (${run.error.code}: ${run.error.message})` : ""}`,
    );
    const written = run.events.find((e) => e.type === "credentials_written");
    const registries = Array.isArray(written?.["registries"])
      ? (written["registries"] as { host: string; integration_id: string; integration_name: string | null }[])
      : [];
    out("  Credentials written for the run (one per registry):");
    for (const r of registries)
      out(`    ${r.host.padEnd(45)} <- ${r.integration_id} (${r.integration_name ?? "unnamed"})`);
    out("  Integrations left out:");
    for (const e of run.events.filter((x) => x.type === "integration_left_out")) {
      out(
        `    ${String(e["integration_id"])} (${String(e["integration_name"])}): ${String(e["code"])}, ${String(e["reason"])}`,
      );
    }
    out("  Cloud credentials minted by the agent (from the AWS stand-in; the password is never shown):");
    out(
      `    ${ECR_HOST}: STS assumed ${awsStandIn.assumedRoles.join(", ") || "no role"} for the web identity; ECR issued ${awsStandIn.ecrTokens} token(s) to requests signed with the key STS issued`,
    );
    out("  What OpenTofu would use at init, per module source:");
    const initLog = run.logs
      .filter((l) => l.phase === "init")
      .map((l) => l.text)
      .join("");
    for (const line of initLog.split("\n").filter((l) => l.includes("oci://"))) out(`    ${line}`);
    const leftovers =
      (await filesUnder(join(workDir, "credentials"))).length + (await filesUnder(join(workDir, "workspaces"))).length;
    out(`  Files left under ${workDir}: ${leftovers} (credentials are wiped after apply and on every other ending)`);
    if (exit.code !== 0) out(`  The agent stopped with ${exit.error.code}: ${exit.error.message}`);
    return exit.code === 0 && leftovers === 0 ? 0 : 1;
  } finally {
    for (const [name, value] of savedEnv) setEnv(name, value);
    await awsStandIn?.close();
    await cp.close();
    await rm(secretsDir, { recursive: true, force: true });
    if (ownWorkDir) await rm(workDir, { recursive: true, force: true });
  }
}
