/**
 * A registry URL is checked by one function (checkRegistryUrl, src/core/registry-address.ts):
 * the agent normalizes export entries with it, and the reference control plane checks an
 * integration's registry_url with it before storing it (src/control-plane/registry-probe.ts
 * checkRegistryUrlForm), answering with its own REGISTRY_URL_* codes. One table, both sides.
 */
import { describe, expect, it } from "vitest";
import { HttpError } from "../../src/control-plane/http-util.js";
import { checkRegistryUrlForm } from "../../src/control-plane/registry-probe.js";
import {
  checkRegistryUrl,
  normalizeRegistryUrl,
  type RegistryUrlRefusalCode,
} from "../../src/core/registry-address.js";

type Expected = { host: string; path?: string } | RegistryUrlRefusalCode;

const CASES: [string, Expected][] = [
  ["https://ghcr.io", { host: "ghcr.io" }],
  ["https://ghcr.io/", { host: "ghcr.io" }],
  ["https://GHCR.IO:443/", { host: "ghcr.io" }],
  ["https://ghcr.io:0443", { host: "ghcr.io" }],
  ["https://registry.example.com:5000", { host: "registry.example.com:5000" }],
  ["https://127.0.0.1:5000/v2/", { host: "127.0.0.1:5000" }],
  ["https://[::1]:5000", { host: "[::1]:5000" }],
  ["https://127.1:5000", { host: "127.0.0.1:5000" }],
  ["https://index.docker.io/v1/", { host: "index.docker.io" }],
  ["https://ghcr.io/v2", { host: "ghcr.io" }],
  ["https://ghcr.io/org-a", { host: "ghcr.io", path: "org-a" }],
  ["https://ghcr.io/org-a/team_b/", { host: "ghcr.io", path: "org-a/team_b" }],
  ["  https://ghcr.io  ", { host: "ghcr.io" }],
  // The control plane's copy did not trim, so a non-breaking space made the URL "not a URL";
  // the agent (whose rule both now share) trims it and accepts the endpoint.
  ["\u00a0https://ghcr.io", { host: "ghcr.io" }],
  ["ghcr.io", "ENTRY_URL_INVALID"],
  ["https://", "ENTRY_URL_INVALID"],
  ["https://1.2.3.4.5", "ENTRY_URL_INVALID"],
  ["http://127.0.0.1:5000", "ENTRY_NOT_HTTPS"],
  ["oci://ghcr.io", "ENTRY_NOT_HTTPS"],
  ["ftp://ghcr.io/", "ENTRY_NOT_HTTPS"],
  ["https://alice:secret@ghcr.io", "ENTRY_URL_NOT_BARE"],
  ["https://alice@ghcr.io", "ENTRY_URL_NOT_BARE"],
  ["https://ghcr.io/?tenant=1", "ENTRY_URL_NOT_BARE"],
  ["https://ghcr.io/#top", "ENTRY_URL_NOT_BARE"],
  ["https://ghcr.io/v2/?x=1", "ENTRY_URL_NOT_BARE"],
  ["https://ghcr.io/Org-A", "ENTRY_URL_HAS_PATH"],
  ["https://ghcr.io/org//team", "ENTRY_URL_HAS_PATH"],
  ["https://ghcr.io/org_-a", "ENTRY_URL_HAS_PATH"],
  ["https://ghcr.io/v3/", { host: "ghcr.io", path: "v3" }],
  ["https://ghcr.io/V2/", "ENTRY_URL_HAS_PATH"],
];

/** The control plane's answer for each of the agent's refusals. */
const CONTROL_PLANE_CODE: Record<RegistryUrlRefusalCode, string> = {
  ENTRY_URL_INVALID: "REGISTRY_URL_INVALID",
  ENTRY_NOT_HTTPS: "REGISTRY_URL_NOT_HTTPS",
  ENTRY_URL_NOT_BARE: "REGISTRY_URL_NOT_BARE",
  ENTRY_URL_HAS_PATH: "REGISTRY_URL_NOT_BARE",
};

function refusalOf(fn: () => unknown): HttpError {
  try {
    fn();
  } catch (error) {
    if (error instanceof HttpError) return error;
    throw error;
  }
  throw new Error("expected an HttpError");
}

describe("checkRegistryUrl", () => {
  it.each(CASES)("%j → %j", (raw, expected) => {
    const checked = checkRegistryUrl(raw);
    if (typeof expected === "string") expect(checked).toMatchObject({ ok: false, code: expected });
    else expect(checked).toEqual({ ok: true, host: expected.host, path: expected.path });
  });

  it.each(CASES)("the agent's normalizeRegistryUrl agrees on %j", (raw, expected) => {
    const normalized = normalizeRegistryUrl(raw);
    if (typeof expected === "string") expect(normalized).toMatchObject({ ok: false, code: expected });
    else expect(normalized).toMatchObject({ ok: true, target: { path: expected.path } });
  });
});

describe("the control plane's checkRegistryUrlForm applies checkRegistryUrl", () => {
  it.each(CASES)("%j", (raw, expected) => {
    if (typeof expected === "string") {
      const e = refusalOf(() => checkRegistryUrlForm(raw));
      expect(e).toMatchObject({ status: 422, code: CONTROL_PLANE_CODE[expected], extra: { field: "registry_url" } });
    } else {
      const url = checkRegistryUrlForm(raw);
      expect(url.host).toBe(expected.host);
      expect(url.pathname).toBe(`/${expected.path ?? ""}`);
    }
  });

  it.each<[string, string]>([
    ["registry_url is not a URL; use the registry's HTTPS endpoint, for example https://ghcr.io", "ghcr.io"],
    ["registry_url must use https://, not http://", "http://127.0.0.1:5000"],
    [
      "registry_url must have no query, fragment or user information; use https://ghcr.io",
      "https://alice:secret@GHCR.io",
    ],
    [
      "registry_url must have no query, fragment or user information; use https://ghcr.io:5000",
      "https://ghcr.io:5000/?tenant=1",
    ],
    [
      "registry_url must be the bare endpoint (https://ghcr.io) or a repository-scoped one (https://ghcr.io/<namespace>); /Org-A is not a repository path",
      "https://ghcr.io/Org-A",
    ],
  ])("keeps its message: %s", (message, raw) => {
    expect(refusalOf(() => checkRegistryUrlForm(raw)).message).toBe(message);
  });

  it.each(["https://docker.io", "https://DOCKER.IO/v2/", "https://hub.docker.com", "https://www.docker.com:443"])(
    "refuses %j, which the agent accepts, as not an endpoint",
    (raw) => {
      expect(checkRegistryUrl(raw).ok).toBe(true);
      expect(refusalOf(() => checkRegistryUrlForm(raw))).toMatchObject({
        code: "REGISTRY_URL_REDIRECTS",
        extra: { use_instead: "https://registry-1.docker.io" },
      });
    },
  );
});
