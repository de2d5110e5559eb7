/**
 * Redaction by value: every occurrence of a known secret (in each form it may take: raw,
 * base64 `auth`, JSON-escaped) is replaced, wherever it appears in a line of text. Key-path
 * redaction alone misses secrets that tools print. Pure.
 */
const REDACTED = "[REDACTED]";

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export class Redactor {
  private readonly secrets = new Map<string, number>();
  private pattern: RegExp | undefined;
  private dirty = false;

  /** Adds secrets; returns a function that removes them again (reference-counted). */
  add(values: readonly string[]): () => void {
    const added = values.filter((v) => v.length > 0);
    for (const v of added) this.secrets.set(v, (this.secrets.get(v) ?? 0) + 1);
    this.dirty = true;
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      for (const v of added) {
        const n = (this.secrets.get(v) ?? 1) - 1;
        if (n <= 0) this.secrets.delete(v);
        else this.secrets.set(v, n);
      }
      this.dirty = true;
    };
  }

  get size(): number {
    return this.secrets.size;
  }

  /** The length of the longest secret held (0 when none). */
  get longest(): number {
    let n = 0;
    for (const v of this.secrets.keys()) if (v.length > n) n = v.length;
    return n;
  }

  redact(text: string): string {
    if (this.secrets.size === 0) return text;
    if (this.dirty || this.pattern === undefined) {
      // Longest first, so a secret that contains another is masked whole.
      const sorted = [...this.secrets.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.pattern = new RegExp(sorted.join("|"), "g");
      this.dirty = false;
    }
    return text.replace(this.pattern, REDACTED);
  }
}
