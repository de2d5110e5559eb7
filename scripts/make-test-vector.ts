/**
 * Writes test/fixtures/bundle-vector-v1.json, the sealed-bundle test vector of docs/protocol.md:
 * a fixed X25519 private key, a bundle sealed to it, the time at which to open it, the header
 * and the exact plaintext. Run it with `npx tsx scripts/make-test-vector.ts`.
 *
 * HPKE base-mode sealing draws a fresh ephemeral key, so a bundle is normally random. For the
 * vector, the ephemeral key pair is derived (RFC 9180 DeriveKeyPair) from the fixed `ikm_e`
 * that the file also records, so the script writes the same bytes every time and another
 * implementation can check its sealing too, not only its opening. Nothing else differs from
 * `oci-cred-agent seal` (src/crypto/sealed-bundle.ts): same header, aad, info and envelope.
 */
import { createHash, createPrivateKey } from "node:crypto";
import { writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  BUNDLE_FORMAT_VERSION,
  BUNDLE_SUITE,
  BUNDLE_TYPE,
  HPKE_INFO,
  encodeHeader,
  serializeEnvelope,
  type BundleHeader,
} from "../src/core/bundle-envelope.js";
import { kidOf, publicKeyDoc, publicKeyOfPem } from "../src/crypto/agent-key.js";
import { suite } from "../src/crypto/hpke-suite.js";

export const VECTOR_PATH = fileURLToPath(new URL("../test/fixtures/bundle-vector-v1.json", import.meta.url));

/** PKCS#8 DER prefix of an X25519 private key (RFC 8410): the 32 raw bytes follow. */
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

function seed(label: string): Buffer {
  return createHash("sha256").update(`oci-cred-agent test vector v1: ${label}`).digest();
}

export function privateKeyPemFromRaw(raw: Uint8Array): string {
  const der = Buffer.concat([X25519_PKCS8_PREFIX, raw]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" })
    .export({ type: "pkcs8", format: "pem" })
    .toString();
}

export interface BundleVector {
  readonly description: string;
  readonly hpke: {
    readonly mode: "base";
    readonly kem_id: number;
    readonly kdf_id: number;
    readonly aead_id: number;
    readonly info: string;
  };
  readonly private_key_pem: string;
  readonly public_key: { readonly kid: string; readonly public_key: string };
  readonly agent_id: string;
  readonly run_id: string;
  /** Unix seconds at which to open the bundle. */
  readonly now: number;
  readonly max_lifetime_seconds: number;
  readonly clock_skew_seconds: number;
  readonly header: BundleHeader;
  readonly bundle: string;
  readonly plaintext: string;
  readonly plaintext_sha256: string;
  /** Hex input keying material of the ephemeral key (RFC 9180 DeriveKeyPair), to reproduce the seal. */
  readonly ikm_e: string;
}

export async function makeVector(): Promise<BundleVector> {
  const privateKeyPem = privateKeyPemFromRaw(seed("recipient private key"));
  const publicKey = publicKeyOfPem(privateKeyPem, "the vector key");
  const ikmE = seed("ephemeral key material");
  const iat = Date.UTC(2026, 10, 22, 10, 0, 0) / 1000;
  const header: BundleHeader = {
    typ: BUNDLE_TYPE,
    v: BUNDLE_FORMAT_VERSION,
    suite: BUNDLE_SUITE,
    kid: kidOf(publicKey),
    agent_id: "agent-1",
    run_id: "run-42",
    bundle_id: "test-vector-bundle-0001",
    iat,
    exp: iat + 600,
  };
  const plaintext = JSON.stringify({
    version: 1,
    registries: [
      {
        id: "int-7f3a",
        name: "GHCR prod",
        url: "https://ghcr.io",
        username: "octocat",
        password: "ghp_not-a-real-token:with:colons-é-🔑",
        updated_at: "2026-11-20T10:00:00Z",
      },
      {
        id: "int-0b12",
        name: "Docker Hub",
        url: "https://index.docker.io/v1/",
        username: "hubuser",
        password: 'dckr_pat_"quoted"\\',
      },
    ],
  });
  const plaintextBytes = new TextEncoder().encode(plaintext);

  const protectedB64 = encodeHeader(header);
  const recipientPublicKey = await suite.kem.deserializePublicKey(publicKey);
  const sender = await suite.createSenderContext({
    recipientPublicKey,
    info: new TextEncoder().encode(HPKE_INFO),
    ekm: ikmE,
  });
  const ciphertext = await sender.seal(plaintextBytes, new TextEncoder().encode(protectedB64));
  const bundle = serializeEnvelope(protectedB64, new Uint8Array(sender.enc), new Uint8Array(ciphertext));

  return {
    description:
      "oci-cred-agent sealed bundle, format version 1 (docs/protocol.md). Open `bundle` with `private_key_pem` as agent `agent_id` for run `run_id` at Unix time `now`; the result must be `header` and exactly the UTF-8 bytes of `plaintext` (SHA-256 `plaintext_sha256`). The ephemeral key was derived from `ikm_e` (RFC 9180 DeriveKeyPair), so sealing `plaintext` under `header` with it gives `bundle` byte for byte.",
    hpke: { mode: "base", kem_id: 0x0020, kdf_id: 0x0001, aead_id: 0x0002, info: HPKE_INFO },
    private_key_pem: privateKeyPem,
    public_key: publicKeyDoc(publicKey),
    agent_id: header.agent_id,
    run_id: header.run_id,
    now: iat + 60,
    max_lifetime_seconds: 3600,
    clock_skew_seconds: 120,
    header,
    bundle,
    plaintext,
    plaintext_sha256: createHash("sha256").update(plaintextBytes).digest("hex"),
    ikm_e: ikmE.toString("hex"),
  };
}

export function renderVector(vector: BundleVector): string {
  return `${JSON.stringify(vector, null, 2)}\n`;
}

async function main(): Promise<void> {
  writeFileSync(VECTOR_PATH, renderVector(await makeVector()));
  process.stdout.write(`wrote ${VECTOR_PATH}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
