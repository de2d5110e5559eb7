/**
 * The plaintext a control plane seals into a bundle: the run's exported registry credentials.
 * Version 1 (docs/protocol.md). Pure: parses bytes already in memory.
 *
 * The top level must be valid or the whole export is refused. A malformed entry is not fatal:
 * it is reported as ignored (with the field that was wrong, never a value) so that the run's
 * other registries still work and the operator sees exactly which integration to fix.
 */
import { z } from "zod";
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
  /** Empty when the entry names a credential helper instead. */
  readonly username: string;
  readonly password: string;
  /** `docker-credential-<name>` serves this registry instead of a password (ECR, ACR, GAR). */
  readonly credentialHelper: string | undefined;
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
      updatedAtMs: Number.isFinite(updated) ? updated : undefined,
    });
  });
  return { entries, invalid };
}
