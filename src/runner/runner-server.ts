/**
 * `oci-cred-agent runner`: runs the phases an agent asks for (`run --executor runner:PATH`), in a
 * container that holds no key, no token and no service-account token. It listens on a Unix
 * socket (mode 0660: the agent reaches it through the group the pod shares), speaks the runner
 * protocol (src/protocol/runner-api.ts), and runs one phase at a time:
 *
 *   1. the request's workspace must lie under --work-dir and its credential directory under
 *      --credentials-dir (the agent is trusted, but the check is cheap and fails closed);
 *   2. tofu runs in its own process group, in the workspace, with the request's environment and
 *      the run's private HOME and TMPDIR (under --state-dir, 0700), through runProcess;
 *   3. after it, everything the phase left running is SIGKILLed (leftovers.ts), the directories
 *      it made in the workspace are opened to the group (the agent removes the workspace), and
 *      only then does the agent get the result;
 *   4. a canceled phase (the agent's cancel, or its connection dropping) gets SIGTERM, the grace,
 *      then SIGKILL.
 * The run's private HOME and TMPDIR go when the agent ends the run, when another run starts,
 * and at start-up. The runner never logs a phase's output: it does not know the secrets in it.
 */
import { chmod, lstat, realpath, unlink } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import type { Logger } from "pino";
import { listenOnSocket, takeSocketPath } from "../fs/socket-path.js";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import type { PhaseResult } from "../execution/phase-executor.js";
import { tofuArgs } from "../execution/phase-executor.js";
import { tofuNotFound } from "../execution/direct-executor.js";
import { processGroupStop, runProcess } from "../execution/phase-process.js";
import {
  encodeMessage,
  MessageLineReader,
  parseAgentMessage,
  RUNNER_OUTPUT_PIECE_CHARS,
  RUNNER_PROTOCOL_VERSION,
  type RunnerMessage,
  type RunnerRefusal,
  type StartRequest,
} from "../protocol/runner-api.js";
import { killLeftovers, otherProcessesInNamespace, ptraceRestricted, type KillScope } from "./leftovers.js";
import { isInside, openDirectories, RunDirs, type RunHome } from "./run-dirs.js";

export interface RunnerServerOptions {
  readonly socketPath: string;
  readonly tofuBin: string;
  /** Workspaces must lie under it (the agent's --work-dir). */
  readonly workDir: string;
  /** Run credential directories must lie under it (the agent's --credentials-dir). */
  readonly credentialsDir: string;
  /** Each run's private HOME and TMPDIR go below it. */
  readonly stateDir: string;
  /** Kill every other process of the PID namespace after each phase; implied when the runner is PID 1. */
  readonly pidNamespace: boolean;
  /** Run even where a phase could attach to the runner with ptrace. */
  readonly allowPtrace: boolean;
  readonly log: Logger;
  /** Called when the runner can no longer serve (its socket was replaced); it should exit. */
  readonly onFatal: (error: AgentError) => void;
  /** For tests: where Yama's ptrace_scope is read. */
  readonly ptraceScopeFile?: string;
}

export interface RunnerServer {
  /** Whether leftovers are killed namespace-wide after each phase. */
  readonly pidNamespace: boolean;
  /** Stops listening, cancels a running phase (SIGTERM, grace, SIGKILL) and waits for it. */
  close(): Promise<void>;
}

/** How long a connection may stay silent before its first message. */
const FIRST_MESSAGE_TIMEOUT_MS = 10_000;

/** Splits text into pieces of at most `max` characters, never inside a surrogate pair. Pure. */
export function pieces(text: string, max: number): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < text.length) {
    let end = Math.min(text.length, at + max);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && end - at > 1 && last >= 0xd800 && last <= 0xdbff) end--;
    out.push(text.slice(at, end));
    at = end;
  }
  return out;
}

export async function startRunnerServer(options: RunnerServerOptions): Promise<RunnerServer> {
  const { log } = options;
  if (!options.allowPtrace && !(await ptraceRestricted(options.ptraceScopeFile))) {
    throw new AgentError(
      "RUNNER_PTRACE_UNRESTRICTED",
      "a phase could attach to the runner with ptrace and outlive its phase inside it: kernel.yama.ptrace_scope is 0 or Yama is missing on this kernel; set kernel.yama.ptrace_scope=1 on the node (a host sysctl, not namespaced), or give --allow-ptrace to accept that risk",
    );
  }
  const pidNamespace = options.pidNamespace || process.pid === 1;
  if (pidNamespace) {
    const others = otherProcessesInNamespace();
    if (others > 0) {
      throw new AgentError(
        "RUNNER_PID_NAMESPACE_SHARED",
        `--pid-namespace needs a PID namespace of the runner's own (the runner as PID 1, or the only child of an init such as tini), but ${others} other processes run in it; run the runner as its container's command (no shareProcessNamespace), or leave --pid-namespace out`,
        { others },
      );
    }
    if (process.pid === 1) {
      log.warn(
        { event: "runner_is_pid_1" },
        "the runner is PID 1: leftovers it kills stay zombies (Node reaps only its own children) until it exits; run it under tini, as the image's ENTRYPOINT does",
      );
    }
  }
  const dirs = new RunDirs(options.stateDir);
  await dirs.prepare();
  await takeSocketPath(options.socketPath, "RUNNER_SOCKET_IN_USE", "runner");

  let busy = false;
  let current: { home: RunHome; workspace: string } | undefined;
  let running: { controller: AbortController; done: Promise<void> } | undefined;
  let closing = false;
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: false });
  server.maxConnections = 16;
  await listenOnSocket(server, options.socketPath);
  await chmod(options.socketPath, 0o660);
  const bound = await lstat(options.socketPath);

  const scopeFor = async (home: RunHome | undefined): Promise<KillScope> =>
    pidNamespace
      ? { kind: "pid-namespace" }
      : {
          kind: "own-processes",
          // /proc shows working directories with every link resolved.
          dirs: await Promise.all([options.workDir, options.stateDir].map((dir) => realpath(dir).catch(() => dir))),
          ...(home === undefined ? {} : { environMarker: `HOME=${home.home}` }),
        };

  /** After a phase or a run: nothing of it runs any more, and the agent can remove its workspace. */
  const cleanUp = async (runId: string, workspace: string | undefined): Promise<number> => {
    const killed = await killLeftovers(await scopeFor(current?.home));
    if (killed > 0)
      log.warn(
        { event: "leftovers_killed", run_id: runId, count: killed },
        `killed ${killed} processes the run left running`,
      );
    if (workspace !== undefined) await openDirectories(workspace, 0o770);
    return killed;
  };

  /** The socket must still be ours: a phase (the runner's own user) could have replaced it. */
  const checkSocket = async (): Promise<void> => {
    const st = await lstat(options.socketPath).catch(() => undefined);
    if (st?.ino === bound.ino && st.dev === bound.dev) return;
    const error = new AgentError(
      "RUNNER_SOCKET_IN_USE",
      `the runner's socket ${options.socketPath} was removed or replaced (by a phase?); the runner stops so that it is restarted with a socket of its own`,
      { path: options.socketPath },
    );
    log.error({ event: "runner_socket_replaced", code: error.code }, error.message);
    options.onFatal(error);
  };

  const runPhase = async (
    request: StartRequest,
    controller: AbortController,
    send: (message: RunnerMessage) => void,
  ): Promise<RunnerRefusal | undefined> => {
    if (
      !(await isInside(options.workDir, request.workspace)) ||
      !(await isInside(options.credentialsDir, request.credentials))
    ) {
      log.warn(
        { event: "request_refused", run_id: request.run_id, code: "RUNNER_PATH_REFUSED" },
        `refused run ${request.run_id}: its workspace or credential directory is not under --work-dir ${options.workDir} or --credentials-dir ${options.credentialsDir}`,
      );
      return "RUNNER_PATH_REFUSED";
    }
    if (current !== undefined && current.home.runId !== request.run_id) {
      // Another run starts: whatever is left of the last one goes first.
      await cleanUp(current.home.runId, current.workspace);
      current = undefined;
    }
    const home = await dirs.open(request.run_id);
    current = { home, workspace: request.workspace };
    log.info(
      { event: "phase_started", run_id: request.run_id, phase: request.phase },
      `tofu ${request.phase} of run ${request.run_id}`,
    );
    let result: PhaseResult | undefined;
    let refusal: RunnerRefusal | undefined;
    try {
      result = await runProcess({
        file: options.tofuBin,
        args: tofuArgs(request.phase, request.planned),
        cwd: request.workspace,
        env: { ...request.env, HOME: home.home, TMPDIR: home.tmp },
        signal: controller.signal,
        graceMs: request.grace_ms,
        stop: processGroupStop,
        maxLineBytes: RUNNER_OUTPUT_PIECE_CHARS,
        notFound: () => tofuNotFound(options.tofuBin),
        onOutput: (text, stream) => {
          for (const piece of pieces(text, RUNNER_OUTPUT_PIECE_CHARS)) send({ type: "output", stream, text: piece });
        },
      });
    } catch (error) {
      refusal = isAgentError(error, "TOFU_NOT_FOUND") ? "TOFU_NOT_FOUND" : "INTERNAL";
      log.error(
        { event: "phase_not_started", run_id: request.run_id, phase: request.phase, code: refusal },
        isAgentError(error) ? error.message : "tofu could not be started",
      );
    }
    const killed = await cleanUp(request.run_id, request.workspace);
    await checkSocket();
    if (result === undefined) return refusal ?? "INTERNAL";
    log.info(
      {
        event: "phase_finished",
        run_id: request.run_id,
        phase: request.phase,
        exit_code: result.exitCode,
        signal: result.signal,
        canceled: result.canceled,
        duration_ms: Math.round(result.durationMs),
      },
      `tofu ${request.phase} of run ${request.run_id} ended`,
    );
    send({
      type: "result",
      exit_code: result.exitCode,
      signal: result.signal,
      duration_ms: result.durationMs,
      canceled: result.canceled,
      leftovers_killed: killed,
    });
    return undefined;
  };

  const endRun = async (runId: string): Promise<void> => {
    await cleanUp(runId, current?.home.runId === runId ? current.workspace : undefined);
    if (current?.home.runId === runId) current = undefined;
    await dirs.remove(runId);
    log.info({ event: "run_ended", run_id: runId }, `run ${runId} ended; its HOME and TMPDIR are removed`);
  };

  /** One request at a time, whatever it is; a second one meanwhile is refused. */
  const exclusive = (
    socket: Socket,
    work: (controller: AbortController) => Promise<RunnerRefusal | undefined>,
  ): AbortController | undefined => {
    const send = (message: RunnerMessage): void => {
      if (!socket.destroyed) socket.write(encodeMessage(message));
    };
    if (busy || closing) {
      log.warn({ event: "request_refused", code: "RUNNER_BUSY" }, "refused a request: a phase is running");
      send({ type: "error", code: "RUNNER_BUSY" });
      socket.end();
      return undefined;
    }
    busy = true;
    const controller = new AbortController();
    const done = work(controller)
      .catch((error: unknown) => {
        log.error(
          {
            event: "runner_failed",
            code: isAgentError(error) ? error.code : "INTERNAL",
            errno: errnoCode(error) ?? null,
          },
          "the runner failed while handling a request",
        );
        return "INTERNAL" as const;
      })
      .then((refusal) => {
        if (refusal !== undefined) send({ type: "error", code: refusal });
        socket.end();
      })
      .finally(() => {
        busy = false;
        running = undefined;
      });
    running = { controller, done };
    return controller;
  };

  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    const reader = new MessageLineReader();
    let phase: AbortController | undefined;
    let first = true;
    const send = (message: RunnerMessage): void => {
      if (!socket.destroyed) socket.write(encodeMessage(message));
    };
    const broken = (): void => {
      send({ type: "error", code: "RUNNER_PROTOCOL_ERROR" });
      socket.end();
      phase?.abort();
    };
    const idle = setTimeout(() => {
      socket.destroy();
    }, FIRST_MESSAGE_TIMEOUT_MS);
    socket.on("data", (chunk: Buffer) => {
      let lines: string[];
      try {
        lines = reader.push(chunk);
      } catch {
        broken();
        return;
      }
      for (const line of lines) {
        const message = parseAgentMessage(line);
        if (message === undefined) {
          broken();
          return;
        }
        if (!first) {
          // Only a cancel may follow the request, on the phase's own connection.
          if (message.type === "cancel" && phase !== undefined) phase.abort();
          else {
            broken();
            return;
          }
          continue;
        }
        first = false;
        clearTimeout(idle);
        switch (message.type) {
          case "hello":
            send({ type: "hello", protocol: RUNNER_PROTOCOL_VERSION, pid_namespace: pidNamespace, busy });
            socket.end();
            break;
          case "start":
            phase = exclusive(socket, (controller) => runPhase(message, controller, send));
            break;
          case "end_run":
            exclusive(socket, async () => {
              await endRun(message.run_id);
              send({ type: "run_ended", run_id: message.run_id });
              return undefined;
            });
            break;
          case "cancel":
            broken();
            return;
        }
      }
    });
    socket.on("error", () => {
      // The agent went away; "close" follows.
    });
    socket.on("close", () => {
      clearTimeout(idle);
      sockets.delete(socket);
      // A phase whose agent is gone is canceled: SIGTERM, the grace, SIGKILL.
      phase?.abort();
    });
  });

  log.info(
    {
      event: "runner_listening",
      socket: options.socketPath,
      pid_namespace: pidNamespace,
      tofu_bin: options.tofuBin,
      work_dir: options.workDir,
      credentials_dir: options.credentialsDir,
    },
    `runner listening on ${options.socketPath}`,
  );

  return {
    pidNamespace,
    async close(): Promise<void> {
      closing = true;
      const stopped = new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      running?.controller.abort();
      await running?.done;
      if (current !== undefined) await endRun(current.home.runId);
      for (const socket of sockets) socket.destroy();
      await stopped;
      const st = await lstat(options.socketPath).catch(() => undefined);
      if (st?.ino === bound.ino && st.dev === bound.dev) await unlink(options.socketPath).catch(() => undefined);
    },
  };
}
