/**
 * The agent's side of the runner split against runners that misbehave (real Unix-socket servers
 * in this process, speaking the protocol or not), the protocol's framing, and the runner's own
 * start-up checks and path rule. The real runner is exercised in runner-process.test.ts.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentError, isAgentError } from "../../src/core/errors.js";
import { Redactor, REDACTED } from "../../src/core/redactor.js";
import { createLogger } from "../../src/daemon/logger.js";
import type { OutputStream, PhaseRequest } from "../../src/execution/phase-executor.js";
import { connectRunner, RunnerExecutor } from "../../src/execution/runner-executor.js";
import {
  encodeMessage,
  MAX_RUNNER_LINE_BYTES,
  MessageLineReader,
  parseAgentMessage,
  RUNNER_PROTOCOL_VERSION,
  type AgentMessage,
  type RunnerMessage,
} from "../../src/protocol/runner-api.js";
import { isInside } from "../../src/runner/run-dirs.js";
import { pieces, startRunnerServer } from "../../src/runner/runner-server.js";

let dir: string;
const servers: Server[] = [];
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-runner-exec-"));
});

afterAll(async () => {
  for (const s of servers) s.close();
  await rm(dir, { recursive: true, force: true });
});

/** A runner stand-in: `onMessage` gets every message the agent sends, with a way to answer. */
async function fakeRunner(
  onMessage: (message: AgentMessage, reply: (m: RunnerMessage | string) => void, socket: Socket) => void,
): Promise<string> {
  const path = join(dir, `fake-${++n}.sock`);
  const server = createServer((socket) => {
    const reader = new MessageLineReader();
    socket.on("data", (chunk: Buffer) => {
      for (const line of reader.push(chunk)) {
        const message = parseAgentMessage(line);
        if (message === undefined) throw new Error(`the agent sent an invalid line: ${line}`);
        onMessage(message, (m) => socket.write(typeof m === "string" ? m : encodeMessage(m)), socket);
      }
    });
    socket.on("error", () => undefined);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

const PATHS = { runId: "run-1", workspace: "/w/run-1", credentials: "/c/run-1" };

function request(extra: Partial<PhaseRequest> = {}): PhaseRequest & { out: { stream: OutputStream; text: string }[] } {
  const out: { stream: OutputStream; text: string }[] = [];
  return {
    phase: "plan",
    planned: false,
    env: { PATH: "/usr/bin", UNSET: undefined },
    signal: new AbortController().signal,
    graceMs: 100,
    onOutput: (text, stream) => out.push({ stream, text }),
    out,
    ...extra,
  };
}

const result: RunnerMessage = {
  type: "result",
  exit_code: 0,
  signal: null,
  duration_ms: 12,
  canceled: false,
  leftovers_killed: 0,
};

describe("agent side: requests and results", () => {
  it("sends the run's paths, phase and environment (unset variables left out), and returns the runner's result", async () => {
    const seen: AgentMessage[] = [];
    const path = await fakeRunner((m, reply) => {
      seen.push(m);
      if (m.type === "start") {
        reply({ type: "output", stream: "stdout", text: "hello\n" });
        reply({ ...result, exit_code: 2, signal: null });
      }
    });
    const run = await new RunnerExecutor(path).openRun(PATHS);
    const req = request();
    expect(await run.runPhase(req)).toEqual({ exitCode: 2, signal: null, durationMs: 12, canceled: false });
    expect(req.out).toEqual([{ stream: "stdout", text: "hello\n" }]);
    expect(seen).toEqual([
      {
        type: "start",
        protocol: RUNNER_PROTOCOL_VERSION,
        run_id: "run-1",
        phase: "plan",
        planned: false,
        workspace: "/w/run-1",
        credentials: "/c/run-1",
        env: { PATH: "/usr/bin" },
        grace_ms: 100,
      },
    ]);
  });

  it("rejoins each stream's pieces and masks a secret cut between two pieces, whatever the other stream sends between", async () => {
    const secret = "ghp_RUNNERSECRETTOKEN123456";
    const path = await fakeRunner((m, reply) => {
      if (m.type !== "start") return;
      reply({ type: "output", stream: "stdout", text: `${"x".repeat(20_000)}${secret.slice(0, 10)}` });
      reply({ type: "output", stream: "stderr", text: "between\n" });
      reply({ type: "output", stream: "stdout", text: `${secret.slice(10)}y\n` });
      reply(result);
    });
    const redactor = new Redactor();
    redactor.add([secret]);
    const req = request({ redact: (t) => redactor.redact(t), longestSecret: () => redactor.longest });
    const run = await new RunnerExecutor(path).openRun(PATHS);
    await run.runPhase(req);
    // As the daemon does: each emitted piece is masked once more before it is logged.
    const text = (stream: OutputStream): string =>
      req.out
        .filter((o) => o.stream === stream)
        .map((o) => redactor.redact(o.text))
        .join("");
    expect(text("stdout")).toBe(`${"x".repeat(20_000)}${REDACTED}y\n`);
    expect(text("stderr")).toBe("between\n");
    for (const o of req.out) expect(o.text.length).toBeLessThanOrEqual(16 * 1024);
  });

  it("a cancel goes to the runner; the canceled result comes back", async () => {
    const path = await fakeRunner((m, reply) => {
      if (m.type === "start") reply({ type: "output", stream: "stdout", text: "ready\n" });
      if (m.type === "cancel") reply({ ...result, exit_code: null, signal: "SIGTERM", canceled: true });
    });
    const controller = new AbortController();
    const req = request({
      signal: controller.signal,
      onOutput: (text) => {
        if (text === "ready\n") controller.abort();
      },
    });
    const run = await new RunnerExecutor(path).openRun(PATHS);
    expect(await run.runPhase(req)).toMatchObject({ canceled: true, signal: "SIGTERM", exitCode: null });
  });

  it("a phase canceled before it starts never reaches the runner", async () => {
    const run = await new RunnerExecutor(join(dir, "none.sock")).openRun(PATHS);
    expect(await run.runPhase(request({ signal: AbortSignal.abort() }))).toMatchObject({ canceled: true });
  });

  it("close() ends the run at the runner once (end_run), however often it is called", async () => {
    const ends: string[] = [];
    const path = await fakeRunner((m, reply) => {
      if (m.type === "end_run") {
        ends.push(m.run_id);
        reply({ type: "run_ended", run_id: m.run_id });
      }
    });
    const run = await new RunnerExecutor(path).openRun(PATHS);
    await Promise.all([run.close(), run.close()]);
    await run.close();
    expect(ends).toEqual(["run-1"]);
  });
});

describe("agent side: failing closed", () => {
  it("RUNNER_UNAVAILABLE from connectRunner: no socket, a socket nobody listens on, a runner that drops or ignores the hello", async () => {
    const missing = join(dir, "missing.sock");
    await expect(connectRunner(missing)).rejects.toMatchObject({ code: "RUNNER_UNAVAILABLE" });
    const plainFile = join(dir, "plain.sock");
    await writeFile(plainFile, "");
    await expect(connectRunner(plainFile)).rejects.toMatchObject({ code: "RUNNER_UNAVAILABLE" });
    const drops = await fakeRunner((_m, _reply, socket) => socket.destroy());
    await expect(connectRunner(drops)).rejects.toMatchObject({ code: "RUNNER_UNAVAILABLE" });
    const silent = await fakeRunner(() => undefined);
    const e = await connectRunner(silent, 200).catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_UNAVAILABLE")).toBe(true);
    expect((e as Error).message).toContain(`oci-cred-agent runner --socket ${silent}`);
  });

  it("RUNNER_PROTOCOL_ERROR for an answer that is not the protocol: not JSON, another version, unknown fields, a line too long", async () => {
    for (const answer of [
      "hello\n",
      `${JSON.stringify({ type: "hello", protocol: 2, pid_namespace: true, busy: false })}\n`,
      `${JSON.stringify({ type: "hello", protocol: 1, pid_namespace: true, busy: false, extra: 1 })}\n`,
      `${JSON.stringify({ type: "run_ended", run_id: "run-1" })}\n`,
      "x".repeat(MAX_RUNNER_LINE_BYTES + 1),
    ]) {
      const path = await fakeRunner((_m, reply) => {
        reply(answer);
      });
      const e = await connectRunner(path).catch((error: unknown) => error);
      expect(isAgentError(e, "RUNNER_PROTOCOL_ERROR"), answer.slice(0, 80)).toBe(true);
    }
  });

  it("RUNNER_LOST when the runner closes the connection before the result", async () => {
    const path = await fakeRunner((m, reply, socket) => {
      if (m.type !== "start") return;
      reply({ type: "output", stream: "stdout", text: "half" });
      socket.end();
    });
    const req = request();
    const e = await (await new RunnerExecutor(path).openRun(PATHS)).runPhase(req).catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_LOST")).toBe(true);
    expect((e as Error).message).toContain("before tofu plan ended");
  });

  it("RUNNER_LOST when a canceled phase's result does not come within the grace and the slack", async () => {
    const path = await fakeRunner((m, reply) => {
      if (m.type === "start") reply({ type: "output", stream: "stdout", text: "ready\n" });
    });
    const controller = new AbortController();
    const req = request({
      graceMs: 50,
      signal: controller.signal,
      onOutput: () => {
        controller.abort();
      },
    });
    const run = await new RunnerExecutor(path, { cancelSlackMs: 50 }).openRun(PATHS);
    const e = await run.runPhase(req).catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_LOST")).toBe(true);
    expect((e as Error).message).toContain("did not end the canceled tofu plan");
  });

  it("a runner's refusal becomes the agent's own message for its code; the runner's words are never used", async () => {
    const path = await fakeRunner((_m, reply) => {
      reply('{"type":"error","code":"RUNNER_PATH_REFUSED"}\n');
    });
    const e = await (
      await new RunnerExecutor(path).openRun(PATHS)
    )
      .runPhase(request())
      .catch((error: unknown) => error);
    expect(isAgentError(e, "RUNNER_PATH_REFUSED")).toBe(true);
    expect((e as Error).message).toContain("--work-dir and --credentials-dir");
    const other = await fakeRunner((_m, reply) => {
      reply('{"type":"error","code":"RUNNER_PATH_REFUSED","message":"ghp_LEAKED"}\n');
    });
    const e2 = await (
      await new RunnerExecutor(other).openRun(PATHS)
    )
      .runPhase(request())
      .catch((error: unknown) => error);
    expect(isAgentError(e2, "RUNNER_PROTOCOL_ERROR")).toBe(true);
    expect((e2 as Error).message).not.toContain("LEAKED");
  });
});

describe("the protocol's framing", () => {
  it("reads lines across chunk boundaries, a multi-byte character cut in two included", () => {
    const reader = new MessageLineReader(64);
    const bytes = Buffer.from('{"a":"é"}\n{"b":1}\n', "utf8");
    const lines: string[] = [];
    for (let i = 0; i < bytes.length; i++) lines.push(...reader.push(bytes.subarray(i, i + 1)));
    expect(lines).toEqual(['{"a":"é"}', '{"b":1}']);
    expect(() => new MessageLineReader(8).push(Buffer.from("123456789"))).toThrow(AgentError);
  });

  it("pieces() cuts long output without splitting a surrogate pair", () => {
    const text = `ab${"😀".repeat(3)}`;
    const cut = pieces(text, 3);
    expect(cut.join("")).toBe(text);
    for (const p of cut) expect(Buffer.from(p, "utf8").toString("utf8")).toBe(p);
    expect(Math.max(...cut.map((p) => p.length))).toBeLessThanOrEqual(3);
  });

  it("the agent's start request refuses relative paths, bad run ids and NULs", () => {
    const start = {
      type: "start",
      protocol: 1,
      run_id: "r",
      phase: "init",
      planned: false,
      workspace: "/w",
      credentials: "/c",
      env: {},
      grace_ms: 0,
    };
    expect(parseAgentMessage(JSON.stringify(start))).toBeDefined();
    for (const bad of [
      { workspace: "w" },
      { credentials: "/c\0" },
      { run_id: ".." },
      { env: { "A=B": "x" } },
      { env: { A: "x\0" } },
      { grace_ms: -1 },
      { phase: "destroy" },
    ])
      expect(parseAgentMessage(JSON.stringify({ ...start, ...bad })), JSON.stringify(bad)).toBeUndefined();
  });
});

describe("the runner's path rule and start-up checks", () => {
  it("isInside: strictly under the directory, as given and with links resolved", async () => {
    const root = join(dir, "inside");
    await mkdir(join(root, "a", "b"), { recursive: true });
    await mkdir(join(dir, "elsewhere"));
    await symlink(join(dir, "elsewhere"), join(root, "a", "out"));
    expect(await isInside(root, join(root, "a", "b"))).toBe(true);
    expect(await isInside(root, root)).toBe(false);
    expect(await isInside(root, join(root, "a", "out"))).toBe(false);
    expect(await isInside(root, `${root}/a/../../elsewhere`)).toBe(false);
    expect(await isInside(root, join(root, "a", "missing"))).toBe(false);
    expect(await isInside(root, "a/b")).toBe(false);
    expect(await isInside(`${root}-x`, join(root, "a"))).toBe(false);
  });

  async function start(extra: { ptrace: string | undefined; pidNamespace?: boolean }): Promise<unknown> {
    const base = await mkdtemp(join(dir, "start-"));
    const scopeFile = join(base, "ptrace_scope");
    if (extra.ptrace !== undefined) await writeFile(scopeFile, extra.ptrace);
    const lines: string[] = [];
    const log = await createLogger({
      level: "info",
      format: "json",
      redactor: new Redactor(),
      sink: { write: (t) => lines.push(t) },
    });
    try {
      const server = await startRunnerServer({
        socketPath: join(base, "r.sock"),
        tofuBin: "tofu",
        workDir: base,
        credentialsDir: base,
        stateDir: join(base, "state"),
        pidNamespace: extra.pidNamespace ?? false,
        allowPtrace: false,
        log,
        onFatal: () => undefined,
        ptraceScopeFile: scopeFile,
      });
      await server.close();
      return "started";
    } catch (error) {
      return error;
    }
  }

  it("refuses to start where a phase could ptrace it (RUNNER_PTRACE_UNRESTRICTED): no Yama, or ptrace_scope 0", async () => {
    for (const scope of [undefined, "0\n"]) {
      const e = await start({ ptrace: scope });
      expect(isAgentError(e, "RUNNER_PTRACE_UNRESTRICTED"), String(scope)).toBe(true);
      expect((e as Error).message).toContain("kernel.yama.ptrace_scope=1");
      expect((e as Error).message).toContain("--allow-ptrace");
    }
    expect(await start({ ptrace: "1\n" })).toBe("started");
    expect(await start({ ptrace: "2\n" })).toBe("started");
  });

  it("refuses --pid-namespace in a PID namespace it shares (this test's): RUNNER_PID_NAMESPACE_SHARED", async () => {
    const e = await start({ ptrace: "1", pidNamespace: true });
    expect(isAgentError(e, "RUNNER_PID_NAMESPACE_SHARED")).toBe(true);
  });
});
