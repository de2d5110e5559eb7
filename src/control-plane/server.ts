/**
 * The reference control plane: one HTTP server for the admin API and the agent API. It is what
 * `oci-cred-agent control-plane` serves and what `oci-cred-agent dev` embeds.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ADMIN_API_PREFIX, AGENT_API_PREFIX } from "../protocol/agent-api.js";
import { AdminApi } from "./admin-api.js";
import { AgentApi, type AgentApiSettings } from "./agent-api.js";
import { bearerMatches, HttpError, sendError, sendJson } from "./http-util.js";
import { probeRegistry, type RegistryProber } from "./registry-probe.js";
import { ControlPlaneStore, systemClock, type StoreClock, type StorePersistence } from "./store.js";

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
}

export interface ControlPlane {
  readonly store: ControlPlaneStore;
  readonly server: Server;
  listen(host: string, port: number): Promise<{ url: string; port: number }>;
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
  const admin = new AdminApi(store, options.probe ?? probeRegistry);
  const agent = new AgentApi(
    store,
    {
      pollWaitSeconds: 30,
      heartbeatIntervalSeconds: 10,
      bundleTtlSeconds: 600,
      maxLogBytesPerRun: 8 * 1024 * 1024,
      ...options.agentApi,
    },
    options.agentToken,
  );

  function segments(path: string): string[] {
    try {
      return path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      throw new HttpError(400, "PATH_INVALID", "the request path has a malformed percent-encoding");
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://control-plane.invalid");
    const path = url.pathname;
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

  const server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
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
  });
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;

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
          resolve({ url: `http://${shown}:${addr.port}`, port: addr.port });
        });
      });
    },
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
