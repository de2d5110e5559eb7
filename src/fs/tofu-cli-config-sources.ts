/**
 * Reads the operator's own OpenTofu CLI configuration, which every run's generated configuration
 * reproduces (provider installation, plugin cache, `credentials` blocks). Only from an explicit
 * path: `--tofu-cli-config`, else /etc/oci-cred-agent/tofu.tfrc when it exists. Never from where
 * OpenTofu itself looks (TF_CLI_CONFIG_FILE, ~/.tofurc, ~/.terraformrc, $XDG_CONFIG_HOME,
 * ~/.terraform.d): the agent's HOME is its writable state directory, which runs can write as the
 * agent's user, and a file a run planted there would otherwise reach every later run (a provider
 * mirror of its choosing, for one).
 */
import { AgentError, errnoCode } from "../core/errors.js";
import type { OperatorCliConfigSource } from "../core/tofu-cli-config.js";
import type { FileSystem } from "./secure-fs.js";

/** Read when `--tofu-cli-config` is not set, if it exists. */
export const DEFAULT_TOFU_CLI_CONFIG = "/etc/oci-cred-agent/tofu.tfrc";

/**
 * Whether the default file is not there for the agent: it does not exist, or a directory above
 * it is closed to the agent's user (the systemd install keeps /etc/oci-cred-agent at 0700 for the
 * token and settings; a file there that the agent cannot reach was not put there for it). A file
 * the agent can see but not read is not absent: that is refused.
 */
async function absentForAgent(fs: FileSystem, file: string, code: string | undefined): Promise<boolean> {
  if (code === "ENOENT" || code === "ENOTDIR") return true;
  if (code !== "EACCES") return false;
  try {
    await fs.stat(file);
    return false;
  } catch (error) {
    return errnoCode(error) === "EACCES";
  }
}

/**
 * The operator's CLI configuration: the file `path` names (which must exist), or, when `path` is
 * undefined, `defaultPath` if it exists. No source at all means OpenTofu's defaults.
 */
export async function readOperatorTofuCliConfig(
  fs: FileSystem,
  path: string | undefined,
  defaultPath: string = DEFAULT_TOFU_CLI_CONFIG,
): Promise<OperatorCliConfigSource[]> {
  const file = path ?? defaultPath;
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (error) {
    const code = errnoCode(error);
    if (path === undefined && (await absentForAgent(fs, file, code))) return [];
    const fix =
      path === undefined
        ? `make it readable by the agent's user, or point --tofu-cli-config (OCI_CRED_AGENT_TOFU_CLI_CONFIG) at another file`
        : `fix the path given to --tofu-cli-config (OCI_CRED_AGENT_TOFU_CLI_CONFIG, tofu_cli_config), make the file readable by the agent's user, or unset it`;
    throw new AgentError(
      "TOFU_CLI_CONFIG_INVALID",
      `the operator's OpenTofu CLI configuration ${file}${path === undefined ? " (the default of --tofu-cli-config)" : ""} cannot be read (${code ?? "error"}); every run's CLI configuration is built on it: ${fix}`,
      { path: file, flag: "--tofu-cli-config" },
    );
  }
  return [{ path: file, text }];
}
