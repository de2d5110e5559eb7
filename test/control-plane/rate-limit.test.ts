/**
 * Token buckets (src/control-plane/rate-limit.ts) and per-run quotas (run-quota.ts) alone, in
 * memory, with the time passed in.
 */
import { describe, expect, it } from "vitest";
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
