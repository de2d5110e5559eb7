/**
 * Runs one tofu phase as a child process in its own process group, streams its output in
 * whole lines (so a secret is never split across two chunks before redaction), and cancels it
 * the way operators expect: SIGTERM to the whole group, a grace period, then SIGKILL.
 */
import { spawn } from "node:child_process";
import { StringDecoder } from "node:string_decoder";
import { AgentError } from "../core/errors.js";
import type { Phase } from "../protocol/agent-api.js";

export interface TofuCommand {
  /** Executable to run (`tofu`, a path, or the agent itself for the built-in stand-in). */
  readonly file: string;
  /** Arguments placed before the phase's own (the stand-in's subcommand name). */
  readonly argsPrefix: readonly string[];
}

function tofuArgs(phase: Phase, planned: boolean): string[] {
  switch (phase) {
    case "init":
      return ["init", "-input=false", "-no-color"];
    case "plan":
      return ["plan", "-input=false", "-no-color", "-out=tfplan"];
    case "apply":
      return planned
        ? ["apply", "-input=false", "-no-color", "-auto-approve", "tfplan"]
        : ["apply", "-input=false", "-no-color", "-auto-approve"];
  }
}

export interface PhaseRunOptions {
  readonly command: TofuCommand;
  readonly phase: Phase;
  readonly planned: boolean;
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /** Aborting it cancels the phase (SIGTERM, grace, SIGKILL). */
  readonly signal: AbortSignal;
  readonly graceMs: number;
  /** Called with whole lines of output (stdout and stderr interleaved), at most `maxLineBytes` each. */
  readonly onOutput: (text: string) => void;
  readonly maxLineBytes?: number;
  /**
   * Masks secrets. A line longer than `maxLineBytes` must be cut before its end: the splitter
   * masks what it holds first and keeps back the last `longestSecret() - 1` characters, where an
   * unmasked beginning of a secret that continues in the next read could be, so that no secret is
   * ever cut in two before it is masked.
   */
  readonly redact?: (text: string) => string;
  readonly longestSecret?: () => number;
}

export interface PhaseResult {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly durationMs: number;
  readonly canceled: boolean;
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

export function runPhase(opts: PhaseRunOptions): Promise<PhaseResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    if (opts.signal.aborted) {
      resolve({ exitCode: null, signal: null, durationMs: 0, canceled: true });
      return;
    }
    const child = spawn(opts.command.file, [...opts.command.argsPrefix, ...tofuArgs(opts.phase, opts.planned)], {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    const out = new LineSplitter(opts.onOutput, opts.maxLineBytes ?? 16 * 1024, opts.redact, opts.longestSecret);
    const err = new LineSplitter(opts.onOutput, opts.maxLineBytes ?? 16 * 1024, opts.redact, opts.longestSecret);
    child.stdout.on("data", (c: Buffer) => {
      out.push(c);
    });
    child.stderr.on("data", (c: Buffer) => {
      err.push(c);
    });
    let canceled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const signalGroup = (sig: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        // The group is gone already.
      }
    };
    const onAbort = (): void => {
      canceled = true;
      signalGroup("SIGTERM");
      killTimer = setTimeout(() => {
        signalGroup("SIGKILL");
      }, opts.graceMs);
    };
    opts.signal.addEventListener("abort", onAbort, { once: true });
    child.once("error", (error: NodeJS.ErrnoException) => {
      opts.signal.removeEventListener("abort", onAbort);
      if (killTimer) clearTimeout(killTimer);
      reject(
        new AgentError(
          "TOFU_NOT_FOUND",
          `cannot start ${opts.command.file} (${error.code ?? "error"}); install OpenTofu or point --tofu-bin at the tofu executable`,
          { tofu_bin: opts.command.file },
        ),
      );
    });
    let exit: { code: number | null; signal: NodeJS.Signals | null } = { code: null, signal: null };
    child.once("exit", (code, signal) => {
      exit = { code, signal };
      // Anything the phase left running in its group goes with it (and releases the pipes).
      signalGroup("SIGKILL");
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
