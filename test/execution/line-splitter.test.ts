/**
 * tofu's output is cut into lines before it is masked; a line too long to wait for its end is
 * cut early. No secret may be cut in two by that, whatever the read boundaries.
 */
import { describe, expect, it } from "vitest";
import { Redactor } from "../../src/core/redactor.js";
import { LineSplitter } from "../../src/execution/phase-process.js";

const SECRET = "ghp_SUPERSECRETTOKEN1234";

function run(reads: string[], maxBytes: number): string[] {
  const redactor = new Redactor();
  redactor.add([SECRET]);
  const emitted: string[] = [];
  const splitter = new LineSplitter(
    (t) => emitted.push(redactor.redact(t)),
    maxBytes,
    (t) => redactor.redact(t),
    () => redactor.longest,
  );
  for (const r of reads) splitter.push(Buffer.from(r, "utf8"));
  splitter.end();
  return emitted;
}

describe("LineSplitter", () => {
  it("masks a secret that straddles a forced cut of an over-long line (the read boundary inside the secret)", () => {
    const emitted = run([`${"x".repeat(16_374)}ghp_SUPERSECRET`, "TOKEN1234\n"], 16_384);
    const joined = emitted.join("");
    expect(joined).not.toContain("SUPERSECRET");
    expect(joined).not.toContain("TOKEN1234");
    expect(joined).toContain("[REDACTED]");
    expect(joined.replace("[REDACTED]", SECRET)).toBe(`${"x".repeat(16_374)}${SECRET}\n`);
  });

  it("never emits a piece that holds part of a secret, whatever the read size", () => {
    const line = `${"a".repeat(100)}${SECRET}${"b".repeat(57)}${SECRET}${"c".repeat(10)}\n`;
    for (let size = 1; size <= 40; size++) {
      const reads: string[] = [];
      for (let i = 0; i < line.length; i += size) reads.push(line.slice(i, i + size));
      const emitted = run(reads, 32);
      for (const piece of emitted)
        for (let n = 4; n < SECRET.length; n++) {
          expect(
            piece.includes(SECRET.slice(0, n)) &&
              !piece.includes(SECRET.slice(0, n + 1)) &&
              piece.endsWith(SECRET.slice(0, n)),
            `read size ${size}: ${piece}`,
          ).toBe(false);
        }
      expect(emitted.join("")).toBe(line.split(SECRET).join("[REDACTED]"));
      // Pieces stay bounded: the cut size, or a whole line.
      for (const piece of emitted) expect(piece.length <= 32 || piece.endsWith("\n")).toBe(true);
    }
  });

  it("keeps whole lines whole", () => {
    expect(run(["one\ntw", "o\nthree"], 1024)).toEqual(["one\n", "two\n", "three"]);
  });
});
