/**
 * The check before `tofu init`: each exported username/password is tried against its registry
 * the way a client would (GET /v2/; on a 401 challenge, Basic auth, or the Bearer token flow with
 * realm, service and a pull scope for the repositories the configuration uses). A refusal ends
 * the run before init with an error naming the integration, the registry, the answer and the
 * likely fix, instead of a bare 401 deep inside tofu init. Unreachable registries only warn
 * (init will tell). Successes are cached for a few minutes, keyed by a hash of the credential.
 *
 * Every request is bounded as a whole (headers and body, src/http/bounded-request.ts), every
 * answer is read up to a byte limit, and one credential's whole check has its own deadline: a
 * registry that drips its answer a byte at a time cannot hold a run, with its credentials on
 * disk, past cancel or shutdown.
 */
import { createHash } from "node:crypto";
import type { Dispatcher } from "undici";
import { AgentError } from "../core/errors.js";
import type { SelectedCredential } from "../core/credential-selection.js";
import { encodeAuth } from "../core/docker-config.js";
import { mostSpecificScope } from "../core/repository-scope.js";
import {
  boundedRequest,
  BoundedRequestError,
  headerValue,
  secondsText,
  type BoundedResponse,
} from "../http/bounded-request.js";

/** At most this many repositories are checked per credential. */
const MAX_REPOSITORIES = 5;

export interface PreflightOutcome {
  readonly host: string;
  readonly integration_id: string;
  readonly result: "ok" | "cached" | "anonymous" | "unreachable" | "skipped";
  readonly detail: string;
}

interface Challenge {
  readonly scheme: "basic" | "bearer";
  readonly params: Readonly<Record<string, string>>;
}

function parseChallenge(header: string | undefined): Challenge | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(Basic|Bearer)\b(.*)$/i.exec(header);
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  for (const p of (m[2] ?? "").matchAll(/([A-Za-z_]+)="([^"]*)"/g))
    if (p[1] !== undefined && p[2] !== undefined) params[p[1].toLowerCase()] = p[2];
  return { scheme: m[1].toLowerCase() === "basic" ? "basic" : "bearer", params };
}

/**
 * Settles as `promise` does, or rejects with the signal's reason as soon as it aborts: the
 * caller leaves, and the promise runs on for whoever else waits on it.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const leave = (): void => {
      reject(signal.reason as Error);
    };
    if (signal.aborted) {
      leave();
      return;
    }
    signal.addEventListener("abort", leave, { once: true });
    promise
      .finally(() => {
        signal.removeEventListener("abort", leave);
      })
      .then(resolve, reject);
  });
}

/**
 * Which of the configuration's repositories each credential serves, by OpenTofu's rule: the
 * credential with the longest matching repository path wins, then the host-wide one.
 * `repositoriesByHost` is keyed by registry identity (`docker.io` for Docker Hub). Pure.
 */
function repositoriesServed(
  credentials: readonly SelectedCredential[],
  repositoriesByHost: ReadonlyMap<string, readonly string[]>,
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [registryHost, repos] of repositoriesByHost) {
    const candidates = credentials.filter(
      (c) => c.target.registry === registryHost || c.target.registry.startsWith(`${registryHost}/`),
    );
    for (const repo of repos) {
      const best = mostSpecificScope(candidates, (c) => c.target.path, repo);
      if (best === undefined) continue;
      const list = out.get(best.target.registry) ?? [];
      if (!list.includes(repo)) list.push(repo);
      out.set(best.target.registry, list);
    }
  }
  return out;
}

/** How long a registry that could not be reached is not asked again. */
export const UNREACHABLE_MEMORY_MS = 30_000;

/** The limits the agent and doctor check with: a registry that stalls costs a run at most this long. */
export const PREFLIGHT_LIMITS = {
  requestTimeoutMs: 10_000,
  checkTimeoutMs: 30_000,
  maxBodyBytes: 1024 * 1024,
} as const;

export interface PreflightOptions {
  /** How long a success is remembered (0: never). */
  readonly cacheMs: number;
  /** The deadline of each request, headers and body together. */
  readonly requestTimeoutMs: number;
  /** The deadline of one credential's whole check (challenge, token, every repository); past it the credential is "unreachable". */
  readonly checkTimeoutMs: number;
  /** The most bytes read from any answer (a token service's JSON); a larger token answer leaves the credential unverified. */
  readonly maxBodyBytes: number;
  readonly now: () => number;
  readonly dispatcher?: Dispatcher;
}

export class PreflightChecker {
  private readonly cache = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<PreflightOutcome>>();
  private readonly unreachable = new Map<string, { until: number; detail: string }>();

  constructor(private readonly options: PreflightOptions) {}

  /** GET within the request deadline and the check's `signal`; the body is read ("read") or dumped, up to maxBodyBytes. */
  private get(
    url: string,
    signal: AbortSignal,
    authorization?: string,
    consume: "read" | "dump" = "dump",
  ): Promise<BoundedResponse> {
    return boundedRequest(url, {
      method: "GET",
      headers: authorization === undefined ? {} : { authorization },
      timeoutMs: this.options.requestTimeoutMs,
      signal,
      maxBodyBytes: this.options.maxBodyBytes,
      consume,
      ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
    });
  }

  /**
   * Checks every password credential; throws PREFLIGHT_FAILED on the first refusal. When
   * `signal` aborts (the run is canceled or times out, the agent stops), rejects at once with
   * its reason, even while a check shared with other runs goes on for them.
   */
  async check(
    credentials: readonly SelectedCredential[],
    repositoriesByHost: ReadonlyMap<string, readonly string[]>,
    signal?: AbortSignal,
  ): Promise<PreflightOutcome[]> {
    const outcomes: PreflightOutcome[] = [];
    const served = repositoriesServed(credentials, repositoriesByHost);
    for (const credential of credentials) {
      signal?.throwIfAborted();
      outcomes.push(await untilAborted(this.checkShared(credential, served), signal));
    }
    return outcomes;
  }

  /**
   * Checks every credential whatever the others' results (for `doctor`): each entry is an
   * outcome, or the PREFLIGHT_FAILED refusal of that credential. `signal` as for check().
   */
  async checkEach(
    credentials: readonly SelectedCredential[],
    repositoriesByHost: ReadonlyMap<string, readonly string[]>,
    signal?: AbortSignal,
  ): Promise<(PreflightOutcome | AgentError)[]> {
    const served = repositoriesServed(credentials, repositoriesByHost);
    const results: (PreflightOutcome | AgentError)[] = [];
    for (const credential of credentials) {
      signal?.throwIfAborted();
      results.push(
        await untilAborted(this.checkShared(credential, served), signal).catch((error: unknown) => {
          if (error instanceof AgentError && !signal?.aborted) return error;
          throw error;
        }),
      );
    }
    return results;
  }

  /**
   * One check per credential at a time: runs that start together share the check in flight, and
   * a registry that could not be reached is not asked again for UNREACHABLE_MEMORY_MS (busy
   * agents must not queue on DNS or a dead endpoint). Refusals are never remembered. The shared
   * check takes no caller's signal (one run's cancel must not end it for the others); it is
   * bounded by checkTimeoutMs instead.
   */
  private checkShared(
    credential: SelectedCredential,
    served: ReadonlyMap<string, readonly string[]>,
  ): Promise<PreflightOutcome> {
    const { target, entry } = credential;
    const repoKey = [...(served.get(target.registry) ?? [])].sort().join(",");
    const key = createHash("sha256")
      .update(`${target.registry}\0${entry.username}\0${entry.password}\0${entry.credentialHelper ?? ""}\0${repoKey}`)
      .digest("hex");
    const now = this.options.now();
    const unreachable = this.unreachable.get(key);
    if (unreachable !== undefined && unreachable.until > now) {
      return Promise.resolve({
        host: target.host,
        integration_id: entry.id,
        result: "unreachable",
        detail: `${unreachable.detail} (remembered for ${Math.round(UNREACHABLE_MEMORY_MS / 1000)} s)`,
      });
    }
    const inflight = this.inflight.get(key);
    if (inflight !== undefined) return inflight;
    const promise = this.checkOne(credential, served, key).then((outcome) => {
      if (outcome.result === "unreachable")
        this.unreachable.set(key, { until: this.options.now() + UNREACHABLE_MEMORY_MS, detail: outcome.detail });
      return outcome;
    });
    this.inflight.set(key, promise);
    const forget = (): void => {
      this.inflight.delete(key);
    };
    promise.then(forget, forget);
    for (const [k, v] of this.unreachable) if (v.until <= now) this.unreachable.delete(k);
    for (const [k, until] of this.cache) if (until <= now) this.cache.delete(k);
    return promise;
  }

  private async checkOne(
    { target, entry }: SelectedCredential,
    served: ReadonlyMap<string, readonly string[]>,
    cacheKey: string,
  ): Promise<PreflightOutcome> {
    const base = { host: target.host, integration_id: entry.id };
    if (entry.credentialHelper !== undefined) {
      return { ...base, result: "skipped", detail: `served by docker-credential-${entry.credentialHelper}` };
    }
    if (entry.cloudAuth !== undefined && entry.password === "") {
      return { ...base, result: "skipped", detail: `minted from the ${entry.cloudAuth.provider} identity at run time` };
    }
    const cachedUntil = this.cache.get(cacheKey);
    if (cachedUntil !== undefined && cachedUntil > this.options.now()) {
      return { ...base, result: "cached", detail: "accepted recently" };
    }
    // Docker Hub's API endpoint is its OpenTofu key, registry-1.docker.io.
    const endpoint = target.hostKey;
    const basic = `Basic ${encodeAuth(entry.username, entry.password)}`;
    const who = `integration ${entry.id}${entry.name === undefined ? "" : ` (${entry.name})`}`;
    let step = `GET https://${endpoint}/v2/`;
    const { requestTimeoutMs, checkTimeoutMs, maxBodyBytes } = this.options;
    const deadline = AbortSignal.timeout(checkTimeoutMs);
    try {
      const first = await this.get(`https://${endpoint}/v2/`, deadline);
      if (first.status === 200) {
        return { ...base, result: "anonymous", detail: "the registry answers /v2/ without credentials" };
      }
      const challenge =
        first.status === 401 ? parseChallenge(headerValue(first.headers, "www-authenticate")) : undefined;
      if (challenge === undefined) {
        return {
          ...base,
          result: "unreachable",
          detail: `${step} answered HTTP ${first.status} without an auth challenge; not verified`,
        };
      }
      const scoped = (served.get(target.registry) ?? []).slice(0, MAX_REPOSITORIES);
      let status: number;
      let authorization = basic;
      if (challenge.scheme === "basic") {
        step = `GET https://${endpoint}/v2/ with Basic credentials`;
        const res = await this.get(`https://${endpoint}/v2/`, deadline, basic);
        status = res.status;
      } else {
        const realm = challenge.params["realm"];
        if (realm === undefined) throw new Error("Bearer challenge without realm");
        const url = new URL(realm);
        // The credential goes to the token service: only over TLS, whatever the challenge asks.
        if (url.protocol !== "https:") {
          return {
            ...base,
            result: "unreachable",
            detail: `the registry's token service ${url.origin} is not https; the credential was not sent, so it is not verified`,
          };
        }
        if (challenge.params["service"] !== undefined) url.searchParams.set("service", challenge.params["service"]);
        for (const repo of scoped) url.searchParams.append("scope", `repository:${repo}:pull`);
        step = `GET ${url.origin}${url.pathname} (token service${scoped.length > 0 ? `, scope ${scoped.map((r) => `repository:${r}:pull`).join(" ")}` : ""})`;
        // The token answer is read, up to maxBodyBytes: a larger one ends the check unverified.
        const res = await this.get(url.href, deadline, basic, "read");
        status = res.status;
        if (status >= 200 && status < 300) {
          const body = tokenAnswer(res.bytes);
          const token =
            typeof body.token === "string"
              ? body.token
              : typeof body.access_token === "string"
                ? body.access_token
                : undefined;
          if (token !== undefined) authorization = `Bearer ${token}`;
        }
      }
      if (status >= 200 && status < 300) {
        // A token service grants a token even without pull access (with an empty access list):
        // ask for each repository the configuration uses, as tofu init will.
        for (const repo of scoped) {
          const repoStep = `GET https://${endpoint}/v2/${repo}/tags/list`;
          const res = await this.get(`https://${endpoint}/v2/${repo}/tags/list?n=1`, deadline, authorization);
          if (res.status === 401 || res.status === 403) {
            throw new AgentError(
              "PREFLIGHT_FAILED",
              `${who} was refused by ${target.host}: ${repoStep} answered HTTP ${res.status}; the credentials are valid but the user has no pull access to ${repo}: grant it in the registry, or export another integration for it. The run stopped before tofu init`,
              { integration_id: entry.id, registry: target.host, status: res.status, repository: repo },
            );
          }
        }
        this.cache.set(cacheKey, this.options.now() + this.options.cacheMs);
        return {
          ...base,
          result: "ok",
          detail: `${step}${scoped.length > 0 ? `; pull access to ${scoped.join(", ")}` : ""}`,
        };
      }
      if (status === 401 || status === 403) {
        const fix =
          status === 401
            ? "the token or password was likely revoked or expired, or the username is wrong: update the integration's password"
            : "the user has no pull access to these repositories: grant it in the registry";
        throw new AgentError(
          "PREFLIGHT_FAILED",
          `${who} was refused by ${target.host}: ${step} answered HTTP ${status}; ${fix}. (If this registry should not get these credentials, turn export off for the integration.) The run stopped before tofu init`,
          { integration_id: entry.id, registry: target.host, status },
        );
      }
      return { ...base, result: "unreachable", detail: `${step} answered HTTP ${status}; not verified` };
    } catch (error) {
      if (error instanceof AgentError) throw error;
      let why: string;
      if (deadline.aborted) why = `the check timed out after ${secondsText(checkTimeoutMs)}`;
      else if (error instanceof BoundedRequestError && error.kind === "timeout")
        why = `timed out after ${secondsText(requestTimeoutMs)}`;
      else if (error instanceof BoundedRequestError && error.kind === "too_large")
        why = `its answer is over ${maxBodyBytes} bytes`;
      else if (error instanceof BoundedRequestError) why = error.details.label;
      else
        why =
          error instanceof Error && "code" in error && typeof error.code === "string"
            ? error.code
            : error instanceof Error
              ? error.name
              : "error";
      return { ...base, result: "unreachable", detail: `${step} failed (${why}); not verified, tofu init will tell` };
    }
  }
}

/** A token service's JSON answer, or {} when it is not a JSON object. */
function tokenAnswer(bytes: Buffer): { token?: unknown; access_token?: unknown } {
  try {
    const parsed: unknown = JSON.parse(bytes.toString("utf8"));
    return typeof parsed === "object" && parsed !== null ? parsed : {};
  } catch {
    return {};
  }
}
