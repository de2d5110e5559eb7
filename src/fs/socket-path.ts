/**
 * Taking a Unix socket's path for a server (the runner's, the sidecar's): a stale socket file
 * left by a process that died is removed; a path that is not a socket, or a socket something
 * still answers on, is refused with the caller's code.
 */
import { lstat, unlink } from "node:fs/promises";
import { createConnection, type Server } from "node:net";
import { AgentError, errnoCode } from "../core/errors.js";

/** Whether something answers on a Unix socket. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    const done = (value: boolean): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(2_000, () => {
      done(true); // connected or not, something holds the path
    });
    socket.once("connect", () => {
      done(true);
    });
    socket.once("error", () => {
      done(false);
    });
  });
}

export async function takeSocketPath(
  socketPath: string,
  code: "RUNNER_SOCKET_IN_USE" | "SIDECAR_SOCKET_IN_USE",
  who: "runner" | "sidecar",
): Promise<void> {
  let st;
  try {
    st = await lstat(socketPath);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return;
    throw error;
  }
  if (!st.isSocket())
    throw new AgentError(
      code,
      `--socket ${socketPath} exists and is not a socket; remove it or choose another --socket`,
      { path: socketPath },
    );
  if (await answers(socketPath))
    throw new AgentError(
      code,
      `another ${who} answers on --socket ${socketPath}; stop it first, or choose another --socket`,
      { path: socketPath },
    );
  // A stale socket file (a process that died without removing it): nothing answers, so it goes.
  await unlink(socketPath);
}

export function listenOnSocket(server: Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
