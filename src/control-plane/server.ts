/**
 * The reference control plane: one HTTP(S) server for the admin API and the agent API. It is what
 * `oci-cred-agent control-plane` serves and what `oci-cred-agent dev` embeds.
 *
 * Against floods (docs/protocol.md, Limits), this edge bounds time (headers, the whole request,
 * the whole exchange but the lease long-poll), keeps every connection in the connection policy
 * (connection-policy.ts: a connection is proven once a request on it authenticates; floods of
 * unproven ones evict each other, never an agent), refuses clients over their rate (limits.ts),
 * and ends the connection after every 401 and 403.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { ADMIN_API_PREFIX, AGENT_API_PREFIX } from "../protocol/agent-api.js";
import { AdminApi } from "./admin-api.js";
import { AgentApi, hasCredentialShape, type AgentApiSettings } from "./agent-api.js";
import { ADMIN_IDENTITY, addressKey, ConnectionTable } from "./connection-policy.js";
import { bearerMatches, bearerToken, HttpError, sendError, sendJson } from "./http-util.js";
import { ClientLimiter, resolveLimits, type Caller, type LimitOverrides } from "./limits.js";
import { PendingEnrollments } from "./pending-enrollments.js";
import { probeRegistry, type RegistryProber } from "./registry-probe.js";
import { DEFAULT_RUN_QUOTA } from "./run-quota.js";
import { ControlPlaneStore, systemClock, type StoreClock, type StorePersistence } from "./store.js";

/** The longest a lease request waits (agent-api.ts caps wait_seconds there). */
const LONGEST_LEASE_WAIT_MS = 300_000;
const LEASE_POLL_PATH = new RegExp(`^${AGENT_API_PREFIX}/agents/[^/]+/leases/?$`);
/**
 * The refusals that count as failed authentications against an address's budget: a wrong admin,
 * pool or enrollment token, or an unknown bearer. A valid token on the wrong route
 * (POOL_TOKEN_NOT_ACCEPTED), a disabled agent (AGENT_DISABLED), a failed challenge and the like
 * are no guesses: counting them would let 30 disabled agents behind one NAT lock the address out.
 */
const GUESSES = new Set(["UNAUTHORIZED", "AGENT_CREDENTIAL_INVALID"]);

/** A certificate chain and its private key, PEM. */
export interface TlsPem {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

interface ConnectionStats {
  readonly open: number;
  readonly unproven: number;
  readonly proven: number;
  /** Connections closed to make room for others, since the start. */
  readonly evicted: number;
  /** Connections refused at the hard cap, since the start. */
  readonly refused: number;
  /** Exchanges cut at their deadline (answerTimeoutMs, or the long-poll's), since the start. */
  readonly timedOut: number;
}

export interface ControlPlaneOptions {
  readonly adminToken: string;
  /** The agent pool token; without it, agents enroll only with single-use enrollment tokens. */
  readonly agentToken?: string;
  readonly leaseTtlSeconds?: number;
  readonly agentApi?: Partial<AgentApiSettings>;
  readonly probe?: RegistryProber;
  /** Where state is written through (SQLite for --data-file); in memory only when absent. */
  readonly persistence?: StorePersistence;
  /** Finished runs, their events and logs are deleted this long after they ended (default 30 days). */
  readonly retentionSeconds?: number;
  readonly clock?: StoreClock;
  /** Called for every request that failed with 5xx, and for failed background work, for the operator's log. */
  readonly onError?: (error: unknown) => void;
  /** Timeouts, connection caps and rates; the defaults are in limits.ts. */
  readonly limits?: LimitOverrides;
  /** Serve HTTPS with this certificate chain and key; without it, plain HTTP. */
  readonly tls?: TlsPem;
}

export interface ControlPlane {
  readonly store: ControlPlaneStore;
  readonly server: HttpServer | HttpsServer;
  listen(host: string, port: number): Promise<{ url: string; port: number }>;
  /** Replaces the certificate and key for new connections (HTTPS only); throws when they do not match. */
  setTls(pem: TlsPem): void;
  connectionStats(): ConnectionStats;
  close(): Promise<void>;
}

export function createControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  // A refusal while loading the persisted state rejects the promise.
  return new Promise((resolve) => {
    resolve(buildControlPlane(options));
  });
}

function buildControlPlane(options: ControlPlaneOptions): ControlPlane {
  const store = new ControlPlaneStore(options.clock ?? systemClock, (options.leaseTtlSeconds ?? 60) * 1000, {
    ...(options.persistence === undefined ? {} : { persistence: options.persistence }),
    ...(options.retentionSeconds === undefined ? {} : { retentionMs: options.retentionSeconds * 1000 }),
    onError: (error) => options.onError?.(error),
  });
  store.restore();
  const pending = new PendingEnrollments();
  const admin = new AdminApi(store, options.probe ?? probeRegistry, pending);
  const agent = new AgentApi(
    store,
    {
      pollWaitSeconds: 30,
      heartbeatIntervalSeconds: 10,
      bundleTtlSeconds: 600,
      ...DEFAULT_RUN_QUOTA,
      ...options.agentApi,
    },
    options.agentToken,
    pending,
  );

  function segments(path: string): string[] {
    try {
      return path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      throw new HttpError(400, "PATH_INVALID", "the request path has a malformed percent-encoding");
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (path === "/healthz") {
      sendJson(res, 200, { status: "ok" });
      return;
    }
    if (path.startsWith(`${ADMIN_API_PREFIX}/`)) {
      if (!bearerMatches(req, options.adminToken))
        throw new HttpError(401, "UNAUTHORIZED", "the admin API needs Authorization: Bearer <admin token>");
      return admin.handle(req, res, segments(path.slice(ADMIN_API_PREFIX.length + 1)));
    }
    if (path.startsWith(`${AGENT_API_PREFIX}/`)) {
      // Each route checks its own credential: the pool token enrolls, the agent's credential acts.
      return agent.handle(req, res, segments(path.slice(AGENT_API_PREFIX.length + 1)));
    }
    throw new HttpError(404, "NOT_FOUND", `no route ${path}`);
  }

  const limits = resolveLimits(options.limits);
  const limiter = new ClientLimiter(limits.rates);
  const table = new ConnectionTable(limits.connections);
  const sockets = new Map<number, Socket>();
  /** Connection ids by remote address and port: a TLS request's socket is not the TCP socket counted. */
  const idByPeer = new Map<string, number>();
  const refusedSockets = new WeakSet<Socket>();
  const stats = { evicted: 0, refused: 0, timedOut: 0 };
  const peerOf = (s: Socket): string => `${s.remoteAddress ?? ""}|${s.remotePort ?? ""}`;

  function evict(ids: readonly number[]): void {
    for (const id of ids) {
      stats.evicted++;
      sockets.get(id)?.destroy();
    }
  }

  /** Who the request's bearer token says it is; each route still checks its own credential. */
  function identify(req: IncomingMessage): Caller {
    if (bearerToken(req) === undefined) return { kind: "anonymous" };
    if (bearerMatches(req, options.adminToken)) return { kind: "admin" };
    const known = agent.identify(req);
    if (known === undefined) return { kind: "anonymous" };
    return known === "enrollment"
      ? { kind: "enrollment" }
      : { kind: "agent", agentId: known.id, concurrency: known.concurrency };
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    if (refusedSockets.has(req.socket)) {
      res.destroy();
      return;
    }
    const now = Date.now();
    const id = idByPeer.get(peerOf(req.socket));
    if (id !== undefined) {
      table.requestStarted(id, now);
      res.once("close", () => {
        table.requestEnded(id, Date.now());
      });
    }
    let path: string;
    try {
      path = new URL(req.url ?? "/", "http://control-plane.invalid").pathname;
    } catch {
      path = "/";
    }
    // The whole exchange has a deadline; the lease long-poll's is its longest wait and a margin.
    const longPoll = req.method === "POST" && LEASE_POLL_PATH.test(path);
    const deadline = setTimeout(
      () => {
        if (res.writableFinished) return;
        stats.timedOut++;
        req.socket.destroy();
      },
      longPoll ? LONGEST_LEASE_WAIT_MS + limits.longPollMarginMs : limits.answerTimeoutMs,
    );
    deadline.unref();
    res.once("close", () => {
      clearTimeout(deadline);
    });

    const caller = identify(req);
    if (id !== undefined && (caller.kind === "admin" || caller.kind === "agent"))
      evict(table.prove(id, caller.kind === "admin" ? ADMIN_IDENTITY : `agent:${caller.agentId}`, now).evict);
    const address = addressKey(req.socket.remoteAddress);
    // A bearer of the agent credential's shape that is no longer valid (the agent was deleted or
    // expired, the control plane restarted in memory) is no guess (256 bits): it is neither
    // throttled nor counted, so its agent hears 401 AGENT_CREDENTIAL_INVALID and enrolls again
    // even while someone else on its address spends the address's failure budget.
    const refusedCredential =
      caller.kind === "anonymous" && path.startsWith(`${AGENT_API_PREFIX}/`) && hasCredentialShape(bearerToken(req));
    const refusal = refusedCredential ? undefined : limiter.check(caller, address, now);
    if (refusal) {
      // An unproven client's connection is not kept for its next try.
      sendError(res, refusal, id === undefined || !table.isProven(id));
      return;
    }
    route(req, res, path).catch((error: unknown) => {
      if (error instanceof HttpError && GUESSES.has(error.code) && !refusedCredential)
        limiter.failed(address, Date.now());
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (error instanceof HttpError) sendError(res, error);
      else {
        options.onError?.(error);
        sendError(res, new HttpError(500, "INTERNAL", "the control plane failed to handle the request"));
      }
    });
  }

  const serverOptions = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // How often Node checks the two timeouts above: they are cut within a quarter of the headers timeout.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
  const tls = options.tls;
  const server: HttpServer | HttpsServer = tls
    ? createHttpsServer(
        { ...serverOptions, cert: tls.cert, key: tls.key, handshakeTimeout: limits.headersTimeoutMs },
        handle,
      )
    : createHttpServer(serverOptions, handle);
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;

  // Every TCP connection, before TLS: admitted by the connection policy, perhaps evicting others.
  server.on("connection", (socket: Socket) => {
    const admission = table.open(addressKey(socket.remoteAddress), Date.now());
    evict(admission.evict);
    if (!admission.admitted) {
      stats.refused++;
      refusedSockets.add(socket);
      if (tls) socket.destroy();
      else {
        const body = JSON.stringify({
          error: {
            code: "CONNECTION_LIMIT",
            message: `the control plane holds its most connections (${limits.connections.maxConnections}), all of them busy with the admin token; retry later (operators: raise --max-connections, or make admin scripts hold fewer connections)`,
          },
        });
        socket.end(
          `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n${body}`,
          () => socket.destroy(),
        );
      }
      return;
    }
    const id = admission.id;
    const peer = peerOf(socket);
    sockets.set(id, socket);
    idByPeer.set(peer, id);
    socket.once("close", () => {
      table.close(id);
      sockets.delete(id);
      if (idByPeer.get(peer) === id) idByPeer.delete(peer);
    });
  });

  return {
    store,
    server,
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address() as AddressInfo;
          const shown = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
          resolve({ url: `${tls ? "https" : "http"}://${shown}:${addr.port}`, port: addr.port });
        });
      });
    },
    setTls(pem) {
      if (!tls) throw new Error("this control plane serves plain HTTP; start it with TLS to replace certificates");
      (server as HttpsServer).setSecureContext({ cert: pem.cert, key: pem.key });
    },
    connectionStats: () => ({
      open: table.size,
      unproven: table.unprovenCount,
      proven: table.provenCount,
      ...stats,
    }),
    async close() {
      store.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}
