/**
 * The admin API (Authorization: Bearer <admin token>): integrations and runs, and (admin-agents.ts)
 * agents and enrollment tokens. No response ever contains a stored password.
 */
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { cloudAuthJson } from "../core/cloud-auth.js";
import {
  CREDENTIAL_HELPER_NAME,
  ENTRY_FIELD_MAX_LENGTH,
  cloudAuthProblems,
  toCloudAuth,
} from "../core/export-payload.js";
import { PHASES } from "../protocol/agent-api.js";
import { AdminAgents } from "./admin-agents.js";
import { PendingEnrollments } from "./pending-enrollments.js";
import { HttpError, readJson, sendJson } from "./http-util.js";
import { changeFacts, fieldsNeedingPassword, type IntegrationChange } from "./integration-audit.js";
import { checkRegistryUrlForm, type RegistryProber } from "./registry-probe.js";
import { newId, publicIntegration, type ControlPlaneStore, type Integration, type RunRecord } from "./store.js";

const MAX_ADMIN_BODY = 96 * 1024 * 1024;

const integrationFields = {
  name: z.string().min(1).max(256),
  registry_url: z.string().min(1).max(ENTRY_FIELD_MAX_LENGTH.url),
  username: z
    .string()
    .min(1)
    .max(ENTRY_FIELD_MAX_LENGTH.username)
    .refine((u) => !u.includes(":"), { message: "must not contain ':'" }),
  password: z.string().min(1).max(ENTRY_FIELD_MAX_LENGTH.password),
  /** In place of username and password: `docker-credential-<name>` on the agent serves the registry. */
  credential_helper: z.string().regex(CREDENTIAL_HELPER_NAME, "expected a helper name like ecr-login"),
  /** In place of username and password: the agent mints the credential from its cloud identity (docs/protocol.md). */
  cloud_auth: z.record(z.string(), z.unknown()),
  export_credentials: z.boolean(),
};

/** How an integration authenticates: exactly one of these per integration. */
const AUTH_CHOICE = "give username and password, credential_helper, or cloud_auth (exactly one)";

/**
 * A `cloud_auth` body field checked by the agent's own rule (export-payload.ts) and kept in its
 * wire form with only the known fields; problems name fields, never values.
 */
function checkedCloudAuth(raw: Record<string, unknown>): Record<string, string> {
  const problems = cloudAuthProblems(raw);
  if (problems.length > 0)
    throw new HttpError(422, "BODY_INVALID", `the request body is invalid: ${problems.join("; ")}`, {
      fields: ["cloud_auth"],
    });
  return cloudAuthJson(toCloudAuth(raw));
}

const createIntegrationSchema = z
  .strictObject({
    ...integrationFields,
    username: integrationFields.username.optional(),
    password: integrationFields.password.optional(),
    credential_helper: integrationFields.credential_helper.optional(),
    cloud_auth: integrationFields.cloud_auth.optional(),
    export_credentials: integrationFields.export_credentials.default(false),
  })
  .refine(
    (b) => {
      const withPassword = b.username !== undefined || b.password !== undefined;
      const choices = [withPassword, b.credential_helper !== undefined, b.cloud_auth !== undefined].filter(Boolean);
      return choices.length === 1 && (!withPassword || (b.username !== undefined && b.password !== undefined));
    },
    { message: AUTH_CHOICE },
  );

const patchIntegrationSchema = z.strictObject(integrationFields).partial();

const createRunSchema = z
  .strictObject({
    /** Required for runs an agent executes; an external run's runner has its configuration. */
    configuration_tar_gz_base64: z.string().min(1).optional(),
    phases: z.array(z.enum(PHASES)).min(1).max(3).default(["init", "plan", "apply"]),
    executor: z.enum(["agent", "external"]).default("agent"),
  })
  .refine((b) => b.executor === "external" || b.configuration_tar_gz_base64 !== undefined, {
    message: "configuration_tar_gz_base64 is required for a run an agent executes (executor agent)",
    path: ["configuration_tar_gz_base64"],
  });

const auditQuerySchema = z.strictObject({
  after: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  integration_id: z.string().min(1).optional(),
});

function remoteAddress(req: IncomingMessage): string | null {
  return req.socket.remoteAddress ?? null;
}

/** The stored form of a registry URL: the normalized host and, for a repository-scoped URL, its path. */
function storedUrl(url: URL): string {
  const path = url.pathname.replace(/^\/+|\/+$/g, "");
  return path === "" ? url.origin : `${url.origin}/${path}`;
}

function runView(run: RunRecord): Record<string, unknown> {
  return {
    id: run.id,
    status: run.status,
    phases: run.phases,
    executor: run.executor,
    queued_at: run.queued_at,
    agent_id: run.lease?.agent_id ?? null,
    error: run.error ?? null,
    events: run.events,
    logs: run.logs,
  };
}

export class AdminApi {
  private readonly agents: AdminAgents;

  constructor(
    private readonly store: ControlPlaneStore,
    private readonly probe: RegistryProber,
    pending: PendingEnrollments = new PendingEnrollments(),
  ) {
    this.agents = new AdminAgents(store, pending);
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string[]): Promise<void> {
    const method = req.method ?? "GET";
    const [collection, id, action] = path;
    if (collection === "agents" || collection === "enrollment-tokens") return this.agents.handle(req, res, path);
    if (collection === "integrations") {
      if (id === undefined && method === "GET") {
        sendJson(res, 200, { integrations: [...this.store.integrations.values()].map(publicIntegration) });
        return;
      }
      if (id === undefined && method === "POST") return this.createIntegration(req, res);
      const integration = id === undefined ? undefined : this.store.integrations.get(id);
      if (!integration) throw new HttpError(404, "NOT_FOUND", `no integration ${id ?? ""}`);
      if (action === undefined && method === "GET") {
        sendJson(res, 200, publicIntegration(integration));
        return;
      }
      if (action === undefined && method === "PATCH") return this.patchIntegration(req, res, integration);
      if (action === undefined && method === "DELETE") {
        this.store.deleteIntegration(integration, {
          remoteAddress: remoteAddress(req),
          facts: [{ type: "integration_deleted", from: integration.registry_url }],
        });
        res.writeHead(204).end();
        return;
      }
    }
    if (collection === "audit" && id === undefined && method === "GET") {
      this.listAudit(req, res);
      return;
    }
    if (collection === "runs") {
      if (id === undefined && method === "POST") return this.createRun(req, res);
      if (id === undefined && method === "GET") {
        sendJson(res, 200, {
          runs: [...this.store.runs.values()].map((r) => ({ id: r.id, status: r.status, queued_at: r.queued_at })),
        });
        return;
      }
      const run = id === undefined ? undefined : this.store.runs.get(id);
      if (!run) throw new HttpError(404, "NOT_FOUND", `no run ${id ?? ""}`);
      if (action === undefined && method === "GET") {
        sendJson(res, 200, runView(run));
        return;
      }
      if (action === "cancel" && method === "POST") {
        this.store.cancelRun(run);
        sendJson(res, 202, runView(run));
        return;
      }
    }
    throw new HttpError(404, "NOT_FOUND", `no admin route ${method} /${path.join("/")}`);
  }

  private async validateUrl(raw: string): Promise<{ url: string; warnings: string[] }> {
    const url = checkRegistryUrlForm(raw);
    // A repository-scoped URL is probed at its host's /v2/.
    const { warnings } = await this.probe(new URL(url.origin));
    return { url: storedUrl(url), warnings };
  }

  /** `GET /audit?after=SEQ&limit=N&integration_id=ID`: entries after SEQ, oldest first. */
  private listAudit(req: IncomingMessage, res: ServerResponse): void {
    const query = auditQuerySchema.safeParse(Object.fromEntries(new URL(req.url ?? "/", "http://x").searchParams));
    if (!query.success)
      throw new HttpError(
        422,
        "QUERY_INVALID",
        "the audit query takes after=<seq> (a number), limit=<1..1000> and integration_id=<id>",
      );
    const { after, limit, integration_id: integrationId } = query.data;
    const entries = this.store.audit
      .filter((e) => e.seq > after && (integrationId === undefined || e.integration_id === integrationId))
      .slice(0, limit);
    sendJson(res, 200, { entries, next_after: entries.at(-1)?.seq ?? after });
  }

  /** Credential helpers serve a whole host (credHelpers is keyed by host): the agent leaves a scoped one out. */
  private static checkHelperUrl(url: string, helper: string | null | undefined): void {
    if (helper === null || helper === undefined || new URL(url).pathname === "/") return;
    throw new HttpError(
      422,
      "REGISTRY_URL_NOT_BARE",
      `a credential helper serves a whole registry host (Docker's credHelpers is keyed by host); use the bare endpoint ${new URL(url).origin} for docker-credential-${helper}`,
      { field: "registry_url" },
    );
  }

  private async createIntegration(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, createIntegrationSchema, 1024 * 1024);
    AdminApi.checkHelperUrl(checkRegistryUrlForm(body.registry_url).href, body.credential_helper);
    const cloudAuth = body.cloud_auth === undefined ? null : checkedCloudAuth(body.cloud_auth);
    const { url, warnings } = await this.validateUrl(body.registry_url);
    const now = this.store.iso();
    const integration: Integration = {
      id: newId("int"),
      name: body.name,
      registry_url: url,
      username: body.username ?? "",
      password: body.password ?? "",
      credential_helper: body.credential_helper ?? null,
      cloud_auth: cloudAuth,
      export_credentials: body.export_credentials,
      created_at: now,
      updated_at: now,
    };
    this.store.saveIntegration(integration, {
      remoteAddress: remoteAddress(req),
      facts: [{ type: "integration_created", to: integration.registry_url }],
    });
    sendJson(res, 201, { ...publicIntegration(integration), warnings });
  }

  private async patchIntegration(req: IncomingMessage, res: ServerResponse, integration: Integration): Promise<void> {
    const body = await readJson(req, patchIntegrationSchema, 1024 * 1024);
    // The same rule as POST, on the integration as it would be after the change.
    const withPassword = body.username !== undefined || body.password !== undefined;
    if (
      [withPassword, body.credential_helper !== undefined, body.cloud_auth !== undefined].filter(Boolean).length > 1
    ) {
      throw new HttpError(422, "BODY_INVALID", `the request body is invalid: ${AUTH_CHOICE}`);
    }
    const cloudAuth = body.cloud_auth === undefined ? undefined : checkedCloudAuth(body.cloud_auth);
    const toPassword = withPassword;
    const helperAfter =
      body.credential_helper ?? (toPassword || cloudAuth !== undefined ? null : integration.credential_helper);
    const cloudAfter =
      cloudAuth ?? (toPassword || body.credential_helper !== undefined ? null : (integration.cloud_auth ?? null));
    for (const field of ["username", "password"] as const) {
      if (helperAfter === null && cloudAfter === null && (body[field] ?? integration[field]) === "") {
        throw new HttpError(
          422,
          "BODY_INVALID",
          "the request body is invalid: an integration without credential_helper or cloud_auth needs username and password; give both to replace them",
          { fields: [field] },
        );
      }
    }
    const urlForm = body.registry_url === undefined ? undefined : checkRegistryUrlForm(body.registry_url);
    AdminApi.checkHelperUrl(urlForm?.href ?? integration.registry_url, helperAfter);
    const { cloud_auth: _raw, ...fields } = body;
    const change: IntegrationChange = {
      ...fields,
      ...(urlForm === undefined ? {} : { registry_url: storedUrl(urlForm) }),
      ...((toPassword || cloudAuth !== undefined) && integration.credential_helper !== null
        ? { credential_helper: null }
        : {}),
      ...(cloudAuth !== undefined ? { cloud_auth: cloudAuth } : {}),
      ...((toPassword || body.credential_helper !== undefined) && (integration.cloud_auth ?? null) !== null
        ? { cloud_auth: null }
        : {}),
    };
    const needPassword = fieldsNeedingPassword(integration, change);
    if (needPassword.length > 0)
      throw new HttpError(
        422,
        "PASSWORD_REQUIRED",
        `changing ${needPassword.join(" or ")} needs the password again (it would otherwise be sent to the new registry or for the new user): send "password" in the same request`,
        { fields: needPassword },
      );
    let warnings: string[] = [];
    if (body.registry_url !== undefined) {
      const checked = JSON.stringify(integration);
      warnings = (await this.validateUrl(body.registry_url)).warnings;
      // The probe awaited the new host: the rules above hold only for the integration as it was.
      if (JSON.stringify(integration) !== checked || this.store.integrations.get(integration.id) !== integration)
        throw new HttpError(
          409,
          "INTEGRATION_CHANGED",
          "the integration changed while this request checked the new registry_url; read it again (GET /integrations/{id}) and send the change again",
        );
    }
    const facts = changeFacts(integration, change);
    if (change.registry_url !== undefined) integration.registry_url = change.registry_url;
    if (body.name !== undefined) integration.name = body.name;
    if (body.username !== undefined) integration.username = body.username;
    if (body.password !== undefined) integration.password = body.password;
    integration.credential_helper = helperAfter;
    integration.cloud_auth = cloudAfter;
    if (helperAfter !== null || cloudAfter !== null) {
      integration.username = "";
      integration.password = "";
    }
    if (body.export_credentials !== undefined) integration.export_credentials = body.export_credentials;
    integration.updated_at = this.store.iso();
    this.store.saveIntegration(integration, { remoteAddress: remoteAddress(req), facts });
    sendJson(res, 200, { ...publicIntegration(integration), warnings });
  }

  private async createRun(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req, createRunSchema, MAX_ADMIN_BODY);
    const configuration =
      body.configuration_tar_gz_base64 === undefined
        ? Buffer.alloc(0)
        : checkedConfiguration(body.configuration_tar_gz_base64);
    if (body.executor === "agent") {
      const run = this.store.createRun(configuration, body.phases);
      sendJson(res, 201, { id: run.id, status: run.status, executor: run.executor });
      return;
    }
    // Shown once, here; the control plane keeps its SHA-256 only (like an agent's credential).
    const runToken = `ocrt_${randomBytes(32).toString("base64url")}`;
    const run = this.store.createRun(configuration, body.phases, {
      runTokenSha256: createHash("sha256").update(runToken, "utf8").digest("hex"),
    });
    sendJson(res, 201, { id: run.id, status: run.status, executor: run.executor, run_token: runToken });
  }
}

/** The configuration archive of a new run, decoded and checked to be gzip. */
function checkedConfiguration(base64: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) {
    throw new HttpError(422, "BODY_INVALID", "configuration_tar_gz_base64 is not base64", {
      field: "configuration_tar_gz_base64",
    });
  }
  const configuration = Buffer.from(base64, "base64");
  if (configuration.byteLength < 2 || configuration[0] !== 0x1f || configuration[1] !== 0x8b) {
    throw new HttpError(
      422,
      "BODY_INVALID",
      "configuration_tar_gz_base64 is not a gzip archive (tar.gz of the configuration directory)",
      {
        field: "configuration_tar_gz_base64",
      },
    );
  }
  return configuration;
}
