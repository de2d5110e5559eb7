/**
 * Issue 2 acceptance against a real registry: the one-shot CLI (keygen, seal, materialize, wipe)
 * puts a credential where a real OCI client finds it through nothing but the environment
 * materialize prints, the client pulls a real OpenTofu module package with it, and after wipe
 * the same pull is refused. Secrets (random canaries) never reach stdout, stderr or any argv;
 * every refusal names its error code and leaves nothing behind.
 *
 * Registry: Debian's docker-registry with TLS from a throwaway CA and htpasswd (bcrypt), or
 * token auth (test/support/registry-fixture.ts). Client: skopeo, which reads REGISTRY_AUTH_FILE;
 * trust goes through --src-cert-dir (the CA only, not a secret).
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN } from "../support/agent-process.js";
import { readModulePackageLayout, readZip, type ModulePackage } from "../support/oci-module-package.js";
import { sha256Digest, type LocalRegistry, type TokenRegistry } from "../support/registry-fixture.js";
import { startRegistryPair } from "../support/registry-pair.js";

const execFileAsync = promisify(execFile);

// Random, distinct, and awkward: a colon, quotes, a backslash, a dollar and non-ASCII characters.
const canary = (label: string): string => `CANARY-${label}-${randomBytes(9).toString("base64url")}:x"\\'$ä€`;
const CANARY_ALICE = canary("alice");
const CANARY_OLD = canary("old");
const CANARY_GHCR = canary("ghcr");
const CANARY_ORG_A = canary("org-a");
const CANARY_ORG_B = canary("org-b");
const CANARY_NEW = canary("new");
const PUSHER_PASSWORD = `pusher-${randomBytes(8).toString("hex")}`;
const ALL_CANARIES = [CANARY_ALICE, CANARY_OLD, CANARY_GHCR, CANARY_ORG_A, CANARY_ORG_B, CANARY_NEW];

/** Every form a canary could leak in: raw, JSON-escaped, base64 of the password and of user:password. */
function leakForms(): string[] {
  const users: Record<string, string> = {
    [CANARY_ALICE]: "alice",
    [CANARY_OLD]: "alice",
    [CANARY_GHCR]: "octocat",
    [CANARY_ORG_A]: "team-a",
    [CANARY_ORG_B]: "team-b",
    [CANARY_NEW]: "alice",
  };
  return ALL_CANARIES.flatMap((c) => [
    c,
    c.slice(0, 20),
    JSON.stringify(c).slice(1, -1),
    Buffer.from(c).toString("base64"),
    Buffer.from(`${users[c] ?? ""}:${c}`).toString("base64"),
  ]);
}

function expectNoCanary(text: string, where: string): void {
  for (const form of leakForms()) expect(text.includes(form), `${where} leaks a secret`).toBe(false);
}

let work: string;
let home: string;
let registry: LocalRegistry;
let tokenRegistry: TokenRegistry;
let pkg: ModulePackage;
const cleanups: (() => Promise<void>)[] = [];
let keyFile: string;
let pubFile: string;
let otherKeyFile: string;
const REPO = "modules/network";
const AGENT_ID = "agent-it-1";

interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** `ps -eww -o pid=,args=` snapshots taken while the command ran. */
  readonly psSamples: readonly string[];
  /** Whether a snapshot showed the command's own process. */
  readonly seenInPs: boolean;
}

async function psSnapshot(): Promise<string> {
  return (await execFileAsync("ps", ["-eww", "-o", "pid=,args="], { encoding: "utf8" })).stdout;
}

/**
 * Runs bin/oci-cred-agent with a clean environment (PATH and an empty HOME only). When `stdin`
 * is given, it is written only after `ps` has shown the process (it blocks reading stdin until
 * then), so at least one process-table snapshot is taken while the command holds its input.
 */
async function agent(
  args: readonly string[],
  stdin?: string | Buffer,
  env: Readonly<Record<string, string>> = {},
): Promise<CliRun> {
  const child = spawn(AGENT_BIN, [...args], {
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const state = { exited: false };
  const exit = new Promise<number | null>((resolve) => {
    child.once("close", (code) => {
      state.exited = true;
      resolve(code);
    });
  });
  if (stdin === undefined) child.stdin.end();
  const samples: string[] = [];
  let seen = false;
  // The launcher is a shell script that execs node: same pid, so look the pid's line up.
  const ownLine = new RegExp(`^\\s*${child.pid ?? -1}\\s.*\\s${args[0] ?? ""}\\s`, "m");
  while (!state.exited) {
    const snap = await psSnapshot();
    samples.push(snap);
    if (!seen && ownLine.test(snap)) {
      seen = true;
      if (stdin !== undefined) child.stdin.end(stdin);
    }
    if (!seen && samples.length > 200 && stdin !== undefined) child.stdin.end(stdin);
  }
  const code = await exit;
  return { code, stdout, stderr, psSamples: samples, seenInPs: seen };
}

function expectClean(run: CliRun, what: string): void {
  expectNoCanary(run.stdout, `${what} stdout`);
  expectNoCanary(run.stderr, `${what} stderr`);
  for (const snap of run.psSamples) expectNoCanary(snap, `ps argv during ${what}`);
}

interface Entry {
  id: string;
  name?: string;
  url: string;
  username: string;
  password: string;
  updated_at?: string;
}

async function sealExport(
  runId: string,
  registries: readonly Entry[],
  pub = pubFile,
): Promise<{ bundle: string; run: CliRun }> {
  const bundle = join(work, `bundle-${runId}-${randomBytes(3).toString("hex")}.json`);
  const plaintext = JSON.stringify({ version: 1, registries });
  const run = await agent(
    ["seal", "--public-key", pub, "--agent-id", AGENT_ID, "--run-id", runId, "--in", "-", "--out", bundle],
    plaintext,
  );
  expect(run.code, run.stderr).toBe(0);
  expect(run.seenInPs).toBe(true);
  expectClean(run, "seal");
  return { bundle, run };
}

interface Materialized {
  readonly env: Record<string, string>;
  readonly registries: { host: string; integration_id: string }[];
  readonly ignored: { integration_id: string; code: string }[];
}

async function materialize(
  runId: string,
  bundle: string,
  runDir: string,
  key = keyFile,
): Promise<{ run: CliRun; out: Materialized | undefined }> {
  const run = await agent([
    "materialize",
    "--key-file",
    key,
    "--agent-id",
    AGENT_ID,
    "--run-id",
    runId,
    "--bundle",
    bundle,
    "--run-dir",
    runDir,
    "--format",
    "json",
  ]);
  expectClean(run, "materialize");
  return { run, out: run.code === 0 ? (JSON.parse(run.stdout) as Materialized) : undefined };
}

/** skopeo with only the given environment (plus PATH and an empty HOME): pull to an OCI layout. */
async function pull(
  reg: LocalRegistry,
  repository: string,
  tag: string,
  env: Readonly<Record<string, string>>,
): Promise<{ ok: boolean; stderr: string; out: string }> {
  const out = await mkdtemp(join(work, "pulled-"));
  try {
    await execFileAsync(
      "skopeo",
      [
        "copy",
        "--quiet",
        "--src-cert-dir",
        reg.certDir,
        `docker://${reg.host}/${repository}:${tag}`,
        `oci:${out}:${tag}`,
      ],
      { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home, ...env }, encoding: "utf8" },
    );
    return { ok: true, stderr: "", out };
  } catch (error) {
    return { ok: false, stderr: (error as { stderr?: string }).stderr ?? String(error), out };
  }
}

async function modesUnder(dir: string): Promise<{ path: string; type: "dir" | "file"; mode: number }[]> {
  const out: { path: string; type: "dir" | "file"; mode: number }[] = [];
  const st = await stat(dir);
  out.push({ path: dir, type: "dir", mode: st.mode & 0o777 });
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await modesUnder(p)));
    else out.push({ path: p, type: "file", mode: (await stat(p)).mode & 0o777 });
  }
  return out;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-it-registry-"));
  home = join(work, "home");
  await mkdir(home, { mode: 0o700 });
  const pair = await startRegistryPair({
    pusherPassword: PUSHER_PASSWORD,
    htpasswdUsers: { alice: CANARY_ALICE },
    tokenUsers: {
      "team-a": { password: CANARY_ORG_A, acl: [{ pattern: "org-a/*", actions: ["pull"] }] },
      "team-b": { password: CANARY_ORG_B, acl: [{ pattern: "org-b/*", actions: ["pull"] }] },
    },
    tag: "1.4.0",
    htpasswdRepositories: [REPO],
    tokenRepositories: ["org-a/network", "org-b/network"],
  });
  cleanups.push(() => pair.stop());
  ({ registry, tokenRegistry, pkg } = pair);
  keyFile = join(work, "agent.key");
  pubFile = join(work, "agent.pub.json");
  otherKeyFile = join(work, "other.key");
  const keygen = await agent(["keygen", "--key-file", keyFile]);
  expect(keygen.code, keygen.stderr).toBe(0);
  await writeFile(pubFile, keygen.stdout);
  const other = await agent(["keygen", "--key-file", otherKeyFile]);
  expect(other.code, other.stderr).toBe(0);
  expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
});

afterAll(async () => {
  await Promise.all(cleanups.map((c) => c()));
  await rm(work, { recursive: true, force: true });
});

describe("materialize against a real registry (htpasswd)", () => {
  it("the anonymous pull is refused, so a successful pull below proves the credential was used", async () => {
    const anon = await pull(registry, REPO, pkg.tag, {});
    expect(anon.ok).toBe(false);
    expect(anon.stderr).toMatch(/unauthorized|authentication required|401/i);
  });

  it("pulls the module package with only the printed environment, and nothing after wipe", async () => {
    const runId = "run-acceptance";
    const runDir = join(work, "runs", runId);
    await mkdir(join(work, "runs"), { recursive: true, mode: 0o700 });
    const { bundle } = await sealExport(runId, [
      // The older entry for the same registry must lose; its password is wrong on purpose.
      {
        id: "int-old",
        name: "old",
        url: `${registry.url}/`,
        username: "alice",
        password: CANARY_OLD,
        updated_at: "2026-01-01T00:00:00Z",
      },
      {
        id: "int-local",
        name: "local registry",
        url: registry.url,
        username: "alice",
        password: CANARY_ALICE,
        updated_at: "2026-11-20T10:00:00Z",
      },
      { id: "int-ghcr", name: "ghcr", url: "https://ghcr.io", username: "octocat", password: CANARY_GHCR },
    ]);
    const { run, out } = await materialize(runId, bundle, runDir);
    expect(run.code, run.stderr).toBe(0);
    if (out === undefined) throw new Error("no materialize output");
    expect(out.registries.map((r) => [r.host, r.integration_id])).toEqual(
      expect.arrayContaining([
        [registry.host, "int-local"],
        ["ghcr.io", "int-ghcr"],
      ]),
    );
    expect(out.ignored).toEqual([expect.objectContaining({ integration_id: "int-old", code: "DUPLICATE_REGISTRY" })]);
    expect(Object.keys(out.env).sort()).toEqual(["DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "TF_CLI_CONFIG_FILE"]);
    for (const value of Object.values(out.env)) expect(value.startsWith(runDir)).toBe(true);

    // Every directory 0700, every file 0600.
    const modes = await modesUnder(runDir);
    expect(modes.filter((m) => m.type === "file").length).toBeGreaterThanOrEqual(3);
    for (const m of modes) expect([m.path, m.mode.toString(8)]).toEqual([m.path, m.type === "dir" ? "700" : "600"]);

    // skopeo, with nothing but the printed environment: pulls the real package.
    const pulled = await pull(registry, REPO, pkg.tag, out.env);
    expect(pulled.stderr).toBe("");
    expect(pulled.ok).toBe(true);
    const layout = await readModulePackageLayout(pulled.out);
    expect(layout.manifestDigest).toBe(pkg.manifestDigest);
    expect(layout.manifest.artifactType).toBe("application/vnd.opentofu.modulepkg");
    expect(layout.manifest.layers.map((l) => [l.mediaType, l.digest])).toEqual([["archive/zip", pkg.zipDigest]]);
    expect(sha256Digest(layout.layer)).toBe(pkg.zipDigest);
    expect(readZip(layout.layer)["main.tf"]).toContain('"1.4.0"');
    // The containers family's own file alone is enough (skopeo would also read DOCKER_CONFIG).
    const containersOnly = await pull(registry, REPO, pkg.tag, {
      REGISTRY_AUTH_FILE: out.env["REGISTRY_AUTH_FILE"] ?? "",
    });
    expect([containersOnly.ok, containersOnly.stderr]).toEqual([true, ""]);

    // The Docker CLI family, through DOCKER_CONFIG: docker/cli's file store looks a non-Hub
    // registry up by its `host:port` in `auths`, unless credHelpers[host] or credsStore sends it
    // to a helper (cli/config/configfile GetAuthConfig / getConfiguredCredentialStore).
    const dockerEnv = out.env["DOCKER_CONFIG"] ?? "";
    const dockerConfig = JSON.parse(await readFile(join(dockerEnv, "config.json"), "utf8")) as {
      auths: Record<string, { auth?: string }>;
      credHelpers?: Record<string, string>;
      credsStore?: string;
    };
    expect(Buffer.from(dockerConfig.auths[registry.host]?.auth ?? "", "base64").toString("utf8")).toBe(
      `alice:${CANARY_ALICE}`,
    );
    expect(dockerConfig.credsStore ?? "").toBe("");
    expect(dockerConfig.credHelpers?.[registry.host] ?? "").toBe("");
    if (existsSync("/usr/local/bin/docker") || existsSync("/usr/bin/docker")) {
      // Where a Docker CLI is installed, ask it for real (127.0.0.0/8 is an insecure registry to it).
      const { stdout } = await execFileAsync("docker", ["manifest", "inspect", `${registry.host}/${REPO}:${pkg.tag}`], {
        env: { PATH: process.env["PATH"] ?? "", HOME: home, DOCKER_CONFIG: dockerEnv },
        encoding: "utf8",
      });
      expect(stdout).toContain(pkg.zipDigest);
    }

    // Wipe: the directory is gone and the same pull is refused by the registry.
    const wiped = await agent(["wipe", "--run-dir", runDir]);
    expect(wiped.code, wiped.stderr).toBe(0);
    expectClean(wiped, "wipe");
    expect(existsSync(runDir)).toBe(false);
    const after = await pull(registry, REPO, pkg.tag, out.env);
    expect(after.ok).toBe(false);
    expect(after.stderr).toMatch(/unauthorized|authentication required|401/i);
  });

  describe("refusals exit non-zero, name the code, and leave nothing", () => {
    const entries = (): Entry[] => [{ id: "int-local", url: registry.url, username: "alice", password: CANARY_ALICE }];

    it("a bundle sealed to another key", async () => {
      const runId = "run-wrong-key";
      const runDir = join(work, "runs", runId);
      const { bundle } = await sealExport(runId, entries());
      const { run } = await materialize(runId, bundle, runDir, otherKeyFile);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("BUNDLE_UNKNOWN_KEY");
      expect(run.stdout).toBe("");
      expect(existsSync(runDir)).toBe(false);
    });

    it("a bundle for another run", async () => {
      const runDir = join(work, "runs", "run-other");
      const { bundle } = await sealExport("run-sealed-for", entries());
      const { run } = await materialize("run-other", bundle, runDir);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("BUNDLE_WRONG_RUN");
      expect(run.stdout).toBe("");
      expect(existsSync(runDir)).toBe(false);
    });

    it("a tampered bundle, into a run directory created beforehand (stays empty)", async () => {
      const runId = "run-tampered";
      const runDir = join(work, "runs", runId);
      await mkdir(runDir, { mode: 0o700 });
      const { bundle } = await sealExport(runId, entries());
      const text = await readFile(bundle, "utf8");
      const doc = JSON.parse(text) as { protected: string; enc: string; ciphertext: string };
      // Flip one character in the middle of the ciphertext: still canonical base64url.
      const i = Math.floor(doc.ciphertext.length / 2);
      const flipped = doc.ciphertext[i] === "A" ? "B" : "A";
      const tampered = text.replace(
        doc.ciphertext,
        `${doc.ciphertext.slice(0, i)}${flipped}${doc.ciphertext.slice(i + 1)}`,
      );
      expect(tampered).not.toBe(text);
      await writeFile(bundle, tampered);
      const { run } = await materialize(runId, bundle, runDir);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain("BUNDLE_DECRYPT_FAILED");
      expect(run.stdout).toBe("");
      expect(await readdir(runDir)).toEqual([]);
    });
  });

  it("a password revoked at the registry stops the materialized credential (fixture revocation)", async () => {
    const runId = "run-revoke";
    const runDir = join(work, "runs", runId);
    const { bundle } = await sealExport(runId, [
      { id: "int-local", url: registry.url, username: "alice", password: CANARY_ALICE },
    ]);
    const { run, out } = await materialize(runId, bundle, runDir);
    expect(run.code, run.stderr).toBe(0);
    if (out === undefined) throw new Error("no materialize output");
    expect((await pull(registry, REPO, pkg.tag, out.env)).ok).toBe(true);
    await registry.setPassword("alice", CANARY_NEW);
    const refused = await pull(registry, REPO, pkg.tag, out.env);
    expect(refused.ok).toBe(false);
    expect(refused.stderr).toMatch(/unauthorized|authentication required|401/i);
    expect((await agent(["wipe", "--run-dir", runDir])).code).toBe(0);
  });
});

describe("materialize against a real registry (token auth, repository-scoped credentials)", () => {
  it("two credentials scoped to two paths of one host each reach their own repositories", async () => {
    const runId = "run-scoped";
    const runDir = join(work, "runs", runId);
    await mkdir(join(work, "runs"), { recursive: true, mode: 0o700 });
    const { bundle } = await sealExport(runId, [
      { id: "int-a", url: `${tokenRegistry.url}/org-a`, username: "team-a", password: CANARY_ORG_A },
      { id: "int-b", url: `${tokenRegistry.url}/org-b`, username: "team-b", password: CANARY_ORG_B },
    ]);
    const { run, out } = await materialize(runId, bundle, runDir);
    expect(run.code, run.stderr).toBe(0);
    if (out === undefined) throw new Error("no materialize output");
    expect(out.registries.map((r) => r.host).sort()).toEqual([
      `${tokenRegistry.host}/org-a`,
      `${tokenRegistry.host}/org-b`,
    ]);

    // Each user may pull only its own organisation: proven at the registry first.
    expect(await tokenRegistry.probe("team-a", CANARY_ORG_A, "org-b/network")).toBe(401);
    expect(await tokenRegistry.probe("team-b", CANARY_ORG_B, "org-a/network")).toBe(401);

    tokenRegistry.tokenRequests.length = 0;
    for (const org of ["org-a", "org-b"]) {
      const pulled = await pull(tokenRegistry, `${org}/network`, pkg.tag, out.env);
      expect([org, pulled.ok, pulled.stderr]).toEqual([org, true, ""]);
      expect(sha256Digest((await readModulePackageLayout(pulled.out)).layer)).toBe(pkg.zipDigest);
    }
    // skopeo chose the credential by repository path: team-a for org-a, team-b for org-b.
    const granted = tokenRegistry.tokenRequests
      .filter((r) => r.granted.length > 0)
      .map((r) => `${r.user ?? ""} ${r.granted.join(" ")}`);
    expect(new Set(granted)).toEqual(
      new Set(["team-a repository:org-a/network:pull", "team-b repository:org-b/network:pull"]),
    );
    expect(tokenRegistry.tokenRequests.every((r) => r.authenticated)).toBe(true);

    expect((await agent(["wipe", "--run-dir", runDir])).code).toBe(0);
    const after = await pull(tokenRegistry, "org-a/network", pkg.tag, out.env);
    expect(after.ok).toBe(false);
  });
});
