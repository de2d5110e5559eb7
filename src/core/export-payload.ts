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

export interface ExportedCredential {
  readonly id: string;
  readonly name: string | undefined;
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** Milliseconds since the epoch; undefined when absent or unparseable (counts as oldest). */
  readonly updatedAtMs: number | undefined;
}

export interface InvalidEntry {
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

const entrySchema = z.object({
  id: z.string().min(1).max(256),
  name: z.string().max(1024).optional(),
  url: z.string().min(1).max(2048),
  // The Docker config `auth` field is base64("username:password") and readers split it at the
  // first colon, so a colon in the username would silently shift part of it into the password.
  username: z
    .string()
    .min(1)
    .max(4096)
    .refine((u) => !u.includes(":"), { message: "must not contain ':' (Docker's auth field splits at the first colon)" }),
  password: z.string().min(1).max(65536),
  updated_at: z.string().max(64).optional(),
});

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
    const parsed = entrySchema.safeParse(raw);
    if (!parsed.success) {
      const obj = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
      invalid.push({
        index,
        id: safeString(obj["id"], 256),
        name: safeString(obj["name"], 1024),
        problems: describeIssues(parsed.error),
      });
      return;
    }
    const e = parsed.data;
    const updated = e.updated_at === undefined ? Number.NaN : Date.parse(e.updated_at);
    entries.push({
      id: e.id,
      name: e.name,
      url: e.url,
      username: e.username,
      password: e.password,
      updatedAtMs: Number.isFinite(updated) ? updated : undefined,
    });
  });
  return { entries, invalid };
}
