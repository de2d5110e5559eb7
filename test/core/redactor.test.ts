/**
 * Value-based redaction (src/core/redactor.ts): every occurrence of every secret is masked,
 * longest first, so a secret that is a prefix or part of a longer one never leaves the rest of
 * the longer one visible, whatever order they were added in and whether the pattern was built
 * before the longer one arrived. Secrets are reference-counted: removing one hands of two
 * leaves the other's in place.
 */
import { describe, expect, it } from "vitest";
import { REDACTED, Redactor } from "../../src/core/redactor.js";

describe("the redactor", () => {
  const cases: [string, string, string][] = [
    ["a prefix of the longer secret", "hunter", "hunter2-SUFFIX"],
    ["the middle of the longer secret", "ter2-SU", "hunter2-SUFFIX"],
    ["a suffix of the longer secret", "SUFFIX", "hunter2-SUFFIX"],
  ];

  it.each(cases)(
    "masks a longer secret whole when a shorter one is %s, in either order of adding",
    (_name, short, long) => {
      for (const order of [
        [short, long],
        [long, short],
      ]) {
        const r = new Redactor();
        for (const s of order) r.add([s]);
        const out = r.redact(`a ${long} b ${short} c`);
        expect(out).toBe(`a ${REDACTED} b ${REDACTED} c`);
      }
    },
  );

  it("masks a longer secret whole when it arrives after the pattern was built for the shorter one", () => {
    const r = new Redactor();
    r.add(["hunter"]);
    expect(r.redact("hunter")).toBe(REDACTED);
    r.add(["hunter2-SUFFIX"]);
    expect(r.redact("x hunter2-SUFFIX y")).toBe(`x ${REDACTED} y`);
  });

  it("masks secrets with regular-expression characters literally", () => {
    const r = new Redactor();
    r.add(["a.b", "(x|y)*"]);
    expect(r.redact("a.b axb (x|y)* xy")).toBe(`${REDACTED} axb ${REDACTED} xy`);
  });

  it("counts references: a secret stays until every add of it is removed, then text passes unchanged", () => {
    const r = new Redactor();
    const first = r.add(["shared-SECRET", "only-first"]);
    const second = r.add(["shared-SECRET"]);
    expect(r.size).toBe(2);
    expect(r.longest).toBe("shared-SECRET".length);
    first();
    first();
    expect(r.size).toBe(1);
    expect(r.redact("shared-SECRET only-first")).toBe(`${REDACTED} only-first`);
    second();
    expect(r.size).toBe(0);
    expect(r.longest).toBe(0);
    expect(r.redact("shared-SECRET")).toBe("shared-SECRET");
  });
});
