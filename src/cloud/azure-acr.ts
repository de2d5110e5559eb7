/**
 * Azure Container Registry: a registry credential from the pool's own Entra ID identity. Loaded
 * only when an entry asks for azure (src/cloud/cloud-minter.ts imports this module dynamically),
 * with the SDK.
 *
 * 1. An Entra ID access token for ACR's audience (`https://containerregistry.azure.net/.default`,
 *    which ACR accepts whether or not it also accepts ARM tokens) from @azure/identity: workload
 *    identity when AZURE_FEDERATED_TOKEN_FILE is set (the federated token as client assertion,
 *    with AZURE_CLIENT_ID and AZURE_TENANT_ID, the entry's client_id/tenant_id overriding), a
 *    managed identity otherwise (user-assigned when a client id is named). The SDK honours its
 *    documented endpoint overrides, AZURE_AUTHORITY_HOST (sovereign clouds, private authorities,
 *    the tests' stand-in) and, for managed identity, AZURE_POD_IDENTITY_AUTHORITY_HOST and the
 *    App Service / Arc variables (IDENTITY_ENDPOINT, ...).
 * 2. ACR's exchange, `POST https://<registry>/oauth2/exchange` (grant_type=access_token, service,
 *    tenant, access_token), gives an ACR refresh token, which Docker tools, skopeo and OpenTofu
 *    accept as the password of the user `00000000-0000-0000-0000-000000000000` (an ordinary
 *    `auth` entry, never `identitytoken`, which OpenTofu ignores). Its lifetime is its JWT's
 *    `exp` (read without verifying: ACR verifies it, the agent only needs to know when to renew),
 *    or about 3 hours when it has none.
 *
 * No token reaches a log or a message: the SDK is not given a logger, and a refusal carries the
 * cloud's error code and description only.
 */
import { rootCertificates } from "node:tls";
import {
  AuthenticationError,
  ManagedIdentityCredential,
  WorkloadIdentityCredential,
  type TokenCredential,
} from "@azure/identity";
import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from "undici";
import { cloudAuthFailed, type CloudAuth, type CloudMinter, type MintedCredential } from "../core/cloud-auth.js";
import { AgentError } from "../core/errors.js";
import { azureIdentityOf, describeAzureIdentity, type AzureIdentity } from "./azure-identity.js";
import { readTokenFile } from "./token-files.js";

/** The user ACR's refresh tokens are presented with. */
const ACR_REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000";

/** ACR's scope for Entra ID tokens (its `AzureADAuthenticationAsArmPolicy` may refuse ARM-audience tokens). */
const ACR_SCOPE = "https://containerregistry.azure.net/.default";

/** ACR's refresh tokens live about 3 hours; used when one carries no `exp`. */
const ACR_REFRESH_TOKEN_LIFETIME_MS = 3 * 3_600_000;

/** The exchange's answer is small; anything bigger is not ACR. */
const MAX_EXCHANGE_BODY = 64 * 1024;

export interface AzureAcrMinterOptions {
  /**
   * CA certificates (PEM) trusted besides Node's own store (system roots and NODE_EXTRA_CA_CERTS)
   * for Entra ID and the registry's exchange. The agent passes none; the tests' stand-ins need it.
   */
  readonly extraCaPem?: string | undefined;
}

/** The `exp` of a JWT, in milliseconds, without verifying anything; undefined when there is none. */
function jwtExpiryMs(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as unknown;
    const exp = typeof claims === "object" && claims !== null ? (claims as Record<string, unknown>)["exp"] : undefined;
    return typeof exp === "number" && Number.isFinite(exp) && exp > 0 ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** The `tid` claim of an Entra access token (the tenant to name in the exchange when none is configured). */
function jwtTenant(token: string): string | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as unknown;
    const tid = typeof claims === "object" && claims !== null ? (claims as Record<string, unknown>)["tid"] : undefined;
    return typeof tid === "string" && tid !== "" ? tid : undefined;
  } catch {
    return undefined;
  }
}

/** ACR's error body (`{"errors":[{"code","message"}]}`) as `CODE: message`, or the status alone. */
function acrReason(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = parsed.errors?.[0];
    if (first !== undefined)
      return `ACR /oauth2/exchange answered ${status} ${String(first.code)}: ${String(first.message)}`;
  } catch {
    // not ACR's JSON
  }
  return `ACR /oauth2/exchange answered ${status}`;
}

function proxyConfigured(env: NodeJS.ProcessEnv): boolean {
  return ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"].some((k) => (env[k] ?? "") !== "");
}

export class AzureAcrMinter implements CloudMinter {
  /** One credential per identity; each keeps its Entra token until shortly before it expires. */
  private readonly credentials = new Map<string, TokenCredential>();
  private readonly dispatcher: Dispatcher;
  private readonly tlsOptions: { ca: string[] } | undefined;

  constructor(options: AzureAcrMinterOptions = {}) {
    const ca = options.extraCaPem === undefined ? undefined : [...rootCertificates, options.extraCaPem];
    this.tlsOptions = ca === undefined ? undefined : { ca };
    const common = { keepAliveTimeout: 4_000, connections: 4, ...(ca === undefined ? {} : { connect: { ca } }) };
    this.dispatcher = proxyConfigured(process.env) ? new EnvHttpProxyAgent(common) : new Agent(common);
  }

  private credential(identity: AzureIdentity): TokenCredential {
    const key = `${identity.kind}\0${identity.tenantId ?? ""}\0${identity.clientId ?? ""}`;
    let credential = this.credentials.get(key);
    if (credential === undefined) {
      const common = {
        ...(this.tlsOptions === undefined ? {} : { tlsOptions: this.tlsOptions }),
        // An authority named by AZURE_AUTHORITY_HOST is used as is (its own metadata), not looked up at Microsoft's.
        ...((process.env["AZURE_AUTHORITY_HOST"] ?? "") === "" ? {} : { disableInstanceDiscovery: true }),
      };
      credential =
        identity.kind === "workload"
          ? new WorkloadIdentityCredential({
              ...common,
              tokenFilePath: identity.tokenFile,
              ...(identity.tenantId === undefined ? {} : { tenantId: identity.tenantId }),
              ...(identity.clientId === undefined ? {} : { clientId: identity.clientId }),
            })
          : identity.clientId === undefined
            ? new ManagedIdentityCredential(common)
            : new ManagedIdentityCredential({ ...common, clientId: identity.clientId });
      this.credentials.set(key, credential);
    }
    return credential;
  }

  async mint(auth: CloudAuth, registryHost: string, signal: AbortSignal): Promise<MintedCredential> {
    if (auth.provider !== "azure")
      throw new AgentError("INTERNAL", `the azure minter was given a ${auth.provider} entry`);
    const identity = azureIdentityOf(process.env, auth);
    const who = describeAzureIdentity(identity);
    // What a refusal is scrubbed of: what was sent (the federated token) and received (the tokens).
    const secrets: (string | undefined)[] = [
      identity.kind === "workload" ? readTokenFile(identity.tokenFile) : undefined,
      process.env["AZURE_CLIENT_SECRET"],
    ];
    // No cause: the SDK's and undici's errors may hold the request, and with it a token.
    const refuse = (reason: string, fix: string, permission?: string): AgentError =>
      cloudAuthFailed({ provider: "azure", identity: who, registry: registryHost, permission, reason, fix, secrets });

    if (identity.kind === "workload" && (identity.clientId === undefined || identity.tenantId === undefined)) {
      const missing = [
        ...(identity.clientId === undefined ? ["a client id"] : []),
        ...(identity.tenantId === undefined ? ["a tenant id"] : []),
      ].join(" and ");
      throw refuse(
        `workload identity (AZURE_FEDERATED_TOKEN_FILE) needs ${missing}`,
        "set AZURE_CLIENT_ID and AZURE_TENANT_ID (the AKS workload identity webhook sets them) or the entry's client_id and tenant_id",
      );
    }

    // 1. Entra ID.
    let accessToken: string;
    try {
      const token = await this.credential(identity).getToken(ACR_SCOPE, { abortSignal: signal });
      if (token === null) throw new Error("Entra ID gave no access token");
      accessToken = token.token;
      secrets.push(accessToken);
    } catch (error) {
      const e = error instanceof Error ? error : new Error("unexpected failure");
      const entra =
        error instanceof AuthenticationError
          ? `${error.errorResponse.error}: ${error.errorResponse.errorDescription}`
          : `${e.name}: ${e.message}`;
      throw refuse(
        signal.aborted ? "Entra ID did not answer within 30 s" : entra,
        identity.kind === "workload"
          ? `check that application ${identity.clientId ?? ""} exists in tenant ${identity.tenantId ?? ""} and has a federated credential for this service account's issuer and subject (and that ${identity.tokenFile} holds its projected token), or turn export off for this integration`
          : "give the agent a managed identity (system-assigned, or user-assigned named by AZURE_CLIENT_ID or the entry's client_id) or AKS workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID), or turn export off for this integration",
      );
    }

    // 2. ACR's exchange on the registry itself.
    const tenant = identity.tenantId ?? jwtTenant(accessToken);
    const form = new URLSearchParams({
      grant_type: "access_token",
      service: registryHost,
      ...(tenant === undefined ? {} : { tenant }),
      access_token: accessToken,
    });
    let status: number;
    let body: string;
    try {
      const res = await request(`https://${registryHost}/oauth2/exchange`, {
        method: "POST",
        dispatcher: this.dispatcher,
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: form.toString(),
        signal,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      status = res.statusCode;
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > MAX_EXCHANGE_BODY) {
          res.body.destroy();
          break;
        }
        chunks.push(chunk);
      }
      body = Buffer.concat(chunks).toString("utf8");
    } catch (error) {
      const e = error instanceof Error ? error : new Error("unexpected failure");
      throw refuse(
        signal.aborted ? `${registryHost} did not answer within 30 s` : `ACR /oauth2/exchange failed: ${e.message}`,
        `check that ${registryHost} is an Azure Container Registry reachable from the agent (private endpoint, proxy, trusted certificate), or turn export off for this integration`,
      );
    }
    if (status === 401 || status === 403)
      throw refuse(
        acrReason(status, body),
        `grant ${who} the AcrPull role on the registry (and check that the registry allows Entra ID authentication), or turn export off for this integration`,
        "AcrPull (Microsoft.ContainerRegistry/registries/pull/read)",
      );
    let refreshToken: unknown;
    try {
      refreshToken = status === 200 ? (JSON.parse(body) as { refresh_token?: unknown }).refresh_token : undefined;
    } catch {
      refreshToken = undefined;
    }
    if (typeof refreshToken === "string") secrets.push(refreshToken);
    if (typeof refreshToken !== "string" || refreshToken === "")
      throw refuse(
        status === 200 ? "ACR /oauth2/exchange answered without a refresh_token" : acrReason(status, body),
        `check that ${registryHost} is an Azure Container Registry, or turn export off for this integration`,
      );
    return {
      username: ACR_REFRESH_TOKEN_USER,
      password: refreshToken,
      expiresAtMs: jwtExpiryMs(refreshToken) ?? Date.now() + ACR_REFRESH_TOKEN_LIFETIME_MS,
      identity: who,
    };
  }
}
