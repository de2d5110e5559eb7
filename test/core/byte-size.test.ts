/**
 * Byte sizes have one parser (src/core/byte-size.ts), used by the `size` settings
 * (max_config_bytes); the option parser it replaced (cli/options.ts byteSize, since removed as
 * unused) took exactly the same inputs, and the table holds them.
 */
import { describe, expect, it } from "vitest";
import { parseFieldValue, RUN_FIELDS } from "../../src/config/schema.js";
import { parseByteSize } from "../../src/core/byte-size.js";

const CASES: [string, number | undefined][] = [
  ["1", 1],
  ["4096", 4096],
  ["10b", 10],
  ["64k", 64 * 1024],
  ["64KB", 64 * 1024],
  ["64KiB", 64 * 1024],
  ["256MiB", 256 * 1024 ** 2],
  ["256 MiB", 256 * 1024 ** 2],
  ["2m", 2 * 1024 ** 2],
  ["3mb", 3 * 1024 ** 2],
  ["1G", 1024 ** 3],
  ["1gb", 1024 ** 3],
  ["1gib", 1024 ** 3],
  ["  8k  ", 8 * 1024],
  ["0", undefined],
  ["0MiB", undefined],
  ["", undefined],
  ["MiB", undefined],
  ["-1", undefined],
  ["1.5MiB", undefined],
  ["1 TiB", undefined],
  ["1t", undefined],
  ["1kk", undefined],
  ["1e3", undefined],
  ["99999999999999999999", undefined],
  ["9007199254740991g", undefined],
];

const SIZE = RUN_FIELDS.find((f) => f.kind === "size");

describe("parseByteSize", () => {
  it.each(CASES)("%j → %j", (text, expected) => {
    expect(parseByteSize(text)).toBe(expected);
  });
});

describe("every size caller applies parseByteSize", () => {
  it.each(CASES)("setting %j", (text, expected) => {
    if (SIZE === undefined) throw new Error("RUN_FIELDS has no size field");
    expect(parseFieldValue(SIZE, text)).toEqual(
      expected === undefined ? { ok: false, expected: "a size such as 256MiB or 64k" } : { ok: true, value: expected },
    );
  });
});
