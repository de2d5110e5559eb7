/**
 * Reading a control plane's answers, one way for the agent API (the daemon) and the admin API
 * (the operators' commands): the code and message of a refusal, cleaned for a log line or a
 * terminal, and an answer checked against its schema.
 */
import type { z } from "zod";
import { AgentError } from "../core/errors.js";

/** Text from the control plane, for a log line or a terminal: no control characters, bounded. */
export function displayText(text: string, max = 300): string {
  let out = "";
  for (const ch of text.slice(0, max)) {
    const c = ch.charCodeAt(0);
    out += c < 0x20 || (c >= 0x7f && c <= 0x9f) ? "?" : ch;
  }
  return out;
}

function refusal(bytes: Buffer): { code?: unknown; message?: unknown } | undefined {
  try {
    return (JSON.parse(bytes.toString("utf8")) as { error?: { code?: unknown; message?: unknown } }).error;
  } catch {
    return undefined;
  }
}

/** The `error.code` of a refusal, as sent, if the body has one. */
export function apiErrorCode(bytes: Buffer): string | undefined {
  const code = refusal(bytes)?.code;
  return typeof code === "string" ? code : undefined;
}

/** `": CODE message"` of a refusal, cleaned and bounded, or `""` when the body has neither. */
export function apiErrorSummary(bytes: Buffer): string {
  const error = refusal(bytes);
  const code = typeof error?.code === "string" ? displayText(error.code, 64) : undefined;
  const message = typeof error?.message === "string" ? displayText(error.message) : undefined;
  return code || message ? `: ${[code, message].filter(Boolean).join(" ")}` : "";
}

/** The answer checked against `schema`; CONTROL_PLANE_BAD_RESPONSE naming `what` and the API otherwise. */
export function parseAnswer<T>(
  bytes: Buffer,
  schema: z.ZodType<T>,
  what: string,
  api: "the agent API v1" | "the admin API",
): T {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new AgentError(
      "CONTROL_PLANE_BAD_RESPONSE",
      `the control plane's ${what} is not JSON; is --control-plane-url the control plane's base URL?`,
      { kind: "bad_response" },
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`);
    throw new AgentError(
      "CONTROL_PLANE_BAD_RESPONSE",
      `the control plane's ${what} does not follow ${api} (${fields.join("; ")})`,
      { kind: "bad_response", fields },
    );
  }
  return parsed.data;
}
