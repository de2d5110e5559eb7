/**
 * Retry delays (src/core/backoff.ts): full jitter, a delay drawn uniformly from
 * [0, min(cap, base * 2^attempt)), checked with an injected random source at its ends and
 * middle; a server's Retry-After is honoured with a little spread, and capped.
 */
import { describe, expect, it } from "vitest";
import { backoffDelayMs, parseRetryAfterMs, type BackoffPolicy } from "../../src/core/backoff.js";

const POLICY: BackoffPolicy = { baseMs: 1000, capMs: 60_000 };
const ALMOST_ONE = 1 - Number.EPSILON;
const fixed = (value: number) => (): number => value;

describe("full jitter", () => {
  const ceilings: [number, number][] = [
    [0, 1000],
    [1, 2000],
    [3, 8000],
    [5, 32_000],
    [6, 60_000],
    [20, 60_000],
    [1000, 60_000],
  ];

  it.each(ceilings)("attempt %i: the delay lies in [0, %i)", (attempt, ceiling) => {
    expect(backoffDelayMs(POLICY, attempt, fixed(0))).toBe(0);
    expect(backoffDelayMs(POLICY, attempt, fixed(0.5))).toBe(ceiling / 2);
    const top = backoffDelayMs(POLICY, attempt, fixed(ALMOST_ONE));
    expect(top).toBeLessThan(ceiling);
    expect(top).toBeGreaterThan(ceiling * 0.999);
  });

  it("draws one random number per delay and follows it", () => {
    let calls = 0;
    const delays = [0.1, 0.9].map((x) =>
      backoffDelayMs(POLICY, 2, () => {
        calls++;
        return x;
      }),
    );
    expect(calls).toBe(2);
    expect(delays).toEqual([400, 3600]);
  });
});

describe("Retry-After", () => {
  it("waits at least what the server asked, spread by less than a tenth of it (at most the base delay)", () => {
    expect(backoffDelayMs(POLICY, 0, fixed(0), 5000)).toBe(5000);
    expect(backoffDelayMs(POLICY, 0, fixed(0.5), 5000)).toBe(5000 + 0.5 * 501);
    expect(backoffDelayMs(POLICY, 7, fixed(0.999), 30_000)).toBe(30_999);
  });

  it("is capped at the longest delay", () => {
    expect(backoffDelayMs(POLICY, 0, fixed(0), 3_600_000)).toBe(60_000);
    expect(backoffDelayMs(POLICY, 0, fixed(ALMOST_ONE), 59_990)).toBe(60_000);
    expect(backoffDelayMs({ baseMs: 100, capMs: 500 }, 0, fixed(0.5), 10_000)).toBe(500);
  });

  it("is ignored when it is negative or not a number: full jitter applies", () => {
    expect(backoffDelayMs(POLICY, 2, fixed(0.5), -1)).toBe(2000);
    expect(backoffDelayMs(POLICY, 2, fixed(0.5), Number.NaN)).toBe(2000);
  });

  it("is read from seconds or an HTTP date", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfterMs("7", now)).toBe(7000);
    expect(parseRetryAfterMs("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfterMs("Wed, 31 Dec 2025 23:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfterMs("soon", now)).toBeUndefined();
    expect(parseRetryAfterMs(undefined, now)).toBeUndefined();
  });
});
