/** Byte sizes as operators write them: "256MiB", "64k", "1G", or a bare number of bytes. Pure. */

const UNIT_BYTES: Readonly<Record<string, number>> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * Parses a positive byte size: digits, optional spaces, then an optional unit, case-insensitive
 * (b; k, kb, kib; m, mb, mib; g, gb, gib: every k means 1024). Undefined when `text` is not one,
 * is zero, or is too large to count exactly.
 */
export function parseByteSize(text: string): number | undefined {
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * (UNIT_BYTES[(m[2] ?? "b").charAt(0).toLowerCase()] ?? Number.NaN);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
