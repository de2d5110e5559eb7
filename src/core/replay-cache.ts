/**
 * Remembers the ids of bundles this process opened until they expire, so a bundle cannot be
 * opened twice (HPKE base mode prevents no replay by itself). Pure: the clock is passed in.
 * Memory is bounded by the bundles alive at once: expired ids are pruned as time passes.
 */
export class ReplayCache {
  private readonly expiries = new Map<string, number>();
  private nextPruneMs = 0;

  /** True if `bundleId` was recorded and has not expired by `nowMs`. */
  has(bundleId: string, nowMs: number): boolean {
    const exp = this.expiries.get(bundleId);
    return exp !== undefined && exp > nowMs;
  }

  record(bundleId: string, expiresAtMs: number, nowMs: number): void {
    this.prune(nowMs);
    this.expiries.set(bundleId, expiresAtMs);
    // prune() sets nextPruneMs from the entries it saw; an entry added after it (or into an
    // empty cache, which left nextPruneMs at +Infinity) must bring the next prune forward.
    if (expiresAtMs < this.nextPruneMs) this.nextPruneMs = expiresAtMs;
  }

  get size(): number {
    return this.expiries.size;
  }

  private prune(nowMs: number): void {
    if (nowMs < this.nextPruneMs) return;
    let soonest = Number.POSITIVE_INFINITY;
    for (const [id, exp] of this.expiries) {
      if (exp <= nowMs) this.expiries.delete(id);
      else if (exp < soonest) soonest = exp;
    }
    this.nextPruneMs = soonest;
  }
}
