/**
 * The attacks of the sidecar's review (issue 16), each against the real processes: the built
 * `oci-cred-agent sidecar` beside a reference control plane on 127.0.0.1, attacked over its real
 * Unix socket and its real files, the readers as an unprivileged user in the runner's group
 * (setpriv). Each test fails without its fix:
 *
 *   H1  a run of the runner's group cannot list the sidecar's directories nor guess another run's
 *       generation: it reads only the files whose path its own hook was answered
 *   M1  guessed tokens for a run id cannot lock the run out of its first hook; a refused token is
 *       refused again without asking the control plane; refusals are not logged without bound
 *   M2  idle and half-open connections neither keep a hook from being served nor stop SIGTERM
 *   M3  pre hooks for runs not leased wait in bounded number, and no longer than their client
 *   L1  a second sidecar on the same credentials directory is refused before it sweeps anything
 *   L2  the start-up sweep follows no symbolic link out of the credentials directory
 *   L3  a socket directory others may write to is refused
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rename, rm, stat, symlink } from "node:fs/promises";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentProcess, LogLine } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { agentFiles } from "../support/reliability-agents.js";
import {
  exists,
  externalRun,
  hook,
  hookRequestLine,
  startSidecar as startKitSidecar,
  waitLeased,
  type Sidecar,
  type SidecarContext,
  type SidecarOptions,
} from "../support/sidecar-kit.js";

/** The runner's group, and an unprivileged user of it (a run of another tenant on the same runner). */
const GID = 47213;
const NEIGHBOUR_UID = 47301;
const READER = `reader-${randomBytes(9).toString("base64url")}`;

let dir: string;
let h: Harness;
let files: { keyFile: string; tokenFile: string };
const sidecars: AgentProcess[] = [];
const tokens: string[] = [];

const context = (): SidecarContext => ({ dir, controlPlaneUrl: h.url, files, gid: GID, started: sidecars });

/** The work directory lets the runner's group pass (0711), as the sidecar's own directories do. */
function startSidecar(name: string, opts: SidecarOptions = {}): Sidecar {
  return startKitSidecar(context(), name, { workMode: 0o711, ...opts });
}

/** Each test below starts its own sidecar: none other may lease its runs, whatever an earlier test left. */
async function killOthers(): Promise<void> {
  for (const p of sidecars) if (p.child.exitCode === null && p.child.signalCode === null) p.kill("SIGKILL");
  await Promise.all(sidecars.map((p) => p.exited));
}

async function stopSidecar(s: Sidecar): Promise<void> {
  s.proc.kill("SIGTERM");
  expect(await s.proc.exited).toMatchObject({ code: 0 });
}

function connected(socket: string, opts: { allowHalfOpen?: boolean } = {}): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const conn = createConnection({ path: socket, allowHalfOpen: opts.allowHalfOpen ?? false });
    conn.once("connect", () => resolve(conn));
    conn.once("error", reject);
  });
}

/** Runs a command as the neighbour (uid 47301, in the runner's group only). */
function asNeighbour(cmd: string, args: readonly string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      "setpriv",
      [`--reuid=${NEIGHBOUR_UID}`, `--regid=${NEIGHBOUR_UID}`, `--groups=${GID}`, "--", cmd, ...args],
      { env: { PATH: "/usr/bin:/bin" } },
      (error, stdout) => {
        resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout });
      },
    );
  });
}

function refusedFor(s: Sidecar, runId: string): LogLine[] {
  return s.proc.lines.filter((l) => l["event"] === "hook_refused" && l["run_id"] === runId);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-sidecar-attacks-"));
  // The neighbour may pass through to the credentials directory, as on a runner's host.
  await chmod(dir, 0o711);
  h = await startControlPlane({ leaseTtlSeconds: 5 });
  // The sidecar never reaches the registry: it writes the run's credentials, tofu would use them.
  await h.createIntegration({
    name: "local",
    registry_url: "https://registry.example.test",
    username: "reader",
    password: READER,
    export_credentials: true,
  });
  files = await agentFiles(dir, h.agentToken);
}, 60_000);

afterAll(async () => {
  for (const s of sidecars) if (s.child.exitCode === null && s.child.signalCode === null) s.kill("SIGKILL");
  await Promise.all(sidecars.map((s) => s.exited));
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("oci-cred-agent sidecar under attack", () => {
  let main: Sidecar;
  beforeAll(async () => {
    main = startSidecar("main");
    await main.proc.waitForLog((l) => l["event"] === "registered");
  });

  it("H1: a run of the runner's group reads its own files, but cannot list the directories nor guess another run's", async () => {
    const victim = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(main, victim.id);
    const answer = await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: victim.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    const root = join(main.credentialsDir, "sidecar");
    const runParent = join(root, victim.id);
    expect(dirname(answer.run_dir)).toBe(runParent);
    // The generation's name: 128 random bits, not a counter.
    expect(basename(answer.run_dir)).toMatch(/^[A-Za-z0-9_-]{22}$/);
    for (const d of [main.credentialsDir, root, runParent]) {
      const st = await stat(d);
      expect({ d, mode: st.mode & 0o777, gid: st.gid }).toEqual({ d, mode: 0o710, gid: GID });
    }
    // The run whose hook it was reads its files through the path it was answered...
    const own = await asNeighbour("cat", [answer.docker_config_file]);
    expect(own.code).toBe(0);
    expect(own.stdout).toContain("registry.example.test");
    // ...but a neighbour knowing only the run id lists nothing and guesses nothing.
    for (const d of [main.credentialsDir, root, runParent]) expect((await asNeighbour("ls", [d])).code).not.toBe(0);
    for (const guess of ["1", "2", "0"])
      expect((await asNeighbour("cat", [join(runParent, guess, "docker", "config.json")])).code).not.toBe(0);
    expect(
      await hook(main.socket, { hook: "post-plan", run_id: victim.id, run_token: victim.run_token }),
    ).toMatchObject({ ok: true });
  });

  it("M1: guessed tokens cannot lock a run out of its first hook; a refused token is not sent again; refusals are not all logged", async () => {
    const victim = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(main, victim.id);
    const guesses = Array.from({ length: 30 }, () => `ocrt_${randomBytes(32).toString("base64url")}`);
    for (const runToken of guesses)
      expect(await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: runToken })).toMatchObject({
        ok: false,
        code: "RUN_TOKEN_INVALID",
      });
    const refusedAtControlPlane = (): number =>
      h.cp.store.runs.get(victim.id)?.events.filter((e) => e.type === "run_token_refused").length ?? 0;
    expect(refusedAtControlPlane()).toBe(30);
    // The same guesses again: refused on the spot, the control plane is not asked.
    for (const runToken of guesses.slice(0, 10))
      expect(await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: runToken })).toMatchObject({
        ok: false,
        code: "RUN_TOKEN_INVALID",
      });
    expect(refusedAtControlPlane()).toBe(30);
    // The run's own first hook goes through.
    const ok = await hook(main.socket, { hook: "pre-init", run_id: victim.id, run_token: victim.run_token });
    expect(ok).toMatchObject({ ok: true });
    // Its log line comes after every refusal's: all of those that were logged are in.
    await main.proc.waitForLog((l) => l["event"] === "credentials_written" && l["run_id"] === victim.id);
    const logged = refusedFor(main, victim.id);
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.length).toBeLessThan(40);
    expect(
      await hook(main.socket, { hook: "post-plan", run_id: victim.id, run_token: victim.run_token }),
    ).toMatchObject({ ok: true });
  });

  it("M2: idle and half-open connections keep no hook from being served, and do not hold SIGTERM", async () => {
    const run = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(main, run.id);
    // More idle connections than the sidecar's old limit (64), all accepted before the hook.
    const idle = await Promise.all(Array.from({ length: 100 }, () => connected(main.socket)));
    // Half-open: a line, the answer read, and the connection never closed by the client.
    const halfOpen = await Promise.all(
      Array.from({ length: 70 }, async () => {
        const conn = await connected(main.socket, { allowHalfOpen: true });
        conn.on("error", () => undefined);
        await new Promise<void>((resolve) => {
          conn.once("end", () => resolve());
          conn.on("data", () => undefined);
          conn.write("junk\n");
        });
        return conn;
      }),
    );
    // The sidecar let go of each half-open connection once its answer was out: writing to it breaks.
    const broken = await Promise.all(
      halfOpen.map(
        (conn) =>
          new Promise<boolean>((resolve) => {
            let writes = 0;
            const next = (): void => {
              if (writes++ >= 10_000) {
                resolve(false);
                return;
              }
              conn.write("x", (error) => {
                if (error) resolve(true);
                else next();
              });
            };
            next();
          }),
      ),
    );
    expect(broken.every(Boolean)).toBe(true);
    const answer = await hook(main.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    expect(answer).toMatchObject({ ok: true });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    // SIGTERM with idle connections still open: the sidecar wipes and exits.
    await stopSidecar(main);
    expect(await exists(answer.run_dir)).toBe(false);
    for (const conn of [...idle, ...halfOpen]) conn.destroy();
  });

  it("M3: pre hooks for runs not leased wait in bounded number, and no longer than their client", async () => {
    await killOthers();
    // One run at a time: while run A is held, run B stays queued at the control plane.
    const s = startSidecar("waits", { concurrency: 1, extra: ["--lease-wait", "120s", "--log-level", "debug"] });
    const a = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(s, a.id);
    const b = await externalRun(h, tokens, ["init", "plan"]);
    // 4 x --concurrency waiters for runs that do not exist, their clients staying.
    const strangers = Array.from({ length: 4 }, () => `run-stranger-${randomBytes(6).toString("hex")}`);
    const waiting = await Promise.all(
      strangers.map(async (id) => {
        const conn = await connected(s.socket);
        conn.on("error", () => undefined);
        conn.write(hookRequestLine({ hook: "pre-init", run_id: id, run_token: "ocrt_stranger" }));
        await s.proc.waitForLog((l) => l["event"] === "lease_wait" && l["run_id"] === id);
        return conn;
      }),
    );
    // One more waits no longer: refused at once (without the bound it would wait --lease-wait, 120 s).
    expect(await hook(s.socket, { hook: "pre-init", run_id: b.id, run_token: b.run_token })).toMatchObject({
      ok: false,
      code: "RUN_NOT_LEASED",
    });
    // The clients go away: so do their waits.
    for (const conn of waiting) conn.destroy();
    for (const id of strangers)
      await s.proc.waitForLog((l) => l["event"] === "lease_wait_abandoned" && l["run_id"] === id);
    // B's pre hook waits again, and is served once A's end frees the slot and B is leased.
    const served = hook(s.socket, { hook: "pre-init", run_id: b.id, run_token: b.run_token });
    await s.proc.waitForLog((l) => l["event"] === "lease_wait" && l["run_id"] === b.id);
    expect(await hook(s.socket, { hook: "post-plan", run_id: a.id, run_token: a.run_token })).toMatchObject({
      ok: true,
    });
    expect(await served).toMatchObject({ ok: true });
    expect(await hook(s.socket, { hook: "post-plan", run_id: b.id, run_token: b.run_token })).toMatchObject({
      ok: true,
    });
    await stopSidecar(s);
  }, 30_000);

  it("L1: a second sidecar on the same credentials directory is refused before it sweeps anything", async () => {
    await killOthers();
    const workDir = join(dir, "shared-dir");
    const first = startSidecar("l1-first", { workDir });
    await first.proc.waitForLog((l) => l["event"] === "registered");
    const run = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(first, run.id);
    const answer = await hook(first.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    const second = startSidecar("l1-second", { workDir });
    expect(await second.proc.exited).toMatchObject({ code: 1 });
    expect(second.proc.output()).toContain("error SIDECAR_DIR_IN_USE");
    expect(second.proc.lines.some((l) => l["event"] === "swept_credentials")).toBe(false);
    expect(await exists(answer.docker_config_file)).toBe(true);
    expect(await hook(first.socket, { hook: "post-plan", run_id: run.id, run_token: run.run_token })).toMatchObject({
      ok: true,
    });
    await stopSidecar(first);
  });

  it("L2: the start-up sweep follows no symbolic link out of the credentials directory", async () => {
    await killOthers();
    const workDir = join(dir, "l2");
    const first = startSidecar("l2", { workDir });
    await first.proc.waitForLog((l) => l["event"] === "registered");
    const run = await externalRun(h, tokens, ["init", "plan"]);
    await waitLeased(first, run.id);
    const answer = await hook(first.socket, { hook: "pre-init", run_id: run.id, run_token: run.run_token });
    if (!answer.ok || !("run_dir" in answer)) throw new Error(JSON.stringify(answer));
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    // A directory with the marker elsewhere, and a link to it where the sweep looks.
    const elsewhere = join(dir, "elsewhere");
    await mkdir(elsewhere);
    const moved = join(elsewhere, "other");
    await rename(dirname(answer.run_dir), moved);
    await symlink(moved, join(workDir, "credentials", "sidecar", "evil"));
    const kept = join(moved, basename(answer.run_dir), "docker", "config.json");
    expect(await exists(kept)).toBe(true);
    const second = startSidecar("l2", { workDir });
    const failed = await second.proc.waitForLog((l) => l["event"] === "sweep_failed" && l["run_id"] === "evil");
    expect(failed["code"]).toBe("RUN_DIR_UNSAFE");
    await second.proc.waitForLog((l) => l["event"] === "socket_listening");
    expect(await exists(kept)).toBe(true);
    await second.proc.waitForLog((l) => l["event"] === "registered");
    await stopSidecar(second);
    // The run's lease went with the killed sidecar; it ends at the control plane.
    await h.admin("POST", `/runs/${run.id}/cancel`);
  });

  it("L3: a socket directory others may write to is refused; a sticky one is taken", async () => {
    await killOthers();
    for (const mode of [0o777, 0o770]) {
      const sockDir = join(dir, `sockets-${mode.toString(8)}`);
      await mkdir(sockDir);
      await chmod(sockDir, mode);
      const s = startSidecar(`l3-${mode.toString(8)}`, { socket: join(sockDir, "sidecar.sock") });
      expect(await s.proc.exited).toMatchObject({ code: 1 });
      expect(s.proc.output()).toContain("error SIDECAR_SOCKET_DIR_UNSAFE");
      expect(await exists(join(sockDir, "sidecar.sock"))).toBe(false);
    }
    const sticky = join(dir, "sockets-sticky");
    await mkdir(sticky);
    await chmod(sticky, 0o1777);
    const s = startSidecar("l3-sticky", { socket: join(sticky, "sidecar.sock") });
    await s.proc.waitForLog((l) => l["event"] === "socket_listening");
    await stopSidecar(s);
  });

  it("writes no token and no credential in any log line", () => {
    for (const s of sidecars) {
      const out = s.output();
      for (const secret of [...tokens, READER, h.agentToken]) expect(out).not.toContain(secret);
    }
  });
});
