/**
 * `oci://` module source addresses have one parser (src/core/oci-address.ts): the
 * configuration scan (src/fs/oci-sources.ts) and OpenTofu's credential lookup
 * (src/core/opentofu-resolver.ts) both use it. The two copies disagreed on a fragment and on
 * trailing slashes: the scan's rule (stop at `#`, drop trailing slashes) is kept, so the
 * lookup sees the same repository the pre-flight check asks a scope for.
 */
import { describe, expect, it } from "vitest";
import { anonymousDockerHubSources } from "../../src/core/oci-source-checks.js";
import { ociAddress, parseOciAddress, type OciAddress } from "../../src/core/oci-address.js";
import { resolveOpenTofuCredential } from "../../src/core/opentofu-resolver.js";

const OCI_ADDRESS_CASES: [string, OciAddress | undefined][] = [
  ["oci://ghcr.io/acme/modules/network", { host: "ghcr.io", repository: "acme/modules/network" }],
  ["oci://ghcr.io/acme/modules/network?tag=1.4.0", { host: "ghcr.io", repository: "acme/modules/network" }],
  ["oci://ghcr.io/acme/vpc?digest=sha256:0123", { host: "ghcr.io", repository: "acme/vpc" }],
  ["oci://localhost:5000/m", { host: "localhost:5000", repository: "m" }],
  ["oci://[::1]:5000/m", { host: "[::1]:5000", repository: "m" }],
  ["oci://GHCR.io/Acme/VPC", { host: "GHCR.io", repository: "Acme/VPC" }],
  ["oci://ghcr.io/acme/vpc/", { host: "ghcr.io", repository: "acme/vpc" }],
  ["oci://ghcr.io/acme/vpc//?tag=1", { host: "ghcr.io", repository: "acme/vpc" }],
  ["oci://ghcr.io/acme/vpc#frag", { host: "ghcr.io", repository: "acme/vpc" }],
  ["oci://docker.io/acme/legacy?tag=1.0.0", { host: "docker.io", repository: "acme/legacy" }],
  ["oci://ghcr.io/acme/vpc trailing", { host: "ghcr.io", repository: "acme/vpc trailing" }],
  ["oci://ghcr.io", undefined],
  ["oci://ghcr.io/", undefined],
  ["oci://ghcr.io/?tag=1", undefined],
  ["oci://ghcr.io/#x", undefined],
  ["oci:///acme/vpc", undefined],
  ["oci://gh#cr.io/acme/vpc", undefined],
  ["oci://gh?cr.io/acme/vpc", undefined],
  ["OCI://ghcr.io/acme/vpc", undefined],
  ["https://ghcr.io/acme/vpc", undefined],
  ["ghcr.io/acme/vpc", undefined],
  ["", undefined],
];

describe("parseOciAddress", () => {
  it.each(OCI_ADDRESS_CASES)("%j → %j", (address, expected) => {
    expect(parseOciAddress(address)).toEqual(expected);
  });

  it.each([
    ["ghcr.io", "acme/vpc"],
    ["localhost:5000", "m"],
    ["registry-1.docker.io", "library/x"],
  ])("ociAddress(%j, %j) parses back", (host, repository) => {
    expect(parseOciAddress(ociAddress(host, repository))).toEqual({ host, repository });
  });
});

describe("OpenTofu's lookup parses the address with parseOciAddress", () => {
  const CONFIG = "/home/op/.docker/config.json";
  const auth = (user: string): string => Buffer.from(`${user}:pw`).toString("base64");

  it.each(OCI_ADDRESS_CASES)("%j", (address, expected) => {
    if (expected === undefined) {
      expect(resolveOpenTofuCredential(address, { HOME: "/home/op" }, () => undefined)).toEqual({
        source: "none",
        error: `${address} is not an oci://host/repository address`,
      });
      return;
    }
    // A key scoped to exactly the parsed repository wins over the host-wide one only if the
    // lookup saw that repository.
    const files: Record<string, string> = {
      [CONFIG]: JSON.stringify({
        auths: {
          [expected.host]: { auth: auth("host") },
          [`${expected.host}/${expected.repository}`]: { auth: auth("scoped") },
        },
      }),
    };
    expect(resolveOpenTofuCredential(address, { HOME: "/home/op" }, (p) => files[p])).toMatchObject({
      source: "static",
      username: "scoped",
    });
  });
});

describe("the docker.io check builds its fix with ociAddress", () => {
  it("suggests an address that parses to registry-1.docker.io and the same repository", () => {
    const [only] = anonymousDockerHubSources([{ host: "docker.io", repository: "acme/legacy" }]);
    expect(only?.fix).toBe("oci://registry-1.docker.io/acme/legacy");
    expect(parseOciAddress(only?.fix ?? "")).toEqual({ host: "registry-1.docker.io", repository: "acme/legacy" });
  });
});
