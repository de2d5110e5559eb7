/**
 * What the daemon reports about itself, for metrics and health (src/ops). The daemon calls these
 * hooks; it never imports a metrics library. The default does nothing.
 */
import type { Outcome, Phase } from "../protocol/agent-api.js";

export interface DaemonObserver {
  registered(agentId: string): void;
  /** The registration is gone: the control plane forgot the agent, or refused its token. */
  unregistered(): void;
  keysLoaded(count: number): void;
  pollSucceeded(): void;
  pollFailed(kind: string, code: string, message: string): void;
  runStarted(runId: string): void;
  /** Queued (control plane clock) to credentials in place (agent clock). */
  pickup(ms: number): void;
  credentialsWritten(count: number): void;
  /** One pre-flight check of one credential: ok, cached, anonymous, skipped, unreachable or refused. */
  preflightChecked(result: string): void;
  phaseFinished(phase: Phase, ms: number, ok: boolean): void;
  wiped(ok: boolean): void;
  runFinished(runId: string, outcome: Outcome, code: string | undefined): void;
}

export const noopObserver: DaemonObserver = {
  registered: () => undefined,
  unregistered: () => undefined,
  keysLoaded: () => undefined,
  pollSucceeded: () => undefined,
  pollFailed: () => undefined,
  runStarted: () => undefined,
  pickup: () => undefined,
  credentialsWritten: () => undefined,
  preflightChecked: () => undefined,
  phaseFinished: () => undefined,
  wiped: () => undefined,
  runFinished: () => undefined,
};
