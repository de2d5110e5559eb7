/**
 * The operator's side of the reference control plane's admin API (`agents`, `enrollment-tokens`):
 * the admin token from --admin-token-file, the control plane's TLS trust as the agent has it
 * (system CAs, NODE_EXTRA_CA_CERTS, --ca-file), one bounded exchange per call through undici,
 * every answer validated. Each failure is an AgentError naming the fix.
 */
import type { Dispatcher } from "undici";
import type { z } from "zod";
import { controlPlaneDispatcher } from "../app/tls-dispatcher.js";
import { AgentError, type ErrorCode } from "../core/errors.js";
import { readTokenFile } from "../fs/token-file.js";
import { realFs } from "../fs/secure-fs.js";
import { boundedRequest, BoundedRequestError, type BoundedResponse } from "../http/bounded-request.js";
import { apiErrorSummary, parseAnswer } from "../http/control-plane-answer.js";
import { ADMIN_API_PREFIX } from "../protocol/agent-api.js";
import { controlPlaneUrl } from "./options.js";

export interface AdminConnectionOptions {
  readonly controlPlaneUrl: string;
  readonly adminTokenFile: string;
  readonly caFile?: string;
  readonly allowInsecureControlPlane?: boolean;
}

const TIMEOUT_MS = 30_000;
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

interface CallOptions {
  readonly body?: unknown;
  /** What a 404 means when the path names one thing (an agent, a token). */
  readonly notFound?: { readonly code: ErrorCode; readonly message: string };
}

export class AdminClient {
  private constructor(
    private readonly base: string,
    private readonly token: string,
    private readonly dispatcher: Dispatcher,
  ) {}

  static async open(opts: AdminConnectionOptions): Promise<AdminClient> {
    const base = controlPlaneUrl("--control-plane-url", opts.controlPlaneUrl, opts.allowInsecureControlPlane === true);
    const token = await readTokenFile(realFs, opts.adminTokenFile, {
      flag: "--admin-token-file",
      what: "the control plane's admin token",
    });
    return new AdminClient(base, token, await controlPlaneDispatcher(process.env, opts.caFile));
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  /** One admin call whose JSON answer `schema` validates. */
  async json<T>(method: "GET" | "POST", path: string, schema: z.ZodType<T>, options: CallOptions = {}): Promise<T> {
    return parseAnswer(
      await this.exchange(method, path, options),
      schema,
      `answer to ${method} ${ADMIN_API_PREFIX}${path}`,
      "the admin API",
    );
  }

  /** One admin call answered without a body (204). */
  async send(method: "DELETE", path: string, options: CallOptions = {}): Promise<void> {
    await this.exchange(method, path, options);
  }

  /** The answer's body, when the status is 2xx; an AgentError naming the fix otherwise. */
  private async exchange(method: "GET" | "POST" | "DELETE", path: string, options: CallOptions): Promise<Buffer> {
    const what = `${method} ${ADMIN_API_PREFIX}${path}`;
    let res: BoundedResponse;
    try {
      res = await boundedRequest(`${this.base}${ADMIN_API_PREFIX}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(options.body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
        timeoutMs: TIMEOUT_MS,
        maxBodyBytes: MAX_ANSWER_BYTES,
      });
    } catch (error) {
      if (!(error instanceof BoundedRequestError)) throw error;
      if (error.kind === "too_large")
        throw new AgentError(
          "CONTROL_PLANE_BAD_RESPONSE",
          `the control plane's answer to ${what} exceeds ${MAX_ANSWER_BYTES} bytes`,
          { kind: "too_large" },
        );
      throw new AgentError(
        "CONTROL_PLANE_UNAVAILABLE",
        `cannot reach the control plane at ${this.base} (${error.details.label}) for ${what}; check --control-plane-url, the network, and for https --ca-file`,
        { kind: error.kind === "timeout" ? "timeout" : "network", errno: error.details.errno ?? null },
      );
    }
    const { status, bytes } = res;
    if (status >= 200 && status < 300) return bytes;
    const said = apiErrorSummary(bytes);
    if (status === 401)
      throw new AgentError(
        "ADMIN_TOKEN_REFUSED",
        `the control plane refused the admin token for ${what} (HTTP 401${said}); put the control plane's admin token (its --admin-token-file) in --admin-token-file`,
        { status },
      );
    if (status === 404 && options.notFound)
      throw new AgentError(options.notFound.code, `${options.notFound.message} (HTTP 404${said})`, { status });
    if (status === 429 || status >= 500)
      throw new AgentError(
        "CONTROL_PLANE_UNAVAILABLE",
        `the control plane answered ${what} with HTTP ${status}${said}`,
        {
          kind: status === 429 ? "throttled" : "server_error",
          status,
        },
      );
    throw new AgentError(
      "CONTROL_PLANE_REJECTED",
      `the control plane rejected ${what} with HTTP ${status}${said}; is --control-plane-url the reference control plane, of this version?`,
      { kind: "rejected", status },
    );
  }
}

/** Opens a client for one command and closes it afterwards, whatever happens. */
export async function withAdminClient<T>(
  opts: AdminConnectionOptions,
  use: (client: AdminClient) => Promise<T>,
): Promise<T> {
  const client = await AdminClient.open(opts);
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}
