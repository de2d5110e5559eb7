/**
 * The plaintext a control plane seals into a bundle: the run's exported registry credentials.
 * Version 1 (docs/protocol.md). Pure: parses bytes already in memory.
 *
 * The top level must be valid or the whole export is refused. A malformed entry is not fatal:
 * it is reported as ignored (with the field that was wrong, never a value) so that the run's
 * other registries still work and the operator sees exactly which integration to fix.
 */
import { z } from "zod";
import { CLOUD_PROVIDERS, type CloudAuth } from "./cloud-auth.js";
import { AgentError } from "./errors.js";

export const EXPORT_VERSION = 1;

/** Longest value of an entry's fields; the reference control plane refuses longer ones when an integration is saved. */
export const ENTRY_FIELD_MAX_LENGTH = { url: 2048, username: 4096, password: 65536 } as const;

/** The part after `docker-credential-`: it becomes part of an executable name. */
export const CREDENTIAL_HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface ExportedCredential {
  readonly id: string;
  readonly name: string | undefined;
  readonly url: string;
  /** Empty when the entry names a credential helper or cloud_auth instead (until the credential is minted). */
  readonly username: string;
  readonly password: string;
  /** `docker-credential-<name>` serves this registry instead of a password (ECR, ACR, GAR). */
  readonly credentialHelper: string | undefined;
  /** The agent mints the credential from its own cloud identity at run time (ECR, ACR, GAR). */
  readonly cloudAuth?: CloudAuth | undefined;
  /** Milliseconds since the epoch; undefined when absent or unparseable (counts as oldest). */
  readonly updatedAtMs: number | undefined;
}

interface InvalidEntry {
  readonly index: number;
  readonly id: string | undefined;
  readonly name: string | undefined;
  /** Which fields were wrong, e.g. "password: required string". Never a value. */
  readonly problems: readonly string[];
}

export interface ParsedExport {
  readonly entries: readonly ExportedCredential[];
  readonly invalid: readonly InvalidEntry[];
}

/** An AWS region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-isoe-west-1`). */
const AWS_REGION = /^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$/;
/** A 12-digit AWS account id (ECR's registryIds). */
const AWS_ACCOUNT = /^[0-9]{12}$/;
/** An Entra ID tenant (a GUID or a domain name) or an application (client) id. */
const AZURE_TENANT = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/;
const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Problems of a `cloud_auth` object; field paths only, never a value. Unknown fields are ignored, as in entries. */
export function cloudAuthProblems(raw: unknown): string[] {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return ["cloud_auth: expected an object"];
  const c = raw as Record<string, unknown>;
  const provider = c["provider"];
  if (typeof provider !== "string" || !(CLOUD_PROVIDERS as readonly string[]).includes(provider))
    return [`cloud_auth.provider: expected one of ${CLOUD_PROVIDERS.join(", ")}`];
  const problems: string[] = [];
  const optional = (field: string, pattern: RegExp, expected: string): void => {
    const v = c[field];
    if (v !== undefined && (typeof v !== "string" || !pattern.test(v)))
      problems.push(`cloud_auth.${field}: expected ${expected}`);
  };
  if (provider === "aws") {
    const region = c["region"];
    if (region === undefined)
      problems.push("cloud_auth.region: required for aws (the ECR registry's region, like us-east-1)");
    else optional("region", AWS_REGION, "an AWS region like us-east-1");
    optional("account", AWS_ACCOUNT, "a 12-digit AWS account id");
  } else if (provider === "azure") {
    optional("tenant_id", AZURE_TENANT, "an Entra ID tenant id (a GUID or a domain)");
    optional("client_id", GUID, "an application (client) id, a GUID");
  }
  return problems;
}

/** A `cloud_auth` object that passed cloudAuthProblems, as the agent uses it. */
export function toCloudAuth(raw: Record<string, unknown>): CloudAuth {
  const text = (field: string): string | undefined => {
    const v = raw[field];
    return typeof v === "string" ? v : undefined;
  };
  switch (raw["provider"]) {
    case "aws":
      return { provider: "aws", region: text("region") ?? "", account: text("account") };
    case "azure":
      return { provider: "azure", tenantId: text("tenant_id"), clientId: text("client_id") };
    default:
      return { provider: "gcp" };
  }
}

/**
 * Checks one entry by hand rather than through a schema library: an export may hold 10,000
 * entries, and this runs for each (docs/performance.md). Problems name fields, never values.
 */
function entryProblems(raw: unknown): string[] {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return ["(entry): expected an object"];
  const e = raw as Record<string, unknown>;
  const problems: string[] = [];
  const str = (field: string, min: number, max: number, required: boolean): void => {
    const v = e[field];
    if (v === undefined) {
      if (required) problems.push(`${field}: required string`);
    } else if (typeof v !== "string") problems.push(`${field}: expected a string`);
    else if (v.length < min) problems.push(`${field}: must not be empty`);
    else if (v.length > max) problems.push(`${field}: longer than ${max} characters`);
  };
  str("id", 1, 256, true);
  str("name", 0, 1024, false);
  str("url", 1, ENTRY_FIELD_MAX_LENGTH.url, true);
  str("updated_at", 0, 64, false);
  if (e["cloud_auth"] !== undefined) {
    problems.push(...cloudAuthProblems(e["cloud_auth"]));
    if (e["credential_helper"] !== undefined)
      problems.push("cloud_auth: an entry has either cloud_auth or a credential helper, not both");
    if (e["username"] !== undefined || e["password"] !== undefined)
      problems.push("cloud_auth: an entry has either cloud_auth or a username and password, not both");
    return problems;
  }
  if (e["credential_helper"] !== undefined) {
    const helper = e["credential_helper"];
    if (typeof helper !== "string" || !CREDENTIAL_HELPER_NAME.test(helper)) {
      problems.push("credential_helper: expected a helper name like ecr-login (letters, digits, '.', '_', '-')");
    }
    if (e["username"] !== undefined || e["password"] !== undefined)
      problems.push("credential_helper: an entry has either a credential helper or a username and password, not both");
    return problems;
  }
  str("username", 1, ENTRY_FIELD_MAX_LENGTH.username, true);
  str("password", 1, ENTRY_FIELD_MAX_LENGTH.password, true);
  // The Docker config `auth` field is base64("username:password") and readers split it at the
  // first colon, so a colon in the username would silently shift part of it into the password.
  if (typeof e["username"] === "string" && e["username"].includes(":"))
    problems.push("username: must not contain ':' (Docker's auth field splits at the first colon)");
  return problems;
}

const topSchema = z.object({
  version: z.number(),
  registries: z.array(z.unknown()),
});

function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.join(".") : "(entry)";
    // zod messages describe the expectation ("expected string, received undefined"), never the value.
    return `${path}: ${issue.message}`;
  });
}

function safeString(value: unknown, max: number): string | undefined {
  return typeof value === "string" && value.length <= max ? value : undefined;
}

export function parseExport(text: string): ParsedExport {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AgentError(
      "PAYLOAD_INVALID",
      "the opened bundle is not JSON; the control plane must seal a credential export document (docs/protocol.md, 'Credential export')",
    );
  }
  const top = topSchema.safeParse(json);
  if (!top.success) {
    throw new AgentError(
      "PAYLOAD_INVALID",
      `the credential export is malformed (${describeIssues(top.error).join("; ")}); expected {"version": 1, "registries": [...]} (docs/protocol.md)`,
    );
  }
  if (top.data.version !== EXPORT_VERSION) {
    throw new AgentError(
      "PAYLOAD_VERSION_UNSUPPORTED",
      `the credential export has version ${top.data.version}, this agent reads version ${EXPORT_VERSION}; upgrade the agent or have the control plane export version ${EXPORT_VERSION}`,
      { version: top.data.version },
    );
  }
  const entries: ExportedCredential[] = [];
  const invalid: InvalidEntry[] = [];
  top.data.registries.forEach((raw, index) => {
    const problems = entryProblems(raw);
    if (problems.length > 0) {
      const obj = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
      invalid.push({ index, id: safeString(obj["id"], 256), name: safeString(obj["name"], 1024), problems });
      return;
    }
    const e = raw as {
      id: string;
      name?: string;
      url: string;
      username?: string;
      password?: string;
      credential_helper?: string;
      cloud_auth?: Record<string, unknown>;
      updated_at?: string;
    };
    const updated = e.updated_at === undefined ? Number.NaN : Date.parse(e.updated_at);
    entries.push({
      id: e.id,
      name: e.name,
      url: e.url,
      username: e.username ?? "",
      password: e.password ?? "",
      credentialHelper: e.credential_helper,
      cloudAuth: e.cloud_auth === undefined ? undefined : toCloudAuth(e.cloud_auth),
      updatedAtMs: Number.isFinite(updated) ? updated : undefined,
    });
  });
  return { entries, invalid };
}
