/**
 * The first step of both composition roots (the agent's and the sidecar's): a redactor that
 * holds the token from the start, the logger that goes through it, and the key-loading lines.
 */
import type { Logger } from "pino";
import { Redactor } from "../core/redactor.js";
import { createLogger, type LogSink } from "../daemon/logger.js";
import { describeKeySource } from "../keys/key-source.js";
import type { PreparedAgent } from "./prepare-agent.js";

export async function startLogging(
  prepared: PreparedAgent,
  sink: LogSink | undefined,
): Promise<{ redactor: Redactor; log: Logger }> {
  const { settings, keys: ring } = prepared;
  const redactor = new Redactor();
  redactor.add([prepared.token]);
  const log = await createLogger({
    level: settings.logLevel,
    format: settings.logFormat ?? (process.stdout.isTTY ? "pretty" : "json"),
    redactor,
    ...(sink ? { sink } : {}),
  });
  for (const w of prepared.warnings) log.warn({ event: "key_source_warning" }, w);
  log.info(
    { event: "keys_loaded", source: describeKeySource(settings.keySource), kids: ring.kids() },
    `loaded ${ring.kids().length} key(s)`,
  );
  return { redactor, log };
}
