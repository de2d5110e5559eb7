/**
 * One phase as a child process: spawned in its own process group, its output streamed in whole
 * lines (so a secret is never split across two chunks before redaction), and canceled the way
 * operators expect: SIGTERM, a grace period, then SIGKILL. How the signals reach the phase's
 * processes is the caller's `stop` (a process group directly; through the sandbox's PID
 * namespace under bubblewrap). Every executor (direct, sandbox, the runner) uses it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { StringDecoder } from "node:string_decoder";
import type { AgentError } from "../core/errors.js";
import type { PhaseOutputOptions, PhaseResult } from "./phase-executor.js";

/** How a phase's processes are told to stop, and killed. */
export interface StopStrategy {
  /** The graceful request (cancel): SIGTERM to what the phase runs. */
  terminate(child: ChildProcess): void;
  /** The end: nothing the phase started may survive it. */
  kill(child: ChildProcess): void;
}

/** A process group, signalled as a whole (`kill(-pgid)`). */
export const processGroupStop: StopStrategy = {
  terminate: (child) => {
    signalGroup(child, "SIGTERM");
  },
  kill: (child) => {
    signalGroup(child, "SIGKILL");
  },
};

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // The group is gone already.
  }
}

export interface ProcessSpec extends PhaseOutputOptions {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /** Aborting it cancels the phase (terminate, grace, kill). */
  readonly signal: AbortSignal;
  readonly graceMs: number;
  readonly stop: StopStrategy;
  /** Open file descriptors the process gets as 3, 4, ... (the sandbox's system call filter). */
  readonly extraFds?: readonly number[];
  /** What the phase is, for the error when it cannot start (the tofu executable, or the sandbox tool). */
  readonly notFound: () => AgentError;
}

export class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private pending = "";

  constructor(
    private readonly emit: (text: string) => void,
    private readonly maxBytes: number,
    private readonly redact: (text: string) => string = (t) => t,
    private readonly longestSecret: () => number = () => 0,
  ) {}

  push(chunk: Buffer): void {
    this.pending += this.decoder.write(chunk);
    const lastNl = this.pending.lastIndexOf("\n");
    if (lastNl >= 0) {
      this.emit(this.pending.slice(0, lastNl + 1));
      this.pending = this.pending.slice(lastNl + 1);
    }
    // A line too long to wait for its end: mask what is held, then emit all but the tail where
    // the unmasked start of a secret still arriving could be.
    const holdBack = Math.max(0, this.longestSecret() - 1);
    if (this.pending.length > this.maxBytes + holdBack) {
      this.pending = this.redact(this.pending);
      const cut = this.pending.length - holdBack;
      for (let at = 0; at < cut; at += this.maxBytes)
        this.emit(this.pending.slice(at, Math.min(cut, at + this.maxBytes)));
      if (cut > 0) this.pending = this.pending.slice(cut);
    }
  }

  end(): void {
    this.pending += this.decoder.end();
    if (this.pending !== "") this.emit(this.pending);
    this.pending = "";
  }
}

export function runProcess(opts: ProcessSpec): Promise<PhaseResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    if (opts.signal.aborted) {
      resolve({ exitCode: null, signal: null, durationMs: 0, canceled: true });
      return;
    }
    const child = spawn(opts.file, opts.args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe", ...(opts.extraFds ?? [])],
      detached: true,
    });
    const maxLineBytes = opts.maxLineBytes ?? 16 * 1024;
    const out = new LineSplitter(
      (text) => {
        opts.onOutput(text, "stdout");
      },
      maxLineBytes,
      opts.redact,
      opts.longestSecret,
    );
    const err = new LineSplitter(
      (text) => {
        opts.onOutput(text, "stderr");
      },
      maxLineBytes,
      opts.redact,
      opts.longestSecret,
    );
    // Pipes, as stdio asks (0 ignored, 1 and 2 piped, then the extra descriptors).
    child.stdout?.on("data", (c: Buffer) => {
      out.push(c);
    });
    child.stderr?.on("data", (c: Buffer) => {
      err.push(c);
    });
    let canceled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      canceled = true;
      opts.stop.terminate(child);
      killTimer = setTimeout(() => {
        opts.stop.kill(child);
      }, opts.graceMs);
    };
    opts.signal.addEventListener("abort", onAbort, { once: true });
    child.once("error", () => {
      opts.signal.removeEventListener("abort", onAbort);
      if (killTimer) clearTimeout(killTimer);
      reject(opts.notFound());
    });
    let exit: { code: number | null; signal: NodeJS.Signals | null } = { code: null, signal: null };
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      // Anything the phase left running goes with it (and releases the pipes).
      opts.stop.kill(child);
    });
    child.once("close", () => {
      opts.signal.removeEventListener("abort", onAbort);
      if (killTimer) clearTimeout(killTimer);
      const { code: exitCode, signal } = exit;
      out.end();
      err.end();
      resolve({ exitCode, signal, durationMs: performance.now() - started, canceled });
    });
  });
}
