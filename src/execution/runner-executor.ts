/**
 * `run --executor runner:PATH`: the agent's half of the runner split. Each phase goes to the
 * runner (`oci-cred-agent runner --socket PATH`, another container without the key or the
 * token) over one connection to its Unix socket: the request, then the output as it comes, then
 * the result. Secrets are masked here, on the agent's side: the runner sends raw output (it
 * does not know the secrets), cut only at newlines or in long pieces, and each stream's pieces
 * are rejoined by a LineSplitter that masks before it cuts. The runner is treated as less
 * trusted than the agent: every line it sends is bounded and validated, its refusals are codes
 * (the messages are written here), and a silent or vanished runner fails the phase.
 */
import { createConnection } from "node:net";
import { constants as osConstants } from "node:os";
import { AgentError } from "../core/errors.js";
import {
  encodeMessage,
  MessageLineReader,
  parseRunnerMessage,
  RUNNER_PROTOCOL_VERSION,
  type AgentMessage,
  type RunnerHello,
  type RunnerMessage,
  type RunnerRefusal,
} from "../protocol/runner-api.js";
import type { PhaseExecutor, PhaseRequest, PhaseResult, RunExecution, RunPaths } from "./phase-executor.js";
import { LineSplitter } from "./phase-process.js";
import { shareWithRunner, type SharedDirs } from "./share-with-runner.js";

/** How long the runner may take to answer a hello or an end of run. */
const DEFAULT_ANSWER_TIMEOUT_MS = 10_000;
/** How long past the cancel grace the runner may take to report a canceled phase. */
const CANCEL_SLACK_MS = 30_000;

export interface RunnerExecutorOptions {
  /** How long a hello or an end of run may take (default 10 s). */
  readonly answerTimeoutMs?: number;
  /** How long past `graceMs` a canceled phase's result may take before the phase is lost (default 30 s). */
  readonly cancelSlackMs?: number;
  /** The agent's directories: each run's credentials and workspace are given to the runner's group. */
  readonly shareWith?: SharedDirs;
}

function unavailable(socketPath: string, why: string): AgentError<"RUNNER_UNAVAILABLE"> {
  return new AgentError(
    "RUNNER_UNAVAILABLE",
    `no runner answers on ${socketPath} (${why}); start \`oci-cred-agent runner --socket ${socketPath}\` in the runner container, and check that the agent and the runner mount the same emptyDir at its directory (or fix --executor runner:PATH)`,
    { socket: socketPath, reason: why },
  );
}

function lost(socketPath: string, what: string): AgentError<"RUNNER_LOST"> {
  return new AgentError(
    "RUNNER_LOST",
    `the runner on ${socketPath} ${what}; the phase is lost: check the runner container's log and restarts`,
    { socket: socketPath },
  );
}

function protocolError(socketPath: string): AgentError<"RUNNER_PROTOCOL_ERROR"> {
  return new AgentError(
    "RUNNER_PROTOCOL_ERROR",
    `the runner on ${socketPath} sent a message that is not runner protocol ${RUNNER_PROTOCOL_VERSION}; run the same oci-cred-agent version as agent and runner`,
    { socket: socketPath },
  );
}

/** The agent's own message for a runner's refusal (a runner's words never reach logs or the control plane). */
function refused(socketPath: string, code: RunnerRefusal): AgentError {
  const messages: Record<RunnerRefusal, string> = {
    RUNNER_BUSY: `the runner on ${socketPath} is running another phase; a runner runs one phase at a time: set concurrency to 1 for an agent with --executor runner:PATH, or give each run slot a runner of its own`,
    RUNNER_PATH_REFUSED: `the runner on ${socketPath} refused the run's workspace or credential directory: give \`oci-cred-agent runner\` the agent's --work-dir and --credentials-dir, and mount both volumes at the same paths in both containers`,
    RUNNER_PROTOCOL_ERROR: `the runner on ${socketPath} could not read the agent's request; run the same oci-cred-agent version as agent and runner`,
    TOFU_NOT_FOUND: `the runner on ${socketPath} cannot start tofu; install OpenTofu in the runner's image or point \`oci-cred-agent runner --tofu-bin\` at the tofu executable`,
    INTERNAL: `the runner on ${socketPath} failed unexpectedly; check the runner container's log`,
  };
  return new AgentError(code, messages[code], { socket: socketPath });
}

function signalOf(name: string | null): NodeJS.Signals | null {
  if (name === null) return null;
  return Object.hasOwn(osConstants.signals, name) ? (name as NodeJS.Signals) : null;
}

/**
 * One request on a connection of its own: sends `request`, hands every message the runner sends
 * to `onMessage` (which returns a value to finish with, or undefined to read on), and rejects
 * with RUNNER_UNAVAILABLE when nothing answers, RUNNER_LOST when the connection ends first.
 */
function exchange<T>(
  socketPath: string,
  request: AgentMessage,
  onMessage: (message: RunnerMessage) => T | undefined,
  options: {
    timeoutMs?: number;
    signal?: AbortSignal;
    /** On abort: `send` a message on the connection, `deadline` the answer (replacing any timeout). */
    onAbort?: (send: (message: AgentMessage) => void, deadline: (ms: number, error: () => AgentError) => void) => void;
    what: string;
  },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = createConnection(socketPath);
    const reader = new MessageLineReader();
    let connected = false;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (action: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      action();
    };
    const armTimer = (ms: number, error: () => AgentError): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = setTimeout(() => {
        settle(() => {
          reject(error());
        });
      }, ms);
    };
    const onAbort = (): void => {
      if (!settled && options.onAbort) options.onAbort((message) => socket.write(encodeMessage(message)), armTimer);
    };
    if (options.timeoutMs !== undefined)
      armTimer(options.timeoutMs, () =>
        connected
          ? lost(socketPath, `did not answer within ${options.timeoutMs ?? 0} ms`)
          : unavailable(socketPath, "no connection within the timeout"),
      );
    socket.once("connect", () => {
      connected = true;
      socket.write(encodeMessage(request));
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener("abort", onAbort, { once: true });
    });
    socket.on("data", (chunk: Buffer) => {
      if (settled) return;
      let lines: string[];
      try {
        lines = reader.push(chunk);
      } catch {
        settle(() => {
          reject(protocolError(socketPath));
        });
        return;
      }
      for (const line of lines) {
        let done: T | undefined;
        try {
          const message = parseRunnerMessage(line);
          if (message === undefined) throw protocolError(socketPath);
          if (message.type === "error") throw refused(socketPath, message.code);
          done = onMessage(message);
        } catch (error) {
          settle(() => {
            reject(error instanceof Error ? error : protocolError(socketPath));
          });
          return;
        }
        if (done !== undefined) {
          const value = done;
          settle(() => {
            resolve(value);
          });
          return;
        }
      }
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      settle(() => {
        reject(
          connected
            ? lost(socketPath, `failed (${error.code ?? "error"}) ${options.what}`)
            : unavailable(socketPath, error.code ?? "error"),
        );
      });
    });
    socket.on("close", () => {
      settle(() => {
        reject(lost(socketPath, `closed the connection ${options.what}`));
      });
    });
  });
}

/**
 * The start-up probe: connects, says hello, and returns the runner's answer. Fails closed with
 * RUNNER_UNAVAILABLE when nothing answers (no socket, refused, silent) and RUNNER_PROTOCOL_ERROR
 * when something else answers. The composition root calls it before the agent registers.
 */
export function connectRunner(socketPath: string, timeoutMs = DEFAULT_ANSWER_TIMEOUT_MS): Promise<RunnerHello> {
  return exchange(
    socketPath,
    { type: "hello", protocol: RUNNER_PROTOCOL_VERSION },
    (message) => {
      if (message.type !== "hello") throw protocolError(socketPath);
      return message;
    },
    { timeoutMs, what: "before it said hello" },
  ).catch((error: unknown) => {
    // A runner that takes the connection and drops it unanswered is no runner either.
    if (error instanceof AgentError && error.code === "RUNNER_LOST")
      throw unavailable(socketPath, "it took the connection but sent no hello");
    throw error;
  });
}

export class RunnerExecutor implements PhaseExecutor {
  readonly isolation = "runner";
  private readonly answerTimeoutMs: number;
  private readonly cancelSlackMs: number;
  private readonly shared: SharedDirs | undefined;

  constructor(
    readonly socketPath: string,
    options: RunnerExecutorOptions = {},
  ) {
    this.answerTimeoutMs = options.answerTimeoutMs ?? DEFAULT_ANSWER_TIMEOUT_MS;
    this.cancelSlackMs = options.cancelSlackMs ?? CANCEL_SLACK_MS;
    this.shared = options.shareWith;
  }

  async openRun(paths: RunPaths): Promise<RunExecution> {
    let closing: Promise<void> | undefined;
    if (this.shared !== undefined) await shareWithRunner(paths, this.socketPath, this.shared);
    return {
      runPhase: (request: PhaseRequest) => this.runPhase(paths, request),
      // Kills what the run left (again) and removes its private HOME and TMPDIR in the runner.
      close: () => (closing ??= this.endRun(paths.runId)),
    };
  }

  private runPhase(paths: RunPaths, request: PhaseRequest): Promise<PhaseResult> {
    if (request.signal.aborted) return Promise.resolve({ exitCode: null, signal: null, durationMs: 0, canceled: true });
    const maxLineBytes = request.maxLineBytes ?? 16 * 1024;
    const splitter = (stream: "stdout" | "stderr"): LineSplitter =>
      new LineSplitter(
        (text) => {
          request.onOutput(text, stream);
        },
        maxLineBytes,
        request.redact,
        request.longestSecret,
      );
    const streams = { stdout: splitter("stdout"), stderr: splitter("stderr") };
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.env)) if (value !== undefined) env[name] = value;
    let canceled = false;
    return exchange<PhaseResult>(
      this.socketPath,
      {
        type: "start",
        protocol: RUNNER_PROTOCOL_VERSION,
        run_id: paths.runId,
        phase: request.phase,
        planned: request.planned,
        workspace: paths.workspace,
        credentials: paths.credentials,
        env,
        grace_ms: request.graceMs,
      },
      (message) => {
        switch (message.type) {
          case "output":
            streams[message.stream].push(Buffer.from(message.text, "utf8"));
            return undefined;
          case "result":
            streams.stdout.end();
            streams.stderr.end();
            return {
              exitCode: message.exit_code,
              signal: signalOf(message.signal),
              durationMs: message.duration_ms,
              canceled: message.canceled || canceled,
            };
          default:
            throw protocolError(this.socketPath);
        }
      },
      {
        signal: request.signal,
        what: `before tofu ${request.phase} ended`,
        onAbort: (send, deadline) => {
          canceled = true;
          send({ type: "cancel" });
          // The runner owes the result within the grace and some slack; past that the phase is lost.
          deadline(request.graceMs + this.cancelSlackMs, () =>
            lost(
              this.socketPath,
              `did not end the canceled tofu ${request.phase} within ${request.graceMs + this.cancelSlackMs} ms`,
            ),
          );
        },
      },
    );
  }

  private endRun(runId: string): Promise<void> {
    return exchange<true>(
      this.socketPath,
      { type: "end_run", run_id: runId },
      (message) => {
        if (message.type !== "run_ended" || message.run_id !== runId) throw protocolError(this.socketPath);
        return true;
      },
      { timeoutMs: this.answerTimeoutMs, what: "before the run's end was confirmed" },
    ).then(() => undefined);
  }
}
