/**
 * The agent API, version 1 (docs/protocol.md): enrollment with the pool token and proof of key
 * possession, then, with the per-agent credential only, long-poll leasing, heartbeats, events,
 * logs and completion on the caller's own leases, and key changes proved with a current key.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { selectCredentials } from "../core/credential-selection.js";
import { EXPORT_VERSION, type ExportedCredential } from "../core/export-payload.js";
import { parsePublicKeyDoc, type RecipientPublicKey } from "../crypto/agent-key.js";
import { sealBundle, sealChallenge } from "../crypto/sealed-bundle.js";
import {
  challengeAnswerSchema,
  completeRequestSchema,
  eventsRequestSchema,
  leaseRequestSchema,
  logChunkRequestSchema,
  registerRequestSchema,
  updateKeysRequestSchema,
  type Challenge,
  type Lease,
} from "../protocol/agent-api.js";
import { bearerMatches, bearerToken, HttpError, readJson, sendJson } from "./http-util.js";
import { newId, type AgentRecord, type ControlPlaneStore, type RunRecord } from "./store.js";

const MAX_AGENT_BODY = 1024 * 1024;
/** How long an agent has to answer a challenge. */
const CHALLENGE_TTL_SECONDS = 300;
/** Enrollments waiting for their answer; more are refused until some are answered or expire. */
const MAX_PENDING_ENROLLMENTS = 1000;

export interface AgentApiSettings {
  readonly pollWaitSeconds: number;
  readonly heartbeatIntervalSeconds: number;
  readonly bundleTtlSeconds: number;
  readonly maxLogBytesPerRun: number;
}

/** A challenge the control plane sealed and waits an answer to; only the answer's hash is kept. */
interface PendingChallenge {
  readonly challengeId: string;
  readonly answerSha256: Buffer;
  readonly expiresAtMs: number;
}

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
  /** Agents enrolled but not yet proved, by agent id. */
  private readonly pending = new Map<string, { agent: AgentRecord; challenge: PendingChallenge }>();
  /** The one outstanding key-change challenge of each agent, by agent id. */
  private readonly keyChallenges = new Map<string, PendingChallenge>();

  constructor(
    private readonly store: ControlPlaneStore,
    private readonly settings: AgentApiSettings,
    private readonly poolToken: string,
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse, path: string[]): Promise<void> {
    const method = req.method ?? "GET";
    const [collection, id, action, sub] = path;
    const enrollment =
      collection === "agents" &&
      method === "POST" &&
      (id === undefined || (action === "credential" && sub === undefined));
    if ((collection === "ping" && id === undefined) || enrollment) {
      // The pool token only reaches these: ping (doctor) and the two steps of enrollment.
      if (!bearerMatches(req, this.poolToken) && !(collection === "ping" && this.caller(req)))
        throw new HttpError(
          401,
          "UNAUTHORIZED",
          "enrollment needs Authorization: Bearer <agent pool token>; the token was missing, wrong or revoked: put a valid one in --token-file",
        );
      if (enrollment) return id === undefined ? this.enroll(req, res) : this.answerEnrollment(req, res, id);
      if (method === "GET") {
        sendJson(res, 200, { api_version: 1, time: this.store.iso() });
        return;
      }
      throw new HttpError(404, "NOT_FOUND", `no agent route ${method} /${path.join("/")}`);
    }
    const agent = this.authenticate(req);
    this.store.touchAgent(agent);
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
        const body = await readJson(req, eventsRequestSchema, MAX_AGENT_BODY);
        this.store.atomically(() => {
          for (const e of body.events) this.store.event(run, e.type, { ...e, at: e.at, source: "agent" });
        });
        res.writeHead(204).end();
        return;
      }
      if (action === "logs" && method === "POST") {
        const body = await readJson(req, logChunkRequestSchema, MAX_AGENT_BODY);
        const used = run.logs.reduce((n, l) => n + l.text.length, 0);
        if (used + body.text.length <= this.settings.maxLogBytesPerRun)
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

  /** Step 1 (pool token): a pending agent and a challenge sealed to its newest key. */
  private async enroll(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, registerRequestSchema, MAX_AGENT_BODY);
    const keys = parseKeys(body.public_keys);
    const nowMs = Date.now();
    for (const [agentId, p] of this.pending) if (p.challenge.expiresAtMs <= nowMs) this.pending.delete(agentId);
    if (this.pending.size >= MAX_PENDING_ENROLLMENTS)
      throw new HttpError(
        429,
        "ENROLLMENTS_PENDING_LIMIT",
        `${MAX_PENDING_ENROLLMENTS} enrollments are waiting for their answer; retry in a few minutes, and look for a client enrolling in a loop with the pool token`,
      );
    const now = this.store.iso();
    const agent: AgentRecord = {
      id: newId("agent"),
      name: body.name,
      version: body.version,
      concurrency: body.concurrency,
      public_keys: keys,
      credential_sha256: "",
      registered_at: now,
      last_seen_at: now,
    };
    const { challenge, sealed } = await this.challengeFor(agent, nowMs);
    this.pending.set(agent.id, { agent, challenge });
    sendJson(res, 201, { agent_id: agent.id, ...sealed });
  }

  /** Step 2 (pool token and the opened challenge): the agent exists, with its credential. */
  private async answerEnrollment(req: IncomingMessage, res: ServerResponse, agentId: string): Promise<void> {
    const body = await readJson(req, challengeAnswerSchema, MAX_AGENT_BODY);
    const pending = this.pending.get(agentId);
    if (!pending || !this.answers(pending.challenge, body))
      throw new HttpError(
        403,
        "CHALLENGE_FAILED",
        `the answer does not match a pending challenge of agent ${agentId} (wrong, expired or already used); enroll again with POST /agents, with public keys whose private keys the agent holds`,
      );
    this.pending.delete(agentId);
    const credential = `oca1_${randomBytes(32).toString("base64url")}`;
    pending.agent.credential_sha256 = sha256(credential).toString("hex");
    pending.agent.last_seen_at = this.store.iso();
    this.store.addAgent(pending.agent);
    sendJson(res, 200, {
      credential,
      poll_wait_seconds: this.settings.pollWaitSeconds,
      heartbeat_interval_seconds: this.settings.heartbeatIntervalSeconds,
      lease_ttl_seconds: this.store.leaseTtlMs / 1000,
    });
  }

  /** The enrolled agent the bearer credential belongs to; the pool token is refused here. */
  private authenticate(req: IncomingMessage): AgentRecord {
    const agent = this.caller(req);
    if (agent) return agent;
    if (bearerMatches(req, this.poolToken))
      throw new HttpError(
        401,
        "POOL_TOKEN_NOT_ACCEPTED",
        "the pool token only enrolls: this route needs the agent's own credential (POST /agents, then POST /agents/{id}/credential with the answer to the challenge)",
      );
    throw new HttpError(
      401,
      "AGENT_CREDENTIAL_INVALID",
      "the agent credential was missing, wrong or revoked (the control plane may have restarted); enroll again with the pool token",
    );
  }

  private caller(req: IncomingMessage): AgentRecord | undefined {
    const token = bearerToken(req);
    return token === undefined ? undefined : this.store.agentByCredential(sha256(token).toString("hex"));
  }

  private answers(challenge: PendingChallenge, body: { challenge_id: string; answer: string }): boolean {
    if (challenge.expiresAtMs <= Date.now() || body.challenge_id !== challenge.challengeId) return false;
    return timingSafeEqual(sha256(body.answer), challenge.answerSha256);
  }

  private async challengeFor(
    agent: AgentRecord,
    nowMs: number,
  ): Promise<{ challenge: PendingChallenge; sealed: Challenge }> {
    const challengeId = newId("challenge");
    const secret = randomBytes(32).toString("base64url");
    const sealed = await sealChallenge({
      recipient: recipientOf(agent),
      agentId: agent.id,
      challengeId,
      secret,
      issuedAtMs: nowMs,
      ttlSeconds: CHALLENGE_TTL_SECONDS,
    });
    return {
      challenge: { challengeId, answerSha256: sha256(secret), expiresAtMs: nowMs + CHALLENGE_TTL_SECONDS * 1000 },
      sealed: { challenge_id: challengeId, challenge: sealed },
    };
  }

  /** A challenge sealed to the agent's current newest key; `PUT .../keys` must carry its answer. */
  private async keyChallenge(res: ServerResponse, agent: AgentRecord): Promise<void> {
    const { challenge, sealed } = await this.challengeFor(agent, Date.now());
    this.keyChallenges.set(agent.id, challenge);
    sendJson(res, 200, sealed);
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
    this.store.setAgentKeys(agent, parseKeys(body.public_keys));
    sendJson(res, 200, { public_keys: agent.public_keys });
  }

  private async leases(req: IncomingMessage, res: ServerResponse, agent: AgentRecord): Promise<void> {
    const body = await readJson(req, leaseRequestSchema, MAX_AGENT_BODY);
    const abort = new AbortController();
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
    const leases: Lease[] = [];
    for (const run of runs) {
      try {
        leases.push(this.store.toLeasePayload(run, await this.sealFor(run, agent)));
      } catch (error) {
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
