/**
 * The sealed-bundle test vector of docs/protocol.md: open it with the library at its `now` and
 * compare bytes, as another implementation would.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BUNDLE_SUITE, HPKE_INFO } from "../../src/core/bundle-envelope.js";
import { AgentError } from "../../src/core/errors.js";
import { ReplayCache } from "../../src/core/replay-cache.js";
import { kidOf, parsePrivateKeyPem, parsePublicKeyDoc, publicKeyOfPem } from "../../src/crypto/agent-key.js";
import { openBundle, type OpenOptions } from "../../src/crypto/sealed-bundle.js";
import { VECTOR_PATH, makeVector, renderVector, type BundleVector } from "../../scripts/make-test-vector.js";

const text = readFileSync(VECTOR_PATH, "utf8");
const vector = JSON.parse(text) as BundleVector;

async function options(overrides: Partial<OpenOptions> = {}): Promise<OpenOptions> {
  const key = await parsePrivateKeyPem(vector.private_key_pem, "the vector key");
  return {
    keys: new Map([[key.kid, key]]),
    agentId: vector.agent_id,
    runId: vector.run_id,
    nowMs: vector.now * 1000,
    maxLifetimeSeconds: vector.max_lifetime_seconds,
    clockSkewSeconds: vector.clock_skew_seconds,
    ...overrides,
  };
}

function bundleBytes(): Uint8Array {
  return new TextEncoder().encode(vector.bundle);
}

describe("test/fixtures/bundle-vector-v1.json", () => {
  it("holds what docs/protocol.md says: key, bundle, now, header, plaintext", () => {
    expect(Object.keys(vector).sort()).toEqual(
      [
        "agent_id",
        "bundle",
        "clock_skew_seconds",
        "description",
        "header",
        "hpke",
        "ikm_e",
        "max_lifetime_seconds",
        "now",
        "plaintext",
        "plaintext_sha256",
        "private_key_pem",
        "public_key",
        "run_id",
      ].sort(),
    );
    expect(vector.hpke).toEqual({
      mode: "base",
      kem_id: 0x20,
      kdf_id: 0x01,
      aead_id: 0x02,
      info: "oci-cred-agent bundle v1",
    });
    expect(vector.hpke.info).toBe(HPKE_INFO);
    expect(vector.private_key_pem).toMatch(
      /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/,
    );
    expect(vector.header.iat).toBeLessThanOrEqual(vector.now);
    expect(vector.now).toBeLessThan(vector.header.exp);
  });

  it("opens at its `now` to exactly the plaintext bytes and the header", async () => {
    const opened = await openBundle(bundleBytes(), await options());
    const expected = new TextEncoder().encode(vector.plaintext);
    expect(Buffer.from(opened.plaintext).equals(Buffer.from(expected))).toBe(true);
    expect(createHash("sha256").update(opened.plaintext).digest("hex")).toBe(vector.plaintext_sha256);
    expect(opened.header).toEqual(vector.header);
    expect(opened.header).toMatchObject({
      typ: "oci-cred-agent/bundle",
      v: 1,
      suite: BUNDLE_SUITE,
      agent_id: vector.agent_id,
      run_id: vector.run_id,
    });
  });

  it("its protected header decodes to the header field, and aad is that text", () => {
    const envelope = JSON.parse(vector.bundle) as { protected: string; enc: string; ciphertext: string };
    expect(Object.keys(envelope)).toEqual(["protected", "enc", "ciphertext"]);
    expect(JSON.parse(Buffer.from(envelope.protected, "base64url").toString("utf8"))).toEqual(vector.header);
    expect(Buffer.from(envelope.enc, "base64url")).toHaveLength(32);
  });

  it("its kid is the RFC 7638 thumbprint of the public key, which the private key derives", () => {
    const publicKey = publicKeyOfPem(vector.private_key_pem, "the vector key");
    expect(Buffer.from(publicKey).toString("base64url")).toBe(vector.public_key.public_key);
    const thumbprintInput = `{"crv":"X25519","kty":"OKP","x":"${vector.public_key.public_key}"}`;
    expect(createHash("sha256").update(thumbprintInput).digest("base64url")).toBe(vector.public_key.kid);
    expect(kidOf(publicKey)).toBe(vector.public_key.kid);
    expect(vector.header.kid).toBe(vector.public_key.kid);
    expect(parsePublicKeyDoc(JSON.stringify(vector.public_key), "vector")).toEqual({
      kid: vector.public_key.kid,
      publicKey,
    });
  });

  it("is what scripts/make-test-vector.ts makes, byte for byte", async () => {
    expect(renderVector(await makeVector())).toBe(text);
  });

  it.each<[string, Partial<OpenOptions>, string]>([
    ["at exp", { nowMs: vector.header.exp * 1000 }, "BUNDLE_EXPIRED"],
    ["as another agent", { agentId: "agent-2" }, "BUNDLE_WRONG_AGENT"],
    ["for another run", { runId: "run-43" }, "BUNDLE_WRONG_RUN"],
    ["long before iat", { nowMs: 1 }, "BUNDLE_NOT_YET_VALID"],
    ["with a shorter maximum lifetime", { maxLifetimeSeconds: 599 }, "BUNDLE_LIFETIME_TOO_LONG"],
  ])("is refused %s", async (_name, overrides, code) => {
    const o = await options(overrides);
    let caught: unknown;
    try {
      await openBundle(bundleBytes(), o);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(AgentError);
    expect((caught as AgentError).code).toBe(code);
  });

  it("opens once per replay cache", async () => {
    const cache = new ReplayCache();
    await openBundle(bundleBytes(), await options({ replayCache: cache }));
    await expect(openBundle(bundleBytes(), await options({ replayCache: cache }))).rejects.toMatchObject({
      code: "BUNDLE_REPLAYED",
    });
  });
});
