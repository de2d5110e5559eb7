/**
 * The agent's preparation, once, at start: the pool token, the keys, the base Docker config and
 * the operator's OpenTofu CLI configuration are read and checked here, before the first lease.
 * `run` and `dev` build the daemon from the result; `doctor` runs the same steps one by one and
 * reports each. A broken input is a refusal with a code and a fix at start, never a surprise in
 * the middle of a run.
 */
import type { AgentSettings, TokenSource } from "../config/load-run-config.js";
import type { DockerConfigDoc } from "../core/docker-config.js";
import { parseBaseDockerConfig } from "../core/docker-config.js";
import { AgentError, errnoCode } from "../core/errors.js";
import { prepareTofuCliConfig, type PreparedTofuCliConfig } from "../core/tofu-cli-config.js";
import { prepareOperatorConfig, type OperatorConfig } from "../credentials/operator-config.js";
import type { FileSystem } from "../fs/secure-fs.js";
import { readOperatorTofuCliConfig } from "../fs/tofu-cli-config-sources.js";
import { readTokenFile } from "../fs/token-file.js";
import { ReloadableKeyRing } from "../keys/key-ring.js";

export interface PreparedAgent {
  readonly settings: AgentSettings;
  readonly token: string;
  readonly keys: ReloadableKeyRing;
  readonly operator: OperatorConfig;
  /** To be logged once the logger exists (key source warnings). */
  readonly warnings: readonly string[];
}

/** The pool token, from its file or (with a warning at config time) the environment. */
export async function readPoolToken(fs: FileSystem, token: TokenSource): Promise<string> {
  if ("value" in token) return token.value.trim();
  return readTokenFile(fs, token.file, { flag: "--token-file", what: "the agent pool token" });
}

/** Reads and parses `--base-docker-config`. */
/** Reads `--base-docker-config` (its text; prepareOperatorConfig parses it). */
async function readBaseDockerConfigText(fs: FileSystem, path: string): Promise<string> {
  try {
    return await fs.readFile(path, "utf8");
  } catch (error) {
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot read the base Docker config ${path} (${errnoCode(error) ?? "error"}); fix the path given to --base-docker-config, make the file readable by the agent's user, or drop the flag`,
      { path, flag: "--base-docker-config" },
    );
  }
}

/** Reads and parses `--base-docker-config` on its own (doctor's check). */
export async function readBaseDockerConfig(fs: FileSystem, path: string): Promise<DockerConfigDoc> {
  return parseBaseDockerConfig(await readBaseDockerConfigText(fs, path), path);
}

/** Reads and checks the operator's own OpenTofu CLI configuration on its own (doctor's check). */
export async function readTofuCliConfig(fs: FileSystem, path: string | undefined): Promise<PreparedTofuCliConfig> {
  return prepareTofuCliConfig(await readOperatorTofuCliConfig(fs, path));
}

/** Reads the operator's files and prepares them as every run builds on them. */
async function readOperatorConfig(
  fs: FileSystem,
  settings: Pick<AgentSettings, "baseDockerConfigFile" | "tofuCliConfigFile">,
): Promise<OperatorConfig> {
  const path = settings.baseDockerConfigFile;
  const tofuCliConfigSources = await readOperatorTofuCliConfig(fs, settings.tofuCliConfigFile);
  return prepareOperatorConfig({
    tofuCliConfigSources,
    ...(path === undefined ? {} : { baseDockerConfig: { path, text: await readBaseDockerConfigText(fs, path) } }),
  });
}

export async function prepareAgent(
  settings: AgentSettings,
  fs: FileSystem,
  env: NodeJS.ProcessEnv,
): Promise<PreparedAgent> {
  const token = await readPoolToken(fs, settings.token);
  const { ring, warnings } = await ReloadableKeyRing.open(settings.keySource, { fs, env });
  const operator = await readOperatorConfig(fs, settings);
  return { settings, token, keys: ring, operator, warnings };
}
