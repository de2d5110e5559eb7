/**
 * HOST:PORT as the agent's listeners take it (`--listen` of `run` and `control-plane`, the
 * `listen` setting). One parser; each caller turns "not HOST:PORT" into its own error. Pure.
 */
import { AgentError } from "./errors.js";

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The host an empty HOST (`:8080`) stands for. */
const DEFAULT_LISTEN_HOST = "127.0.0.1";

/**
 * Parses HOST:PORT: an IPv6 host in brackets (`[::1]:8080`, returned without them), an empty
 * host for 127.0.0.1, a port of at most 65535 (0 means any free port). Undefined when `text`
 * is not HOST:PORT.
 */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) return undefined;
  return { host: m[1] ?? (m[2] ? m[2] : DEFAULT_LISTEN_HOST), port };
}

/** For a value already checked with parseHostPort (the resolved `listen` setting); throws if it is not HOST:PORT. */
export function hostPort(text: string): HostPort {
  const parsed = parseHostPort(text);
  if (parsed === undefined) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${JSON.stringify(text)} is not HOST:PORT; write it like 127.0.0.1:8080 or [::1]:8080`,
    );
  }
  return parsed;
}
