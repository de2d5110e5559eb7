/**
 * Shared knobs and figure recording for test/reliability/. The CI subset runs by default;
 * RELIABILITY_FULL=1 selects the full sizes and RELIABILITY_CASES the number of generated cases.
 * Every test records what it tried and measured through `recordFigures`: it prints one
 * `RELIABILITY <name> {json}` line and, when RELIABILITY_RESULTS_DIR is set, writes
 * `<dir>/<name>.json` (scripts/reliability-full.sh collects them for docs/reliability.md).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const FULL = process.env["RELIABILITY_FULL"] === "1";

/** Number of generated cases for the property tests (CI default ~3,000; the full run 100,000+). */
export function reliabilityCases(ciDefault = 3000): number {
  const raw = process.env["RELIABILITY_CASES"];
  const n = raw === undefined || raw === "" ? Number.NaN : Number(raw);
  if (Number.isInteger(n) && n > 0) return n;
  return FULL ? 100_000 : ciDefault;
}

export function recordFigures(name: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ name, at: new Date().toISOString(), full: FULL, ...figures });
  console.log(`RELIABILITY ${name} ${line}`);
  const dir = process.env["RELIABILITY_RESULTS_DIR"];
  if (dir !== undefined && dir !== "") {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${name}.json`), `${line}\n`);
  }
}

/** Counts by key, for code histograms. */
export class Tally {
  readonly counts: Record<string, number> = {};
  add(key: string, n = 1): void {
    this.counts[key] = (this.counts[key] ?? 0) + n;
  }
  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
}

/** Resident set size of a process in bytes, from /proc/PID/status (VmRSS); undefined once gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
