import { resolveRunConfig } from "../../config/load-run-config.js";
import { describeConfig, RUN_FIELDS } from "../../config/schema.js";
import { printJson, writeOutput } from "../io.js";

/** `config print`: the effective configuration of `run` and where each value came from; secrets redacted. */
export async function configPrint(flags: Record<string, string | boolean | undefined>, format: string): Promise<number> {
  const { resolved, problems } = await resolveRunConfig(flags, process.env);
  const rows = describeConfig(RUN_FIELDS, resolved);
  if (format === "json") {
    await printJson({ settings: rows, problems: problems.map((p) => p.message), warnings: resolved.warnings });
  } else {
    const width = Math.max(...rows.map((r) => r.key.length));
    const lines = rows.map((r) => `${r.key.padEnd(width)}  ${r.value === null ? "-" : String(r.value)}  (${r.source})`);
    for (const p of problems) lines.push(`problem: ${p.message}`);
    for (const w of resolved.warnings) lines.push(`warning: ${w}`);
    await writeOutput("-", `${lines.join("\n")}\n`);
  }
  return problems.length === 0 ? 0 : 1;
}
