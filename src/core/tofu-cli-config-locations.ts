/**
 * Where OpenTofu looks for the operator's CLI configuration (internal/command/cliconfig/
 * cliconfig.go LoadConfig, config_unix.go configFile and configDir): TF_CLI_CONFIG_FILE (or the
 * legacy TERRAFORM_CONFIG) alone when set; otherwise ~/.tofurc, else ~/.terraformrc, else
 * $XDG_CONFIG_HOME/opentofu/tofurc on a fresh install, plus the *.tfrc files of the CLI
 * configuration directory (~/.terraform.d, else $XDG_CONFIG_HOME/opentofu). Pure: the caller
 * checks which paths exist (the OpenTofu lookup's reader). The agent itself never reads the
 * operator's configuration from these places (src/fs/tofu-cli-config-sources.ts says why).
 */
import { posix } from "node:path";

type Env = Readonly<Record<string, string | undefined>>;

/** The first of `candidates` that exists; when none does, `otherwise` (which may not exist either). */
interface FirstExisting {
  readonly candidates: readonly string[];
  readonly otherwise: string;
}

export interface TofuCliConfigLocations {
  /** The main CLI configuration file. */
  readonly file: FirstExisting;
  /** The directory whose *.tfrc and *.tfrc.json files are read too; undefined when TF_CLI_CONFIG_FILE is set. */
  readonly dir: FirstExisting | undefined;
}

/** `defaultHome` stands in for an unset or empty HOME (OpenTofu asks the user database). */
export function tofuCliConfigLocations(env: Env, defaultHome: string): TofuCliConfigLocations {
  const override = env["TF_CLI_CONFIG_FILE"] || env["TERRAFORM_CONFIG"];
  if (override) return { file: { candidates: [], otherwise: override }, dir: undefined };
  const home = env["HOME"] || defaultHome;
  const xdg = env["XDG_CONFIG_HOME"];
  const tofurc = posix.join(home, ".tofurc");
  const configDir = posix.join(home, ".terraform.d");
  return {
    file: {
      candidates: [tofurc, posix.join(home, ".terraformrc")],
      otherwise: xdg ? posix.join(xdg, "opentofu", "tofurc") : tofurc,
    },
    dir: { candidates: [configDir], otherwise: xdg ? posix.join(xdg, "opentofu") : configDir },
  };
}
