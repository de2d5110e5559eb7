import { describe, expect, it } from "vitest";
import { selectCredentials, type SelectedCredential } from "../../src/core/credential-selection.js";
import {
  encodeAuth,
  parseBaseDockerConfig,
  renderRegistryFiles,
  type DockerConfigDoc,
} from "../../src/core/docker-config.js";
import { AgentError } from "../../src/core/errors.js";
import { parseExport } from "../../src/core/export-payload.js";

type Raw = Record<string, unknown>;

function selected(registries: Raw[]): readonly SelectedCredential[] {
  const s = selectCredentials(parseExport(JSON.stringify({ version: 1, registries })));
  expect(s.ignored).toEqual([]);
  return s.selected;
}

function pw(id: string, url: string, username = `user-${id}`, password = `pw-${id}`): Raw {
  return { id, url, username, password };
}

interface Doc {
  auths: Record<string, { auth?: string; username?: string; password?: string } | null>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [k: string]: unknown;
}

function render(registries: Raw[], base?: DockerConfigDoc) {
  const out = renderRegistryFiles(selected(registries), base);
  expect(out.dockerConfig.endsWith("}\n")).toBe(true);
  expect(out.containersAuth.endsWith("}\n")).toBe(true);
  return {
    docker: JSON.parse(out.dockerConfig) as Doc,
    containers: JSON.parse(out.containersAuth) as Doc,
    overridden: out.overridden,
    raw: out,
  };
}

function b64(s: string): string {
  return Buffer.from(s, "utf8").toString("base64");
}

describe("encodeAuth", () => {
  it.each([
    ["octocat", "ghp_abc", "octocat:ghp_abc"],
    ["u", "pa:ss:word", "u:pa:ss:word"],
    ["ünï", "пароль€\"'{}", "ünï:пароль€\"'{}"],
    ["u", " spaced ", "u: spaced "],
  ])("%s / %s is standard base64 of user:password (UTF-8)", (user, password, joined) => {
    const auth = encodeAuth(user, password);
    expect(auth).toBe(Buffer.from(joined, "utf8").toString("base64"));
    expect(auth).toMatch(/^[A-Za-z0-9+/]*={0,2}$/);
    const decoded = Buffer.from(auth, "base64").toString("utf8");
    // Readers split at the first colon.
    expect(decoded.slice(0, decoded.indexOf(":"))).toBe(user);
    expect(decoded.slice(decoded.indexOf(":") + 1)).toBe(password);
  });
});

describe("renderRegistryFiles: keys per family", () => {
  it.each([
    ["https://ghcr.io", ["ghcr.io"], ["ghcr.io"]],
    ["https://GHCR.io:443/", ["ghcr.io"], ["ghcr.io"]],
    ["https://registry.example.com:5000", ["registry.example.com:5000"], ["registry.example.com:5000"]],
    ["https://docker.io", ["https://index.docker.io/v1/", "registry-1.docker.io"], ["docker.io"]],
    ["https://index.docker.io/v1/", ["https://index.docker.io/v1/", "registry-1.docker.io"], ["docker.io"]],
    ["https://registry-1.docker.io", ["https://index.docker.io/v1/", "registry-1.docker.io"], ["docker.io"]],
    ["https://ghcr.io/org-a", ["ghcr.io/org-a"], ["ghcr.io/org-a"]],
    ["https://docker.io/myorg", ["registry-1.docker.io/myorg"], ["docker.io/myorg"]],
  ])("%s → docker %j, containers %j", (url, dockerKeys, containersKeys) => {
    const { docker, containers } = render([pw("a", url, "octo", "s3:cr:et")]);
    const auth = b64("octo:s3:cr:et");
    expect(Object.keys(docker.auths).sort()).toEqual([...dockerKeys].sort());
    for (const k of dockerKeys) expect(docker.auths[k]).toEqual({ auth });
    expect(Object.keys(containers.auths)).toEqual(containersKeys);
    for (const k of containersKeys) expect(containers.auths[k]).toEqual({ auth });
    // Only `auth` is written; no credHelpers without a base credsStore or a helper entry.
    expect(docker.credHelpers).toBeUndefined();
    expect(containers.credHelpers).toBeUndefined();
    expect(Object.keys(docker)).toEqual(["auths"]);
    expect(Object.keys(containers)).toEqual(["auths"]);
  });

  it("renders several registries, each with its own credential, byte-for-byte reproducibly", () => {
    const regs = [pw("g", "https://ghcr.io"), pw("d", "https://docker.io"), pw("q", "https://quay.io:8443")];
    const a = renderRegistryFiles(selected(regs), undefined);
    const b = renderRegistryFiles(selected([...regs].reverse()), undefined);
    expect(b.dockerConfig).toBe(a.dockerConfig);
    expect(b.containersAuth).toBe(a.containersAuth);
    const docker = JSON.parse(a.dockerConfig) as Doc;
    expect(docker.auths["ghcr.io"]?.auth).toBe(b64("user-g:pw-g"));
    expect(docker.auths["registry-1.docker.io"]?.auth).toBe(b64("user-d:pw-d"));
    expect(docker.auths["quay.io:8443"]?.auth).toBe(b64("user-q:pw-q"));
  });

  it("keeps the password JSON-escaped in the file text and intact after parsing", () => {
    const password = 'a"b\\c\n{}:€';
    const { docker, raw } = render([pw("a", "https://ghcr.io", "u", password)]);
    expect(Buffer.from(docker.auths["ghcr.io"]?.auth ?? "", "base64").toString("utf8")).toBe(`u:${password}`);
    // Only the base64 form is written: never the raw password.
    expect(raw.dockerConfig).not.toContain("€");
    expect(raw.containersAuth).not.toContain("€");
  });
});

describe("renderRegistryFiles: credential helpers", () => {
  it("writes credHelpers for a helper entry in every family, and no auths for it", () => {
    const { docker, containers } = render([
      { id: "e", url: "https://123.dkr.ecr.us-east-1.amazonaws.com", credential_helper: "ecr-login" },
    ]);
    expect(docker.auths).toEqual({});
    expect(docker.credHelpers).toEqual({ "123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login" });
    expect(containers.auths).toEqual({});
    expect(containers.credHelpers).toEqual({ "123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login" });
  });

  it("a Docker Hub helper is keyed for the Docker CLI and for OpenTofu", () => {
    const { docker, containers } = render([{ id: "e", url: "https://docker.io", credential_helper: "desktop" }]);
    expect(docker.credHelpers).toEqual({ "https://index.docker.io/v1/": "desktop", "registry-1.docker.io": "desktop" });
    expect(containers.credHelpers).toEqual({ "docker.io": "desktop" });
  });

  it("a helper entry next to a password entry", () => {
    const { docker, containers } = render([
      { id: "e", url: "https://ecr.example.com", credential_helper: "ecr-login" },
      pw("g", "https://ghcr.io"),
    ]);
    expect(docker.auths).toEqual({ "ghcr.io": { auth: b64("user-g:pw-g") } });
    expect(docker.credHelpers).toEqual({ "ecr.example.com": "ecr-login" });
    expect(containers.credHelpers).toEqual({ "ecr.example.com": "ecr-login" });
  });

  it("a helper export replaces the base's auths for that host", () => {
    const base = parseBaseDockerConfig(
      JSON.stringify({ auths: { "ecr.example.com": { auth: b64("old:old") } } }),
      "base.json",
    );
    const { docker, containers, overridden } = render(
      [{ id: "e", url: "https://ecr.example.com", credential_helper: "ecr-login" }],
      base,
    );
    expect(docker.auths).toEqual({});
    expect(containers.auths).toEqual({});
    expect(overridden).toEqual([{ key: "ecr.example.com", kind: "auths" }]);
  });
});

describe("renderRegistryFiles: merging the operator's base config", () => {
  const otherAuth = b64("ops:ops-pw");
  const baseText = JSON.stringify({
    auths: {
      "quay.io": { auth: otherAuth },
      "registry.internal:5000": { username: "svc", password: "svc:pw" },
      "ghcr.io": { auth: b64("stale:stale") },
      "https://ghcr.io": { auth: b64("stale2:stale2") },
      "ghcr.io/other-org": { auth: b64("scoped:scoped") },
      "https://index.docker.io/v1/": { auth: b64("hub-old:hub-old") },
      "empty.example.com": null,
    },
    credHelpers: { "gcr.io": "gcloud", "GHCR.IO": "osxkeychain", "registry-1.docker.io": "desktop" },
    HttpHeaders: { "User-Agent": "ops" },
    proxies: { default: { httpProxy: "http://proxy:3128" } },
  });

  it("keeps other registries, drops every base entry of an exported host (aliases and schemes included)", () => {
    const base = parseBaseDockerConfig(baseText, "base.json");
    const { docker, containers, overridden } = render(
      [pw("g", "https://ghcr.io"), pw("d", "https://registry-1.docker.io")],
      base,
    );
    const exported = { auth: b64("user-g:pw-g") };
    const hub = { auth: b64("user-d:pw-d") };
    expect(docker.auths).toEqual({
      "quay.io": { auth: otherAuth },
      // username/password gains `auth`, which is all OpenTofu reads.
      "registry.internal:5000": { username: "svc", password: "svc:pw", auth: b64("svc:svc:pw") },
      "empty.example.com": null,
      "ghcr.io": exported,
      "https://index.docker.io/v1/": hub,
      "registry-1.docker.io": hub,
    });
    expect(docker.credHelpers).toEqual({ "gcr.io": "gcloud" });
    expect(docker["HttpHeaders"]).toEqual({ "User-Agent": "ops" });
    expect(docker["proxies"]).toEqual({ default: { httpProxy: "http://proxy:3128" } });
    expect(containers.auths).toEqual({
      "quay.io": { auth: otherAuth },
      "registry.internal:5000": { username: "svc", password: "svc:pw", auth: b64("svc:svc:pw") },
      "empty.example.com": null,
      "ghcr.io": exported,
      "docker.io": hub,
    });
    expect(containers.credHelpers).toEqual({ "gcr.io": "gcloud" });
    expect(Object.keys(containers).sort()).toEqual(["auths", "credHelpers"]);
    expect(overridden).toEqual(
      expect.arrayContaining([
        { key: "ghcr.io", kind: "auths" },
        { key: "https://ghcr.io", kind: "auths" },
        { key: "ghcr.io/other-org", kind: "auths" },
        { key: "https://index.docker.io/v1/", kind: "auths" },
        { key: "GHCR.IO", kind: "credHelpers" },
        { key: "registry-1.docker.io", kind: "credHelpers" },
      ]),
    );
    expect(overridden).toHaveLength(6);
  });

  it("a scoped export replaces only the same scope, not the host's other entries", () => {
    const base = parseBaseDockerConfig(
      JSON.stringify({
        auths: {
          "ghcr.io": { auth: b64("host:host") },
          "ghcr.io/org-a": { auth: b64("old:old") },
          "ghcr.io/org-b": { auth: b64("b:b") },
        },
        credHelpers: { "ghcr.io": "osxkeychain" },
      }),
      "base.json",
    );
    const { docker, containers, overridden } = render([pw("s", "https://ghcr.io/org-a")], base);
    expect(docker.auths).toEqual({
      "ghcr.io": { auth: b64("host:host") },
      "ghcr.io/org-a": { auth: b64("user-s:pw-s") },
      "ghcr.io/org-b": { auth: b64("b:b") },
    });
    expect(docker.credHelpers).toEqual({ "ghcr.io": "osxkeychain" });
    expect(containers.auths["ghcr.io/org-a"]).toEqual({ auth: b64("user-s:pw-s") });
    expect(overridden).toEqual([{ key: "ghcr.io/org-a", kind: "auths" }]);
  });

  it("with a credsStore, adds an empty credHelpers entry per exported Docker key (docker file only)", () => {
    const base = parseBaseDockerConfig(
      JSON.stringify({ auths: { "quay.io": {} }, credsStore: "desktop" }),
      "base.json",
    );
    const { docker, containers } = render(
      [pw("g", "https://ghcr.io"), pw("d", "https://docker.io"), pw("p", "https://r.example.com:5000")],
      base,
    );
    expect(docker.credsStore).toBe("desktop");
    expect(docker.credHelpers).toEqual({ "ghcr.io": "", "https://index.docker.io/v1/": "", "r.example.com:5000": "" });
    expect(docker.auths["quay.io"]).toEqual({});
    // skopeo would run `docker-credential-` for an empty helper name.
    expect(containers.credHelpers).toBeUndefined();
    expect(containers.credsStore).toBeUndefined();
    expect(JSON.stringify(containers)).not.toContain('""');
  });

  it("an empty credsStore adds no empty helpers", () => {
    const base = parseBaseDockerConfig(JSON.stringify({ credsStore: "" }), "base.json");
    const { docker } = render([pw("g", "https://ghcr.io")], base);
    expect(docker.credHelpers).toBeUndefined();
  });

  it("with a credsStore, a helper export keeps its helper name", () => {
    const base = parseBaseDockerConfig(JSON.stringify({ credsStore: "desktop" }), "base.json");
    const { docker } = render([{ id: "e", url: "https://ecr.example.com", credential_helper: "ecr-login" }], base);
    expect(docker.credHelpers).toEqual({ "ecr.example.com": "ecr-login" });
  });

  it("renders the base's other registries when nothing is exported", () => {
    const base = parseBaseDockerConfig(
      JSON.stringify({ auths: { "quay.io": { auth: otherAuth } }, credHelpers: { "gcr.io": "gcloud" } }),
      "b",
    );
    const out = renderRegistryFiles([], base);
    expect(JSON.parse(out.dockerConfig)).toEqual({
      auths: { "quay.io": { auth: otherAuth } },
      credHelpers: { "gcr.io": "gcloud" },
    });
    expect(JSON.parse(out.containersAuth)).toEqual({
      auths: { "quay.io": { auth: otherAuth } },
      credHelpers: { "gcr.io": "gcloud" },
    });
    expect(out.overridden).toEqual([]);
  });

  it("removes a base credHelpers object that becomes empty", () => {
    const base = parseBaseDockerConfig(JSON.stringify({ credHelpers: { "ghcr.io": "osxkeychain" } }), "b");
    const { docker } = render([pw("g", "https://ghcr.io")], base);
    expect("credHelpers" in docker).toBe(false);
  });
});

describe("parseBaseDockerConfig", () => {
  it("accepts what Docker writes", () => {
    const doc = parseBaseDockerConfig(
      '{"auths":{"ghcr.io":{"auth":"dTpw"}},"credsStore":"desktop","currentContext":"x"}',
      "c",
    );
    expect(doc.auths?.["ghcr.io"]?.auth).toBe("dTpw");
    expect(doc.credsStore).toBe("desktop");
    expect((doc as Record<string, unknown>)["currentContext"]).toBe("x");
  });

  it.each([
    ["not JSON", "{auths:", /not valid JSON/],
    ["an array", "[]", /not a Docker config file/],
    ["a string", '"x"', /not a Docker config file/],
    ["auths as an array", '{"auths":[]}', /auths/],
    ["an auths entry that is a string", '{"auths":{"ghcr.io":"CANARY-secret-value"}}', /auths\.ghcr\.io/],
    ["an auth field that is a number", '{"auths":{"ghcr.io":{"auth":5}}}', /auths\.ghcr\.io/],
    ["credHelpers with a number", '{"credHelpers":{"ghcr.io":1}}', /credHelpers\.ghcr\.io/],
    ["credsStore not a string", '{"credsStore":true}', /credsStore/],
  ])("refuses %s with BASE_DOCKER_CONFIG_INVALID", (_name, text, message) => {
    let caught: unknown;
    try {
      parseBaseDockerConfig(text, "/etc/ops/base.json");
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(AgentError);
    const e = caught as AgentError;
    expect(e.code).toBe("BASE_DOCKER_CONFIG_INVALID");
    expect(e.message).toContain("/etc/ops/base.json");
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain("CANARY");
    expect(JSON.stringify(e.details)).not.toContain("CANARY");
  });
});
