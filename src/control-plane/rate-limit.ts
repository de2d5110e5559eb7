/**
 * Token buckets by key (an agent, an address, the admin token): each key may make `burst`
 * requests at once, then `perSecond` on average, both times the key's `scale` (an agent's
 * concurrency). Pure: the time is passed in. The number of keys
 * is bounded: past `maxKeys`, the least recently used key is forgotten (its bucket starts full
 * again), so a flood of new keys cannot grow memory.
 */

export interface RateLimit {
  readonly perSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    private readonly maxKeys = 10_000,
  ) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1))
      throw new RangeError(`a rate limit needs perSecond > 0 and burst >= 1, not ${JSON.stringify(limit)}`);
  }

  /** Takes one token; returns undefined when there was one, else how long until there is (ms). */
  take(key: string, nowMs: number, scale = 1): number | undefined {
    const bucket = this.refill(key, nowMs, scale);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return undefined;
    }
    return this.waitMs(bucket, scale);
  }

  /** How long until `key` has a token (0 when it has one now), without taking it. */
  wait(key: string, nowMs: number): number {
    const bucket = this.buckets.get(key);
    if (bucket === undefined) return 0;
    return this.waitMs(this.refill(key, nowMs, 1), 1);
  }

  private waitMs(bucket: Bucket, scale: number): number {
    return bucket.tokens >= 1 ? 0 : Math.ceil(((1 - bucket.tokens) * 1000) / (this.limit.perSecond * scale));
  }

  /** The key's bucket, refilled to now and moved to the most recently used end. */
  private refill(key: string, nowMs: number, scale: number): Bucket {
    const burst = this.limit.burst * scale;
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: burst, atMs: nowMs };
      if (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next();
        if (oldest.done !== true) this.buckets.delete(oldest.value);
      }
    } else {
      const elapsed = Math.max(0, nowMs - bucket.atMs);
      bucket.tokens = Math.min(burst, bucket.tokens + (elapsed * this.limit.perSecond * scale) / 1000);
      bucket.atMs = nowMs;
      this.buckets.delete(key);
    }
    this.buckets.set(key, bucket);
    return bucket;
  }
}
