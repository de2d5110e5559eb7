/**
 * Minted cloud registry credentials, reused until shortly before they expire. Pure: the clock is
 * passed in. Keyed by provider, identity, registry and the entry's parameters, so two pools'
 * identities or two regions never share a token; a refusal is never kept (the next run asks
 * again).
 */
import { cloudAuthParameters, type CloudAuth, type CloudProvider, type MintedCredential } from "./cloud-auth.js";

/**
 * A token is replaced this long before it expires, or at half its lifetime when that is shorter:
 * the agent asks at the start of each phase (the sidecar at each pre hook), so a phase that
 * starts with less than this left gets a new token, and one shorter than this never outlives
 * its token.
 */
export const CLOUD_TOKEN_REFRESH_MARGIN_MS = 15 * 60_000;

/**
 * The longest each cloud's registry credential lives (ECR 12 h, an ACR refresh token about 3 h,
 * a Google access token 1 h): an expiry further out than this, from a cloud's answer or a JWT's
 * unverified `exp`, is not believed.
 */
const CLOUD_TOKEN_MAX_LIFETIME_MS: Readonly<Record<CloudProvider, number>> = {
  aws: 12 * 3_600_000,
  azure: 3 * 3_600_000,
  gcp: 3_600_000,
};

/** The expiry the agent goes by: the cloud's, but never later than its longest lifetime from now. */
export function boundedCloudExpiry(provider: CloudProvider, expiresAtMs: number, nowMs: number): number {
  const latest = nowMs + CLOUD_TOKEN_MAX_LIFETIME_MS[provider];
  return Number.isFinite(expiresAtMs) ? Math.min(expiresAtMs, latest) : latest;
}

/** Whatever a caller gives, nothing is kept longer than the longest lifetime of any cloud. */
const MAX_KEPT_MS = Math.max(...Object.values(CLOUD_TOKEN_MAX_LIFETIME_MS));

/** At most this many tokens are kept; the oldest goes first. */
const MAX_ENTRIES = 1000;

export function cloudTokenKey(auth: CloudAuth, identity: string, registry: string): string {
  return [auth.provider, identity, registry, cloudAuthParameters(auth)].join("\0");
}

interface Entry {
  readonly minted: MintedCredential;
  /** From here on the token is not handed out any more. */
  readonly staleAtMs: number;
}

export class CloudTokenCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly now: () => number) {}

  /** The token kept under `key` while it is more than the margin away from its expiry. */
  get(key: string): MintedCredential | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (this.now() < entry.staleAtMs) return entry.minted;
    this.entries.delete(key);
    return undefined;
  }

  /** Keeps a token minted now; one that is already within its margin is not kept. */
  set(key: string, minted: MintedCredential): void {
    const nowMs = this.now();
    const expiresAtMs = Math.min(minted.expiresAtMs, nowMs + MAX_KEPT_MS);
    const lifetime = expiresAtMs - nowMs;
    const staleAtMs = expiresAtMs - Math.min(CLOUD_TOKEN_REFRESH_MARGIN_MS, lifetime / 2);
    this.entries.delete(key);
    if (!(lifetime > 0)) return;
    this.entries.set(key, { minted, staleAtMs });
    if (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }
}
