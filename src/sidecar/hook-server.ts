/**
 * The sidecar's Unix socket: one hook request per connection, one answer, then the connection
 * closes (src/protocol/sidecar-api.ts). The socket is created 0660 and given to the runner's
 * group (--socket-group): only the runner's user or group reaches it. A stale socket file (a
 * sidecar killed with -9) is replaced; a live one is refused (SIDECAR_SOCKET_IN_USE). The
 * socket's directory must be one nobody else can write to (SIDECAR_SOCKET_DIR_UNSAFE): else a
 * run could put a socket of its own in the sidecar's place and collect other runs' tokens.
 *
 * No connection holds the server: a request line must come within REQUEST_TIMEOUT_MS (the hook
 * writes it at once), the connection is destroyed as soon as its answer is flushed (the peer's
 * close is never waited for), and close() destroys whatever connection is left. A client that
 * goes away before its answer aborts the request's wait (`signal`).
 */
import { chmod, chown, stat, unlink } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { listenOnSocket, takeSocketPath } from "../fs/socket-path.js";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import { currentUid } from "../fs/secure-fs.js";
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
  /**
   * Answers one valid request (a refusal is an answer too); never rejects. `signal` aborts when
   * the client goes away before its answer.
   */
  readonly handle: (request: HookRequest, signal: AbortSignal) => Promise<HookAnswer>;
}

export interface HookServer {
  /** Stops accepting connections and destroys those left (their clients see the connection break). */
  close(): Promise<void>;
}

/** How long a connection may take to send its request line (the hook writes it at once). */
const REQUEST_TIMEOUT_MS = 2_000;
/** How long an answer may take to be flushed to a client that does not read it. */
const FLUSH_TIMEOUT_MS = 2_000;

export function refusal(code: string, message: string): HookAnswer {
  return { ok: false, code, message: message.slice(0, 2048) };
}

/**
 * The socket's directory: it must exist and be writable by none but its owner (root or the
 * sidecar's user), unless sticky (/tmp: nobody may then remove or rename another's socket).
 */
async function checkSocketDir(socketPath: string): Promise<void> {
  const dir = dirname(socketPath);
  const fix = `create it for the sidecar's user alone (systemd: RuntimeDirectory=oci-cred-agent; else install -d -m 0755 -o <sidecar's user> ${dir}), or choose another --socket`;
  let st;
  try {
    st = await stat(dir);
  } catch (error) {
    throw new AgentError(
      "SIDECAR_SOCKET_DIR_UNSAFE",
      `the directory of --socket ${socketPath} cannot be used (${errnoCode(error) ?? "error"}): ${fix}`,
      { path: dir },
    );
  }
  const problem = !st.isDirectory()
    ? "is not a directory"
    : st.uid !== 0 && st.uid !== currentUid()
      ? `is owned by uid ${st.uid}, neither root nor the sidecar's user (uid ${currentUid()})`
      : (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0
        ? `is writable by its group or by others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}) and not sticky: a run could put a socket of its own in the sidecar's place`
        : undefined;
  if (problem !== undefined)
    throw new AgentError("SIDECAR_SOCKET_DIR_UNSAFE", `${dir}, the directory of --socket, ${problem}; ${fix}`, {
      path: dir,
    });
}

export async function startHookServer(options: HookServerOptions): Promise<HookServer> {
  const { log } = options;
  await checkSocketDir(options.socketPath);
  await takeSocketPath(options.socketPath, "SIDECAR_SOCKET_IN_USE", "sidecar");
  // Half-open: a client's end may come before the answer is written; the answer then ends it.
  const server = createServer({ allowHalfOpen: true });
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    const reader = new FirstLineReader();
    const gone = new AbortController();
    let answered = false;
    let handling = false;
    const answer = (message: HookAnswer): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      if (socket.destroyed) return;
      // Once flushed, the connection goes: the peer's close is never waited for.
      const flushTimer = setTimeout(() => socket.destroy(), FLUSH_TIMEOUT_MS);
      flushTimer.unref();
      socket.end(encodeHookLine(message), () => {
        clearTimeout(flushTimer);
        socket.destroy();
      });
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
      handling = true;
      options.handle(request, gone.signal).then(answer, () => {
        answer(refusal("INTERNAL", "the sidecar failed while handling the hook; see its log"));
      });
    });
    socket.on("end", () => {
      // The hook sends its line and waits: an end before the answer is a client gone.
      if (handling) {
        gone.abort();
        if (!answered) {
          answered = true;
          socket.destroy();
        }
      } else if (!answered) answer(refusal("REQUEST_INVALID", "the connection ended before a whole request line"));
    });
    socket.on("close", () => {
      clearTimeout(timer);
      gone.abort();
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
        for (const s of sockets) s.destroy();
        unlink(options.socketPath).catch(() => undefined);
      }),
  };
}
