/**
 * What /readyz decides from: a key is loaded, the agent is registered, and the last exchange
 * with the control plane succeeded recently. Fed by the daemon's observer hooks; the clock is
 * passed in.
 *
 * /readyz answers anyone who can reach --listen (in Kubernetes, the whole pod network), without
 * authentication: it says only whether the agent is ready and why not, as stable reason codes.
 * No agent id, no error text; the log has the details (control_plane_error, keys_loaded, ...).
 */
import type { DaemonObserver } from "../daemon/observer.js";

/** Why the agent is not ready; stable, documented in docs/operations.md. */
type NotReadyReason = "no_keys" | "not_registered" | "control_plane_unreachable";

export interface Readiness {
  readonly ready: boolean;
  readonly reasons: readonly NotReadyReason[];
  /** What runs' phases run in: sandbox, runner, or none (said openly: none isolates nothing). */
  readonly isolation: string;
}

export class AgentStatus implements DaemonObserver {
  private isRegistered = false;
  private keys = 0;
  private lastOkMs: number | undefined;
  private isolation = "unknown";

  constructor(
    private readonly now: () => number,
    /** How old the last successful exchange may be: the long-poll wait plus a margin. */
    private readonly staleAfterMs: number,
  ) {}

  /** What phases run in, once the executor is set up. */
  isolationIs(mode: string): void {
    this.isolation = mode;
  }

  registered(): void {
    this.isRegistered = true;
    this.lastOkMs = this.now();
  }
  unregistered(): void {
    this.isRegistered = false;
  }
  keysLoaded(count: number): void {
    this.keys = count;
  }
  pollSucceeded(): void {
    this.lastOkMs = this.now();
  }
  pollFailed(): void {
    // the log has what failed; readiness goes by the last success
  }
  runStarted(): void {
    // not part of readiness
  }
  runFinished(): void {
    // not part of readiness
  }
  pickup(): void {
    // not part of readiness
  }
  credentialsWritten(): void {
    // not part of readiness
  }
  preflightChecked(): void {
    // not part of readiness
  }
  phaseFinished(): void {
    // not part of readiness
  }
  wiped(): void {
    // not part of readiness
  }

  readiness(): Readiness {
    const reasons: NotReadyReason[] = [];
    if (this.keys === 0) reasons.push("no_keys");
    if (!this.isRegistered) reasons.push("not_registered");
    else if (this.lastOkMs === undefined || this.now() - this.lastOkMs > this.staleAfterMs)
      reasons.push("control_plane_unreachable");
    return { ready: reasons.length === 0, reasons, isolation: this.isolation };
  }
}

/** Calls every observer's hook in turn. */
export function combineObservers(...observers: DaemonObserver[]): DaemonObserver {
  const fan =
    <K extends keyof DaemonObserver>(key: K) =>
    (...args: Parameters<DaemonObserver[K]>): void => {
      for (const o of observers) (o[key] as (...a: Parameters<DaemonObserver[K]>) => void)(...args);
    };
  return {
    registered: fan("registered"),
    unregistered: fan("unregistered"),
    keysLoaded: fan("keysLoaded"),
    pollSucceeded: fan("pollSucceeded"),
    pollFailed: fan("pollFailed"),
    runStarted: fan("runStarted"),
    pickup: fan("pickup"),
    credentialsWritten: fan("credentialsWritten"),
    preflightChecked: fan("preflightChecked"),
    phaseFinished: fan("phaseFinished"),
    wiped: fan("wiped"),
    runFinished: fan("runFinished"),
  };
}
