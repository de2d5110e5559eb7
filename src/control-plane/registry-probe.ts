/**
 * Validates an integration's registry URL the way the platform does: HTTPS, the bare endpoint,
 * and a probe of GET /v2/ that does not follow redirects. A redirect is refused with the
 * endpoint to use instead; an answer that is not a registry's (neither 200 nor 401) is refused;
 * an endpoint that cannot be reached is accepted with a warning. TLS trust is Node's default
 * (system CAs plus NODE_EXTRA_CA_CERTS). The probe is bounded as a whole (an admin request must
 * not wait on an endpoint that drips its answer): a deadline for headers and body together, and
 * at most 64 KiB of the answer read.
 */
import type { Dispatcher } from "undici";
import { checkRegistryUrl, type RegistryUrlRefusalCode } from "../core/registry-address.js";
import { boundedRequest, BoundedRequestError, headerValue } from "../http/bounded-request.js";
import { HttpError } from "./http-util.js";

interface ProbeResult {
  readonly warnings: string[];
}

export type RegistryProber = (url: URL) => Promise<ProbeResult>;

/** Docker Hub names that are not registry endpoints, with the endpoint to use. */
const KNOWN_NOT_ENDPOINTS: Readonly<Record<string, string>> = {
  "docker.io": "https://registry-1.docker.io",
  "hub.docker.com": "https://registry-1.docker.io",
  "www.docker.com": "https://registry-1.docker.io",
};

/**
 * The agent's own check of a registry URL (checkRegistryUrl: the same function, so the control
 * plane never stores a URL the agent would refuse), answered with the admin API's codes; then
 * the Docker Hub names that are not endpoints. Returns the URL to store and probe: the
 * normalized host and, for a repository-scoped URL, its path.
 */
export function checkRegistryUrlForm(raw: string): URL {
  const checked = checkRegistryUrl(raw);
  if (!checked.ok) throw refusal(checked.code, raw);
  const url = new URL(`https://${checked.host}/${checked.path ?? ""}`);
  const instead = KNOWN_NOT_ENDPOINTS[url.hostname];
  if (instead !== undefined) {
    throw new HttpError(
      422,
      "REGISTRY_URL_REDIRECTS",
      `https://${url.host} is not a registry endpoint (it redirects to the website); use ${instead}`,
      {
        field: "registry_url",
        use_instead: instead,
      },
    );
  }
  return url;
}

function refusal(code: RegistryUrlRefusalCode, raw: string): HttpError {
  if (code === "ENTRY_URL_INVALID") {
    return new HttpError(
      422,
      "REGISTRY_URL_INVALID",
      "registry_url is not a URL; use the registry's HTTPS endpoint, for example https://ghcr.io",
      { field: "registry_url" },
    );
  }
  // Every other refusal is of a URL that parses (as checkRegistryUrl parsed it): its parts make the message.
  const url = new URL(raw.trim());
  switch (code) {
    case "ENTRY_NOT_HTTPS":
      return new HttpError(422, "REGISTRY_URL_NOT_HTTPS", `registry_url must use https://, not ${url.protocol}//`, {
        field: "registry_url",
      });
    case "ENTRY_URL_NOT_BARE":
      return new HttpError(
        422,
        "REGISTRY_URL_NOT_BARE",
        `registry_url must have no query, fragment or user information; use https://${url.host}`,
        { field: "registry_url" },
      );
    case "ENTRY_URL_HAS_PATH":
      return new HttpError(
        422,
        "REGISTRY_URL_NOT_BARE",
        `registry_url must be the bare endpoint (https://${url.host}) or a repository-scoped one (https://${url.host}/<namespace>); ${url.pathname} is not a repository path`,
        { field: "registry_url" },
      );
  }
}

export interface ProbeBounds {
  /** The deadline of the whole exchange, headers and body (10 s). */
  readonly timeoutMs?: number;
  /** The most answer bytes read; a /v2/ answer is tiny, and only its status and headers count (64 KiB). */
  readonly maxBodyBytes?: number;
  /** Node's global dispatcher unless given (tests give one that trusts their CA). */
  readonly dispatcher?: Dispatcher;
}

const PROBE_TIMEOUT_MS = 10_000;
const PROBE_MAX_BODY_BYTES = 64 * 1024;

export async function probeRegistry(url: URL, bounds: ProbeBounds = {}): Promise<ProbeResult> {
  const target = new URL("/v2/", url);
  let status: number;
  let location: string | undefined;
  let apiVersion: string | undefined;
  let contentType: string;
  try {
    const res = await boundedRequest(target, {
      method: "GET",
      timeoutMs: bounds.timeoutMs ?? PROBE_TIMEOUT_MS,
      maxBodyBytes: bounds.maxBodyBytes ?? PROBE_MAX_BODY_BYTES,
      consume: "dump",
      ...(bounds.dispatcher ? { dispatcher: bounds.dispatcher } : {}),
    });
    status = res.status;
    location = headerValue(res.headers, "location");
    apiVersion = headerValue(res.headers, "docker-distribution-api-version");
    contentType = headerValue(res.headers, "content-type") ?? "";
  } catch (error) {
    // timeout, or the network error's code (ECONNREFUSED, ENOTFOUND, a TLS error).
    const why = error instanceof BoundedRequestError ? error.details.label : "error";
    return { warnings: [`could not reach ${target.href} to verify the endpoint (${why}); saved unverified`] };
  }
  if (status >= 300 && status < 400) {
    let instead = "the registry's API endpoint (the URL whose /v2/ answers 200 or 401)";
    if (location !== undefined) {
      try {
        instead = new URL(location, target).origin;
      } catch {
        // keep the generic advice
      }
    }
    throw new HttpError(
      422,
      "REGISTRY_URL_REDIRECTS",
      `${target.href} redirects (HTTP ${status}); the registry URL must be the exact endpoint, not one that redirects. Use ${instead}`,
      {
        field: "registry_url",
        use_instead: instead,
      },
    );
  }
  if (status !== 200 && status !== 401) {
    throw new HttpError(
      422,
      "REGISTRY_URL_NOT_A_REGISTRY",
      `${target.href} answered HTTP ${status}; a Docker Registry HTTP API V2 endpoint answers 200 or 401. Check the URL`,
      {
        field: "registry_url",
      },
    );
  }
  // A website (an SPA or a catch-all page) answers 200 to any path; a registry's /v2/ answers
  // JSON ({}) and, in practice, Docker-Distribution-API-Version: registry/2.0.
  if (status === 200 && apiVersion === undefined && !/\bjson\b/i.test(contentType)) {
    throw new HttpError(
      422,
      "REGISTRY_URL_NOT_A_REGISTRY",
      `${target.href} answered HTTP 200 with ${contentType === "" ? "no content type" : contentType} and no Docker-Distribution-API-Version header: a web page, not a Docker Registry HTTP API V2 endpoint. Check the URL`,
      { field: "registry_url" },
    );
  }
  return { warnings: [] };
}
