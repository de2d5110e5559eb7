/**
 * The command line: the only place that turns errors into exit codes. Each subcommand's code is
 * imported only when that subcommand runs, so `--version` and `--help` start fast.
 *
 * Exit codes: 0 success, 1 refused or failed (stderr names the error code), 2 usage error.
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import { AgentError, errnoCode } from "../core/errors.js";
import type { MaterializeOptions } from "./commands/materialize.js";
import type { SealOptions } from "./commands/seal.js";

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}

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
