/**
 * OpenTofu reads `oci_credentials "<host[/path]>"`
 * blocks from the CLI configuration before any Docker-style file and they win specificity ties
 * (internal/command/cliconfig/oci_credentials.go); the resolver must honour them, or the
 * tests' stand-in tofu would miss a stale block that materialize failed to cut out.
 */
import { describe, expect, it } from "vitest";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";

const cli = [
  'oci_credentials "other.example" {',
  '  username = "other-user"',
  '  password = "other-password"',
  "}",
  'oci_credentials "ghcr.io/org-a" {',
  '  docker_credentials_helper = "gh"',
  "}",
  "oci_default_credentials {",
  '  docker_style_config_files = ["/run/d/docker/config.json"]',
  "}",
  "",
].join("\n");
const docker = JSON.stringify({
  auths: {
    "other.example": { auth: Buffer.from("file-user:file-pw").toString("base64") },
    "ghcr.io": { auth: Buffer.from("gh-file:pw").toString("base64") },
  },
});
const files: Record<string, string> = { "/cfg/cli.tfrc": cli, "/run/d/docker/config.json": docker };
const env = { TF_CLI_CONFIG_FILE: "/cfg/cli.tfrc", HOME: "/nohome" };
const read = (p: string): string | undefined => files[p];

describe("resolver: oci_credentials blocks of the CLI configuration", () => {
  it("an oci_credentials block beats a Docker-style entry of the same specificity", () => {
    expect(resolveOpenTofuCredential("oci://other.example/team/mod", env, read)).toMatchObject({
      source: "static",
      username: "other-user",
      password: "other-password",
    });
  });
  it("a path-scoped oci_credentials block with a helper beats a host-level file entry", () => {
    expect(resolveOpenTofuCredential("oci://ghcr.io/org-a/mod", env, read)).toMatchObject({
      source: "helper",
      helper: "gh",
    });
    expect(resolveOpenTofuCredential("oci://ghcr.io/org-b/mod", env, read)).toMatchObject({
      source: "static",
      username: "gh-file",
    });
  });
});
