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
  /** The cloud's own reason, short and free of secrets (its error code and message). */
  readonly reason: string;
  readonly fix: string;
}

/** The one refusal of every provider: names the cloud, the identity and the missing permission, with a fix. */
export function cloudAuthFailed(refusal: CloudRefusal, options?: { cause?: unknown }): AgentError {
  const permission = refusal.permission === undefined ? "" : `, missing permission ${refusal.permission}`;
  return new AgentError(
    "CLOUD_AUTH_FAILED",
    `${refusal.provider} gave no registry credential for ${refusal.registry} to identity ${refusal.identity}${permission}: ${refusal.reason}; ${refusal.fix}`,
    {
      provider: refusal.provider,
      identity: refusal.identity,
      registry: refusal.registry,
      permission: refusal.permission ?? null,
    },
    options,
  );
}
