/**
 * Every way a run can end early, as one AbortSignal whose reason is the AgentError that ended
 * it: the agent shutting down, `--run-timeout`, a cancel from the control plane, a lost lease.
 * The first reason wins. `dispose()` removes what it attached to the agent's shutdown signal, so
 * finished runs leave no listener behind.
 */
import { AgentError } from "../core/errors.js";

export class RunEnding {
  private readonly controller = new AbortController();
  private readonly timeout: NodeJS.Timeout;
  private readonly onShutdown = (): void => {
    this.end(new AgentError("AGENT_SHUTDOWN", "the agent is shutting down and canceled the run"));
  };

  constructor(
    private readonly shutdown: AbortSignal,
    runTimeoutMs: number,
  ) {
    if (shutdown.aborted) this.onShutdown();
    shutdown.addEventListener("abort", this.onShutdown, { once: true });
    this.timeout = setTimeout(() => {
      this.end(
        new AgentError(
          "RUN_TIMEOUT",
          `the run exceeded --run-timeout (${Math.round(runTimeoutMs / 1000)} s) and was canceled`,
        ),
      );
    }, runTimeoutMs);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  end(reason: AgentError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** Throws the reason the run ended for, if it has. */
  throwIfEnded(): void {
    if (this.controller.signal.aborted) throw this.controller.signal.reason as AgentError;
  }

  /** Stops watching the clock and the agent's shutdown. */
  dispose(): void {
    clearTimeout(this.timeout);
    this.shutdown.removeEventListener("abort", this.onShutdown);
  }
}
