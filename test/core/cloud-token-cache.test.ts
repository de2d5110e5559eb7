import { describe, expect, it } from "vitest";
import type { CloudAuth, MintedCredential } from "../../src/core/cloud-auth.js";
import {
  boundedCloudExpiry,
  CLOUD_TOKEN_REFRESH_MARGIN_MS,
  CloudTokenCache,
  cloudTokenKey,
} from "../../src/core/cloud-token-cache.js";

const HOUR = 3_600_000;
const AWS: CloudAuth = { provider: "aws", region: "eu-west-1", account: undefined };

function clock(start = 1_800_000_000_000) {
  let now = start;
  return {
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

function minted(expiresAtMs: number, password = "p"): MintedCredential {
  return { username: "AWS", password, expiresAtMs, identity: "arn:aws:iam::123456789012:role/pool" };
}

describe("CloudTokenCache", () => {
  it("hands a 12-hour token out until five minutes before it expires, then forgets it", () => {
    const c = clock();
    const cache = new CloudTokenCache(c.now);
    const key = cloudTokenKey(AWS, "role", "r.example");
    cache.set(key, minted(c.now() + 12 * HOUR));
    c.advance(12 * HOUR - CLOUD_TOKEN_REFRESH_MARGIN_MS - 1);
    expect(cache.get(key)?.password).toBe("p");
    c.advance(1);
    expect(cache.get(key)).toBeUndefined();
  });

  it("a token with less than 15 minutes left is not handed out: the phase that starts then gets a new one", () => {
    const c = clock();
    const cache = new CloudTokenCache(c.now);
    cache.set("k", minted(c.now() + HOUR));
    c.advance(HOUR - 15 * 60_000 - 1);
    expect(cache.get("k")).toBeDefined();
    c.advance(1);
    expect(cache.get("k")).toBeUndefined();
  });

  it("replaces a short-lived token at half its lifetime", () => {
    const c = clock();
    const cache = new CloudTokenCache(c.now);
    const key = cloudTokenKey(AWS, "role", "r.example");
    cache.set(key, minted(c.now() + 60_000));
    c.advance(29_999);
    expect(cache.get(key)).toBeDefined();
    c.advance(1);
    expect(cache.get(key)).toBeUndefined();
  });

  it("never keeps a token longer than 12 hours, whatever expiry it was given", () => {
    const c = clock();
    const cache = new CloudTokenCache(c.now);
    cache.set("k", minted(c.now() + 1000 * 24 * HOUR));
    c.advance(12 * HOUR - CLOUD_TOKEN_REFRESH_MARGIN_MS - 1);
    expect(cache.get("k")).toBeDefined();
    c.advance(1);
    expect(cache.get("k")).toBeUndefined();
  });

  it("bounds each cloud's expiry by its longest lifetime: ECR 12 h, ACR 3 h, Google 1 h; a shorter one is kept", () => {
    const now = 1_800_000_000_000;
    const far = 99_999_999_999_000;
    expect(boundedCloudExpiry("aws", far, now)).toBe(now + 12 * HOUR);
    expect(boundedCloudExpiry("azure", far, now)).toBe(now + 3 * HOUR);
    expect(boundedCloudExpiry("gcp", far, now)).toBe(now + HOUR);
    expect(boundedCloudExpiry("gcp", Number.NaN, now)).toBe(now + HOUR);
    expect(boundedCloudExpiry("aws", now + HOUR, now)).toBe(now + HOUR);
  });

  it("never keeps a token that has expired already", () => {
    const c = clock();
    const cache = new CloudTokenCache(c.now);
    cache.set("k", minted(c.now()));
    expect(cache.get("k")).toBeUndefined();
  });

  it("keys by provider, identity, registry and parameters", () => {
    const keys = new Set([
      cloudTokenKey(AWS, "role-a", "r.example"),
      cloudTokenKey(AWS, "role-b", "r.example"),
      cloudTokenKey(AWS, "role-a", "s.example"),
      cloudTokenKey({ ...AWS, region: "us-east-1" }, "role-a", "r.example"),
      cloudTokenKey({ ...AWS, account: "123456789012" }, "role-a", "r.example"),
      cloudTokenKey({ provider: "gcp" }, "role-a", "r.example"),
      cloudTokenKey({ provider: "azure", tenantId: "t", clientId: undefined }, "role-a", "r.example"),
      cloudTokenKey({ provider: "azure", tenantId: undefined, clientId: "t" }, "role-a", "r.example"),
    ]);
    expect(keys.size).toBe(8);
  });
});
