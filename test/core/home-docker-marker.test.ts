import { describe, expect, it } from "vitest";
import {
  decideHomeWipe,
  decideHomeWrite,
  markerBeforeWrite,
  parseHomeMarker,
  renderHomeMarker,
  type HomeMarker,
} from "../../src/core/home-docker-marker.js";

const A = "a".repeat(64);
const B = "b".repeat(64);
const C = "c".repeat(64);
const marker = (...sha256: string[]): HomeMarker => ({ v: 1, run_id: "run-1", sha256 });

describe("the HOME copy's marker", () => {
  it("round-trips, and anything else is no marker", () => {
    expect(parseHomeMarker(renderHomeMarker(marker(A, B)))).toEqual(marker(A, B));
    for (const text of [
      "",
      "{}",
      "null",
      "[]",
      JSON.stringify({ v: 2, run_id: "r", sha256: [A] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: ["zz"] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: [A, B, C] }),
      JSON.stringify({ v: 1, sha256: [A] }),
    ])
      expect(parseHomeMarker(text)).toBeUndefined();
  });

  it("writes over nothing or over its own copy only", () => {
    expect(decideHomeWrite({ kind: "absent" }, undefined)).toBe("write");
    expect(decideHomeWrite({ kind: "file", sha256: A }, marker(A))).toBe("write");
    // The user's file: no marker, or a marker that does not list its digest.
    expect(decideHomeWrite({ kind: "file", sha256: A }, undefined)).toBe("foreign");
    expect(decideHomeWrite({ kind: "file", sha256: B }, marker(A))).toBe("foreign");
    expect(decideHomeWrite({ kind: "other" }, marker(A))).toBe("foreign");
  });

  it("lists the copy it replaces while the rename is pending, so that a crash in between stays recognisable", () => {
    expect(markerBeforeWrite("run-2", B, { kind: "file", sha256: A }, marker(A))).toEqual({
      v: 1,
      run_id: "run-2",
      sha256: [B, A],
    });
    expect(markerBeforeWrite("run-2", B, { kind: "absent" }, undefined).sha256).toEqual([B]);
    expect(markerBeforeWrite("run-2", A, { kind: "file", sha256: A }, marker(A)).sha256).toEqual([A]);
    // Interrupted after the marker, before the rename: the old copy is still recognised as the hook's.
    const pending = markerBeforeWrite("run-2", B, { kind: "file", sha256: A }, marker(A));
    expect(decideHomeWrite({ kind: "file", sha256: A }, pending)).toBe("write");
    expect(decideHomeWipe({ kind: "file", sha256: A }, pending)).toBe("remove");
  });

  it("removes its own copy only; a rewritten one is left and reported; the user's is not touched", () => {
    expect(decideHomeWipe({ kind: "file", sha256: A }, marker(A))).toBe("remove");
    expect(decideHomeWipe({ kind: "absent" }, marker(A))).toBe("gone");
    expect(decideHomeWipe({ kind: "absent" }, undefined)).toBe("gone");
    expect(decideHomeWipe({ kind: "file", sha256: B }, marker(A))).toBe("changed");
    expect(decideHomeWipe({ kind: "other" }, marker(A))).toBe("changed");
    expect(decideHomeWipe({ kind: "file", sha256: A }, undefined)).toBe("not-ours");
  });
});
