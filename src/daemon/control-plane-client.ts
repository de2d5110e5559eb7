/**
 * The agent's side of the agent API, over undici. Every answer is size-bounded, time-bounded
 * and validated against the protocol schemas; every failure becomes an AgentError whose code
 * tells the daemon what to do (docs/protocol.md, "Errors"):
 *   CONTROL_PLANE_UNAUTHORIZED  401/403: stop the agent with a clear message; when only the
 *                               per-agent credential was refused (`reenroll`), enroll again
 *   LEASE_LOST                  409 (or 404, a refused agent credential or a disabled agent, on a lease route):
 *                               abort the run and wipe
 *
 * The pool token goes only to ping and enrollment; every other call carries the per-agent
 * credential the enrollment returned, held here in memory only.
 *   CONTROL_PLANE_UNAVAILABLE   429/5xx/network/timeouts, and 403 AGENT_DISABLED off lease routes:
 *                               back off with full jitter, honour Retry-After; a 429 with
 *                               Retry-After is first retried here, a few times
 *   CONTROL_PLANE_TLS_FAILED    the control plane's certificate is not trusted, or it speaks no TLS
 *   CONTROL_PLANE_REJECTED      other 4xx: a bug on one side, or a limit (the API's code is in
 *                               `api_code`); do not retry the same request
 *   CONTROL_PLANE_BAD_RESPONSE  an answer that is not the agent API
 */
import { setTimeout as delay } from "node:timers/promises";
import { Agent, type Dispatcher } from "undici";
import { backoffDelayMs, parseRetryAfterMs } from "../core/backoff.js";
import { AgentError, isAgentError } from "../core/errors.js";
import { boundedRequest, BoundedRequestError, type BoundedResponse } from "../http/bounded-request.js";
import { apiErrorCode, apiErrorSummary, parseAnswer } from "../http/control-plane-answer.js";
import { tlsFailure } from "../http/tls-failure.js";
import {
  AGENT_API_PREFIX,
  heartbeatResponseSchema,
  leaseResponseSchema,
  sidecarLeaseResponseSchema,
  bundleResponseSchema,
  credentialResponseSchema,
  enrollResponseSchema,
  keyChallengeResponseSchema,
  type Challenge,
  type ChallengeAnswer,
  type CompleteRequest,
  type CredentialResponse,
  type EnrollResponse,
  type HeartbeatResponse,
  type Lease,
  type LogChunk,
  type RegisterRequest,
  type RunEvent,
  type SidecarLease,
  type UpdateKeysRequest,
} from "../protocol/agent-api.js";

export interface ControlPlaneClientOptions {
  readonly baseUrl: string;
  readonly token: string;
  readonly dispatcher?: Dispatcher;
  /** Largest JSON answer accepted (leases carry bundles). */
  readonly maxResponseBytes?: number;
  readonly maxConfigurationBytes?: number;
  readonly requestTimeoutMs?: number;
}

const DEFAULT_MAX_RESPONSE = 80 * 1024 * 1024;
/**
 * Every answer but a lease (which carries bundles) and a configuration archive is a few hundred
 * bytes. Bounding them tightly matters because heartbeats run for every active run at once: with
 * the lease bound, 50 runs could each buffer 80 MiB from one hostile answer.
 */
const SMALL_ANSWER_BYTES = 256 * 1024;

/**
 * A 429 with Retry-After (a rate limit: docs/protocol.md, Limits) is retried in place up to this
 * many times, after the wait the control plane asked for, as long as the waits of one call add up
 * to at most 30 s: a log line or a heartbeat is delayed, not lost, and a control plane that keeps
 * asking for waits cannot hold a run (and its credentials on disk) much longer than one request
 * timeout per call. Then the caller's own backoff sees the 429.
 */
const THROTTLED_RETRIES = 3;
const THROTTLED_WAIT = { baseMs: 1000, capMs: 30_000 };

interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  maxBytes?: number;
  leaseRoute?: boolean;
  /** Enrollment calls carry the pool token; every other call the per-agent credential. */
  pool?: boolean;
}

export class ControlPlaneClient {
  private readonly dispatcher: Dispatcher;
  private readonly base: string;
  /** The per-agent credential from the last enrollment; never logged, never written. */
  private credential: string | undefined;

  constructor(private readonly options: ControlPlaneClientOptions) {
    this.base = options.baseUrl.replace(/\/+$/, "");
    this.dispatcher = options.dispatcher ?? new Agent({ keepAliveTimeout: 30_000, connections: 256 });
  }

  async close(): Promise<void> {
    if (!this.options.dispatcher) await this.dispatcher.close();
  }

  private async call(
    method: "GET" | "POST" | "PUT",
    path: string,
    body: unknown,
    opts: CallOptions = {},
  ): Promise<{ status: number; bytes: Buffer }> {
    let waited = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.callOnce(method, path, body, opts);
      } catch (error) {
        const retryAfter =
          isAgentError(error, "CONTROL_PLANE_UNAVAILABLE") && error.details.kind === "throttled"
            ? error.details.retry_after_ms
            : undefined;
        if (retryAfter === undefined || attempt >= THROTTLED_RETRIES) throw error;
        const wait = backoffDelayMs(THROTTLED_WAIT, attempt, Math.random, retryAfter);
        if (retryAfter > THROTTLED_WAIT.capMs || waited + wait > THROTTLED_WAIT.capMs) throw error;
        waited += wait;
        try {
          await delay(wait, undefined, {
            ...(opts.signal ? { signal: opts.signal } : {}),
          });
        } catch {
          throw opts.signal?.reason ?? error;
        }
      }
    }
  }

  private async callOnce(
    method: "GET" | "POST" | "PUT",
    path: string,
    body: unknown,
    opts: CallOptions,
  ): Promise<{ status: number; bytes: Buffer }> {
    const timeout = opts.timeoutMs ?? this.options.requestTimeoutMs ?? 30_000;
    const url = `${this.base}${AGENT_API_PREFIX}${path}`;
    const limit = opts.maxBytes ?? this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
    // The deadline bounds the exchange as a whole (a body that drips a byte every few seconds
    // would otherwise hold the call forever), and at most `limit` bytes are read.
    let res: BoundedResponse;
    try {
      res = await boundedRequest(url, {
        method,
        dispatcher: this.dispatcher,
        headers: {
          authorization: `Bearer ${opts.pool === true ? this.options.token : this.agentCredential()}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        timeoutMs: timeout,
        ...(opts.signal ? { signal: opts.signal } : {}),
        maxBodyBytes: limit,
      });
    } catch (error) {
      // Anything else is the caller's abort, rethrown as is.
      if (!(error instanceof BoundedRequestError)) throw error;
      switch (error.kind) {
        case "timeout":
          throw new AgentError(
            "CONTROL_PLANE_UNAVAILABLE",
            `the control plane did not finish answering ${method} ${path} within ${Math.round(timeout / 1000)} s; retrying with backoff`,
            { kind: "timeout" },
          );
        case "too_large":
          throw error.details.declaredBytes !== undefined
            ? new AgentError(
                "CONTROL_PLANE_BAD_RESPONSE",
                `the control plane's answer to ${method} ${path} is ${error.details.declaredBytes} bytes, over the limit of ${limit}`,
                { kind: "too_large" },
              )
            : new AgentError(
                "CONTROL_PLANE_BAD_RESPONSE",
                `the control plane's answer to ${method} ${path} exceeds ${limit} bytes`,
                { kind: "too_large" },
              );
        case "network": {
          const tls = tlsFailure(error.details.errno);
          if (tls !== undefined)
            throw new AgentError(
              "CONTROL_PLANE_TLS_FAILED",
              `the TLS connection to the control plane at ${this.base} failed (${error.details.label}): ${tls}`,
              { errno: error.details.errno ?? null },
            );
          throw new AgentError(
            "CONTROL_PLANE_UNAVAILABLE",
            `cannot reach the control plane at ${this.base} (${error.details.label}); retrying with backoff`,
            {
              errno: error.details.errno ?? null,
              kind: "network",
            },
          );
        }
        case "cut_off":
          throw new AgentError(
            "CONTROL_PLANE_UNAVAILABLE",
            `the control plane's answer to ${method} ${path} was cut off (${error.details.label})`,
            { kind: "network" },
          );
      }
    }
    const { status, bytes } = res;
    if (status >= 200 && status < 300) return { status, bytes };
    const apiMessage = apiErrorSummary(bytes);
    const apiCode = apiErrorCode(bytes);
    if (status === 401 && opts.pool !== true && apiCode === "AGENT_CREDENTIAL_INVALID") {
      // The control plane no longer knows this agent (e.g. it restarted): its leases are gone
      // with it, and the agent enrolls again.
      if (opts.leaseRoute === true)
        throw new AgentError(
          "LEASE_LOST",
          `the control plane no longer accepts this agent's credential (HTTP ${status}${apiMessage}); the run is aborted and its credentials wiped`,
          { status },
        );
      throw new AgentError(
        "CONTROL_PLANE_UNAUTHORIZED",
        `the control plane no longer accepts this agent's credential (HTTP ${status}${apiMessage}); enrolling again with the pool token`,
        { status, reenroll: true },
      );
    }
    if (status === 403 && opts.pool !== true && apiCode === "AGENT_DISABLED") {
      // An operator disabled this agent: its leases were ended; it waits to be enabled again
      // (enrolling anew would undo the operator's decision).
      if (opts.leaseRoute === true)
        throw new AgentError(
          "LEASE_LOST",
          `an operator disabled this agent and its leases ended (HTTP ${status}${apiMessage}); the run is aborted and its credentials wiped`,
          { status },
        );
      throw new AgentError(
        "CONTROL_PLANE_UNAVAILABLE",
        `an operator disabled this agent (HTTP ${status}${apiMessage}); it leases nothing until enabled again, and asks again with backoff`,
        { status, kind: "disabled" },
      );
    }
    if (status === 403 && (apiCode === "CHALLENGE_FAILED" || apiCode === "KEY_PROOF_FAILED")) {
      // The control plane no longer holds the challenge this answer is for (it restarted, or the
      // answer came after the challenge expired): start the enrollment or key change again.
      throw new AgentError(
        "CONTROL_PLANE_UNAVAILABLE",
        `the control plane no longer holds the challenge this agent answered (HTTP ${status}${apiMessage}); asking for a new one`,
        { status, kind: "challenge_lost" },
      );
    }
    if (status === 403 && opts.pool !== true && apiCode === "RUN_TOKEN_INVALID") {
      // A hook's run token, not the client's credential, was refused (sidecar mode).
      throw new AgentError(
        "RUN_TOKEN_INVALID",
        "the run token is not this run's; pass the token POST /api/admin/v1/runs answered for this run (OCI_CRED_AGENT_RUN_TOKEN or --run-token-file)",
      );
    }
    if (status === 401 || status === 403) {
      throw new AgentError(
        "CONTROL_PLANE_UNAUTHORIZED",
        `the control plane refused the agent's token (HTTP ${status}${apiMessage}); the pool token is wrong or revoked: put a valid one in --token-file and restart`,
        { status },
      );
    }
    if (status === 409 || (status === 404 && opts.leaseRoute === true)) {
      throw new AgentError(
        "LEASE_LOST",
        `the control plane no longer holds this lease (HTTP ${status}${apiMessage}); the run is aborted and its credentials wiped`,
        { status },
      );
    }
    if (status === 429 || status >= 500) {
      const retryAfter = parseRetryAfterMs(res.headers["retry-after"] as string | undefined, Date.now());
      throw new AgentError(
        "CONTROL_PLANE_UNAVAILABLE",
        `the control plane answered HTTP ${status}${apiMessage}; retrying with backoff`,
        {
          status,
          kind: status === 429 ? "throttled" : "server_error",
          ...(retryAfter === undefined ? {} : { retry_after_ms: retryAfter }),
        },
      );
    }
    throw new AgentError(
      "CONTROL_PLANE_REJECTED",
      `the control plane rejected ${method} ${path} with HTTP ${status}${apiMessage}`,
      { status, kind: "rejected", ...(apiCode === undefined ? {} : { api_code: apiCode.slice(0, 64) }) },
    );
  }

  private agentCredential(): string {
    if (this.credential === undefined)
      throw new AgentError(
        "CONTROL_PLANE_UNAUTHORIZED",
        "the agent has no credential yet: it must enroll (POST /agents) before it leases",
        { status: 401, reenroll: true },
      );
    return this.credential;
  }

  /** Enrollment, step 1 (pool token): the agent's id and a challenge sealed to its newest key. */
  async enroll(body: RegisterRequest): Promise<EnrollResponse> {
    const { bytes } = await this.call("POST", "/agents", body, { maxBytes: SMALL_ANSWER_BYTES, pool: true });
    return parseAnswer(bytes, enrollResponseSchema, "enrollment answer", "the agent API v1");
  }

  /**
   * Enrollment, step 2 (pool token): the opened challenge for the per-agent credential, which
   * this client uses from then on. The caller adds `credential` to its redactor.
   */
  async answerEnrollment(agentId: string, answer: ChallengeAnswer): Promise<CredentialResponse> {
    const { bytes } = await this.call("POST", `/agents/${encodeURIComponent(agentId)}/credential`, answer, {
      maxBytes: SMALL_ANSWER_BYTES,
      pool: true,
    });
    const granted = parseAnswer(bytes, credentialResponseSchema, "credential answer", "the agent API v1");
    this.credential = granted.credential;
    return granted;
  }

  /** A challenge sealed to the agent's current newest key, to prove before changing keys. */
  async keyChallenge(agentId: string): Promise<Challenge> {
    const { bytes } = await this.call(
      "POST",
      `/agents/${encodeURIComponent(agentId)}/keys/challenge`,
      {},
      {
        maxBytes: SMALL_ANSWER_BYTES,
      },
    );
    return parseAnswer(bytes, keyChallengeResponseSchema, "key challenge", "the agent API v1");
  }

  async updateKeys(agentId: string, body: UpdateKeysRequest): Promise<void> {
    await this.call("PUT", `/agents/${encodeURIComponent(agentId)}/keys`, body, { maxBytes: SMALL_ANSWER_BYTES });
  }

  async lease(agentId: string, max: number, waitSeconds: number, signal: AbortSignal): Promise<Lease[]> {
    const { bytes } = await this.call(
      "POST",
      `/agents/${encodeURIComponent(agentId)}/leases`,
      { max, wait_seconds: waitSeconds },
      {
        timeoutMs: waitSeconds * 1000 + 15_000,
        signal,
      },
    );
    return parseAnswer(bytes, leaseResponseSchema, "lease answer", "the agent API v1").leases;
  }

  /** Sidecar mode: leases of runs an external runner executes (the sidecar enrolled with role sidecar). */
  async sidecarLease(agentId: string, max: number, waitSeconds: number, signal: AbortSignal): Promise<SidecarLease[]> {
    const { bytes } = await this.call(
      "POST",
      `/agents/${encodeURIComponent(agentId)}/leases`,
      { max, wait_seconds: waitSeconds },
      { timeoutMs: waitSeconds * 1000 + 15_000, signal },
    );
    return parseAnswer(bytes, sidecarLeaseResponseSchema, "lease answer", "the agent API v1").leases;
  }

  /** Sidecar mode: resolves when `runToken` is the run's; rejects with RUN_TOKEN_INVALID when not. */
  async checkRunToken(leaseId: string, runToken: string): Promise<void> {
    await this.call(
      "POST",
      `/leases/${encodeURIComponent(leaseId)}/run-token`,
      { run_token: runToken },
      { leaseRoute: true, maxBytes: SMALL_ANSWER_BYTES },
    );
  }

  /** Sidecar mode: a bundle of the run's credentials sealed now to the sidecar's newest key. */
  async freshBundle(leaseId: string): Promise<string> {
    const { bytes } = await this.call(
      "POST",
      `/leases/${encodeURIComponent(leaseId)}/bundle`,
      {},
      { leaseRoute: true },
    );
    return parseAnswer(bytes, bundleResponseSchema, "bundle answer", "the agent API v1").bundle;
  }

  /** The run's configuration archive; `signal` (the run's end) stops the download. */
  async configuration(leaseId: string, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
    const { bytes } = await this.call("GET", `/leases/${encodeURIComponent(leaseId)}/configuration`, undefined, {
      maxBytes,
      leaseRoute: true,
      timeoutMs: 120_000,
      signal,
    });
    return bytes;
  }

  async heartbeat(leaseId: string): Promise<HeartbeatResponse> {
    const { bytes } = await this.call(
      "POST",
      `/leases/${encodeURIComponent(leaseId)}/heartbeat`,
      {},
      { leaseRoute: true, maxBytes: SMALL_ANSWER_BYTES },
    );
    return parseAnswer(bytes, heartbeatResponseSchema, "heartbeat answer", "the agent API v1");
  }

  async events(leaseId: string, events: RunEvent[]): Promise<void> {
    await this.call(
      "POST",
      `/leases/${encodeURIComponent(leaseId)}/events`,
      { events },
      { leaseRoute: true, maxBytes: SMALL_ANSWER_BYTES },
    );
  }

  async log(leaseId: string, chunk: LogChunk): Promise<void> {
    await this.call("POST", `/leases/${encodeURIComponent(leaseId)}/logs`, chunk, {
      leaseRoute: true,
      maxBytes: SMALL_ANSWER_BYTES,
    });
  }

  async complete(leaseId: string, body: CompleteRequest): Promise<void> {
    await this.call("POST", `/leases/${encodeURIComponent(leaseId)}/complete`, body, {
      leaseRoute: true,
      maxBytes: SMALL_ANSWER_BYTES,
    });
  }
}
