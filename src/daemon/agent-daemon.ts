/**
 * The long-running agent: sweep what a previous process left, register, long-poll for leases
 * up to the concurrency limit, run them, and shut down in order.
 *
 * Shutdown: the first request stops leasing and lets running runs finish within the drain
 * timeout, then cancels what is left; a second request cancels at once. Either way every run
 * wipes its credentials and reports before `run()` resolves.
 */
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import type { AgentSettings } from "../config/load-run-config.js";
import { backoffDelayMs } from "../core/backoff.js";
import { isAgentError, type AgentError } from "../core/errors.js";
import type { KeyRing } from "../keys/key-ring.js";
import type { Lease, RegisterRequest } from "../protocol/agent-api.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import { answerChallenge, enroll, retryAfterOf } from "./enroll.js";
import type { DaemonObserver } from "./observer.js";
import { executeRun, type RunResources } from "./run-executor.js";
import { sweepLeftovers } from "./sweep.js";

export interface DaemonOptions {
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly observer: DaemonObserver;
  readonly settings: AgentSettings;
  readonly registration: () => RegisterRequest;
  /** What every run shares. */
  readonly runs: RunResources;
}

export type DaemonExit = { readonly code: 0 } | { readonly code: 1; readonly error: AgentError };

export class AgentDaemon {
  private readonly pollAbort = new AbortController();
  private readonly runsAbort = new AbortController();
  private readonly active = new Set<Promise<unknown>>();
  private shutdownRequests = 0;
  private agentId: string | undefined;
  private fatal: AgentError | undefined;
  /**
   * The keys the control plane holds for this agent (as of the last enrollment or key change):
   * a key change is proved with the newest of them, which a replaced key file no longer holds.
   */
  private registeredKeys: KeyRing | undefined;

  constructor(private readonly options: DaemonOptions) {}

  /** First call: drain. Second call: cancel running runs now. */
  requestShutdown(): void {
    this.shutdownRequests++;
    const { log } = this.options;
    if (this.shutdownRequests === 1) {
      log.info(
        {
          event: "shutdown_requested",
          active_runs: this.active.size,
          drain_timeout_ms: this.options.settings.drainTimeoutMs,
        },
        "shutting down: no new runs; draining",
      );
      this.pollAbort.abort();
    } else if (!this.runsAbort.signal.aborted) {
      log.warn(
        { event: "shutdown_forced", active_runs: this.active.size },
        "second signal: canceling running runs now",
      );
      this.runsAbort.abort();
    }
  }

  /**
   * Re-sends the agent's public keys, e.g. after a key rotation, proving a current key first:
   * the control plane seals a challenge to the key it seals runs to, which the agent must still
   * hold (a rotation keeps the old key until the new one is registered).
   */
  async updateKeys(): Promise<void> {
    const agentId = this.agentId;
    if (agentId === undefined) return;
    const { client } = this.options;
    const keys = this.options.runs.keys();
    // Once more with a new challenge if the control plane lost the first (it restarted between).
    for (let attempt = 0; ; attempt++) {
      try {
        const challenge = await client.keyChallenge(agentId);
        const answer = await answerChallenge(
          challenge,
          agentId,
          this.registeredKeys ?? keys,
          this.options.settings.clockSkewSeconds,
        );
        await client.updateKeys(agentId, {
          public_keys: this.options.registration().public_keys,
          challenge_id: challenge.challenge_id,
          answer,
        });
        this.registeredKeys = keys;
        return;
      } catch (error) {
        const lost = isAgentError(error, "CONTROL_PLANE_UNAVAILABLE") && error.details.kind === "challenge_lost";
        if (!lost || attempt > 0) throw error;
      }
    }
  }

  private stopping(): boolean {
    return this.pollAbort.signal.aborted;
  }

  /** Waits before retrying the control plane: full jitter, or its Retry-After (capped); shutdown ends the wait. */
  private async backOff(attempt: number, error: unknown): Promise<void> {
    const ms = backoffDelayMs(this.options.settings.retry, attempt, Math.random, retryAfterOf(error));
    try {
      await delay(ms, undefined, { signal: this.pollAbort.signal });
    } catch {
      // shutdown
    }
  }

  private async register(): Promise<string | undefined> {
    const { client, log, observer } = this.options;
    for (let attempt = 0; !this.pollAbort.signal.aborted; attempt++) {
      try {
        // The per-agent credential is kept in memory only.
        const keys = this.options.runs.keys();
        const { agentId, granted } = await enroll(
          client,
          this.options.registration(),
          keys,
          this.options.settings.clockSkewSeconds,
        );
        // Redacted for the life of the process, earlier credentials included.
        this.options.runs.redactor.add([granted.credential]);
        this.registeredKeys = keys;
        observer.registered(agentId);
        log.info(
          { event: "registered", agent_id: agentId, poll_wait_seconds: granted.poll_wait_seconds },
          "registered with the control plane",
        );
        this.pollWaitSeconds = granted.poll_wait_seconds;
        this.heartbeatIntervalMs = granted.heartbeat_interval_seconds * 1000;
        return agentId;
      } catch (error) {
        if (!this.handlePollError(error, "register")) return undefined;
        await this.backOff(attempt, error);
      }
    }
    return undefined;
  }

  private pollWaitSeconds = 30;
  private heartbeatIntervalMs = 10_000;

  /** Logs a control-plane failure; returns false when the agent must stop. */
  private handlePollError(error: unknown, during: string): boolean {
    const { log, observer } = this.options;
    if (isAgentError(error)) {
      const kind = isAgentError(
        error,
        "CONTROL_PLANE_UNAVAILABLE",
        "CONTROL_PLANE_REJECTED",
        "CONTROL_PLANE_BAD_RESPONSE",
      )
        ? error.details.kind
        : error.code;
      observer.pollFailed(kind, error.code, error.message);
      if (error.code === "CONTROL_PLANE_UNAUTHORIZED") {
        this.fatal = error;
        observer.unregistered();
        log.fatal({ event: "unauthorized", code: error.code, during }, error.message);
        return false;
      }
      log.warn({ event: "control_plane_error", code: error.code, kind, during }, error.message);
      return true;
    }
    observer.pollFailed("internal", "INTERNAL", "unexpected error");
    log.error(
      { event: "control_plane_error", code: "INTERNAL", during, err: error },
      "unexpected error talking to the control plane",
    );
    return true;
  }

  async run(): Promise<DaemonExit> {
    const { log, client, runs, settings } = this.options;
    await sweepLeftovers(
      runs.fs,
      settings.credentialsDir,
      settings.workspacesDir,
      log,
      settings.cancelGraceMs,
      settings.homesDir,
    );
    this.agentId = await this.register();
    if (this.agentId !== undefined) await this.pollLoop(this.agentId, client);
    await this.drain();
    await client.close();
    if (this.fatal) return { code: 1, error: this.fatal };
    log.info({ event: "stopped" }, "agent stopped");
    return { code: 0 };
  }

  private async pollLoop(initialAgentId: string, client: ControlPlaneClient): Promise<void> {
    let agentId = initialAgentId;
    let attempt = 0;
    // One listener for the whole loop: waiting at full capacity must not add one per wait.
    const stopped = new Promise<void>((resolve) => {
      if (this.pollAbort.signal.aborted) resolve();
      else this.pollAbort.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    while (!this.pollAbort.signal.aborted) {
      const free = this.options.settings.concurrency - this.active.size;
      if (free <= 0) {
        await Promise.race([...this.active, stopped]);
        continue;
      }
      try {
        const leases = await client.lease(agentId, free, this.pollWaitSeconds, this.pollAbort.signal);
        attempt = 0;
        this.options.observer.pollSucceeded();
        for (const lease of leases) this.start(lease, agentId);
      } catch (error) {
        if (this.stopping()) break;
        if (
          (isAgentError(error, "CONTROL_PLANE_REJECTED") && error.details.status === 404) ||
          (isAgentError(error, "CONTROL_PLANE_UNAUTHORIZED") && error.details.reenroll === true)
        ) {
          this.options.log.warn(
            { event: "reregistering", code: error.code },
            "the control plane no longer knows this agent or its credential; registering again",
          );
          this.options.observer.unregistered();
          const again = await this.register();
          if (again === undefined) break;
          agentId = again;
          this.agentId = again;
          continue;
        }
        if (!this.handlePollError(error, "lease")) break;
        await this.backOff(attempt++, error);
      }
    }
  }

  private start(lease: Lease, agentId: string): void {
    const { client, log, observer, settings, runs } = this.options;
    const context = {
      agentId,
      client,
      log,
      observer,
      settings,
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      resources: runs,
    };
    const promise = executeRun(lease, context, this.runsAbort.signal)
      .catch((error: unknown) => {
        this.options.log.error({ event: "run_error", run_id: lease.run.id, err: error }, "run failed unexpectedly");
      })
      .finally(() => this.active.delete(promise));
    this.active.add(promise);
  }

  private async drain(): Promise<void> {
    if (this.fatal) this.runsAbort.abort();
    if (this.active.size === 0) return;
    const timer = setTimeout(() => {
      if (this.active.size > 0) {
        this.options.log.warn(
          { event: "drain_timeout", active_runs: this.active.size },
          "drain timeout reached: canceling running runs",
        );
        this.runsAbort.abort();
      }
    }, this.options.settings.drainTimeoutMs);
    while (this.active.size > 0) await Promise.race(this.active);
    clearTimeout(timer);
  }
}
