/**
 * The operator's configuration that every run's files build on: the base Docker config and the
 * operator's own OpenTofu CLI configuration. Parsed and checked once, when the agent starts (or
 * a one-shot command runs), never per run. Pure: texts in, parsed documents out.
 */
import { parseBaseDockerConfig, type DockerConfigDoc } from "../core/docker-config.js";
import {
  prepareTofuCliConfig,
  type OperatorCliConfigSource,
  type PreparedTofuCliConfig,
} from "../core/tofu-cli-config.js";

export interface OperatorConfig {
  readonly baseDockerConfig?: DockerConfigDoc;
  readonly tofuCliConfig: PreparedTofuCliConfig;
}

export interface OperatorConfigTexts {
  readonly baseDockerConfig?: { readonly path: string; readonly text: string };
  /** The operator's main CLI config file first, then the CLI config directory's files. */
  readonly tofuCliConfigSources: readonly OperatorCliConfigSource[];
}

/** Throws BASE_DOCKER_CONFIG_INVALID, TOFU_CLI_CONFIG_INVALID or TOFU_CLI_CONFIG_CONFLICT. */
export function prepareOperatorConfig(texts: OperatorConfigTexts): OperatorConfig {
  const tofuCliConfig = prepareTofuCliConfig(texts.tofuCliConfigSources);
  return texts.baseDockerConfig === undefined
    ? { tofuCliConfig }
    : {
        baseDockerConfig: parseBaseDockerConfig(texts.baseDockerConfig.text, texts.baseDockerConfig.path),
        tofuCliConfig,
      };
}
