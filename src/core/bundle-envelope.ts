/**
 * The sealed bundle's envelope (format version 1, docs/protocol.md): parsing and every check
 * that needs no key. Pure: bytes and a clock reading in, a decoded envelope or an AgentError out.
 *
 * Wire form, exactly (keys in this order, no whitespace, at most one trailing "\n"):
 *   {"protected":"<b64url(header JSON)>","enc":"<b64url(32 bytes)>","ciphertext":"<b64url>"}
 * The header travels in the clear and is bound as HPKE associated data: aad = ASCII(protected).
 * Requiring the canonical form means no two distinct byte strings open to the same bundle.
 */
import { z } from "zod";
import { AgentError } from "./errors.js";

export const BUNDLE_FORMAT_VERSION = 1;
export const BUNDLE_TYPE = "oci-cred-agent/bundle";
/** An enrollment or key-change challenge: same envelope, its own `typ` and HPKE `info`. */
export const CHALLENGE_TYPE = "oci-cred-agent/challenge";
export const BUNDLE_SUITE = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM";
/** HPKE `info`: domain separation for this format and version. */
export const HPKE_INFO = "oci-cred-agent bundle v1";
/** HPKE `info` of a challenge: a challenge never opens as a bundle, nor a bundle as a challenge. */
export const CHALLENGE_HPKE_INFO = "oci-cred-agent challenge v1";
const X25519_ENC_BYTES = 32;

export interface BundleHeader {
  readonly typ: typeof BUNDLE_TYPE | typeof CHALLENGE_TYPE;
  readonly v: number;
  readonly suite: string;
  readonly kid: string;
  readonly agent_id: string;
  readonly run_id: string;
  readonly bundle_id: string;
  /** Seconds since the epoch. */
  readonly iat: number;
  readonly exp: number;
}

export interface DecodedEnvelope {
  readonly header: BundleHeader;
  readonly protectedB64: string;
  readonly enc: Uint8Array;
  readonly ciphertext: Uint8Array;
}

export interface EnvelopeExpectations {
  readonly agentId: string;
  readonly runId: string;
  readonly nowMs: number;
  readonly maxLifetimeSeconds: number;
  /** How far in the future `iat` may be, for clock skew between control plane and agent. */
  readonly clockSkewSeconds: number;
}

export const DEFAULT_MAX_ENVELOPE_BYTES = 16 * 1024 * 1024;

const B64URL = /^[A-Za-z0-9_-]*$/;

const idString = z.string().min(1).max(256);
const headerSchema = z.strictObject({
  typ: z.enum([BUNDLE_TYPE, CHALLENGE_TYPE]),
  v: z.number().int(),
  suite: z.string().max(128),
  kid: z.string().min(1).max(128),
  agent_id: idString,
  run_id: idString,
  bundle_id: z.string().min(16).max(128),
  iat: z.number().int().nonnegative(),
  exp: z.number().int().nonnegative(),
});

export function b64urlEncode(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

/** Strict base64url: only the alphabet, no padding, and only the canonical encoding of its bytes. */
export function b64urlDecodeStrict(text: string, what: string): Uint8Array {
  const bytes = B64URL.test(text) ? Buffer.from(text, "base64url") : undefined;
  if (bytes === undefined || bytes.toString("base64url") !== text) {
    throw new AgentError(
      "BUNDLE_MALFORMED",
      `the bundle's ${what} is not canonical base64url; the bundle was damaged in transit or altered`,
    );
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function serializeEnvelope(protectedB64: string, enc: Uint8Array, ciphertext: Uint8Array): string {
  return JSON.stringify({ protected: protectedB64, enc: b64urlEncode(enc), ciphertext: b64urlEncode(ciphertext) });
}

export function encodeHeader(header: BundleHeader): string {
  return Buffer.from(JSON.stringify(header), "utf8").toString("base64url");
}

function malformed(detail: string): AgentError {
  return new AgentError(
    "BUNDLE_MALFORMED",
    `the bundle is not a version ${BUNDLE_FORMAT_VERSION} sealed bundle (${detail}); it must be passed unchanged as the control plane (or \`oci-cred-agent seal\`) produced it`,
  );
}

/** Parses the envelope and its header, checking size, form, version and suite. */
export function decodeEnvelope(bytes: Uint8Array, maxBytes: number = DEFAULT_MAX_ENVELOPE_BYTES): DecodedEnvelope {
  if (bytes.byteLength > maxBytes) {
    throw new AgentError(
      "BUNDLE_TOO_LARGE",
      `the bundle is ${bytes.byteLength} bytes, more than the limit of ${maxBytes}; check what was passed as the bundle (materialize: --max-bundle-bytes raises the limit)`,
      { size: bytes.byteLength, limit: maxBytes },
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw malformed("not UTF-8 text");
  }
  if (text.endsWith("\n")) text = text.slice(0, -1);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw malformed("not JSON");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw malformed("not a JSON object");
  const { protected: protectedB64, enc, ciphertext } = json as Record<string, unknown>;
  if (typeof protectedB64 !== "string" || typeof enc !== "string" || typeof ciphertext !== "string") {
    throw malformed('expected string fields "protected", "enc" and "ciphertext"');
  }
  if (JSON.stringify({ protected: protectedB64, enc, ciphertext }) !== text) {
    throw malformed("not in canonical form: extra fields, other key order or whitespace");
  }
  const headerBytes = b64urlDecodeStrict(protectedB64, "protected header");
  let headerJson: unknown;
  try {
    headerJson = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes));
  } catch {
    throw malformed("the protected header is not JSON");
  }
  const v = (headerJson as { v?: unknown } | null)?.v;
  if (typeof v === "number" && v !== BUNDLE_FORMAT_VERSION) {
    throw new AgentError(
      "BUNDLE_VERSION_UNSUPPORTED",
      `the bundle has format version ${v}; this agent opens version ${BUNDLE_FORMAT_VERSION}. Upgrade the agent, or have the control plane seal version ${BUNDLE_FORMAT_VERSION}`,
      { version: v },
    );
  }
  const parsed = headerSchema.safeParse(headerJson);
  if (!parsed.success) {
    throw malformed(
      `header: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(header)"} ${i.message}`).join("; ")}`,
    );
  }
  const header = parsed.data;
  if (header.suite !== BUNDLE_SUITE) {
    throw new AgentError(
      "BUNDLE_SUITE_UNSUPPORTED",
      `the bundle was sealed with ${JSON.stringify(header.suite)}; this agent accepts only ${BUNDLE_SUITE}`,
      { suite: header.suite },
    );
  }
  const encBytes = b64urlDecodeStrict(enc, "encapsulated key");
  if (encBytes.byteLength !== X25519_ENC_BYTES)
    throw malformed(`the encapsulated key is ${encBytes.byteLength} bytes, expected ${X25519_ENC_BYTES}`);
  return { header, protectedB64, enc: encBytes, ciphertext: b64urlDecodeStrict(ciphertext, "ciphertext") };
}

function iso(seconds: number): string {
  return Number.isFinite(seconds) && seconds < 8.64e12 ? new Date(seconds * 1000).toISOString() : String(seconds);
}

/** Checks the header against the run being materialized and the clock. */
export function checkHeader(header: BundleHeader, expect: EnvelopeExpectations): void {
  if (header.agent_id !== expect.agentId) {
    throw new AgentError(
      "BUNDLE_WRONG_AGENT",
      `the bundle was sealed for agent ${JSON.stringify(header.agent_id)}, not this agent (${JSON.stringify(expect.agentId)}); check --agent-id and that the control plane leased the run to this agent`,
      { bundle_agent_id: header.agent_id, agent_id: expect.agentId },
    );
  }
  if (header.run_id !== expect.runId) {
    throw new AgentError(
      "BUNDLE_WRONG_RUN",
      `the bundle was sealed for run ${JSON.stringify(header.run_id)}, not run ${JSON.stringify(expect.runId)}; pass the bundle that came with this run's lease`,
      { bundle_run_id: header.run_id, run_id: expect.runId },
    );
  }
  if (header.exp <= header.iat || header.exp - header.iat > expect.maxLifetimeSeconds) {
    throw new AgentError(
      "BUNDLE_LIFETIME_TOO_LONG",
      `the bundle is valid for ${header.exp - header.iat} s (issued ${iso(header.iat)}, expires ${iso(header.exp)}); the agent accepts at most ${expect.maxLifetimeSeconds} s. Seal with a shorter --ttl, or raise --max-bundle-lifetime`,
      { lifetime_s: header.exp - header.iat, max_lifetime_s: expect.maxLifetimeSeconds },
    );
  }
  const nowS = expect.nowMs / 1000;
  if (nowS >= header.exp) {
    throw new AgentError(
      "BUNDLE_EXPIRED",
      `the bundle expired at ${iso(header.exp)} (agent clock: ${new Date(expect.nowMs).toISOString()}); request the run again so the control plane seals a fresh bundle, and check both clocks (NTP)`,
      { expires_at: iso(header.exp) },
    );
  }
  if (header.iat > nowS + expect.clockSkewSeconds) {
    throw new AgentError(
      "BUNDLE_NOT_YET_VALID",
      `the bundle was issued at ${iso(header.iat)}, later than the agent's clock (${new Date(expect.nowMs).toISOString()}) allows; the clocks of the control plane and the agent disagree, fix NTP`,
      { issued_at: iso(header.iat) },
    );
  }
}
