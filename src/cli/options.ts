/** Parsers for option values; each throws an INVALID_ARGUMENT that names the flag. */
import { AgentError } from "../core/errors.js";
import { parseDurationMs } from "../core/duration.js";
import { parseHostPort, type HostPort } from "../core/host-port.js";
import { LOOPBACK } from "../config/load-run-config.js";

export function durationSeconds(flag: string, text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined || ms <= 0) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(text)} is not a duration; write it like 30s, 10m or 1h`,
      { flag },
    );
  }
  return ms / 1000;
}

export function positiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a positive whole number`, {
      flag,
    });
  }
  return n;
}

function hasControlCharacter(text: string): boolean {
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

export function nonEmptyId(flag: string, text: string): string {
  if (text.length === 0 || text.length > 256 || hasControlCharacter(text)) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} must be 1 to 256 printable characters`, { flag });
  }
  return text;
}

export function timestampMs(flag: string, text: string): number {
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(text)} is not a timestamp; write it like 2026-11-22T10:00:00Z`,
      { flag },
    );
  }
  return ms;
}

/** Parses HOST:PORT (IPv6 in brackets); port 0 means any free port. */
export function hostPort(flag: string, text: string): HostPort {
  const parsed = parseHostPort(text);
  if (parsed === undefined) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(text)} is not HOST:PORT; write it like 127.0.0.1:8080 or [::1]:8080`,
      { flag },
    );
  }
  return parsed;
}

/**
 * The control plane's base URL, by the rule `run` applies: https://, or http:// on loopback
 * (else only with `allowInsecure`); no user information. Returned without trailing slashes.
 */
export function controlPlaneUrl(flag: string, text: string, allowInsecure: boolean): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    url = new URL("invalid:");
  }
  if (url.username !== "" || url.password !== "")
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} carries user information (user:password@), which would be shown; remove it and put the token in its file`,
      { flag },
    );
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(text)} is not an http(s) URL; write it like https://control-plane.example:8480`,
      { flag },
    );
  if (url.protocol === "http:" && !LOOPBACK.test(url.hostname) && !allowInsecure)
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${url.origin} is plain http to a non-loopback host: the admin token would cross the network unprotected; use https://, or --allow-insecure-control-plane if you really mean it`,
      { flag },
    );
  return text.replace(/\/+$/, "");
}
