import { describe, expect, it } from "vitest";
import { selectCredentials } from "../../src/core/credential-selection.js";
import { parseBaseDockerConfig, renderRegistryFiles } from "../../src/core/docker-config.js";
import { parseExport } from "../../src/core/export-payload.js";
import { keySpecificity, resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";
import { renderTofuCliConfig } from "../../src/core/tofu-cli-config.js";

type Files = Record<string, string>;

function reader(files: Files): (path: string) => string | undefined {
  return (path) => files[path];
}

function auth(user: string, password: string): string {
  return Buffer.from(`${user}:${password}`, "utf8").toString("base64");
}

function dockerFile(auths: Record<string, string | null | object>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    auths: Object.fromEntries(Object.entries(auths).map(([k, v]) => [k, typeof v === "string" ? { auth: v } : v])),
    ...extra,
  });
}

const HOME = "/home/op";
const CLI = "/run/r/tofu/cli.tfrc";
const FILE = "/run/r/docker/config.json";
const cliWithFiles = (...files: string[]): string =>
  `oci_default_credentials {\n  docker_style_config_files = [${files.map((f) => JSON.stringify(f)).join(", ")}]\n}\n`;

describe("keySpecificity", () => {
  it.each([
    ["ghcr.io", "ghcr.io", "org/mod", 2],
    ["ghcr.io/org", "ghcr.io", "org/mod", 3],
    ["ghcr.io/org/mod", "ghcr.io", "org/mod", 4],
    ["ghcr.io/org/mod/x", "ghcr.io", "org/mod", 0],
    ["ghcr.io/org2", "ghcr.io", "org/mod", 0],
    ["ghcr.io/or", "ghcr.io", "org/mod", 0],
    ["GHCR.io", "ghcr.io", "org/mod", 0],
    ["https://ghcr.io", "ghcr.io", "org/mod", 0],
    ["https://index.docker.io/v1/", "index.docker.io", "v1", 0],
    ["ghcr.io:443", "ghcr.io", "org/mod", 0],
    ["localhost:5000", "localhost:5000", "m", 2],
    ["ghcr.io/", "ghcr.io", "org/mod", 0],
    ["", "ghcr.io", "org/mod", 0],
  ])("key %j for %s/%s → %d", (key, host, repo, expected) => {
    expect(keySpecificity(key, host, repo)).toBe(expected);
  });
});

describe("resolveOpenTofuCredential: lookup rules", () => {
  it.each<[string, Files, Record<string, string>, string, Record<string, unknown>]>([
    [
      "the most specific path wins within one file",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({
          "ghcr.io": auth("host", "h"),
          "ghcr.io/org": auth("org", "o"),
          "ghcr.io/org/mod": auth("mod", "m"),
        }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod?tag=1",
      { source: "static", username: "mod", password: "m", key: "ghcr.io/org/mod" },
    ],
    [
      "a scope that does not match falls back to the host key",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({ "ghcr.io": auth("host", "h"), "ghcr.io/other": auth("o", "o") }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "host", key: "ghcr.io" },
    ],
    [
      "a more specific key in a later file beats a host key in an earlier file",
      {
        [CLI]: cliWithFiles("/a.json", "/b.json"),
        "/a.json": dockerFile({ "ghcr.io": auth("a", "a") }),
        "/b.json": dockerFile({ "ghcr.io/org": auth("b", "b") }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "b", file: "/b.json" },
    ],
    [
      "on a tie the earlier file wins",
      {
        [CLI]: cliWithFiles("/a.json", "/b.json"),
        "/a.json": dockerFile({ "ghcr.io": auth("a", "a") }),
        "/b.json": dockerFile({ "ghcr.io": auth("b", "b") }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "a", file: "/a.json" },
    ],
    [
      "inside one file, auths beats credHelpers for the same host",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({ "ghcr.io": auth("a", "a") }, { credHelpers: { "ghcr.io": "osxkeychain" } }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "a" },
    ],
    [
      "credHelpers is used when there is no auths entry",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({}, { credHelpers: { "ghcr.io": "ecr-login" } }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "helper", helper: "ecr-login" },
    ],
    [
      "an empty credHelpers name is skipped; credsStore is the global fallback below auths",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({ "ghcr.io": auth("a", "a") }, { credHelpers: { "ghcr.io": "" }, credsStore: "desktop" }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "a" },
    ],
    [
      "credsStore serves a host with no entry",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "ghcr.io": auth("a", "a") }, { credsStore: "desktop" }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://quay.io/org/mod",
      { source: "helper", helper: "desktop", key: "(credsStore)" },
    ],
    [
      "a key with a scheme never matches",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "https://ghcr.io": auth("a", "a") }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "Docker Hub: oci://docker.io never gets the registry-1.docker.io credential",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({
          "registry-1.docker.io": auth("hub", "h"),
          "https://index.docker.io/v1/": auth("hub", "h"),
        }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://docker.io/ns/mod",
      { source: "none" },
    ],
    [
      "Docker Hub: oci://registry-1.docker.io gets it",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "registry-1.docker.io": auth("hub", "h") }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://registry-1.docker.io/ns/mod",
      { source: "static", username: "hub" },
    ],
    [
      "hosts are compared case-sensitively and ports are part of the key",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "GHCR.IO": auth("a", "a"), "ghcr.io:5000": auth("p", "p") }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "auth is split at the first colon",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "ghcr.io": auth("u", "p:a:ss") }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "u", password: "p:a:ss" },
    ],
    [
      "null, {} and empty auth entries are skipped",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({
          "ghcr.io/org/mod": null,
          "ghcr.io/org": {},
          "ghcr.io/org/mod/x": "",
          "ghcr.io": auth("host", "h"),
        }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "host" },
    ],
    [
      "username/password fields are ignored: only auth is read",
      { [CLI]: cliWithFiles(FILE), [FILE]: dockerFile({ "ghcr.io": { username: "u", password: "p" } }) },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "relative docker_style_config_files resolve against the CLI config's folder",
      {
        [CLI]: cliWithFiles("../docker/config.json"),
        "/run/r/tofu/../docker/config.json": dockerFile({ "ghcr.io": auth("rel", "r") }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "rel" },
    ],
    [
      "a named file that is missing fails loudly",
      { [CLI]: cliWithFiles("/missing.json") },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none", error: expect.stringContaining("/missing.json") as unknown },
    ],
    [
      "a named file that does not parse fails loudly",
      { [CLI]: cliWithFiles(FILE), [FILE]: "{ half" },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none", error: expect.stringContaining("not valid JSON") as unknown },
    ],
    [
      "named files replace the ambient search",
      {
        [CLI]: cliWithFiles(FILE),
        [FILE]: dockerFile({}),
        [`${HOME}/.docker/config.json`]: dockerFile({ "ghcr.io": auth("ambient", "a") }),
      },
      { TF_CLI_CONFIG_FILE: CLI, HOME },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "DOCKER_CONFIG is ignored",
      { "/dc/config.json": dockerFile({ "ghcr.io": auth("dc", "d") }) },
      { HOME, DOCKER_CONFIG: "/dc", REGISTRY_AUTH_FILE: "/dc/config.json" },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "the ambient search: containers auth.json before ~/.docker/config.json",
      {
        [`${HOME}/.config/containers/auth.json`]: dockerFile({ "ghcr.io": auth("containers", "c") }),
        [`${HOME}/.docker/config.json`]: dockerFile({ "ghcr.io": auth("docker", "d") }),
      },
      { HOME },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "containers" },
    ],
    [
      "the ambient search starts with $XDG_RUNTIME_DIR when set",
      {
        "/run/user/0/containers/auth.json": dockerFile({ "ghcr.io": auth("runtime", "r") }),
        [`${HOME}/.config/containers/auth.json`]: dockerFile({ "ghcr.io": auth("config", "c") }),
      },
      { HOME, XDG_RUNTIME_DIR: "/run/user/0" },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "runtime" },
    ],
    [
      "one ambient file that does not parse drops every ambient file",
      {
        [`${HOME}/.config/containers/auth.json`]: dockerFile({ "ghcr.io": auth("good", "g") }),
        [`${HOME}/.dockercfg`]: "not json",
      },
      { HOME },
      "oci://ghcr.io/org/mod",
      { source: "none", error: expect.stringContaining("ignores every ambient") as unknown },
    ],
    [
      "discover_ambient_credentials = false reads no file",
      {
        [CLI]: "oci_default_credentials {\n  discover_ambient_credentials = false\n}\n",
        [`${HOME}/.docker/config.json`]: dockerFile({ "ghcr.io": auth("a", "a") }),
      },
      { TF_CLI_CONFIG_FILE: CLI, HOME },
      "oci://ghcr.io/org/mod",
      { source: "none" },
    ],
    [
      "a global docker_credentials_helper is the fallback",
      {
        [CLI]: 'oci_default_credentials {\n  docker_credentials_helper = "pass"\n}\n',
        [`${HOME}/.docker/config.json`]: dockerFile({ "quay.io": auth("q", "q") }),
      },
      { TF_CLI_CONFIG_FILE: CLI, HOME },
      "oci://ghcr.io/org/mod",
      { source: "helper", helper: "pass" },
    ],
    [
      "~/.tofurc is read when TF_CLI_CONFIG_FILE is not set",
      { [`${HOME}/.tofurc`]: cliWithFiles("/x.json"), "/x.json": dockerFile({ "ghcr.io": auth("rc", "r") }) },
      { HOME },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "rc" },
    ],
    [
      "a JSON CLI configuration",
      {
        [CLI]: JSON.stringify({ oci_default_credentials: { docker_style_config_files: [FILE] } }),
        [FILE]: dockerFile({ "ghcr.io": auth("json", "j") }),
      },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "static", username: "json" },
    ],
    [
      "two oci_default_credentials blocks are an error",
      { [CLI]: "oci_default_credentials {}\noci_default_credentials {}\n" },
      { TF_CLI_CONFIG_FILE: CLI },
      "oci://ghcr.io/org/mod",
      { source: "none", error: expect.stringContaining("more than one") as unknown },
    ],
    [
      "not an oci address",
      {},
      {},
      "https://ghcr.io/org/mod",
      { source: "none", error: expect.stringContaining("not an oci://") as unknown },
    ],
  ])("%s", (_name, files, env, address, expected) => {
    expect(resolveOpenTofuCredential(address, env, reader(files))).toMatchObject(expected);
  });
});

describe("resolveOpenTofuCredential: oci_credentials blocks come first", () => {
  const docker = dockerFile({ "ghcr.io": auth("file", "f"), "ghcr.io/org": auth("file-org", "fo") });
  const block = (label: string, body: string): string => `oci_credentials "${label}" {\n${body}\n}\n`;
  const defaults = cliWithFiles(FILE);

  it.each<[string, string, string, Record<string, unknown>]>([
    [
      "a block beats a file entry of the same specificity",
      block("ghcr.io", '  username = "blk"\n  password = "b:k"') + defaults,
      "oci://ghcr.io/other/mod",
      { source: "static", username: "blk", password: "b:k" },
    ],
    [
      "a more specific file entry beats a host block",
      block("ghcr.io", '  username = "blk"\n  password = "b"') + defaults,
      "oci://ghcr.io/org/mod",
      { source: "static", username: "file-org" },
    ],
    [
      "a scoped block beats a host entry in a file",
      block("ghcr.io/other", '  username = "scoped"\n  password = "s"') + defaults,
      "oci://ghcr.io/other/mod",
      { source: "static", username: "scoped" },
    ],
    [
      "a block with a helper",
      block("quay.io", '  docker_credentials_helper = "pass"') + defaults,
      "oci://quay.io/x/y",
      { source: "helper", helper: "pass" },
    ],
    [
      "a block still applies without ambient discovery",
      `${block("quay.io", '  username = "q"\n  password = "q"')}oci_default_credentials {\n  discover_ambient_credentials = false\n}\n`,
      "oci://quay.io/x/y",
      { source: "static", username: "q" },
    ],
    [
      "a block for another host does not apply",
      block("quay.io", '  username = "q"\n  password = "q"') + defaults,
      "oci://ghcr.io/x/y",
      { source: "static", username: "file" },
    ],
  ])("%s", (_name, cli, address, expected) => {
    expect(
      resolveOpenTofuCredential(address, { TF_CLI_CONFIG_FILE: CLI }, reader({ [CLI]: cli, [FILE]: docker })),
    ).toMatchObject(expected);
  });

  it("the agent's configuration cuts an operator block for an exported registry, so the export wins", () => {
    const operator = block("ghcr.io", '  username = "stale"\n  password = "stale"');
    const withoutCut = operator + cliWithFiles(FILE);
    expect(
      resolveOpenTofuCredential(
        "oci://ghcr.io/x/y",
        { TF_CLI_CONFIG_FILE: CLI },
        reader({ [CLI]: withoutCut, [FILE]: docker }),
      ),
    ).toMatchObject({ username: "stale" });
    const rendered = renderTofuCliConfig({
      sources: [{ path: `${HOME}/.tofurc`, text: operator }],
      dockerConfigPath: FILE,
      exportedRegistries: new Set(["ghcr.io"]),
    });
    expect(
      resolveOpenTofuCredential(
        "oci://ghcr.io/x/y",
        { TF_CLI_CONFIG_FILE: CLI },
        reader({ [CLI]: rendered.text, [FILE]: docker }),
      ),
    ).toMatchObject({ username: "file" });
  });
});

describe("the agent's rendered files resolve to the winning credential", () => {
  const runDir = "/run/oci-cred-agent/run-9";
  const dockerPath = `${runDir}/docker/config.json`;
  const cliPath = `${runDir}/tofu/cli.tfrc`;

  function materializeInMemory(registries: unknown[], baseDocker?: object, operatorCli?: string): Files {
    const selection = selectCredentials(parseExport(JSON.stringify({ version: 1, registries })));
    const base = baseDocker === undefined ? undefined : parseBaseDockerConfig(JSON.stringify(baseDocker), "base.json");
    const files = renderRegistryFiles(selection.selected, base);
    const tofu = renderTofuCliConfig({
      sources: operatorCli === undefined ? [] : [{ path: `${HOME}/.tofurc`, text: operatorCli }],
      dockerConfigPath: dockerPath,
      exportedRegistries: new Set(selection.selected.map((s) => s.target.registry)),
    });
    return { [dockerPath]: files.dockerConfig, [cliPath]: tofu.text };
  }

  const registries = [
    { id: "g-old", url: "https://ghcr.io", username: "old", password: "old-pw", updated_at: "2026-01-01T00:00:00Z" },
    { id: "g-new", url: "https://GHCR.io/", username: "new", password: "new:pw", updated_at: "2026-06-01T00:00:00Z" },
    { id: "g-org", url: "https://ghcr.io/org-a", username: "org", password: "org-pw" },
    { id: "hub", url: "https://index.docker.io/v1/", username: "hubuser", password: "hub-pw" },
    { id: "local", url: "https://localhost:5000", username: "l", password: "l-pw" },
  ];

  it.each([
    ["oci://ghcr.io/org-b/mod", "new", "new:pw"],
    ["oci://ghcr.io/org-a/mod", "org", "org-pw"],
    ["oci://ghcr.io/org-a/team/mod", "org", "org-pw"],
    ["oci://registry-1.docker.io/ns/mod", "hubuser", "hub-pw"],
    ["oci://localhost:5000/mod", "l", "l-pw"],
  ])("%s → %s", (address, username, password) => {
    const files = materializeInMemory(registries);
    expect(resolveOpenTofuCredential(address, { TF_CLI_CONFIG_FILE: cliPath, HOME }, reader(files))).toMatchObject({
      source: "static",
      username,
      password,
      file: dockerPath,
    });
  });

  it("the operator's other registries still resolve, and its stale entry for an exported host does not", () => {
    const files = materializeInMemory(registries, {
      auths: { "quay.io": { auth: auth("ops", "ops-pw") }, "ghcr.io": { auth: auth("stale", "stale") } },
      credHelpers: { "gcr.io": "gcloud" },
    });
    const env = { TF_CLI_CONFIG_FILE: cliPath, HOME };
    expect(resolveOpenTofuCredential("oci://quay.io/x/y", env, reader(files))).toMatchObject({
      source: "static",
      username: "ops",
      password: "ops-pw",
    });
    expect(resolveOpenTofuCredential("oci://gcr.io/x/y", env, reader(files))).toMatchObject({
      source: "helper",
      helper: "gcloud",
    });
    expect(resolveOpenTofuCredential("oci://ghcr.io/x/y", env, reader(files))).toMatchObject({ username: "new" });
  });

  it("with a base credsStore, exported hosts still resolve to the export (empty helper skipped)", () => {
    const files = materializeInMemory(registries, { credsStore: "desktop" });
    const env = { TF_CLI_CONFIG_FILE: cliPath, HOME };
    expect(resolveOpenTofuCredential("oci://ghcr.io/x/y", env, reader(files))).toMatchObject({
      source: "static",
      username: "new",
    });
    expect(resolveOpenTofuCredential("oci://quay.io/x/y", env, reader(files))).toMatchObject({
      source: "helper",
      helper: "desktop",
    });
  });

  it("the operator's CLI configuration stays in the generated one and still parses", () => {
    const files = materializeInMemory(
      registries,
      undefined,
      'plugin_cache_dir = "/var/cache/tofu"\n# oci_default_credentials {}\n',
    );
    expect(files[cliPath]).toContain('plugin_cache_dir = "/var/cache/tofu"');
    expect(
      resolveOpenTofuCredential("oci://ghcr.io/x/y", { TF_CLI_CONFIG_FILE: cliPath, HOME }, reader(files)),
    ).toMatchObject({ username: "new" });
  });

  it("after wipe (files gone) tofu fails loudly instead of pulling with host credentials", () => {
    const files = materializeInMemory(registries);
    const afterWipe: Files = { [`${HOME}/.docker/config.json`]: dockerFile({ "ghcr.io": auth("host", "h") }) };
    const stillPointed = resolveOpenTofuCredential(
      "oci://ghcr.io/x/y",
      { TF_CLI_CONFIG_FILE: cliPath, HOME },
      reader({ [cliPath]: files[cliPath] ?? "", ...afterWipe }),
    );
    expect(stillPointed).toMatchObject({ source: "none", error: expect.stringContaining(dockerPath) as unknown });
  });
});
