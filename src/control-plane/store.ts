/**
 * The reference control plane's state: integrations, agents, runs, leases and the long-poll
 * waiters. In memory; `snapshot()`/`restore()` let the server persist it (data-file.ts).
 * Timers for lease expiry are the one clock edge here, passed in as `now` and `setTimer`.
 */
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  MAX_INLINE_CONFIGURATION_BYTES,
  type Lease,
  type Outcome,
  type Phase,
  type RunEvent,
} from "../protocol/agent-api.js";
import type { AuditEntry, AuditFacts } from "./integration-audit.js";

export interface Integration {
  id: string;
  name: string;
  registry_url: string;
  username: string;
  password: string;
  credential_helper: string | null;
  export_credentials: boolean;
  created_at: string;
  updated_at: string;
}

/** What the admin API shows of an integration: never the password. */
export type PublicIntegration = Omit<Integration, "password"> & { has_password: boolean };

export interface AgentRecord {
  id: string;
  name: string;
  version: string;
  concurrency: number;
  /** Oldest first; the control plane seals to the last (newest). */
  public_keys: { kid: string; public_key: string }[];
  /** SHA-256 (hex) of the per-agent credential; the credential itself is never stored. */
  credential_sha256: string;
  registered_at: string;
  last_seen_at: string;
}

export type RunStatus = "queued" | "running" | "succeeded" | "failed" | "canceled";

export interface LeaseRecord {
  id: string;
  agent_id: string;
  expires_at_ms: number;
  cancel_requested: boolean;
}

export interface RunRecord {
  id: string;
  status: RunStatus;
  phases: Phase[];
  configuration: Buffer;
  configuration_sha256: string;
  queued_at: string;
  events: RunEvent[];
  logs: { phase: Phase; seq: number; text: string }[];
  lease: LeaseRecord | undefined;
  error: { code: string; message: string } | undefined;
}

export interface StoreClock {
  now(): number;
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

export const systemClock: StoreClock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(9).toString("base64url").replace(/[_-]/g, "x")}`;
}

interface Waiter {
  agentId: string;
  max: number;
  resolve(runs: RunRecord[]): void;
}

/** Emits "run-changed" (run) whenever a run's status changes, and "changed" on any mutation. */
export class ControlPlaneStore extends EventEmitter {
  readonly integrations = new Map<string, Integration>();
  readonly agents = new Map<string, AgentRecord>();
  readonly runs = new Map<string, RunRecord>();
  private readonly queue: string[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly leaseTimers = new Map<string, { cancel(): void }>();
  private readonly leaseIndex = new Map<string, string>();
  private readonly credentialIndex = new Map<string, string>();

  constructor(
    private readonly clock: StoreClock,
    readonly leaseTtlMs: number,
  ) {
    super();
  }

  iso(ms = this.clock.now()): string {
    return new Date(ms).toISOString();
  }

  event(run: RunRecord, type: string, fields: Record<string, unknown> = {}): void {
    run.events.push({ type, at: this.iso(), ...fields });
    this.emit("changed");
  }

  private setStatus(run: RunRecord, status: RunStatus): void {
    run.status = status;
    this.emit("run-changed", run);
    this.emit("changed");
  }

  // ---- agents -----------------------------------------------------------------------------

  /** Adds an agent that proved its key; its credential hash finds it from then on. */
  addAgent(agent: AgentRecord): void {
    this.agents.set(agent.id, agent);
    this.credentialIndex.set(agent.credential_sha256, agent.id);
    this.emit("changed");
  }

  agentByCredential(credentialSha256: string): AgentRecord | undefined {
    const id = this.credentialIndex.get(credentialSha256);
    return id === undefined ? undefined : this.agents.get(id);
  }

  // ---- audit ------------------------------------------------------------------------------

  /** Oldest first; emitted one by one as "audit" for the operator's log. */
  readonly audit: AuditEntry[] = [];
  private auditSeq = 0;

  recordAudit(integration: Integration, remoteAddress: string | null, facts: readonly AuditFacts[]): void {
    for (const f of facts) {
      const entry: AuditEntry = {
        seq: ++this.auditSeq,
        at: this.iso(),
        integration_id: integration.id,
        integration_name: integration.name,
        remote_address: remoteAddress,
        ...f,
      };
      this.audit.push(entry);
      this.emit("audit", entry);
    }
    if (facts.length > 0) this.emit("changed");
  }

  // ---- runs -------------------------------------------------------------------------------

  createRun(configuration: Buffer, phases: Phase[]): RunRecord {
    const run: RunRecord = {
      id: newId("run"),
      status: "queued",
      phases,
      configuration,
      configuration_sha256: createHash("sha256").update(configuration).digest("hex"),
      queued_at: this.iso(),
      events: [],
      logs: [],
      lease: undefined,
      error: undefined,
    };
    this.runs.set(run.id, run);
    this.event(run, "queued");
    this.queue.push(run.id);
    this.dispatch();
    return run;
  }

  cancelRun(run: RunRecord): void {
    if (run.status === "queued") {
      const i = this.queue.indexOf(run.id);
      if (i >= 0) this.queue.splice(i, 1);
      this.event(run, "canceled", { while: "queued" });
      this.setStatus(run, "canceled");
    } else if (run.status === "running" && run.lease) {
      run.lease.cancel_requested = true;
      this.event(run, "cancel_requested");
    }
  }

  // ---- leasing ----------------------------------------------------------------------------

  /**
   * Waits up to `waitMs` for queued runs; resolves with at most `max` runs leased to the agent.
   * `sealFor` turns each leased run into the lease payload (it seals the bundle).
   */
  waitForRuns(agentId: string, max: number, waitMs: number, signal: AbortSignal): Promise<RunRecord[]> {
    const ready = this.takeQueued(max);
    if (ready.length > 0 || waitMs <= 0) return Promise.resolve(ready.map((r) => this.lease(r, agentId)));
    return new Promise((resolve) => {
      const waiter: Waiter = {
        agentId,
        max,
        resolve: (runs) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          resolve(runs);
        },
      };
      const remove = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
      };
      const timer = setTimeout(() => {
        remove();
        waiter.resolve([]);
      }, waitMs);
      const onAbort = (): void => {
        remove();
        waiter.resolve([]);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private takeQueued(max: number): RunRecord[] {
    const out: RunRecord[] = [];
    while (out.length < max && this.queue.length > 0) {
      const id = this.queue.shift();
      const run = id === undefined ? undefined : this.runs.get(id);
      if (run?.status === "queued") out.push(run);
    }
    return out;
  }

  private dispatch(): void {
    while (this.waiters.length > 0 && this.queue.length > 0) {
      const waiter = this.waiters.shift();
      if (!waiter) break;
      const runs = this.takeQueued(waiter.max).map((r) => this.lease(r, waiter.agentId));
      waiter.resolve(runs);
    }
  }

  private lease(run: RunRecord, agentId: string): RunRecord {
    const lease: LeaseRecord = {
      id: newId("lease"),
      agent_id: agentId,
      expires_at_ms: this.clock.now() + this.leaseTtlMs,
      cancel_requested: false,
    };
    run.lease = lease;
    this.leaseIndex.set(lease.id, run.id);
    this.armLeaseTimer(run);
    this.event(run, "leased", { agent_id: agentId, lease_id: lease.id });
    this.setStatus(run, "running");
    return run;
  }

  /** Returns a run to the queue when its lease could not be delivered (e.g. sealing failed). */
  failLease(run: RunRecord, code: string, message: string): void {
    this.finish(run, "failed", { code, message });
  }

  private armLeaseTimer(run: RunRecord): void {
    const lease = run.lease;
    if (!lease) return;
    this.leaseTimers.get(lease.id)?.cancel();
    const delay = Math.max(0, lease.expires_at_ms - this.clock.now());
    this.leaseTimers.set(
      lease.id,
      this.clock.setTimer(() => {
        if (run.status !== "running" || run.lease?.id !== lease.id) return;
        this.event(run, "lease_expired", { agent_id: lease.agent_id });
        // Never re-queued: a run must not run twice. The agent that lost it wipes on its side.
        this.finish(run, lease.cancel_requested ? "canceled" : "failed", {
          code: "LEASE_EXPIRED",
          message: `the agent ${lease.agent_id} stopped heartbeating and its lease expired`,
        });
      }, delay),
    );
  }

  runForLease(leaseId: string): RunRecord | undefined {
    const runId = this.leaseIndex.get(leaseId);
    const run = runId === undefined ? undefined : this.runs.get(runId);
    return run?.status === "running" && run.lease?.id === leaseId ? run : undefined;
  }

  heartbeat(run: RunRecord): LeaseRecord | undefined {
    if (!run.lease) return undefined;
    run.lease.expires_at_ms = this.clock.now() + this.leaseTtlMs;
    this.armLeaseTimer(run);
    const agent = this.agents.get(run.lease.agent_id);
    if (agent) agent.last_seen_at = this.iso();
    return run.lease;
  }

  finish(run: RunRecord, outcome: Outcome, error?: { code: string; message: string }): void {
    if (run.lease) {
      this.leaseTimers.get(run.lease.id)?.cancel();
      this.leaseTimers.delete(run.lease.id);
      this.leaseIndex.delete(run.lease.id);
    }
    run.error = error;
    this.event(run, "completed", { outcome, ...(error ? { error } : {}) });
    this.setStatus(run, outcome);
  }

  close(): void {
    for (const t of this.leaseTimers.values()) t.cancel();
    this.leaseTimers.clear();
    for (const w of this.waiters.splice(0)) w.resolve([]);
  }

  toLeasePayload(run: RunRecord, bundle: string): Lease {
    if (!run.lease) throw new Error("run has no lease");
    return {
      lease_id: run.lease.id,
      expires_at: this.iso(run.lease.expires_at_ms),
      run: {
        id: run.id,
        phases: run.phases,
        queued_at: run.queued_at,
        configuration: {
          sha256: run.configuration_sha256,
          size_bytes: run.configuration.byteLength,
          ...(run.configuration.byteLength <= MAX_INLINE_CONFIGURATION_BYTES
            ? { inline_base64: run.configuration.toString("base64") }
            : {}),
        },
      },
      bundle,
    };
  }
}

export function publicIntegration(i: Integration): PublicIntegration {
  const { password, ...rest } = i;
  return { ...rest, has_password: password.length > 0 };
}
