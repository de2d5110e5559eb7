/**
 * Stripping a URL scheme from a registry key is one function (withoutScheme,
 * src/core/registry-address.ts). Keys in an operator's Docker config may carry one
 * (`https://index.docker.io/v1/`); OpenTofu's lookup never matches such a key, and the
 * deduplication identity ignores the scheme and any path after it.
 */
import { describe, expect, it } from "vitest";
import { keySpecificity } from "../../src/core/opentofu-resolver.js";
import { identityOfConfigKey, registryOfConfigKey, withoutScheme } from "../../src/core/registry-address.js";

const CASES: [string, string][] = [
  ["https://index.docker.io/v1/", "index.docker.io/v1/"],
  ["http://localhost:5000", "localhost:5000"],
  ["HTTPS://GHCR.IO", "GHCR.IO"],
  ["oci://ghcr.io/org/mod", "ghcr.io/org/mod"],
  ["git+ssh://host/x", "host/x"],
  ["a.b-c+d://h", "h"],
  ["ghcr.io", "ghcr.io"],
  ["ghcr.io/org", "ghcr.io/org"],
  ["localhost:5000", "localhost:5000"],
  ["https:/ghcr.io", "https:/ghcr.io"],
  ["1http://ghcr.io", "1http://ghcr.io"],
  ["://ghcr.io", "://ghcr.io"],
  ["ghcr.io/https://x", "ghcr.io/https://x"],
  ["", ""],
];

describe("withoutScheme", () => {
  it.each(CASES)("%j → %j", (key, expected) => {
    expect(withoutScheme(key)).toBe(expected);
  });
});

describe("every scheme-aware caller applies withoutScheme", () => {
  it.each(CASES.filter(([key, bare]) => key !== bare))(
    "%j: OpenTofu never matches it; the identity is its host's",
    (key, bare) => {
      const host = bare.split("/")[0] ?? "";
      expect(keySpecificity(key, host, "org/mod")).toBe(0);
      expect(keySpecificity(host, host, "org/mod")).toBe(2);
      expect(registryOfConfigKey(key)).toBe(registryOfConfigKey(host));
      // A scheme makes the key a legacy host key: its path is not a repository scope.
      expect(identityOfConfigKey(key)).toBe(registryOfConfigKey(host));
    },
  );
});
