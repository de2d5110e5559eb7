import { describe, expect, it } from "vitest";
import { parseExport } from "../../src/core/export-payload.js";
import { refusalSync } from "../support/refusal.js";

const refusal = (text: string) => refusalSync(() => parseExport(text));

function one(entry: unknown) {
  return parseExport(JSON.stringify({ version: 1, registries: [entry] }));
}

const GOOD = {
  id: "int-7f3a",
  name: "GHCR prod",
  url: "https://ghcr.io",
  username: "octocat",
  password: "ghp_x",
  updated_at: "2026-11-20T10:00:00Z",
};

describe("parseExport: the top level", () => {
  it("reads the documented example", () => {
    const parsed = parseExport(JSON.stringify({ version: 1, registries: [GOOD] }));
    expect(parsed.invalid).toEqual([]);
    expect(parsed.entries).toEqual([
      {
        id: "int-7f3a",
        name: "GHCR prod",
        url: "https://ghcr.io",
        username: "octocat",
        password: "ghp_x",
        credentialHelper: undefined,
        updatedAtMs: Date.UTC(2026, 10, 20, 10, 0, 0),
      },
    ]);
  });

  it("accepts an empty list and ignores unknown fields", () => {
    expect(parseExport('{"version":1,"registries":[],"extra":{"x":1}}')).toEqual({ entries: [], invalid: [] });
    expect(one({ ...GOOD, future_field: [1, 2] }).entries).toHaveLength(1);
  });

  it.each<[string, string, string, RegExp]>([
    ["not JSON", "{version: 1", "PAYLOAD_INVALID", /not JSON/],
    ["empty", "", "PAYLOAD_INVALID", /not JSON/],
    ["an array", "[]", "PAYLOAD_INVALID", /malformed/],
    ["null", "null", "PAYLOAD_INVALID", /malformed/],
    ["no version", '{"registries":[]}', "PAYLOAD_INVALID", /version/],
    ["version as a string", '{"version":"1","registries":[]}', "PAYLOAD_INVALID", /version/],
    ["no registries", '{"version":1}', "PAYLOAD_INVALID", /registries/],
    ["registries as an object", '{"version":1,"registries":{}}', "PAYLOAD_INVALID", /registries/],
    ["version 2", '{"version":2,"registries":[]}', "PAYLOAD_VERSION_UNSUPPORTED", /version 2.*version 1/],
    ["version 0", '{"version":0,"registries":[]}', "PAYLOAD_VERSION_UNSUPPORTED", /version 0/],
    ["version 1.5", '{"version":1.5,"registries":[]}', "PAYLOAD_VERSION_UNSUPPORTED", /1\.5/],
  ])("refuses %s with %s", (_name, text, code, message) => {
    const e = refusal(text);
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });

  it("a version-2 export is refused before its entries are looked at", () => {
    expect(refusal('{"version":2,"registries":"whatever"}').code).toBe("PAYLOAD_INVALID");
    expect(refusal('{"version":2,"registries":[{"bogus":true}]}').code).toBe("PAYLOAD_VERSION_UNSUPPORTED");
  });

  it("a refusal never quotes a password", () => {
    const canary = "CANARY-top-level-secret";
    for (const text of [
      `{"version":1,"registries":"${canary}"}`,
      `{"version":"${canary}","registries":[]}`,
      `{"version":3,"registries":[{"password":"${canary}"}]}`,
      `{"version":1,"registries":[{"password":"${canary}"}] `,
    ]) {
      const e = refusal(text);
      expect(e.message).not.toContain(canary);
      expect(JSON.stringify(e.details)).not.toContain(canary);
    }
  });
});

describe("parseExport: passwords", () => {
  it.each([
    ["colons", "a:b:c::"],
    ["a leading colon", ":secret"],
    ["unicode", "пароль-密码-🔑"],
    ["quotes and backslashes", "\"'\\`$(x)"],
    ["JSON-looking text", '{"auth":"x"}'],
    ["whitespace and newlines", " a\tb\nc "],
    ["one character", "x"],
    ["the maximum length", "p".repeat(65536)],
  ])("keeps a password with %s byte-for-byte", (_name, password) => {
    const parsed = one({ ...GOOD, password });
    expect(parsed.invalid).toEqual([]);
    expect(parsed.entries[0]?.password).toBe(password);
  });

  it("a username may hold unicode but not a colon", () => {
    expect(one({ ...GOOD, username: "ünï-€" }).entries[0]?.username).toBe("ünï-€");
    expect(one({ ...GOOD, username: "a:b" }).invalid[0]?.problems).toEqual([
      expect.stringContaining("username: must not contain ':'"),
    ]);
  });
});

describe("parseExport: malformed entries are reported, not fatal", () => {
  it.each<[string, unknown, string[]]>([
    ["not an object", "ghcr.io", ["(entry): expected an object"]],
    ["null", null, ["(entry): expected an object"]],
    ["an array", [1], ["(entry): expected an object"]],
    ["missing id", { ...GOOD, id: undefined }, ["id: required string"]],
    ["empty id", { ...GOOD, id: "" }, ["id: must not be empty"]],
    ["id too long", { ...GOOD, id: "i".repeat(257) }, ["id: longer than 256 characters"]],
    ["id a number", { ...GOOD, id: 7 }, ["id: expected a string"]],
    ["missing url", { ...GOOD, url: undefined }, ["url: required string"]],
    ["url too long", { ...GOOD, url: `https://ghcr.io/${"a".repeat(2048)}` }, ["url: longer than 2048 characters"]],
    ["url an object", { ...GOOD, url: { href: "https://ghcr.io" } }, ["url: expected a string"]],
    ["missing username", { ...GOOD, username: undefined }, ["username: required string"]],
    ["empty username", { ...GOOD, username: "" }, ["username: must not be empty"]],
    ["username too long", { ...GOOD, username: "u".repeat(4097) }, ["username: longer than 4096 characters"]],
    ["missing password", { ...GOOD, password: undefined }, ["password: required string"]],
    ["empty password", { ...GOOD, password: "" }, ["password: must not be empty"]],
    ["password too long", { ...GOOD, password: "p".repeat(65537) }, ["password: longer than 65536 characters"]],
    ["password a number", { ...GOOD, password: 1234 }, ["password: expected a string"]],
    ["password null", { ...GOOD, password: null }, ["password: expected a string"]],
    ["name a number", { ...GOOD, name: 5 }, ["name: expected a string"]],
    ["name too long", { ...GOOD, name: "n".repeat(1025) }, ["name: longer than 1024 characters"]],
    ["updated_at a number", { ...GOOD, updated_at: 1_700_000_000 }, ["updated_at: expected a string"]],
    [
      "several problems at once",
      { id: 1, url: 2 },
      ["id: expected a string", "url: expected a string", "username: required string", "password: required string"],
    ],
  ])("%s", (_name, entry, problems) => {
    const parsed = one(entry);
    expect(parsed.entries).toEqual([]);
    expect(parsed.invalid).toHaveLength(1);
    expect(parsed.invalid[0]?.index).toBe(0);
    expect(parsed.invalid[0]?.problems).toEqual(problems);
  });

  it("reports the id and name of a bad entry when they are usable, with its index", () => {
    const parsed = parseExport(
      JSON.stringify({
        version: 1,
        registries: [
          GOOD,
          { id: "bad", name: "Bad one", url: "https://x.io", username: "u" },
          { id: "i".repeat(300), url: 1 },
        ],
      }),
    );
    expect(parsed.entries.map((e) => e.id)).toEqual(["int-7f3a"]);
    expect(parsed.invalid.map((i) => [i.index, i.id, i.name])).toEqual([
      [1, "bad", "Bad one"],
      [2, undefined, undefined],
    ]);
  });

  it("never puts a value into a problem", () => {
    const canary = "CANARY-9d1e";
    const parsed = parseExport(
      JSON.stringify({
        version: 1,
        registries: [
          { id: "a", url: "https://x.io", username: `${canary}:x`, password: canary },
          { id: "b", url: "https://x.io", username: "u", password: `${canary}${"p".repeat(70000)}` },
          { id: "c", url: canary.length, username: canary, password: canary },
        ],
      }),
    );
    expect(parsed.invalid).toHaveLength(3);
    expect(JSON.stringify(parsed.invalid)).not.toContain(canary);
  });

  it.each([
    ["2026-11-20T10:00:00Z", Date.UTC(2026, 10, 20, 10)],
    ["2026-11-20T12:00:00+02:00", Date.UTC(2026, 10, 20, 10)],
    ["2026-11-20T10:00:00.250Z", Date.UTC(2026, 10, 20, 10, 0, 0, 250)],
    ["not a date", undefined],
    ["", undefined],
  ])("updated_at %j → %s ms", (updated_at, ms) => {
    const parsed = one({ ...GOOD, updated_at });
    expect(parsed.invalid).toEqual([]);
    expect(parsed.entries[0]?.updatedAtMs).toBe(ms);
  });
});

describe("parseExport: credential helper entries", () => {
  it("an entry with credential_helper needs no username or password", () => {
    const parsed = one({ id: "e", url: "https://ecr.example.com", credential_helper: "ecr-login" });
    expect(parsed.invalid).toEqual([]);
    expect(parsed.entries[0]).toMatchObject({ id: "e", credentialHelper: "ecr-login", username: "", password: "" });
  });

  it.each([
    ["a path", "../bin/sh"],
    ["a space", "ecr login"],
    ["a leading dot", ".hidden"],
    ["too long", "h".repeat(129)],
  ])("refuses a helper name with %s", (_name, helper) => {
    expect(one({ id: "e", url: "https://x.io", credential_helper: helper }).invalid[0]?.problems[0]).toMatch(
      /^credential_helper: expected a helper name/,
    );
  });

  it("refuses a helper together with a password", () => {
    expect(
      one({ id: "e", url: "https://x.io", credential_helper: "x", username: "u", password: "p" }).invalid[0]?.problems,
    ).toEqual(["credential_helper: an entry has either a credential helper or a username and password, not both"]);
  });
});

describe("parseExport: cloud_auth entries (issue 17)", () => {
  const url = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com";

  it.each([
    [
      { provider: "aws", region: "eu-west-1" },
      { provider: "aws", region: "eu-west-1", account: undefined },
    ],
    [
      { provider: "aws", region: "us-gov-west-1", account: "123456789012" },
      { provider: "aws", region: "us-gov-west-1", account: "123456789012" },
    ],
    [{ provider: "azure" }, { provider: "azure", tenantId: undefined, clientId: undefined }],
    [
      { provider: "azure", tenant_id: "contoso.onmicrosoft.com", client_id: "0f0e0d0c-0b0a-0908-0706-050403020100" },
      { provider: "azure", tenantId: "contoso.onmicrosoft.com", clientId: "0f0e0d0c-0b0a-0908-0706-050403020100" },
    ],
    [{ provider: "gcp" }, { provider: "gcp" }],
  ])("reads %j in place of a username and password", (cloud_auth, expected) => {
    const parsed = one({ id: "e", url, cloud_auth });
    expect(parsed.invalid).toEqual([]);
    expect(parsed.entries[0]).toMatchObject({ id: "e", username: "", password: "", credentialHelper: undefined });
    expect(parsed.entries[0]?.cloudAuth).toEqual(expected);
  });

  it("accepts any registry host: private endpoints and proxies need not match the cloud's patterns", () => {
    expect(one({ id: "e", url: "https://registry.internal:5000", cloud_auth: { provider: "gcp" } }).invalid).toEqual(
      [],
    );
  });

  it.each([
    ["not an object", "aws", ["cloud_auth: expected an object"]],
    ["an unknown provider", { provider: "oci" }, ["cloud_auth.provider: expected one of aws, azure, gcp"]],
    [
      "aws without a region",
      { provider: "aws" },
      ["cloud_auth.region: required for aws (the ECR registry's region, like us-east-1)"],
    ],
    [
      "aws with a malformed region",
      { provider: "aws", region: "EU WEST" },
      ["cloud_auth.region: expected an AWS region like us-east-1"],
    ],
    [
      "aws with a malformed account",
      { provider: "aws", region: "eu-west-1", account: "12345" },
      ["cloud_auth.account: expected a 12-digit AWS account id"],
    ],
    [
      "azure with a malformed client id",
      { provider: "azure", client_id: "not-a-guid" },
      ["cloud_auth.client_id: expected an application (client) id, a GUID"],
    ],
    [
      "azure with a malformed tenant",
      { provider: "azure", tenant_id: "a/b" },
      ["cloud_auth.tenant_id: expected an Entra ID tenant id (a GUID or a domain)"],
    ],
  ])("refuses %s, naming the field and never the value", (_what, cloud_auth, problems) => {
    const parsed = one({ id: "e", url, cloud_auth });
    expect(parsed.entries).toEqual([]);
    expect(parsed.invalid[0]?.problems).toEqual(problems);
  });

  it("refuses cloud_auth together with a password or a credential helper", () => {
    const cloud_auth = { provider: "gcp" };
    expect(one({ id: "e", url, cloud_auth, username: "u", password: "p" }).invalid[0]?.problems).toEqual([
      "cloud_auth: an entry has either cloud_auth or a username and password, not both",
    ]);
    expect(one({ id: "e", url, cloud_auth, credential_helper: "ecr-login" }).invalid[0]?.problems).toEqual([
      "cloud_auth: an entry has either cloud_auth or a credential helper, not both",
    ]);
  });
});
