/**
 * The minter the composition root hands to the credentials layer: it picks the cloud of an
 * entry, reuses a token until shortly before its expiry (src/core/cloud-token-cache.ts), and
 * shares one mint among runs that ask at once. Each cloud's code, and its SDK, is loaded only
 * when an entry first needs it (a dynamic import), so an agent that never meets a cloud entry
 * neither starts slower nor holds the SDKs in memory (test/cloud/lazy-load.test.ts).
 */
import { cloudAuthFailed, type CloudMinter, type CloudProvider, type MintedCredential } from "../core/cloud-auth.js";
import { cloudHostAllowed, defaultCloudHosts, parseCloudHostPattern } from "../core/cloud-hosts.js";
import { boundedCloudExpiry, CloudTokenCache, cloudTokenKey } from "../core/cloud-token-cache.js";
import { awsIdentity } from "./aws-identity.js";
import { azureIdentity } from "./azure-identity.js";
import { gcpIdentity } from "./gcp-identity.js";

/** One mint, the SDK's retries included, ends within this. */
const MINT_DEADLINE_MS = 30_000;

interface ProviderEntry {
  /** Who the cloud's default chain will act as, from the environment only (cheap; no SDK). */
  readonly identity: (env: NodeJS.ProcessEnv) => string;
  readonly load: (options: CloudMinterOptions) => Promise<CloudMinter>;
}

const PROVIDERS: Record<CloudProvider, ProviderEntry> = {
  aws: {
    identity: awsIdentity,
    load: async () => new (await import("./aws-ecr.js")).AwsEcrMinter(),
  },
  azure: {
    identity: azureIdentity,
    load: async (options) => new (await import("./azure-acr.js")).AzureAcrMinter({ extraCaPem: options.extraCaPem }),
  },
  gcp: {
    identity: gcpIdentity,
    load: async () => new (await import("./gcp-gar.js")).GcpGarMinter(),
  },
};

/**
 * Settles as `promise` does, or rejects with the signal's reason as soon as it aborts: the caller
 * leaves, and a mint shared with other runs goes on for them.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const leave = (): void => {
      reject(signal.reason as Error);
    };
    signal.addEventListener("abort", leave, { once: true });
    promise
      .finally(() => {
        signal.removeEventListener("abort", leave);
      })
      .then(resolve, reject);
  });
}

export interface CloudMinterOptions {
  /** The cache's clock. */
  readonly now?: () => number;
  /**
   * CA certificates (PEM) trusted besides Node's store for the clouds' endpoints that this code
   * reaches itself or through an SDK that cannot read NODE_EXTRA_CA_CERTS after start (Entra ID,
   * ACR's exchange). The agent passes none; tests running stand-ins in their own process do.
   */
  readonly extraCaPem?: string;
  /**
   * Registry hosts (`HOST[:PORT]`, a leading `*.` for any name under it; parsed by
   * core/cloud-hosts.ts) that may receive minted credentials besides each cloud's own registry
   * hosts: the operator's private endpoints and proxies (`cloud_auth_host`).
   */
  readonly allowedHosts?: readonly string[];
}

/**
 * The clouds' SDKs read their default chains and endpoint overrides (`AWS_ENDPOINT_URL_ECR`, ...)
 * from the agent's own environment, so this minter does too.
 */
export function createCloudMinter(options: CloudMinterOptions = {}): CloudMinter {
  const env = process.env;
  const allowedHosts = (options.allowedHosts ?? []).flatMap((p) => parseCloudHostPattern(p) ?? []);
  const now = options.now ?? Date.now;
  const cache = new CloudTokenCache(now);
  const loaded = new Map<CloudProvider, Promise<CloudMinter>>();
  const inFlight = new Map<string, Promise<MintedCredential>>();

  const providerMinter = (provider: CloudProvider): Promise<CloudMinter> => {
    let minter = loaded.get(provider);
    if (minter === undefined) {
      minter = PROVIDERS[provider].load(options);
      // A failed load (a refusal) is not kept: the next entry tries again.
      minter.catch(() => loaded.delete(provider));
      loaded.set(provider, minter);
    }
    return minter;
  };

  return {
    mint(auth, registryHost, signal) {
      const identity = PROVIDERS[auth.provider].identity(env);
      // Before anything is minted: the token goes to this host (the exchange, pre-flight, the files).
      if (!cloudHostAllowed(auth, registryHost, allowedHosts)) {
        const operator = allowedHosts.length === 0 ? "" : ` and the agent's cloud_auth_host ${allowedHosts.join(", ")}`;
        return Promise.reject(
          cloudAuthFailed({
            provider: auth.provider,
            identity,
            registry: registryHost,
            permission: undefined,
            reason: `the agent sends ${auth.provider} credentials only to ${defaultCloudHosts(auth).join(", ")}${operator}, and ${registryHost} is none of them`,
            fix: `if ${registryHost} is a private endpoint or a proxy of the cloud's registry that you trust with the pool's identity, add it to the agent's cloud_auth_host setting (--cloud-auth-host ${registryHost}, OCI_CRED_AGENT_CLOUD_AUTH_HOST, or cloud_auth_host in its config file); otherwise correct the integration's registry URL${auth.provider === "aws" ? ` (or its cloud_auth region, ${auth.region})` : ""} or turn export off for it`,
          }),
        );
      }
      const key = cloudTokenKey(auth, identity, registryHost);
      const cached = cache.get(key);
      if (cached !== undefined) return Promise.resolve(cached);
      let shared = inFlight.get(key);
      if (shared === undefined) {
        shared = (async () => {
          const minter = await providerMinter(auth.provider);
          const answered = await minter.mint(auth, registryHost, AbortSignal.timeout(MINT_DEADLINE_MS));
          // A far-future expiry (a cloud's answer, a JWT's unverified exp) is not believed.
          const minted = { ...answered, expiresAtMs: boundedCloudExpiry(auth.provider, answered.expiresAtMs, now()) };
          cache.set(key, minted);
          return minted;
        })().finally(() => inFlight.delete(key));
        // Every caller may have left (aborted) before it settles: its refusal is then nobody's.
        shared.catch(() => undefined);
        inFlight.set(key, shared);
      }
      return untilAborted(shared, signal);
    },
  };
}
