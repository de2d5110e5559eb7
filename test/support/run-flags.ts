/** A deployment's `oci-cred-agent run` command line, checked against the config schema. */
import { expect } from "vitest";
import { parseFieldValue, RUN_FIELDS, type FieldSpec } from "../../src/config/schema.js";

const FIELD_BY_FLAG = new Map<string, FieldSpec>(RUN_FIELDS.map((f) => [f.flag, f]));

/** Each flag must be a flag of `run` with a valid value; returns key -> value. `where` names the source in messages. */
export function runFlags(args: readonly string[], where: string): Record<string, string | boolean> {
  expect(args[0], `${where} runs the daemon command`).toBe("run");
  const flags: Record<string, string | boolean> = {};
  for (let i = 1; i < args.length; i++) {
    const arg = args[i] ?? "";
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = FIELD_BY_FLAG.get(flag);
    expect(spec, `${flag} in ${where} is a flag of \`oci-cred-agent run\` (src/config/schema.ts)`).toBeDefined();
    if (spec === undefined) continue;
    if (spec.kind === "bool" && eq < 0) {
      flags[spec.key] = true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    expect(value, `${flag} has a value`).toBeDefined();
    expect(parseFieldValue(spec, value ?? ""), `${flag} ${String(value)} is a valid value`).toMatchObject({ ok: true });
    flags[spec.key] = value ?? "";
  }
  return flags;
}
