/**
 * Finding executables the way a shell does: a name with a slash is that path, a bare name is
 * looked up in the PATH of the given environment. Used for tofu, credential helpers and the
 * Docker CLI family's tools.
 */
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { delimiter, join, resolve } from "node:path";

/** The path of an executable `file`, or undefined when there is none. */
export async function findExecutable(file: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const candidates = file.includes("/")
    ? [resolve(file)]
    : (env["PATH"] ?? "")
        .split(delimiter)
        .filter((d) => d !== "")
        .map((d) => join(d, file));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}
