/**
 * Minted cloud registry credentials, reused until shortly before they expire. Pure: the clock is
 * passed in. Keyed by provider, identity, registry and the entry's parameters, so two pools'
 * identities or two regions never share a token; a refusal is never kept (the next run asks
 * again).
 */
import { cloudAuthParameters, type CloudAuth, type MintedCredential } from "./cloud-auth.js";

/** A token is replaced this long before it expires, or at half its lifetime when that is shorter. */
export const CLOUD_TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;

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
    const lifetime = minted.expiresAtMs - nowMs;
    const staleAtMs = minted.expiresAtMs - Math.min(CLOUD_TOKEN_REFRESH_MARGIN_MS, lifetime / 2);
    this.entries.delete(key);
    if (!(lifetime > 0)) return;
    this.entries.set(key, { minted, staleAtMs });
    if (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }
}
