/**
 * Runs `bin/oci-cred-agent run` as a real child process (so signals and SIGKILL are real) and
 * collects its JSON log lines; `waitForLog` resolves when a matching line arrives.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { fileURLToPath } from "node:url";

export const AGENT_BIN = fileURLToPath(new URL("../../bin/oci-cred-agent", import.meta.url));
export const FAKE_TOFU = fileURLToPath(new URL("../fixtures/fake-tofu.mjs", import.meta.url));

export type LogLine = Record<string, unknown>;

export interface AgentProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: LogLine[];
  /** Everything the process wrote, raw, for canary checks. */
  output(): string;
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
}

export function startAgent(args: readonly string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  return startLogged(AGENT_BIN, ["run", "--log-format", "json", ...args], env);
}

/** Any command that logs JSON lines on stdout (the runner, or the CLI through a wrapper such as setpriv). */
export function startLogged(file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const child = spawn(file, args, {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: LogLine[] = [];
  let raw = "";
  let pending = "";
  const waiters: { predicate: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  child.stdout.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    raw += text;
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { unparsed: line };
      }
      lines.push(parsed);
      for (const w of [...waiters]) {
        if (w.predicate(parsed)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  child.stderr.on("data", (chunk: Buffer) => {
    raw += chunk.toString("utf8");
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      resolve({ code, signal });
    });
  });
  return {
    child,
    lines,
    output: () => raw,
    exited,
    kill: (signal) => child.kill(signal),
    waitForLog(predicate, timeoutMs = 30_000) {
      const found = lines.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new Error(
              `no matching log line within ${timeoutMs} ms; last lines:\n${raw.split("\n").slice(-15).join("\n")}`,
            ),
          );
        }, timeoutMs);
        const waiter = {
          predicate,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(waiter);
        void exited.then(() => {
          if (waiters.includes(waiter)) {
            clearTimeout(timer);
            reject(
              new Error(`agent exited before a matching log line; output:\n${raw.split("\n").slice(-20).join("\n")}`),
            );
          }
        });
      });
    },
  };
}
