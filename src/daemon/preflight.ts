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

export class PreflightChecker {
  private readonly cache = new Map<string, number>();

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
    for (const { target, entry } of credentials) {
      const base = { host: target.host, integration_id: entry.id };
      if (entry.credentialHelper !== undefined) {
        outcomes.push({ ...base, result: "skipped", detail: `served by docker-credential-${entry.credentialHelper}` });
        continue;
      }
      const cacheKey = createHash("sha256").update(`${target.registry}\0${entry.username}\0${entry.password}`).digest("hex");
      const cachedUntil = this.cache.get(cacheKey);
      if (cachedUntil !== undefined && cachedUntil > this.options.now()) {
        outcomes.push({ ...base, result: "cached", detail: "accepted recently" });
        continue;
      }
      const endpoint = target.hostKey === "registry-1.docker.io" ? "registry-1.docker.io" : target.hostKey;
      const basic = `Basic ${Buffer.from(`${entry.username}:${entry.password}`, "utf8").toString("base64")}`;
      const who = `integration ${entry.id}${entry.name === undefined ? "" : ` (${entry.name})`}`;
      let step = `GET https://${endpoint}/v2/`;
      try {
        const first = await this.get(`https://${endpoint}/v2/`);
        await first.body.dump();
        if (first.statusCode === 200) {
          outcomes.push({ ...base, result: "anonymous", detail: "the registry answers /v2/ without credentials" });
          continue;
        }
        const challenge = first.statusCode === 401 ? parseChallenge(header(first, "www-authenticate")) : undefined;
        if (challenge === undefined) {
          outcomes.push({ ...base, result: "unreachable", detail: `${step} answered HTTP ${first.statusCode} without an auth challenge; not verified` });
          continue;
        }
        let status: number;
        if (challenge.scheme === "basic") {
          step = `GET https://${endpoint}/v2/ with Basic credentials`;
          const res = await this.get(`https://${endpoint}/v2/`, basic);
          await res.body.dump();
          status = res.statusCode;
        } else {
          const realm = challenge.params["realm"];
          if (realm === undefined) throw new Error("Bearer challenge without realm");
          const url = new URL(realm);
          if (challenge.params["service"] !== undefined) url.searchParams.set("service", challenge.params["service"]);
          const repos = repositoriesByHost.get(target.registry) ?? repositoriesByHost.get(target.registry.split("/")[0] ?? "") ?? [];
          const scoped = target.path === undefined ? repos : repos.filter((r) => r === target.path || r.startsWith(`${target.path ?? ""}/`));
          for (const repo of scoped.slice(0, 5)) url.searchParams.append("scope", `repository:${repo}:pull`);
          step = `GET ${url.origin}${url.pathname} (token service${scoped.length > 0 ? `, scope ${scoped.slice(0, 5).map((r) => `repository:${r}:pull`).join(" ")}` : ""})`;
          const res = await this.get(url.href, basic);
          await res.body.dump();
          status = res.statusCode;
        }
        if (status >= 200 && status < 300) {
          this.cache.set(cacheKey, this.options.now() + this.options.cacheMs);
          outcomes.push({ ...base, result: "ok", detail: step });
          continue;
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
        outcomes.push({ ...base, result: "unreachable", detail: `${step} answered HTTP ${status}; not verified` });
      } catch (error) {
        if (error instanceof AgentError) throw error;
        const why = error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : error instanceof Error ? error.name : "error";
        outcomes.push({ ...base, result: "unreachable", detail: `${step} failed (${why}); not verified, tofu init will tell` });
      }
    }
    return outcomes;
  }
}
