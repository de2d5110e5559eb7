/**
 * Seals and opens credential bundles (docs/protocol.md, "Sealed bundle"). Computation only: the
 * clock reading, keys, replay cache and bytes are all passed in.
 *
 * Opening runs every cheap check before any decryption, in a fixed order, so each refusal has
 * its own code: size, form, version, suite, agent, run, lifetime, expiry, issue time, key id,
 * replay, then authentication of header and ciphertext together.
 */
import { randomBytes } from "node:crypto";
import { AgentError } from "../core/errors.js";
import {
  BUNDLE_FORMAT_VERSION,
  BUNDLE_SUITE,
  BUNDLE_TYPE,
  CHALLENGE_HPKE_INFO,
  CHALLENGE_TYPE,
  DEFAULT_MAX_ENVELOPE_BYTES,
  HPKE_INFO,
  checkHeader,
  decodeEnvelope,
  encodeHeader,
  serializeEnvelope,
  type BundleHeader,
} from "../core/bundle-envelope.js";
import type { ReplayCache } from "../core/replay-cache.js";
import type { AgentPrivateKey, RecipientPublicKey } from "./agent-key.js";
import { suite } from "./hpke-suite.js";

const INFO = new TextEncoder().encode(HPKE_INFO);
const CHALLENGE_INFO = new TextEncoder().encode(CHALLENGE_HPKE_INFO);
const ASCII = new TextEncoder();

export interface SealRequest {
  readonly recipient: RecipientPublicKey;
  readonly agentId: string;
  readonly runId: string;
  readonly plaintext: Uint8Array;
  readonly issuedAtMs: number;
  readonly ttlSeconds: number;
  /** Random when omitted; fixed only for reproducible test vectors. */
  readonly bundleId?: string;
}

export async function sealBundle(request: SealRequest): Promise<string> {
  return sealEnvelope(BUNDLE_TYPE, INFO, request);
}

async function sealEnvelope(typ: BundleHeader["typ"], info: Uint8Array, request: SealRequest): Promise<string> {
  const iat = Math.floor(request.issuedAtMs / 1000);
  const header: BundleHeader = {
    typ,
    v: BUNDLE_FORMAT_VERSION,
    suite: BUNDLE_SUITE,
    kid: request.recipient.kid,
    agent_id: request.agentId,
    run_id: request.runId,
    bundle_id: request.bundleId ?? randomBytes(16).toString("base64url"),
    iat,
    exp: iat + Math.max(1, Math.round(request.ttlSeconds)),
  };
  const protectedB64 = encodeHeader(header);
  const recipientPublicKey = await suite.kem.deserializePublicKey(request.recipient.publicKey);
  const sender = await suite.createSenderContext({ recipientPublicKey, info });
  const ciphertext = await sender.seal(request.plaintext, ASCII.encode(protectedB64));
  return serializeEnvelope(protectedB64, new Uint8Array(sender.enc), new Uint8Array(ciphertext));
}

export interface OpenOptions {
  /** The agent's keys by kid; several while a rotation is under way. */
  readonly keys: ReadonlyMap<string, AgentPrivateKey>;
  readonly agentId: string;
  readonly runId: string;
  readonly nowMs: number;
  readonly maxLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxBytes?: number;
  /** Omitted only by one-shot commands, whose process opens one bundle and exits. */
  readonly replayCache?: ReplayCache;
}

export interface OpenedBundle {
  readonly header: BundleHeader;
  /** The decrypted export. The caller zeroes it when done. */
  readonly plaintext: Uint8Array;
}

export async function openBundle(bytes: Uint8Array, options: OpenOptions): Promise<OpenedBundle> {
  return openEnvelope(bytes, options, BUNDLE_TYPE, INFO);
}

async function openEnvelope(
  bytes: Uint8Array,
  options: OpenOptions,
  typ: BundleHeader["typ"],
  info: Uint8Array,
): Promise<OpenedBundle> {
  const envelope = decodeEnvelope(bytes, options.maxBytes ?? DEFAULT_MAX_ENVELOPE_BYTES);
  const { header } = envelope;
  if (header.typ !== typ) {
    throw new AgentError(
      "BUNDLE_MALFORMED",
      `the envelope is a ${JSON.stringify(header.typ)}, not a ${JSON.stringify(typ)}; a challenge never stands for a bundle nor a bundle for a challenge`,
    );
  }
  checkHeader(header, options);
  const key = options.keys.get(header.kid);
  if (key === undefined) {
    throw new AgentError(
      "BUNDLE_UNKNOWN_KEY",
      `the bundle was sealed to key ${header.kid}, which this agent does not hold (it holds ${[...options.keys.keys()].join(", ") || "no key"}); the key was removed or rotated out before the run was sealed, or the control plane has a stale public key: re-register the agent`,
      { kid: header.kid, known_kids: [...options.keys.keys()] },
    );
  }
  if (options.replayCache?.has(header.bundle_id, options.nowMs)) {
    throw new AgentError(
      "BUNDLE_REPLAYED",
      `bundle ${header.bundle_id} was opened before by this agent; a bundle opens once. Someone re-sent an old bundle: have the control plane seal a new one`,
      { bundle_id: header.bundle_id },
    );
  }
  let plaintext: ArrayBuffer;
  try {
    const recipient = await suite.createRecipientContext({
      recipientKey: key.privateKey,
      enc: envelope.enc,
      info,
    });
    plaintext = await recipient.open(envelope.ciphertext, ASCII.encode(envelope.protectedB64));
  } catch {
    throw new AgentError(
      "BUNDLE_DECRYPT_FAILED",
      `bundle ${header.bundle_id} failed authentication: its header or ciphertext was altered, or it was sealed to another key with the same id; ask the control plane for a fresh bundle`,
      { bundle_id: header.bundle_id, kid: header.kid },
    );
  }
  options.replayCache?.record(header.bundle_id, header.exp * 1000, options.nowMs);
  return { header, plaintext: new Uint8Array(plaintext) };
}

/** A challenge: sealed to one of the agent's keys; only its holder can read `secret` and answer. */
export interface ChallengeSealRequest {
  readonly recipient: RecipientPublicKey;
  readonly agentId: string;
  /** Travels as the header's `run_id`. */
  readonly challengeId: string;
  readonly secret: string;
  readonly issuedAtMs: number;
  readonly ttlSeconds: number;
}

/**
 * Seals an enrollment or key-change challenge (docs/protocol.md, "Enrollment"): the bundle's
 * envelope with `typ` "oci-cred-agent/challenge" and its own HPKE `info`, so neither can be
 * taken for the other.
 */
export async function sealChallenge(request: ChallengeSealRequest): Promise<string> {
  return sealEnvelope(CHALLENGE_TYPE, CHALLENGE_INFO, {
    recipient: request.recipient,
    agentId: request.agentId,
    runId: request.challengeId,
    plaintext: new TextEncoder().encode(request.secret),
    issuedAtMs: request.issuedAtMs,
    ttlSeconds: request.ttlSeconds,
  });
}

export interface ChallengeOpenOptions {
  readonly keys: ReadonlyMap<string, AgentPrivateKey>;
  readonly agentId: string;
  readonly challengeId: string;
  readonly nowMs: number;
  readonly clockSkewSeconds: number;
}

const MAX_CHALLENGE_LIFETIME_SECONDS = 15 * 60;
const MAX_CHALLENGE_BYTES = 64 * 1024;

/** Opens a challenge sealed to one of `keys`; returns the secret to send back as the answer. */
export async function openChallenge(text: string, options: ChallengeOpenOptions): Promise<string> {
  const opened = await openEnvelope(
    new TextEncoder().encode(text),
    {
      keys: options.keys,
      agentId: options.agentId,
      runId: options.challengeId,
      nowMs: options.nowMs,
      maxLifetimeSeconds: MAX_CHALLENGE_LIFETIME_SECONDS,
      clockSkewSeconds: options.clockSkewSeconds,
      maxBytes: MAX_CHALLENGE_BYTES,
    },
    CHALLENGE_TYPE,
    CHALLENGE_INFO,
  );
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(opened.plaintext);
  } finally {
    opened.plaintext.fill(0);
  }
}
