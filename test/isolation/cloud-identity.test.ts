/**
 * The pool's cloud identity and a run's code, on this host, in the sandbox: an agent (uid 10085,
 * through util-linux's setpriv) whose environment holds the identities of the three clouds as
 * their Kubernetes webhooks and SDKs put them (IRSA: AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE;
 * AKS workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE; Google's
 * credential file; an App Service style IDENTITY_HEADER) runs a stand-in tofu that lists the
 * variables it inherited and tries to read the identity files.
 *
 * The agent really uses one of them: a cloud_auth aws integration makes it mint the run's ECR
 * credential from the web identity token file under /etc (STS and ECR are local stand-ins,
 * test/support/aws-standins.ts, as AWS cannot run here), which the run then finds as its own
 * credential. The Google credential file is a Secret-style link (`pool.json` -> `..data/pool.json`)
 * under /etc too; the Azure token file lives in the agent's own HOME, named through a link under
 * /etc (a link that leads out of the sandbox must not stop the sandbox from starting).
 *
 * By default (run_cloud_env drop) the run inherits none of these variables, cannot open the files
 * under /etc (masked) and cannot reach the one in the agent's HOME, while the agent still
 * reads its token file (STS got its content). With --run-cloud-env pass the same stand-in sees
 * the variables and reads the files under /etc: the probes are real. Files outside the system
 * directories (the agent's HOME) stay out of the sandbox either way.
 *
 * Needs root (setpriv, chown, a directory under /etc) and bubblewrap. Run `npm run build` first.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, chown, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN, startLogged, type AgentProcess } from "../support/agent-process.js";
import { startAwsStandIns, type AwsStandIns } from "../support/aws-standins.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";

const AGENT_UID = 10085;
const PATH = process.env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin";
const ROLE_ARN = "arn:aws:iam::123456789012:role/oca-pool";
const ASSUMED_ARN = "arn:aws:sts::123456789012:assumed-role/oca-pool/oci-cred-agent";
const REGISTRY_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const MARKER = randomBytes(8).toString("hex");

/** Every variable of the pool's identity the agent is given (values carry the marker where they are secrets). */
const IDENTITY_VARIABLES = [
  "AWS_ROLE_ARN",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_ROLE_SESSION_NAME",
  "AWS_CONFIG_FILE",
  "AWS_SHARED_CREDENTIALS_FILE",
  "AZURE_CLIENT_ID",
  "AZURE_TENANT_ID",
  "AZURE_FEDERATED_TOKEN_FILE",
  "GOOGLE_APPLICATION_CREDENTIALS",
  "IDENTITY_ENDPOINT",
  "IDENTITY_HEADER",
].sort();

let base: string;
let etcDir: string;
let h: Harness;
let aws: AwsStandIns;
const started: AgentProcess[] = [];

interface Layout {
  readonly home: string;
  readonly keyFile: string;
  readonly tokenFile: string;
  readonly work: string;
  readonly tofu: string;
  /**
   * The identity files: the web identity token and Google's file (a link and its target) under
   * /etc; the Azure token in HOME, named through a link under /etc that leads there.
   */
  readonly files: {
    readonly aws: string;
    readonly gcpLink: string;
    readonly gcpTarget: string;
    readonly azureLink: string;
    readonly azure: string;
  };
}

/** An unprivileged agent's files, 0700 / 0600, and a stand-in tofu that reports what a run reaches. */
async function layout(name: string): Promise<Layout> {
  const dir = join(base, name);
  await mkdir(dir, { mode: 0o755 });
  const own = async (path: string, mode: number): Promise<void> => {
    await chmod(path, mode);
    await chown(path, AGENT_UID, AGENT_UID);
  };
  const home = join(dir, "home");
  const work = join(dir, "work");
  for (const d of [home, work]) {
    await mkdir(d);
    await own(d, 0o700);
  }
  const keyFile = join(dir, "agent.key");
  execFileSync(AGENT_BIN, ["keygen", "--key-file", keyFile], { env: { PATH }, stdio: "ignore" });
  await own(keyFile, 0o600);
  const tokenFile = join(dir, "agent.token");
  await writeFile(tokenFile, `${h.agentToken}\n`);
  await own(tokenFile, 0o600);
  const files = {
    aws: join(etcDir, name, "web-identity-token"),
    gcpLink: join(etcDir, name, "pool.json"),
    gcpTarget: join(etcDir, name, "..data", "pool.json"),
    azureLink: join(etcDir, name, "azure-identity-token"),
    azure: join(home, "azure-identity-token"),
  };
  await mkdir(join(etcDir, name, "..data"), { recursive: true, mode: 0o755 });
  await writeFile(files.aws, `eyJ.aws-${MARKER}.sig`);
  await writeFile(
    files.gcpTarget,
    JSON.stringify({ type: "service_account", client_email: "pool@p.iam.gserviceaccount.com", private_key: MARKER }),
  );
  await symlink("..data/pool.json", files.gcpLink);
  await symlink(files.azure, files.azureLink);
  await writeFile(files.azure, `eyJ.azure-${MARKER}.sig`);
  for (const f of [files.aws, files.gcpTarget, files.azure]) await own(f, 0o600);
  const tofu = join(dir, "tofu");
  await writeFile(
    tofu,
    [
      "#!/bin/sh",
      'echo "standin: phase $1"',
      "env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/standin: env \\1/p'",
      `for p in ${Object.values(files)
        .map((f) => `'${f}'`)
        .join(" ")}; do`,
      '  if v=$(cat "$p" 2>/dev/null); then',
      '    if [ -z "$v" ]; then echo "standin: read $p empty"; else echo "standin: read $p content $v"; fi',
      '  else echo "standin: read $p denied"; fi',
      "done",
      `if grep -q '${REGISTRY_HOST}' "$DOCKER_CONFIG/config.json" 2>/dev/null; then echo "standin: own-credentials ok"; else echo "standin: own-credentials missing"; fi`,
      "",
    ].join("\n"),
  );
  await chmod(tofu, 0o755);
  return { home, keyFile, tokenFile, work, tofu, files };
}

/** The agent as uid 10085 with the pool's identities in its environment; `extra` are more flags. */
function launch(l: Layout, extra: readonly string[] = []): AgentProcess {
  const agent = startLogged(
    "/usr/bin/setpriv",
    [
      `--reuid=${AGENT_UID}`,
      `--regid=${AGENT_UID}`,
      `--groups=${AGENT_UID}`,
      "--",
      AGENT_BIN,
      "run",
      "--log-format",
      "json",
      "--control-plane-url",
      h.url,
      "--token-file",
      l.tokenFile,
      "--key-file",
      l.keyFile,
      "--work-dir",
      l.work,
      "--tofu-bin",
      l.tofu,
      "--listen",
      "off",
      "--no-preflight",
      ...extra,
    ],
    {
      PATH,
      HOME: l.home,
      TF_CLI_CONFIG_FILE: "",
      // IRSA, as the EKS webhook injects it; STS and ECR are the stand-ins.
      AWS_ROLE_ARN: ROLE_ARN,
      AWS_WEB_IDENTITY_TOKEN_FILE: l.files.aws,
      AWS_ROLE_SESSION_NAME: "oci-cred-agent",
      AWS_REGION: "eu-west-1",
      AWS_ENDPOINT_URL_STS: aws.url,
      AWS_ENDPOINT_URL_ECR: aws.url,
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_CONFIG_FILE: join(l.home, "no-aws-config"),
      AWS_SHARED_CREDENTIALS_FILE: join(l.home, "no-aws-credentials"),
      // AKS workload identity, as its webhook injects it.
      AZURE_CLIENT_ID: "00000000-0000-0000-0000-0000000000c1",
      AZURE_TENANT_ID: "00000000-0000-0000-0000-0000000000t1",
      AZURE_FEDERATED_TOKEN_FILE: l.files.azureLink,
      AZURE_AUTHORITY_HOST: "https://login.microsoftonline.com/",
      // Google's credential file, and a managed identity endpoint with its secret header.
      GOOGLE_APPLICATION_CREDENTIALS: l.files.gcpLink,
      IDENTITY_ENDPOINT: "http://127.0.0.1:9/msi/token",
      IDENTITY_HEADER: `header-${MARKER}`,
    },
  );
  started.push(agent);
  return agent;
}

/** One run (init only) with the ECR integration; the stand-in's lines. */
async function runOnce(agent: AgentProcess): Promise<{ runId: string; lines: string[] }> {
  await agent.waitForLog((x) => x["event"] === "registered");
  const runId = await h.createRun({ "main.tf": "\n" }, ["init"]);
  await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
  await agent.waitForLog((x) => x["run_id"] === runId && x["event"] === "run_finished");
  const lines = agent.lines
    .filter((x) => x["run_id"] === runId && x["event"] === "phase_output")
    .map((x) => String(x["msg"]))
    .filter((m) => m.startsWith("standin: "))
    .map((m) => m.slice("standin: ".length));
  expect(h.cp.store.runs.get(runId)?.status, agent.output().slice(-4000)).toBe("succeeded");
  // The agent minted from its web identity and the run found the credential as its own.
  expect(lines, lines.join("\n")).toContain("own-credentials ok");
  return { runId, lines };
}

const inherited = (lines: readonly string[]): string[] =>
  lines
    .filter((x) => x.startsWith("env "))
    .map((x) => x.slice("env ".length))
    .filter((n) => IDENTITY_VARIABLES.includes(n))
    .sort();

const verdict = (lines: readonly string[], path: string): string | undefined =>
  lines
    .find((x) => x.startsWith(`read ${path} `))
    ?.slice(`read ${path} `.length)
    .split(" ")[0];

async function stop(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), "oca-cloud-env-"));
  await chmod(base, 0o755);
  etcDir = `/etc/oca-cloud-env-${randomBytes(6).toString("hex")}`;
  await mkdir(etcDir, { mode: 0o755 });
  aws = await startAwsStandIns({
    assumedRoleArn: ASSUMED_ARN,
    ecrExpiresAtMs: () => Date.now() + 3_600_000,
    onEcrPassword: () => Promise.resolve(),
  });
  h = await startControlPlane();
  await h.createIntegration({
    name: "ecr",
    registry_url: `https://${REGISTRY_HOST}`,
    cloud_auth: { provider: "aws", region: "eu-west-1" },
    export_credentials: true,
  });
});

afterAll(async () => {
  for (const p of started) if (p.child.exitCode === null && p.child.signalCode === null) p.kill("SIGKILL");
  await Promise.all(started.map((p) => p.exited));
  await h.close();
  await aws.close();
  await rm(etcDir, { recursive: true, force: true });
  await rm(base, { recursive: true, force: true });
});

describe("the pool's cloud identity and a run in the sandbox", () => {
  it("by default a run inherits none of its variables and reads none of its files, while the agent mints from them", async () => {
    const l = await layout("drop");
    const agent = launch(l);
    try {
      const stsBefore = aws.requests.filter((r) => r.api === "sts").length;
      const { lines } = await runOnce(agent);
      expect(inherited(lines), lines.join("\n")).toEqual([]);
      // What grants nothing still passes.
      expect(lines).toContain("env AWS_REGION");
      expect(lines).toContain("env AZURE_AUTHORITY_HOST");
      // The files under /etc are masked (the link and its target: /dev/null on a nodev mount, which
      // cannot be opened); the one in HOME is not in the sandbox at all.
      for (const f of Object.values(l.files)) expect(verdict(lines, f), lines.join("\n")).toBe("denied");
      expect(lines.join("\n")).not.toContain(MARKER);
      // Yet the agent read its web identity token: STS got it.
      const sts = aws.requests.filter((r) => r.api === "sts").slice(stsBefore);
      expect(sts.length).toBeGreaterThan(0);
      expect(new URLSearchParams(sts[0]?.body).get("WebIdentityToken")).toBe(`eyJ.aws-${MARKER}.sig`);
      // The agent said which variables it withholds (names, never values).
      const said = await agent.waitForLog((x) => x["event"] === "run_cloud_env");
      expect(said).toMatchObject({ level: "info", run_cloud_env: "drop" });
      expect(said["variables"]).toEqual(expect.arrayContaining(IDENTITY_VARIABLES));
      expect(agent.output()).not.toContain(MARKER);
      expect(await readdir(join(l.work, "workspaces"))).toEqual([]);
    } finally {
      await stop(agent);
    }
  });

  it("with --run-cloud-env pass the same run sees the variables and reads the files under /etc (the probes are real); the agent's HOME stays out", async () => {
    const l = await layout("pass");
    const agent = launch(l, ["--run-cloud-env", "pass"]);
    try {
      const { lines } = await runOnce(agent);
      expect(inherited(lines), lines.join("\n")).toEqual(IDENTITY_VARIABLES);
      expect(lines.find((x) => x.startsWith(`read ${l.files.aws} `))).toBe(
        `read ${l.files.aws} content eyJ.aws-${MARKER}.sig`,
      );
      expect(verdict(lines, l.files.gcpLink)).toBe("content");
      expect(verdict(lines, l.files.gcpTarget)).toBe("content");
      expect(verdict(lines, l.files.azureLink)).toBe("denied");
      expect(verdict(lines, l.files.azure)).toBe("denied");
      const said = await agent.waitForLog((x) => x["event"] === "run_cloud_env");
      expect(said).toMatchObject({ level: "warn", run_cloud_env: "pass" });
      expect(said["variables"]).toEqual(expect.arrayContaining(IDENTITY_VARIABLES));
    } finally {
      await stop(agent);
    }
  });
});
