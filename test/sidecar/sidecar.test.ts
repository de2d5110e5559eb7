/**
 * `oci-cred-agent sidecar` as a real process (the built CLI) beside a reference control plane on
 * 127.0.0.1 and a real docker-registry: hook requests over its real Unix socket get a run's
 * credentials where OpenTofu's lookup finds them (the project's model of it) and skopeo pulls
 * with them; post hooks, the hook TTL, a cancel at the control plane, SIGTERM, and a kill -9
 * followed by a restart leave nothing; forged run ids and wrong tokens get nothing written. No
 * log line holds a token or a credential.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";
import { MAX_SIDECAR_LINE_BYTES } from "../../src/protocol/sidecar-api.js";
import type { AgentProcess, LogLine } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { buildModulePackage, pushModulePackage, type ModulePackage } from "../support/oci-module-package.js";
import { agentFiles } from "../support/reliability-agents.js";
import {
  exists,
  externalRun,
  hook,
  startSidecar as startKitSidecar,
  waitLeased,
  type Sidecar,
  type SidecarContext,
} from "../support/sidecar-kit.js";
import { startHtpasswdRegistry, type LocalRegistry } from "../support/registry-fixture.js";

const execFileAsync = promisify(execFile);
/** The runner's group, by number (root may give files to any gid; no group entry is needed). */
const GID = 47213;
const PUSHER = `pusher-${randomBytes(9).toString("base64url")}`;
const READER = `reader-${randomBytes(9).toString("base64url")}`;

let dir: string;
let h: Harness;
let registry: LocalRegistry;
let pkg: ModulePackage;
let files: { keyFile: string; tokenFile: string };
const sidecars: AgentProcess[] = [];
/** Every run token issued in this file: none may appear in any output. */
const tokens: string[] = [];

const context = (): SidecarContext => ({ dir, controlPlaneUrl: h.url, files, gid: GID, started: sidecars });

function startSidecar(name: string, extra: readonly string[] = [], workDir?: string): Sidecar {
  return startKitSidecar(context(), name, { extra, ...(workDir === undefined ? {} : { workDir }) });
}

async function ready(s: Sidecar): Promise<void> {
  await s.proc.waitForLog((l) => l["event"] === "registered");
}

async function listRuns(credentialsDir: string): Promise<string[]> {
  return readdir(join(credentialsDir, "sidecar")).catch(() => []);
}

const readText = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-sidecar-"));
  registry = await startHtpasswdRegistry({ pusher: PUSHER, reader: READER });
  pkg = await buildModulePackage({ tag: "1.0.0" });
  await pushModulePackage(pkg, {
    host: registry.host,
    repository: "mods/net",
    certDir: registry.certDir,
    username: "pusher",
    password: PUSHER,
  });
  h = await startControlPlane({ leaseTtlSeconds: 5 });
  await h.createIntegration({
    name: "local",
    registry_url: registry.url,
    username: "reader",
    password: READER,
    export_credentials: true,
  });
  files = await agentFiles(dir, h.agentToken);
}, 120_000);

afterAll(async () => {
  for (const s of sidecars) if (s.child.exitCode === null && s.child.signalCode === null) s.kill("SIGKILL");
  await Promise.all(sidecars.map((s) => s.exited));
  await h.close();
  await registry.stop();
  await rm(pkg.layoutDir, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
});

describe("the sidecar's concurrency", () => {
  it("is 64 unless set, and what the flag says when set (sent at enrollment)", async () => {
    const enrolledConcurrency = async (s: Sidecar): Promise<number | undefined> => {
      const id = (await s.proc.waitForLog((l) => l["event"] === "registered"))["agent_id"] as string;
      return h.cp.store.agents.get(id)?.concurrency;
    };
    const unset = startKitSidecar(context(), "concurrency-unset", { concurrency: "unset" });
    expect(await enrolledConcurrency(unset)).toBe(64);
    unset.proc.kill("SIGTERM");
    const three = startKitSidecar(context(), "concurrency-3", { concurrency: 3 });
    expect(await enrolledConcurrency(three)).toBe(3);
    three.proc.kill("SIGTERM");
    await Promise.all([unset.proc.exited, three.proc.exited]);
  });
});

describe("oci-cred-agent sidecar", () => {
  let main: Sidecar;
  beforeAll(async () => {
    main = startSidecar("main");
    await ready(main);
  });

  it("writes a run's files for each pre hook where OpenTofu and skopeo find them, and wipes them at each post hook", async () => {
    const run = await externalRun(h, tokens);
    await waitLeased(main, run.id);
    const token = run.run_token;
    for (const [pre, post] of [
      ["pre-init", "post-plan"],
      ["pre-apply", "post-run"],
    ] as const) {
      const answer = await hook(main.socket, { hook: pre, run_id: run.id, run_token: token });
      expect(answer.ok, JSON.stringify(answer)).toBe(true);
      if (!answer.ok || !("env" in answer)) throw new Error("no pre-hook answer");
      expect(answer.run_dir.startsWith(join(main.credentialsDir, "sidecar", run.id))).toBe(true);
      // Readable by the runner's group only: 0640 files, 0750 directories, that group.
      for (const file of [answer.docker_config_file, answer.env.REGISTRY_AUTH_FILE, answer.env.TF_CLI_CONFIG_FILE]) {
        const st = await stat(file);
        expect(st.mode & 0o777).toBe(0o640);
        expect(st.gid).toBe(GID);
      }
      expect((await stat(answer.run_dir)).mode & 0o777).toBe(0o750);
      // OpenTofu's lookup (TF_CLI_CONFIG_FILE -> docker_style_config_files) finds the reader.
      const resolution = resolveOpenTofuCredential(
        `oci://${registry.host}/mods/net?tag=1.0.0`,
        { TF_CLI_CONFIG_FILE: answer.env.TF_CLI_CONFIG_FILE, HOME: join(dir, "nohome") },
        readText,
      );
      expect(resolution).toMatchObject({ source: "static", username: "reader", password: READER });
      // And a real pull through REGISTRY_AUTH_FILE.
      await execFileAsync(
        "skopeo",
        ["inspect", "--raw", "--cert-dir", registry.certDir, `docker://${registry.host}/mods/net:1.0.0`],
        {
          env: {
            PATH: process.env["PATH"] ?? "/usr/bin:/bin",
            HOME: join(dir, "nohome"),
            REGISTRY_AUTH_FILE: answer.env.REGISTRY_AUTH_FILE,
          },
        },
      );
      const wiped = await hook(main.socket, { hook: post, run_id: run.id, run_token: token, outcome: "succeeded" });
      expect(wiped).toMatchObject({ ok: true });
      expect((wiped as { wiped: number }).wiped).toBeGreaterThanOrEqual(4);
      expect(await exists(answer.run_dir)).toBe(false);
      // Wiping what is gone is fine.
      if (post !== "post-run")
        expect(await hook(main.socket, { hook: post, run_id: run.id, run_token: token })).toEqual({
          ok: true,
          wiped: 0,
        });
    }
    const done = await h.waitForStatus(run.id, ["succeeded", "failed", "canceled"]);
    expect(done.status).toBe("succeeded");
    const types = done.events.map((e) => `${e.type}:${typeof e["hook"] === "string" ? e["hook"] : ""}`);
    expect(types).toEqual(
      expect.arrayContaining([
        "phase_started:pre-init",
        "phase_finished:post-plan",
        "phase_started:pre-apply",
        "phase_finished:post-run",
      ]),
    );
    expect(await listRuns(main.credentialsDir)).not.toContain(run.id);
  });

  it("refuses a wrong token, another run's token and a forged run id, writing nothing", async () => {
    const victim = await externalRun(h, tokens, ["init", "plan"]);
    const other = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(main, victim.id);
    await waitLeased(main, other.id);
    for (const runToken of [other.run_token, `${victim.run_token.slice(0, -2)}AA`, "ocrt_forged"]) {
      const answer = await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: runToken });
      expect(answer).toMatchObject({ ok: false, code: "RUN_TOKEN_INVALID" });
    }
    const forged = await hook(main.socket, { hook: "pre-init", run_id: "run-forged", run_token: victim.run_token });
    expect(forged).toMatchObject({ ok: false, code: "RUN_NOT_LEASED" });
    const malformed = await hook(main.socket, { hook: "pre-init", run_id: "../x", run_token: victim.run_token });
    expect(malformed).toMatchObject({ ok: false, code: "REQUEST_INVALID" });
    const long = await hook(main.socket, {
      hook: "pre-init",
      run_id: victim.id,
      run_token: victim.run_token,
      padding: "x".repeat(MAX_SIDECAR_LINE_BYTES),
    });
    expect(long).toMatchObject({ ok: false, code: "REQUEST_INVALID" });
    expect(await listRuns(main.credentialsDir)).not.toContain(victim.id);
    expect(await listRuns(main.credentialsDir)).not.toContain("run-forged");
    const refusedLogs = main.proc.lines.filter((l) => l["event"] === "hook_refused" && l["run_id"] === victim.id);
    expect(refusedLogs).toHaveLength(3);
    expect(refusedLogs.every((l) => l["code"] === "RUN_TOKEN_INVALID")).toBe(true);
    expect(h.cp.store.runs.get(victim.id)?.events.filter((e) => e.type === "run_token_refused")).toHaveLength(3);
    // The victim's own token still works afterwards (plan only: pre-init, then post-plan, the
    // post hook of its last phase, ends the run; a post-run after it finds nothing to do).
    const ok = await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: victim.run_token });
    expect(ok).toMatchObject({ ok: true });
    expect(
      await hook(main.socket, { hook: "post-plan", run_id: victim.id, run_token: victim.run_token, outcome: "failed" }),
    ).toMatchObject({ ok: true });
    expect((await h.waitForStatus(victim.id, ["succeeded", "failed", "canceled"])).status).toBe("failed");
    expect(await hook(main.socket, { hook: "post-run", run_id: victim.id, run_token: victim.run_token })).toMatchObject(
      { ok: true, wiped: 0 },
    );
  });

  it("wipes a run's files when the run is canceled at the control plane", async () => {
    const run = await externalRun(h, tokens);
    await waitLeased(main, run.id);
    const answer = await hook(main.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    expect(await exists(answer.docker_config_file)).toBe(true);
    expect((await h.admin("POST", `/runs/${run.id}/cancel`)).status).toBe(202);
    await main.proc.waitForLog((l) => l["event"] === "run_ended" && l["run_id"] === run.id);
    expect(await exists(answer.run_dir)).toBe(false);
    expect((await h.waitForStatus(run.id, ["succeeded", "failed", "canceled"])).status).toBe("canceled");
    const late = await hook(main.socket, { hook: "pre-plan", run_id: run.id, run_token: run.run_token });
    expect(late).toMatchObject({ ok: false, code: "RUN_NOT_LEASED" });
  });

  it("wipes a run's files when no post hook came within --hook-ttl, and keeps the lease for the next phase", async () => {
    // One sidecar polls at a time from here on: the main one stops (gracefully, exit 0).
    main.proc.kill("SIGTERM");
    expect(await main.proc.exited).toMatchObject({ code: 0 });
    const s = startSidecar("ttl", ["--hook-ttl", "1s"]);
    await ready(s);
    const run = await externalRun(h, tokens);
    await waitLeased(s, run.id);
    const answer = await hook(s.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    await s.proc.waitForLog((l) => l["event"] === "hook_ttl_expired" && l["run_id"] === run.id);
    expect(await exists(answer.run_dir)).toBe(false);
    expect(h.cp.store.runs.get(run.id)?.status).toBe("running");
    const again = await hook(s.socket, { hook: "pre-plan", run_id: run.id, run_token: run.run_token });
    expect(again).toMatchObject({ ok: true });
    s.proc.kill("SIGTERM");
    expect(await s.proc.exited).toMatchObject({ code: 0 });
    if (!again.ok || !("run_dir" in again)) throw new Error(JSON.stringify(again));
    // SIGTERM wiped what it wrote before it exited.
    expect(await exists(again.run_dir)).toBe(false);
  });

  it("leaves nothing after a kill -9 mid-run once it restarts: the sweep comes before it serves", async () => {
    const workDir = join(dir, "killed");
    const first = startSidecar("killed", [], workDir);
    await ready(first);
    const run = await externalRun(h, tokens);
    await waitLeased(first, run.id);
    const answer = await hook(first.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    expect(await exists(answer.docker_config_file)).toBe(true);
    const second = startSidecar("killed", [], workDir);
    const swept = await second.proc.waitForLog((l) => l["event"] === "swept_credentials" && l["run_id"] === run.id);
    expect(swept["files"]).toBeGreaterThanOrEqual(4);
    expect(await exists(answer.run_dir)).toBe(false);
    await second.proc.waitForLog((l) => l["event"] === "socket_listening");
    const events = second.proc.lines.map((l) => l["event"]);
    expect(events.indexOf("swept_credentials")).toBeLessThan(events.indexOf("socket_listening"));
    await ready(second);
    second.proc.kill("SIGTERM");
    await second.proc.exited;
  });

  it("writes no token and no credential in any log line", () => {
    const secrets = [...tokens, READER, PUSHER, h.agentToken];
    for (const s of sidecars) {
      for (const line of s.lines) expect(line["unparsed"], "every line is JSON").toBeUndefined();
      const out = s.output();
      for (const secret of secrets) expect(out).not.toContain(secret);
      expect(out).not.toContain(Buffer.from(`reader:${READER}`).toString("base64"));
    }
    const logs = sidecars.flatMap((s): LogLine[] => s.lines);
    expect(logs.some((l) => l["event"] === "hook_refused")).toBe(true);
  });
});
