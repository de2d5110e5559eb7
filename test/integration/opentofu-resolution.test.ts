/**
 * What OpenTofu would use after materialize, checked with the project's model of its lookup
 * (src/core/opentofu-resolver.ts: TF_CLI_CONFIG_FILE, `oci_default_credentials`,
 * `docker_style_config_files`, exact host[:port] keys, the most specific repository path), and
 * then proven against real registries: the resolved username and password are handed to skopeo
 * (through a 0600 auth file) and must pull the module package, while the credentials the run's
 * files must NOT resolve to (an operator's stale entry, an ambient decoy) are refused there.
 *
 * One materialize covers: duplicates (newest wins), repository-scoped credentials on a
 * token-auth registry, Docker Hub aliases, ports, upper case, an operator base Docker config
 * (other registries, a username/password entry, credHelpers, a credsStore, stale entries for
 * exported registries) and an operator CLI configuration (--tofu-cli-config) with other settings.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { materializeRun, type MaterializeResult } from "../../src/credentials/materialize.js";
import { resolveOpenTofuCredential, type Resolution } from "../../src/core/opentofu-resolver.js";
import { generatePrivateKeyPem, parsePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { sealBundle } from "../../src/crypto/sealed-bundle.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { readOperatorTofuCliConfig } from "../../src/fs/tofu-cli-config-sources.js";
import { writeAuthFile, type ModulePackage } from "../support/oci-module-package.js";
import type { LocalRegistry, TokenRegistry } from "../support/registry-fixture.js";
import { startRegistryPair } from "../support/registry-pair.js";

const execFileAsync = promisify(execFile);
const secret = (label: string): string => `${label}-${randomBytes(9).toString("base64url")}:colon`;

const PUSHER = secret("pusher");
const ALICE = secret("alice");
const TEAM_A = secret("team-a");
const TEAM_B = secret("team-b");
const OPS = secret("ops");
const STALE_ALICE = secret("stale-alice");
const DECOY_ALICE = secret("decoy-alice");
const CLI_BLOCK_ALICE = secret("cli-block-alice");

let work: string;
let home: string;
let registry: LocalRegistry;
let tokenRegistry: TokenRegistry;
let pkg: ModulePackage;
const cleanups: (() => Promise<void>)[] = [];
let result: MaterializeResult;
let runEnv: Record<string, string>;
let operatorCliConfig: string;

const readText = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

function resolve(address: string): Resolution {
  return resolveOpenTofuCredential(address, runEnv, readText);
}

/** `skopeo inspect --raw` with exactly these credentials; the manifest on success. */
async function inspectWith(
  reg: LocalRegistry,
  repository: string,
  username: string,
  password: string,
): Promise<{ ok: boolean; text: string }> {
  const authFile = await writeAuthFile(reg.host, username, password);
  try {
    const { stdout } = await execFileAsync(
      "skopeo",
      [
        "inspect",
        "--raw",
        "--authfile",
        authFile.path,
        "--cert-dir",
        reg.certDir,
        `docker://${reg.host}/${repository}:${pkg.tag}`,
      ],
      { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home }, encoding: "utf8" },
    );
    return { ok: true, text: stdout };
  } catch (error) {
    return { ok: false, text: (error as { stderr?: string }).stderr ?? String(error) };
  } finally {
    await authFile.remove();
  }
}

/** Asserts a static resolution from the run's Docker config, and returns it. */
function expectStatic(address: string, username: string, password?: string): Resolution {
  const r = resolve(address);
  expect({ address, source: r.source, username: r.username, error: r.error }).toEqual({
    address,
    source: "static",
    username,
    error: undefined,
  });
  if (password !== undefined) expect(r.password === password, `${address} resolves to the wrong password`).toBe(true);
  expect(r.file).toBe(join(result.runDir, "docker", "config.json"));
  return r;
}

const b64 = (s: string): string => Buffer.from(s, "utf8").toString("base64");

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-it-resolution-"));
  home = join(work, "home");
  await mkdir(join(home, ".docker"), { recursive: true, mode: 0o700 });
  const pair = await startRegistryPair({
    pusherPassword: PUSHER,
    htpasswdUsers: { alice: ALICE },
    tokenUsers: {
      "team-a": { password: TEAM_A, acl: [{ pattern: "org-a/*", actions: ["pull"] }] },
      "team-b": { password: TEAM_B, acl: [{ pattern: "org-b/*", actions: ["pull"] }] },
      ops: { password: OPS, acl: [{ pattern: "ops/*", actions: ["pull"] }] },
    },
    tag: "2.0.1",
    htpasswdRepositories: ["modules/network"],
    tokenRepositories: ["org-a/network", "org-b/network", "ops/network"],
  });
  cleanups.push(() => pair.stop());
  ({ registry, tokenRegistry, pkg } = pair);

  // An ambient Docker config with a decoy for the exported registry: OpenTofu must not read it.
  await writeFile(
    join(home, ".docker", "config.json"),
    JSON.stringify({ auths: { [registry.host]: { auth: b64(`alice:${DECOY_ALICE}`) } } }),
    { mode: 0o600 },
  );

  // The operator's own CLI configuration, with settings that must survive and a block for an
  // exported registry that must not (it would win over the export in OpenTofu).
  operatorCliConfig = join(work, "operator.tfrc");
  await writeFile(
    operatorCliConfig,
    [
      `plugin_cache_dir = "${join(work, "plugin-cache")}"`,
      "provider_installation {",
      "  direct {}",
      "}",
      'credentials "app.terraform.io" {',
      '  token = "operator-tfc-token"',
      "}",
      `oci_credentials "${registry.host}" {`,
      '  username = "alice"',
      `  password = "${CLI_BLOCK_ALICE}"`,
      "}",
      'oci_credentials "other.example" {',
      '  username = "other-user"',
      '  password = "other-password"',
      "}",
      "",
    ].join("\n"),
  );

  const baseDockerConfig = JSON.stringify({
    auths: {
      [tokenRegistry.host]: { auth: b64(`ops:${OPS}`) },
      "registry.example.com": { username: "operator-user", password: "operator-password" },
      "https://index.docker.io/v1/": { auth: b64("old-hub-user:old-hub-password") },
      [registry.host]: { auth: b64(`alice:${STALE_ALICE}`) },
    },
    credHelpers: { "helper.example": "ecr-login" },
    credsStore: "desktop",
  });

  const pem = generatePrivateKeyPem();
  const key = await parsePrivateKeyPem(pem, "test key");
  const runId = "run-resolution";
  const entries = [
    {
      id: "int-local-old",
      url: `${registry.url}/v2/`,
      username: "alice",
      password: STALE_ALICE,
      updated_at: "2025-01-01T00:00:00Z",
    },
    { id: "int-local", url: registry.url, username: "alice", password: ALICE, updated_at: "2026-11-01T00:00:00Z" },
    { id: "int-org-a", url: `${tokenRegistry.url}/org-a`, username: "team-a", password: TEAM_A },
    { id: "int-org-b", url: `${tokenRegistry.url}/org-b/`, username: "team-b", password: TEAM_B },
    {
      id: "int-hub-old",
      url: "https://registry.hub.docker.com",
      username: "hub-old",
      password: "hub-old-password",
      updated_at: "2026-01-01T00:00:00Z",
    },
    {
      id: "int-hub",
      url: "https://index.docker.io/v1/",
      username: "hub-user",
      password: "hub-password",
      updated_at: "2026-06-01T00:00:00Z",
    },
    { id: "int-ghcr", url: "https://GHCR.IO:443", username: "gh-user", password: "gh-password" },
    { id: "int-port", url: "https://Registry.Example.com:5443/", username: "port-user", password: "port-password" },
  ];
  const bundle = await sealBundle({
    recipient: { kid: key.kid, publicKey: key.publicKey },
    agentId: "agent-res",
    runId,
    plaintext: Buffer.from(JSON.stringify({ version: 1, registries: entries })),
    issuedAtMs: Date.now(),
    ttlSeconds: 600,
  });
  const operatorEnv = { HOME: home, TF_CLI_CONFIG_FILE: operatorCliConfig };
  result = await materializeRun({
    bundle: Buffer.from(bundle),
    keys: new Map([[key.kid, key]]),
    agentId: "agent-res",
    runId,
    runDir: join(work, "run"),
    nowMs: Date.now(),
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 120,
    baseDockerConfig: { path: join(work, "base-docker-config.json"), text: baseDockerConfig },
    tofuCliConfigSources: await readOperatorTofuCliConfig(realFs, operatorCliConfig),
    fs: realFs,
    helperExists: () => Promise.resolve(true),
  });
  // What tofu sees: the operator's environment with the run's variables on top.
  runEnv = { ...operatorEnv, ...result.env };
});

afterAll(async () => {
  await Promise.all(cleanups.map((c) => c()));
  await rm(work, { recursive: true, force: true });
});

describe("OpenTofu resolves each exported registry to the winning credential, and it pulls", () => {
  it("the registry's own refusals: the stale, the decoy and the CLI-block passwords fail", async () => {
    expect(await registry.probe("alice", ALICE)).toBe(200);
    for (const wrong of [STALE_ALICE, DECOY_ALICE, CLI_BLOCK_ALICE])
      expect(await registry.probe("alice", wrong)).toBe(401);
    expect((await inspectWith(registry, "modules/network", "alice", STALE_ALICE)).ok).toBe(false);
  });

  it("a host-level export: the newest entry, not the operator's stale entry, the CLI block or the ambient decoy", async () => {
    const r = expectStatic(`oci://${registry.host}/modules/network?tag=${pkg.tag}`, "alice", ALICE);
    expect(r.key).toBe(registry.host);
    const pulled = await inspectWith(registry, "modules/network", r.username ?? "", r.password ?? "");
    expect(pulled.ok, pulled.text).toBe(true);
    expect(pulled.text).toContain(pkg.zipDigest);
    expect(pulled.text).toContain("application/vnd.opentofu.modulepkg");
  });

  it("two repository-scoped exports on one token-auth host: each repository gets its own, and only its own works", async () => {
    const a = expectStatic(`oci://${tokenRegistry.host}/org-a/network`, "team-a", TEAM_A);
    const b = expectStatic(`oci://${tokenRegistry.host}/org-b/network`, "team-b", TEAM_B);
    expect([a.key, b.key]).toEqual([`${tokenRegistry.host}/org-a`, `${tokenRegistry.host}/org-b`]);
    const [aOwn, bOwn, aOther, bOther] = await Promise.all([
      inspectWith(tokenRegistry, "org-a/network", a.username ?? "", a.password ?? ""),
      inspectWith(tokenRegistry, "org-b/network", b.username ?? "", b.password ?? ""),
      inspectWith(tokenRegistry, "org-b/network", a.username ?? "", a.password ?? ""),
      inspectWith(tokenRegistry, "org-a/network", b.username ?? "", b.password ?? ""),
    ]);
    expect([aOwn.ok, bOwn.ok, aOther.ok, bOther.ok]).toEqual([true, true, false, false]);
    expect(aOwn.text).toContain(pkg.zipDigest);
  });

  it("the operator's host-level entry for the same host still serves the other repositories", async () => {
    const r = expectStatic(`oci://${tokenRegistry.host}/ops/network`, "ops", OPS);
    expect(r.key).toBe(tokenRegistry.host);
    const pulled = await inspectWith(tokenRegistry, "ops/network", r.username ?? "", r.password ?? "");
    expect(pulled.ok, pulled.text).toBe(true);

    // The containers family's file (REGISTRY_AUTH_FILE) merges the same way: skopeo picks the
    // scoped export for org-a and the operator's host-level entry for ops.
    tokenRegistry.tokenRequests.length = 0;
    for (const repository of ["org-a/network", "ops/network"]) {
      await execFileAsync(
        "skopeo",
        [
          "inspect",
          "--raw",
          "--cert-dir",
          tokenRegistry.certDir,
          `docker://${tokenRegistry.host}/${repository}:${pkg.tag}`,
        ],
        {
          env: {
            PATH: process.env["PATH"] ?? "/usr/bin:/bin",
            HOME: home,
            REGISTRY_AUTH_FILE: result.env["REGISTRY_AUTH_FILE"] ?? "",
          },
          encoding: "utf8",
        },
      );
    }
    const granted = tokenRegistry.tokenRequests
      .filter((t) => t.granted.length > 0)
      .map((t) => `${t.user ?? ""} ${t.granted.join(" ")}`);
    expect(new Set(granted)).toEqual(
      new Set(["team-a repository:org-a/network:pull", "ops repository:ops/network:pull"]),
    );
  });

  it("Docker Hub aliases, upper case and ports", () => {
    // The Hub aliases are one registry: the newest entry wins, under each family's own key.
    expect(result.ignored.map((i) => [i.integration_id, i.code]).sort()).toEqual([
      ["int-hub-old", "DUPLICATE_REGISTRY"],
      ["int-local-old", "DUPLICATE_REGISTRY"],
    ]);
    expectStatic("oci://registry-1.docker.io/library/module?tag=1.0.0", "hub-user", "hub-password");
    const dockerDoc = JSON.parse(readText(join(result.runDir, "docker", "config.json")) ?? "{}") as {
      auths: Record<string, { auth?: string }>;
    };
    const containersDoc = JSON.parse(readText(result.env["REGISTRY_AUTH_FILE"] ?? "") ?? "{}") as {
      auths: Record<string, { auth?: string }>;
    };
    expect(dockerDoc.auths["https://index.docker.io/v1/"]?.auth).toBe(b64("hub-user:hub-password"));
    expect(containersDoc.auths["docker.io"]?.auth).toBe(b64("hub-user:hub-password"));
    // OpenTofu has no Docker Hub aliasing: docker.io finds no static entry, only the credsStore.
    expect(resolve("oci://docker.io/library/module")).toMatchObject({ source: "helper", helper: "desktop" });
    expectStatic("oci://ghcr.io/org/module", "gh-user", "gh-password");
    expectStatic("oci://registry.example.com:5443/team/module", "port-user", "port-password");
    // Without the port it is another registry: the operator's entry (username/password form).
    expectStatic("oci://registry.example.com/team/module", "operator-user", "operator-password");
  });

  it("the operator's helpers still apply to other registries, never to exported ones", () => {
    expect(resolve("oci://helper.example/team/module")).toMatchObject({ source: "helper", helper: "ecr-login" });
    expect(resolve("oci://unrelated.example/team/module")).toMatchObject({ source: "helper", helper: "desktop" });
    const doc = JSON.parse(readText(join(result.runDir, "docker", "config.json")) ?? "{}") as {
      credsStore?: string;
      credHelpers?: Record<string, string>;
    };
    expect(doc.credsStore).toBe("desktop");
    // The Docker CLI would ask the store for an exported host unless an empty helper sends it to auths.
    expect(doc.credHelpers?.[registry.host]).toBe("");
  });

  it("the run's CLI configuration keeps the operator's settings and drops the block for an exported registry", () => {
    const text = readText(result.env["TF_CLI_CONFIG_FILE"] ?? "") ?? "";
    expect(text).toContain(`plugin_cache_dir = "${join(work, "plugin-cache")}"`);
    expect(text).toContain('credentials "app.terraform.io"');
    expect(text).toContain("operator-tfc-token");
    expect(text).toContain('oci_credentials "other.example"');
    expect(text).not.toContain(CLI_BLOCK_ALICE);
    expect(text.match(/^oci_default_credentials\s*\{/gm)).toHaveLength(1);
    expect(result.warnings.join("\n")).toContain(`oci_credentials "${registry.host}"`);
  });

  it("without the run's TF_CLI_CONFIG_FILE, OpenTofu would have read the ambient decoy (the check above is not vacuous)", async () => {
    const ambient = resolveOpenTofuCredential(`oci://${registry.host}/modules/network`, { HOME: home }, readText);
    expect(ambient).toMatchObject({ source: "static", username: "alice" });
    expect(ambient.password === DECOY_ALICE).toBe(true);
    expect((await inspectWith(registry, "modules/network", "alice", ambient.password ?? "")).ok).toBe(false);
  });
});
