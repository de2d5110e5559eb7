/**
 * The runner split, end to end: a real runner (`bin/oci-cred-agent runner`, the built CLI) on a
 * temporary socket, running as another unprivileged user than the test (uid 10042, through
 * util-linux's setpriv), and the agent's side (RunnerExecutor) asking it for phases. A shell
 * stand-in plays tofu (test/fixtures/runner-tofu.sh). Covered: output and exit code, the
 * private HOME and TMPDIR, secrets masked on the agent's side across the runner's cuts, cancel
 * (SIGTERM, grace, SIGKILL), a dropped agent connection, one phase at a time, paths outside the
 * runner's directories, the socket's group access, double-forked setsid leftovers (killed by the
 * own-processes rule, and in a PID namespace of the runner's own by the namespace rule, also
 * when they leave the work directory and clear their environment), and the socket's life cycle.
 * Needs root (setpriv, unshare); the CI runs as root.
 */
import { execFile } from "node:child_process";
import {
  chmod,
  chown,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isAgentError } from "../../src/core/errors.js";
import { Redactor, REDACTED } from "../../src/core/redactor.js";
import type { OutputStream, PhaseRequest, RunExecution } from "../../src/execution/phase-executor.js";
import { connectRunner, RunnerExecutor } from "../../src/execution/runner-executor.js";
import {
  encodeMessage,
  MessageLineReader,
  parseRunnerMessage,
  RUNNER_PROTOCOL_VERSION,
} from "../../src/protocol/runner-api.js";
import { AGENT_BIN, startLogged, type AgentProcess } from "../support/agent-process.js";
import { liveProcessesWhere } from "../support/proc-scan.js";

const RUNNER_UID = 10042;
/** Another user: in the runner's group (as the agent is in a pod) or not. */
const OTHER_UID = 10043;
const STANDIN = new URL("../fixtures/runner-tofu.sh", import.meta.url);
const PATH = process.env["PATH"] ?? "/usr/bin:/bin";

let base: string;
const started: AgentProcess[] = [];
const tokens: string[] = [];

interface Layout {
  readonly dir: string;
  readonly work: string;
  readonly creds: string;
  readonly state: string;
  readonly socket: string;
  readonly tofu: string;
}

/** A runner's directories, as the pod lays them out: the runner may write the work dir and its socket's directory. */
async function layout(name: string): Promise<Layout> {
  const dir = join(base, name);
  const l = {
    dir,
    work: join(dir, "work"),
    creds: join(dir, "creds"),
    state: join(dir, "state"),
    socket: join(dir, "sock", "runner.sock"),
    tofu: join(dir, "tofu"),
  };
  await mkdir(dir, { mode: 0o755 });
  for (const d of [l.work, l.creds, l.state, join(dir, "sock")]) {
    await mkdir(d, { mode: 0o755 });
    await chown(d, RUNNER_UID, RUNNER_UID);
  }
  await copyFile(STANDIN, l.tofu);
  await chmod(l.tofu, 0o755);
  return l;
}

/** A run's workspace (writable by the runner's user) and credential directory (readable by it). */
async function runPaths(l: Layout, runId: string): Promise<{ runId: string; workspace: string; credentials: string }> {
  const workspace = join(l.work, "workspaces", runId);
  await mkdir(workspace, { recursive: true, mode: 0o755 });
  await chown(workspace, RUNNER_UID, RUNNER_UID);
  const credentials = join(l.creds, runId);
  await mkdir(credentials, { mode: 0o750 });
  await chown(credentials, 0, RUNNER_UID);
  await writeFile(join(credentials, "tofu.tfrc"), "# the run's CLI configuration\n", { mode: 0o640 });
  await chown(join(credentials, "tofu.tfrc"), 0, RUNNER_UID);
  return { runId, workspace, credentials };
}

function runnerArgs(l: Layout, extra: readonly string[] = []): string[] {
  return [
    "runner",
    "--socket",
    l.socket,
    "--work-dir",
    l.work,
    "--credentials-dir",
    l.creds,
    "--state-dir",
    l.state,
    "--tofu-bin",
    l.tofu,
    // This machine has no Yama (the refusal itself is tested in runner-executor.test.ts).
    "--allow-ptrace",
    ...extra,
  ];
}

const asUser = (uid: number, groups: readonly number[]): string[] => [
  `--reuid=${uid}`,
  `--regid=${uid}`,
  `--groups=${groups.join(",")}`,
  "--",
];

/** The runner as uid 10042, started the given way; resolves once it listens. */
async function startRunner(
  l: Layout,
  how: "user" | "tini" | "pid1" = "user",
  extra: readonly string[] = [],
): Promise<AgentProcess> {
  const runner = [...asUser(RUNNER_UID, [RUNNER_UID]), AGENT_BIN, ...runnerArgs(l, extra)];
  // In a PID namespace of its own, as in its container: under tini (the image's ENTRYPOINT), or as PID 1.
  const ns = ["--pid", "--fork", "--mount-proc", "--kill-child"];
  const proc =
    how === "user"
      ? startLogged("setpriv", runner, { PATH })
      : how === "tini"
        ? startLogged("unshare", [...ns, "tini", "--", "setpriv", ...runner], { PATH })
        : startLogged("unshare", [...ns, "setpriv", ...runner], { PATH });
  started.push(proc);
  await proc.waitForLog((line) => line["event"] === "runner_listening");
  return proc;
}

/** The processes below `pid` (a runner under unshare and setpriv is not killed with unshare: setpriv clears the parent-death signal). */
async function descendants(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const st = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const ppid = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
    if (Number.isInteger(ppid)) parents.set(Number(name), ppid);
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [child, parent] of parents)
      if (parent === p) {
        out.push(child);
        walk(child);
      }
  };
  walk(pid);
  return out;
}

async function stopRunner(proc: AgentProcess): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null || proc.child.pid === undefined) return;
  for (const pid of await descendants(proc.child.pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  proc.kill("SIGKILL");
  await proc.exited;
}

interface Collected {
  readonly lines: { stream: OutputStream; text: string }[];
  text(stream?: OutputStream): string;
  waitFor(text: string): Promise<void>;
}

function collector(redactor?: Redactor): Collected & { onOutput: PhaseRequest["onOutput"] } {
  const lines: { stream: OutputStream; text: string }[] = [];
  const waiters: { text: string; resolve: () => void }[] = [];
  return {
    lines,
    text: (stream) =>
      lines
        .filter((l) => stream === undefined || l.stream === stream)
        .map((l) => l.text)
        .join(""),
    onOutput: (text, stream) => {
      lines.push({ stream, text: redactor ? redactor.redact(text) : text });
      for (const w of [...waiters])
        if (lines.some((l) => l.text.includes(w.text))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
    },
    waitFor: (text) =>
      lines.some((l) => l.text.includes(text))
        ? Promise.resolve()
        : new Promise((resolve) => {
            waiters.push({ text, resolve });
          }),
  };
}

function phase(
  env: Record<string, string>,
  output: { onOutput: PhaseRequest["onOutput"] },
  extra: Partial<PhaseRequest> = {},
): PhaseRequest {
  return {
    phase: "init",
    planned: false,
    env: { PATH, ...env },
    signal: new AbortController().signal,
    graceMs: 2_000,
    onOutput: output.onOutput,
    ...extra,
  };
}

/** Live processes (not zombies) whose command line holds `token`, seen from here. */
function processesWith(token: string): Promise<number[]> {
  return liveProcessesWhere((argv) => argv.some((a) => a.startsWith(token)));
}

function newToken(): string {
  const t = `9${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}`;
  tokens.push(t);
  return t;
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), "oca-runner-"));
  await chmod(base, 0o755);
});

afterAll(async () => {
  for (const p of started) await stopRunner(p);
  // Whatever a failed test left running.
  for (const t of tokens) for (const pid of await processesWith(t)) process.kill(pid, "SIGKILL");
  await rm(base, { recursive: true, force: true });
});

describe("runner: phases through the socket (runner as uid 10042, not PID 1)", () => {
  let l: Layout;
  let runner: AgentProcess;
  let executor: RunnerExecutor;

  beforeAll(async () => {
    l = await layout("main");
    runner = await startRunner(l);
    executor = new RunnerExecutor(l.socket);
  });

  it("answers hello, and the socket is 0660: the runner's group reaches it, another user does not", async () => {
    expect(await connectRunner(l.socket)).toEqual({
      type: "hello",
      protocol: RUNNER_PROTOCOL_VERSION,
      pid_namespace: false,
      busy: false,
    });
    const st = await stat(l.socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.uid).toBe(RUNNER_UID);
    const probe = `import("${new URL("../../dist/execution/runner-executor.js", import.meta.url).href}").then((m) => m.connectRunner(process.argv[1])).then(() => console.log("OK"), (e) => console.log(e.code))`;
    const as = (groups: number[]): Promise<string> =>
      new Promise((resolve) => {
        execFile(
          "setpriv",
          [...asUser(OTHER_UID, groups), process.execPath, "-e", probe, l.socket],
          { env: { PATH }, encoding: "utf8" },
          (_error, stdout) => {
            resolve(stdout.trim());
          },
        );
      });
    expect(await as([RUNNER_UID])).toBe("OK");
    expect(await as([OTHER_UID])).toBe("RUNNER_UNAVAILABLE");
  });

  it("runs a phase: its output (stdout and stderr apart) and exit code come back; HOME and TMPDIR are the run's own, removed when the run ends", async () => {
    const paths = await runPaths(l, "run-echo");
    const run = await executor.openRun(paths);
    const out = collector();
    const result = await run.runPhase(
      phase({ STANDIN: "echo", TF_CLI_CONFIG_FILE: join(paths.credentials, "tofu.tfrc"), HOME: "/root" }, out),
    );
    expect(result).toMatchObject({ exitCode: 7, signal: null, canceled: false });
    expect(out.text("stdout")).toContain("args=init -input=false -no-color\n");
    expect(out.text("stdout")).toContain(`cwd=${paths.workspace}\n`);
    expect(out.text("stderr")).toBe("to stderr\n");
    const home = join(l.state, "run-run-echo", "home");
    expect(out.text("stdout")).toContain(
      `home=${home} tmp=${join(l.state, "run-run-echo", "tmp")} cfg=${join(paths.credentials, "tofu.tfrc")}\n`,
    );
    // The directory the phase closed to the agent's group is open to it again (the agent removes the workspace).
    expect((await stat(join(paths.workspace, ".terraform"))).mode & 0o770).toBe(0o770);
    expect((await stat(home)).mode & 0o777).toBe(0o700);
    await run.close();
    await run.close();
    await expect(stat(join(l.state, "run-run-echo"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(runner.lines.some((x) => x["event"] === "run_ended" && x["run_id"] === "run-echo")).toBe(true);
  });

  it("a new run's first phase removes what is left of the last run's HOME (the agent never ended it)", async () => {
    const a = await executor.openRun(await runPaths(l, "run-a"));
    expect(await a.runPhase(phase({ STANDIN: "echo" }, collector()))).toMatchObject({ exitCode: 7 });
    expect((await readdir(l.state)).sort()).toEqual(["run-run-a"]);
    const b = await executor.openRun(await runPaths(l, "run-b"));
    expect(await b.runPhase(phase({ STANDIN: "echo" }, collector()))).toMatchObject({ exitCode: 7 });
    expect((await readdir(l.state)).sort()).toEqual(["run-run-b"]);
    await b.close();
  });

  it("masks a secret on the agent's side even when the runner cuts the line inside it and stderr comes between", async () => {
    const secret = "ghp_RUNNERSECRETTOKEN123456";
    const redactor = new Redactor();
    redactor.add([secret]);
    const out = collector(redactor);
    const run = await executor.openRun(await runPaths(l, "run-long"));
    const result = await run.runPhase(
      phase({ STANDIN: "long", SECRET_HEAD: secret.slice(0, 12), SECRET_TAIL: secret.slice(12) }, out, {
        redact: (t) => redactor.redact(t),
        longestSecret: () => redactor.longest,
      }),
    );
    expect(result.exitCode).toBe(0);
    const stdout = out.text("stdout");
    expect(stdout).toBe(`${"x".repeat(65_530)}${REDACTED}y\n`);
    expect(stdout).not.toContain(secret.slice(0, 4));
    expect(out.text("stderr")).toBe("between\n");
    await run.close();
  });

  it("cancel: SIGTERM to the phase, then SIGKILL after the grace", async () => {
    const run = await executor.openRun(await runPaths(l, "run-cancel"));
    const controller = new AbortController();
    const out = collector();
    const pending = run.runPhase(phase({ STANDIN: "term" }, out, { signal: controller.signal, graceMs: 400 }));
    await out.waitFor("ready");
    const t0 = performance.now();
    controller.abort();
    const result = await pending;
    expect(result).toMatchObject({ canceled: true, signal: "SIGKILL", exitCode: null });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(390);
    expect(out.text()).toContain("got-TERM");
    await run.close();
  });

  it("one phase at a time: a second phase meanwhile is refused with RUNNER_BUSY, and hello says busy", async () => {
    const first = await executor.openRun(await runPaths(l, "run-busy-1"));
    const second = await executor.openRun(await runPaths(l, "run-busy-2"));
    const controller = new AbortController();
    const out = collector();
    const pending = first.runPhase(phase({ STANDIN: "block", TOKEN: newToken() }, out, { signal: controller.signal }));
    await out.waitFor("ready");
    const refused = await second.runPhase(phase({ STANDIN: "echo" }, collector())).catch((e: unknown) => e);
    expect(isAgentError(refused, "RUNNER_BUSY")).toBe(true);
    expect((refused as Error).message).toContain("set concurrency to 1");
    expect((await connectRunner(l.socket)).busy).toBe(true);
    // Ending a run is refused too while a phase runs.
    await expect(second.close()).rejects.toMatchObject({ code: "RUNNER_BUSY" });
    controller.abort();
    expect(await pending).toMatchObject({ canceled: true, signal: "SIGTERM" });
    expect((await connectRunner(l.socket)).busy).toBe(false);
    await first.close();
  });

  it("refuses a workspace or credential directory outside --work-dir / --credentials-dir, links and .. included, and runs nothing", async () => {
    const good = await runPaths(l, "run-paths");
    const outside = join(l.dir, "outside");
    await mkdir(outside, { mode: 0o777 });
    const link = join(l.work, "workspaces", "link");
    await symlink(outside, link);
    for (const paths of [
      { ...good, workspace: outside },
      { ...good, workspace: link },
      { ...good, workspace: `${l.work}/workspaces/../../outside` },
      { ...good, workspace: l.work },
      { ...good, credentials: outside },
      { ...good, credentials: join(l.work, "workspaces", "run-paths") },
    ]) {
      const run = await executor.openRun(paths);
      const refused = await run.runPhase(phase({ STANDIN: "echo" }, collector())).catch((e: unknown) => e);
      expect(isAgentError(refused, "RUNNER_PATH_REFUSED"), JSON.stringify(paths)).toBe(true);
    }
    expect(await readdir(outside)).toEqual([]);
    // The same run with its own paths runs.
    const run = await executor.openRun(good);
    expect(await run.runPhase(phase({ STANDIN: "echo" }, collector()))).toMatchObject({ exitCode: 7 });
    await run.close();
  });

  it("kills the double-forked, setsid'ed processes a phase leaves, in the workspace or out of it with the run's HOME", async () => {
    const token = newToken();
    const run = await executor.openRun(await runPaths(l, "run-escape"));
    const out = collector();
    const result = await run.runPhase(phase({ STANDIN: "escape", TOKEN: token }, out));
    expect(out.text()).toContain("escaped");
    expect(result.exitCode).toBe(0);
    // The runner answers only once they are dead.
    expect(await processesWith(token)).toEqual([]);
    const killed = runner.lines.find((x) => x["event"] === "leftovers_killed" && x["run_id"] === "run-escape");
    expect(killed?.["count"]).toBe(2);
    await run.close();
  });

  it("cancels the phase when the agent's connection drops", async () => {
    const paths = await runPaths(l, "run-dropped");
    const socket = createConnection(l.socket);
    const reader = new MessageLineReader();
    const ready = new Promise<void>((resolve) => {
      socket.on("data", (chunk: Buffer) => {
        for (const line of reader.push(chunk)) {
          const m = parseRunnerMessage(line);
          if (m?.type === "output" && m.text.includes("ready")) resolve();
        }
      });
    });
    socket.write(
      encodeMessage({
        type: "start",
        protocol: RUNNER_PROTOCOL_VERSION,
        run_id: paths.runId,
        phase: "plan",
        planned: false,
        workspace: paths.workspace,
        credentials: paths.credentials,
        env: { PATH, STANDIN: "block", TOKEN: newToken() },
        grace_ms: 1000,
      }),
    );
    await ready;
    socket.destroy();
    const finished = await runner.waitForLog((x) => x["event"] === "phase_finished" && x["run_id"] === "run-dropped");
    expect(finished).toMatchObject({ canceled: true, signal: "SIGTERM" });
  });

  it("a line that is not the protocol is refused with RUNNER_PROTOCOL_ERROR, and the runner serves on", async () => {
    const answer = await new Promise<string>((resolve) => {
      const socket = createConnection(l.socket, () => socket.write('{"type":"start","protocol":1}\n'));
      let text = "";
      socket.on("data", (c: Buffer) => {
        text += c.toString("utf8");
      });
      socket.on("close", () => {
        resolve(text);
      });
    });
    expect(parseRunnerMessage(answer.trim())).toEqual({ type: "error", code: "RUNNER_PROTOCOL_ERROR" });
    expect((await connectRunner(l.socket)).busy).toBe(false);
  });

  it("never logs a phase's output", () => {
    expect(runner.output()).not.toContain("got-TERM");
    expect(runner.output()).not.toContain("RUNNERSECRET");
  });
});

describe("runner: in a PID namespace of its own", () => {
  for (const how of ["tini", "pid1"] as const) {
    it(`${how === "tini" ? "under tini with --pid-namespace" : "as PID 1"}: kills every leftover, even one that left the work dir with an empty environment`, async () => {
      const l = await layout(`ns-${how}`);
      const runner = await startRunner(l, how, how === "tini" ? ["--pid-namespace"] : []);
      expect((await connectRunner(l.socket)).pid_namespace).toBe(true);
      expect(runner.lines.some((x) => x["event"] === "runner_is_pid_1")).toBe(how === "pid1");
      const token = newToken();
      const run = await new RunnerExecutor(l.socket).openRun(await runPaths(l, `run-${how}`));
      const out = collector();
      const result = await run.runPhase(phase({ STANDIN: "escape-hard", TOKEN: token }, out));
      expect(out.text()).toContain("escaped");
      expect(result.exitCode).toBe(0);
      expect(await processesWith(token)).toEqual([]);
      expect(runner.lines.find((x) => x["event"] === "leftovers_killed")?.["count"]).toBe(3);
      await run.close();
      await stopRunner(runner);
    });
  }

  it("--pid-namespace outside a namespace of its own is refused: RUNNER_PID_NAMESPACE_SHARED", async () => {
    const l = await layout("ns-shared");
    const proc = startLogged(
      "setpriv",
      [...asUser(RUNNER_UID, [RUNNER_UID]), AGENT_BIN, ...runnerArgs(l, ["--pid-namespace"])],
      {
        PATH,
      },
    );
    started.push(proc);
    expect((await proc.exited).code).toBe(1);
    expect(proc.output()).toContain("error RUNNER_PID_NAMESPACE_SHARED");
    expect(proc.output()).toContain("shareProcessNamespace");
  });
});

describe("runner: its socket", () => {
  it("replaces a stale socket file, refuses a path another runner answers on or that is no socket (RUNNER_SOCKET_IN_USE), and removes its socket on SIGTERM", async () => {
    const l = await layout("socket");
    // A stale socket: its server was SIGKILLed, so the file stayed.
    await new Promise<void>((resolve) => {
      execFile(
        process.execPath,
        [
          "-e",
          "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))",
          l.socket,
        ],
        () => {
          resolve();
        },
      );
    });
    expect((await stat(l.socket)).isSocket()).toBe(true);
    const runner = await startRunner(l);
    const second = startLogged("setpriv", [...asUser(RUNNER_UID, [RUNNER_UID]), AGENT_BIN, ...runnerArgs(l)], { PATH });
    started.push(second);
    expect((await second.exited).code).toBe(1);
    expect(second.output()).toContain("error RUNNER_SOCKET_IN_USE");
    expect((await connectRunner(l.socket)).type).toBe("hello");
    runner.kill("SIGTERM");
    expect((await runner.exited).code).toBe(0);
    await expect(stat(l.socket)).rejects.toMatchObject({ code: "ENOENT" });
    await writeFile(l.socket, "");
    const third = startLogged("setpriv", [...asUser(RUNNER_UID, [RUNNER_UID]), AGENT_BIN, ...runnerArgs(l)], { PATH });
    started.push(third);
    expect((await third.exited).code).toBe(1);
    expect(third.output()).toContain("is not a socket");
  });

  it("stops (exit 1, RUNNER_SOCKET_IN_USE) when a phase replaced its socket, so that it is restarted with one of its own", async () => {
    const l = await layout("replaced");
    const runner = await startRunner(l);
    const run = await new RunnerExecutor(l.socket).openRun(await runPaths(l, "run-replace"));
    await run
      .runPhase(phase({ STANDIN: "replace-socket", RUNNER_SOCKET: l.socket }, collector()))
      .catch(() => undefined);
    expect((await runner.exited).code).toBe(1);
    expect(runner.lines.some((x) => x["event"] === "runner_socket_replaced")).toBe(true);
    expect(runner.output()).toContain("error RUNNER_SOCKET_IN_USE");
  });
});

describe("agent side: the runner fails closed", () => {
  it("RUNNER_UNAVAILABLE when nothing listens: at start (connectRunner) and for a phase", async () => {
    const missing = join(base, "nobody.sock");
    const e = await connectRunner(missing).catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_UNAVAILABLE")).toBe(true);
    expect((e as Error).message).toContain(missing);
    expect((e as Error).message).toContain(`oci-cred-agent runner --socket ${missing}`);
    expect((e as Error).message).toContain("emptyDir");
    const run: RunExecution = await new RunnerExecutor(missing).openRun({
      runId: "r",
      workspace: "/nonexistent/w",
      credentials: "/nonexistent/c",
    });
    await expect(run.runPhase(phase({}, collector()))).rejects.toMatchObject({ code: "RUNNER_UNAVAILABLE" });
  });

  it("RUNNER_LOST when the runner dies in the middle of a phase", async () => {
    const l = await layout("lost");
    const runner = await startRunner(l);
    const token = newToken();
    const run = await new RunnerExecutor(l.socket).openRun(await runPaths(l, "run-lost"));
    const out = collector();
    const pending = run.runPhase(phase({ STANDIN: "block", TOKEN: token }, out));
    await out.waitFor("ready");
    runner.kill("SIGKILL");
    const e = await pending.catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_LOST")).toBe(true);
    expect((e as Error).message).toContain("before tofu init ended");
    // The stand-in the dead runner left is this test's to stop.
    for (const pid of await processesWith(token)) process.kill(pid, "SIGKILL");
  });
});
