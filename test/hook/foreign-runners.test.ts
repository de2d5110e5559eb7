/**
 * Sidecar mode end to end, with stand-in foreign runners (test/fixtures/foreign-runners/: one
 * script per vendor convention, calling the recipes' hooks in that vendor's order around a
 * stand-in tofu) against the real `oci-cred-agent sidecar`, a real control plane on 127.0.0.1
 * and a real registry (docker-registry, TLS, htpasswd) holding an OpenTofu module package:
 *
 * - in every phase the credentials are found: a real pull with skopeo (through
 *   REGISTRY_AUTH_FILE, or the HOME link where the runner passes no variables), and OpenTofu's
 *   lookup (src/core/opentofu-resolver.ts, through TF_CLI_CONFIG_FILE or the HOME link) with
 *   OpenTofu's pull of the module package;
 * - nothing remains after each post hook (the sidecar's files, the HOME link);
 * - a forged token or run id is refused before init, with nothing written;
 * - plan and apply in different "pods": separate processes with separate HOMEs;
 * - a phase that ends without its post hook (a cancel at the control plane, a pre hook that
 *   fails after the sidecar wrote) leaves nothing readable in the HOME.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";
import { AGENT_BIN, FAKE_TOFU, startLogged, type AgentProcess } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { runHook } from "../support/hook-cli.js";
import { buildModulePackage, pushModulePackage, type ModulePackage } from "../support/oci-module-package.js";
import { agentFiles } from "../support/reliability-agents.js";
import { startHtpasswdRegistry, type LocalRegistry } from "../support/registry-fixture.js";

const RUNNERS = fileURLToPath(new URL("../fixtures/foreign-runners/", import.meta.url));
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const PASSWORD = `CANARY-${randomBytes(9).toString("base64url")}:x'$"`;
const PUSHER = `pusher-${randomBytes(6).toString("hex")}`;
const REPO = "modules/network";
const TAG = "1.4.0";

let dir: string;
let registry: LocalRegistry;
let pkg: ModulePackage;
let h: Harness;
let sidecar: AgentProcess;
let socket: string;
let credentialsDir: string;
let binDir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-foreign-"));
  registry = await startHtpasswdRegistry({ pusher: PUSHER, alice: PASSWORD });
  pkg = await buildModulePackage({ layoutDir: join(dir, "modpkg"), tag: TAG });
  await pushModulePackage(pkg, {
    host: registry.host,
    repository: REPO,
    certDir: registry.certDir,
    username: "pusher",
    password: PUSHER,
  });
  h = await startControlPlane();
  await h.createIntegration({
    name: "local registry",
    registry_url: registry.url,
    username: "alice",
    password: PASSWORD,
    export_credentials: true,
  });
  const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
  const workDir = join(dir, "work");
  credentialsDir = join(dir, "credentials");
  await mkdir(workDir, { mode: 0o700 });
  socket = join(dir, "sidecar.sock");
  sidecar = startLogged(
    AGENT_BIN,
    [
      "sidecar",
      "--log-format",
      "json",
      "--control-plane-url",
      h.url,
      "--token-file",
      tokenFile,
      "--key-file",
      keyFile,
      "--work-dir",
      workDir,
      "--credentials-dir",
      credentialsDir,
      "--socket",
      socket,
      "--listen",
      "off",
      "--lease-wait",
      "3s",
      // Runs whose runner never calls post-run (Scalr, HCP) stay leased until they end.
      "--concurrency",
      "16",
    ],
    { HOME: dir, NODE_EXTRA_CA_CERTS: registry.caFile, TF_CLI_CONFIG_FILE: "" },
  );
  await sidecar.waitForLog((l) => l["event"] === "registered");
  await sidecar.waitForLog((l) => l["event"] === "socket_listening");
  // What a runner's PATH holds: oci-cred-agent and tofu (the stand-in).
  binDir = join(dir, "bin");
  await mkdir(binDir);
  await symlink(AGENT_BIN, join(binDir, "oci-cred-agent"));
  await symlink(join(RUNNERS, "tofu"), join(binDir, "tofu"));
}, 120_000);

afterAll(async () => {
  sidecar.kill("SIGTERM");
  await sidecar.exited;
  await h.close();
  await registry.stop();
  await rm(dir, { recursive: true, force: true });
});

interface ExternalRun {
  readonly id: string;
  readonly run_token: string;
}

async function externalRun(): Promise<ExternalRun> {
  const res = await h.admin("POST", "/runs", { executor: "external", phases: ["init", "plan", "apply"] });
  expect(res.status).toBe(201);
  return res.json as ExternalRun;
}

interface TofuRecord {
  phase: string;
  env: Record<string, string | undefined>;
  resolutions: { resolved: { username: string; password: string; file: string } | null; error: string | null }[];
  pulls: { status: number; verified?: boolean }[];
}

interface VendorRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly records: TofuRecord[];
  /** Lines of the stand-in's log: "tofu PHASE started", "skopeo VIA ok", "leftovers LABEL: PATHS". */
  readonly log: string[];
  readonly homes: string;
}

async function runVendor(
  script: string,
  run: { id: string; token: string },
  env: Record<string, string> = {},
): Promise<VendorRun> {
  const base = await mkdtemp(join(dir, `${script.replace(/\W/g, "")}-`));
  const workspace = join(base, "workspace");
  const homes = join(base, "homes");
  await mkdir(workspace);
  await mkdir(homes);
  await writeFile(
    join(workspace, "main.tf"),
    `module "network" {\n  source = "oci://${registry.host}/${REPO}?tag=${TAG}"\n}\n`,
  );
  await writeFile(join(workspace, "fake-tofu.json"), JSON.stringify({ pull: "init" }));
  const record = join(base, "tofu.jsonl");
  const log = join(base, "standin.log");
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      script.startsWith("/") ? script : join(RUNNERS, script),
      [],
      {
        env: {
          PATH: `${binDir}:${process.env["PATH"] ?? "/usr/bin:/bin"}`,
          HOME: homes,
          OCI_CRED_AGENT_SOCKET: socket,
          OCI_CRED_AGENT_RUN_TOKEN: run.token,
          STANDIN_RUN_ID: run.id,
          STANDIN_HOMES: homes,
          STANDIN_LOG: log,
          STANDIN_CREDENTIALS_DIR: credentialsDir,
          STANDIN_CERT_DIR: registry.certDir,
          STANDIN_IMAGE: `${registry.host}/${REPO}:${TAG}`,
          FAKE_TOFU,
          FAKE_TOFU_RECORD: record,
          NODE_EXTRA_CA_CERTS: registry.caFile,
          WORKSPACE: workspace,
          TOFU: "tofu",
          ...env,
        },
        encoding: "utf8",
      },
      (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }),
    );
  });
  const text = async (p: string): Promise<string> => readFile(p, "utf8").catch(() => "");
  return {
    ...result,
    records: (await text(record))
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TofuRecord),
    log: (await text(log)).split("\n").filter(Boolean),
    homes,
  };
}

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  // (the sidecar's lock, <credentials-dir>/sidecar/.lock, is a socket: no credential)
  return entries.filter((e) => !e.isDirectory() && !e.isSocket()).map((e) => join(e.parentPath, e.name));
}

/** Every phase found alice's credential, from `file`; init pulled the real package with it; nothing was left after a post hook. */
function expectCredentialsInEveryPhase(
  r: VendorRun,
  phases: readonly string[],
  skopeoVia: "REGISTRY_AUTH_FILE" | "HOME",
  file: (record: TofuRecord) => string,
): void {
  expect(r.code, r.stderr).toBe(0);
  expect(r.records.map((x) => x.phase)).toEqual(phases);
  for (const rec of r.records) {
    expect(rec.resolutions).toHaveLength(1);
    expect(rec.resolutions[0]?.resolved, `${rec.phase}: ${String(rec.resolutions[0]?.error)}`).toMatchObject({
      username: "alice",
      password: PASSWORD,
      file: file(rec),
    });
    if (rec.phase === "init") expect(rec.pulls).toEqual([expect.objectContaining({ status: 200, verified: true })]);
  }
  const inits = phases.filter((p) => p === "init").length;
  expect(r.log.filter((l) => l.startsWith("skopeo"))).toEqual(Array(inits).fill(`skopeo ${skopeoVia} ok`));
  const leftovers = r.log.filter((l) => l.startsWith("leftovers"));
  expect(leftovers.length).toBeGreaterThan(0);
  for (const l of leftovers) expect(l).toMatch(/^leftovers [\w-]+: $/);
  expect(r.stdout + r.stderr).not.toContain(PASSWORD);
}

describe("foreign runners against the real sidecar", () => {
  it("Scalr-style agent hooks: pre-init, pre-plan/post-plan, pre-init, pre-apply/post-apply; OpenTofu reads the HOME link", async () => {
    const run = await externalRun();
    const r = await runVendor(
      "scalr.sh",
      { id: run.id, token: run.run_token },
      { HOOKS_DIR: join(DEPLOY, "hooks/scalr") },
    );
    // Scalr passes no variables to tofu: OpenTofu's ambient search finds $HOME/.docker/config.json (the link) of each operation.
    expectCredentialsInEveryPhase(r, ["init", "plan", "init", "apply"], "HOME", (rec) => {
      expect(rec.env["TF_CLI_CONFIG_FILE"]).toBeUndefined();
      return join(
        r.homes,
        rec.phase === "plan" || r.records.indexOf(rec) < 2 ? "plan" : "apply",
        ".docker/config.json",
      );
    });
    expect(await filesUnder(credentialsDir)).toEqual([]);
    expect(await filesUnder(r.homes)).toEqual([]);
  });

  it("HCP-style agent hooks: terraform-pre-plan before init, TFC_AGENT_ENV, a HOME per operation", async () => {
    const run = await externalRun();
    const r = await runVendor("hcp.sh", { id: run.id, token: run.run_token }, { HOOKS_DIR: join(DEPLOY, "hooks/hcp") });
    expectCredentialsInEveryPhase(r, ["init", "plan", "init", "apply"], "REGISTRY_AUTH_FILE", (rec) => {
      // TF_CLI_CONFIG_FILE (from $TFC_AGENT_ENV) names the run's file, which OpenTofu then reads alone.
      expect(rec.env["TF_CLI_CONFIG_FILE"]?.startsWith(credentialsDir)).toBe(true);
      return `${rec.env["DOCKER_CONFIG"] ?? ""}/config.json`;
    });
    expect(await filesUnder(credentialsDir)).toEqual([]);
    // The agent-env files were the runner's; nothing of the hook's remains in the HOMEs.
    expect(await filesUnder(r.homes)).toEqual([]);
  });

  it("Spacelift-style before_init / after_plan / after_apply / after_run from deploy/spacelift/config.yml, plan and apply in separate processes", async () => {
    const doc = parse(await readFile(join(DEPLOY, "spacelift/config.yml"), "utf8")) as {
      stack_defaults: Record<"before_init" | "after_plan" | "after_apply" | "after_run", string[]>;
    };
    const hooks = doc.stack_defaults;
    const run = await externalRun();
    const r = await runVendor(
      "spacelift.sh",
      { id: run.id, token: run.run_token },
      {
        SPACELIFT_BEFORE_INIT: hooks.before_init.join("\n"),
        SPACELIFT_AFTER_PLAN: hooks.after_plan.join("\n"),
        SPACELIFT_AFTER_APPLY: hooks.after_apply.join("\n"),
        SPACELIFT_AFTER_RUN: hooks.after_run.join("\n"),
      },
    );
    expectCredentialsInEveryPhase(
      r,
      ["init", "plan", "init", "apply"],
      "REGISTRY_AUTH_FILE",
      (rec) => `${rec.env["DOCKER_CONFIG"] ?? ""}/config.json`,
    );
    expect(await filesUnder(credentialsDir)).toEqual([]);
  });

  it("Atlantis run steps from deploy/atlantis/repos.yaml", async () => {
    const doc = parse(await readFile(join(DEPLOY, "atlantis/repos.yaml"), "utf8")) as {
      workflows: Record<string, Record<"plan" | "apply", { steps: { run: string }[] }>>;
    };
    const wf = doc.workflows["oci-cred-agent"];
    const run = await externalRun();
    const r = await runVendor(
      "atlantis.sh",
      { id: run.id, token: run.run_token },
      { ATLANTIS_PLAN_STEP: wf?.plan.steps[0]?.run ?? "", ATLANTIS_APPLY_STEP: wf?.apply.steps[0]?.run ?? "" },
    );
    expectCredentialsInEveryPhase(
      r,
      ["init", "plan", "init", "apply"],
      "REGISTRY_AUTH_FILE",
      (rec) => `${rec.env["DOCKER_CONFIG"] ?? ""}/config.json`,
    );
    expect(await filesUnder(credentialsDir)).toEqual([]);
  });

  it("Kubernetes: the runner container's script of deploy/kubernetes/sidecar/, plan and apply in two pods (processes, HOMEs)", async () => {
    const cm = parse(await readFile(join(DEPLOY, "kubernetes/sidecar/runner-script.yaml"), "utf8")) as {
      data: Record<string, string>;
    };
    const original = cm.data["run-stage.sh"] ?? "";
    const tokenPath = "/var/run/secrets/oci-cred-agent/run/run-token";
    expect(original).toContain(tokenPath);
    const run = await externalRun();
    // The run token Secret's file, moved to a test directory: the only change to the script.
    const secretDir = await mkdtemp(join(dir, "run-secret-"));
    await writeFile(join(secretDir, "run-token"), `${run.run_token}\n`, { mode: 0o400 });
    const script = join(secretDir, "run-stage.sh");
    await writeFile(script, original.replaceAll(tokenPath, join(secretDir, "run-token")));
    await chmod(script, 0o755);
    const pod = join(secretDir, "pod.sh");
    // Each "pod": its own HOME, the downward API's variables, no run token in the environment.
    await writeFile(
      pod,
      `#!/bin/sh\nset -u\n. "${join(RUNNERS, "lib.sh")}"\nunset OCI_CRED_AGENT_RUN_TOKEN\nfor stage in plan apply; do\n  HOME="$STANDIN_HOMES/$stage"; mkdir -p "$HOME"; export HOME\n  (cd "$WORKSPACE" && OCA_RUN_ID="$STANDIN_RUN_ID" OCA_PHASE=$stage sh "${script}") || exit 1\n  leftovers "post-$stage"\ndone\n`,
    );
    await chmod(pod, 0o755);
    const r = await runVendor(pod, { id: run.id, token: "" });
    expectCredentialsInEveryPhase(
      r,
      ["init", "plan", "init", "apply"],
      "REGISTRY_AUTH_FILE",
      (rec) => `${rec.env["DOCKER_CONFIG"] ?? ""}/config.json`,
    );
    expect(await filesUnder(credentialsDir)).toEqual([]);
  });
});

describe("refusals before init", () => {
  it("another run's token, a forged token, a forged run id: the hook fails, tofu never starts, nothing is written", async () => {
    const a = await externalRun();
    const b = await externalRun();
    for (const [label, id, token, code] of [
      ["another run's token", a.id, b.run_token, "RUN_TOKEN_INVALID"],
      ["a forged token", a.id, `ocrt_${"A".repeat(43)}`, "RUN_TOKEN_INVALID"],
      ["a forged run id", "run-forged-0001", a.run_token, "RUN_NOT_LEASED"],
    ] as const) {
      const r = await runVendor("scalr.sh", { id, token }, { HOOKS_DIR: join(DEPLOY, "hooks/scalr") });
      expect(r.code, label).not.toBe(0);
      expect(r.records, label).toEqual([]);
      expect(
        r.log.filter((l) => l.startsWith("tofu")),
        label,
      ).toEqual([]);
      expect(r.stdout, label).toBe("");
      expect(r.stderr, label).toMatch(new RegExp(`^oci-cred-agent hook: ${code}: `));
      expect(await filesUnder(credentialsDir), label).toEqual([]);
      expect(await filesUnder(r.homes), label).toEqual([]);
      expect(r.stderr).not.toContain(token);
    }
    // The sidecar logged each refusal, never a token.
    const refusals = sidecar.lines.filter((l) => l["event"] === "hook_refused");
    expect(refusals.length).toBeGreaterThanOrEqual(3);
    expect(sidecar.output()).not.toContain(a.run_token);
    expect(sidecar.output()).not.toContain(b.run_token);
  });
});

describe("the HOME link when a phase ends without its post hook", () => {
  /** OpenTofu's read of an ambient file: ENOENT (through a dangling link too) is a missing file, anything else fails. */
  const tofuReads = (path: string): string | undefined => {
    try {
      return readFileSync(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  };
  const hookEnv = (run: ExternalRun, extra: Record<string, string> = {}): Record<string, string> => ({
    OCI_CRED_AGENT_SOCKET: socket,
    OCI_CRED_AGENT_RUN_TOKEN: run.run_token,
    ...extra,
  });
  /** Every file under the HOME that still holds the password. */
  const holdingPassword = async (home: string): Promise<string[]> => {
    const held: string[] = [];
    for (const f of await filesUnder(home))
      if ((await readFile(f, "utf8").catch(() => "")).includes(PASSWORD)) held.push(f);
    return held;
  };

  it("a run canceled at the control plane after pre-plan --home: the sidecar's wipe leaves nothing readable in HOME, and OpenTofu's lookup skips the dangling link", async () => {
    const run = await externalRun();
    const home = await mkdtemp(join(dir, "home-cancel-"));
    const pre = await runHook(["pre-plan", "--run-id", run.id, "--home", home], hookEnv(run));
    expect([pre.code, pre.stderr]).toEqual([0, ""]);
    // While the phase runs, OpenTofu finds alice through $HOME/.docker/config.json.
    expect(
      resolveOpenTofuCredential(`oci://${registry.host}/${REPO}?tag=${TAG}`, { HOME: home }, tofuReads),
    ).toMatchObject({
      source: "static",
      username: "alice",
      password: PASSWORD,
      file: join(home, ".docker/config.json"),
    });
    const ended = sidecar.waitForLog((l) => l["event"] === "run_ended" && l["run_id"] === run.id);
    expect((await h.admin("POST", `/runs/${run.id}/cancel`)).status).toBe(202);
    expect((await ended)["code"]).toBe("RUN_CANCELED");
    expect(await filesUnder(join(credentialsDir, "sidecar", run.id))).toEqual([]);
    // Nothing in HOME holds the credentials any more, and the lookup finds nothing, without an error.
    expect(await holdingPassword(home)).toEqual([]);
    await expect(readFile(join(home, ".docker/config.json"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(resolveOpenTofuCredential(`oci://${registry.host}/${REPO}?tag=${TAG}`, { HOME: home }, tofuReads)).toEqual({
      source: "none",
    });
    // The next hook of that HOME removes the dangling link (the sidecar no longer knows the run).
    const post = await runHook(["post-plan", "--run-id", run.id, "--home", home], hookEnv(run));
    expect(post.stderr).not.toMatch(/HOOK_HOME/);
    expect(await filesUnder(home)).toEqual([]);
  });

  it("a pre hook whose $TFC_AGENT_ENV append fails leaves nothing in HOME", async () => {
    const run = await externalRun();
    const home = await mkdtemp(join(dir, "home-envfail-"));
    const pre = await runHook(
      ["pre-plan", "--run-id", run.id, "--home", home],
      hookEnv(run, { TFC_AGENT_ENV: join(dir, "no-such-dir", "env") }),
    );
    expect([pre.code, pre.stdout]).toEqual([1, ""]);
    expect(pre.stderr).toMatch(/^oci-cred-agent hook: HOOK_ENV_FILE_FAILED: /);
    expect(await filesUnder(home)).toEqual([]);
    // The sidecar's files go with the post hook the runner sends when the operation failed.
    const post = await runHook(["post-plan", "--run-id", run.id, "--home", home], hookEnv(run));
    expect([post.code, post.stderr]).toEqual([0, ""]);
    expect(await filesUnder(join(credentialsDir, "sidecar", run.id))).toEqual([]);
  });
});
