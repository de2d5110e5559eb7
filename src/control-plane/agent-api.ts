/**
 * The agent API (Authorization: Bearer <agent pool token>), version 1: registration, long-poll
 * leasing, heartbeats, events, logs and completion (docs/protocol.md).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { selectCredentials } from "../core/credential-selection.js";
import { EXPORT_VERSION, type ExportedCredential } from "../core/export-payload.js";
import { parsePublicKeyDoc } from "../crypto/agent-key.js";
import { sealBundle } from "../crypto/sealed-bundle.js";
import {
  completeRequestSchema,
  eventsRequestSchema,
  leaseRequestSchema,
  logChunkRequestSchema,
  registerRequestSchema,
  updateKeysRequestSchema,
  type Lease,
} from "../protocol/agent-api.js";
import { HttpError, readJson, sendJson } from "./http-util.js";
import { newId, type AgentRecord, type ControlPlaneStore, type RunRecord } from "./store.js";

const MAX_AGENT_BODY = 1024 * 1024;

export interface AgentApiSettings {
  readonly pollWaitSeconds: number;
  readonly heartbeatIntervalSeconds: number;
  readonly bundleTtlSeconds: number;
  readonly maxLogBytesPerRun: number;
}

export class AgentApi {
  constructor(
    private readonly store: ControlPlaneStore,
    private readonly settings: AgentApiSettings,
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse, path: string[]): Promise<void> {
    const method = req.method ?? "GET";
    const [collection, id, action] = path;
    if (collection === "ping" && id === undefined && method === "GET") {
      sendJson(res, 200, { api_version: 1, time: this.store.iso() });
      return;
    }
    if (collection === "agents" && id === undefined && method === "POST") return this.register(req, res);
    if (collection === "agents" && id !== undefined) {
      const agent = this.store.agents.get(id);
      if (!agent) throw new HttpError(404, "AGENT_UNKNOWN", `agent ${id} is not registered; register again`);
      agent.last_seen_at = this.store.iso();
      if (action === "leases" && method === "POST") return this.leases(req, res, agent);
      if (action === "keys" && method === "PUT") return this.updateKeys(req, res, agent);
    }
    if (collection === "leases" && id !== undefined) {
      const run = this.store.runForLease(id);
      if (!run)
        throw new HttpError(
          409,
          "LEASE_LOST",
          `lease ${id} is no longer held (expired, completed or unknown); abort the run and wipe its credentials`,
        );
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
        for (const e of body.events) this.store.event(run, e.type, { ...e, at: e.at, source: "agent" });
        res.writeHead(204).end();
        return;
      }
      if (action === "logs" && method === "POST") {
        const body = await readJson(req, logChunkRequestSchema, MAX_AGENT_BODY);
        const used = run.logs.reduce((n, l) => n + l.text.length, 0);
        if (used + body.text.length <= this.settings.maxLogBytesPerRun)
          run.logs.push({ phase: body.phase, seq: body.seq, text: body.text });
        res.writeHead(204).end();
        return;
      }
      if (action === "complete" && method === "POST") {
        const body = await readJson(req, completeRequestSchema, MAX_AGENT_BODY);
        for (const p of body.phases)
          this.store.event(run, "phase_result", {
            phase: p.name,
            exit_code: p.exit_code,
            signal: p.signal,
            duration_ms: p.duration_ms,
          });
        this.store.event(run, "credentials_wiped", { wiped: body.credentials_wiped });
        this.store.finish(run, body.outcome, body.error);
        sendJson(res, 200, { id: run.id, status: run.status });
        return;
      }
    }
    throw new HttpError(404, "NOT_FOUND", `no agent route ${method} /${path.join("/")}`);
  }

  private async register(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, registerRequestSchema, MAX_AGENT_BODY);
    const keys = body.public_keys.map((k) => {
      try {
        parsePublicKeyDoc(JSON.stringify(k), "public_keys entry");
      } catch {
        throw new HttpError(
          422,
          "PUBLIC_KEY_INVALID",
          `public key ${k.kid} is not a valid X25519 key document (kid must be its RFC 7638 thumbprint)`,
        );
      }
      return k;
    });
    const now = this.store.iso();
    const agent: AgentRecord = {
      id: newId("agent"),
      name: body.name,
      version: body.version,
      concurrency: body.concurrency,
      public_keys: keys,
      registered_at: now,
      last_seen_at: now,
    };
    this.store.agents.set(agent.id, agent);
    this.store.emit("changed");
    sendJson(res, 201, {
      agent_id: agent.id,
      poll_wait_seconds: this.settings.pollWaitSeconds,
      heartbeat_interval_seconds: this.settings.heartbeatIntervalSeconds,
      lease_ttl_seconds: this.store.leaseTtlMs / 1000,
    });
  }

  private async updateKeys(req: IncomingMessage, res: ServerResponse, agent: AgentRecord): Promise<void> {
    const body = await readJson(req, updateKeysRequestSchema, MAX_AGENT_BODY);
    for (const k of body.public_keys) {
      try {
        parsePublicKeyDoc(JSON.stringify(k), "public_keys entry");
      } catch {
        throw new HttpError(422, "PUBLIC_KEY_INVALID", `public key ${k.kid} is not a valid X25519 key document`);
      }
    }
    agent.public_keys = body.public_keys;
    this.store.emit("changed");
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
    const newest = agent.public_keys[agent.public_keys.length - 1];
    if (!newest) throw new Error("agent has no public key");
    const recipient = parsePublicKeyDoc(JSON.stringify(newest), "agent key");
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
