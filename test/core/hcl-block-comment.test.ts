import { describe, expect, it } from "vitest";
import { scanTopLevel } from "../../src/core/hcl-top-level.js";

describe("scanTopLevel: a comment after a bare value", () => {
  it.each<[string, string, [string, string][]]>([
    [
      "a block comment spanning lines",
      "disable_checkpoint = true /* legacy\n  setting } */\nb {}\n",
      [
        ["disable_checkpoint", "disable_checkpoint = true "],
        ["b", "b {}"],
      ],
    ],
    [
      "a block comment without braces",
      "a = 1 /* x\n y */\nb = 2",
      [
        ["a", "a = 1 "],
        ["b", "b = 2"],
      ],
    ],
    [
      "a line comment",
      "a = 1 // }\nb = 2",
      [
        ["a", "a = 1 "],
        ["b", "b = 2"],
      ],
    ],
  ])("%s", (_name, text, expected) => {
    expect(scanTopLevel(text).map((i) => [i.name, text.slice(i.start, i.end)])).toEqual(expected);
  });
});
