/**
 * `oci-cred-agent control-plane` as a real process on 127.0.0.1 (port 0): resolves once its
 * `control_plane_listening` log line names the URL.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { AGENT_BIN } from "./agent-process.js";

export interface CliControlPlane {
  readonly url: string;
  readonly child: ChildProcessWithoutNullStreams;
  /** Everything it wrote (stdout and stderr), for leak checks. */
  output(): string;
  /** SIGTERM, then its exit code; idempotent. */
  stop(): Promise<number | null>;
}

export async function spawnCliControlPlane(
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): Promise<CliControlPlane> {
  const child = spawn(AGENT_BIN, ["control-plane", "--listen", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let raw = "";
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      raw += chunk.toString("utf8");
      const m = /"event":"control_plane_listening","url":"([^"]+)"/.exec(raw);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.stderr.on("data", (chunk: Buffer) => (raw += chunk.toString("utf8")));
    void exited.then(([code]) => {
      reject(new Error(`control-plane exited (${String(code)}) before listening: ${raw}`));
    });
  });
  let stopped: Promise<number | null> | undefined;
  return {
    url,
    child,
    output: () => raw,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        const [code] = await exited;
        return code;
      })();
      return stopped;
    },
  };
}
