import { describe, expect, it } from "vitest";
import { parseDurationMs } from "../../src/core/duration.js";

describe("parseDurationMs", () => {
  it.each([
    ["10m", 600_000],
    ["30s", 30_000],
    ["1h30m", 5_400_000],
    ["500ms", 500],
    ["45", 45_000],
    ["1.5s", 1_500],
  ])("%s is %d ms", (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
  });

  it.each(["", "m", "10x", "1h 30m", "-5s", "s10"])("refuses %j", (text) => {
    expect(parseDurationMs(text)).toBeUndefined();
  });
});
