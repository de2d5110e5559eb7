/** Parsers for option values; each throws an INVALID_ARGUMENT that names the flag. */
import { AgentError } from "../core/errors.js";
import { parseByteSize } from "../core/byte-size.js";
import { parseDurationMs } from "../core/duration.js";
import { parseHostPort, type HostPort } from "../core/host-port.js";

export function durationSeconds(flag: string, text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined || ms <= 0) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a duration; write it like 30s, 10m or 1h`, { flag });
  }
  return ms / 1000;
}

export function positiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a positive whole number`, { flag });
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
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a timestamp; write it like 2026-11-22T10:00:00Z`, { flag });
  }
  return ms;
}

/** Parses HOST:PORT (IPv6 in brackets); port 0 means any free port. */
export function hostPort(flag: string, text: string): HostPort {
  const parsed = parseHostPort(text);
  if (parsed === undefined) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not HOST:PORT; write it like 127.0.0.1:8080 or [::1]:8080`, { flag });
  }
  return parsed;
}

/** Parses byte sizes like 256MiB, 64k, 1G or a bare number of bytes. */
export function byteSize(flag: string, text: string): number {
  const n = parseByteSize(text);
  if (n === undefined) {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a size; write it like 256MiB or 64k`, { flag });
  }
  return n;
}

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

/** An https:// URL, or http:// to a loopback address (or anywhere with the explicit opt-in). */
export function controlPlaneUrl(flag: string, text: string, allowInsecure: boolean): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${JSON.stringify(text)} is not a URL; write it like https://cp.example.com`, { flag });
  }
  if (url.protocol === "https:") return url.href.replace(/\/+$/, "");
  if (url.protocol === "http:") {
    if (LOOPBACK_HOSTS.has(url.hostname) || url.hostname.startsWith("127.") || allowInsecure) return url.href.replace(/\/+$/, "");
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${url.origin} is plain http to a non-loopback host: tokens and bundles would cross the network unprotected. Use https://, or pass --allow-insecure-control-plane if you really mean it`,
      { flag },
    );
  }
  throw new AgentError("INVALID_ARGUMENT", `${flag} must be an https:// URL (or http:// on loopback)`, { flag });
}
