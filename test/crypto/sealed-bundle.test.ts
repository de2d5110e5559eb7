import { beforeAll, describe, expect, it } from "vitest";
import { BUNDLE_SUITE, encodeHeader, serializeEnvelope, type BundleHeader } from "../../src/core/bundle-envelope.js";
import { type AgentError, type ErrorCode, isAgentError } from "../../src/core/errors.js";
import { ReplayCache } from "../../src/core/replay-cache.js";
import {
  generatePrivateKeyPem,
  parsePrivateKeyPem,
  type AgentPrivateKey,
  type RecipientPublicKey,
} from "../../src/crypto/agent-key.js";
import {
  openBundle,
  openChallenge,
  sealBundle,
  sealChallenge,
  type OpenOptions,
} from "../../src/crypto/sealed-bundle.js";

const CANARY = 'CANARY-pw-4b1d:"é';
const PLAINTEXT = JSON.stringify({
  version: 1,
  registries: [{ id: "int-1", url: "https://ghcr.io", username: "octocat", password: CANARY }],
});
const NOW = Date.UTC(2026, 10, 22, 10, 0, 0);
const NOW_S = NOW / 1000;

let key: AgentPrivateKey;
let other: AgentPrivateKey;
let recipient: RecipientPublicKey;

beforeAll(async () => {
  key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
  other = await parsePrivateKeyPem(generatePrivateKeyPem(), "other key");
  recipient = { kid: key.kid, publicKey: key.publicKey };
});

function opts(overrides: Partial<OpenOptions> = {}): OpenOptions {
  return {
    keys: new Map([[key.kid, key]]),
    agentId: "agent-1",
    runId: "run-42",
    nowMs: NOW,
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 120,
    ...overrides,
  };
}

async function seal(
  overrides: {
    agentId?: string;
    runId?: string;
    issuedAtMs?: number;
    ttlSeconds?: number;
    bundleId?: string;
    to?: RecipientPublicKey;
    plaintext?: string;
  } = {},
): Promise<string> {
  return sealBundle({
    recipient: overrides.to ?? recipient,
    agentId: overrides.agentId ?? "agent-1",
    runId: overrides.runId ?? "run-42",
    plaintext: new TextEncoder().encode(overrides.plaintext ?? PLAINTEXT),
    issuedAtMs: overrides.issuedAtMs ?? NOW,
    ttlSeconds: overrides.ttlSeconds ?? 600,
    ...(overrides.bundleId === undefined ? {} : { bundleId: overrides.bundleId }),
  });
}

interface Parts {
  protected: string;
  enc: string;
  ciphertext: string;
}

function parts(bundle: string): Parts {
  return JSON.parse(bundle) as Parts;
}

function headerOf(bundle: string): BundleHeader {
  return JSON.parse(Buffer.from(parts(bundle).protected, "base64url").toString("utf8")) as BundleHeader;
}

/** Re-encodes the envelope with a modified header (not re-sealed: the AEAD binds the old one). */
function withHeader(bundle: string, change: (h: Record<string, unknown>) => Record<string, unknown>): string {
  const p = parts(bundle);
  const header = change({ ...headerOf(bundle) });
  const protectedB64 = Buffer.from(JSON.stringify(header), "utf8").toString("base64url");
  return JSON.stringify({ protected: protectedB64, enc: p.enc, ciphertext: p.ciphertext });
}

function withBytes(bundle: string, field: "enc" | "ciphertext", change: (b: Buffer) => void): string {
  const p = parts(bundle);
  const bytes = Buffer.from(p[field], "base64url");
  change(bytes);
  return JSON.stringify({ ...p, [field]: bytes.toString("base64url") });
}

async function refusal(bundle: string | Uint8Array, o: OpenOptions = opts()): Promise<AgentError> {
  const bytes = typeof bundle === "string" ? new TextEncoder().encode(bundle) : bundle;
  try {
    await openBundle(bytes, o);
  } catch (error) {
    if (!isAgentError(error)) throw error;
    // No refusal ever carries the plaintext.
    expect(error.message).not.toContain("CANARY");
    expect(JSON.stringify(error.details)).not.toContain("CANARY");
    expect(String(error.stack)).not.toContain("CANARY");
    return error;
  }
  throw new Error("the bundle opened, but a refusal was expected");
}

async function open(bundle: string, o: OpenOptions = opts()): Promise<string> {
  const opened = await openBundle(new TextEncoder().encode(bundle), o);
  return new TextDecoder().decode(opened.plaintext);
}

describe("seal and open", () => {
  it("round-trips the plaintext byte for byte and reports the header", async () => {
    const bundle = await seal({ bundleId: "bundle-0123456789abcdef" });
    const opened = await openBundle(new TextEncoder().encode(bundle), opts());
    expect(new TextDecoder().decode(opened.plaintext)).toBe(PLAINTEXT);
    expect(opened.header).toEqual({
      typ: "oci-cred-agent/bundle",
      v: 1,
      suite: "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM",
      kid: key.kid,
      agent_id: "agent-1",
      run_id: "run-42",
      bundle_id: "bundle-0123456789abcdef",
      iat: NOW_S,
      exp: NOW_S + 600,
    });
  });

  it("writes the canonical envelope: three fields in order, no whitespace, no plaintext", async () => {
    const bundle = await seal();
    expect(bundle).toMatch(
      /^\{"protected":"[A-Za-z0-9_-]+","enc":"[A-Za-z0-9_-]{43}","ciphertext":"[A-Za-z0-9_-]+"\}$/,
    );
    expect(bundle).not.toContain("CANARY");
    expect(Buffer.from(parts(bundle).enc, "base64url")).toHaveLength(32);
    // AES-256-GCM: ciphertext = plaintext length + 16-byte tag.
    expect(Buffer.from(parts(bundle).ciphertext, "base64url")).toHaveLength(Buffer.byteLength(PLAINTEXT) + 16);
  });

  it("is randomised: two seals differ, random bundle ids are at least 16 characters", async () => {
    const a = await seal();
    const b = await seal();
    expect(parts(a).enc).not.toBe(parts(b).enc);
    expect(headerOf(a).bundle_id).not.toBe(headerOf(b).bundle_id);
    expect(headerOf(a).bundle_id.length).toBeGreaterThanOrEqual(16);
  });

  it("opens with one trailing newline", async () => {
    expect(await open(`${await seal()}\n`)).toBe(PLAINTEXT);
  });

  it("opens with any of several keys (rotation) by kid", async () => {
    const bundle = await seal({ to: { kid: other.kid, publicKey: other.publicKey } });
    expect(
      await open(
        bundle,
        opts({
          keys: new Map([
            [key.kid, key],
            [other.kid, other],
          ]),
        }),
      ),
    ).toBe(PLAINTEXT);
  });

  it("floors iat to seconds and keeps ttl at least 1 s", async () => {
    const h = headerOf(await seal({ issuedAtMs: NOW + 999, ttlSeconds: 0.2 }));
    expect(h.iat).toBe(NOW_S);
    expect(h.exp).toBe(NOW_S + 1);
  });

  it("opens an empty and a large plaintext", async () => {
    expect(await open(await seal({ plaintext: "" }))).toBe("");
    const big = "x".repeat(1_000_000);
    expect(await open(await seal({ plaintext: big }))).toBe(big);
  });
});

describe("open: every refusal has its own code", () => {
  it.each<[string, () => Promise<[string, OpenOptions?]>, ErrorCode, RegExp]>([
    [
      "another agent",
      async () => [await seal({ agentId: "agent-2" })],
      "BUNDLE_WRONG_AGENT",
      /agent "agent-2".*--agent-id/,
    ],
    ["another run", async () => [await seal({ runId: "run-43" })], "BUNDLE_WRONG_RUN", /run "run-43"/],
    [
      "expired",
      async () => [await seal({ issuedAtMs: NOW - 700_000, ttlSeconds: 600 })],
      "BUNDLE_EXPIRED",
      /expired.*NTP/,
    ],
    [
      "expired exactly at exp",
      async () => [await seal({ issuedAtMs: NOW - 600_000, ttlSeconds: 600 })],
      "BUNDLE_EXPIRED",
      /expired/,
    ],
    [
      "lifetime over the maximum",
      async () => [await seal({ ttlSeconds: 3601 })],
      "BUNDLE_LIFETIME_TOO_LONG",
      /3601 s.*at most 3600 s.*--ttl/,
    ],
    [
      "lifetime over a lowered maximum",
      async () => [await seal({ ttlSeconds: 600 }), opts({ maxLifetimeSeconds: 599 })],
      "BUNDLE_LIFETIME_TOO_LONG",
      /at most 599/,
    ],
    [
      "issued beyond the clock skew",
      async () => [await seal({ issuedAtMs: NOW + 121_000 })],
      "BUNDLE_NOT_YET_VALID",
      /NTP/,
    ],
    [
      "issued beyond a zero skew",
      async () => [await seal({ issuedAtMs: NOW + 1000 }), opts({ clockSkewSeconds: 0 })],
      "BUNDLE_NOT_YET_VALID",
      /issued/,
    ],
    [
      "an unknown key id",
      async () => [await seal({ to: { kid: other.kid, publicKey: other.publicKey } })],
      "BUNDLE_UNKNOWN_KEY",
      /re-register/,
    ],
    ["no key at all", async () => [await seal(), opts({ keys: new Map() })], "BUNDLE_UNKNOWN_KEY", /no key/],
    [
      "sealed to another key under this key's id",
      async () => [await seal({ to: { kid: key.kid, publicKey: other.publicKey } })],
      "BUNDLE_DECRYPT_FAILED",
      /failed authentication/,
    ],
    [
      "over --max-bundle-bytes",
      async () => {
        const b = await seal();
        return [b, opts({ maxBytes: b.length - 1 })];
      },
      "BUNDLE_TOO_LARGE",
      /limit of \d+.*--max-bundle-bytes/,
    ],
  ])("%s → %s", async (_name, make, code, message) => {
    const [bundle, o] = await make();
    const e = await refusal(bundle, o);
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });

  it("accepts the edges: lifetime = max, iat = now + skew, now = exp - 1 ms, size = limit", async () => {
    expect(await open(await seal({ ttlSeconds: 3600 }))).toBe(PLAINTEXT);
    expect(await open(await seal({ issuedAtMs: NOW + 120_000 }))).toBe(PLAINTEXT);
    const b = await seal({ issuedAtMs: NOW - 600_000, ttlSeconds: 600 });
    expect(await open(b, opts({ nowMs: NOW - 1 }))).toBe(PLAINTEXT);
    const c = await seal();
    expect(await open(c, opts({ maxBytes: c.length }))).toBe(PLAINTEXT);
  });

  it("refuses an envelope over the default 16 MiB before parsing it", async () => {
    const e = await refusal(new Uint8Array(16 * 1024 * 1024 + 1).fill(0x7b));
    expect(e.code).toBe("BUNDLE_TOO_LARGE");
    expect(e.details).toMatchObject({ size: 16 * 1024 * 1024 + 1, limit: 16 * 1024 * 1024 });
  });

  it("checks in the documented order", async () => {
    // wrong agent + wrong run + expired + unknown key → the agent check comes first
    const all = await seal({
      agentId: "x",
      runId: "y",
      issuedAtMs: NOW - 7_200_000,
      to: { kid: other.kid, publicKey: other.publicKey },
    });
    expect((await refusal(all)).code).toBe("BUNDLE_WRONG_AGENT");
    expect((await refusal(await seal({ runId: "y", issuedAtMs: NOW - 7_200_000 }))).code).toBe("BUNDLE_WRONG_RUN");
    // lifetime before expiry, expiry before issue time, issue time before key id
    expect((await refusal(await seal({ ttlSeconds: 7200, issuedAtMs: NOW - 8_000_000 }))).code).toBe(
      "BUNDLE_LIFETIME_TOO_LONG",
    );
    expect(
      (await refusal(await seal({ issuedAtMs: NOW - 700_000, to: { kid: other.kid, publicKey: other.publicKey } })))
        .code,
    ).toBe("BUNDLE_EXPIRED");
    expect(
      (await refusal(await seal({ issuedAtMs: NOW + 600_000, to: { kid: other.kid, publicKey: other.publicKey } })))
        .code,
    ).toBe("BUNDLE_NOT_YET_VALID");
    // version and suite before agent; size before everything
    const b = await seal({ agentId: "x" });
    expect((await refusal(withHeader(b, (h) => ({ ...h, v: 2 })))).code).toBe("BUNDLE_VERSION_UNSUPPORTED");
    expect((await refusal(withHeader(b, (h) => ({ ...h, suite: "X" })))).code).toBe("BUNDLE_SUITE_UNSUPPORTED");
    expect((await refusal("x".repeat(100), opts({ maxBytes: 10 }))).code).toBe("BUNDLE_TOO_LARGE");
  });
});

describe("open: tampering", () => {
  it.each<[string, (h: Record<string, unknown>) => Record<string, unknown>]>([
    ["a changed bundle_id", (h) => ({ ...h, bundle_id: `${String(h["bundle_id"])}X` })],
    ["an earlier exp", (h) => ({ ...h, exp: Number(h["exp"]) - 1 })],
    ["a later iat", (h) => ({ ...h, iat: Number(h["iat"]) + 1 })],
    ["the same fields in another order", (h) => Object.fromEntries(Object.entries(h).reverse())],
  ])("a protected header with %s fails authentication", async (_name, change) => {
    const e = await refusal(withHeader(await seal(), change));
    expect(e.code).toBe("BUNDLE_DECRYPT_FAILED");
  });

  it("a header redirected to another agent or run is refused by its binding check", async () => {
    const b = await seal({ agentId: "agent-2" });
    // Rewriting the clear header to this agent passes the check but not authentication.
    expect((await refusal(withHeader(b, (h) => ({ ...h, agent_id: "agent-1" })))).code).toBe("BUNDLE_DECRYPT_FAILED");
    const r = await seal({ runId: "run-other" });
    expect((await refusal(withHeader(r, (h) => ({ ...h, run_id: "run-42" })))).code).toBe("BUNDLE_DECRYPT_FAILED");
  });

  it("every single byte of enc and of the ciphertext (tag included) is authenticated", async () => {
    const bundle = await seal({ plaintext: '{"version":1,"registries":[]}' });
    const encLen = Buffer.from(parts(bundle).enc, "base64url").length;
    const ctLen = Buffer.from(parts(bundle).ciphertext, "base64url").length;
    const codes = new Set<string>();
    for (let i = 0; i < encLen; i++)
      codes.add(
        (
          await refusal(
            withBytes(bundle, "enc", (b) => {
              b[i] = (b[i] ?? 0) ^ 0x01;
            }),
          )
        ).code,
      );
    for (let i = 0; i < ctLen; i++)
      codes.add(
        (
          await refusal(
            withBytes(bundle, "ciphertext", (b) => {
              b[i] = (b[i] ?? 0) ^ 0x80;
            }),
          )
        ).code,
      );
    expect([...codes]).toEqual(["BUNDLE_DECRYPT_FAILED"]);
  });

  it.each<[string, (b: Buffer) => Buffer]>([
    ["a truncated tag", (b) => b.subarray(0, b.length - 1)],
    ["the tag removed", (b) => b.subarray(0, b.length - 16)],
    ["an appended byte", (b) => Buffer.concat([b, Buffer.from([0])])],
    ["an empty ciphertext", () => Buffer.alloc(0)],
  ])("a ciphertext with %s fails authentication", async (_name, change) => {
    const bundle = await seal();
    const p = parts(bundle);
    const ct = change(Buffer.from(p.ciphertext, "base64url"));
    expect((await refusal(JSON.stringify({ ...p, ciphertext: ct.toString("base64url") }))).code).toBe(
      "BUNDLE_DECRYPT_FAILED",
    );
  });

  it("a tampered bundle does not burn its bundle id in the replay cache", async () => {
    const cache = new ReplayCache();
    const bundle = await seal();
    const tampered = withBytes(bundle, "ciphertext", (b) => {
      b[0] = (b[0] ?? 0) ^ 1;
    });
    expect((await refusal(tampered, opts({ replayCache: cache }))).code).toBe("BUNDLE_DECRYPT_FAILED");
    expect(await open(bundle, opts({ replayCache: cache }))).toBe(PLAINTEXT);
  });
});

describe("open: malformed, unknown version, suite or type", () => {
  it.each<[string, (b: string) => string, ErrorCode]>([
    ["not JSON", () => "not json", "BUNDLE_MALFORMED"],
    ["empty", () => "", "BUNDLE_MALFORMED"],
    ["a JSON array", () => "[]", "BUNDLE_MALFORMED"],
    ["whitespace inside", (b) => b.replace('","enc"', '", "enc"'), "BUNDLE_MALFORMED"],
    ["pretty-printed", (b) => JSON.stringify(JSON.parse(b), null, 2), "BUNDLE_MALFORMED"],
    [
      "keys in another order",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ enc: p.enc, protected: p.protected, ciphertext: p.ciphertext });
      },
      "BUNDLE_MALFORMED",
    ],
    ["an extra field", (b) => `${b.slice(0, -1)},"x":"y"}`, "BUNDLE_MALFORMED"],
    [
      "a missing field",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ protected: p.protected, enc: p.enc });
      },
      "BUNDLE_MALFORMED",
    ],
    [
      "a number for a field",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ protected: p.protected, enc: 5, ciphertext: p.ciphertext });
      },
      "BUNDLE_MALFORMED",
    ],
    ["two trailing newlines", (b) => `${b}\n\n`, "BUNDLE_MALFORMED"],
    ["a trailing CRLF", (b) => `${b}\r\n`, "BUNDLE_MALFORMED"],
    ["a leading space", (b) => ` ${b}`, "BUNDLE_MALFORMED"],
    [
      "padded base64 in ciphertext",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ ...p, ciphertext: Buffer.from(p.ciphertext, "base64url").toString("base64") });
      },
      "BUNDLE_MALFORMED",
    ],
    [
      "a non-base64url character",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ ...p, enc: `${p.enc.slice(0, -1)}+` });
      },
      "BUNDLE_MALFORMED",
    ],
    [
      "a short enc",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ ...p, enc: Buffer.alloc(31).toString("base64url") });
      },
      "BUNDLE_MALFORMED",
    ],
    [
      "a protected header that is not JSON",
      (b) => {
        const p = parts(b);
        return JSON.stringify({ ...p, protected: Buffer.from("nope").toString("base64url") });
      },
      "BUNDLE_MALFORMED",
    ],
    ["an unknown typ", (b) => withHeader(b, (h) => ({ ...h, typ: "jwe" })), "BUNDLE_MALFORMED"],
    ["an extra header field", (b) => withHeader(b, (h) => ({ ...h, alg: "none" })), "BUNDLE_MALFORMED"],
    [
      "a missing header field",
      (b) =>
        withHeader(b, (h) => {
          const { bundle_id: _drop, ...rest } = h;
          return rest;
        }),
      "BUNDLE_MALFORMED",
    ],
    ["a short bundle_id", (b) => withHeader(b, (h) => ({ ...h, bundle_id: "short" })), "BUNDLE_MALFORMED"],
    ["a string iat", (b) => withHeader(b, (h) => ({ ...h, iat: String(h["iat"]) })), "BUNDLE_MALFORMED"],
    ["version 2", (b) => withHeader(b, (h) => ({ ...h, v: 2 })), "BUNDLE_VERSION_UNSUPPORTED"],
    ["version 0", (b) => withHeader(b, (h) => ({ ...h, v: 0 })), "BUNDLE_VERSION_UNSUPPORTED"],
    [
      "version 2 with an otherwise unknown header",
      () =>
        serializeEnvelope(
          Buffer.from('{"v":2,"future":true}').toString("base64url"),
          new Uint8Array(32),
          new Uint8Array(16),
        ),
      "BUNDLE_VERSION_UNSUPPORTED",
    ],
    [
      "another suite",
      (b) => withHeader(b, (h) => ({ ...h, suite: "DHKEM(P-256,HKDF-SHA256)/HKDF-SHA256/AES-128-GCM" })),
      "BUNDLE_SUITE_UNSUPPORTED",
    ],
    [
      "the suite in lower case",
      (b) => withHeader(b, (h) => ({ ...h, suite: BUNDLE_SUITE.toLowerCase() })),
      "BUNDLE_SUITE_UNSUPPORTED",
    ],
  ])("%s → %s", async (_name, change, code) => {
    expect((await refusal(change(await seal()))).code).toBe(code);
  });

  it("refuses a non-canonical base64url spelling of the same bytes (unused low bits set)", async () => {
    const bundle = await seal();
    const p = parts(bundle);
    // 32 bytes are 43 characters; the last one carries 2 unused bits, which must be zero.
    const last = p.enc.slice(-1);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const twin = alphabet[alphabet.indexOf(last) ^ 1] ?? "A";
    const altered = `${p.enc.slice(0, -1)}${twin}`;
    expect(Buffer.from(altered, "base64url").equals(Buffer.from(p.enc, "base64url"))).toBe(true);
    const e = await refusal(JSON.stringify({ ...p, enc: altered }));
    expect(e.code).toBe("BUNDLE_MALFORMED");
    expect(e.message).toContain("canonical");
  });

  it("refuses bytes that are not UTF-8", async () => {
    expect((await refusal(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))).code).toBe("BUNDLE_MALFORMED");
  });

  it("encodeHeader is the base64url of the header JSON (the aad)", async () => {
    const bundle = await seal();
    expect(encodeHeader(headerOf(bundle))).toBe(parts(bundle).protected);
  });
});

describe("open: replay", () => {
  it("refuses the same bundle twice in one ReplayCache, and only then", async () => {
    const cache = new ReplayCache();
    const bundle = await seal();
    expect(await open(bundle, opts({ replayCache: cache }))).toBe(PLAINTEXT);
    const e = await refusal(bundle, opts({ replayCache: cache }));
    expect(e.code).toBe("BUNDLE_REPLAYED");
    expect(e.message).toContain(headerOf(bundle).bundle_id);
    // With a trailing newline it is still the same bundle.
    expect((await refusal(`${bundle}\n`, opts({ replayCache: cache, nowMs: NOW + 1000 }))).code).toBe(
      "BUNDLE_REPLAYED",
    );
    // Another process (another cache) opens it; another bundle opens in the same cache.
    expect(await open(bundle, opts({ replayCache: new ReplayCache() }))).toBe(PLAINTEXT);
    expect(await open(await seal(), opts({ replayCache: cache }))).toBe(PLAINTEXT);
  });

  it("a re-sealed bundle reusing a bundle id is refused as a replay", async () => {
    const cache = new ReplayCache();
    await open(await seal({ bundleId: "fixed-bundle-id-0001" }), opts({ replayCache: cache }));
    expect((await refusal(await seal({ bundleId: "fixed-bundle-id-0001" }), opts({ replayCache: cache }))).code).toBe(
      "BUNDLE_REPLAYED",
    );
  });
});

describe("ReplayCache", () => {
  it("holds an id until its expiry, then lets it go", () => {
    const cache = new ReplayCache();
    cache.record("a", 2000, 1000);
    cache.record("b", 5000, 1000);
    expect(cache.has("a", 1999)).toBe(true);
    expect(cache.has("a", 2000)).toBe(false);
    expect(cache.has("b", 4999)).toBe(true);
    expect(cache.has("c", 1000)).toBe(false);
  });
});

describe("enrollment challenges", () => {
  const challenge = (to: RecipientPublicKey = recipient): Promise<string> =>
    sealChallenge({
      recipient: to,
      agentId: "agent-1",
      challengeId: "challenge-7",
      secret: "the-secret",
      issuedAtMs: NOW,
      ttlSeconds: 300,
    });
  // Keys exist only once beforeAll ran: `keys` is given at each call.
  const challengeOpts = {
    agentId: "agent-1",
    challengeId: "challenge-7",
    nowMs: NOW,
    clockSkewSeconds: 120,
  };

  it("opens to its secret with the recipient's key", async () => {
    expect(await openChallenge(await challenge(), { ...challengeOpts, keys: new Map([[key.kid, key]]) })).toBe(
      "the-secret",
    );
  });

  it("cannot be opened without the private key, nor for another agent", async () => {
    const toOther = await challenge({ kid: other.kid, publicKey: other.publicKey });
    await expect(openChallenge(toOther, { ...challengeOpts, keys: new Map([[key.kid, key]]) })).rejects.toMatchObject({
      code: "BUNDLE_UNKNOWN_KEY",
    });
    await expect(
      openChallenge(await challenge(), { ...challengeOpts, keys: new Map([[key.kid, key]]), agentId: "agent-2" }),
    ).rejects.toMatchObject({ code: "BUNDLE_WRONG_AGENT" });
  });

  it("is never taken for a bundle, nor a bundle for a challenge", async () => {
    const sealed = await challenge();
    await expect(openBundle(new TextEncoder().encode(sealed), opts({ runId: "challenge-7" }))).rejects.toMatchObject({
      code: "BUNDLE_MALFORMED",
    });
    const bundle = await seal({ runId: "challenge-7" });
    await expect(openChallenge(bundle, { ...challengeOpts, keys: new Map([[key.kid, key]]) })).rejects.toMatchObject({
      code: "BUNDLE_MALFORMED",
    });
  });
});
