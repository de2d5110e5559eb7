/**
 * The agent API, version 1 (docs/protocol.md): enrollment with the pool token and proof of key
 * possession, then, with the per-agent credential only, long-poll leasing, heartbeats, events,
 * logs and completion on the caller's own leases, and key changes proved with a current key.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { cloudAuthJson } from "../core/cloud-auth.js";
import { selectCredentials } from "../core/credential-selection.js";
import { EXPORT_VERSION, toCloudAuth, type ExportedCredential } from "../core/export-payload.js";
import { parsePublicKeyDoc, type RecipientPublicKey } from "../crypto/agent-key.js";
import { sealBundle, sealChallenge } from "../crypto/sealed-bundle.js";
import {
  challengeAnswerSchema,
  completeRequestSchema,
  eventsRequestSchema,
  leaseRequestSchema,
  logChunkRequestSchema,
  registerRequestSchema,
  runTokenRequestSchema,
  updateKeysRequestSchema,
  type Challenge,
  type Lease,
  type SidecarLease,
} from "../protocol/agent-api.js";
import { addressKey } from "./connection-policy.js";
import { bearerMatches, bearerToken, HttpError, readJson, sendJson } from "./http-util.js";
import { PendingEnrollments, type PendingChallenge } from "./pending-enrollments.js";
import { RunQuotas, type RunQuotaLimits, type RunUsage } from "./run-quota.js";
import {
  newId,
  type AgentRecord,
  type ControlPlaneStore,
  type EnrollmentTokenRecord,
  type RunRecord,
} from "./store.js";

/** Request bodies (docs/protocol.md, Limits): a log chunk's 65,536 characters may take 6 bytes each as JSON escapes. */
const MAX_AGENT_BODY = 64 * 1024;
const MAX_EVENTS_BODY = 256 * 1024;
const MAX_LOG_BODY = 512 * 1024;
/**
 * How long an agent has to answer an enrollment challenge: it answers at once (the reference agent
 * within a second), and a pending enrollment holds a slot of the caps below until then.
 */
const ENROLLMENT_CHALLENGE_TTL_SECONDS = 60;
/** How long an agent has to answer a key-change challenge (one per agent). */
const KEY_CHALLENGE_TTL_SECONDS = 300;

const AGENT_LIMIT_DEFAULTS = {
  /** Enrolled agents, pending enrollments included; more are refused until some are deleted or expire. */
  maxAgents: 1000,
  /**
   * Pool-token enrollments waiting for their answer; more are refused until some are answered or
   * expire. Enrollment-token ones are not counted: each token has one at most.
   */
  maxPendingEnrollments: 1000,
  /** Pool-token enrollments waiting for their answer from one address (an IPv6 /64 counts as one). */
  maxPendingEnrollmentsPerAddress: 16,
  /** An agent not seen for this long is removed; its credential is then refused and it enrolls again. */
  agentExpirySeconds: 3600,
} as const;

export interface AgentApiSettings extends RunQuotaLimits {
  readonly pollWaitSeconds: number;
  readonly heartbeatIntervalSeconds: number;
  readonly bundleTtlSeconds: number;
  readonly maxAgents?: number;
  readonly maxPendingEnrollments?: number;
  readonly maxPendingEnrollmentsPerAddress?: number;
  readonly agentExpirySeconds?: number;
}

/** What a run already holds from its agent (a run kept across a restart of the control plane). */
function storedUsage(run: RunRecord): RunUsage {
  const events = run.events.filter((e) => e["source"] === "agent");
  return {
    events: events.length,
    eventBytes: events.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)), 0),
    logEntries: run.logs.length,
    logBytes: run.logs.reduce((n, l) => n + Buffer.byteLength(l.text, "utf8"), 0),
  };
}

/** A per-agent credential: `oca1_` and 32 random bytes, base64url. */
const CREDENTIAL_SHAPE = /^oca1_[A-Za-z0-9_-]{43}$/;

function newCredential(): string {
  return `oca1_${randomBytes(32).toString("base64url")}`;
}

/**
 * Whether a bearer token has the per-agent credential's shape: 256 random bits, which nobody
 * guesses, so such a bearer is never throttled as a guess (docs/protocol.md, Limits).
 */
export function hasCredentialShape(token: string | undefined): boolean {
  return token !== undefined && CREDENTIAL_SHAPE.test(token);
}

/** What an enrollment was authenticated with: the pool token, or a single-use enrollment token. */
type EnrollmentCredential =
  { readonly kind: "pool" } | { readonly kind: "token"; readonly token: EnrollmentTokenRecord };

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function recipientOf(agent: AgentRecord): RecipientPublicKey {
  const newest = agent.public_keys[agent.public_keys.length - 1];
  if (!newest) throw new Error("agent has no public key");
  return parsePublicKeyDoc(JSON.stringify(newest), "agent key");
}

function parseKeys(keys: { kid: string; public_key: string }[]): { kid: string; public_key: string }[] {
  for (const k of keys) {
    try {
      parsePublicKeyDoc(JSON.stringify(k), "public_keys entry");
    } catch {
      throw new HttpError(
        422,
        "PUBLIC_KEY_INVALID",
        `public key ${k.kid} is not a valid X25519 key document (kid must be its RFC 7638 thumbprint)`,
      );
    }
  }
  return keys;
}

export class AgentApi {
  /** The one outstanding key-change challenge of each agent, by agent id. */
  private readonly keyChallenges = new Map<string, PendingChallenge>();
  /**
   * The one lease request each agent may have waiting, by agent id. An agent sends one at a time
   * (it asks for all its free slots at once); one holding many would hold as many connections.
   */
  private readonly waiting = new Map<string, AbortController>();
  /** What each running run has stored from its agent: events and log entries. */
  private readonly quotas: RunQuotas;

  private readonly maxAgents: number;
  private readonly maxPendingEnrollments: number;
  private readonly maxPendingPerAddress: number;

  /**
   * Without `poolToken`, agents enroll with enrollment tokens only. `pending` holds the
   * enrollments not yet proved (the admin API lists and deletes them).
   */
  constructor(
    private readonly store: ControlPlaneStore,
    private readonly settings: AgentApiSettings,
    private readonly poolToken: string | undefined,
    private readonly pending: PendingEnrollments = new PendingEnrollments(),
  ) {
    this.maxAgents = settings.maxAgents ?? AGENT_LIMIT_DEFAULTS.maxAgents;
    this.maxPendingEnrollments = settings.maxPendingEnrollments ?? AGENT_LIMIT_DEFAULTS.maxPendingEnrollments;
    this.maxPendingPerAddress =
      settings.maxPendingEnrollmentsPerAddress ?? AGENT_LIMIT_DEFAULTS.maxPendingEnrollmentsPerAddress;
    const expiryMs = (settings.agentExpirySeconds ?? AGENT_LIMIT_DEFAULTS.agentExpirySeconds) * 1000;
    store.startAgentExpiry(expiryMs, Math.min(60_000, expiryMs / 4));
    store.on("agent-removed", (agentId: string) => this.keyChallenges.delete(agentId));
    this.quotas = new RunQuotas(settings);
    store.on("run-changed", (run: RunRecord) => {
      if (run.status !== "queued" && run.status !== "running") this.quotas.forget(run.id);
    });
  }

  /**
   * Who a request's bearer token says it is, for connection and rate limits, without side effects
   * (each route still authenticates): an enrolled agent not expired (disabled included), or an
   * enrollment credential (the pool token or a known enrollment token).
   */
  identify(req: IncomingMessage): { readonly id: string; readonly concurrency: number } | "enrollment" | undefined {
    const token = bearerToken(req);
    const agent = token === undefined ? undefined : this.store.agentByCredential(sha256(token).toString("hex"));
    if (agent !== undefined && !this.store.agentExpired(agent)) return { id: agent.id, concurrency: agent.concurrency };
    return this.bearerEnrollmentCredential(req) === undefined ? undefined : "enrollment";
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string[]): Promise<void> {
    const method = req.method ?? "GET";
    const [collection, id, action, sub] = path;
    const enrollment =
      collection === "agents" &&
      method === "POST" &&
      (id === undefined || (action === "credential" && sub === undefined));
    // The pool token and enrollment tokens only reach these: the two steps of enrollment, and ping.
    if (enrollment) {
      const via = this.enrollmentCredential(req);
      return id === undefined ? this.enroll(req, res, via) : this.answerEnrollment(req, res, id, via);
    }
    if (collection === "ping" && id === undefined) {
      // doctor checks the token in --token-file (pool or enrollment token) or a credential, without side effects.
      if (this.bearerEnrollmentCredential(req) === undefined) this.authenticate(req);
      else this.enrollmentCredential(req);
      if (method === "GET") {
        sendJson(res, 200, { api_version: 1, time: this.store.iso() });
        return;
      }
      throw new HttpError(404, "NOT_FOUND", `no agent route ${method} /${path.join("/")}`);
    }
    const agent = this.authenticate(req);
    if (collection === "agents" && id !== undefined) {
      if (id !== agent.id)
        throw new HttpError(
          403,
          "AGENT_NOT_CALLER",
          `the credential belongs to agent ${agent.id}, not ${id}; an agent acts only as itself`,
        );
      if (action === "leases" && sub === undefined && method === "POST") return this.leases(req, res, agent);
      if (action === "keys" && sub === undefined && method === "PUT") return this.updateKeys(req, res, agent);
      if (action === "keys" && sub === "challenge" && method === "POST") return this.keyChallenge(res, agent);
    }
    if (collection === "leases" && id !== undefined) {
      const run = this.store.runForLease(id);
      if (!run)
        throw new HttpError(
          409,
          "LEASE_LOST",
          `lease ${id} is no longer held (expired, completed or unknown); abort the run and wipe its credentials`,
        );
      if (run.lease?.agent_id !== agent.id)
        throw new HttpError(404, "LEASE_NOT_HELD", `this agent holds no lease ${id}; act only on your own leases`);
      if (action === "run-token" && method === "POST") return this.checkRunToken(req, res, run, agent);
      if (action === "bundle" && method === "POST") {
        await readJson(req, z.object({}), MAX_AGENT_BODY);
        externalOnly(run, agent);
        sendJson(res, 200, { bundle: await this.sealFor(run, agent) });
        return;
      }
      if (action === "configuration" && method === "GET") {
        res.writeHead(200, { "content-type": "application/gzip", "content-length": run.configuration.byteLength });
        res.end(run.configuration);
        return;
      }
      if (action === "heartbeat" && method === "POST") {
        const lease = this.store.heartbeat(run);
        sendJson(res, 200, {
          expires_at: this.store.iso(lease?.expires_at_ms),
          cancel_requested: lease?.cancel_requested ?? false,
        });
        return;
      }
      if (action === "events" && method === "POST") {
        const body = await readJson(req, eventsRequestSchema, MAX_EVENTS_BODY);
        const refused = this.quotas.chargeEvents(
          run.id,
          body.events.length,
          Buffer.byteLength(JSON.stringify(body.events)),
          () => storedUsage(run),
        );
        if (refused) throw new HttpError(422, refused.code, refused.message, { limit: refused.limit });
        this.store.atomically(() => {
          for (const e of body.events) this.store.event(run, e.type, { ...e, at: e.at, source: "agent" });
        });
        res.writeHead(204).end();
        return;
      }
      if (action === "logs" && method === "POST") {
        const body = await readJson(req, logChunkRequestSchema, MAX_LOG_BODY);
        const refused = this.quotas.chargeLog(run.id, Buffer.byteLength(body.text, "utf8"), () => storedUsage(run));
        if (refused) throw new HttpError(422, refused.code, refused.message, { limit: refused.limit });
        this.store.appendLog(run, { phase: body.phase, seq: body.seq, text: body.text });
        res.writeHead(204).end();
        return;
      }
      if (action === "complete" && method === "POST") {
        const body = await readJson(req, completeRequestSchema, MAX_AGENT_BODY);
        this.store.atomically(() => {
          for (const p of body.phases)
            this.store.event(run, "phase_result", {
              phase: p.name,
              exit_code: p.exit_code,
              signal: p.signal,
              duration_ms: p.duration_ms,
            });
          this.store.event(run, "credentials_wiped", { wiped: body.credentials_wiped });
          this.store.finish(run, body.outcome, body.error);
        });
        sendJson(res, 200, { id: run.id, status: run.status });
        return;
      }
    }
    throw new HttpError(404, "NOT_FOUND", `no agent route ${method} /${path.join("/")}`);
  }

  /** Step 1 (pool token or enrollment token): a pending agent and a challenge sealed to its newest key. */
  private async enroll(req: IncomingMessage, res: ServerResponse, via: EnrollmentCredential): Promise<void> {
    const body = await readJson(req, registerRequestSchema, MAX_AGENT_BODY);
    const keys = parseKeys(body.public_keys);
    const nowMs = this.store.nowMs();
    const remoteAddress = req.socket.remoteAddress ?? "unknown";
    const address = addressKey(remoteAddress);
    this.pending.sweep(nowMs);
    // From the checks to adding the pending enrollment, nothing awaits: concurrent requests
    // cannot all pass the caps before any of them counts.
    if (via.kind === "token") {
      // An operator's token has its own slot: the pool token's caps do not apply to it.
      this.pending.dropToken(via.token.id);
      if (this.store.agents.size + this.pending.tokenCount() >= this.maxAgents) throw this.agentsLimit();
    } else {
      if (this.pending.poolCount(address) >= this.maxPendingPerAddress)
        throw new HttpError(
          429,
          "ENROLLMENTS_PENDING_LIMIT",
          `${this.maxPendingPerAddress} enrollments with the pool token from this address are waiting for their answer; retry in a minute, and look for a client on this address enrolling in a loop (operators see them in oci-cred-agent agents list, status pending, and delete them; an enrollment token is not held up by this cap)`,
        );
      if (this.pending.poolCount() >= this.maxPendingEnrollments)
        throw new HttpError(
          429,
          "ENROLLMENTS_PENDING_LIMIT",
          `${this.maxPendingEnrollments} enrollments with the pool token are waiting for their answer; retry in a minute, and look for a client enrolling in a loop (operators see them in oci-cred-agent agents list, status pending, and delete them; an enrollment token is not held up by this cap; the cap is raised with --max-pending-enrollments)`,
        );
      // Pending enrollments count: answering them all must not take the agents past the cap.
      if (this.store.agents.size + this.pending.size >= this.maxAgents) throw this.agentsLimit();
    }
    const now = this.store.iso(nowMs);
    const agent: AgentRecord = {
      id: newId("agent"),
      name: body.name,
      version: body.version,
      concurrency: body.concurrency,
      public_keys: keys,
      credential_sha256: "",
      registered_at: now,
      last_seen_at: now,
      disabled: false,
      enrollment_token_id: via.kind === "token" ? via.token.id : null,
      role: body.role ?? "agent",
    };
    const { challenge, secret } = newChallenge(nowMs, ENROLLMENT_CHALLENGE_TTL_SECONDS);
    this.pending.add({ agent, challenge, addressKey: address, remoteAddress, startedAtMs: nowMs });
    let sealed: string;
    try {
      sealed = await sealChallengeTo(agent, challenge, secret, nowMs, ENROLLMENT_CHALLENGE_TTL_SECONDS);
    } catch (error) {
      this.pending.delete(agent.id);
      throw error;
    }
    sendJson(res, 201, { agent_id: agent.id, challenge_id: challenge.challengeId, challenge: sealed });
  }

  private agentsLimit(): HttpError {
    return new HttpError(
      429,
      "AGENTS_LIMIT",
      `${this.maxAgents} agents are enrolled or enrolling, the control plane's cap; retry later: an operator deletes agents no longer in use (oci-cred-agent agents list, agents delete ID), they expire when not seen for --agent-expiry, or the cap is raised with --max-agents`,
    );
  }

  /**
   * Step 2 (the same pool token or enrollment token as step 1, and the opened challenge): the
   * agent exists, with its credential; an enrollment token is used up.
   */
  private async answerEnrollment(
    req: IncomingMessage,
    res: ServerResponse,
    agentId: string,
    via: EnrollmentCredential,
  ): Promise<void> {
    const body = await readJson(req, challengeAnswerSchema, MAX_AGENT_BODY);
    const pending = this.pending.get(agentId);
    const tokenId = via.kind === "token" ? via.token.id : null;
    if (!pending || pending.agent.enrollment_token_id !== tokenId || !this.answers(pending.challenge, body))
      throw new HttpError(
        403,
        "CHALLENGE_FAILED",
        `the answer does not match a pending challenge of agent ${agentId} (wrong, expired, already used, deleted by an operator, or enrolled with another token); enroll again with POST /agents, with public keys whose private keys the agent holds`,
      );
    this.pending.delete(agentId);
    // Pending enrollment-token enrollments keep their places: pool-token ones cannot take them.
    if (tokenId === null && this.store.agents.size + this.pending.tokenCount() >= this.maxAgents)
      throw this.agentsLimit();
    const credential = newCredential();
    const agent: AgentRecord = {
      ...pending.agent,
      credential_sha256: sha256(credential).toString("hex"),
      last_seen_at: this.store.iso(),
    };
    // The token is checked and used up in the same step, whatever another enrollment did meanwhile.
    if (!this.store.addAgent(agent)) throw tokenUsedError();
    sendJson(res, 200, {
      credential,
      poll_wait_seconds: this.settings.pollWaitSeconds,
      heartbeat_interval_seconds: this.settings.heartbeatIntervalSeconds,
      lease_ttl_seconds: this.store.leaseTtlMs / 1000,
    });
  }

  /**
   * The enrolled agent the bearer credential belongs to, seen now; the pool token and enrollment
   * tokens are refused here, an agent not seen for the expiry is removed, a disabled one refused.
   */
  private authenticate(req: IncomingMessage): AgentRecord {
    const token = bearerToken(req);
    const agent = token === undefined ? undefined : this.store.agentByCredential(sha256(token).toString("hex"));
    if (agent && this.store.agentExpired(agent)) {
      // The sweep would remove it soon; a request must not beat it to it.
      this.store.removeAgent(agent.id, "AGENT_EXPIRED");
    } else if (agent) {
      // A disabled agent that keeps asking is seen too: it stays (disabled) instead of expiring.
      this.store.touchAgent(agent.id);
      if (agent.disabled)
        throw new HttpError(
          403,
          "AGENT_DISABLED",
          `an operator disabled agent ${agent.id}: it leases nothing and its leases were ended; an operator enables it again with oci-cred-agent agents enable ${agent.id} (or POST /api/admin/v1/agents/${agent.id}/enable)`,
        );
      return agent;
    }
    const via = this.bearerEnrollmentCredential(req);
    if (via?.kind === "pool")
      throw new HttpError(
        401,
        "POOL_TOKEN_NOT_ACCEPTED",
        "the pool token only enrolls: this route needs the agent's own credential (POST /agents, then POST /agents/{id}/credential with the answer to the challenge)",
      );
    if (via?.kind === "token")
      throw new HttpError(
        401,
        "ENROLLMENT_TOKEN_NOT_ACCEPTED",
        "an enrollment token only enrolls: this route needs the agent's own credential (POST /agents, then POST /agents/{id}/credential with the answer to the challenge)",
      );
    throw new HttpError(
      401,
      "AGENT_CREDENTIAL_INVALID",
      "the agent credential was missing, wrong, revoked or expired (the control plane may have restarted, or an operator deleted the agent); enroll again with the pool token or an enrollment token",
    );
  }

  /** The pool token or a known enrollment token the request carries, whatever that token's state. */
  private bearerEnrollmentCredential(req: IncomingMessage): EnrollmentCredential | undefined {
    if (this.poolToken !== undefined && bearerMatches(req, this.poolToken)) return { kind: "pool" };
    const bearer = bearerToken(req);
    // Looked up by its SHA-256: the map lookup learns nothing usable about the token.
    const token = bearer === undefined ? undefined : this.store.enrollmentTokenByHash(sha256(bearer).toString("hex"));
    return token ? { kind: "token", token } : undefined;
  }

  /** The credential an enrollment step needs: the pool token, or an enrollment token not used nor expired. */
  private enrollmentCredential(req: IncomingMessage): EnrollmentCredential {
    const via = this.bearerEnrollmentCredential(req);
    if (via === undefined)
      throw new HttpError(
        401,
        "UNAUTHORIZED",
        `enrollment needs Authorization: Bearer <${this.poolToken === undefined ? "enrollment token" : "agent pool token or enrollment token"}>; the token was missing, wrong or revoked: put a valid one in --token-file${this.poolToken === undefined ? " (this control plane enrolls with single-use enrollment tokens only: ask an operator for one)" : ""}`,
      );
    if (via.kind === "token") {
      const state = this.store.enrollmentTokenState(via.token);
      if (state === "used") throw tokenUsedError();
      if (state === "expired")
        throw new HttpError(
          403,
          "ENROLLMENT_TOKEN_EXPIRED",
          `enrollment token ${via.token.id} expired at ${via.token.expires_at}; an operator creates a new one (POST /api/admin/v1/enrollment-tokens, or oci-cred-agent enrollment-tokens create) to put in --token-file`,
        );
    }
    return via;
  }

  private answers(challenge: PendingChallenge, body: { challenge_id: string; answer: string }): boolean {
    if (challenge.expiresAtMs <= this.store.nowMs() || body.challenge_id !== challenge.challengeId) return false;
    return timingSafeEqual(sha256(body.answer), challenge.answerSha256);
  }

  /** A challenge sealed to the agent's current newest key; `PUT .../keys` must carry its answer. */
  private async keyChallenge(res: ServerResponse, agent: AgentRecord): Promise<void> {
    const nowMs = this.store.nowMs();
    const { challenge, secret } = newChallenge(nowMs, KEY_CHALLENGE_TTL_SECONDS);
    const sealed = await sealChallengeTo(agent, challenge, secret, nowMs, KEY_CHALLENGE_TTL_SECONDS);
    this.keyChallenges.set(agent.id, challenge);
    const answer: Challenge = { challenge_id: challenge.challengeId, challenge: sealed };
    sendJson(res, 200, answer);
  }

  private async updateKeys(req: IncomingMessage, res: ServerResponse, agent: AgentRecord): Promise<void> {
    const body = await readJson(req, updateKeysRequestSchema, MAX_AGENT_BODY);
    const challenge = this.keyChallenges.get(agent.id);
    if (!challenge || !this.answers(challenge, body))
      throw new HttpError(
        403,
        "KEY_PROOF_FAILED",
        "changing keys needs proof of a current key: POST /agents/{id}/keys/challenge, open the challenge with the private key, and send its answer with challenge_id in this request",
      );
    this.keyChallenges.delete(agent.id);
    const changed = this.store.setAgentKeys(agent.id, parseKeys(body.public_keys));
    sendJson(res, 200, { public_keys: changed?.public_keys ?? [] });
  }

  private async leases(req: IncomingMessage, res: ServerResponse, agent: AgentRecord): Promise<void> {
    const body = await readJson(req, leaseRequestSchema, MAX_AGENT_BODY);
    // A new lease request answers the agent's waiting one with [] (it was left behind, or sent to
    // hold connections).
    this.waiting.get(agent.id)?.abort();
    const abort = new AbortController();
    this.waiting.set(agent.id, abort);
    const onClose = (): void => {
      abort.abort();
    };
    res.on("close", onClose);
    const runs = await this.store.waitForRuns(
      agent.id,
      body.max,
      Math.min(body.wait_seconds, 300) * 1000,
      abort.signal,
    );
    res.off("close", onClose);
    if (this.waiting.get(agent.id) === abort) this.waiting.delete(agent.id);
    const leases: (Lease | SidecarLease)[] = [];
    for (const run of runs) {
      try {
        const bundle = await this.sealFor(run, agent);
        // Disabled or deleted while the bundle was sealed: the run ended already, with the reason.
        if (run.status !== "running" || run.lease?.agent_id !== agent.id) continue;
        leases.push(
          run.executor === "external"
            ? this.store.toSidecarLeasePayload(run, bundle)
            : this.store.toLeasePayload(run, bundle),
        );
      } catch (error) {
        if (run.status === "running")
          this.store.failLease(
            run,
            "SEAL_FAILED",
            `the control plane could not seal credentials for agent ${agent.id}: ${error instanceof Error ? error.message : "error"}`,
          );
      }
    }
    if (res.destroyed) {
      // The agent went away while we waited: those runs must not be left leased to nobody.
      for (const run of runs)
        if (run.status === "running")
          this.store.finish(run, "failed", {
            code: "LEASE_UNDELIVERED",
            message: "the agent disconnected before the lease reached it",
          });
      return;
    }
    sendJson(res, 200, { leases });
  }

  /**
   * `POST /leases/{id}/run-token` (the sidecar holding the lease): 204 when the token is the
   * run's, else 403 RUN_TOKEN_INVALID and an event on the run (never the token). Compared as
   * SHA-256 digests, in constant time.
   */
  private async checkRunToken(
    req: IncomingMessage,
    res: ServerResponse,
    run: RunRecord,
    agent: AgentRecord,
  ): Promise<void> {
    const body = await readJson(req, runTokenRequestSchema, MAX_AGENT_BODY);
    externalOnly(run, agent);
    const expected = run.run_token_sha256 === null ? undefined : Buffer.from(run.run_token_sha256, "hex");
    const given = sha256(body.run_token);
    if (expected !== undefined && expected.byteLength === given.byteLength && timingSafeEqual(expected, given)) {
      res.writeHead(204).end();
      return;
    }
    this.store.event(run, "run_token_refused", { agent_id: agent.id });
    throw new HttpError(
      403,
      "RUN_TOKEN_INVALID",
      `the run token is not run ${run.id}'s; the hook must pass the token POST /api/admin/v1/runs answered for this run (OCI_CRED_AGENT_RUN_TOKEN or --run-token-file)`,
    );
  }

  /** Seals the run's exported credentials (export on, one per registry) to the agent's newest key. */
  private async sealFor(run: RunRecord, agent: AgentRecord): Promise<string> {
    const recipient = recipientOf(agent);
    const all = [...this.store.integrations.values()];
    for (const i of all.filter((x) => !x.export_credentials)) {
      this.store.event(run, "integration_left_out", {
        integration_id: i.id,
        integration_name: i.name,
        code: "EXPORT_OFF",
        reason: "export_credentials is off",
      });
    }
    const candidates: ExportedCredential[] = all
      .filter((i) => i.export_credentials)
      .map((i) => ({
        id: i.id,
        name: i.name,
        url: i.registry_url,
        username: i.username,
        password: i.password,
        credentialHelper: i.credential_helper ?? undefined,
        cloudAuth: i.cloud_auth === undefined || i.cloud_auth === null ? undefined : toCloudAuth(i.cloud_auth),
        updatedAtMs: Date.parse(i.updated_at),
      }));
    const selection = selectCredentials({ entries: candidates, invalid: [] });
    for (const ig of selection.ignored) {
      this.store.event(run, "integration_left_out", {
        integration_id: ig.integration_id,
        integration_name: ig.integration_name,
        code: ig.code,
        reason: ig.reason,
      });
    }
    const plaintext = JSON.stringify({
      version: EXPORT_VERSION,
      registries: selection.selected.map(({ entry }) => {
        const source = this.store.integrations.get(entry.id);
        const when = { id: entry.id, name: entry.name, url: entry.url, updated_at: source?.updated_at };
        if (entry.cloudAuth !== undefined) return { ...when, cloud_auth: cloudAuthJson(entry.cloudAuth) };
        return entry.credentialHelper !== undefined
          ? { ...when, credential_helper: entry.credentialHelper }
          : { ...when, username: entry.username, password: entry.password };
      }),
    });
    const bytes = Buffer.from(plaintext, "utf8");
    try {
      return await sealBundle({
        recipient,
        agentId: agent.id,
        runId: run.id,
        plaintext: bytes,
        issuedAtMs: Date.now(),
        ttlSeconds: this.settings.bundleTtlSeconds,
      });
    } finally {
      bytes.fill(0);
    }
  }
}

/** A new challenge: its secret (sealed to the agent, never kept) and what is kept to check the answer. */
function newChallenge(nowMs: number, ttlSeconds: number): { challenge: PendingChallenge; secret: string } {
  const secret = randomBytes(32).toString("base64url");
  return {
    challenge: {
      challengeId: newId("challenge"),
      answerSha256: sha256(secret),
      expiresAtMs: nowMs + ttlSeconds * 1000,
    },
    secret,
  };
}

function sealChallengeTo(
  agent: AgentRecord,
  challenge: PendingChallenge,
  secret: string,
  issuedAtMs: number,
  ttlSeconds: number,
): Promise<string> {
  return sealChallenge({
    recipient: recipientOf(agent),
    agentId: agent.id,
    challengeId: challenge.challengeId,
    secret,
    issuedAtMs,
    ttlSeconds,
  });
}

/** The sidecar routes serve external runs to sidecars only. */
function externalOnly(run: RunRecord, agent: AgentRecord): void {
  if (run.executor !== "external" || agent.role !== "sidecar")
    throw new HttpError(
      409,
      "RUN_NOT_EXTERNAL",
      `run ${run.id} is not executed by an external runner, or this client did not enroll as a sidecar; run-token and bundle serve a sidecar's external runs only`,
    );
}

function tokenUsedError(): HttpError {
  return new HttpError(
    403,
    "ENROLLMENT_TOKEN_USED",
    "this enrollment token enrolled an agent already, and a token enrolls one agent only; an operator creates a new one (POST /api/admin/v1/enrollment-tokens, or oci-cred-agent enrollment-tokens create) to put in --token-file",
  );
}
