import { describe, expect, it } from "vitest";
import {
  DOCKER_HUB_KEYS,
  identityOfConfigKey,
  normalizeRegistryUrl,
  registryOfConfigKey,
  repositoryPath,
  targetForHost,
  type EntryRefusalCode,
  type RegistryTarget,
} from "../../src/core/registry-address.js";

function ok(raw: string): RegistryTarget {
  const result = normalizeRegistryUrl(raw);
  if (!result.ok) throw new Error(`${raw} was refused: ${result.code} ${result.reason}`);
  return result.target;
}

describe("normalizeRegistryUrl: Docker Hub aliases are one registry", () => {
  it.each([
    "https://docker.io",
    "https://docker.io/",
    "https://index.docker.io",
    "https://index.docker.io/v1/",
    "https://index.docker.io/v1",
    "https://registry-1.docker.io",
    "https://registry-1.docker.io/v2/",
    "https://registry.hub.docker.com",
    "https://Registry-1.Docker.IO",
    "https://DOCKER.IO:443/",
  ])("%s → docker.io with one key per family", (raw) => {
    const t = ok(raw);
    expect(t.registry).toBe("docker.io");
    expect(t.hostKey).toBe("registry-1.docker.io");
    expect(t.host).toBe("registry-1.docker.io");
    expect(t.path).toBeUndefined();
    expect(t.keys).toEqual({
      opentofu: "registry-1.docker.io",
      docker: "https://index.docker.io/v1/",
      containers: "docker.io",
    });
    expect(t.keys).toEqual(DOCKER_HUB_KEYS);
  });
});

describe("normalizeRegistryUrl: host, case, port, slashes", () => {
  it.each([
    ["https://ghcr.io", "ghcr.io"],
    ["https://ghcr.io/", "ghcr.io"],
    ["https://GHCR.IO", "ghcr.io"],
    ["https://GitLab.Example.COM/", "gitlab.example.com"],
    ["https://ghcr.io:443", "ghcr.io"],
    ["https://ghcr.io:443/", "ghcr.io"],
    ["https://GHCR.io:443/", "ghcr.io"],
    ["https://ghcr.io:0443", "ghcr.io"],
    ["https://ghcr.io/v2/", "ghcr.io"],
    ["https://ghcr.io/v2", "ghcr.io"],
    ["https://ghcr.io/v1/", "ghcr.io"],
    ["https://registry.example.com:5000", "registry.example.com:5000"],
    ["https://registry.example.com:5000/", "registry.example.com:5000"],
    ["https://Registry.Example.com:8443/v2/", "registry.example.com:8443"],
    ["https://localhost:5000", "localhost:5000"],
    ["https://127.0.0.1:5000", "127.0.0.1:5000"],
    ["https://[::1]:5000", "[::1]:5000"],
    ["https://jfrog.example.com:80", "jfrog.example.com:80"],
    ["  https://ghcr.io  ", "ghcr.io"],
  ])("%j → %s", (raw, key) => {
    const t = ok(raw);
    expect(t.registry).toBe(key);
    expect(t.hostKey).toBe(key);
    expect(t.host).toBe(key);
    expect(t.path).toBeUndefined();
    // Not Docker Hub: every family uses the same host[:port] key, never with a scheme.
    expect(t.keys).toEqual({ opentofu: key, docker: key, containers: key });
  });

  it("keeps an explicit non-default port distinct from the default one", () => {
    expect(ok("https://r.example.com:5000").registry).not.toBe(ok("https://r.example.com").registry);
    expect(ok("https://r.example.com:443").registry).toBe(ok("https://r.example.com").registry);
  });

  it("the fast path and the full URL parse agree on ordinary endpoints", () => {
    // A leading space bypasses the anchored fast path; both must give the same target.
    for (const raw of [
      "https://ghcr.io",
      "https://ghcr.io/",
      "https://ghcr.io:443",
      "https://ghcr.io:5000",
      "https://registry-1.docker.io",
      "https://docker.io",
      "https://a-b.example.com:65535/",
      "https://10.1.2.3:5000",
    ]) {
      expect(ok(` ${raw}`)).toEqual(ok(raw));
    }
  });
});

describe("normalizeRegistryUrl: repository-scoped paths", () => {
  it.each([
    ["https://ghcr.io/org-a", "ghcr.io/org-a", "ghcr.io", "org-a"],
    ["https://ghcr.io/org-a/", "ghcr.io/org-a", "ghcr.io", "org-a"],
    ["https://ghcr.io/org-a/team", "ghcr.io/org-a/team", "ghcr.io", "org-a/team"],
    ["https://GHCR.io/org_a/team.x/", "ghcr.io/org_a/team.x", "ghcr.io", "org_a/team.x"],
    ["https://registry.example.com:5000/ns", "registry.example.com:5000/ns", "registry.example.com:5000", "ns"],
    ["https://ghcr.io:443/org-a", "ghcr.io/org-a", "ghcr.io", "org-a"],
  ])("%s → %s", (raw, registry, hostKey, path) => {
    const t = ok(raw);
    expect(t.registry).toBe(registry);
    expect(t.host).toBe(registry);
    expect(t.hostKey).toBe(hostKey);
    expect(t.path).toBe(path);
    expect(t.keys.opentofu).toBe(registry);
    expect(t.keys.containers).toBe(registry);
    // The Docker CLI family matches hosts only: no key for a scoped credential.
    expect(t.keys.docker).toBeUndefined();
  });

  it("a Docker Hub scope keys OpenTofu on registry-1.docker.io and containers on docker.io", () => {
    const t = ok("https://index.docker.io/myorg");
    expect(t.registry).toBe("docker.io/myorg");
    expect(t.keys).toEqual({
      opentofu: "registry-1.docker.io/myorg",
      docker: undefined,
      containers: "docker.io/myorg",
    });
    expect(ok("https://docker.io/myorg").registry).toBe(t.registry);
    expect(ok("https://registry-1.docker.io/myorg/").registry).toBe(t.registry);
  });

  it("a scope is a different registry from its host", () => {
    expect(ok("https://ghcr.io/org-a").registry).not.toBe(ok("https://ghcr.io").registry);
    expect(ok("https://ghcr.io/org-a").registry).not.toBe(ok("https://ghcr.io/org-b").registry);
  });
});

describe("normalizeRegistryUrl: refusals", () => {
  it.each<[string, EntryRefusalCode, RegExp]>([
    ["http://ghcr.io", "ENTRY_NOT_HTTPS", /uses http;.*https/],
    ["HTTP://ghcr.io", "ENTRY_NOT_HTTPS", /https/],
    ["http://localhost:5000", "ENTRY_NOT_HTTPS", /https/],
    ["ftp://ghcr.io", "ENTRY_NOT_HTTPS", /ftp/],
    ["oci://ghcr.io", "ENTRY_NOT_HTTPS", /oci/],
    ["https://user:secret@ghcr.io", "ENTRY_URL_NOT_BARE", /user information/],
    ["https://user@ghcr.io", "ENTRY_URL_NOT_BARE", /user information/],
    ["https://ghcr.io?x=1", "ENTRY_URL_NOT_BARE", /query or fragment/],
    ["https://ghcr.io/?x=1", "ENTRY_URL_NOT_BARE", /query or fragment/],
    ["https://ghcr.io#frag", "ENTRY_URL_NOT_BARE", /query or fragment/],
    ["https://ghcr.io/org#frag", "ENTRY_URL_NOT_BARE", /query or fragment/],
    ["ghcr.io", "ENTRY_URL_INVALID", /not a URL/],
    ["not a url", "ENTRY_URL_INVALID", /not a URL/],
    ["", "ENTRY_URL_INVALID", /not a URL/],
    ["https://", "ENTRY_URL_INVALID", /not a URL/],
    ["https://ghcr.io:99999", "ENTRY_URL_INVALID", /not a URL/],
    ["https://ghcr.io/Org-A", "ENTRY_URL_HAS_PATH", /not a repository path/],
    ["https://ghcr.io/org--a_", "ENTRY_URL_HAS_PATH", /not a repository path/],
    ["https://ghcr.io//", "ENTRY_URL_HAS_PATH", /not a repository path/],
    ["https://ghcr.io/a//b", "ENTRY_URL_HAS_PATH", /not a repository path/],
    ["https://ghcr.io/org%20a", "ENTRY_URL_HAS_PATH", /not a repository path/],
  ])("%j is refused with %s", (raw, code, reason) => {
    const result = normalizeRegistryUrl(raw);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.code).toBe(code);
    expect(result.reason).toMatch(reason);
  });

  it("never repeats the password of a URL with user information in its reason", () => {
    const result = normalizeRegistryUrl("https://octocat:ghp_CANARYsecret@ghcr.io");
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result)).not.toContain("ghp_CANARYsecret");
  });

  it("suggests the bare host for a path that is not a repository path", () => {
    const result = normalizeRegistryUrl("https://ghcr.io:5000/Bad");
    expect(result).toMatchObject({ ok: false, code: "ENTRY_URL_HAS_PATH" });
    if (!result.ok) expect(result.reason).toContain("https://ghcr.io:5000");
  });
});

describe("helpers", () => {
  it.each([
    ["/org-a", "org-a"],
    ["/org-a/", "org-a"],
    ["/a/b/c", "a/b/c"],
    ["/a.b_c__d-e", "a.b_c__d-e"],
    ["/A", undefined],
    ["/a..b", undefined],
    ["/-a", undefined],
    ["/", undefined],
  ])("repositoryPath(%j) = %j", (path, expected) => {
    expect(repositoryPath(path)).toBe(expected);
  });

  it.each([
    ["ghcr.io", "ghcr.io"],
    ["GHCR.IO", "ghcr.io"],
    ["https://ghcr.io", "ghcr.io"],
    ["https://index.docker.io/v1/", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["docker.io", "docker.io"],
    ["ghcr.io:443", "ghcr.io"],
    ["localhost:5000", "localhost:5000"],
    ["ghcr.io/org-a", "ghcr.io/org-a"],
    ["registry-1.docker.io/myorg", "docker.io/myorg"],
    // A scheme marks a legacy Docker key: its path is not a repository scope.
    ["https://ghcr.io/org-a", "ghcr.io"],
    ["", undefined],
  ])("identityOfConfigKey(%j) = %j", (key, expected) => {
    expect(identityOfConfigKey(key)).toBe(expected);
  });

  it.each([
    ["https://index.docker.io/v1/", "docker.io"],
    ["ghcr.io/org/repo", "ghcr.io"],
    ["Quay.IO", "quay.io"],
    ["", undefined],
  ])("registryOfConfigKey(%j) = %j", (key, expected) => {
    expect(registryOfConfigKey(key)).toBe(expected);
  });

  it("targetForHost folds hub aliases and lowercases", () => {
    expect(targetForHost("Index.Docker.IO").registry).toBe("docker.io");
    expect(targetForHost("Quay.io").keys).toEqual({ opentofu: "quay.io", docker: "quay.io", containers: "quay.io" });
  });
});
