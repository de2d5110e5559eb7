/**
 * Normalizes an integration's registry URL into the registry it names and the key each tool
 * family looks that registry up by. Pure.
 *
 * Why the keys differ per family (docs/architecture.md, "Which tool reads which file"):
 * - OpenTofu compares `host[:port]` exactly and never matches a key with a scheme
 *   (internal/command/cliconfig/ociauthconfig/docker_cli_credentials_config.go,
 *   dockerCLIStyleAuthMatch). It has no Docker Hub aliasing: sources written
 *   `oci://registry-1.docker.io/...` look up `registry-1.docker.io`.
 * - The Docker CLI stores and reads Docker Hub under `https://index.docker.io/v1/`.
 * - The containers family (skopeo, podman, buildah) normalizes Docker Hub to `docker.io`.
 */

export const DOCKER_HUB_ALIASES: ReadonlySet<string> = new Set([
  "docker.io",
  "index.docker.io",
  "registry-1.docker.io",
  "registry.hub.docker.com",
]);

export const DOCKER_HUB_KEYS = {
  opentofu: "registry-1.docker.io",
  docker: "https://index.docker.io/v1/",
  containers: "docker.io",
} as const;

export interface FamilyKeys {
  readonly opentofu: string;
  readonly docker: string;
  readonly containers: string;
}

export interface RegistryTarget {
  /** Identity used to deduplicate: `docker.io` for every Docker Hub alias, else `host[:port]`. */
  readonly registry: string;
  /** The host OpenTofu sources name (`host[:port]`), used in reports and logs. */
  readonly host: string;
  readonly keys: FamilyKeys;
}

/** Why an exported entry was not used; the run goes on with the others (docs/errors.md). */
export const ENTRY_REFUSAL_CODES = {
  ENTRY_INVALID: "an export entry is malformed (field paths are given); fix the integration",
  ENTRY_URL_INVALID: "the entry's registry URL is not a URL",
  ENTRY_NOT_HTTPS: "the entry's registry URL is not https://",
  ENTRY_URL_NOT_BARE: "the entry's registry URL has user information, a query or a fragment",
  ENTRY_URL_HAS_PATH: "the entry's registry URL has a repository path",
  DUPLICATE_REGISTRY: "another entry for the same registry won (later updated_at, then smaller id)",
} as const;

export type EntryRefusalCode = keyof typeof ENTRY_REFUSAL_CODES;

export type NormalizeResult =
  | { readonly ok: true; readonly target: RegistryTarget }
  | { readonly ok: false; readonly code: EntryRefusalCode; readonly reason: string };

/** API-version suffixes people paste with an endpoint (`https://index.docker.io/v1/`). */
const API_SUFFIX = /^\/v[12]\/?$/;

/** `host[:port]` of a URL with the default HTTPS port dropped and the host lowercased. */
function hostKey(url: URL): string {
  // WHATWG URL already lowercases the host, converts IDNs to punycode and drops :443 for https.
  return url.host;
}

export function targetForHost(host: string): RegistryTarget {
  const lower = host.toLowerCase();
  if (DOCKER_HUB_ALIASES.has(lower)) {
    return { registry: "docker.io", host: DOCKER_HUB_KEYS.opentofu, keys: DOCKER_HUB_KEYS };
  }
  return { registry: lower, host: lower, keys: { opentofu: lower, docker: lower, containers: lower } };
}

/** The common case, a bare lowercase https endpoint, without a full URL parse (10,000-entry exports). */
const PLAIN_ENDPOINT = /^https:\/\/([a-z0-9][a-z0-9.-]*[a-z0-9])(?::([1-9]\d{0,4}))?\/?$/;

export function normalizeRegistryUrl(raw: string): NormalizeResult {
  const plain = PLAIN_ENDPOINT.exec(raw);
  if (plain?.[1] !== undefined && !plain[1].includes("..") && !plain[1].startsWith("xn--") && !plain[1].includes(".xn--")) {
    const port = plain[2];
    const portNumber = port === undefined ? 443 : Number(port);
    if (portNumber <= 65535) return { ok: true, target: targetForHost(portNumber === 443 ? plain[1] : `${plain[1]}:${portNumber}`) };
  }
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return {
      ok: false,
      code: "ENTRY_URL_INVALID",
      reason: "the registry URL is not a URL; use the registry's HTTPS endpoint, for example https://ghcr.io",
    };
  }
  if (url.protocol !== "https:") {
    return {
      ok: false,
      code: "ENTRY_NOT_HTTPS",
      reason: `the registry URL uses ${url.protocol.replace(/:$/, "")}; only https:// endpoints are accepted (OpenTofu speaks HTTPS only)`,
    };
  }
  if (url.username !== "" || url.password !== "") {
    return {
      ok: false,
      code: "ENTRY_URL_NOT_BARE",
      reason: "the registry URL carries user information; put the username and password in their own fields",
    };
  }
  if (url.search !== "" || url.hash !== "") {
    return {
      ok: false,
      code: "ENTRY_URL_NOT_BARE",
      reason: "the registry URL has a query or fragment; use the bare endpoint, for example https://ghcr.io",
    };
  }
  if (url.pathname !== "/" && url.pathname !== "" && !API_SUFFIX.test(url.pathname)) {
    return {
      ok: false,
      code: "ENTRY_URL_HAS_PATH",
      reason: `the registry URL has the path ${url.pathname}; repository-scoped credentials are not supported, use the bare endpoint https://${hostKey(url)}`,
    };
  }
  return { ok: true, target: targetForHost(hostKey(url)) };
}

/**
 * Parses a key found in an operator's Docker config (`ghcr.io`, `https://index.docker.io/v1/`,
 * `ghcr.io/org/repo`) to the registry it belongs to, or undefined if it cannot be understood.
 */
export function registryOfConfigKey(key: string): string | undefined {
  const withoutScheme = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const host = withoutScheme.split("/")[0] ?? "";
  if (host === "") return undefined;
  try {
    const url = new URL(`https://${host}`);
    return targetForHost(url.host).registry;
  } catch {
    return undefined;
  }
}
