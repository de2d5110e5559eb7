/**
 * What /readyz decides from: a key is loaded, the agent is registered, and the last exchange
 * with the control plane succeeded recently. Fed by the daemon's observer hooks; the clock is
 * passed in.
 */
import type { DaemonObserver } from "../daemon/observer.js";

export interface Readiness {
  readonly ready: boolean;
  readonly reasons: readonly string[];
  readonly agent_id: string | null;
  readonly keys: number;
  readonly last_poll_ok_at: string | null;
  readonly last_poll_error: { readonly code: string; readonly message: string } | null;
  readonly active_runs: number;
}

export class AgentStatus implements DaemonObserver {
  private agentId: string | undefined;
  private keys = 0;
  private lastOkMs: number | undefined;
  private lastError: { code: string; message: string } | undefined;
  private active = 0;

  constructor(
    private readonly now: () => number,
    /** How old the last successful exchange may be: the long-poll wait plus a margin. */
    private readonly staleAfterMs: number,
  ) {}

  registered(agentId: string): void {
    this.agentId = agentId;
    this.lastOkMs = this.now();
    this.lastError = undefined;
  }
  unregistered(): void {
    this.agentId = undefined;
  }
  keysLoaded(count: number): void {
    this.keys = count;
  }
  pollSucceeded(): void {
    this.lastOkMs = this.now();
    this.lastError = undefined;
  }
  pollFailed(_kind: string, code: string, message: string): void {
    this.lastError = { code, message };
  }
  runStarted(): void {
    this.active++;
  }
  runFinished(): void {
    this.active = Math.max(0, this.active - 1);
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
    const reasons: string[] = [];
    if (this.keys === 0) reasons.push("no private key is loaded");
    if (this.agentId === undefined)
      reasons.push(
        `not registered with the control plane${this.lastError ? ` (${this.lastError.code}: ${this.lastError.message})` : ""}`,
      );
    else if (this.lastOkMs === undefined || this.now() - this.lastOkMs > this.staleAfterMs) {
      reasons.push(
        `no successful poll of the control plane for ${this.lastOkMs === undefined ? "ever" : `${Math.round((this.now() - this.lastOkMs) / 1000)} s`}${this.lastError ? ` (last error ${this.lastError.code}: ${this.lastError.message})` : ""}`,
      );
    }
    return {
      ready: reasons.length === 0,
      reasons,
      agent_id: this.agentId ?? null,
      keys: this.keys,
      last_poll_ok_at: this.lastOkMs === undefined ? null : new Date(this.lastOkMs).toISOString(),
      last_poll_error: this.lastError ?? null,
      active_runs: this.active,
    };
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
