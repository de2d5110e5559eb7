/**
 * Which registry hosts may receive a credential minted from the pool's own cloud identity. The
 * agent decides this, not the control plane: an integration names any registry URL, and a token
 * minted for it (an Entra access token sent to the registry's /oauth2/exchange, a cloud-platform
 * access token or an ECR password sent by pre-flight and written for tofu) goes to that host. So
 * a `cloud_auth` entry is minted only for the cloud's own registry hosts, or for hosts the
 * operator names (`cloud_auth_host`: private endpoints and proxies). Pure.
 */
import type { CloudAuth } from "./cloud-auth.js";

/** `HOST[:PORT]` with an optional leading `*.`; IPv6 in brackets. Lowercase. */
const PATTERN =
  /^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/;

/** The pattern as the agent compares it (lowercase, `:443` dropped), or undefined when it is none. */
export function parseCloudHostPattern(text: string): string | undefined {
  const lower = text.trim().toLowerCase();
  const match = PATTERN.exec(lower);
  if (match === null) return undefined;
  const port = match[1];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65_535)) return undefined;
  return port === "443" ? lower.slice(0, -":443".length) : lower;
}

/** The hosts each cloud's registries live on, for the entry's parameters (ECR: its region). */
export function defaultCloudHosts(auth: CloudAuth): string[] {
  switch (auth.provider) {
    case "aws": {
      const region = auth.region.toLowerCase();
      return [`*.dkr.ecr.${region}.amazonaws.com`, `*.dkr.ecr.${region}.amazonaws.com.cn`];
    }
    case "azure":
      return ["*.azurecr.io", "*.azurecr.cn", "*.azurecr.us"];
    case "gcp":
      return ["*.pkg.dev", "gcr.io", "*.gcr.io"];
  }
}

/**
 * Whether `host` (`host[:port]` as the registry address gives it: lowercase, `:443` dropped)
 * matches `pattern`: the same name, or, for `*.SUFFIX`, any name ending in `.SUFFIX`; a port
 * only when the pattern names the same one.
 */
function cloudHostMatches(pattern: string, host: string): boolean {
  if (!pattern.startsWith("*.")) return pattern === host;
  const suffix = pattern.slice(1);
  return host.length > suffix.length && host.endsWith(suffix) && !host.slice(0, -suffix.length).includes(":");
}

/** Whether a credential of `auth` may be minted for `host`, by the cloud's defaults or the operator's patterns. */
export function cloudHostAllowed(auth: CloudAuth, host: string, operatorPatterns: readonly string[]): boolean {
  const lower = host.toLowerCase();
  return [...defaultCloudHosts(auth), ...operatorPatterns].some((p) => cloudHostMatches(p, lower));
}
