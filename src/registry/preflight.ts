/**
 * The check before `tofu init`: each exported username/password is tried against its registry
 * the way a client would (GET /v2/; on a 401 challenge, Basic auth, or the Bearer token flow with
 * realm, service and a pull scope for the repositories the configuration uses). A refusal ends
 * the run before init with an error naming the integration, the registry, the answer and the
 * likely fix, instead of a bare 401 deep inside tofu init. Unreachable registries only warn
 * (init will tell). Successes are cached for a few minutes, keyed by a hash of the credential.
 */
import { createHash } from "node:crypto";
import { request, type Dispatcher } from "undici";
import { AgentError } from "../core/errors.js";
import type { SelectedCredential } from "../core/credential-selection.js";

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

export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(Basic|Bearer)\b(.*)$/i.exec(header);
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  for (const p of (m[2] ?? "").matchAll(/([A-Za-z_]+)="([^"]*)"/g)) if (p[1] !== undefined && p[2] !== undefined) params[p[1].toLowerCase()] = p[2];
  return { scheme: m[1].toLowerCase() === "basic" ? "basic" : "bearer", params };
}

function header(res: Dispatcher.ResponseData, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Which of the configuration's repositories each credential serves, by OpenTofu's rule: the
 * credential with the longest matching repository path wins, then the host-wide one.
 * `repositoriesByHost` is keyed by registry identity (`docker.io` for Docker Hub). Pure.
 */
export function repositoriesServed(credentials: readonly SelectedCredential[], repositoriesByHost: ReadonlyMap<string, readonly string[]>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [registryHost, repos] of repositoriesByHost) {
    const candidates = credentials.filter((c) => c.target.registry === registryHost || c.target.registry.startsWith(`${registryHost}/`));
    for (const repo of repos) {
      let best: SelectedCredential | undefined;
      for (const c of candidates) {
        const path = c.target.path;
        const matches = path === undefined || repo === path || repo.startsWith(`${path}/`);
        if (matches && (best === undefined || (path?.length ?? -1) > (best.target.path?.length ?? -1))) best = c;
      }
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

export class PreflightChecker {
  private readonly cache = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<PreflightOutcome>>();
  private readonly unreachable = new Map<string, { until: number; detail: string }>();

  constructor(
    private readonly options: { readonly cacheMs: number; readonly timeoutMs: number; readonly now: () => number; readonly dispatcher?: Dispatcher },
  ) {}

  private async get(url: string, authorization?: string): Promise<Dispatcher.ResponseData> {
    const res = await request(url, {
      method: "GET",
      headers: authorization === undefined ? {} : { authorization },
      headersTimeout: this.options.timeoutMs,
      bodyTimeout: this.options.timeoutMs,
      ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
    });
    return res;
  }

  /** Checks every password credential; throws PREFLIGHT_FAILED on the first refusal. */
  async check(credentials: readonly SelectedCredential[], repositoriesByHost: ReadonlyMap<string, readonly string[]>): Promise<PreflightOutcome[]> {
    const outcomes: PreflightOutcome[] = [];
    const served = repositoriesServed(credentials, repositoriesByHost);
    for (const credential of credentials) outcomes.push(await this.checkShared(credential, served));
    return outcomes;
  }

  /**
   * Checks every credential whatever the others' results (for `doctor`): each entry is an
   * outcome, or the PREFLIGHT_FAILED refusal of that credential.
   */
  async checkEach(credentials: readonly SelectedCredential[], repositoriesByHost: ReadonlyMap<string, readonly string[]>): Promise<(PreflightOutcome | AgentError)[]> {
    const served = repositoriesServed(credentials, repositoriesByHost);
    const results: (PreflightOutcome | AgentError)[] = [];
    for (const credential of credentials) {
      results.push(
        await this.checkShared(credential, served).catch((error: unknown) => {
          if (error instanceof AgentError) return error;
          throw error;
        }),
      );
    }
    return results;
  }

  /**
   * One check per credential at a time: runs that start together share the check in flight, and
   * a registry that could not be reached is not asked again for UNREACHABLE_MEMORY_MS (busy
   * agents must not queue on DNS or a dead endpoint). Refusals are never remembered.
   */
  private checkShared(credential: SelectedCredential, served: ReadonlyMap<string, readonly string[]>): Promise<PreflightOutcome> {
    const { target, entry } = credential;
    const repoKey = [...(served.get(target.registry) ?? [])].sort().join(",");
    const key = createHash("sha256").update(`${target.registry}\0${entry.username}\0${entry.password}\0${entry.credentialHelper ?? ""}\0${repoKey}`).digest("hex");
    const now = this.options.now();
    const unreachable = this.unreachable.get(key);
    if (unreachable !== undefined && unreachable.until > now) {
      return Promise.resolve({ host: target.host, integration_id: entry.id, result: "unreachable", detail: `${unreachable.detail} (remembered for ${Math.round(UNREACHABLE_MEMORY_MS / 1000)} s)` });
    }
    const inflight = this.inflight.get(key);
    if (inflight !== undefined) return inflight;
    const promise = this.checkOne(credential, served, key).then((outcome) => {
      if (outcome.result === "unreachable") this.unreachable.set(key, { until: this.options.now() + UNREACHABLE_MEMORY_MS, detail: outcome.detail });
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

  private async checkOne({ target, entry }: SelectedCredential, served: ReadonlyMap<string, readonly string[]>, cacheKey: string): Promise<PreflightOutcome> {
    const base = { host: target.host, integration_id: entry.id };
    if (entry.credentialHelper !== undefined) {
      return { ...base, result: "skipped", detail: `served by docker-credential-${entry.credentialHelper}` };
    }
    const cachedUntil = this.cache.get(cacheKey);
    if (cachedUntil !== undefined && cachedUntil > this.options.now()) {
      return { ...base, result: "cached", detail: "accepted recently" };
    }
    // Docker Hub's API endpoint is its OpenTofu key, registry-1.docker.io.
    const endpoint = target.hostKey;
    const basic = `Basic ${Buffer.from(`${entry.username}:${entry.password}`, "utf8").toString("base64")}`;
    const who = `integration ${entry.id}${entry.name === undefined ? "" : ` (${entry.name})`}`;
    let step = `GET https://${endpoint}/v2/`;
    try {
      const first = await this.get(`https://${endpoint}/v2/`);
      await first.body.dump();
      if (first.statusCode === 200) {
        return { ...base, result: "anonymous", detail: "the registry answers /v2/ without credentials" };
      }
      const challenge = first.statusCode === 401 ? parseChallenge(header(first, "www-authenticate")) : undefined;
      if (challenge === undefined) {
        return { ...base, result: "unreachable", detail: `${step} answered HTTP ${first.statusCode} without an auth challenge; not verified` };
      }
      const scoped = (served.get(target.registry) ?? []).slice(0, MAX_REPOSITORIES);
      let status: number;
      let authorization = basic;
      if (challenge.scheme === "basic") {
        step = `GET https://${endpoint}/v2/ with Basic credentials`;
        const res = await this.get(`https://${endpoint}/v2/`, basic);
        await res.body.dump();
        status = res.statusCode;
      } else {
        const realm = challenge.params["realm"];
        if (realm === undefined) throw new Error("Bearer challenge without realm");
        const url = new URL(realm);
        // The credential goes to the token service: only over TLS, whatever the challenge asks.
        if (url.protocol !== "https:") {
          return { ...base, result: "unreachable", detail: `the registry's token service ${url.origin} is not https; the credential was not sent, so it is not verified` };
        }
        if (challenge.params["service"] !== undefined) url.searchParams.set("service", challenge.params["service"]);
        for (const repo of scoped) url.searchParams.append("scope", `repository:${repo}:pull`);
        step = `GET ${url.origin}${url.pathname} (token service${scoped.length > 0 ? `, scope ${scoped.map((r) => `repository:${r}:pull`).join(" ")}` : ""})`;
        const res = await this.get(url.href, basic);
        status = res.statusCode;
        if (status >= 200 && status < 300) {
          const body = (await res.body.json().catch(() => ({}))) as { token?: unknown; access_token?: unknown };
          const token = typeof body.token === "string" ? body.token : typeof body.access_token === "string" ? body.access_token : undefined;
          if (token !== undefined) authorization = `Bearer ${token}`;
        } else await res.body.dump();
      }
      if (status >= 200 && status < 300) {
        // A token service grants a token even without pull access (with an empty access list):
        // ask for each repository the configuration uses, as tofu init will.
        for (const repo of scoped) {
          const repoStep = `GET https://${endpoint}/v2/${repo}/tags/list`;
          const res = await this.get(`https://${endpoint}/v2/${repo}/tags/list?n=1`, authorization);
          await res.body.dump();
          if (res.statusCode === 401 || res.statusCode === 403) {
            throw new AgentError(
              "PREFLIGHT_FAILED",
              `${who} was refused by ${target.host}: ${repoStep} answered HTTP ${res.statusCode}; the credentials are valid but the user has no pull access to ${repo}: grant it in the registry, or export another integration for it. The run stopped before tofu init`,
              { integration_id: entry.id, registry: target.host, status: res.statusCode, repository: repo },
            );
          }
        }
        this.cache.set(cacheKey, this.options.now() + this.options.cacheMs);
        return { ...base, result: "ok", detail: `${step}${scoped.length > 0 ? `; pull access to ${scoped.join(", ")}` : ""}` };
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
      const why = error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : error instanceof Error ? error.name : "error";
      return { ...base, result: "unreachable", detail: `${step} failed (${why}); not verified, tofu init will tell` };
    }
  }
}
