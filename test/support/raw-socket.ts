/**
 * Raw TCP clients for the control plane's abuse tests: what a flood, a slowloris or a client
 * that checks the server closed its socket does, with node:net (no HTTP client that would hide
 * a kept or closed connection).
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";

export interface RawClient {
  readonly socket: Socket;
  /** Everything received so far, as text. */
  received(): string;
  /** Resolves when the socket closed (from either side). */
  readonly closed: Promise<void>;
  /** Resolves with what was received once `predicate` holds (rejects if the socket closes first). */
  until(predicate: (text: string) => boolean): Promise<string>;
}

/** Opens a connection from `localAddress` (any 127.0.0.0/8 address works on Linux loopback). */
export async function rawConnect(port: number, localAddress = "127.0.0.1"): Promise<RawClient> {
  const socket = connect({ port, host: "127.0.0.1", localAddress });
  let data = "";
  const waiters: { predicate: (t: string) => boolean; resolve: (t: string) => void }[] = [];
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    data += chunk;
    for (const w of [...waiters])
      if (w.predicate(data)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(data);
      }
  });
  // A reset (eviction, a cut request) is what these tests provoke.
  socket.on("error", () => undefined);
  const closed = once(socket, "close").then(() => undefined);
  await once(socket, "connect");
  return {
    socket,
    received: () => data,
    closed,
    until(predicate) {
      if (predicate(data)) return Promise.resolve(data);
      return new Promise((resolve, reject) => {
        waiters.push({ predicate, resolve });
        void closed.then(() => {
          if (predicate(data)) resolve(data);
          else reject(new Error(`the socket closed before the expected answer; received: ${data.slice(0, 300)}`));
        });
      });
    },
  };
}

/**
 * Whether the peer closes the socket within `boundMs`: the bound only limits how long a failing
 * test waits; a passing one returns as soon as the socket closes.
 */
export async function closesWithin(client: RawClient, boundMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => {
      resolve(false);
    }, boundMs);
  });
  const closed = await Promise.race([client.closed.then(() => true), bound]);
  clearTimeout(timer);
  return closed;
}

/** An HTTP/1.1 request's text, with a Host header and the given headers and body. */
export function httpText(method: string, path: string, headers: Record<string, string> = {}, body?: string): string {
  const lines = [`${method} ${path} HTTP/1.1`, "Host: control-plane.test"];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === "content-length"))
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join("\r\n")}\r\n\r\n${body ?? ""}`;
}

/** Writes `text` one byte every `everyMs` until the socket closes or `stop` is called. */
export function trickle(client: RawClient, text: string, everyMs: number): { stop(): void; sent(): number } {
  let i = 0;
  const timer = setInterval(() => {
    if (client.socket.destroyed || i >= text.length) {
      clearInterval(timer);
      return;
    }
    client.socket.write(text[i++] ?? "");
  }, everyMs);
  void client.closed.then(() => {
    clearInterval(timer);
  });
  return {
    stop: () => {
      clearInterval(timer);
    },
    sent: () => i,
  };
}
