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

interface FamilyKeys {
  readonly opentofu: string;
  /** Undefined for a repository-scoped credential: the Docker CLI family matches hosts only. */
  readonly docker: string | undefined;
  readonly containers: string;
}

export interface RegistryTarget {
  /**
   * Identity used to deduplicate: `docker.io` for every Docker Hub alias, else `host[:port]`;
   * followed by `/path` for a repository-scoped credential.
   */
  readonly registry: string;
  /** The registry host as OpenTofu sources name it (`host[:port]`). */
  readonly hostKey: string;
  /** `host[:port]` or `host[:port]/path`, as reports and logs show it. */
  readonly host: string;
  /** The repository path prefix of a scoped credential (`org-a`, `org-a/team`). */
  readonly path: string | undefined;
  readonly keys: FamilyKeys;
}

/** A repository path component (OCI distribution spec): lowercase, digits, single separators. */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** Why an exported entry was not used; the run goes on with the others (docs/errors.md). */
export const ENTRY_REFUSAL_CODES = {
  ENTRY_INVALID: "an export entry is malformed (field paths are given); fix the integration",
  ENTRY_URL_INVALID: "the entry's registry URL is not a URL",
  ENTRY_NOT_HTTPS: "the entry's registry URL is not https://",
  ENTRY_URL_NOT_BARE: "the entry's registry URL has user information, a query or a fragment",
  ENTRY_URL_HAS_PATH: "the entry's registry URL has a path that is not a repository path",
  DUPLICATE_REGISTRY: "another entry for the same registry won (later updated_at, then smaller id)",
} as const;

export type EntryRefusalCode = keyof typeof ENTRY_REFUSAL_CODES;

export type NormalizeResult =
  | { readonly ok: true; readonly target: RegistryTarget }
  | { readonly ok: false; readonly code: EntryRefusalCode; readonly reason: string };

/** The codes checkRegistryUrl refuses a URL with (a subset of ENTRY_REFUSAL_CODES). */
export type RegistryUrlRefusalCode = Extract<
  EntryRefusalCode,
  "ENTRY_URL_INVALID" | "ENTRY_NOT_HTTPS" | "ENTRY_URL_NOT_BARE" | "ENTRY_URL_HAS_PATH"
>;

/**
 * A registry URL as the agent accepts it: `host[:port]` (lowercased, :443 dropped) and the
 * repository path of a scoped URL, or why it is refused. The reference control plane checks
 * integrations with the same function before it stores them.
 */
export type RegistryUrlCheck =
  | { readonly ok: true; readonly host: string; readonly path: string | undefined }
  | { readonly ok: false; readonly code: RegistryUrlRefusalCode; readonly reason: string };

/** API-version suffixes people paste with an endpoint (`https://index.docker.io/v1/`). */
const API_SUFFIX = /^\/v[12]\/?$/;

/** `host[:port]` of a URL with the default HTTPS port dropped and the host lowercased. */
function hostKey(url: URL): string {
  // WHATWG URL already lowercases the host, converts IDNs to punycode and drops :443 for https.
  return url.host;
}

export function targetForHost(host: string, path?: string): RegistryTarget {
  const lower = host.toLowerCase();
  const hub = DOCKER_HUB_ALIASES.has(lower);
  const hostKey = hub ? DOCKER_HUB_KEYS.opentofu : lower;
  const registryHost = hub ? "docker.io" : lower;
  if (path === undefined) {
    return {
      registry: registryHost,
      hostKey,
      host: hostKey,
      path: undefined,
      keys: hub ? DOCKER_HUB_KEYS : { opentofu: lower, docker: lower, containers: lower },
    };
  }
  return {
    registry: `${registryHost}/${path}`,
    hostKey,
    host: `${hostKey}/${path}`,
    path,
    keys: {
      opentofu: `${hostKey}/${path}`,
      docker: undefined,
      containers: `${hub ? DOCKER_HUB_KEYS.containers : lower}/${path}`,
    },
  };
}

/** Parses a repository path prefix (`/org-a/team/`), or undefined if it is not one. */
export function repositoryPath(pathname: string): string | undefined {
  const segments = pathname.replace(/^\/+|\/+$/g, "").split("/");
  return segments.length > 0 && segments.every((s) => PATH_COMPONENT.test(s)) ? segments.join("/") : undefined;
}

/** The common case, a bare lowercase https endpoint, without a full URL parse (10,000-entry exports). */
const PLAIN_ENDPOINT = /^https:\/\/([a-z0-9][a-z0-9.-]*[a-z0-9])(?::([1-9]\d{0,4}))?\/?$/;

export function normalizeRegistryUrl(raw: string): NormalizeResult {
  const checked = checkRegistryUrl(raw);
  return checked.ok ? { ok: true, target: targetForHost(checked.host, checked.path) } : checked;
}

/** HTTPS only, no user information, query or fragment, and no path but a repository path or an API suffix. */
export function checkRegistryUrl(raw: string): RegistryUrlCheck {
  const plain = PLAIN_ENDPOINT.exec(raw);
  // A host whose last label is a number is an IPv4 address to the WHATWG URL parser, which
  // canonicalizes it (127.1 → 127.0.0.1, 1.2.3.4.5 → invalid): leave those to the full parse.
  if (
    plain?.[1] !== undefined &&
    !plain[1].includes("..") &&
    !plain[1].startsWith("xn--") &&
    !plain[1].includes(".xn--") &&
    !/(?:^|\.)(?:\d+|0x[0-9a-f]*)$/.test(plain[1])
  ) {
    const port = plain[2];
    const portNumber = port === undefined ? 443 : Number(port);
    if (portNumber <= 65535)
      return { ok: true, host: portNumber === 443 ? plain[1] : `${plain[1]}:${portNumber}`, path: undefined };
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
    const path = repositoryPath(url.pathname);
    if (path === undefined) {
      return {
        ok: false,
        code: "ENTRY_URL_HAS_PATH",
        // The path is not quoted: a token pasted into it would reach logs and events.
        reason: `the registry URL's path is not a repository path (lowercase letters, digits and single separators per segment); use https://${hostKey(url)} or https://${hostKey(url)}/<namespace>`,
      };
    }
    return { ok: true, host: hostKey(url), path };
  }
  return { ok: true, host: hostKey(url), path: undefined };
}

/** A URL scheme at the start of a key: `https://`, `oci://`. */
const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** `key` without a leading URL scheme (`https://index.docker.io/v1/` → `index.docker.io/v1/`); the same string when it has none. */
export function withoutScheme(key: string): string {
  return key.replace(SCHEME, "");
}

/**
 * The deduplication identity of a key from an operator's Docker config or CLI configuration:
 * `registry` or `registry/path` (Docker Hub aliases folded), or undefined if not understood.
 */
export function identityOfConfigKey(key: string): string | undefined {
  const bare = withoutScheme(key);
  const slash = bare.indexOf("/");
  const host = slash < 0 ? bare : bare.slice(0, slash);
  const registry = registryOfConfigKey(host);
  if (registry === undefined) return undefined;
  // A scheme means a legacy Docker key such as https://index.docker.io/v1/: the path is not a scope.
  const path = slash < 0 || bare !== key ? undefined : repositoryPath(bare.slice(slash));
  return path === undefined ? registry : `${registry}/${path}`;
}

/**
 * Parses a key found in an operator's Docker config (`ghcr.io`, `https://index.docker.io/v1/`,
 * `ghcr.io/org/repo`) to the registry it belongs to, or undefined if it cannot be understood.
 */
export function registryOfConfigKey(key: string): string | undefined {
  const host = withoutScheme(key).split("/")[0] ?? "";
  if (host === "") return undefined;
  try {
    const url = new URL(`https://${host}`);
    return targetForHost(url.host).registry;
  } catch {
    return undefined;
  }
}
