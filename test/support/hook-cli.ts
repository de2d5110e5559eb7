/**
 * Runs `oci-cred-agent hook NAME` (the built CLI) as a child process with exactly the given
 * environment, and a stand-in sidecar for the hook tests that need no control plane: a Unix
 * socket that records each request line and answers what the test says.
 */
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:net";
import { AGENT_BIN } from "./agent-process.js";

export interface HookRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runHook(args: readonly string[], env: Readonly<Record<string, string>>): Promise<HookRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(AGENT_BIN, ["hook", ...args], {
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

export interface StubSidecar {
  /** Every request line received, parsed. */
  readonly requests: Record<string, unknown>[];
  /** What the next requests get: an object (sent as one JSON line), a raw string, or "hang" (no answer). */
  answer: (request: Record<string, unknown>) => unknown;
  close(): Promise<void>;
}

export async function startStubSidecar(socketPath: string): Promise<StubSidecar> {
  const stub: StubSidecar = {
    requests: [],
    answer: () => ({ ok: false, code: "REQUEST_INVALID", message: "no answer set" }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server: Server = createServer((socket) => {
    let buffered = "";
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const nl = buffered.indexOf("\n");
      if (nl < 0) return;
      const request = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      stub.requests.push(request);
      const answer = stub.answer(request);
      if (answer === "hang") return;
      socket.end(typeof answer === "string" ? answer : `${JSON.stringify(answer)}\n`);
    });
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return stub;
}
