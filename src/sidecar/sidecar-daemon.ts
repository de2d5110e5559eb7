/**
 * `oci-cred-agent sidecar`: the daemon beside a foreign runner. It sweeps what an earlier process
 * left, enrolls with the control plane as a sidecar (it leases only runs an external runner
 * executes), long-polls for those runs up to its concurrency, keeps their leases, and answers the
 * runner's hooks (hook-server.ts) for the runs it holds.
 *
 * Every hook request names a run and carries that run's token. Before anything is written the
 * token is checked with the control plane; a refusal writes nothing and is logged with the run id
 * and the code, never the token. A token the control plane refused for a run is remembered (its
 * SHA-256, per run) and refused again on the spot; any other token is always asked about, so a
 * neighbour guessing cannot lock a run out of its first hook (the tokens are 256-bit: guessing
 * is no threat, a lockout would be). The checks are bounded: one at a time per run (its hooks
 * are served in order), so at most --concurrency at once. Node cannot tell a Unix socket's peer
 * (no SO_PEERCRED), so the run id is the key.
 *
 * A pre hook for a run not leased yet waits for its lease (up to --lease-wait), but at most
 * MAX_WAITERS_PER_SLOT x --concurrency such hooks wait at once (more get RUN_NOT_LEASED at
 * once), and a wait ends when its client goes away. Refusals are logged at most
 * REFUSAL_LOG_BURST at once and REFUSAL_LOG_PER_SECOND after that; the next line logged says how
 * many were left out.
 *
 * Stopping: the first request stops leasing and serving, wipes every run's files and lets the
 * leases go; the CLI exits at a second signal at once.
 */
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import { backoffDelayMs, type BackoffPolicy } from "../core/backoff.js";
import type { CloudMinter } from "../core/cloud-auth.js";
import { isAgentError, type AgentError } from "../core/errors.js";
import type { ReplayCache } from "../core/replay-cache.js";
import type { OperatorConfig } from "../credentials/operator-config.js";
import type { ControlPlaneClient } from "../daemon/control-plane-client.js";
import { enroll, retryAfterOf } from "../daemon/enroll.js";
import type { DaemonObserver } from "../daemon/observer.js";
import type { FileSystem } from "../fs/secure-fs.js";
import type { KeyRing } from "../keys/key-ring.js";
import type { RegisterRequest, SidecarLease } from "../protocol/agent-api.js";
import { isPreHook, type HookAnswer, type HookRequest } from "../protocol/sidecar-api.js";
import { refusal } from "./hook-server.js";
import { sweepSidecarDir } from "./run-files.js";
import { SidecarRun } from "./sidecar-run.js";

interface SidecarSettings {
  readonly credentialsDir: string;
  readonly concurrency: number;
  readonly hookTtlMs: number;
  /** How long a hook for a run not (yet) leased waits for its lease. */
  readonly leaseWaitMs: number;
  readonly maxBundleLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly retry: BackoffPolicy;
  readonly gid: number | undefined;
}

export interface SidecarDaemonOptions {
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly observer: DaemonObserver;
  readonly settings: SidecarSettings;
  readonly registration: () => RegisterRequest;
  readonly keys: () => KeyRing;
  readonly replayCache: ReplayCache;
  readonly operator: OperatorConfig;
  readonly fs: FileSystem;
  readonly maxBundleBytes: number;
  /** Mints the credentials of `cloud_auth` entries (src/cloud/, through the composition root). */
  readonly cloudMinter?: CloudMinter;
  /** The per-agent credential, to mask in every log line. */
  readonly redact: (secret: string) => void;
}

/** Refused tokens remembered per run (their SHA-256), the oldest forgotten first. */
const REFUSED_PER_RUN = 1000;
/** Pre hooks waiting for a lease at once, per run the sidecar may lease. */
const MAX_WAITERS_PER_SLOT = 4;
/** hook_refused lines: a burst, then so many a second. */
const REFUSAL_LOG_BURST = 20;
const REFUSAL_LOG_PER_SECOND = 5;
/** Run ids remembered after their run ended (a late hook is answered at once). */
const ENDED_REMEMBERED = 1000;

function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

export class SidecarDaemon {
  private readonly pollAbort = new AbortController();
  private readonly runs = new Map<string, SidecarRun>();
  private readonly ended = new Set<string>();
  private readonly arrivals = new Map<string, Set<() => void>>();
  private waiters = 0;
  /** Per run, hex SHA-256 of each token the control plane refused for it (never a token). */
  private readonly refused = new Map<string, Set<string>>();
  private readonly refusalLog = { tokens: REFUSAL_LOG_BURST, at: Date.now(), suppressed: 0 };
  private agentId: string | undefined;
  private fatal: AgentError | undefined;
  private pollWaitSeconds = 30;
  private heartbeatIntervalMs = 10_000;
  private stoppedPromise: Promise<void> | undefined;

  constructor(private readonly options: SidecarDaemonOptions) {}

  /**
   * The start-up sweep: what an earlier process left (a crash, kill -9) goes before anything is
   * served. It first takes the credentials directory's lock (SIDECAR_DIR_IN_USE while another
   * sidecar holds it); resolves with the lock's release.
   */
  sweep(): Promise<() => Promise<void>> {
    const { fs, settings, log } = this.options;
    return sweepSidecarDir(fs, settings.credentialsDir, settings.gid, log);
  }

  private stopping(): boolean {
    return this.pollAbort.signal.aborted;
  }

  requestShutdown(): void {
    if (this.pollAbort.signal.aborted) return;
    this.options.log.info(
      { event: "shutdown_requested", active_runs: this.runs.size },
      "shutting down: wiping every run's credentials",
    );
    this.pollAbort.abort();
  }

  /** Enrolls, then leases until shutdown; then wipes everything it wrote. */
  async run(): Promise<{ code: 0 } | { code: 1; error: AgentError }> {
    const agentId = await this.register();
    if (agentId !== undefined) await this.pollLoop(agentId);
    await this.stop();
    await this.options.client.close();
    if (this.fatal) return { code: 1, error: this.fatal };
    this.options.log.info({ event: "stopped" }, "sidecar stopped");
    return { code: 0 };
  }

  /** Wipes every run's files and lets their leases go; idempotent. */
  stop(): Promise<void> {
    this.stoppedPromise ??= (async () => {
      this.pollAbort.abort();
      for (const wake of [...this.arrivals.values()].flatMap((s) => [...s])) wake();
      await Promise.all([...this.runs.values()].map((r) => r.shutdown()));
      this.runs.clear();
    })();
    return this.stoppedPromise;
  }

  private async backOff(attempt: number, error: unknown): Promise<void> {
    const ms = backoffDelayMs(this.options.settings.retry, attempt, Math.random, retryAfterOf(error));
    await delay(ms, undefined, { signal: this.pollAbort.signal }).catch(() => undefined);
  }

  private async register(): Promise<string | undefined> {
    const { client, log, observer } = this.options;
    for (let attempt = 0; !this.pollAbort.signal.aborted; attempt++) {
      try {
        const keys = this.options.keys();
        const { agentId, granted } = await enroll(
          client,
          { ...this.options.registration(), role: "sidecar" },
          keys,
          this.options.settings.clockSkewSeconds,
        );
        this.options.redact(granted.credential);
        this.pollWaitSeconds = granted.poll_wait_seconds;
        this.heartbeatIntervalMs = granted.heartbeat_interval_seconds * 1000;
        this.agentId = agentId;
        observer.registered(agentId);
        log.info(
          { event: "registered", agent_id: agentId, role: "sidecar" },
          "registered with the control plane as a sidecar",
        );
        return agentId;
      } catch (error) {
        if (!this.pollFailed(error, "register")) return undefined;
        await this.backOff(attempt, error);
      }
    }
    return undefined;
  }

  /** Logs a control-plane failure; false when the sidecar must stop. */
  private pollFailed(error: unknown, during: string): boolean {
    const { log, observer } = this.options;
    const code = isAgentError(error) ? error.code : "INTERNAL";
    observer.pollFailed(code, code, isAgentError(error) ? error.message : "unexpected error");
    if (isAgentError(error, "CONTROL_PLANE_UNAUTHORIZED") && error.details.reenroll !== true) {
      this.fatal = error;
      log.fatal({ event: "unauthorized", code, during }, error.message);
      return false;
    }
    log.warn({ event: "control_plane_error", code, during }, isAgentError(error) ? error.message : "unexpected error");
    return true;
  }

  private async pollLoop(initialAgentId: string): Promise<void> {
    let agentId = initialAgentId;
    let attempt = 0;
    const { client, settings } = this.options;
    const stopped = new Promise<void>((resolve) => {
      this.pollAbort.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    const slotFreed: { wake: (() => void) | undefined } = { wake: undefined };
    while (!this.pollAbort.signal.aborted) {
      const free = settings.concurrency - this.runs.size;
      if (free <= 0) {
        await Promise.race([stopped, new Promise<void>((resolve) => (slotFreed.wake = resolve))]);
        continue;
      }
      try {
        const leases = await client.sidecarLease(agentId, free, this.pollWaitSeconds, this.pollAbort.signal);
        attempt = 0;
        this.options.observer.pollSucceeded();
        for (const lease of leases) this.take(lease, agentId, () => slotFreed.wake?.());
      } catch (error) {
        if (this.stopping()) break;
        if (isAgentError(error, "CONTROL_PLANE_UNAUTHORIZED") && error.details.reenroll === true) {
          this.options.log.warn(
            { event: "reregistering", code: error.code },
            "the control plane no longer knows this sidecar; registering again",
          );
          this.options.observer.unregistered();
          const again = await this.register();
          if (again === undefined) break;
          agentId = again;
          continue;
        }
        if (!this.pollFailed(error, "lease")) break;
        await this.backOff(attempt++, error);
      }
    }
  }

  private take(lease: SidecarLease, agentId: string, slotFreed: () => void): void {
    const { settings, log } = this.options;
    const runId = lease.run.id;
    const run = new SidecarRun(lease, {
      agentId,
      client: this.options.client,
      log,
      fs: this.options.fs,
      keys: this.options.keys,
      replayCache: this.options.replayCache,
      operator: this.options.operator,
      credentialsDir: settings.credentialsDir,
      gid: settings.gid,
      hookTtlMs: settings.hookTtlMs,
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      maxBundleLifetimeSeconds: settings.maxBundleLifetimeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      maxBundleBytes: this.options.maxBundleBytes,
      ...(this.options.cloudMinter === undefined ? {} : { cloudMinter: this.options.cloudMinter }),
      onGone: (id) => {
        this.runs.delete(id);
        this.refused.delete(id);
        this.ended.add(id);
        if (this.ended.size > ENDED_REMEMBERED) this.ended.delete(this.ended.values().next().value ?? id);
        slotFreed();
      },
    });
    this.runs.set(runId, run);
    log.info(
      { event: "leased", run_id: runId, lease_id: lease.lease_id },
      `leased external run ${runId}; waiting for its hooks`,
    );
    for (const wake of this.arrivals.get(runId) ?? []) wake();
  }

  /**
   * Waits up to --lease-wait for the run's lease (a hook may race the long poll); not at all when
   * MAX_WAITERS_PER_SLOT x --concurrency hooks wait already; no longer once `gone` aborts.
   */
  private async leasedRun(runId: string, gone: AbortSignal): Promise<SidecarRun | undefined> {
    const known = this.runs.get(runId);
    if (known !== undefined || this.ended.has(runId) || this.pollAbort.signal.aborted || gone.aborted) return known;
    if (this.waiters >= MAX_WAITERS_PER_SLOT * this.options.settings.concurrency) return undefined;
    let wake: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    const waiting = new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, this.options.settings.leaseWaitMs);
    });
    const set = this.arrivals.get(runId) ?? new Set<() => void>();
    const w = (): void => wake?.();
    set.add(w);
    this.arrivals.set(runId, set);
    this.waiters++;
    gone.addEventListener("abort", w, { once: true });
    this.options.log.debug({ event: "lease_wait", run_id: runId }, `a pre hook waits for the lease of run ${runId}`);
    try {
      await waiting;
    } finally {
      clearTimeout(timer);
      gone.removeEventListener("abort", w);
      this.waiters--;
      set.delete(w);
      if (set.size === 0) this.arrivals.delete(runId);
    }
    // (read again: the wait may have ended because the client went away)
    if (isAborted(gone))
      this.options.log.debug(
        { event: "lease_wait_abandoned", run_id: runId },
        `the client of a pre hook for run ${runId} went away while it waited for the lease`,
      );
    return this.runs.get(runId);
  }

  /**
   * Whether a line about a request that did nothing (hook_refused, a post hook for a run not
   * held) may be logged now (a token bucket): undefined when not; else how many were left out.
   */
  private mayLogRefusal(): number | undefined {
    const bucket = this.refusalLog;
    const now = Date.now();
    bucket.tokens = Math.min(REFUSAL_LOG_BURST, bucket.tokens + ((now - bucket.at) / 1000) * REFUSAL_LOG_PER_SECOND);
    bucket.at = now;
    if (bucket.tokens < 1) {
      bucket.suppressed++;
      return undefined;
    }
    bucket.tokens--;
    const suppressed = bucket.suppressed;
    bucket.suppressed = 0;
    return suppressed;
  }

  private rememberRefused(runId: string, tokenHash: string): void {
    const set = this.refused.get(runId) ?? new Set<string>();
    set.add(tokenHash);
    if (set.size > REFUSED_PER_RUN) set.delete(set.values().next().value ?? tokenHash);
    this.refused.set(runId, set);
  }

  /** Answers one hook request; never rejects. `gone` aborts when its client went away. */
  async handle(request: HookRequest, gone: AbortSignal = new AbortController().signal): Promise<HookAnswer> {
    const { log } = this.options;
    const fields = { run_id: request.run_id, hook: request.hook, phase: request.phase };
    const refuse = (code: string, message: string): HookAnswer => {
      const suppressed = this.mayLogRefusal();
      if (suppressed !== undefined)
        log.warn(
          { event: "hook_refused", ...fields, code, ...(suppressed > 0 ? { suppressed } : {}) },
          suppressed > 0 ? `${message} (and ${suppressed} refusal(s) before this one not logged)` : message,
        );
      return refusal(code, message);
    };
    if (this.pollAbort.signal.aborted)
      return refuse(
        "SIDECAR_UNAVAILABLE",
        "the sidecar is stopping; the run's credentials are wiped. Retry once it is back",
      );
    const tokenHash = sha256(request.run_token);
    const wrongToken = (): HookAnswer =>
      refuse(
        "RUN_TOKEN_INVALID",
        `the control plane refused this run token for run ${request.run_id} already; give the hook the run's own token (OCI_CRED_AGENT_RUN_TOKEN or --run-token-file)`,
      );
    if (this.refused.get(request.run_id)?.has(tokenHash) === true) return wrongToken();
    const run = isPreHook(request.hook) ? await this.leasedRun(request.run_id, gone) : this.runs.get(request.run_id);
    if (run === undefined) {
      if (!isPreHook(request.hook)) {
        // Nothing of this run is on disk (the sweep and every ending wiped it): nothing to wipe.
        if (this.mayLogRefusal() !== undefined)
          log.info(
            { event: "hook_served", ...fields, wiped: 0 },
            `${request.hook}: nothing of run ${request.run_id} is held here`,
          );
        return { ok: true, wiped: 0 };
      }
      return refuse(
        "RUN_NOT_LEASED",
        `this sidecar holds no lease of run ${request.run_id}: queue it with "executor": "external" in this sidecar's pool, check that the sidecar is registered (its log, /readyz), and that the run has not ended`,
      );
    }
    try {
      // A token refused while this request waited its turn is not asked about again.
      const refusedAlready = (): boolean => this.refused.get(request.run_id)?.has(tokenHash) === true;
      const answer = isPreHook(request.hook)
        ? await run.pre(request, refusedAlready)
        : await run.post(request, refusedAlready);
      log.info({ event: "hook_served", ...fields }, `${request.hook} of run ${request.run_id} served`);
      return answer;
    } catch (error) {
      if (isAgentError(error, "RUN_TOKEN_INVALID") && this.runs.has(request.run_id))
        this.rememberRefused(request.run_id, tokenHash);
      if (isAgentError(error)) return refuse(error.code, error.message);
      log.error(
        { event: "hook_failed", ...fields, code: "INTERNAL", err: error },
        "unexpected failure while serving a hook",
      );
      return refusal("INTERNAL", "the sidecar failed while serving the hook; see its log");
    }
  }
}
