/**
 * The sidecar's Unix socket: one hook request per connection, one answer, then the connection
 * closes (src/protocol/sidecar-api.ts). The socket is created 0660 and given to the runner's
 * group (--socket-group): only the runner's user or group reaches it. A stale socket file (a
 * sidecar killed with -9) is replaced; a live one is refused (SIDECAR_SOCKET_IN_USE).
 */
import { chmod, chown, lstat, unlink } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
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

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    const done = (value: boolean): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(2_000, () => {
      done(true);
    });
    socket.once("connect", () => {
      done(true);
    });
    socket.once("error", () => {
      done(false);
    });
  });
}

async function takeSocketPath(socketPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return;
    throw error;
  }
  if (!st.isSocket())
    throw new AgentError(
      "SIDECAR_SOCKET_IN_USE",
      `--socket ${socketPath} exists and is not a socket; remove it or choose another --socket`,
      { path: socketPath },
    );
  if (await answers(socketPath))
    throw new AgentError(
      "SIDECAR_SOCKET_IN_USE",
      `another sidecar answers on --socket ${socketPath}; stop it first, or choose another --socket`,
      { path: socketPath },
    );
  await unlink(socketPath);
}

function listen(server: Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

export function refusal(code: string, message: string): HookAnswer {
  return { ok: false, code, message: message.slice(0, 2048) };
}

export async function startHookServer(options: HookServerOptions): Promise<HookServer> {
  const { log } = options;
  await takeSocketPath(options.socketPath);
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
  await listen(server, options.socketPath);
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
