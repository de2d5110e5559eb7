/**
 * The reference control plane's state: integrations, agents, runs, leases and the long-poll
 * waiters. The working model is in memory; every change also goes, synchronously and before the
 * method returns, through a `StorePersistence` (write-through): SQLite for `--data-file`
 * (sqlite-storage.ts), nothing otherwise. So an HTTP answer that follows a store call is sent
 * only after its change is committed. State changes therefore go through the methods here, never
 * through the maps. Timers for lease expiry and retention are the one clock edge here, passed in
 * as `now` and `setTimer`.
 */
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  MAX_INLINE_CONFIGURATION_BYTES,
  type Lease,
  type Outcome,
  type Phase,
  type RunEvent,
  type SidecarLease,
} from "../protocol/agent-api.js";
import type { AuditEntry, AuditFacts } from "./integration-audit.js";

export interface Integration {
  id: string;
  name: string;
  registry_url: string;
  username: string;
  password: string;
  credential_helper: string | null;
  /** In place of username and password: the agent mints the credential from its cloud identity (wire form of docs/protocol.md). Absent in records written before it existed. */
  cloud_auth?: Readonly<Record<string, string>> | null;
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
  /** The agent's last authenticated request; an agent not seen for the expiry is removed. */
  last_seen_at: string;
  /** An operator disabled it: every agent route answers 403 AGENT_DISABLED, and it leases nothing. */
  disabled: boolean;
  /** The single-use enrollment token it enrolled with; null when it enrolled with the pool token. */
  enrollment_token_id: string | null;
  /** `sidecar` leases only external runs, `agent` only the others (absent in records of earlier versions: agent). */
  role: AgentRole;
}

export type AgentRole = "agent" | "sidecar";

/** Who executes a run: an oci-cred-agent (`agent`), or a foreign runner served by a sidecar (`external`). */
type RunExecutor = "agent" | "external";

/** The role that leases runs of each executor: never the other. */
const ROLE_FOR: Record<RunExecutor, AgentRole> = { agent: "agent", external: "sidecar" };

/** A single-use enrollment token an operator created: only its SHA-256 is kept. */
export interface EnrollmentTokenRecord {
  id: string;
  name: string | null;
  /** SHA-256 (hex) of the token; the token itself is shown once, when it is created. */
  token_sha256: string;
  created_at: string;
  /** After this, it enrolls nothing. */
  expires_at: string;
  /** The agent it enrolled (a token enrolls one agent); null while unused. */
  used_by_agent_id: string | null;
  used_at: string | null;
}

export type EnrollmentTokenState = "unused" | "used" | "expired";

/** Why an agent's running leases were taken from it; the code its runs fail with. */
export type AgentLeaseRevocation = "AGENT_DISABLED" | "AGENT_DELETED" | "AGENT_EXPIRED";

export type RunStatus = "queued" | "running" | "succeeded" | "failed" | "canceled";

export interface LeaseRecord {
  id: string;
  agent_id: string;
  expires_at_ms: number;
  cancel_requested: boolean;
}

export interface RunLog {
  phase: Phase;
  seq: number;
  text: string;
}

export interface RunRecord {
  id: string;
  status: RunStatus;
  phases: Phase[];
  /** The tar.gz while the run is queued or running; empty once it ended (deleted from storage too). */
  configuration: Buffer;
  configuration_sha256: string;
  configuration_size: number;
  queued_at: string;
  /** When the run ended; retention counts from here. */
  finished_at: string | undefined;
  events: RunEvent[];
  logs: RunLog[];
  lease: LeaseRecord | undefined;
  error: { code: string; message: string } | undefined;
  /** Absent in records of earlier versions: agent. */
  executor: RunExecutor;
  /** SHA-256 (hex) of an external run's run token; the token itself is shown once, when the run is queued. */
  run_token_sha256: string | null;
}

/** What a persistence holds, as the store loads it at start. */
export interface StoreSnapshot {
  readonly integrations: Integration[];
  readonly agents: AgentRecord[];
  /** Oldest first, with their events and logs, and the configuration of runs not ended. */
  readonly runs: RunRecord[];
  /** The audit trail, oldest first (kept whatever --retention says: it is small and it is the record). */
  readonly audit: AuditEntry[];
  readonly enrollmentTokens: EnrollmentTokenRecord[];
}

/**
 * Where the store writes through. Each call is committed when it returns (or, inside
 * `transaction`, when the outermost transaction returns); a failure throws, and the store's
 * caller answers 500. Appending an event or a log is one insert, never a rewrite.
 */
export interface StorePersistence {
  load(): StoreSnapshot;
  transaction<T>(fn: () => T): T;
  putIntegration(integration: Integration): void;
  deleteIntegration(id: string): void;
  putAgent(agent: AgentRecord): void;
  deleteAgent(id: string): void;
  /** A new run with its configuration. */
  insertRun(run: RunRecord): void;
  /** Status, lease, error, end time; a run that ended loses its configuration. */
  updateRun(run: RunRecord): void;
  appendEvent(runId: string, index: number, event: RunEvent): void;
  appendLog(runId: string, index: number, log: RunLog): void;
  /** Deletes the runs with their events, logs and configuration. */
  deleteRuns(ids: readonly string[]): void;
  appendAudit(entry: AuditEntry): void;
  putEnrollmentToken(token: EnrollmentTokenRecord): void;
  deleteEnrollmentToken(id: string): void;
}

/** No persistence: `dev`, tests, and `control-plane` without --data-file. */
const memoryOnly: StorePersistence = {
  load: () => ({ integrations: [], agents: [], runs: [], audit: [], enrollmentTokens: [] }),
  transaction: (fn) => fn(),
  putIntegration: () => undefined,
  deleteIntegration: () => undefined,
  putAgent: () => undefined,
  deleteAgent: () => undefined,
  insertRun: () => undefined,
  updateRun: () => undefined,
  appendEvent: () => undefined,
  appendLog: () => undefined,
  deleteRuns: () => undefined,
  appendAudit: () => undefined,
  putEnrollmentToken: () => undefined,
  deleteEnrollmentToken: () => undefined,
};

/** Who changed an integration, and what changed (integration-audit.ts). */
export interface AuditNote {
  readonly remoteAddress: string | null;
  readonly facts: readonly AuditFacts[];
}

export interface StoreOptions {
  readonly persistence?: StorePersistence;
  /** Finished runs (with their events and logs) are deleted this long after they ended. */
  readonly retentionMs?: number;
  /** Failures of work no request waits for (lease expiry, retention sweep, dispatch to a waiting agent). */
  readonly onError?: (error: unknown) => void;
}

/** A finished run is kept this long by default (`--retention`). */
const DEFAULT_RETENTION_MS = 30 * 86_400_000;
/** An agent's last_seen_at is written to storage at most this often (it is exact in memory). */
const LAST_SEEN_WRITE_INTERVAL_MS = 60_000;

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
  role: AgentRole;
  max: number;
  resolve(runs: RunRecord[]): void;
}

/** Emits "run-changed" (run) whenever a run's status changes. */
export class ControlPlaneStore extends EventEmitter {
  readonly integrations = new Map<string, Integration>();
  readonly agents = new Map<string, AgentRecord>();
  readonly runs = new Map<string, RunRecord>();
  private readonly queue: string[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly leaseTimers = new Map<string, { cancel(): void }>();
  private readonly leaseIndex = new Map<string, string>();
  private readonly credentialIndex = new Map<string, string>();
  /** When each agent's last_seen_at was last written to storage. */
  private readonly seenWrittenAt = new Map<string, number>();
  private readonly persistence: StorePersistence;
  private readonly retentionMs: number;
  private readonly onError: (error: unknown) => void;
  private sweepTimer: { cancel(): void } | undefined;
  readonly enrollmentTokens = new Map<string, EnrollmentTokenRecord>();
  private readonly enrollmentTokenIndex = new Map<string, string>();
  /** The runs each agent holds a lease on, by agent id: its concurrency bounds their number. */
  private readonly leasesByAgent = new Map<string, Set<string>>();
  private agentExpiryMs: number | undefined;
  private expirySweep: { cancel(): void } | undefined;

  constructor(
    private readonly clock: StoreClock,
    readonly leaseTtlMs: number,
    options: StoreOptions = {},
  ) {
    super();
    this.persistence = options.persistence ?? memoryOnly;
    this.retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
    this.onError = options.onError ?? (() => undefined);
  }

  /**
   * Loads what the persistence holds: queued runs are queued again in their order, running runs
   * keep their lease and its expiry timer is armed from the stored expiry (an agent that keeps
   * heartbeating across a restart finishes its run; one that stopped has its run expire). Then
   * sweeps what retention ends, and every so often from then on.
   */
  restore(): void {
    const { integrations, agents, runs, audit, enrollmentTokens } = this.persistence.load();
    for (const i of integrations) this.integrations.set(i.id, i);
    this.audit.push(...audit);
    this.auditSeq = audit.at(-1)?.seq ?? 0;
    for (const a of agents) {
      this.agents.set(a.id, a);
      this.credentialIndex.set(a.credential_sha256, a.id);
      this.seenWrittenAt.set(a.id, this.clock.now());
    }
    for (const t of enrollmentTokens) {
      this.enrollmentTokens.set(t.id, t);
      this.enrollmentTokenIndex.set(t.token_sha256, t.id);
    }
    for (const run of runs) {
      this.runs.set(run.id, run);
      if (run.status === "queued") this.queue.push(run.id);
      else if (run.status === "running" && run.lease) {
        this.leaseIndex.set(run.lease.id, run.id);
        const held = this.leasesByAgent.get(run.lease.agent_id) ?? new Set<string>();
        held.add(run.id);
        this.leasesByAgent.set(run.lease.agent_id, held);
        this.armLeaseTimer(run);
      }
    }
    this.sweep();
  }

  iso(ms = this.clock.now()): string {
    return new Date(ms).toISOString();
  }

  /** Runs `fn`'s store calls as one transaction: all committed when it returns, or none. */
  atomically<T>(fn: () => T): T {
    return this.persistence.transaction(fn);
  }

  nowMs(): number {
    return this.clock.now();
  }

  event(run: RunRecord, type: string, fields: Record<string, unknown> = {}): void {
    const event = { type, at: this.iso(), ...fields };
    this.persistence.appendEvent(run.id, run.events.length, event);
    run.events.push(event);
  }

  appendLog(run: RunRecord, log: RunLog): void {
    this.persistence.appendLog(run.id, run.logs.length, log);
    run.logs.push(log);
  }

  private setStatus(run: RunRecord, status: RunStatus): void {
    run.status = status;
    this.persistence.updateRun(run);
    this.emit("run-changed", run);
  }

  /** Work no request waits for: a failure goes to onError instead of an answer. */
  private background(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.onError(error);
    }
  }

  // ---- integrations -----------------------------------------------------------------------

  /** Creates or replaces an integration (the record as it is after the change), with its audit entries. */
  saveIntegration(integration: Integration, audit: AuditNote): void {
    const entries = this.auditEntries(integration, audit);
    this.persistence.transaction(() => {
      this.persistence.putIntegration(integration);
      for (const e of entries) this.persistence.appendAudit(e);
    });
    this.integrations.set(integration.id, integration);
    this.publishAudit(entries);
  }

  deleteIntegration(integration: Integration, audit: AuditNote): void {
    const entries = this.auditEntries(integration, audit);
    this.persistence.transaction(() => {
      this.persistence.deleteIntegration(integration.id);
      for (const e of entries) this.persistence.appendAudit(e);
    });
    this.integrations.delete(integration.id);
    this.publishAudit(entries);
  }

  // ---- agents -----------------------------------------------------------------------------
  // Every change to an agent or an enrollment token goes through these methods; records stay
  // plain data, and nothing outside the store mutates them.

  /**
   * Adds an agent that proved its key; its credential hash finds it from then on. An enrollment
   * token it enrolled with is used up in the same step (one transaction): false (and nothing
   * added) when that token was used, revoked or expired meanwhile.
   */
  addAgent(agent: AgentRecord): boolean {
    const tokenId = agent.enrollment_token_id;
    const token = tokenId === null ? undefined : this.enrollmentTokens.get(tokenId);
    if (tokenId !== null && (!token || this.enrollmentTokenState(token) !== "unused")) return false;
    const usedAt = this.iso();
    this.persistence.transaction(() => {
      this.persistence.putAgent(agent);
      if (token) this.persistence.putEnrollmentToken({ ...token, used_by_agent_id: agent.id, used_at: usedAt });
    });
    if (token) {
      token.used_by_agent_id = agent.id;
      token.used_at = usedAt;
    }
    this.agents.set(agent.id, agent);
    this.credentialIndex.set(agent.credential_sha256, agent.id);
    this.seenWrittenAt.set(agent.id, this.clock.now());
    return true;
  }

  agentByCredential(credentialSha256: string): AgentRecord | undefined {
    const id = this.credentialIndex.get(credentialSha256);
    return id === undefined ? undefined : this.agents.get(id);
  }

  // ---- audit ------------------------------------------------------------------------------

  /** Oldest first; emitted one by one as "audit" for the operator's log. */
  readonly audit: AuditEntry[] = [];
  private auditSeq = 0;

  private auditEntries(integration: Integration, note: AuditNote): AuditEntry[] {
    return note.facts.map((f) => ({
      seq: ++this.auditSeq,
      at: this.iso(),
      integration_id: integration.id,
      integration_name: integration.name,
      remote_address: note.remoteAddress,
      ...f,
    }));
  }

  private publishAudit(entries: readonly AuditEntry[]): void {
    for (const e of entries) {
      this.audit.push(e);
      this.emit("audit", e);
    }
  }

  // ---- agents (operators' decisions) ----------------------------------------------------------

  /** The agent was seen now: exact in memory, written at most every LAST_SEEN_WRITE_INTERVAL_MS. */
  touchAgent(agentId: string): void {
    const agent = this.agents.get(agentId);
    if (!agent) return;
    const now = this.clock.now();
    agent.last_seen_at = this.iso(now);
    if (now - (this.seenWrittenAt.get(agent.id) ?? Number.NEGATIVE_INFINITY) < LAST_SEEN_WRITE_INTERVAL_MS) return;
    this.persistence.putAgent(agent);
    this.seenWrittenAt.set(agent.id, now);
  }

  setAgentKeys(agentId: string, keys: { kid: string; public_key: string }[]): AgentRecord | undefined {
    const agent = this.agents.get(agentId);
    if (!agent) return undefined;
    const publicKeys = keys.map((k) => ({ kid: k.kid, public_key: k.public_key }));
    this.persistence.putAgent({ ...agent, public_keys: publicKeys });
    agent.public_keys = publicKeys;
    this.seenWrittenAt.set(agent.id, this.clock.now());
    return agent;
  }

  /**
   * Disables or enables an agent. Disabling takes its leases at once: its waiting lease requests
   * answer [], and its running runs end (failed, or canceled when a cancel was pending) with
   * AGENT_DISABLED; they are never queued again, so a run never runs twice.
   */
  setAgentDisabled(agentId: string, disabled: boolean): AgentRecord | undefined {
    const agent = this.agents.get(agentId);
    if (!agent) return undefined;
    this.persistence.transaction(() => {
      this.persistence.putAgent({ ...agent, disabled });
      if (disabled)
        this.revokeLeases(agentId, "AGENT_DISABLED", `an operator disabled agent ${agentId} while it held this run`);
    });
    agent.disabled = disabled;
    if (disabled) this.dropWaiters(agentId);
    return agent;
  }

  /** Removes an agent: its credential stops working at once and its running runs end with `code`. */
  removeAgent(agentId: string, code: "AGENT_DELETED" | "AGENT_EXPIRED"): boolean {
    const agent = this.agents.get(agentId);
    if (!agent) return false;
    this.persistence.transaction(() => {
      this.persistence.deleteAgent(agentId);
      this.revokeLeases(
        agentId,
        code,
        code === "AGENT_DELETED"
          ? `an operator deleted agent ${agentId} while it held this run`
          : `agent ${agentId} was not seen for the agent expiry and was removed`,
      );
    });
    this.agents.delete(agentId);
    this.credentialIndex.delete(agent.credential_sha256);
    this.seenWrittenAt.delete(agentId);
    this.dropWaiters(agentId);
    this.emit("agent-removed", agentId);
    return true;
  }

  /** How many runs the agent holds a lease on now. */
  runningLeases(agentId: string): number {
    return this.leasesByAgent.get(agentId)?.size ?? 0;
  }

  /** Whether the agent was last seen longer ago than the agent expiry. */
  agentExpired(agent: AgentRecord): boolean {
    return this.agentExpiryMs !== undefined && this.clock.now() - Date.parse(agent.last_seen_at) >= this.agentExpiryMs;
  }

  /** Removes every agent not seen for the expiry; returns their ids. */
  expireAgents(): string[] {
    const expired = [...this.agents.values()].filter((a) => this.agentExpired(a)).map((a) => a.id);
    for (const id of expired) this.removeAgent(id, "AGENT_EXPIRED");
    return expired;
  }

  /** Agents not seen for `expiryMs` expire; a sweep removes them every `sweepMs`. */
  startAgentExpiry(expiryMs: number, sweepMs: number): void {
    this.agentExpiryMs = expiryMs;
    this.expirySweep?.cancel();
    const arm = (): void => {
      this.expirySweep = this.clock.setTimer(() => {
        this.background(() => this.expireAgents());
        arm();
      }, sweepMs);
    };
    arm();
  }

  addEnrollmentToken(token: EnrollmentTokenRecord): void {
    this.persistence.putEnrollmentToken(token);
    this.enrollmentTokens.set(token.id, token);
    this.enrollmentTokenIndex.set(token.token_sha256, token.id);
  }

  enrollmentTokenByHash(tokenSha256: string): EnrollmentTokenRecord | undefined {
    const id = this.enrollmentTokenIndex.get(tokenSha256);
    return id === undefined ? undefined : this.enrollmentTokens.get(id);
  }

  enrollmentTokenState(token: EnrollmentTokenRecord): EnrollmentTokenState {
    if (token.used_by_agent_id !== null) return "used";
    if (Date.parse(token.expires_at) <= this.clock.now()) return "expired";
    return "unused";
  }

  /** Revokes a token: it enrolls nothing from now on (an agent it enrolled stays). */
  removeEnrollmentToken(id: string): boolean {
    const token = this.enrollmentTokens.get(id);
    if (!token) return false;
    this.persistence.deleteEnrollmentToken(id);
    this.enrollmentTokens.delete(id);
    this.enrollmentTokenIndex.delete(token.token_sha256);
    return true;
  }

  private dropWaiters(agentId: string): void {
    for (const waiter of this.waiters.filter((w) => w.agentId === agentId)) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve([]);
    }
  }

  private revokeLeases(agentId: string, code: AgentLeaseRevocation, message: string): void {
    for (const runId of [...(this.leasesByAgent.get(agentId) ?? [])]) {
      const run = this.runs.get(runId);
      if (run?.status !== "running" || !run.lease) continue;
      this.event(run, "lease_revoked", { agent_id: agentId, code });
      // Never re-queued: the agent may still be running it until its next heartbeat is refused.
      this.finish(run, run.lease.cancel_requested ? "canceled" : "failed", {
        code,
        message: `${message}; the run is not queued again (a run never runs twice)`,
      });
    }
  }

  // ---- runs -------------------------------------------------------------------------------

  /** Queues a run; an external run (`runTokenSha256` given) waits for a sidecar, any other for an agent. */
  createRun(configuration: Buffer, phases: Phase[], external?: { runTokenSha256: string }): RunRecord {
    const run: RunRecord = {
      id: newId("run"),
      status: "queued",
      phases,
      configuration,
      configuration_sha256: createHash("sha256").update(configuration).digest("hex"),
      configuration_size: configuration.byteLength,
      queued_at: this.iso(),
      finished_at: undefined,
      events: [],
      logs: [],
      lease: undefined,
      error: undefined,
      executor: external === undefined ? "agent" : "external",
      run_token_sha256: external?.runTokenSha256 ?? null,
    };
    this.persistence.transaction(() => {
      this.persistence.insertRun(run);
      this.event(run, "queued", { executor: run.executor });
    });
    this.runs.set(run.id, run);
    this.queue.push(run.id);
    // The run is committed: whatever befalls its dispatch is not this request's failure.
    this.background(() => {
      this.dispatch();
    });
    return run;
  }

  cancelRun(run: RunRecord): void {
    this.persistence.transaction(() => {
      if (run.status === "queued") {
        this.event(run, "canceled", { while: "queued" });
        this.end(run, "canceled", undefined);
        const i = this.queue.indexOf(run.id);
        if (i >= 0) this.queue.splice(i, 1);
      } else if (run.status === "running" && run.lease) {
        run.lease.cancel_requested = true;
        this.persistence.updateRun(run);
        this.event(run, "cancel_requested");
      }
    });
  }

  // ---- leasing ----------------------------------------------------------------------------

  /**
   * Waits up to `waitMs` for queued runs; resolves with the runs leased to the agent: at most
   * `max`, and never more than its registered concurrency minus the leases it holds already.
   */
  waitForRuns(agentId: string, max: number, waitMs: number, signal: AbortSignal): Promise<RunRecord[]> {
    const role = this.agents.get(agentId)?.role ?? "agent";
    const room = this.room(agentId, max);
    const ready = room > 0 ? this.takeQueued(room, role) : [];
    if (ready.length > 0 || waitMs <= 0) return Promise.resolve(ready.map((r) => this.lease(r, agentId)));
    return new Promise((resolve) => {
      const waiter: Waiter = {
        agentId,
        role,
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

  /** Takes up to `max` queued runs that `role` may lease (an agent never an external run, a sidecar only those), oldest first. */
  private takeQueued(max: number, role: AgentRole): RunRecord[] {
    const out: RunRecord[] = [];
    for (let i = 0; out.length < max && i < this.queue.length;) {
      const run = this.runs.get(this.queue[i] ?? "");
      if (run?.status !== "queued") {
        this.queue.splice(i, 1);
        continue;
      }
      if (ROLE_FOR[run.executor] !== role) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      out.push(run);
    }
    return out;
  }

  /** How many more runs the agent may lease: its concurrency minus what it holds, at most `max`. */
  private room(agentId: string, max: number): number {
    const agent = this.agents.get(agentId);
    if (!agent || agent.disabled) return 0;
    return Math.min(max, agent.concurrency - this.runningLeases(agentId));
  }

  private dispatch(): void {
    // Oldest waiter first; one at full concurrency keeps waiting (a lease of its may end).
    for (const waiter of [...this.waiters]) {
      if (this.queue.length === 0) return;
      const room = this.room(waiter.agentId, waiter.max);
      if (room <= 0) continue;
      const runs = this.takeQueued(room, waiter.role);
      if (runs.length === 0) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve(runs.map((r) => this.lease(r, waiter.agentId)));
    }
  }

  private lease(run: RunRecord, agentId: string): RunRecord {
    const lease: LeaseRecord = {
      id: newId("lease"),
      agent_id: agentId,
      expires_at_ms: this.clock.now() + this.leaseTtlMs,
      cancel_requested: false,
    };
    this.persistence.transaction(() => {
      run.lease = lease;
      this.event(run, "leased", { agent_id: agentId, lease_id: lease.id });
      this.setStatus(run, "running");
    });
    this.leaseIndex.set(lease.id, run.id);
    const held = this.leasesByAgent.get(agentId) ?? new Set<string>();
    held.add(run.id);
    this.leasesByAgent.set(agentId, held);
    this.armLeaseTimer(run);
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
        this.background(() => {
          this.persistence.transaction(() => {
            this.event(run, "lease_expired", { agent_id: lease.agent_id });
            // Never re-queued: a run must not run twice. The agent that lost it wipes on its side.
            this.finish(run, lease.cancel_requested ? "canceled" : "failed", {
              code: "LEASE_EXPIRED",
              message: `the agent ${lease.agent_id} stopped heartbeating and its lease expired`,
            });
          });
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
    const lease = run.lease;
    if (!lease) return undefined;
    const before = lease.expires_at_ms;
    lease.expires_at_ms = this.clock.now() + this.leaseTtlMs;
    try {
      this.persistence.updateRun(run);
    } catch (error) {
      lease.expires_at_ms = before;
      throw error;
    }
    this.armLeaseTimer(run);
    this.touchAgent(lease.agent_id);
    return lease;
  }

  finish(run: RunRecord, outcome: Outcome, error?: { code: string; message: string }): void {
    this.persistence.transaction(() => {
      this.event(run, "completed", { outcome, ...(error ? { error } : {}) });
      this.end(run, outcome, error);
    });
  }

  /** The run ended: its lease goes, and its configuration, from memory and from storage. */
  private end(run: RunRecord, status: Outcome, error: { code: string; message: string } | undefined): void {
    run.error = error;
    run.finished_at = this.iso();
    this.setStatus(run, status);
    run.configuration = Buffer.alloc(0);
    if (run.lease) {
      this.leaseTimers.get(run.lease.id)?.cancel();
      this.leaseTimers.delete(run.lease.id);
      this.leaseIndex.delete(run.lease.id);
      const held = this.leasesByAgent.get(run.lease.agent_id);
      held?.delete(run.id);
      if (held?.size === 0) this.leasesByAgent.delete(run.lease.agent_id);
    }
    // A slot of that agent is free again: a request of it that waits may take a queued run,
    // once the transaction that ended this run is committed (end() runs inside one).
    queueMicrotask(() => {
      this.background(() => {
        this.dispatch();
      });
    });
  }

  // ---- retention --------------------------------------------------------------------------

  /** Deletes the runs that ended more than the retention ago, then arms the next sweep. */
  sweep(): void {
    this.sweepTimer?.cancel();
    this.background(() => {
      const cutoff = this.clock.now() - this.retentionMs;
      const old = [...this.runs.values()]
        .filter((r) => r.finished_at !== undefined && Date.parse(r.finished_at) <= cutoff)
        .map((r) => r.id);
      if (old.length === 0) return;
      this.persistence.deleteRuns(old);
      for (const id of old) this.runs.delete(id);
    });
    // At most every hour, and often enough that nothing outlives the retention by more than a tenth.
    const every = Math.max(1000, Math.min(3_600_000, this.retentionMs / 10));
    this.sweepTimer = this.clock.setTimer(() => {
      this.sweep();
    }, every);
  }

  close(): void {
    this.sweepTimer?.cancel();
    this.expirySweep?.cancel();
    for (const t of this.leaseTimers.values()) t.cancel();
    this.leaseTimers.clear();
    for (const w of this.waiters.splice(0)) w.resolve([]);
  }

  /** An external run's lease, for its sidecar: the bundle, and no configuration. */
  toSidecarLeasePayload(run: RunRecord, bundle: string): SidecarLease {
    if (!run.lease) throw new Error("run has no lease");
    return {
      lease_id: run.lease.id,
      expires_at: this.iso(run.lease.expires_at_ms),
      run: { id: run.id, executor: "external", phases: run.phases, queued_at: run.queued_at },
      bundle,
    };
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
          size_bytes: run.configuration_size,
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
