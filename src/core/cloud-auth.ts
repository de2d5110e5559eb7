/**
 * Registry credentials minted at run time from the pool's own cloud identity (an export entry's
 * `cloud_auth`, docs/protocol.md section 1): what an entry asks for, what a minter gives back,
 * and the refusal every provider uses. Pure: the minters themselves live in src/cloud/ and are
 * handed to the credentials layer by the composition root.
 */
import { AgentError } from "./errors.js";

/** What an export entry asks the agent to mint, in place of a username and password. */
export type CloudAuth =
  | { readonly provider: "aws"; readonly region: string; readonly account: string | undefined }
  | { readonly provider: "azure"; readonly tenantId: string | undefined; readonly clientId: string | undefined }
  | { readonly provider: "gcp" };

export type CloudProvider = CloudAuth["provider"];

export const CLOUD_PROVIDERS: readonly CloudProvider[] = ["aws", "azure", "gcp"];

/** A short-lived registry credential, written as an ordinary `auth` entry (never `identitytoken`). */
export interface MintedCredential {
  readonly username: string;
  readonly password: string;
  /** Milliseconds since the epoch. */
  readonly expiresAtMs: number;
  /** Who the cloud says the agent is (a role ARN, a client id): for logs and refusals, never a secret. */
  readonly identity: string;
}

/** Mints registry credentials from the cloud identity of the process it runs in. */
export interface CloudMinter {
  mint(auth: CloudAuth, registryHost: string, signal: AbortSignal): Promise<MintedCredential>;
}

/** The wire form of docs/protocol.md section 1 (`cloud_auth`), with only the fields that are set. */
export function cloudAuthJson(auth: CloudAuth): Record<string, string> {
  switch (auth.provider) {
    case "aws":
      return { provider: "aws", region: auth.region, ...(auth.account === undefined ? {} : { account: auth.account }) };
    case "azure":
      return {
        provider: "azure",
        ...(auth.tenantId === undefined ? {} : { tenant_id: auth.tenantId }),
        ...(auth.clientId === undefined ? {} : { client_id: auth.clientId }),
      };
    case "gcp":
      return { provider: "gcp" };
  }
}

/** The parameters that change what is minted, as text: part of a cache key, never a secret. */
export function cloudAuthParameters(auth: CloudAuth): string {
  switch (auth.provider) {
    case "aws":
      return `region=${auth.region};account=${auth.account ?? ""}`;
    case "azure":
      return `tenant=${auth.tenantId ?? ""};client=${auth.clientId ?? ""}`;
    case "gcp":
      return "";
  }
}

export interface CloudRefusal {
  readonly provider: CloudProvider;
  /** Who asked: a role ARN, a client id, or how the identity was looked for when none was found. */
  readonly identity: string;
  readonly registry: string;
  /** The permission the cloud says is missing (`ecr:GetAuthorizationToken`), when it says so. */
  readonly permission: string | undefined;
  /** The cloud's own reason, short (its error code and message); scrubbed here (scrubCloudText). */
  readonly reason: string;
  readonly fix: string;
  /**
   * Every secret the minter knows of: what it sent (a token file's content, an Entra or STS
   * token, session credentials) and what it received. A cloud may echo any of them in its error.
   */
  readonly secrets?: readonly (string | undefined)[];
}

/** What a masked secret is shown as. */
const MASK = "[redacted]";

/** Runs of the characters tokens are made of (base64, base64url, JWT dots). */
const TOKEN_RUN = /[A-Za-z0-9._~+/=-]+/g;

/** A GUID (a client, tenant or request id): an identifier, never a secret. */
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Secrets shorter than this are not looked for inside other text (they would match words). */
const MIN_SECRET = 8;

/**
 * Whether a run looks like a token even when the minter does not know it: a Google access token
 * (`ya29.`), a JWT (`eyJ`, base64 of `{"`), or a dot-free stretch of 24 or more characters
 * mixing letters and digits that is not a GUID (a key, a signature, an opaque token). Words,
 * dotted names (`iam.serviceAccounts.getAccessToken`) and slash paths without digits are kept.
 */
function looksLikeToken(run: string): boolean {
  if (run.includes("ya29.") || /eyJ[A-Za-z0-9_-]{4,}/.test(run)) return true;
  return run
    .split(".")
    .some((part) => part.length >= 24 && /[0-9]/.test(part) && /[A-Za-z]/.test(part) && !GUID.test(part));
}

/**
 * A cloud's text with every known secret removed, every run that is part of one (an echo of a
 * token's first characters), and every run that looks like a token: what a refusal may carry
 * to the run's error, its logs and the control plane. Pure.
 */
export function scrubCloudText(text: string, secrets: readonly (string | undefined)[] = []): string {
  const known = [
    ...new Set(secrets.flatMap((s) => (s === undefined ? [] : [s, s.trim()])).filter((s) => s.length >= MIN_SECRET)),
  ].sort((a, b) => b.length - a.length);
  let out = text;
  for (const secret of known) out = out.split(secret).join(MASK);
  return out.replace(TOKEN_RUN, (run) =>
    run === MASK ||
    (run.length < MIN_SECRET && !run.includes("ya29.")) ||
    !(known.some((s) => s.includes(run)) || looksLikeToken(run))
      ? run
      : MASK,
  );
}

/** A text with only the known secrets removed (identities: ARNs and audiences are long but no token). */
function withoutKnownSecrets(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) if (s !== undefined && s.trim().length >= MIN_SECRET) out = out.split(s.trim()).join(MASK);
  return out;
}

/** The one refusal of every provider: names the cloud, the identity and the missing permission, with a fix. */
export function cloudAuthFailed(refusal: CloudRefusal): AgentError {
  const secrets = refusal.secrets ?? [];
  const identity = withoutKnownSecrets(refusal.identity, secrets);
  const permission = refusal.permission === undefined ? undefined : scrubCloudText(refusal.permission, secrets);
  const line = scrubCloudText(refusal.reason.split("\n")[0] ?? "", secrets);
  const reason = line.length > 400 ? `${line.slice(0, 400)}...` : line;
  const missing = permission === undefined ? "" : `, missing permission ${permission}`;
  return new AgentError(
    "CLOUD_AUTH_FAILED",
    `${refusal.provider} gave no registry credential for ${refusal.registry} to identity ${identity}${missing}: ${reason}; ${refusal.fix}`,
    { provider: refusal.provider, identity, registry: refusal.registry, permission: permission ?? null },
  );
}
