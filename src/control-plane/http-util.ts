/**
 * Small HTTP helpers for the reference control plane: bounded JSON bodies, JSON answers, bearer
 * tokens. A refusal of authentication (401, 403) closes the connection.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { z } from "zod";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
    /** Extra answer headers (Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function tooLarge(limitBytes: number): HttpError {
  return new HttpError(
    413,
    "BODY_TOO_LARGE",
    `the request body exceeds ${limitBytes} bytes, the most this route takes; send less per request (docs/protocol.md, Limits)`,
    { limit_bytes: limitBytes },
  );
}

async function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limitBytes) throw tooLarge(limitBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > limitBytes) throw tooLarge(limitBytes);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function readJson<T>(req: IncomingMessage, schema: z.ZodType<T>, limitBytes: number): Promise<T> {
  const body = await readBody(req, limitBytes);
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, "BODY_NOT_JSON", "the request body is not JSON");
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`);
    throw new HttpError(422, "BODY_INVALID", `the request body is invalid: ${fields.join("; ")}`, { fields });
  }
  return parsed.data;
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}

/**
 * Sends the refusal. A 401 or 403 ends the connection after the answer (a client that failed to
 * authenticate keeps no socket), and so does a 413 (the rest of the body is not read) or any
 * refusal given `close`.
 */
export function sendError(res: ServerResponse, error: HttpError, close = false): void {
  const closing = close || error.status === 401 || error.status === 403 || error.status === 413;
  sendJson(
    res,
    error.status,
    { error: { code: error.code, message: error.message, ...error.extra } },
    { ...error.headers, ...(closing ? { connection: "close" } : {}) },
  );
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

/** The request's bearer token, if it has one. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
  return match?.[1] || undefined;
}

/** Constant-time comparison of the request's bearer token with the expected one. */
export function bearerMatches(req: IncomingMessage, expected: string): boolean {
  const token = bearerToken(req);
  if (token === undefined) return false;
  return timingSafeEqual(digest(token), digest(expected));
}
