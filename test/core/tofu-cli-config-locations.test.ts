/**
 * Where OpenTofu finds its CLI configuration is written once
 * (src/core/tofu-cli-config-locations.ts), for the model of OpenTofu's credential lookup
 * (src/core/opentofu-resolver.ts). The agent does not read the operator's configuration from
 * there (src/fs/tofu-cli-config-sources.ts).
 */
import { describe, expect, it } from "vitest";
import { tofuCliConfigLocations, type TofuCliConfigLocations } from "../../src/core/tofu-cli-config-locations.js";

const H = "/home/op";
const X = "/home/op/.xdg";

describe("tofuCliConfigLocations", () => {
  it.each<[string, Record<string, string>, string, TofuCliConfigLocations]>([
    [
      "HOME only: ~/.tofurc, else ~/.terraformrc, else ~/.tofurc; the directory ~/.terraform.d",
      { HOME: H },
      "/unused",
      {
        file: { candidates: [`${H}/.tofurc`, `${H}/.terraformrc`], otherwise: `${H}/.tofurc` },
        dir: { candidates: [`${H}/.terraform.d`], otherwise: `${H}/.terraform.d` },
      },
    ],
    [
      "XDG_CONFIG_HOME on a fresh install: its opentofu/tofurc and opentofu directory",
      { HOME: H, XDG_CONFIG_HOME: X },
      "/unused",
      {
        file: { candidates: [`${H}/.tofurc`, `${H}/.terraformrc`], otherwise: `${X}/opentofu/tofurc` },
        dir: { candidates: [`${H}/.terraform.d`], otherwise: `${X}/opentofu` },
      },
    ],
    [
      "an empty XDG_CONFIG_HOME counts as unset",
      { HOME: H, XDG_CONFIG_HOME: "" },
      "/unused",
      {
        file: { candidates: [`${H}/.tofurc`, `${H}/.terraformrc`], otherwise: `${H}/.tofurc` },
        dir: { candidates: [`${H}/.terraform.d`], otherwise: `${H}/.terraform.d` },
      },
    ],
    [
      "TF_CLI_CONFIG_FILE alone, no directory",
      { HOME: H, XDG_CONFIG_HOME: X, TF_CLI_CONFIG_FILE: "/etc/tofu.tfrc", TERRAFORM_CONFIG: "/etc/tf.tfrc" },
      "/unused",
      { file: { candidates: [], otherwise: "/etc/tofu.tfrc" }, dir: undefined },
    ],
    [
      "the legacy TERRAFORM_CONFIG",
      { HOME: H, TERRAFORM_CONFIG: "/etc/tf.tfrc" },
      "/unused",
      { file: { candidates: [], otherwise: "/etc/tf.tfrc" }, dir: undefined },
    ],
    [
      "an empty TF_CLI_CONFIG_FILE counts as unset",
      { HOME: H, TF_CLI_CONFIG_FILE: "" },
      "/unused",
      {
        file: { candidates: [`${H}/.tofurc`, `${H}/.terraformrc`], otherwise: `${H}/.tofurc` },
        dir: { candidates: [`${H}/.terraform.d`], otherwise: `${H}/.terraform.d` },
      },
    ],
    [
      "no HOME: the default home",
      {},
      "/var/lib/agent",
      {
        file: {
          candidates: ["/var/lib/agent/.tofurc", "/var/lib/agent/.terraformrc"],
          otherwise: "/var/lib/agent/.tofurc",
        },
        dir: { candidates: ["/var/lib/agent/.terraform.d"], otherwise: "/var/lib/agent/.terraform.d" },
      },
    ],
    [
      "an empty HOME: the default home",
      { HOME: "" },
      "/var/lib/agent",
      {
        file: {
          candidates: ["/var/lib/agent/.tofurc", "/var/lib/agent/.terraformrc"],
          otherwise: "/var/lib/agent/.tofurc",
        },
        dir: { candidates: ["/var/lib/agent/.terraform.d"], otherwise: "/var/lib/agent/.terraform.d" },
      },
    ],
    [
      "paths are joined as OpenTofu joins them (a trailing slash on HOME is not doubled)",
      { HOME: `${H}/`, XDG_CONFIG_HOME: `${X}/` },
      "/unused",
      {
        file: { candidates: [`${H}/.tofurc`, `${H}/.terraformrc`], otherwise: `${X}/opentofu/tofurc` },
        dir: { candidates: [`${H}/.terraform.d`], otherwise: `${X}/opentofu` },
      },
    ],
    [
      'no HOME and no default: relative to the working directory, as Go\'s filepath.Join("", ...)',
      {},
      "",
      {
        file: { candidates: [".tofurc", ".terraformrc"], otherwise: ".tofurc" },
        dir: { candidates: [".terraform.d"], otherwise: ".terraform.d" },
      },
    ],
  ])("%s", (_what, env, defaultHome, expected) => {
    expect(tofuCliConfigLocations(env, defaultHome)).toEqual(expected);
  });
});
