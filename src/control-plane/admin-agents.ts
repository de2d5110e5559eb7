/**
 * The admin API's agents and enrollment tokens: operators list, show, disable, enable and delete
 * agents, and create, list and revoke single-use enrollment tokens. No answer ever carries an
 * agent credential or a token's hash; a new token is shown once, when it is created.
 */
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import type { AgentView, EnrollmentTokenView } from "../protocol/admin-agents.js";
import { isPrintable } from "../protocol/agent-api.js";
import { HttpError, readJson, sendJson } from "./http-util.js";
import type { PendingEnrollment, PendingEnrollments } from "./pending-enrollments.js";
import { newId, type AgentRecord, type ControlPlaneStore, type EnrollmentTokenRecord } from "./store.js";

/** A token lives a day unless the operator says otherwise; at most a year. */
const DEFAULT_TOKEN_TTL_SECONDS = 86_400;
const MAX_TOKEN_TTL_SECONDS = 365 * 86_400;

const createTokenSchema = z.strictObject({
  name: z.string().min(1).max(256).refine(isPrintable, { message: "must not contain control characters" }).optional(),
  expires_in_seconds: z.number().int().positive().max(MAX_TOKEN_TTL_SECONDS).optional(),
});

/** What operators see of an agent: never its credential nor the credential's hash. */
function agentView(store: ControlPlaneStore, agent: AgentRecord): AgentView {
  return {
    id: agent.id,
    name: agent.name,
    version: agent.version,
    concurrency: agent.concurrency,
    role: agent.role,
    key_ids: agent.public_keys.map((k) => k.kid),
    registered_at: agent.registered_at,
    last_seen_at: agent.last_seen_at,
    status: agent.disabled ? "disabled" : "enabled",
    enrolled_with: agent.enrollment_token_id === null ? "pool_token" : "enrollment_token",
    enrollment_token_id: agent.enrollment_token_id,
    running_leases: store.runningLeases(agent.id),
  };
}

/**
 * What operators see of an enrollment waiting for its answer: its remote address and age too, so
 * that a flood of them shows where it comes from. It leases nothing and can only be deleted.
 */
function pendingView(store: ControlPlaneStore, p: PendingEnrollment): AgentView {
  const { agent } = p;
  return {
    ...agentView(store, agent),
    status: "pending",
    remote_address: p.remoteAddress,
    age_seconds: Math.max(0, Math.floor((store.nowMs() - p.startedAtMs) / 1000)),
  };
}

/** What operators see of an enrollment token: never the token nor its hash. */
function tokenView(store: ControlPlaneStore, token: EnrollmentTokenRecord): EnrollmentTokenView {
  return {
    id: token.id,
    name: token.name,
    created_at: token.created_at,
    expires_at: token.expires_at,
    status: store.enrollmentTokenState(token),
    used_by_agent_id: token.used_by_agent_id,
    used_at: token.used_at,
  };
}

export class AdminAgents {
  constructor(
    private readonly store: ControlPlaneStore,
    private readonly pending: PendingEnrollments,
  ) {}

  /** `/agents...` and `/enrollment-tokens...` of the admin API. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string[]): Promise<void> {
    const method = req.method ?? "GET";
    const [collection, id, action, extra] = path;
    if (extra === undefined && collection === "agents") {
      this.pending.sweep(this.store.nowMs());
      if (id === undefined && action === undefined && method === "GET") {
        sendJson(res, 200, {
          agents: [
            ...[...this.store.agents.values()].map((a) => agentView(this.store, a)),
            ...this.pending.list().map((p) => pendingView(this.store, p)),
          ],
        });
        return;
      }
      const pending = id === undefined ? undefined : this.pending.get(id);
      if (pending && action === undefined && method === "GET") {
        sendJson(res, 200, pendingView(this.store, pending));
        return;
      }
      if (pending && action === undefined && method === "DELETE") {
        // Its answer is refused from now on (CHALLENGE_FAILED), and its slot is free.
        this.pending.delete(pending.agent.id);
        res.writeHead(204).end();
        return;
      }
      if (pending)
        throw new HttpError(
          409,
          "AGENT_PENDING",
          `agent ${pending.agent.id} has not answered its enrollment challenge yet: it can only be listed or deleted (oci-cred-agent agents delete ${pending.agent.id})`,
        );
      const agent = id === undefined ? undefined : this.store.agents.get(id);
      if (!agent)
        throw new HttpError(404, "NOT_FOUND", `no agent ${id ?? ""}; GET /api/admin/v1/agents lists the agents`);
      if (action === undefined && method === "GET") {
        sendJson(res, 200, agentView(this.store, agent));
        return;
      }
      if (action === undefined && method === "DELETE") {
        this.store.removeAgent(agent.id, "AGENT_DELETED");
        res.writeHead(204).end();
        return;
      }
      if ((action === "disable" || action === "enable") && method === "POST") {
        const changed = this.store.setAgentDisabled(agent.id, action === "disable") ?? agent;
        sendJson(res, 200, agentView(this.store, changed));
        return;
      }
    }
    if (extra === undefined && action === undefined && collection === "enrollment-tokens") {
      if (id === undefined && method === "POST") return this.createToken(req, res);
      if (id === undefined && method === "GET") {
        sendJson(res, 200, {
          enrollment_tokens: [...this.store.enrollmentTokens.values()].map((t) => tokenView(this.store, t)),
        });
        return;
      }
      const token = id === undefined ? undefined : this.store.enrollmentTokens.get(id);
      if (!token)
        throw new HttpError(
          404,
          "NOT_FOUND",
          `no enrollment token ${id ?? ""}; GET /api/admin/v1/enrollment-tokens lists them`,
        );
      if (method === "GET") {
        sendJson(res, 200, tokenView(this.store, token));
        return;
      }
      if (method === "DELETE") {
        this.store.removeEnrollmentToken(token.id);
        res.writeHead(204).end();
        return;
      }
    }
    throw new HttpError(404, "NOT_FOUND", `no admin route ${method} /${path.join("/")}`);
  }

  private async createToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, createTokenSchema, 64 * 1024);
    const secret = `ocae_${randomBytes(32).toString("base64url")}`;
    const nowMs = this.store.nowMs();
    const token: EnrollmentTokenRecord = {
      id: newId("enroll"),
      name: body.name ?? null,
      token_sha256: createHash("sha256").update(secret, "utf8").digest("hex"),
      created_at: this.store.iso(nowMs),
      expires_at: this.store.iso(nowMs + (body.expires_in_seconds ?? DEFAULT_TOKEN_TTL_SECONDS) * 1000),
      used_by_agent_id: null,
      used_at: null,
    };
    this.store.addEnrollmentToken(token);
    // The one time the token is shown: only its hash is kept.
    sendJson(res, 201, { ...tokenView(this.store, token), token: secret });
  }
}
