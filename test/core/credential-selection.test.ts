import { describe, expect, it } from "vitest";
import { preferOver, selectCredentials } from "../../src/core/credential-selection.js";
import { parseExport, type ExportedCredential } from "../../src/core/export-payload.js";

type Raw = Record<string, unknown>;

function select(registries: Raw[]) {
  return selectCredentials(parseExport(JSON.stringify({ version: 1, registries })));
}

function entry(id: string, url: string, extra: Raw = {}): Raw {
  return { id, name: `name-${id}`, url, username: `user-${id}`, password: `pw-${id}`, ...extra };
}

function cred(id: string, updatedAtMs?: number): ExportedCredential {
  return {
    id,
    name: undefined,
    url: "https://x.io",
    username: "u",
    password: "p",
    credentialHelper: undefined,
    updatedAtMs,
  };
}

describe("preferOver", () => {
  it.each<[string, ExportedCredential, ExportedCredential, boolean]>([
    ["later updated_at wins", cred("b", 2000), cred("a", 1000), true],
    ["earlier updated_at loses", cred("a", 1000), cred("b", 2000), false],
    ["a missing updated_at counts as oldest", cred("a"), cred("b", 0), false],
    ["a present updated_at beats a missing one", cred("z", 0), cred("a"), true],
    ["tie: smaller id wins", cred("a", 5), cred("b", 5), true],
    ["tie: larger id loses", cred("b", 5), cred("a", 5), false],
    ["both missing: smaller id wins", cred("a"), cred("b"), true],
    ["ids compare by code unit, not locale", cred("B"), cred("a"), true],
  ])("%s", (_name, a, b, expected) => {
    expect(preferOver(a, b)).toBe(expected);
  });
});

describe("selectCredentials: one credential per registry", () => {
  it.each<[string, Raw[], string, string[]]>([
    [
      "later updated_at wins whatever the order",
      [
        entry("a", "https://ghcr.io", { updated_at: "2026-11-20T10:00:00Z" }),
        entry("b", "https://ghcr.io", { updated_at: "2026-11-21T10:00:00Z" }),
      ],
      "b",
      ["a"],
    ],
    [
      "later updated_at wins (reverse order)",
      [
        entry("b", "https://ghcr.io", { updated_at: "2026-11-21T10:00:00Z" }),
        entry("a", "https://ghcr.io", { updated_at: "2026-11-20T10:00:00Z" }),
      ],
      "b",
      ["a"],
    ],
    [
      "time zones are compared as instants",
      [
        entry("a", "https://ghcr.io", { updated_at: "2026-11-20T12:00:00+02:00" }),
        entry("b", "https://ghcr.io", { updated_at: "2026-11-20T10:30:00Z" }),
      ],
      "b",
      ["a"],
    ],
    [
      "same updated_at: smaller id",
      [
        entry("int-2", "https://ghcr.io", { updated_at: "2026-11-20T10:00:00Z" }),
        entry("int-1", "https://ghcr.io", { updated_at: "2026-11-20T10:00:00Z" }),
      ],
      "int-1",
      ["int-2"],
    ],
    [
      "missing updated_at everywhere: smaller id",
      [entry("z", "https://ghcr.io"), entry("m", "https://ghcr.io/")],
      "m",
      ["z"],
    ],
    [
      "missing updated_at is oldest",
      [entry("a", "https://ghcr.io"), entry("z", "https://ghcr.io", { updated_at: "1970-01-01T00:00:00Z" })],
      "z",
      ["a"],
    ],
    [
      "unparseable updated_at counts as missing",
      [
        entry("a", "https://ghcr.io", { updated_at: "yesterday" }),
        entry("z", "https://ghcr.io", { updated_at: "2020-01-01T00:00:00Z" }),
      ],
      "z",
      ["a"],
    ],
    [
      "case, port 443 and trailing slash are the same registry",
      [
        entry("c", "https://GHCR.io:443/"),
        entry("b", "https://ghcr.io/v2/"),
        entry("a", "https://ghcr.io", { updated_at: "2026-01-01T00:00:00Z" }),
      ],
      "a",
      ["c", "b"],
    ],
    [
      "every Docker Hub alias is one registry",
      [
        entry("d1", "https://docker.io"),
        entry("d2", "https://index.docker.io/v1/"),
        entry("d3", "https://registry-1.docker.io", { updated_at: "2026-11-22T00:00:00Z" }),
        entry("d4", "https://registry.hub.docker.com"),
      ],
      "d3",
      ["d1", "d2", "d4"],
    ],
  ])("%s", (_name, registries, winner, losers) => {
    const { selected, ignored } = select(registries);
    expect(selected).toHaveLength(1);
    expect(selected[0]?.entry.id).toBe(winner);
    expect(ignored.map((i) => i.integration_id).sort()).toEqual([...losers].sort());
    for (const i of ignored) {
      expect(i.code).toBe("DUPLICATE_REGISTRY");
      expect(i.reason).toContain(`integration ${winner}`);
      expect(i.integration_name).toBe(`name-${i.integration_id ?? ""}`);
    }
  });

  it("explains whether recency or id decided", () => {
    const recency = select([
      entry("a", "https://ghcr.io", { updated_at: "2026-01-01T00:00:00Z" }),
      entry("b", "https://ghcr.io"),
    ]);
    expect(recency.ignored[0]?.reason).toContain("updated more recently");
    const tie = select([entry("b", "https://ghcr.io"), entry("a", "https://ghcr.io")]);
    expect(tie.ignored[0]?.reason).toContain("same updated_at");
  });

  it("keeps a port, a host and a repository scope apart", () => {
    const { selected, ignored } = select([
      entry("h", "https://ghcr.io"),
      entry("p", "https://ghcr.io:5000"),
      entry("s1", "https://ghcr.io/org-a"),
      entry("s2", "https://ghcr.io/org-b"),
      entry("s3", "https://ghcr.io/org-a/team"),
    ]);
    expect(ignored).toEqual([]);
    expect(selected.map((s) => [s.target.registry, s.entry.id])).toEqual([
      ["ghcr.io", "h"],
      ["ghcr.io/org-a", "s1"],
      ["ghcr.io/org-a/team", "s3"],
      ["ghcr.io/org-b", "s2"],
      ["ghcr.io:5000", "p"],
    ]);
  });

  it("dedups per host+path: two entries for the same scope", () => {
    const { selected, ignored } = select([
      entry("s2", "https://ghcr.io/org-a/", { updated_at: "2026-02-01T00:00:00Z" }),
      entry("s1", "https://GHCR.IO/org-a", { updated_at: "2026-01-01T00:00:00Z" }),
      entry("h", "https://ghcr.io"),
    ]);
    expect(selected.map((s) => s.entry.id)).toEqual(["h", "s2"]);
    expect(ignored).toMatchObject([{ integration_id: "s1", code: "DUPLICATE_REGISTRY" }]);
    expect(ignored[0]?.reason).toContain("ghcr.io/org-a");
  });

  it("sorts the selection by registry regardless of input order", () => {
    const a = select([entry("1", "https://quay.io"), entry("2", "https://ghcr.io"), entry("3", "https://docker.io")]);
    const b = select([entry("3", "https://docker.io"), entry("1", "https://quay.io"), entry("2", "https://ghcr.io")]);
    expect(a.selected.map((s) => s.target.registry)).toEqual(["docker.io", "ghcr.io", "quay.io"]);
    expect(b.selected).toEqual(a.selected);
  });
});

describe("selectCredentials: ignored entries and their reasons", () => {
  it.each<[string, Raw, string, RegExp]>([
    ["http URL", entry("x", "http://ghcr.io"), "ENTRY_NOT_HTTPS", /https/],
    ["URL with user info", entry("x", "https://u:p@ghcr.io"), "ENTRY_URL_NOT_BARE", /user information/],
    ["URL with a query", entry("x", "https://ghcr.io?a=b"), "ENTRY_URL_NOT_BARE", /query/],
    ["URL with a fragment", entry("x", "https://ghcr.io#a"), "ENTRY_URL_NOT_BARE", /fragment/],
    ["not a URL", entry("x", "ghcr.io"), "ENTRY_URL_INVALID", /not a URL/],
    ["bad path", entry("x", "https://ghcr.io/UPPER"), "ENTRY_URL_HAS_PATH", /repository path/],
    [
      "missing password",
      { id: "x", name: "name-x", url: "https://ghcr.io", username: "u" },
      "ENTRY_INVALID",
      /password: required/,
    ],
    [
      "colon in username",
      entry("x", "https://ghcr.io", { username: "a:b" }),
      "ENTRY_INVALID",
      /username: must not contain ':'/,
    ],
  ])("%s → %s", (_name, raw, code, reason) => {
    const { selected, ignored } = select([raw, entry("ok", "https://quay.io")]);
    expect(selected.map((s) => s.entry.id)).toEqual(["ok"]);
    expect(ignored).toHaveLength(1);
    expect(ignored[0]).toMatchObject({ integration_id: "x", integration_name: "name-x", code });
    expect(ignored[0]?.reason).toMatch(reason);
  });

  it("an entry without an id is reported with null id and name", () => {
    const { ignored } = select([{ url: "https://ghcr.io", username: "u", password: "p" }]);
    expect(ignored).toEqual([
      {
        integration_id: null,
        integration_name: null,
        code: "ENTRY_INVALID",
        reason: expect.stringContaining("registries[0]") as unknown,
      },
    ]);
  });

  it("an invalid entry does not compete for its registry", () => {
    const { selected, ignored } = select([
      { id: "a", url: "https://ghcr.io", username: "u", updated_at: "2030-01-01T00:00:00Z" },
      entry("b", "https://ghcr.io"),
    ]);
    expect(selected.map((s) => s.entry.id)).toEqual(["b"]);
    expect(ignored.map((i) => [i.integration_id, i.code])).toEqual([["a", "ENTRY_INVALID"]]);
  });

  it("never puts a password into a reason", () => {
    const canary = 'CANARY-pw-7f3a:!"{}';
    const { ignored } = select([
      entry("a", "https://ghcr.io", { password: canary }),
      entry("b", "https://ghcr.io", { password: canary, updated_at: "2026-01-01T00:00:00Z" }),
      entry("c", "http://quay.io", { password: canary }),
      { id: "d", url: "https://x.io", username: "a:b", password: canary },
      { id: "e", url: 7, username: "u", password: canary },
    ]);
    expect(ignored).toHaveLength(4);
    expect(JSON.stringify(ignored)).not.toContain("CANARY");
  });
});

describe("selectCredentials: credential helpers", () => {
  it("a helper entry and a password entry compete for the same registry", () => {
    const { selected, ignored } = select([
      {
        id: "helper",
        url: "https://123.dkr.ecr.eu-west-1.amazonaws.com",
        credential_helper: "ecr-login",
        updated_at: "2026-02-01T00:00:00Z",
      },
      entry("pw", "https://123.dkr.ecr.eu-west-1.amazonaws.com", { updated_at: "2026-01-01T00:00:00Z" }),
    ]);
    expect(selected).toHaveLength(1);
    expect(selected[0]?.entry).toMatchObject({
      id: "helper",
      credentialHelper: "ecr-login",
      username: "",
      password: "",
    });
    expect(ignored).toMatchObject([{ integration_id: "pw", code: "DUPLICATE_REGISTRY" }]);
  });

  it("a password entry carries no helper", () => {
    const { selected } = select([entry("pw", "https://ghcr.io")]);
    expect(selected[0]?.entry).toMatchObject({
      id: "pw",
      credentialHelper: undefined,
      username: "user-pw",
      password: "pw-pw",
    });
  });

  it("a helper for a repository-scoped URL is refused", () => {
    const { selected, ignored } = select([
      { id: "h", name: "scoped", url: "https://ghcr.io/org-a", credential_helper: "ecr-login" },
    ]);
    expect(selected).toEqual([]);
    expect(ignored).toHaveLength(1);
    expect(ignored[0]).toMatchObject({ integration_id: "h", integration_name: "scoped", code: "ENTRY_INVALID" });
    expect(ignored[0]?.reason).toContain("https://ghcr.io");
    expect(ignored[0]?.reason).toContain("docker-credential-ecr-login");
  });

  it.each<[string, Raw]>([
    ["a helper with a password", { id: "h", url: "https://ghcr.io", credential_helper: "x", password: "p" }],
    ["a helper with a username", { id: "h", url: "https://ghcr.io", credential_helper: "x", username: "u" }],
    ["a helper name with a slash", { id: "h", url: "https://ghcr.io", credential_helper: "../evil" }],
    ["an empty helper name", { id: "h", url: "https://ghcr.io", credential_helper: "" }],
    ["a helper name that is not a string", { id: "h", url: "https://ghcr.io", credential_helper: 5 }],
  ])("%s is ENTRY_INVALID", (_name, raw) => {
    const { selected, ignored } = select([raw]);
    expect(selected).toEqual([]);
    expect(ignored).toMatchObject([{ integration_id: "h", code: "ENTRY_INVALID" }]);
    expect(ignored[0]?.reason).toContain("credential_helper");
  });
});
