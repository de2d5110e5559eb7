/**
 * The registry hosts a cloud-minted credential may go to (src/core/cloud-hosts.ts): each cloud's
 * own registry hosts, or the operator's patterns, never a look-alike.
 */
import { describe, expect, it } from "vitest";
import type { CloudAuth } from "../../src/core/cloud-auth.js";
import { cloudHostAllowed, parseCloudHostPattern } from "../../src/core/cloud-hosts.js";

const AWS: CloudAuth = { provider: "aws", region: "eu-west-1", account: undefined };
const AZURE: CloudAuth = { provider: "azure", tenantId: undefined, clientId: undefined };
const GCP: CloudAuth = { provider: "gcp" };

describe("cloud registry hosts", () => {
  it.each([
    [AWS, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", true],
    [AWS, "123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn", true],
    [AWS, "123456789012.dkr.ecr.us-east-1.amazonaws.com", false],
    [AWS, "dkr.ecr.eu-west-1.amazonaws.com", false],
    [AWS, "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example", false],
    [AWS, "123456789012.dkr.ecr.eu-west-1.amazonaws.com:8443", false],
    [AWS, "myreg.azurecr.io", false],
    [AZURE, "myreg.azurecr.io", true],
    [AZURE, "myreg.azurecr.cn", true],
    [AZURE, "myreg.azurecr.us", true],
    [AZURE, "azurecr.io", false],
    [AZURE, "myreg.azurecr.io.evil.example", false],
    [AZURE, "evilazurecr.io", false],
    [GCP, "europe-docker.pkg.dev", true],
    [GCP, "gcr.io", true],
    [GCP, "eu.gcr.io", true],
    [GCP, "pkg.dev", false],
    [GCP, "127.0.0.1:5000", false],
  ])("%j %s: %s", (auth, host, allowed) => {
    expect(cloudHostAllowed(auth, host, [])).toBe(allowed);
  });

  it("the operator's patterns add hosts, a port only where named, a wildcard for names under it", () => {
    const patterns = ["127.0.0.1:5000", "*.corp.example", "proxy.corp.test"].map((p) => parseCloudHostPattern(p) ?? "");
    expect(cloudHostAllowed(GCP, "127.0.0.1:5000", patterns)).toBe(true);
    expect(cloudHostAllowed(GCP, "127.0.0.1:5001", patterns)).toBe(false);
    expect(cloudHostAllowed(GCP, "127.0.0.1", patterns)).toBe(false);
    expect(cloudHostAllowed(AZURE, "acr.corp.example", patterns)).toBe(true);
    expect(cloudHostAllowed(AZURE, "a.b.corp.example", patterns)).toBe(true);
    expect(cloudHostAllowed(AZURE, "corp.example", patterns)).toBe(false);
    expect(cloudHostAllowed(AZURE, "acr.corp.example:5000", patterns)).toBe(false);
    expect(cloudHostAllowed(AWS, "proxy.corp.test", patterns)).toBe(true);
    expect(cloudHostAllowed(AWS, "proxy.corp.test.evil", patterns)).toBe(false);
  });

  it("parses HOST[:PORT] with a leading *., lowercased, :443 dropped; refuses anything else", () => {
    expect(parseCloudHostPattern("Registry.Corp.Example:443")).toBe("registry.corp.example");
    expect(parseCloudHostPattern("*.corp.example:5000")).toBe("*.corp.example:5000");
    expect(parseCloudHostPattern("[::1]:5000")).toBe("[::1]:5000");
    for (const bad of [
      "",
      "*",
      "*.",
      "a.*.b",
      "https://r.example",
      "r.example/path",
      "r.example:0",
      "r.example:70000",
      "a b",
    ])
      expect(parseCloudHostPattern(bad), bad).toBeUndefined();
  });
});
