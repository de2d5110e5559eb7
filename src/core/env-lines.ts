/**
 * The run's variables as lines another program reads: for a shell (`eval`), each value in single
 * quotes; for HCP agents' `$TFC_AGENT_ENV` file, plain `KEY=value` lines (the agent splits lines
 * at the newline and each at the first `=`, and does no unquoting). Values that cannot be one
 * line (a newline, a carriage return, a NUL) are refused rather than cut. Pure.
 */
import { AgentError } from "./errors.js";

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const NOT_ONE_LINE = /[\n\r\0]/;

function check(name: string, value: string): void {
  if (!VARIABLE_NAME.test(name))
    throw new AgentError(
      "HOOK_ENV_VALUE_REFUSED",
      `the sidecar named a variable ${JSON.stringify(name.slice(0, 64))} that is not a shell variable name; run the same oci-cred-agent version as hook and sidecar`,
      { variable: name.slice(0, 64) },
    );
  if (NOT_ONE_LINE.test(value))
    throw new AgentError(
      "HOOK_ENV_VALUE_REFUSED",
      `the value of ${name} holds a newline, carriage return or NUL, which a KEY=value line cannot carry; give the sidecar a --credentials-dir whose path has none`,
      { variable: name },
    );
}

/** `value` in single quotes for sh and bash: every `'` becomes `'\''`; nothing else is special inside. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** `NAME='value'` lines, one per variable, each ending in a newline; safe to `eval` in sh and bash. */
export function shellEnvLines(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([name, value]) => {
      check(name, value);
      return `${name}=${shellQuote(value)}\n`;
    })
    .join("");
}

/** Plain `NAME=value` lines, one per variable, each ending in a newline (HCP agents' TFC_AGENT_ENV). */
export function plainEnvLines(env: Readonly<Record<string, string>>): string {
  return Object.entries(env)
    .map(([name, value]) => {
      check(name, value);
      return `${name}=${value}\n`;
    })
    .join("");
}
