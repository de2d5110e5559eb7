/**
 * Finds the operator's own OpenTofu CLI configuration where OpenTofu looks for it
 * (src/core/tofu-cli-config-locations.ts), so that the run's generated configuration can
 * reproduce it: the main file, plus the *.tfrc and *.tfrc.json files of the CLI config
 * directory (except credentials.tfrc.json, which OpenTofu's credentials store reads in any case).
 */
import { join } from "node:path";
import { homedir } from "node:os";
import { AgentError, errnoCode } from "../core/errors.js";
import type { OperatorCliConfigSource } from "../core/tofu-cli-config.js";
import { tofuCliConfigLocations, type FirstExisting } from "../core/tofu-cli-config-locations.js";
import type { FileSystem } from "./secure-fs.js";

async function readIfExists(fs: FileSystem, path: string): Promise<OperatorCliConfigSource | undefined> {
  try {
    return { path, text: await fs.readFile(path, "utf8") };
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw new AgentError(
      "TOFU_CLI_CONFIG_INVALID",
      `the operator's OpenTofu CLI configuration ${path} cannot be read (${errnoCode(error) ?? "error"}); every run's tofu would read it too: make it readable by the agent's user, or unset TF_CLI_CONFIG_FILE in the agent's environment`,
      { path },
    );
  }
}

async function exists(fs: FileSystem, path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The first of `where.candidates` that exists, else `where.otherwise`. */
async function firstExisting(fs: FileSystem, where: FirstExisting): Promise<string> {
  for (const path of where.candidates) if (await exists(fs, path)) return path;
  return where.otherwise;
}

export async function discoverTofuCliConfig(
  fs: FileSystem,
  env: NodeJS.ProcessEnv,
): Promise<OperatorCliConfigSource[]> {
  const locations = tofuCliConfigLocations(env, homedir());
  const sources: OperatorCliConfigSource[] = [];
  const main = await readIfExists(fs, await firstExisting(fs, locations.file));
  if (main) sources.push(main);
  if (locations.dir === undefined) return sources;

  const configDir = await firstExisting(fs, locations.dir);
  const entries = await fs.readdir(configDir).then(
    (names) => names.sort(),
    () => [] as string[],
  );
  for (const entry of entries) {
    if (!entry.endsWith(".tfrc") && !entry.endsWith(".tfrc.json")) continue;
    // OpenTofu reads credentials.tfrc.json (from `tofu login`) on its own, override or not.
    if (entry === "credentials.tfrc.json") continue;
    const source = await readIfExists(fs, join(configDir, entry));
    if (source) sources.push(source);
  }
  return sources;
}
