/**
 * Reads a token from a file: the agent's pool token (`--token-file`) and the reference control
 * plane's admin and agent tokens. One rule for all of them: one line, no white space inside,
 * surrounding white space (a trailing newline) ignored.
 */
import { AgentError, errnoCode } from "../core/errors.js";
import type { FileSystem } from "./secure-fs.js";

export interface TokenFileRule {
  /** The flag that names the file, for messages (`--token-file`). */
  readonly flag: string;
  /** What the token is, for messages (`the agent pool token`). */
  readonly what: string;
  readonly minLength?: number;
}

export async function readTokenFile(fs: FileSystem, path: string, rule: TokenFileRule): Promise<string> {
  let text: string;
  try {
    text = await fs.readFile(path, "utf8");
  } catch (error) {
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot read ${rule.flag} ${path} (${errnoCode(error) ?? "error"}); put ${rule.what} in a file the agent's user can read and pass it with ${rule.flag}`,
      { path },
    );
  }
  const value = text.trim();
  const minLength = rule.minLength ?? 1;
  if (value.length < minLength || /\s/.test(value)) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${rule.flag} ${path} must hold ${rule.what} on one line${minLength > 1 ? `, at least ${minLength} characters` : ""}, with no white space inside`,
      { path, flag: rule.flag },
    );
  }
  return value;
}
