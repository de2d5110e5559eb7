/**
 * Hostile bundles: property-based tests (fast-check) that mutate every byte and every field of
 * valid sealed bundles and open them with the agent's own open function
 * (src/crypto/sealed-bundle.ts `openBundle`, with a replay cache as the daemon uses it).
 *
 * Asserted for every case: it is refused (never accepted), the refusal is an AgentError whose
 * code is one of src/core/errors.ts, and the time per case stays bounded (the maximum is
 * measured and recorded). RELIABILITY_CASES sets the number of generated cases (CI default
 * 3,000; the full run 100,000+).
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  b64urlEncode,
  BUNDLE_SUITE,
  BUNDLE_TYPE,
  encodeHeader,
  serializeEnvelope,
  type BundleHeader,
} from "../../src/core/bundle-envelope.js";
import { ERROR_CODES, isAgentError } from "../../src/core/errors.js";
import { ReplayCache } from "../../src/core/replay-cache.js";
import { generatePrivateKeyPem, parsePrivateKeyPem, type AgentPrivateKey } from "../../src/crypto/agent-key.js";
import { openBundle, sealBundle, type OpenOptions } from "../../src/crypto/sealed-bundle.js";
import { recordFigures, reliabilityCases, Tally } from "../support/reliability-figures.js";

const AGENT_ID = "agent-fuzz";
const RUN_ID = "run-fuzz";
const ISSUED_AT_MS = Date.UTC(2026, 10, 24, 12, 0, 0);
const NOW_MS = ISSUED_AT_MS + 10_000;
const CASES = reliabilityCases(3000);
/** Generous: a case takes well under a millisecond to a few; this only catches a blow-up. */
const MAX_CASE_MS = 5000;

let key: AgentPrivateKey;
let otherKey: AgentPrivateKey;
let keys: Map<string, AgentPrivateKey>;
/** Valid bundles for AGENT_ID / RUN_ID, each opened once successfully with a fresh cache. */
let bases: string[] = [];

function options(replayCache = new ReplayCache()): OpenOptions {
  return {
    keys,
    agentId: AGENT_ID,
    runId: RUN_ID,
    nowMs: NOW_MS,
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 120,
    maxBytes: 1024 * 1024,
    replayCache,
  };
}

function exportText(entries: number, password: string): string {
  return JSON.stringify({
    version: 1,
    registries: Array.from({ length: entries }, (_, i) => ({
      id: `int-${i}`,
      name: `reg ${i}`,
      url: `https://r${i}.example.test`,
      username: `u${i}`,
      password,
      updated_at: "2026-11-20T10:00:00Z",
    })),
  });
}

async function seal(
  plaintext: string,
  overrides: {
    agentId?: string;
    runId?: string;
    ttl?: number;
    issuedAtMs?: number;
    recipient?: AgentPrivateKey;
    kid?: string;
  } = {},
): Promise<string> {
  const recipient = overrides.recipient ?? key;
  return sealBundle({
    recipient: { kid: overrides.kid ?? recipient.kid, publicKey: recipient.publicKey },
    agentId: overrides.agentId ?? AGENT_ID,
    runId: overrides.runId ?? RUN_ID,
    plaintext: Buffer.from(plaintext, "utf8"),
    issuedAtMs: overrides.issuedAtMs ?? ISSUED_AT_MS,
    ttlSeconds: overrides.ttl ?? 600,
  });
}

interface Envelope {
  protected: string;
  enc: string;
  ciphertext: string;
}

function envelopeOf(bundle: string): Envelope {
  return JSON.parse(bundle) as Envelope;
}

function headerOf(bundle: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(envelopeOf(bundle).protected, "base64url").toString("utf8")) as Record<string, unknown>;
}

function b64urlOfJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), "utf8").toString("base64url");
}

interface Case {
  readonly kind: string;
  readonly base: number;
  readonly bytes: Uint8Array;
}

const HEADER_KEYS = ["typ", "v", "suite", "kid", "agent_id", "run_id", "bundle_id", "iat", "exp"] as const;

/** Values worth trying in a header field: the right type off by a little, other types, extremes. */
function headerValue(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.jsonValue(),
    fc.integer(),
    fc.integer({ min: -3, max: 3 }).map((d) => Math.floor(ISSUED_AT_MS / 1000) + d),
    fc.constantFrom(0, -1, 1, 2, 1.5, Number.MAX_SAFE_INTEGER, 1e308, -0, "1", "", null, true, [], {}),
    fc.constantFrom(
      AGENT_ID,
      RUN_ID,
      `${AGENT_ID} `,
      RUN_ID.toUpperCase(),
      BUNDLE_SUITE,
      BUNDLE_TYPE,
      "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-128-GCM",
    ),
    fc.string({ maxLength: 300 }),
    fc.string({ unit: "binary", maxLength: 40 }),
  );
}

/** Counterexamples print as their kind and text, not as a byte array. */
function printable(c: Case): Case {
  return Object.assign(c, {
    [fc.toStringMethod]: () =>
      `${c.kind}(base ${c.base}): ${JSON.stringify(Buffer.from(c.bytes).toString("latin1").slice(0, 400))}`,
  });
}

function caseArbitrary(): fc.Arbitrary<Case> {
  const baseIdx = fc.nat({ max: bases.length - 1 });
  const at = (b: number, frac: number): number => Math.min(bases[b]!.length - 1, Math.floor(frac * bases[b]!.length));
  const frac = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
  const enc = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "utf8"));
  const baseBytes = (b: number): Uint8Array => enc(bases[b]!);

  const flip = fc.tuple(baseIdx, frac, fc.integer({ min: 1, max: 255 })).map(([b, f, x]): Case => {
    const bytes = baseBytes(b);
    bytes[at(b, f)]! ^= x;
    return { kind: "byte_flip", base: b, bytes };
  });
  const bitFlip = fc.tuple(baseIdx, frac, fc.integer({ min: 0, max: 7 })).map(([b, f, bit]): Case => {
    const bytes = baseBytes(b);
    bytes[at(b, f)]! ^= 1 << bit;
    return { kind: "bit_flip", base: b, bytes };
  });
  const multiFlip = fc
    .tuple(baseIdx, fc.array(fc.tuple(frac, fc.integer({ min: 1, max: 255 })), { minLength: 2, maxLength: 16 }))
    .map(([b, flips]): Case => {
      const bytes = baseBytes(b);
      for (const [f, x] of flips) bytes[at(b, f)]! ^= x;
      return { kind: "multi_byte_flip", base: b, bytes };
    });
  const truncate = fc
    .tuple(baseIdx, frac)
    .map(([b, f]): Case => ({ kind: "truncate", base: b, bytes: baseBytes(b).subarray(0, at(b, f)) }));
  const extend = fc
    .tuple(baseIdx, fc.uint8Array({ minLength: 1, maxLength: 64 }))
    .map(([b, tail]): Case => ({ kind: "extend", base: b, bytes: Buffer.concat([baseBytes(b), tail]) }));
  const insert = fc.tuple(baseIdx, frac, fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([b, f, ins]): Case => {
    const bytes = baseBytes(b);
    const i = at(b, f);
    return { kind: "insert", base: b, bytes: Buffer.concat([bytes.subarray(0, i), ins, bytes.subarray(i)]) };
  });
  const remove = fc.tuple(baseIdx, frac, fc.integer({ min: 1, max: 64 })).map(([b, f, n]): Case => {
    const bytes = baseBytes(b);
    const i = at(b, f);
    return { kind: "delete", base: b, bytes: Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + n)]) };
  });

  const fieldName = fc.constantFrom<keyof Envelope>("protected", "enc", "ciphertext");
  const replaceField = fc
    .tuple(
      baseIdx,
      fieldName,
      fc.oneof(
        fc.string({ maxLength: 200 }),
        fc.uint8Array({ maxLength: 200 }).map((u) => b64urlEncode(u)),
        fc.uint8Array({ minLength: 32, maxLength: 32 }).map((u) => b64urlEncode(u)),
        fc.constant(b64urlEncode(new Uint8Array(32))),
        fc.constant(""),
      ),
    )
    .map(([b, name, value]): Case => {
      const env = envelopeOf(bases[b]!);
      env[name] = value;
      return { kind: `replace_${name}`, base: b, bytes: enc(JSON.stringify(env)) };
    });
  const crossField = fc.tuple(baseIdx, baseIdx, fieldName).map(([a, b, name]): Case => {
    const env = envelopeOf(bases[a]!);
    env[name] = envelopeOf(bases[b]!)[name];
    return { kind: `cross_${name}`, base: a, bytes: enc(JSON.stringify(env)) };
  });
  const swapFields = fc.tuple(baseIdx, fieldName, fieldName).map(([b, x, y]): Case => {
    const env = envelopeOf(bases[b]!);
    [env[x], env[y]] = [env[y], env[x]];
    return { kind: "swap_fields", base: b, bytes: enc(JSON.stringify(env)) };
  });
  const reshape = fc
    .tuple(
      baseIdx,
      fc.constantFrom(
        "pretty",
        "reorder",
        "extra_field",
        "escape",
        "missing_field",
        "array",
        "bom",
        "crlf",
        "double_newline",
      ),
    )
    .map(([b, how]): Case => {
      const env = envelopeOf(bases[b]!);
      const text =
        how === "pretty"
          ? JSON.stringify(env, null, 1)
          : how === "reorder"
            ? JSON.stringify({ enc: env.enc, protected: env.protected, ciphertext: env.ciphertext })
            : how === "extra_field"
              ? JSON.stringify({ ...env, x: 1 })
              : how === "escape"
                ? bases[b]!.replace(
                    `"enc":"${env.enc.charAt(0)}`,
                    `"enc":"\\u00${env.enc.charCodeAt(0).toString(16).padStart(2, "0")}`,
                  )
                : how === "missing_field"
                  ? JSON.stringify({ protected: env.protected, enc: env.enc })
                  : how === "array"
                    ? JSON.stringify([env.protected, env.enc, env.ciphertext])
                    : how === "bom"
                      ? `\uFEFF${bases[b]!}`
                      : how === "crlf"
                        ? `${bases[b]!}\r\n`
                        : `${bases[b]!}\n\n`;
      return { kind: `reshape_${how}`, base: b, bytes: enc(text) };
    });

  const headerMutation = fc
    .tuple(
      baseIdx,
      fc.oneof(
        fc.tuple(fc.constantFrom(...HEADER_KEYS), fc.constant("delete" as const), fc.constant(undefined as unknown)),
        fc.tuple(fc.constantFrom(...HEADER_KEYS), fc.constant("set" as const), headerValue()),
        fc.tuple(fc.string({ minLength: 1, maxLength: 12 }), fc.constant("add" as const), fc.jsonValue()),
        fc.tuple(fc.constant("*"), fc.constant("reorder" as const), fc.constant(undefined as unknown)),
      ),
    )
    .map(([b, [field, op, value]]): Case => {
      const header = headerOf(bases[b]!);
      let next: Record<string, unknown>;
      if (op === "delete") {
        next = Object.fromEntries(Object.entries(header).filter(([k]) => k !== field));
      } else if (op === "reorder") {
        next = Object.fromEntries(Object.entries(header).reverse());
      } else {
        next = { ...header, [field]: value };
      }
      const env = envelopeOf(bases[b]!);
      return {
        kind: `header_${op}${op === "set" || op === "delete" ? `_${field}` : ""}`,
        base: b,
        bytes: enc(JSON.stringify({ protected: b64urlOfJson(next), enc: env.enc, ciphertext: env.ciphertext })),
      };
    });
  /** A header that passes every check, so the case reaches HPKE with random or degenerate key material. */
  const forgedValidHeader = fc
    .tuple(
      baseIdx,
      fc.oneof(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.constantFrom(
          new Uint8Array(32),
          new Uint8Array(32).fill(255),
          Uint8Array.from([1, ...new Array<number>(31).fill(0)]),
        ),
      ),
      fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.constant(undefined)),
      fc.string({ minLength: 16, maxLength: 40 }),
    )
    .map(([b, encBytes, ct, bundleId]): Case => {
      const header: BundleHeader = { ...(headerOf(bases[b]!) as unknown as BundleHeader), bundle_id: bundleId };
      const env = envelopeOf(bases[b]!);
      return {
        kind: "forged_valid_header",
        base: b,
        bytes: enc(serializeEnvelope(encodeHeader(header), encBytes, ct ?? Buffer.from(env.ciphertext, "base64url"))),
      };
    });
  const randomJson = fc
    .jsonValue()
    .map((v): Case => ({ kind: "random_json", base: -1, bytes: enc(JSON.stringify(v)) }));
  const randomEnvelope = fc
    .tuple(
      fc.oneof(fc.jsonValue(), fc.dictionary(fc.constantFrom(...HEADER_KEYS), headerValue())),
      fc.uint8Array({ maxLength: 40 }),
      fc.uint8Array({ maxLength: 120 }),
    )
    .map(([h, e, c]): Case => ({
      kind: "random_envelope",
      base: -1,
      bytes: enc(serializeEnvelope(b64urlOfJson(h), e, c)),
    }));
  const randomBytesCase = fc
    .uint8Array({ maxLength: 2048 })
    .map((u): Case => ({ kind: "random_bytes", base: -1, bytes: u }));

  return fc
    .oneof(
      flip,
      bitFlip,
      multiFlip,
      truncate,
      extend,
      insert,
      remove,
      replaceField,
      crossField,
      swapFields,
      reshape,
      headerMutation,
      headerMutation,
      forgedValidHeader,
      randomJson,
      randomEnvelope,
      randomBytesCase,
    )
    .map(printable);
}

/** The same bundle as its base (not a mutation): byte-identical, or with the one tolerated "\n". */
function isIdentity(c: Case): boolean {
  if (c.base < 0) return false;
  const text = Buffer.from(c.bytes).toString("latin1");
  const base = Buffer.from(bases[c.base]!, "utf8").toString("latin1");
  return text === base || text === `${base}\n`;
}

interface Outcome {
  accepted: boolean;
  code?: string;
  foreign?: string;
  ms: number;
}

async function tryOpen(bytes: Uint8Array, replayCache?: ReplayCache): Promise<Outcome> {
  const t0 = performance.now();
  try {
    await openBundle(bytes, options(replayCache));
    return { accepted: true, ms: performance.now() - t0 };
  } catch (error) {
    const ms = performance.now() - t0;
    if (isAgentError(error) && Object.hasOwn(ERROR_CODES, error.code)) return { accepted: false, code: error.code, ms };
    return { accepted: false, foreign: error instanceof Error ? `${error.name}: ${error.message}` : String(error), ms };
  }
}

beforeAll(async () => {
  key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
  otherKey = await parsePrivateKeyPem(generatePrivateKeyPem(), "other test key");
  keys = new Map([[key.kid, key]]);
  bases = [
    await seal(exportText(1, "s3cret")),
    await seal(exportText(0, "")),
    await seal(exportText(40, randomBytes(24).toString("base64"))),
    await seal(exportText(2, 'pä:ss"wörd\\\u{1F511}')),
  ];
  for (const b of bases) {
    const opened = await openBundle(Buffer.from(b, "utf8"), options());
    expect(opened.header.run_id).toBe(RUN_ID);
  }
});

describe("hostile bundles", () => {
  it(`refuses ${CASES} mutated and random bundles, each with an AgentError code, in bounded time`, async () => {
    const byCode = new Tally();
    const byKind = new Tally();
    let tried = 0;
    let skippedIdentity = 0;
    let accepted = 0;
    let maxMs = 0;
    const times: number[] = [];
    const started = performance.now();
    await fc.assert(
      fc.asyncProperty(caseArbitrary(), async (c) => {
        if (isIdentity(c)) {
          skippedIdentity++;
          return true;
        }
        const out = await tryOpen(c.bytes);
        tried++;
        byKind.add(c.kind);
        times.push(out.ms);
        if (out.ms > maxMs) maxMs = out.ms;
        if (out.accepted) accepted++;
        else byCode.add(out.code ?? `foreign:${out.foreign ?? "?"}`);
        return !out.accepted && out.foreign === undefined && out.ms < MAX_CASE_MS;
      }),
      { numRuns: CASES, endOnFailure: true },
    );
    times.sort((a, b) => a - b);
    const p99 = times[Math.floor(times.length * 0.99)] ?? 0;
    recordFigures("bundle-fuzz", {
      cases_generated: CASES,
      cases_tried: tried,
      identity_skipped: skippedIdentity,
      refused: byCode.total,
      accepted,
      max_ms_per_case: Number(maxMs.toFixed(2)),
      p99_ms_per_case: Number(p99.toFixed(3)),
      total_s: Number(((performance.now() - started) / 1000).toFixed(1)),
      by_code: byCode.counts,
      by_kind: byKind.counts,
    });
    expect(accepted).toBe(0);
    expect(Object.keys(byCode.counts).filter((k) => k.startsWith("foreign:"))).toEqual([]);
    expect(maxMs).toBeLessThan(MAX_CASE_MS);
    // The generator reaches the deepest check (authentication) as well as the cheap ones.
    expect(byCode.counts["BUNDLE_DECRYPT_FAILED"] ?? 0).toBeGreaterThan(0);
    expect(byCode.counts["BUNDLE_MALFORMED"] ?? 0).toBeGreaterThan(0);
  });

  it("refuses well-formed bundles bound to something else, each with its own code", async () => {
    const cases: [string, Promise<string> | string, string][] = [
      ["another agent", seal(exportText(1, "x"), { agentId: "agent-other" }), "BUNDLE_WRONG_AGENT"],
      ["another run", seal(exportText(1, "x"), { runId: "run-other" }), "BUNDLE_WRONG_RUN"],
      ["expired", seal(exportText(1, "x"), { issuedAtMs: NOW_MS - 700_000, ttl: 600 }), "BUNDLE_EXPIRED"],
      ["issued in the future", seal(exportText(1, "x"), { issuedAtMs: NOW_MS + 10 * 60_000 }), "BUNDLE_NOT_YET_VALID"],
      ["lifetime too long", seal(exportText(1, "x"), { ttl: 3601 }), "BUNDLE_LIFETIME_TOO_LONG"],
      ["another key", seal(exportText(1, "x"), { recipient: otherKey }), "BUNDLE_UNKNOWN_KEY"],
      [
        "another key under our kid",
        seal(exportText(1, "x"), { recipient: otherKey, kid: key.kid }),
        "BUNDLE_DECRYPT_FAILED",
      ],
      ["too large", `${bases[0]!}${" ".repeat(1024 * 1024)}`, "BUNDLE_TOO_LARGE"],
    ];
    const seen: Record<string, string> = {};
    for (const [what, bundle, code] of cases) {
      const out = await tryOpen(Buffer.from(await bundle, "utf8"));
      expect(out.accepted, what).toBe(false);
      expect(out.code, what).toBe(code);
      seen[what] = out.code ?? "?";
    }
    // A bundle opens once per process: the second open is a replay.
    const cache = new ReplayCache();
    const fresh = await seal(exportText(1, "x"));
    expect((await tryOpen(Buffer.from(fresh, "utf8"), cache)).accepted).toBe(true);
    const again = await tryOpen(Buffer.from(fresh, "utf8"), cache);
    expect(again.code).toBe("BUNDLE_REPLAYED");
    const withNewline = await tryOpen(Buffer.from(`${fresh}\n`, "utf8"), cache);
    expect(withNewline.code).toBe("BUNDLE_REPLAYED");
    seen["replayed"] = again.code ?? "?";
    recordFigures("bundle-bindings", { cases: Object.keys(seen).length, refused: seen });
  });

  // Found by this file's generator: TextDecoder stripped a leading UTF-8 byte-order mark, so a
  // second byte string opened to the same bundle, which docs/protocol.md rules out ("a parser
  // refuses any other form"). decodeEnvelope now keeps the BOM (ignoreBOM), which then fails the
  // canonical form.
  it("refuses a bundle prefixed with a UTF-8 byte-order mark", async () => {
    const out = await tryOpen(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(bases[0]!, "utf8")]));
    expect(out.accepted).toBe(false);
    expect(out.code).toBe("BUNDLE_MALFORMED");
  });
});
