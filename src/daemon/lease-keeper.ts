/**
 * Keeps one run's lease: heartbeats from the lease until the run's outcome is reported (a
 * completion delayed by an outage must still find the lease held), and the completion itself,
 * retried with full-jitter backoff while the control plane is unavailable. A heartbeat answer
 * that asks for cancellation, a lost lease, or heartbeats failing until the lease expired end the
 * run through `onEnd`.
 */
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import { backoffDelayMs, type BackoffPolicy } from "../core/backoff.js";
import { AgentError, isAgentError } from "../core/errors.js";
import type { CompleteRequest, Lease } from "../protocol/agent-api.js";
import type { ControlPlaneClient } from "./control-plane-client.js";

/** Retries of a completion: fast at first (a blip), at most 30 s apart. */
const COMPLETION_BACKOFF: BackoffPolicy = { baseMs: 250, capMs: 30_000 };
/** A completion not delivered within this long is given up (the lease then expires at the control plane). */
const COMPLETION_DEADLINE_MS = 5 * 60_000;

export interface LeaseKeeperOptions {
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly heartbeatIntervalMs: number;
  /** Ends the run: the control plane canceled it, or the lease is lost. */
  readonly onEnd: (reason: AgentError) => void;
}

export class LeaseKeeper {
  private readonly stopped = new AbortController();
  private readonly heartbeats: Promise<void>;

  constructor(
    private readonly lease: Pick<Lease, "lease_id" | "expires_at">,
    private readonly options: LeaseKeeperOptions,
  ) {
    this.heartbeats = this.heartbeatLoop();
  }

  /** Reports the outcome (retrying while the control plane is unavailable), then stops heartbeating. */
  async complete(body: CompleteRequest): Promise<void> {
    const { client, log } = this.options;
    const deadline = Date.now() + COMPLETION_DEADLINE_MS;
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await client.complete(this.lease.lease_id, body);
          return;
        } catch (error) {
          const retryable = isAgentError(error) && error.code === "CONTROL_PLANE_UNAVAILABLE";
          if (!retryable || Date.now() > deadline) {
            log.error(
              { event: "completion_failed", code: isAgentError(error) ? error.code : "INTERNAL" },
              "could not report the run's outcome to the control plane",
            );
            return;
          }
          // A 429's Retry-After (after the client's own retries of it) is honoured, within the cap.
          const retryAfter = isAgentError(error, "CONTROL_PLANE_UNAVAILABLE")
            ? error.details.retry_after_ms
            : undefined;
          await delay(backoffDelayMs(COMPLETION_BACKOFF, attempt, Math.random, retryAfter));
        }
      }
    } finally {
      await this.release();
    }
  }

  /** Stops heartbeating (the run's lease is lost, or its outcome was reported). */
  async release(): Promise<void> {
    this.stopped.abort();
    await this.heartbeats;
  }

  private async heartbeatLoop(): Promise<void> {
    const { client, log, onEnd } = this.options;
    const signal = this.stopped.signal;
    let expiresAt = Date.parse(this.lease.expires_at);
    while (!signal.aborted) {
      try {
        await delay(this.options.heartbeatIntervalMs, undefined, { signal });
      } catch {
        return;
      }
      try {
        const hb = await client.heartbeat(this.lease.lease_id);
        const next = Date.parse(hb.expires_at);
        if (Number.isFinite(next)) expiresAt = next;
        if (hb.cancel_requested) onEnd(new AgentError("RUN_CANCELED", "the run was canceled from the control plane"));
      } catch (error) {
        if (isAgentError(error) && (error.code === "LEASE_LOST" || error.code === "CONTROL_PLANE_UNAUTHORIZED")) {
          onEnd(
            error.code === "LEASE_LOST"
              ? error
              : new AgentError("LEASE_LOST", `heartbeats are refused (${error.message}); the run is aborted`),
          );
          return;
        }
        log.warn(
          { event: "heartbeat_failed", code: isAgentError(error) ? error.code : "INTERNAL" },
          "heartbeat failed; retrying",
        );
        if (Number.isFinite(expiresAt) && Date.now() >= expiresAt) {
          onEnd(new AgentError("LEASE_LOST", "heartbeats failed until the lease expired; the run is aborted"));
          return;
        }
      }
    }
  }
}
