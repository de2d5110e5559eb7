import { describe, expect, it } from "vitest";
import { ReplayCache } from "../../src/core/replay-cache.js";

describe("ReplayCache", () => {
  it("remembers an id until its expiry and prunes it afterwards", () => {
    const cache = new ReplayCache();
    cache.record("a", 2000, 1000);
    cache.record("b", 5000, 1000);
    expect(cache.has("a", 1999)).toBe(true);
    expect(cache.has("a", 2000)).toBe(false);
    expect(cache.has("c", 1000)).toBe(false);
    cache.record("c", 9000, 6000);
    expect(cache.size).toBe(1);
    expect(cache.has("c", 6000)).toBe(true);
  });
});
