/**
 * The reference control plane's limits against abuse (docs/protocol.md, "Limits"): timeouts,
 * connection caps and per-client rates, with their defaults, and the per-client check itself
 * (pure: who is asking and from where go in, a refusal or nothing comes out). server.ts applies
 * them to sockets and requests.
 */
import { DEFAULT_CONNECTION_LIMITS, type ConnectionLimits } from "./connection-policy.js";
import { HttpError } from "./http-util.js";
import { TokenBuckets, type RateLimit } from "./rate-limit.js";

export interface ClientRates {
  /**
   * Per agent credential, every route it calls, per run slot: times the agent's registered
   * concurrency (at most MAX_SCALED_CONCURRENCY), since its runs' heartbeats, logs and events
   * grow with it.
   */
  readonly agent: RateLimit;
  /** Per remote address, requests with the pool token or an enrollment token (enrollment, ping). */
  readonly enrollment: RateLimit;
  /**
   * Per remote address, failed authentications (a wrong admin, pool or enrollment token, an unknown
   * bearer; server.ts says which); when spent, unauthenticated requests are refused.
   */
  readonly authFailures: RateLimit;
  /** Per admin token. */
  readonly admin: RateLimit;
}

export interface ControlPlaneLimits {
  /** To receive a request's headers, from the connection or the previous answer (Node's headersTimeout; also the TLS handshake). */
  readonly headersTimeoutMs: number;
  /** To receive a whole request, headers and body (Node's requestTimeout). */
  readonly requestTimeoutMs: number;
  /** For a whole exchange, request and answer, on every route but the lease long-poll. */
  readonly answerTimeoutMs: number;
  /** The lease long-poll's deadline past its longest wait (300 s). */
  readonly longPollMarginMs: number;
  /** An idle keep-alive connection is closed after this long. */
  readonly keepAliveTimeoutMs: number;
  readonly connections: ConnectionLimits;
  readonly rates: ClientRates;
}

export const DEFAULT_LIMITS: ControlPlaneLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  answerTimeoutMs: 120_000,
  longPollMarginMs: 30_000,
  keepAliveTimeoutMs: 65_000,
  connections: DEFAULT_CONNECTION_LIMITS,
  rates: {
    agent: { perSecond: 20, burst: 40 },
    enrollment: { perSecond: 10, burst: 60 },
    authFailures: { perSecond: 2, burst: 30 },
    admin: { perSecond: 100, burst: 500 },
  },
};

/**
 * Connection limits from the one an operator sets (--max-connections): a quarter of it, at most
 * 256, for unproven connections, at most 64 of them per address; 64 per identity.
 */
export function connectionLimitsFor(maxConnections: number): ConnectionLimits {
  const maxUnproven = Math.max(1, Math.min(256, Math.floor(maxConnections / 4)));
  return {
    maxConnections,
    maxUnproven,
    maxUnprovenPerAddress: Math.min(64, maxUnproven),
    maxPerIdentity: Math.min(64, maxConnections - maxUnproven),
  };
}

/** Limits given in part (tests make the timeouts small); the rest are the defaults. */
export interface LimitOverrides extends Partial<Omit<ControlPlaneLimits, "connections" | "rates">> {
  readonly connections?: Partial<ConnectionLimits>;
  readonly rates?: Partial<ClientRates>;
}

export function resolveLimits(overrides: LimitOverrides = {}): ControlPlaneLimits {
  return {
    ...DEFAULT_LIMITS,
    ...overrides,
    connections: { ...DEFAULT_LIMITS.connections, ...overrides.connections },
    rates: { ...DEFAULT_LIMITS.rates, ...overrides.rates },
  };
}

/** An agent's rate grows with its concurrency up to this many run slots. */
export const MAX_SCALED_CONCURRENCY = 64;

/** Who a request says it is, from its bearer token alone (each route still checks its own). */
export type Caller =
  | { readonly kind: "admin" }
  | { readonly kind: "agent"; readonly agentId: string; readonly concurrency: number }
  /** The pool token or an enrollment token. */
  | { readonly kind: "enrollment" }
  | { readonly kind: "anonymous" };

function throttled(code: string, message: string, waitMs: number): HttpError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new HttpError(
    429,
    code,
    `${message}; retry after ${seconds} s (Retry-After)`,
    { retry_after_seconds: seconds },
    {
      "retry-after": String(seconds),
    },
  );
}

export class ClientLimiter {
  private readonly agent: TokenBuckets;
  private readonly enrollment: TokenBuckets;
  private readonly authFailures: TokenBuckets;
  private readonly admin: TokenBuckets;

  constructor(private readonly rates: ClientRates) {
    this.agent = new TokenBuckets(rates.agent);
    this.enrollment = new TokenBuckets(rates.enrollment);
    this.authFailures = new TokenBuckets(rates.authFailures);
    this.admin = new TokenBuckets(rates.admin);
  }

  /** The refusal (429) for a request from `caller` at `address` (see addressKey), or undefined. */
  check(caller: Caller, address: string, nowMs: number): HttpError | undefined {
    const { rates } = this;
    switch (caller.kind) {
      case "admin": {
        const wait = this.admin.take("admin", nowMs);
        return wait === undefined
          ? undefined
          : throttled(
              "ADMIN_RATE_LIMITED",
              `the admin token made more than ${rates.admin.burst} requests at once or ${rates.admin.perSecond} a second; slow the script down`,
              wait,
            );
      }
      case "agent": {
        const slots = Math.max(1, Math.min(caller.concurrency, MAX_SCALED_CONCURRENCY));
        const wait = this.agent.take(caller.agentId, nowMs, slots);
        return wait === undefined
          ? undefined
          : throttled(
              "AGENT_RATE_LIMITED",
              `agent ${caller.agentId} made more than ${rates.agent.burst * slots} requests at once or ${rates.agent.perSecond * slots} a second (for its concurrency ${caller.concurrency})`,
              wait,
            );
      }
      case "enrollment": {
        const wait = this.enrollment.take(address, nowMs);
        return wait === undefined
          ? undefined
          : throttled(
              "ENROLLMENT_RATE_LIMITED",
              `this address made more than ${rates.enrollment.burst} requests with the pool token or an enrollment token at once or ${rates.enrollment.perSecond} a second (enrollment, ping); look for a client enrolling in a loop`,
              wait,
            );
      }
      case "anonymous": {
        const wait = this.authFailures.wait(address, nowMs);
        return wait === 0
          ? undefined
          : throttled(
              "AUTH_FAILURES_RATE_LIMITED",
              `this address failed authentication more than ${rates.authFailures.burst} times at once or ${rates.authFailures.perSecond} a second; requests without a valid credential are refused for now: check the token the client sends`,
              wait,
            );
      }
    }
  }

  /** A request from `address` failed authentication (401 or 403). */
  failed(address: string, nowMs: number): void {
    this.authFailures.take(address, nowMs);
  }
}
