/**
 * How a run's phases are executed, and inside what. The daemon asks an executor to open a run
 * (its workspace and credential directory) and to run each phase of it; the executor decides
 * where the phase runs and what it can reach:
 *   - `sandbox` (the default on hosts): each phase in new user, mount, PID, IPC and UTS
 *     namespaces through bubblewrap, seeing the system read-only, its own workspace, its own
 *     credentials read-only, and a private HOME and TMPDIR; nothing of the agent;
 *   - `runner` (Kubernetes pods): a separate runner process, in a container without the key or
 *     the token, runs the phase and is asked over a Unix socket;
 *   - `none`: the phase runs as the agent's own child, with everything the agent's user can
 *     reach (an explicit choice, announced at start, in /readyz, doctor and a metric label).
 */
import type { Phase } from "../protocol/agent-api.js";

type Isolation = "sandbox" | "runner" | "none";

/** Where one run lives on disk, as the agent laid it out. */
export interface RunPaths {
  readonly runId: string;
  /** The configuration's directory: the phase's working directory, read-write. */
  readonly workspace: string;
  /** The run's credential directory (read-only to the phase). */
  readonly credentials: string;
}

/** Which of the phase's output streams a piece of output came from. */
export type OutputStream = "stdout" | "stderr";

export interface PhaseOutputOptions {
  /**
   * Called with whole lines of output (stdout and stderr interleaved), at most `maxLineBytes`
   * each; `stream` says which (the runner keeps the two apart so the agent can rejoin a cut line).
   */
  readonly onOutput: (text: string, stream: OutputStream) => void;
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

export interface PhaseRequest extends PhaseOutputOptions {
  readonly phase: Phase;
  /** Whether plan wrote tfplan (apply then applies it). */
  readonly planned: boolean;
  /** The phase's environment (the agent's own settings and secrets already removed). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Aborting it cancels the phase (SIGTERM, grace, SIGKILL). */
  readonly signal: AbortSignal;
  readonly graceMs: number;
}

export interface PhaseResult {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly durationMs: number;
  readonly canceled: boolean;
}

/** One run's phases, in order; `close` removes what the executor made for the run (idempotent). */
export interface RunExecution {
  runPhase(request: PhaseRequest): Promise<PhaseResult>;
  close(): Promise<void>;
}

export interface PhaseExecutor {
  readonly isolation: Isolation;
  openRun(paths: RunPaths): Promise<RunExecution>;
}

/** What runs as tofu: an executable and arguments before the phase's own. */
export interface TofuCommand {
  /** Executable to run (`tofu`, a path, or the agent itself for the built-in stand-in). */
  readonly file: string;
  /** Arguments placed before the phase's own (the stand-in's subcommand name). */
  readonly argsPrefix: readonly string[];
  /** Files or directories the command needs besides the system's (the stand-in's script): the sandbox shows them read-only. */
  readonly needs?: readonly string[];
}

/** tofu's arguments for a phase. Pure. */
export function tofuArgs(phase: Phase, planned: boolean): string[] {
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
