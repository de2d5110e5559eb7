/**
 * An HTTP proxy on 127.0.0.1 (port 0) in front of a control plane, injecting faults: answers with
 * any status (5xx, 429 with Retry-After), connection resets, refused connections, stalls (held
 * until the mode changes, then cut), and long-polls dropped part-way. Every request is recorded
 * with its time and what the proxy did with it, so tests can count request rates and find the
 * first request after a recovery. Waiting is event-driven (`waitForRequest`), never by polling.
 */
import { EventEmitter } from "node:events";
import {
  request as httpRequest,
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";

type FaultMode =
  | { readonly kind: "pass" }
  | {
      readonly kind: "status";
      readonly status: number;
      readonly headers?: Readonly<Record<string, string>>;
      readonly body?: string;
    }
  /** Destroy the connection as soon as the request arrives. */
  | { readonly kind: "reset" }
  /** Close every new connection at once, before any request (the control plane is down). */
  | { readonly kind: "refuse" }
  /** Never answer; the connection is cut when the mode changes or the proxy closes. */
  | { readonly kind: "stall" }
  /** Forward, but cut the client connection (and the upstream request) after `ms`. */
  | { readonly kind: "drop-after"; readonly ms: number }
  /** Forward, let the upstream answer completely, then cut the client connection instead of answering. */
  | { readonly kind: "drop-response" }
  /** Forward after holding the request for `ms` (a slow control plane). */
  | { readonly kind: "delay"; readonly ms: number };

interface ProxiedRequest {
  readonly at: number;
  readonly method: string;
  readonly path: string;
  readonly mode: FaultMode["kind"];
  /** Status sent to the agent; undefined when the connection was cut. */
  status?: number | undefined;
  doneAt?: number;
}

export interface FaultProxy {
  readonly url: string;
  readonly requests: readonly ProxiedRequest[];
  /** The mode for requests from now on; in-flight requests are cut when `cutInFlight`. */
  setMode(mode: FaultMode, options?: { cutInFlight?: boolean; only?: (method: string, path: string) => boolean }): void;
  waitForRequest(predicate: (r: ProxiedRequest) => boolean, timeoutMs?: number): Promise<ProxiedRequest>;
  /** Requests whose path matches, in [from, to). */
  count(from: number, to: number, pathMatch?: RegExp): number;
  close(): Promise<void>;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const events = new EventEmitter();
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  const inFlight = new Set<() => void>();
  let mode: FaultMode = { kind: "pass" };
  let only: ((method: string, path: string) => boolean) | undefined;

  const finish = (rec: ProxiedRequest, status: number | undefined): void => {
    rec.status = status;
    rec.doneAt = Date.now();
    events.emit("done", rec);
  };

  const handle = (req: IncomingMessage, res: ServerResponse, delayed?: FaultMode): void => {
    const path = req.url ?? "/";
    const method = req.method ?? "GET";
    const applies = only === undefined || only(method, path);
    const m: FaultMode = delayed ?? (applies ? mode : { kind: "pass" });
    if (m.kind === "delay") {
      req.pause();
      const timer = setTimeout(() => {
        req.resume();
        handle(req, res, { kind: "pass" });
      }, m.ms);
      res.on("close", () => {
        clearTimeout(timer);
      });
      return;
    }
    const rec: ProxiedRequest = { at: Date.now(), method, path, mode: m.kind };
    requests.push(rec);
    events.emit("request", rec);
    const cut = (): void => {
      inFlight.delete(cut);
      if (rec.doneAt === undefined) finish(rec, undefined);
      req.socket.destroy();
    };
    switch (m.kind) {
      case "reset":
      case "refuse":
        cut();
        return;
      case "status": {
        req.resume();
        const body =
          m.body ?? JSON.stringify({ error: { code: "INJECTED", message: `fault proxy answered ${m.status}` } });
        res.writeHead(m.status, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          ...m.headers,
        });
        res.end(body);
        finish(rec, m.status);
        return;
      }
      case "stall":
        req.resume();
        inFlight.add(cut);
        return;
      case "pass":
      case "drop-after":
      case "drop-response": {
        const up = httpRequest(
          {
            host: upstream.hostname,
            port: upstream.port,
            method,
            path,
            headers: { ...req.headers, host: upstream.host },
          },
          (upRes) => {
            if (m.kind === "drop-response") {
              upRes.resume();
              upRes.on("end", () => {
                inFlight.delete(cutBoth);
                cut();
              });
              return;
            }
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            upRes.pipe(res);
            upRes.on("end", () => {
              inFlight.delete(cutBoth);
              finish(rec, upRes.statusCode);
            });
          },
        );
        const cutBoth = (): void => {
          up.destroy();
          cut();
        };
        inFlight.add(cutBoth);
        up.on("error", () => {
          inFlight.delete(cutBoth);
          if (!res.headersSent) cut();
          else res.destroy();
        });
        res.on("close", () => {
          if (!res.writableFinished) up.destroy();
        });
        req.pipe(up);
        if (m.kind === "drop-after") {
          const timer = setTimeout(cutBoth, m.ms);
          res.on("close", () => {
            clearTimeout(timer);
          });
        }
        return;
      }
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res);
  });
  server.keepAliveTimeout = 60_000;
  server.on("connection", (socket: Socket) => {
    if (mode.kind === "refuse" && only === undefined) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setMode(next, options = {}) {
      const wasStall = mode.kind === "stall";
      mode = next;
      only = options.only;
      if (options.cutInFlight === true || wasStall) for (const cut of [...inFlight]) cut();
      if (next.kind === "refuse" && options.only === undefined) for (const s of sockets) s.destroy();
    },
    waitForRequest(predicate, timeoutMs = 30_000) {
      const found = requests.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const on = (r: ProxiedRequest): void => {
          if (!predicate(r)) return;
          clearTimeout(timer);
          events.off("request", on);
          events.off("done", on);
          resolve(r);
        };
        const timer = setTimeout(() => {
          events.off("request", on);
          events.off("done", on);
          reject(new Error(`no matching proxied request within ${timeoutMs} ms (${requests.length} seen)`));
        }, timeoutMs);
        events.on("request", on);
        events.on("done", on);
      });
    },
    count(from, to, pathMatch) {
      return requests.filter((r) => r.at >= from && r.at < to && (pathMatch === undefined || pathMatch.test(r.path)))
        .length;
    },
    async close() {
      for (const cut of [...inFlight]) cut();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}
