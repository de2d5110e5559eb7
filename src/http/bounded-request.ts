/**
 * One HTTP exchange with bounds on the whole of it, over undici. undici's headersTimeout and
 * bodyTimeout bound the gaps between bytes, not the exchange: an answer that drips a byte every
 * few seconds, or declares a gigabyte and sends it slowly, would hold the caller forever. Here a
 * deadline covers headers and body together, the caller's own AbortSignal (a run's cancel, a
 * shutdown) is combined with it, and the body is read up to a byte limit: past the limit the
 * stream is destroyed, and never more than the limit is buffered.
 *
 * Failures are BoundedRequestErrors with a `kind` the caller turns into its own message; the
 * caller's abort is not one of them: the helper rejects with the signal's reason, as undici does.
 */
import { request, type Dispatcher } from "undici";
import { errnoCode } from "../core/errors.js";

export interface BoundedRequestOptions {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  readonly headers?: Readonly<Record<string, string>>;
  /** The request body, sent as is. */
  readonly body?: string;
  readonly dispatcher?: Dispatcher;
  /** The deadline of the whole exchange, headers and body, in milliseconds. */
  readonly timeoutMs: number;
  /** The caller's own abort; when it fires, the helper rejects with its reason. */
  readonly signal?: AbortSignal;
  /** The most body bytes accepted. */
  readonly maxBodyBytes: number;
  /**
   * "read" (the default) returns the body, and a body over the limit is an error (`too_large`);
   * "dump" reads and discards it (so the connection can be reused), and past the limit destroys
   * the stream and returns the status and headers without an error.
   */
  readonly consume?: "read" | "dump";
}

export interface BoundedResponse {
  readonly status: number;
  readonly headers: Dispatcher.ResponseData["headers"];
  /** The body (empty when dumped). */
  readonly bytes: Buffer;
}

/**
 * - `timeout`: the deadline passed, before or during the body
 * - `network`: no answer (connection refused or reset, TLS, DNS) before the headers
 * - `cut_off`: the body broke off after the headers
 * - `too_large`: the body is over the limit (declared, then `declaredBytes` is set, or counted)
 */
export type BoundedRequestFailure = "timeout" | "network" | "cut_off" | "too_large";

export class BoundedRequestError extends Error {
  override readonly name = "BoundedRequestError";

  constructor(
    readonly kind: BoundedRequestFailure,
    message: string,
    readonly details: {
      /** The underlying error's code (ECONNREFUSED, UND_ERR_SOCKET), when it has one. */
      readonly errno?: string;
      /** The code, else the underlying error's name: a short label for messages. */
      readonly label: string;
      /** The answer's Content-Length, when it alone was over the limit. */
      readonly declaredBytes?: number;
      readonly timeoutMs: number;
      readonly maxBodyBytes: number;
    },
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A header's first value. */
export function headerValue(headers: BoundedResponse["headers"], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The deadline in seconds for messages: 10 s, 0.5 s. */
export function secondsText(ms: number): string {
  return `${ms >= 10_000 ? Math.round(ms / 1000) : Math.round(ms / 100) / 10} s`;
}

export async function boundedRequest(url: string | URL, options: BoundedRequestOptions): Promise<BoundedResponse> {
  const { method, timeoutMs, maxBodyBytes } = options;
  const what = `${method} ${typeof url === "string" ? url.replace(/\?.*$/s, "") : `${url.origin}${url.pathname}`}`;
  const deadline = AbortSignal.timeout(timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  const bounds = { timeoutMs, maxBodyBytes };
  const failure = (kind: BoundedRequestFailure, error: unknown, message: string): BoundedRequestError => {
    const errno = errnoCode(error);
    const label = errno ?? (error instanceof Error ? error.name : "error");
    return new BoundedRequestError(
      kind,
      `${message} (${label})`,
      { ...(errno === undefined ? {} : { errno }), label, ...bounds },
      { cause: error },
    );
  };
  const timedOut = (error: unknown): BoundedRequestError =>
    new BoundedRequestError(
      "timeout",
      `${what} did not finish within ${secondsText(timeoutMs)}`,
      { label: "timeout", ...bounds },
      { cause: error },
    );

  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, {
      method,
      headers: { ...options.headers },
      ...(options.body === undefined ? {} : { body: options.body }),
      ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
      // Still set: they end a connection that goes quiet, and the deadline ends the rest.
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal,
    });
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason;
    if (deadline.aborted) throw timedOut(error);
    throw failure("network", error, `${what} got no answer`);
  }

  const dump = options.consume === "dump";
  const answer = (bytes: Buffer): BoundedResponse => ({ status: res.statusCode, headers: res.headers, bytes });
  const declared = Number(headerValue(res.headers, "content-length") ?? "-1");
  if (declared > maxBodyBytes) {
    res.body.destroy();
    if (dump) return answer(Buffer.alloc(0));
    throw new BoundedRequestError(
      "too_large",
      `the answer to ${what} is ${declared} bytes, over the limit of ${maxBodyBytes}`,
      {
        label: "too_large",
        declaredBytes: declared,
        ...bounds,
      },
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body) {
      size += (chunk as Buffer).byteLength;
      if (size > maxBodyBytes) {
        res.body.destroy();
        if (dump) return answer(Buffer.alloc(0));
        throw new BoundedRequestError("too_large", `the answer to ${what} exceeds ${maxBodyBytes} bytes`, {
          label: "too_large",
          ...bounds,
        });
      }
      if (!dump) chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof BoundedRequestError) throw error;
    if (options.signal?.aborted) throw options.signal.reason;
    if (deadline.aborted) throw timedOut(error);
    throw failure("cut_off", error, `the answer to ${what} was cut off`);
  }
  return answer(Buffer.concat(chunks));
}
