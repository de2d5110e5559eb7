/**
 * The most-specific-scope rule is written once (src/core/repository-scope.ts). OpenTofu's
 * lookup (keySpecificity) ranks Docker-style keys with it, and the pre-flight check picks with
 * it which credential serves each repository of the configuration.
 */
import { describe, expect, it } from "vitest";
import { keySpecificity } from "../../src/core/opentofu-resolver.js";
import { mostSpecificScope, scopeSpecificity } from "../../src/core/repository-scope.js";

const CASES: [string | undefined, string, number | undefined][] = [
  [undefined, "org/mod", 0],
  [undefined, "m", 0],
  ["org", "org/mod", 1],
  ["org/mod", "org/mod", 2],
  ["org/team", "org/team/mod", 2],
  ["org/mod/x", "org/mod", undefined],
  ["org2", "org/mod", undefined],
  ["or", "org/mod", undefined],
  ["organ", "org/mod", undefined],
  ["Org", "org/mod", undefined],
  ["mod", "org/mod", undefined],
  ["", "org/mod", undefined],
  ["org/", "org/mod", undefined],
  ["org//mod", "org//mod", undefined],
  ["/org", "org/mod", undefined],
  ["org", "org", 1],
  ["org", "org/", 1],
];

describe("scopeSpecificity", () => {
  it.each(CASES)("scope %j covers %j with %j", (scope, repository, expected) => {
    expect(scopeSpecificity(scope, repository)).toBe(expected);
  });
});

describe("OpenTofu's keySpecificity applies it to host/scope keys", () => {
  it.each(CASES)("key for scope %j, repository %j", (scope, repository, expected) => {
    const key = scope === undefined ? "ghcr.io" : `ghcr.io/${scope}`;
    expect(keySpecificity(key, "ghcr.io", repository)).toBe(expected === undefined ? 0 : 2 + expected);
    expect(keySpecificity(key, "quay.io", repository)).toBe(0);
  });
});

describe("mostSpecificScope", () => {
  interface Credential {
    readonly id: string;
    readonly path: string | undefined;
  }
  const pathOf = (c: Credential): string | undefined => c.path;
  const HOST: Credential = { id: "host", path: undefined };
  const ORG: Credential = { id: "org", path: "org" };
  const TEAM: Credential = { id: "team", path: "org/team" };
  const OTHER: Credential = { id: "other", path: "other" };

  it.each<[string, Credential[], string, string | undefined]>([
    ["the longest covering scope wins", [HOST, ORG, TEAM], "org/team/mod", "team"],
    ["whatever the order", [TEAM, ORG, HOST], "org/team/mod", "team"],
    ["a shorter scope when the longer does not cover the repository", [HOST, TEAM, ORG], "org/other/mod", "org"],
    ["the host-wide credential when no scope covers it", [ORG, HOST, TEAM], "else/mod", "host"],
    [
      "a prefix of characters is not a prefix of segments",
      [HOST, { id: "te", path: "org/te" }],
      "org/team/mod",
      "host",
    ],
    ["none when nothing covers it", [ORG, TEAM, OTHER], "else/mod", undefined],
    ["none from no candidates", [], "org/mod", undefined],
    [
      "the first on a tie",
      [
        { id: "first", path: "org" },
        { id: "second", path: "org" },
      ],
      "org/mod",
      "first",
    ],
  ])("%s", (_what, candidates, repository, expected) => {
    expect(mostSpecificScope(candidates, pathOf, repository)?.id).toBe(expected);
  });
});
