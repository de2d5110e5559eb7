/**
 * The agent's log: pino JSON lines (or pino-pretty text), every line passed through the
 * value-based redactor just before it is written, whatever its level or field. Stable fields:
 * run_id, phase, event, registry, integration_id, duration_ms, code (docs/operations.md).
 */
import { pino, type Logger } from "pino";
import type { Redactor } from "../core/redactor.js";

export type LogFormat = "json" | "pretty";

export interface LogSink {
  write(text: string): void;
}

const stdoutSink: LogSink = {
  write(text) {
    process.stdout.write(text);
  },
};

export async function createLogger(options: {
  level: string;
  format: LogFormat;
  redactor: Redactor;
  sink?: LogSink;
}): Promise<Logger> {
  const sink = options.sink ?? stdoutSink;
  let render: (line: string) => string = (line) => line;
  if (options.format === "pretty") {
    const { prettyFactory } = await import("pino-pretty");
    const pretty = prettyFactory({
      colorize: process.stdout.isTTY,
      translateTime: "SYS:HH:MM:ss.l",
      ignore: "pid,hostname,service",
      singleLine: true,
    });
    render = (line) => pretty(line);
  }
  const destination = {
    write(line: string): void {
      sink.write(render(options.redactor.redact(line)));
    },
  };
  return pino(
    {
      level: options.level,
      base: { service: "oci-cred-agent" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
