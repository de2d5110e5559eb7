/**
 * The discovery that copies the operator's CLI configuration into every run
 * (discoverTofuCliConfig) and OpenTofu's credential lookup (resolveOpenTofuCredential) pick the
 * same CLI configuration file from the same real files: both follow tofuCliConfigLocations.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { discoverTofuCliConfig } from "../../src/fs/tofu-cli-config-sources.js";

let base: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "tofu-cli-discovery-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

/** A CLI configuration that names itself through the credential OpenTofu would pick from it. */
function cliConfig(name: string): string {
  return `oci_credentials "ghcr.io" {\n  username = "${name}"\n  password = "x"\n}\n`;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

type Files = Record<string, string>;

describe("the CLI configuration file: discovery and the OpenTofu lookup agree", () => {
  it.each<[string, Files, Record<string, string>, string | undefined, string[]]>([
    ["nothing there", {}, {}, undefined, []],
    ["~/.tofurc", { "home/.tofurc": "tofurc" }, {}, "home/.tofurc", []],
    ["~/.terraformrc when there is no ~/.tofurc", { "home/.terraformrc": "terraformrc" }, {}, "home/.terraformrc", []],
    [
      "~/.tofurc over ~/.terraformrc",
      { "home/.tofurc": "tofurc", "home/.terraformrc": "terraformrc" },
      {},
      "home/.tofurc",
      [],
    ],
    [
      "$XDG_CONFIG_HOME/opentofu/tofurc on a fresh install",
      { "xdg/opentofu/tofurc": "xdg" },
      { XDG_CONFIG_HOME: "xdg" },
      "xdg/opentofu/tofurc",
      [],
    ],
    [
      "~/.terraformrc over $XDG_CONFIG_HOME",
      { "home/.terraformrc": "terraformrc", "xdg/opentofu/tofurc": "xdg" },
      { XDG_CONFIG_HOME: "xdg" },
      "home/.terraformrc",
      [],
    ],
    ["no XDG_CONFIG_HOME: its file is not looked at", { "xdg/opentofu/tofurc": "xdg" }, {}, undefined, []],
    [
      "TF_CLI_CONFIG_FILE alone",
      { "home/.tofurc": "tofurc", "etc/tofu.tfrc": "override", "home/.terraform.d/a.tfrc": "dir" },
      { TF_CLI_CONFIG_FILE: "etc/tofu.tfrc" },
      "etc/tofu.tfrc",
      [],
    ],
    [
      "TERRAFORM_CONFIG alone",
      { "home/.tofurc": "tofurc", "etc/tf.tfrc": "legacy" },
      { TERRAFORM_CONFIG: "etc/tf.tfrc" },
      "etc/tf.tfrc",
      [],
    ],
    [
      "a TF_CLI_CONFIG_FILE that does not exist: nothing, not ~/.tofurc",
      { "home/.tofurc": "tofurc" },
      { TF_CLI_CONFIG_FILE: "etc/missing.tfrc" },
      undefined,
      [],
    ],
    [
      "the ~/.terraform.d directory's files besides",
      {
        "home/.tofurc": "tofurc",
        "home/.terraform.d/b.tfrc": "b",
        "home/.terraform.d/a.tfrc.json": "{}",
        "home/.terraform.d/credentials.tfrc.json": "{}",
      },
      {},
      "home/.tofurc",
      ["home/.terraform.d/a.tfrc.json", "home/.terraform.d/b.tfrc"],
    ],
    [
      "$XDG_CONFIG_HOME/opentofu's files when there is no ~/.terraform.d",
      { "xdg/opentofu/c.tfrc": "c" },
      { XDG_CONFIG_HOME: "xdg" },
      undefined,
      ["xdg/opentofu/c.tfrc"],
    ],
    [
      "~/.terraform.d over $XDG_CONFIG_HOME/opentofu",
      { "home/.terraform.d/a.tfrc": "a", "xdg/opentofu/c.tfrc": "c" },
      { XDG_CONFIG_HOME: "xdg" },
      undefined,
      ["home/.terraform.d/a.tfrc"],
    ],
  ])("%s", async (_what, files, relativeEnv, expectedMain, expectedDirFiles) => {
    for (const [path, name] of Object.entries(files)) {
      mkdirSync(dirname(join(base, path)), { recursive: true });
      writeFileSync(join(base, path), path.endsWith(".json") ? name : cliConfig(name));
    }
    mkdirSync(join(base, "home"), { recursive: true });
    const env: Record<string, string> = {
      HOME: join(base, "home"),
      ...Object.fromEntries(Object.entries(relativeEnv).map(([k, v]) => [k, join(base, v)])),
    };

    const discovered = (await discoverTofuCliConfig(realFs, env)).map((s) => s.path.slice(base.length + 1));
    expect(discovered).toEqual([...(expectedMain === undefined ? [] : [expectedMain]), ...expectedDirFiles]);

    const resolved = resolveOpenTofuCredential("oci://ghcr.io/org/mod", env, readOrUndefined);
    if (expectedMain === undefined) expect(resolved).toEqual({ source: "none" });
    else
      expect(resolved).toMatchObject({
        source: "static",
        username: files[expectedMain],
        file: join(base, expectedMain),
      });
  });
});
