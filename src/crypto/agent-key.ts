/**
 * The agent's X25519 key: PKCS#8 PEM on disk (what `openssl genpkey -algorithm X25519` writes
 * too), a key id derived from the public key, and the public key document that `keygen` and
 * `pubkey` print. Computation only; reading and writing key files is src/fs/key-file.ts.
 */
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject, type webcrypto } from "node:crypto";
import { AgentError } from "../core/errors.js";
import { b64urlDecodeStrict } from "../core/bundle-envelope.js";
import { suite } from "./hpke-suite.js";

export interface PublicKeyDoc {
  readonly kid: string;
  readonly public_key: string;
}

export interface AgentPrivateKey {
  readonly kid: string;
  readonly publicKey: Uint8Array;
  readonly privateKey: webcrypto.CryptoKey;
}

export interface RecipientPublicKey {
  readonly kid: string;
  readonly publicKey: Uint8Array;
}

/**
 * RFC 7638 JWK thumbprint of the X25519 public key (SHA-256, base64url): a standard key id any
 * implementation can compute from the public key alone.
 */
export function kidOf(publicKey: Uint8Array): string {
  const x = Buffer.from(publicKey).toString("base64url");
  const canonical = `{"crv":"X25519","kty":"OKP","x":"${x}"}`;
  return createHash("sha256").update(canonical).digest("base64url");
}

export function publicKeyDoc(publicKey: Uint8Array): PublicKeyDoc {
  return { kid: kidOf(publicKey), public_key: Buffer.from(publicKey).toString("base64url") };
}

export function generatePrivateKeyPem(): string {
  const { privateKey } = generateKeyPairSync("x25519");
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

function rawParts(key: KeyObject): { d: Uint8Array; x: Uint8Array } {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "X25519" || typeof jwk.d !== "string" || typeof jwk.x !== "string") {
    throw new Error("not an X25519 private key");
  }
  return { d: new Uint8Array(Buffer.from(jwk.d, "base64url")), x: new Uint8Array(Buffer.from(jwk.x, "base64url")) };
}

/** Parses a PEM private key; `source` names where it came from, for the error message. */
export async function parsePrivateKeyPem(pem: string, source: string): Promise<AgentPrivateKey> {
  let parts: { d: Uint8Array; x: Uint8Array };
  try {
    parts = rawParts(createPrivateKey({ key: pem, format: "pem" }));
  } catch {
    throw new AgentError(
      "KEY_FILE_INVALID",
      `${source} does not hold an X25519 private key in PKCS#8 PEM form; create one with \`oci-cred-agent keygen --key-file PATH\` (or \`openssl genpkey -algorithm X25519\`)`,
      { source },
    );
  }
  const privateKey = await suite.kem.deserializePrivateKey(parts.d);
  parts.d.fill(0);
  return { kid: kidOf(parts.x), publicKey: parts.x, privateKey };
}

export function publicKeyOfPem(pem: string, source: string): Uint8Array {
  try {
    return rawParts(createPrivateKey({ key: pem, format: "pem" })).x;
  } catch {
    throw new AgentError("KEY_FILE_INVALID", `${source} does not hold an X25519 private key in PKCS#8 PEM form`, {
      source,
    });
  }
}

/** Parses what `pubkey` prints: {"kid": ..., "public_key": ...}, checking that the kid matches. */
export function parsePublicKeyDoc(text: string, source: string): RecipientPublicKey {
  const fail = (why: string): AgentError =>
    new AgentError(
      "PUBLIC_KEY_INVALID",
      `${source} is not a public key document (${why}); pass the JSON that \`oci-cred-agent pubkey --key-file PATH\` prints`,
      { source },
    );
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw fail("not JSON");
  }
  const { kid, public_key: publicKeyText } = (doc ?? {}) as Record<string, unknown>;
  if (typeof kid !== "string" || typeof publicKeyText !== "string")
    throw fail('expected string fields "kid" and "public_key"');
  let publicKey: Uint8Array;
  try {
    publicKey = b64urlDecodeStrict(publicKeyText, "public key");
  } catch {
    throw fail("public_key is not base64url");
  }
  if (publicKey.byteLength !== 32) throw fail(`public_key is ${publicKey.byteLength} bytes, an X25519 key has 32`);
  if (kidOf(publicKey) !== kid) throw fail("kid does not match public_key");
  return { kid, publicKey };
}
