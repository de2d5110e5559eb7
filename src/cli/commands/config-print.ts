import { resolveRunConfig } from "../../config/load-run-config.js";
import { describeConfig, RUN_FIELDS, type FieldKind } from "../../config/schema.js";
import { printJson, writeOutput } from "../io.js";

const KIND = new Map(RUN_FIELDS.map((f) => [f.key, f.kind]));

/** Durations and sizes as people write them (the JSON output keeps milliseconds and bytes). */
function humanValue(kind: FieldKind | undefined, value: string | number | boolean): string {
  if (typeof value !== "number") return String(value);
  if (kind === "duration") {
    for (const [unit, ms] of [
      ["h", 3_600_000],
      ["m", 60_000],
      ["s", 1000],
    ] as const)
      if (value % ms === 0) return `${value / ms}${unit}`;
    return `${value}ms`;
  }
  if (kind === "size") {
    for (const [unit, n] of [
      ["GiB", 1024 ** 3],
      ["MiB", 1024 ** 2],
      ["KiB", 1024],
    ] as const)
      if (value % n === 0) return `${value / n}${unit}`;
    return `${value} bytes`;
  }
  return String(value);
}

/** `config print`: the effective configuration of `run` and where each value came from; secrets redacted. */
export async function configPrint(
  flags: Record<string, string | boolean | undefined>,
  format: string,
): Promise<number> {
  const { resolved, problems } = await resolveRunConfig(flags, process.env);
  const rows = describeConfig(RUN_FIELDS, resolved);
  if (format === "json") {
    await printJson({ settings: rows, problems: problems.map((p) => p.message), warnings: resolved.warnings });
  } else {
    const width = Math.max(...rows.map((r) => r.key.length));
    const lines = rows.map(
      (r) => `${r.key.padEnd(width)}  ${r.value === null ? "-" : humanValue(KIND.get(r.key), r.value)}  (${r.source})`,
    );
    for (const p of problems) lines.push(`problem: ${p.message}`);
    for (const w of resolved.warnings) lines.push(`warning: ${w}`);
    await writeOutput("-", `${lines.join("\n")}\n`);
  }
  return problems.length === 0 ? 0 : 1;
}
