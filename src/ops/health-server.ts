/**
 * The operator's endpoints on --listen (default loopback): /healthz (the process is alive and
 * its event loop answers), /readyz (ready to take runs; 503 with the reasons otherwise) and
 * /metrics (Prometheus text format).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { AgentStatus } from "./agent-status.js";
import type { AgentMetrics } from "./metrics.js";

export interface HealthServer {
  readonly url: string;
  close(): Promise<void>;
}

/** An event loop stalled for longer than this (p99 over the last interval) is not healthy. */
const MAX_LOOP_DELAY_MS = 5000;

export async function startHealthServer(
  host: string,
  port: number,
  status: AgentStatus,
  metrics: AgentMetrics,
): Promise<HealthServer> {
  const loop = monitorEventLoopDelay({ resolution: 50 });
  loop.enable();
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://agent.invalid").pathname;
    const json = (code: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(code, { "content-type": "application/json", "cache-control": "no-store" }).end(text);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      json(405, { error: "use GET" });
      return;
    }
    if (path === "/healthz") {
      const p99 = loop.percentile(99) / 1e6;
      loop.reset();
      json(p99 > MAX_LOOP_DELAY_MS ? 503 : 200, {
        status: p99 > MAX_LOOP_DELAY_MS ? "event loop stalled" : "ok",
        event_loop_delay_p99_ms: Math.round(p99),
      });
      return;
    }
    if (path === "/readyz") {
      const r = status.readiness();
      json(r.ready ? 200 : 503, r);
      return;
    }
    if (path === "/metrics") {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text);
        },
        () => {
          json(500, { error: "metrics collection failed" });
        },
      );
      return;
    }
    json(404, { error: "not found; try /healthz, /readyz or /metrics" });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`,
    close: () =>
      new Promise((resolve) => {
        loop.disable();
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
