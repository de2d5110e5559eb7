/**
 * Token buckets (src/control-plane/rate-limit.ts), the per-client check built on them
 * (limits.ts) and per-run quotas (run-quota.ts) alone, in memory, with the time passed in.
 */
import { describe, expect, it } from "vitest";
import { ClientLimiter, DEFAULT_LIMITS, MAX_SCALED_CONCURRENCY } from "../../src/control-plane/limits.js";
import { TokenBuckets } from "../../src/control-plane/rate-limit.js";
import { RunQuotas } from "../../src/control-plane/run-quota.js";

describe("TokenBuckets", () => {
  it("allows the burst at once, then refuses with the time until the next token", () => {
    const b = new TokenBuckets({ perSecond: 2, burst: 3 });
    expect([0, 0, 0].map(() => b.take("a", 1000))).toEqual([undefined, undefined, undefined]);
    expect(b.take("a", 1000)).toBe(500);
    // Another key has its own bucket.
    expect(b.take("b", 1000)).toBeUndefined();
    // Half a second later one token is back.
    expect(b.take("a", 1500)).toBeUndefined();
    expect(b.take("a", 1500)).toBe(500);
    expect(b.wait("a", 1750)).toBe(250);
  });

  it("refills at the rate, never above the burst", () => {
    const b = new TokenBuckets({ perSecond: 10, burst: 2 });
    b.take("a", 0);
    b.take("a", 0);
    expect(b.take("a", 60_000)).toBeUndefined();
    expect(b.take("a", 60_000)).toBeUndefined();
    expect(b.take("a", 60_000)).toBe(100);
  });

  it("a key's scale multiplies its rate and burst (an agent's concurrency)", () => {
    const b = new TokenBuckets({ perSecond: 1, burst: 2 });
    for (let i = 0; i < 6; i++) expect(b.take("a", 0, 3)).toBeUndefined();
    expect(b.take("a", 0, 3)).toBe(334);
    expect(b.take("a", 1000, 3)).toBeUndefined();
  });

  it("wait() takes nothing", () => {
    const b = new TokenBuckets({ perSecond: 1, burst: 1 });
    expect(b.wait("a", 0)).toBe(0);
    expect(b.wait("a", 0)).toBe(0);
    expect(b.take("a", 0)).toBeUndefined();
    expect(b.wait("a", 0)).toBe(1000);
  });

  it("forgets the least recently used key past maxKeys", () => {
    const b = new TokenBuckets({ perSecond: 1, burst: 1 }, 2);
    b.take("a", 0);
    b.take("b", 0);
    b.take("a", 0);
    b.take("c", 0);
    // "b" was the least recently used: forgotten, so it starts full; "a" is still empty.
    expect(b.take("b", 0)).toBeUndefined();
    expect(b.take("c", 0)).toBe(1000);
  });

  it("refuses a limit that would never allow a request", () => {
    expect(() => new TokenBuckets({ perSecond: 0, burst: 1 })).toThrow(RangeError);
    expect(() => new TokenBuckets({ perSecond: 1, burst: 0 })).toThrow(RangeError);
  });
});

describe("ClientLimiter", () => {
  const burstOf = (limiter: ClientLimiter, concurrency: number): number => {
    let n = 0;
    while (limiter.check({ kind: "agent", agentId: "a", concurrency }, "10.0.0.1", 0) === undefined) n++;
    return n;
  };

  it("an agent's burst grows with its concurrency, up to MAX_SCALED_CONCURRENCY run slots", () => {
    const { burst } = DEFAULT_LIMITS.rates.agent;
    expect(burstOf(new ClientLimiter(DEFAULT_LIMITS.rates), 1)).toBe(burst);
    expect(burstOf(new ClientLimiter(DEFAULT_LIMITS.rates), 8)).toBe(8 * burst);
    expect(burstOf(new ClientLimiter(DEFAULT_LIMITS.rates), 10_000)).toBe(MAX_SCALED_CONCURRENCY * burst);
  });

  it("a refusal is 429 with a stable code, Retry-After in whole seconds, and what to do", () => {
    const limiter = new ClientLimiter({ ...DEFAULT_LIMITS.rates, admin: { perSecond: 0.25, burst: 1 } });
    expect(limiter.check({ kind: "admin" }, "10.0.0.1", 0)).toBeUndefined();
    const refusal = limiter.check({ kind: "admin" }, "10.0.0.1", 0);
    expect(refusal).toMatchObject({ status: 429, code: "ADMIN_RATE_LIMITED", headers: { "retry-after": "4" } });
    expect(refusal?.message).toMatch(/slow the script down; retry after 4 s/);
  });

  it("failed authentications are counted per address; only unauthenticated requests are refused", () => {
    const limiter = new ClientLimiter({ ...DEFAULT_LIMITS.rates, authFailures: { perSecond: 1, burst: 2 } });
    limiter.failed("10.0.0.1", 0);
    limiter.failed("10.0.0.1", 0);
    expect(limiter.check({ kind: "anonymous" }, "10.0.0.1", 0)?.code).toBe("AUTH_FAILURES_RATE_LIMITED");
    expect(limiter.check({ kind: "anonymous" }, "10.0.0.2", 0)).toBeUndefined();
    expect(limiter.check({ kind: "enrollment" }, "10.0.0.1", 0)).toBeUndefined();
    expect(limiter.check({ kind: "agent", agentId: "a", concurrency: 1 }, "10.0.0.1", 0)).toBeUndefined();
    expect(limiter.check({ kind: "anonymous" }, "10.0.0.1", 1000)).toBeUndefined();
  });
});

describe("RunQuotas", () => {
  const limits = { maxEventsPerRun: 3, maxEventBytesPerRun: 100, maxLogEntriesPerRun: 2, maxLogBytesPerRun: 10 };

  it("counts events by number and bytes; a refused batch is not charged", () => {
    const q = new RunQuotas(limits);
    expect(q.chargeEvents("r", 2, 50)).toBeUndefined();
    expect(q.chargeEvents("r", 2, 10)).toMatchObject({ code: "EVENT_LIMIT_REACHED", limit: "count" });
    expect(q.chargeEvents("r", 1, 60)).toMatchObject({ code: "EVENT_LIMIT_REACHED", limit: "bytes" });
    expect(q.chargeEvents("r", 1, 50)).toBeUndefined();
    expect(q.chargeEvents("other", 3, 100)).toBeUndefined();
  });

  it("counts an empty log chunk as an entry, and bytes", () => {
    const q = new RunQuotas(limits);
    expect(q.chargeLog("r", 0)).toBeUndefined();
    expect(q.chargeLog("r", 0)).toBeUndefined();
    const refused = q.chargeLog("r", 0);
    expect(refused).toMatchObject({ code: "LOG_LIMIT_REACHED", limit: "count" });
    expect(refused?.message).toMatch(/send no more log chunks/);
    expect(q.chargeLog("s", 11)).toMatchObject({ code: "LOG_LIMIT_REACHED", limit: "bytes" });
    expect(q.chargeLog("s", 10)).toBeUndefined();
  });

  it("forgets a run", () => {
    const q = new RunQuotas(limits);
    q.chargeLog("r", 10);
    q.forget("r");
    expect(q.runs).toBe(0);
    expect(q.chargeLog("r", 10)).toBeUndefined();
  });
});
