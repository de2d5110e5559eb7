import { describe, expect, it } from "vitest";
import {
  decideHomeWipe,
  decideHomeWrite,
  markerAfterWrite,
  markerBeforeWrite,
  parseHomeMarker,
  renderHomeMarker,
  type HomeMarker,
} from "../../src/core/home-docker-marker.js";

const A = "a".repeat(64);
const B = "b".repeat(64);
const C = "c".repeat(64);
const L1 = "/creds/sidecar/run-1/g1/docker/config.json";
const L2 = "/creds/sidecar/run-1/g2/docker/config.json";
/** A marker of an earlier hook's copies (digests), as hooks before the link wrote it. */
const copies = (...sha256: string[]): HomeMarker => ({ v: 1, run_id: "run-1", sha256, links: [] });
const linked = (...links: string[]): HomeMarker => ({ v: 1, run_id: "run-1", sha256: [], links });

describe("the HOME link's marker", () => {
  it("round-trips, reads a marker written before links, and anything else is no marker", () => {
    expect(parseHomeMarker(renderHomeMarker(linked(L1, L2)))).toEqual(linked(L1, L2));
    expect(parseHomeMarker(renderHomeMarker(copies(A, B)))).toEqual(copies(A, B));
    expect(parseHomeMarker(JSON.stringify({ v: 1, run_id: "r", sha256: [A] }))).toEqual({
      v: 1,
      run_id: "r",
      sha256: [A],
      links: [],
    });
    for (const text of [
      "",
      "{}",
      "null",
      "[]",
      JSON.stringify({ v: 2, run_id: "r", sha256: [A] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: ["zz"] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: [A, B, C] }),
      JSON.stringify({ v: 1, sha256: [A] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: [], links: ["relative/config.json"] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: [], links: [L1, L2, "/x"] }),
      JSON.stringify({ v: 1, run_id: "r", sha256: [], links: "/x" }),
    ])
      expect(parseHomeMarker(text)).toBeUndefined();
  });

  it("writes over nothing, its own link, or an earlier hook's copy only", () => {
    expect(decideHomeWrite({ kind: "absent" }, undefined)).toBe("write");
    expect(decideHomeWrite({ kind: "link", target: L1 }, linked(L1))).toBe("write");
    expect(decideHomeWrite({ kind: "file", sha256: A }, copies(A))).toBe("write");
    // The user's file or link: no marker, or a marker that does not list it.
    expect(decideHomeWrite({ kind: "file", sha256: A }, undefined)).toBe("foreign");
    expect(decideHomeWrite({ kind: "file", sha256: B }, copies(A))).toBe("foreign");
    expect(decideHomeWrite({ kind: "link", target: L1 }, undefined)).toBe("foreign");
    expect(decideHomeWrite({ kind: "link", target: "/home/u/my-config.json" }, linked(L1))).toBe("foreign");
    expect(decideHomeWrite({ kind: "other" }, linked(L1))).toBe("foreign");
  });

  it("lists what it replaces while the rename is pending, so that a crash in between stays recognisable", () => {
    expect(markerBeforeWrite("run-2", L2, { kind: "link", target: L1 }, linked(L1))).toEqual({
      v: 1,
      run_id: "run-2",
      sha256: [],
      links: [L2, L1],
    });
    expect(markerBeforeWrite("run-2", L2, { kind: "file", sha256: A }, copies(A))).toEqual({
      v: 1,
      run_id: "run-2",
      sha256: [A],
      links: [L2],
    });
    expect(markerBeforeWrite("run-2", L2, { kind: "absent" }, undefined)).toEqual(markerAfterWrite("run-2", L2));
    expect(markerBeforeWrite("run-2", L1, { kind: "link", target: L1 }, linked(L1)).links).toEqual([L1]);
    // Interrupted after the marker, before the rename: the old link (or copy) is still the hook's.
    for (const [old, marker] of [
      [{ kind: "link", target: L1 }, linked(L1)],
      [{ kind: "file", sha256: A }, copies(A)],
    ] as const) {
      const pending = markerBeforeWrite("run-2", L2, old, marker);
      expect(decideHomeWrite(old, pending)).toBe("write");
      expect(decideHomeWipe(old, pending)).toBe("remove");
      expect(decideHomeWipe({ kind: "link", target: L2 }, pending)).toBe("remove");
    }
  });

  it("removes its own link (or an earlier hook's copy) only; a replaced one is left and reported; the user's is not touched", () => {
    expect(decideHomeWipe({ kind: "link", target: L1 }, linked(L1))).toBe("remove");
    expect(decideHomeWipe({ kind: "file", sha256: A }, copies(A))).toBe("remove");
    expect(decideHomeWipe({ kind: "absent" }, linked(L1))).toBe("gone");
    expect(decideHomeWipe({ kind: "absent" }, undefined)).toBe("gone");
    // A tool that renamed its own file over the link during the phase.
    expect(decideHomeWipe({ kind: "file", sha256: B }, linked(L1))).toBe("changed");
    expect(decideHomeWipe({ kind: "link", target: L2 }, linked(L1))).toBe("changed");
    expect(decideHomeWipe({ kind: "other" }, linked(L1))).toBe("changed");
    expect(decideHomeWipe({ kind: "file", sha256: A }, undefined)).toBe("not-ours");
    expect(decideHomeWipe({ kind: "link", target: L1 }, undefined)).toBe("not-ours");
  });
});
