import { describe, expect, it } from "vitest";
import { scanTopLevel } from "../../src/core/hcl-top-level.js";
import {
  renderTofuCliConfig,
  type OperatorCliConfigSource,
  type RenderedTofuCliConfig,
} from "../../src/core/tofu-cli-config.js";
import { refusalSync as refusal } from "../support/refusal.js";

const DOCKER_PATH = "/run/oci-cred-agent/run-1/docker/config.json";

function render(sources: OperatorCliConfigSource[], exported: string[] = []): RenderedTofuCliConfig {
  return renderTofuCliConfig({ sources, dockerConfigPath: DOCKER_PATH, exportedRegistries: new Set(exported) });
}

const AGENT_BLOCK = `oci_default_credentials {\n  discover_ambient_credentials = true\n  docker_style_config_files    = [${JSON.stringify(DOCKER_PATH)}]\n}\n`;

const OPERATOR = `plugin_cache_dir = "/var/cache/tofu"
credentials "app.terraform.io" {
  token = "tfe-token"
}
provider_installation {
  network_mirror {
    url = "https://mirror.example.com/"
  }
}
`;

describe("renderTofuCliConfig (HCL)", () => {
  it("without operator configuration: only the agent's block", () => {
    const { text, warnings } = render([]);
    expect(text.endsWith(AGENT_BLOCK)).toBe(true);
    expect(warnings).toEqual([]);
    const items = scanTopLevel(text);
    expect(items.map((i) => [i.name, i.kind])).toEqual([["oci_default_credentials", "block"]]);
  });

  it("reproduces the operator's configuration verbatim above the agent's block", () => {
    const { text, warnings } = render([{ path: "/home/op/.tofurc", text: OPERATOR }], ["ghcr.io"]);
    expect(warnings).toEqual([]);
    expect(text).toContain(`# --- from /home/op/.tofurc ---\n${OPERATOR}`);
    expect(text.indexOf(OPERATOR)).toBeLessThan(text.indexOf("oci_default_credentials {"));
    expect(text.endsWith(AGENT_BLOCK)).toBe(true);
    expect(scanTopLevel(text).map((i) => i.name)).toEqual([
      "plugin_cache_dir",
      "credentials",
      "provider_installation",
      "oci_default_credentials",
    ]);
  });

  it("adds a newline after a file that does not end with one", () => {
    const { text } = render([{ path: "/a.tfrc", text: "disable_checkpoint = true" }]);
    expect(text).toContain("disable_checkpoint = true\n");
    expect(scanTopLevel(text).map((i) => i.name)).toEqual(["disable_checkpoint", "oci_default_credentials"]);
  });

  it("concatenates the main file and the CLI config directory's files in order", () => {
    const { text } = render([
      { path: "/home/op/.tofurc", text: "a = 1\n" },
      { path: "/home/op/.terraform.d/b.tfrc", text: "b = 2\n" },
    ]);
    expect(scanTopLevel(text).map((i) => i.name)).toEqual(["a", "b", "oci_default_credentials"]);
    expect(text.indexOf("/home/op/.tofurc")).toBeLessThan(text.indexOf("/home/op/.terraform.d/b.tfrc"));
  });

  it("JSON-escapes the docker config path", () => {
    const path = '/tmp/we"ird\\dir/docker/config.json';
    const { text } = renderTofuCliConfig({ sources: [], dockerConfigPath: path, exportedRegistries: new Set() });
    expect(text).toContain(`docker_style_config_files    = ["/tmp/we\\"ird\\\\dir/docker/config.json"]`);
    expect(scanTopLevel(text)).toHaveLength(1);
  });

  it.each<[string, string, string[], boolean]>([
    ["same host", "ghcr.io", ["ghcr.io"], true],
    ["host key, case differs", "GHCR.IO", ["ghcr.io"], true],
    ["a scoped block under an exported host", "ghcr.io/org-a", ["ghcr.io"], true],
    ["the same scope", "ghcr.io/org-a", ["ghcr.io/org-a"], true],
    ["a Docker Hub alias of an exported hub", "registry-1.docker.io", ["docker.io"], true],
    ["another scope of a scoped export", "ghcr.io/org-b", ["ghcr.io/org-a"], false],
    ["the host of a scoped export", "ghcr.io", ["ghcr.io/org-a"], false],
    ["another host", "quay.io", ["ghcr.io"], false],
    ["another port", "ghcr.io:5000", ["ghcr.io"], false],
  ])("oci_credentials for %s (%s, export %j): cut=%s", (_name, label, exported, cut) => {
    const block = `oci_credentials "${label}" {\n  username = "op"\n  password = "op-pw"\n}\n`;
    const source = `a = 1\n${block}b = 2\n`;
    const { text, warnings } = render([{ path: "/home/op/.tofurc", text: source }], exported);
    const names = scanTopLevel(text).map((i) => [i.name, i.labels[0]]);
    if (cut) {
      expect(text).not.toContain("op-pw");
      expect(text).toContain(`# (oci_credentials "${label}" left out by oci-cred-agent)`);
      expect(names).toEqual([
        ["a", undefined],
        ["b", undefined],
        ["oci_default_credentials", undefined],
      ]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`oci_credentials "${label}" in /home/op/.tofurc:2`);
    } else {
      expect(text).toContain(block);
      expect(names).toEqual([
        ["a", undefined],
        ["oci_credentials", label],
        ["b", undefined],
        ["oci_default_credentials", undefined],
      ]);
      expect(warnings).toEqual([]);
    }
  });

  it("cuts several exported blocks and keeps the rest byte-for-byte", () => {
    const source = [
      'oci_credentials "ghcr.io" {\n  username = "g"\n  password = "g-pw"\n}',
      'oci_credentials "quay.io" {\n  username = "q"\n  password = "q-pw"\n}',
      'oci_credentials "registry-1.docker.io" { username = "d"\n password = "d-pw" }',
      "",
    ].join("\n");
    const { text, warnings } = render([{ path: "/c.tfrc", text: source }], ["docker.io", "ghcr.io"]);
    expect(text).not.toContain("g-pw");
    expect(text).not.toContain("d-pw");
    expect(text).toContain('oci_credentials "quay.io" {\n  username = "q"\n  password = "q-pw"\n}');
    expect(warnings).toHaveLength(2);
  });

  it.each<[string, OperatorCliConfigSource[], string]>([
    [
      "in the main file",
      [{ path: "/home/op/.tofurc", text: 'a = 1\noci_default_credentials {\n  docker_credentials_helper = "x"\n}\n' }],
      "/home/op/.tofurc:2",
    ],
    [
      "in a CLI config directory file",
      [
        { path: "/home/op/.tofurc", text: "a = 1\n" },
        { path: "/home/op/.terraform.d/x.tfrc", text: "\n\n\noci_default_credentials {}\n" },
      ],
      "/home/op/.terraform.d/x.tfrc:4",
    ],
  ])("refuses an operator oci_default_credentials block %s (TOFU_CLI_CONFIG_CONFLICT)", (_name, sources, where) => {
    const e = refusal(() => render(sources, ["ghcr.io"]));
    expect(e.code).toBe("TOFU_CLI_CONFIG_CONFLICT");
    expect(e.message).toContain(where);
    // Says how to fix it.
    expect(e.message).toContain("--base-docker-config");
    expect(e.message).toContain("credsStore");
  });

  it("does not mistake decoys for an oci_default_credentials block", () => {
    const source =
      '# oci_default_credentials {}\nx = "oci_default_credentials {}"\ny = <<EOT\noci_default_credentials {}\nEOT\n';
    const { text } = render([{ path: "/c", text: source }]);
    expect(scanTopLevel(text).filter((i) => i.name === "oci_default_credentials")).toHaveLength(1);
  });

  it.each([
    ["an unterminated block", "a {\n  b = 1\n", "/c:1"],
    ["an unterminated string", 'a = 1\nb = "x\n', "/c:2"],
    ["a stray brace", "a = 1\n\n}\n", "/c:3"],
  ])("refuses %s with TOFU_CLI_CONFIG_INVALID and the line", (_name, text, where) => {
    const e = refusal(() => render([{ path: "/c", text }]));
    expect(e.code).toBe("TOFU_CLI_CONFIG_INVALID");
    expect(e.message).toContain(where);
  });

  it("leaves out a JSON file among HCL files, with a warning", () => {
    const { text, warnings } = render([
      { path: "/home/op/.tofurc", text: "a = 1\n" },
      { path: "/home/op/.terraform.d/x.tfrc.json", text: '{"b": 2}' },
    ]);
    expect(text).not.toContain('"b"');
    expect(warnings).toEqual([expect.stringContaining("/home/op/.terraform.d/x.tfrc.json is JSON")]);
  });
});

describe("renderTofuCliConfig (JSON main file)", () => {
  it("keeps the operator's settings, cuts exported oci_credentials, adds the agent's block", () => {
    const main = {
      plugin_cache_dir: "/p",
      credentials: { "app.terraform.io": { token: "t" } },
      oci_credentials: {
        "ghcr.io": { username: "g", password: "g-pw" },
        "quay.io": { username: "q", password: "q-pw" },
      },
    };
    const { text, warnings } = render([{ path: "/home/op/.tofurc", text: JSON.stringify(main) }], ["ghcr.io"]);
    expect(JSON.parse(text)).toEqual({
      plugin_cache_dir: "/p",
      credentials: { "app.terraform.io": { token: "t" } },
      oci_credentials: { "quay.io": { username: "q", password: "q-pw" } },
      oci_default_credentials: { discover_ambient_credentials: true, docker_style_config_files: [DOCKER_PATH] },
    });
    expect(warnings).toEqual([expect.stringContaining('oci_credentials "ghcr.io"')]);
  });

  it("cuts exported oci_credentials written in the list form of HCL's JSON syntax too", () => {
    const main = {
      oci_credentials: [
        { "ghcr.io": { username: "g", password: "g-pw" } },
        { "quay.io": { username: "q", password: "q-pw" }, "GHCR.io/org": { username: "o", password: "o-pw" } },
      ],
    };
    const { text, warnings } = render([{ path: "/home/op/.tofurc", text: JSON.stringify(main) }], ["ghcr.io"]);
    expect((JSON.parse(text) as { oci_credentials: unknown }).oci_credentials).toEqual([
      { "quay.io": { username: "q", password: "q-pw" } },
    ]);
    expect(warnings).toHaveLength(2);
    expect(text).not.toContain("g-pw");
    expect(text).not.toContain("o-pw");
  });

  it("warns about and leaves out the other files", () => {
    const { text, warnings } = render([
      { path: "/m.json", text: "{}" },
      { path: "/d/x.tfrc", text: "a = 1" },
    ]);
    expect(JSON.parse(text)).toEqual({
      oci_default_credentials: { discover_ambient_credentials: true, docker_style_config_files: [DOCKER_PATH] },
    });
    expect(warnings).toEqual([expect.stringContaining("/d/x.tfrc cannot be combined")]);
  });

  it("refuses an operator oci_default_credentials key", () => {
    const e = refusal(() => render([{ path: "/m.json", text: '{"oci_default_credentials": {}}' }]));
    expect(e.code).toBe("TOFU_CLI_CONFIG_CONFLICT");
    expect(e.message).toContain("/m.json");
  });

  it.each([
    ["broken JSON", "{ not json", /looks like JSON but does not parse/],
    ["a JSON array (not taken for JSON, and not HCL either)", "[1]", /cannot be parsed/],
  ])("refuses %s with TOFU_CLI_CONFIG_INVALID", (_name, text, message) => {
    const e = refusal(() => render([{ path: "/m.json", text }]));
    expect(e.code).toBe("TOFU_CLI_CONFIG_INVALID");
    expect(e.message).toContain("/m.json");
    expect(e.message).toMatch(message);
  });
});
