/**
 * The command line: the only place that turns errors into exit codes. Each subcommand's code is
 * imported only when that subcommand runs, so `--version` and `--help` start fast.
 *
 * Exit codes: 0 success, 1 refused or failed (stderr names the error code), 2 usage error.
 */
import { Command, CommanderError, Option } from "commander";
import { AgentError, errnoCode } from "../core/errors.js";
import type { MaterializeOptions } from "./commands/materialize.js";
import type { SealOptions } from "./commands/seal.js";
import type { RunOptions } from "./commands/run.js";
import type { ControlPlaneCommandOptions } from "./commands/control-plane.js";
import { packageVersion } from "./version.js";


type Action = () => Promise<number>;

function buildProgram(setAction: (action: Action) => void): Command {
  const program = new Command()
    .name("oci-cred-agent")
    .description(
      "Leases OpenTofu runs, opens their sealed registry credentials and writes them where tofu, Docker tools and skopeo/podman read them; wipes them on every ending.",
    )
    .version(packageVersion(), "-V, --version")
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)");

  program
    .command("keygen")
    .description("create a new X25519 private key file (mode 0600, never overwrites) and print its public key as JSON")
    .requiredOption("--key-file <path>", "where to create the private key")
    .action((opts: { keyFile: string }) => {
      setAction(async () => (await import("./commands/keygen.js")).keygen(opts));
    });

  program
    .command("pubkey")
    .description('print {"kid", "public_key"} for an existing private key file')
    .requiredOption("--key-file <path>", "the private key file")
    .action((opts: { keyFile: string }) => {
      setAction(async () => (await import("./commands/pubkey.js")).pubkey(opts));
    });

  program
    .command("seal")
    .description("seal a credential export to an agent's public key (the control plane's half, for scripts and tests)")
    .requiredOption("--public-key <file>", "the JSON that `pubkey` printed")
    .requiredOption("--agent-id <id>", "the agent the bundle is for")
    .requiredOption("--run-id <id>", "the run the bundle is for")
    .option("--ttl <duration>", "how long the bundle stays valid", "10m")
    .option("--issued-at <timestamp>", "issue time (RFC 3339); default now. For test vectors")
    .requiredOption("--in <file|->", "the plaintext credential export (docs/protocol.md)")
    .requiredOption("--out <file|->", "where to write the sealed bundle")
    .action((opts: SealOptions) => {
      setAction(async () => (await import("./commands/seal.js")).seal(opts));
    });

  program
    .command("materialize")
    .description("open a sealed bundle and write the run's registry credentials into a new run directory; print the environment tofu needs")
    .requiredOption("--key-file <path>", "the agent's private key file")
    .requiredOption("--agent-id <id>", "this agent's id")
    .requiredOption("--run-id <id>", "the run being prepared")
    .requiredOption("--bundle <file|->", "the sealed bundle")
    .requiredOption("--run-dir <dir>", "the run's credential directory: must not exist yet (or be empty); its parent must exist")
    .option("--base-docker-config <file>", "an operator Docker config to merge (its other registries, credHelpers and credsStore are kept)")
    .addOption(new Option("--format <format>", "output format").choices(["env", "json"]).default("env"))
    .option("--max-bundle-lifetime <duration>", "refuse bundles valid for longer than this", "1h")
    .option("--clock-skew <duration>", "how far in the future a bundle's issue time may be", "2m")
    .option("--max-bundle-bytes <n>", "refuse bundles larger than this")
    .action((opts: MaterializeOptions) => {
      setAction(async () => (await import("./commands/materialize.js")).materialize(opts));
    });

  program
    .command("wipe")
    .description("remove what materialize wrote and the run directory itself (idempotent)")
    .requiredOption("--run-dir <dir>", "the run directory")
    .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
    .action((opts: { runDir: string; format: string }) => {
      setAction(async () => (await import("./commands/wipe.js")).wipe(opts));
    });

  program
    .command("run")
    .description("the daemon: register with the control plane, lease runs, put their credentials in place, run tofu, wipe on every ending")
    .requiredOption("--control-plane-url <url>", "the control plane's base URL (https://, or http:// on loopback)")
    .option("--allow-insecure-control-plane", "accept a plain http:// control plane URL that is not loopback")
    .requiredOption("--token-file <file>", "file holding the agent pool token")
    .requiredOption("--key-file <path>", "the agent's private key file (mode 0600)")
    .requiredOption("--work-dir <dir>", "the agent's working directory (workspaces, and credentials unless --credentials-dir)")
    .option("--credentials-dir <dir>", "where run credential directories go; put it on tmpfs (default <work-dir>/credentials)")
    .option("--tofu-bin <path>", "the tofu executable", "tofu")
    .option("--concurrency <n>", "runs at once", "1")
    .option("--drain-timeout <duration>", "on SIGTERM, how long running runs may finish before they are canceled", "5m")
    .option("--cancel-grace <duration>", "after SIGTERM to tofu, how long before SIGKILL", "10s")
    .option("--run-timeout <duration>", "cancel a run that takes longer", "2h")
    .option("--max-bundle-lifetime <duration>", "refuse bundles valid for longer than this", "1h")
    .option("--clock-skew <duration>", "how far in the future a bundle's issue time may be", "2m")
    .option("--max-config-bytes <size>", "refuse configuration archives that expand past this", "256MiB")
    .option("--base-docker-config <file>", "an operator Docker config merged into every run's")
    .option("--name <name>", "the agent's name at the control plane (default host-pid)")
    .option("--log-level <level>", "fatal, error, warn, info, debug or trace", "info")
    .addOption(new Option("--log-format <format>", "json lines, or pretty text (default: pretty on a terminal)").choices(["json", "pretty"]))
    .action((opts: RunOptions) => {
      setAction(async () => (await import("./commands/run.js")).run(opts));
    });

  program
    .command("control-plane")
    .description("the reference control plane: admin API and agent API on one listener")
    .option("--listen <host:port>", "where to listen", "127.0.0.1:8480")
    .requiredOption("--admin-token-file <file>", "file holding the admin API token")
    .requiredOption("--agent-token-file <file>", "file holding the agent pool token")
    .option("--data-file <file>", "persist state here (passwords encrypted at rest); default in memory")
    .option("--lease-ttl <duration>", "a lease expires this long after its last heartbeat", "60s")
    .option("--heartbeat-interval <duration>", "how often agents heartbeat a lease", "10s")
    .option("--poll-wait <duration>", "how long a lease request is held open", "30s")
    .option("--bundle-ttl <duration>", "how long a sealed bundle stays valid", "10m")
    .action((opts: ControlPlaneCommandOptions) => {
      setAction(async () => (await import("./commands/control-plane.js")).controlPlane(opts));
    });

  return program;
}

/** Describes an unexpected error without its message, which might quote input. */
function describeUnexpected(error: unknown): string {
  const errno = errnoCode(error);
  if (errno !== undefined) {
    const e = error as { syscall?: unknown; path?: unknown };
    return `${errno}${typeof e.syscall === "string" ? ` during ${e.syscall}` : ""}${typeof e.path === "string" ? ` on ${e.path}` : ""}`;
  }
  return error instanceof Error ? error.name : "unknown error";
}

async function main(argv: readonly string[]): Promise<number> {
  let action: Action | undefined;
  const program = buildProgram((a) => {
    action = a;
  });
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help" ? 0 : 2;
    }
    throw error;
  }
  if (action === undefined) {
    program.outputHelp();
    return 2;
  }
  try {
    return await action();
  } catch (error) {
    if (error instanceof AgentError) {
      process.stderr.write(`oci-cred-agent: error ${error.code}: ${error.message}\n`);
      return 1;
    }
    process.stderr.write(`oci-cred-agent: error INTERNAL: unexpected failure (${describeUnexpected(error)}); please report it\n`);
    if (process.env["OCI_CRED_AGENT_DEBUG"] === "1" && error instanceof Error) process.stderr.write(`${error.stack ?? ""}\n`);
    return 1;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`oci-cred-agent: error INTERNAL: ${describeUnexpected(error)}\n`);
    process.exit(1);
  },
);
