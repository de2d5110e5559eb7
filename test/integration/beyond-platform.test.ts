/**
 * Issue 8 against real registries (Debian's docker-registry with TLS; htpasswd, and the Bearer
 * token flow with per-repository ACLs from test/support/registry-fixture.ts): the pre-flight
 * check before init, repository-scoped credentials, and credential helpers. The agent is a real
 * process leasing from the reference control plane over loopback. `tofu` is the stand-in
 * test/fixtures/fake-tofu.mjs (no OpenTofu binary can be installed here): it resolves each
 * source's credential by OpenTofu's rules (src/core/opentofu-resolver.ts), runs the credential
 * helper as OpenTofu does, and pulls the module package over HTTPS with what it resolved.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN, FAKE_TOFU, startAgent, type AgentProcess, type LogLine } from "../support/agent-process.js";
import { fakeTofuAgentArgs } from "../support/cloud-test-kit.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import {
  startHtpasswdRegistry,
  startTokenRegistry,
  type LocalRegistry,
  type TokenRegistry,
} from "../support/registry-fixture.js";
import { buildModulePackage, pushModulePackage } from "../support/oci-module-package.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";

/**
 * Runs a command without blocking the event loop (the token server and the control plane live in
 * this process and must keep answering).
 */
function runAsync(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, encoding: "utf8" }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

const canary = (label: string): string => `CANARY-${label}-${randomBytes(8).toString("hex")}`;
const ALICE_PW = canary("alice");
const ORG_A_PW = canary("orga");
const ORG_B_PW = canary("orgb");
const HELPER_PW = canary("helper");
const PUSHER_PW = canary("pusher");
const CANARIES = [ALICE_PW, ORG_A_PW, ORG_B_PW, HELPER_PW];

let dir: string;
let keyFile: string;
let caBundle: string;
let helperBin: string;
let helperLog: string;
let basic: LocalRegistry;
let token: TokenRegistry;
const digests = new Map<string, string>();

interface Pull {
  address: string;
  username: string | null;
  source: string;
  status: number;
  verified?: boolean;
  digest?: string;
  step?: string;
}
interface Recorded {
  phase: string;
  resolutions: { address: string; resolved: { username: string; key: string } | null; helper: string | null }[];
  pulls: Pull[];
}

async function records(file: string): Promise<Recorded[]> {
  if (!existsSync(file)) return [];
  return (await readFile(file, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Recorded);
}

async function expectNoCanaryUnder(root: string): Promise<void> {
  if (!existsSync(root)) return;
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const text = await readFile(join(entry.parentPath, entry.name), "latin1");
    for (const c of CANARIES) expect(text.includes(c), `canary in ${entry.name}`).toBe(false);
  }
}

interface Scenario {
  h: Harness;
  agent: AgentProcess;
  workDir: string;
  recordFile: string;
}

/** A fresh control plane (integrations are per control plane) and one agent. */
async function scenario(
  integrations: Record<string, unknown>[],
  extraArgs: string[] = [],
): Promise<Scenario & { ids: string[] }> {
  const h = await startControlPlane();
  const ids: string[] = [];
  for (const i of integrations) ids.push((await h.createIntegration({ export_credentials: true, ...i })).id);
  const workDir = await mkdtemp(join(dir, "work-"));
  const tokenFile = join(workDir, "..", `${workDir.split("/").pop() ?? "w"}.token`);
  await writeFile(tokenFile, h.agentToken, { mode: 0o600 });
  const recordFile = `${tokenFile}.record.jsonl`;
  const agent = startAgent(
    [...fakeTofuAgentArgs({ url: h.url, tokenFile, keyFile, workDir, listen: "127.0.0.1:0" }), ...extraArgs],
    {
      ...fakeTofuRecord(recordFile),
      HOME: dir,
      TF_CLI_CONFIG_FILE: "",
      NODE_EXTRA_CA_CERTS: caBundle,
      PATH: `${helperBin}:${process.env["PATH"] ?? ""}`,
      OCTEST_LOG: helperLog,
      OCTEST_USER: "helper-user",
      OCTEST_SECRET_FILE: join(dir, "helper-secret"),
    },
  );
  await agent.waitForLog((l) => l["event"] === "registered");
  return { h, agent, workDir, recordFile, ids };
}

async function finish(s: Scenario): Promise<void> {
  s.agent.kill("SIGTERM");
  await s.agent.exited;
  for (const c of CANARIES) expect(s.agent.output().includes(c)).toBe(false);
  await expectNoCanaryUnder(s.workDir);
  expect(await readdir(join(s.workDir, "credentials"))).toEqual([]);
  await s.h.close();
}

function source(reg: LocalRegistry, repo: string): string {
  return `oci://${reg.host}/${repo}?tag=1.0.0`;
}

function mainTf(...sources: string[]): string {
  return sources.map((src, i) => `module "m${i}" {\n  source = "${src}"\n}\n`).join("");
}

const forRun = (runId: string, event: string) => (l: LogLine) => l["run_id"] === runId && l["event"] === event;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-beyond-"));
  keyFile = join(dir, "agent.key");
  execFileSync(AGENT_BIN, ["keygen", "--key-file", keyFile]);
  basic = await startHtpasswdRegistry({ alice: ALICE_PW, pusher: PUSHER_PW });
  token = await startTokenRegistry({
    pusher: { password: PUSHER_PW, acl: [{ pattern: "*", actions: ["pull", "push"] }] },
    "org-a-robot": { password: ORG_A_PW, acl: [{ pattern: "org-a/*", actions: ["pull"] }] },
    "org-b-robot": { password: ORG_B_PW, acl: [{ pattern: "org-b/*", actions: ["pull"] }] },
    "helper-user": { password: HELPER_PW, acl: [{ pattern: "helped/*", actions: ["pull"] }] },
  });
  caBundle = join(dir, "ca-bundle.pem");
  await writeFile(caBundle, `${basic.caPem}\n${token.caPem}\n`);
  for (const [reg, repo] of [
    [basic, "acme/net"],
    [token, "org-a/mod"],
    [token, "org-b/mod"],
    [token, "helped/mod"],
  ] as const) {
    const pkg = await buildModulePackage({
      layoutDir: await mkdtemp(join(dir, "pkg-")),
      files: { "main.tf": `output "repo" {\n  value = "${repo}"\n}\n` },
    });
    await pushModulePackage(pkg, {
      host: reg.host,
      repository: repo,
      certDir: reg.certDir,
      username: "pusher",
      password: PUSHER_PW,
    });
    digests.set(`${reg.host}/${repo}`, pkg.zipDigest);
  }
  // A credential helper as cloud registries ship them: `get` reads the server URL on stdin.
  helperBin = join(dir, "bin");
  helperLog = join(dir, "helper.log");
  await mkdir(helperBin);
  await writeFile(join(dir, "helper-secret"), HELPER_PW, { mode: 0o600 });
  await writeFile(
    join(helperBin, "docker-credential-octest"),
    '#!/bin/sh\n[ "$1" = get ] || exit 1\nread -r url\nprintf \'%s\\n\' "$url" >> "$OCTEST_LOG"\nprintf \'{"ServerURL":"%s","Username":"%s","Secret":"%s"}\' "$url" "$OCTEST_USER" "$(cat "$OCTEST_SECRET_FILE")"\n',
  );
  await chmod(join(helperBin, "docker-credential-octest"), 0o755);
});

afterAll(async () => {
  await basic.stop();
  await token.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("pre-flight check before init", () => {
  it("a revoked password fails the run before init, naming the integration, the registry and the answer; once fixed, the run pulls", async () => {
    const s = await scenario([
      { name: "team registry", registry_url: basic.url, username: "alice", password: ALICE_PW },
    ]);
    try {
      await basic.revoke("alice");
      const files = {
        "main.tf": mainTf(source(basic, "acme/net")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      };
      const runId = await s.h.createRun(files);
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("PREFLIGHT_FAILED");
      expect(run.error?.message).toContain(s.ids[0]);
      expect(run.error?.message).toContain("team registry");
      expect(run.error?.message).toContain(basic.host);
      expect(run.error?.message).toContain("HTTP 401");
      expect(run.error?.message).toMatch(/revoked or expired/);
      // tofu never ran: init was not reached.
      expect(await records(s.recordFile)).toEqual([]);
      const refused = await s.agent.waitForLog(
        (l) => l["run_id"] === runId && l["event"] === "preflight" && l["result"] === "refused",
      );
      expect(refused["integration_id"]).toBe(s.ids[0]);
      expect(refused["registry"]).toBe(basic.host);
      await s.agent.waitForLog(forRun(runId, "credentials_wiped"));

      // The password is fixed at the registry: the next run checks again (no cached refusal) and pulls.
      await basic.setPassword("alice", ALICE_PW);
      const next = await s.h.createRun(files);
      expect((await s.h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      const init = (await records(s.recordFile)).find((r) => r.phase === "init");
      expect(init?.pulls).toEqual([
        expect.objectContaining({
          username: "alice",
          status: 200,
          verified: true,
          digest: digests.get(`${basic.host}/acme/net`),
        }),
      ]);
      const ok = await s.agent.waitForLog((l) => l["run_id"] === next && l["event"] === "preflight");
      expect(ok["result"]).toBe("ok");
      // Operators see it in /metrics too.
      const listening = await s.agent.waitForLog((l) => l["event"] === "listening");
      const metrics = await (await fetch(`${String(listening["url"])}/metrics`)).text();
      expect(metrics).toMatch(/^oci_cred_agent_preflight_checks_total\{result="refused"\} 1$/m);
      expect(metrics).toMatch(/^oci_cred_agent_preflight_checks_total\{result="ok"\} 1$/m);
    } finally {
      await basic.setPassword("alice", ALICE_PW);
      await finish(s);
    }
  });

  it("a valid credential without pull access to a repository the configuration uses fails before init, naming the repository", async () => {
    const s = await scenario([
      { name: "org-a robot", registry_url: token.url, username: "org-a-robot", password: ORG_A_PW },
    ]);
    try {
      const runId = await s.h.createRun({
        "main.tf": mainTf(source(token, "org-b/mod")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      });
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.error?.code).toBe("PREFLIGHT_FAILED");
      expect(run.error?.message).toContain("no pull access to org-b/mod");
      expect(run.error?.message).toContain("org-a robot");
      expect(await records(s.recordFile)).toEqual([]);
      // It asked the token service for exactly that scope, with that credential.
      expect(
        token.tokenRequests.some((r) => r.user === "org-a-robot" && r.scopes.includes("repository:org-b/mod:pull")),
      ).toBe(true);
    } finally {
      await finish(s);
    }
  });

  it("--no-preflight skips the check: the revoked credential reaches init, which fails as tofu would", async () => {
    const s = await scenario(
      [{ name: "team registry", registry_url: basic.url, username: "alice", password: ALICE_PW }],
      ["--no-preflight"],
    );
    try {
      await basic.revoke("alice");
      const runId = await s.h.createRun({
        "main.tf": mainTf(source(basic, "acme/net")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      });
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.error?.code).toBe("PHASE_FAILED");
      const init = (await records(s.recordFile)).find((r) => r.phase === "init");
      expect(init?.pulls[0]?.status).toBe(401);
      expect(s.agent.lines.some((l) => l["event"] === "preflight")).toBe(false);
    } finally {
      await basic.setPassword("alice", ALICE_PW);
      await finish(s);
    }
  });
});

describe("repository-scoped credentials", () => {
  it("two path-scoped credentials on one host each resolve for their own repositories under OpenTofu's rules and pull their own packages", async () => {
    const s = await scenario([
      { name: "org a", registry_url: `${token.url}/org-a`, username: "org-a-robot", password: ORG_A_PW },
      { name: "org b", registry_url: `${token.url}/org-b`, username: "org-b-robot", password: ORG_B_PW },
    ]);
    try {
      const runId = await s.h.createRun({
        "main.tf": mainTf(source(token, "org-a/mod"), source(token, "org-b/mod")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      });
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.error).toBeUndefined();
      expect(run.status).toBe("succeeded");
      const init = (await records(s.recordFile)).find((r) => r.phase === "init");
      expect(init?.resolutions.map((r) => [r.address, r.resolved?.username, r.resolved?.key])).toEqual([
        [`oci://${token.host}/org-a/mod`, "org-a-robot", `${token.host}/org-a`],
        [`oci://${token.host}/org-b/mod`, "org-b-robot", `${token.host}/org-b`],
      ]);
      expect(init?.pulls.map((p) => [p.username, p.status, p.verified, p.digest])).toEqual([
        ["org-a-robot", 200, true, digests.get(`${token.host}/org-a/mod`)],
        ["org-b-robot", 200, true, digests.get(`${token.host}/org-b/mod`)],
      ]);
      // Both credentials were checked before init, each for its own repository only.
      const checks = s.agent.lines.filter((l) => l["run_id"] === runId && l["event"] === "preflight");
      expect(checks.map((l) => [l["registry"], l["result"]]).sort()).toEqual([
        [`${token.host}/org-a`, "ok"],
        [`${token.host}/org-b`, "ok"],
      ]);
      // The Docker CLI matches hosts only: the agent says so.
      const warning = await s.agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "credentials_warning");
      expect(String(warning["msg"])).toMatch(
        /the Docker CLI family matches hosts only and ignores it \((on PATH here: |none of docker)/,
      );
    } finally {
      await finish(s);
    }
  });

  it("the containers family (skopeo) picks the scoped credential per repository from the run's auth file", async () => {
    // The same export through the one-shot commands, so that skopeo can use the printed environment.
    const pub = join(dir, "pub.json");
    await writeFile(pub, execFileSync(AGENT_BIN, ["pubkey", "--key-file", keyFile]));
    const plaintext = JSON.stringify({
      version: 1,
      registries: [
        { id: "a", url: `${token.url}/org-a`, username: "org-a-robot", password: ORG_A_PW },
        { id: "b", url: `${token.url}/org-b`, username: "org-b-robot", password: ORG_B_PW },
      ],
    });
    const bundle = join(dir, "scoped.bundle");
    execFileSync(
      AGENT_BIN,
      ["seal", "--public-key", pub, "--agent-id", "ag", "--run-id", "r-scoped", "--in", "-", "--out", bundle],
      { input: plaintext },
    );
    const runDir = join(dir, "run-scoped");
    const firstRequest = token.tokenRequests.length;
    const out = JSON.parse(
      execFileSync(
        AGENT_BIN,
        [
          "materialize",
          "--key-file",
          keyFile,
          "--agent-id",
          "ag",
          "--run-id",
          "r-scoped",
          "--bundle",
          bundle,
          "--run-dir",
          runDir,
          "--format",
          "json",
        ],
        { encoding: "utf8" },
      ),
    ) as { env: Record<string, string> };
    try {
      for (const repo of ["org-a/mod", "org-b/mod"]) {
        const res = await runAsync(
          "skopeo",
          ["inspect", "--raw", "--cert-dir", token.certDir, `docker://${token.host}/${repo}:1.0.0`],
          { PATH: process.env["PATH"] ?? "", HOME: dir, ...out.env },
        );
        expect(res.stderr).toBe("");
        expect(res.status).toBe(0);
        expect(JSON.parse(res.stdout) as { artifactType?: string }).toMatchObject({
          artifactType: "application/vnd.opentofu.modulepkg",
        });
      }
      const users = token.tokenRequests
        .slice(firstRequest)
        .filter(
          (r) =>
            r.scopes.some((sc) => sc.startsWith("repository:org-a/mod") || sc.startsWith("repository:org-b/mod")) &&
            r.user !== "pusher" &&
            r.user !== undefined,
        );
      expect(users.some((r) => r.user === "org-a-robot" && r.scopes.includes("repository:org-a/mod:pull"))).toBe(true);
      expect(users.some((r) => r.user === "org-b-robot" && r.scopes.includes("repository:org-b/mod:pull"))).toBe(true);
      expect(users.some((r) => r.user === "org-a-robot" && r.scopes.some((sc) => sc.includes("org-b")))).toBe(false);
    } finally {
      execFileSync(AGENT_BIN, ["wipe", "--run-dir", runDir]);
    }
  });
});

describe("credential helpers", () => {
  it("a helper entry resolves to the helper, which OpenTofu calls with https://HOST on stdin, and the pull succeeds", async () => {
    const s = await scenario([{ name: "cloud registry", registry_url: token.url, credential_helper: "octest" }]);
    try {
      const runId = await s.h.createRun({
        "main.tf": mainTf(source(token, "helped/mod")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      });
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.error).toBeUndefined();
      const init = (await records(s.recordFile)).find((r) => r.phase === "init");
      expect(init?.resolutions[0]?.helper).toBe("octest");
      expect(init?.resolutions[0]?.resolved).toBeNull();
      expect(init?.pulls[0]).toMatchObject({
        source: "helper",
        username: "helper-user",
        status: 200,
        verified: true,
        digest: digests.get(`${token.host}/helped/mod`),
      });
      expect((await readFile(helperLog, "utf8")).split("\n")).toContain(`https://${token.host}`);
      const check = await s.agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "preflight");
      expect(check["result"]).toBe("skipped");
    } finally {
      await finish(s);
    }
  });

  it("a helper that is not on PATH fails the run before init and never falls back to other credentials", async () => {
    const s = await scenario([
      { name: "ecr", registry_url: token.url, credential_helper: "absent-helper" },
      { name: "org a", registry_url: `${token.url}/org-a`, username: "org-a-robot", password: ORG_A_PW },
    ]);
    try {
      const runId = await s.h.createRun({
        "main.tf": mainTf(source(token, "org-a/mod")),
        "fake-tofu.json": JSON.stringify({ pull: "init" }),
      });
      const run = await s.h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("CREDENTIAL_HELPER_NOT_FOUND");
      expect(run.error?.message).toContain("docker-credential-absent-helper");
      expect(run.error?.message).toContain(s.ids[0]);
      expect(await records(s.recordFile)).toEqual([]);
    } finally {
      await finish(s);
    }
  });
});

describe("doctor", () => {
  it("reports key, token, directories, control plane and clock, and the bundle's credentials as the pre-flight sees them", async () => {
    const h = await startControlPlane();
    const workDir = await mkdtemp(join(dir, "doctor-"));
    const tokenFile = join(workDir, "token");
    await writeFile(tokenFile, h.agentToken, { mode: 0o600 });
    const pub = join(workDir, "pub.json");
    await writeFile(pub, execFileSync(AGENT_BIN, ["pubkey", "--key-file", keyFile]));
    const bundle = join(workDir, "b");
    const plaintext = JSON.stringify({
      version: 1,
      registries: [
        { id: "good", name: "org a", url: `${token.url}/org-a`, username: "org-a-robot", password: ORG_A_PW },
        { id: "bad", name: "stale", url: basic.url, username: "alice", password: `${ALICE_PW}-old` },
      ],
    });
    execFileSync(
      AGENT_BIN,
      ["seal", "--public-key", pub, "--agent-id", "ag", "--run-id", "doc", "--in", "-", "--out", bundle],
      { input: plaintext },
    );
    const cfg = join(workDir, "cfg");
    await mkdir(cfg);
    await writeFile(join(cfg, "main.tf"), mainTf(source(token, "org-a/mod"), "oci://docker.io/library/net?tag=1"));
    const args = [
      "doctor",
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
      "--bundle",
      bundle,
      "--agent-id",
      "ag",
      "--run-id",
      "doc",
      "--configuration",
      cfg,
    ];
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: caBundle };
    try {
      const json = await runAsync(AGENT_BIN, [...args, "--format", "json"], env);
      expect(json.status).toBe(1);
      const report = JSON.parse(json.stdout) as {
        ok: boolean;
        checks: { check: string; status: string; detail: string; code?: string }[];
      };
      const status = (check: string): string[] => report.checks.filter((c) => c.check === check).map((c) => c.status);
      expect(report.ok).toBe(false);
      expect(status("keys")).toEqual(["ok"]);
      expect(status("token")).toEqual(["ok"]);
      expect(status("control plane")).toEqual(["ok"]);
      expect(status("clock skew")).toEqual(["ok"]);
      expect(status("tofu")).toEqual(["ok"]);
      const creds = report.checks.filter((c) => c.check === "credentials");
      expect(
        creds.find((c) => c.detail.includes("org-a-robot") || c.detail.includes(`${token.host}/org-a`))?.status,
      ).toBe("ok");
      expect(creds.find((c) => c.code === "PREFLIGHT_FAILED")?.detail).toContain("stale");
      expect(report.checks.find((c) => c.code === "DOCKER_HUB_ANONYMOUS")?.detail).toContain(
        "oci://registry-1.docker.io/library/net",
      );

      const text = await runAsync(AGENT_BIN, args, env);
      expect(text.status).toBe(1);
      expect(text.stdout).toMatch(/^FAIL\s+credentials/m);
      expect(text.stdout).toMatch(/1 check failed/);
      for (const c of CANARIES) expect(text.stdout + text.stderr + json.stdout + json.stderr).not.toContain(c);

      // A wrong token is a failed control-plane check, not a crash.
      await writeFile(tokenFile, "wrong-token", { mode: 0o600 });
      const wrong = await runAsync(
        AGENT_BIN,
        [
          "doctor",
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
          "--format",
          "json",
        ],
        env,
      );
      expect(wrong.status).toBe(1);
      const wr = JSON.parse(wrong.stdout) as { checks: { check: string; code?: string }[] };
      expect(wr.checks.find((c) => c.check === "control plane")?.code).toBe("CONTROL_PLANE_UNAUTHORIZED");
    } finally {
      await h.close();
    }
  });
});
