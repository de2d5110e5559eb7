/**
 * The sidecar's Unix socket: one hook request per connection, one answer, then the connection
 * closes (src/protocol/sidecar-api.ts). The socket is created 0660 and given to the runner's
 * group (--socket-group): only the runner's user or group reaches it. A stale socket file (a
 * sidecar killed with -9) is replaced; a live one is refused (SIDECAR_SOCKET_IN_USE).
 */
import { chmod, chown, unlink } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import type { Logger } from "pino";
import { listenOnSocket, takeSocketPath } from "../fs/socket-path.js";
import { isAgentError } from "../core/errors.js";
import {
  encodeHookLine,
  FirstLineReader,
  parseHookRequest,
  type HookAnswer,
  type HookRequest,
} from "../protocol/sidecar-api.js";

export interface HookServerOptions {
  readonly socketPath: string;
  /** The runner's group; undefined: the sidecar's own group. */
  readonly gid: number | undefined;
  readonly log: Logger;
  /** Answers one valid request (a refusal is an answer too); never rejects. */
  readonly handle: (request: HookRequest) => Promise<HookAnswer>;
}

export interface HookServer {
  /** Stops accepting connections; requests under way finish. */
  close(): Promise<void>;
}

/** How long a connection may take to send its request line. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Connections served at once; more wait in the kernel's backlog. */
const MAX_CONNECTIONS = 64;

export function refusal(code: string, message: string): HookAnswer {
  return { ok: false, code, message: message.slice(0, 2048) };
}

export async function startHookServer(options: HookServerOptions): Promise<HookServer> {
  const { log } = options;
  await takeSocketPath(options.socketPath, "SIDECAR_SOCKET_IN_USE", "sidecar");
  const server = createServer({ allowHalfOpen: true });
  server.maxConnections = MAX_CONNECTIONS;
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    const reader = new FirstLineReader();
    let answered = false;
    const answer = (message: HookAnswer): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      if (!socket.destroyed) socket.end(encodeHookLine(message));
    };
    const timer = setTimeout(() => {
      answer(refusal("REQUEST_INVALID", `no request line within ${REQUEST_TIMEOUT_MS / 1000} s`));
    }, REQUEST_TIMEOUT_MS);
    socket.on("data", (chunk: Buffer) => {
      if (answered) return;
      let line: string | undefined;
      try {
        line = reader.push(chunk);
      } catch (error) {
        log.warn({ event: "hook_refused", code: "REQUEST_INVALID" }, "refused a hook request: line too long");
        answer(refusal("REQUEST_INVALID", isAgentError(error) ? error.message : "the request line is too long"));
        return;
      }
      if (line === undefined) return;
      const request = parseHookRequest(line);
      if (request === undefined) {
        log.warn({ event: "hook_refused", code: "REQUEST_INVALID" }, "refused a hook request that is not protocol v1");
        answer(
          refusal(
            "REQUEST_INVALID",
            'the request is not a hook request of protocol v1 ({"v":1,"hook","run_id","run_token","phase","outcome"}); run the same oci-cred-agent version as hook and sidecar',
          ),
        );
        return;
      }
      clearTimeout(timer);
      options.handle(request).then(answer, () => {
        answer(refusal("INTERNAL", "the sidecar failed while handling the hook; see its log"));
      });
    });
    socket.on("end", () => {
      if (!answered) answer(refusal("REQUEST_INVALID", "the connection ended before a whole request line"));
    });
  });
  await listenOnSocket(server, options.socketPath);
  await chmod(options.socketPath, 0o660);
  if (options.gid !== undefined) await chown(options.socketPath, -1, options.gid);
  log.info({ event: "socket_listening", socket: options.socketPath }, `serving hooks on ${options.socketPath}`);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        for (const s of sockets) s.end();
        unlink(options.socketPath).catch(() => undefined);
      }),
  };
}
