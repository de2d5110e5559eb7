/**
 * The agent's current keys, reloadable without a restart. A reload that fails keeps the keys
 * in use; the caller logs why. Oldest first, newest last (the newest is what the control plane
 * seals to).
 */
import type { AgentPrivateKey } from "../crypto/agent-key.js";
import { loadKeySource, type KeySource, type KeySourceContext } from "./key-source.js";

export type KeyRing = ReadonlyMap<string, AgentPrivateKey>;

export class ReloadableKeyRing {
  private ring: Map<string, AgentPrivateKey>;

  private constructor(
    private readonly source: KeySource,
    private readonly ctx: KeySourceContext,
    keys: readonly AgentPrivateKey[],
  ) {
    this.ring = new Map(keys.map((k) => [k.kid, k]));
  }

  static async open(
    source: KeySource,
    ctx: KeySourceContext,
  ): Promise<{ ring: ReloadableKeyRing; warnings: readonly string[] }> {
    const loaded = await loadKeySource(source, ctx);
    return { ring: new ReloadableKeyRing(source, ctx, loaded.keys), warnings: loaded.warnings };
  }

  current(): KeyRing {
    return this.ring;
  }

  kids(): string[] {
    return [...this.ring.keys()];
  }

  /** Re-reads the source. Resolves with what changed; throws (keeping the old keys) on failure. */
  async reload(): Promise<{ changed: boolean; added: string[]; removed: string[] }> {
    const loaded = await loadKeySource(this.source, this.ctx);
    const next = new Map(loaded.keys.map((k) => [k.kid, k]));
    const added = [...next.keys()].filter((k) => !this.ring.has(k));
    const removed = [...this.ring.keys()].filter((k) => !next.has(k));
    const changed = [...next.keys()].join() !== [...this.ring.keys()].join();
    this.ring = next;
    return { changed, added, removed };
  }
}
