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
import type { DoctorOptions } from "./commands/doctor.js";
import type { ControlPlaneCommandOptions } from "./commands/control-plane.js";
import type { RunnerCommandOptions } from "./commands/runner.js";
import type { HookCommandOptions } from "./commands/hook.js";
import type { SidecarCommandOptions } from "./commands/sidecar.js";
import type { AgentsCommandOptions } from "./commands/agents.js";
import type { CreateEnrollmentTokenOptions, EnrollmentTokensCommandOptions } from "./commands/enrollment-tokens.js";
import { packageVersion } from "./version.js";
import { isListKind, PATH_LIST_SEPARATOR, RUN_FIELDS } from "../config/schema.js";

type Action = () => Promise<number>;

/** The run settings as commander options, without defaults: the config layer applies those. */
function addRunOptions(cmd: Command): Command {
  for (const spec of RUN_FIELDS) {
    if (spec.noFlag) continue;
    const choices = spec.choices ? ` (${spec.choices.join(", ")})` : "";
    const dflt = spec.default !== undefined ? ` [default: ${spec.default}]` : "";
    const text = `${spec.description}${choices}${dflt}; env ${spec.env}`;
    if (isListKind(spec.kind)) {
      // Repeatable: each use adds a path or a host.
      cmd.option(
        `${spec.flag} <${spec.kind === "host-list" ? "host" : "path"}>`,
        text,
        (value: string, previous: string | undefined) =>
          previous === undefined ? value : `${previous}${PATH_LIST_SEPARATOR}${value}`,
      );
    } else cmd.option(spec.kind === "bool" ? spec.flag : `${spec.flag} <value>`, text);
  }
  return cmd;
}

/** How operators' commands reach the reference control plane's admin API. */
function addAdminOptions(cmd: Command): Command {
  return cmd
    .requiredOption("--control-plane-url <url>", "the control plane's base URL: https://, or http:// on loopback")
    .requiredOption("--admin-token-file <file>", "file holding the control plane's admin token")
    .option(
      "--ca-file <file>",
      "extra CA certificates (PEM) to trust for the control plane, besides the system's and NODE_EXTRA_CA_CERTS",
    )
    .option("--allow-insecure-control-plane", "accept a plain http:// control plane URL that is not loopback");
}

function formatOption(): Option {
  return new Option("--format <format>", "output format: a table, or JSON lines")
    .choices(["text", "json"])
    .default("text");
}

/** Only the flags given on the command line, keyed as in the config file (snake_case). */
function givenFlags(cmd: Command): Record<string, string | boolean | undefined> {
  const opts = cmd.opts<Record<string, string | boolean | undefined>>();
  const out: Record<string, string | boolean | undefined> = {};
  for (const spec of RUN_FIELDS) {
    const camel = spec.key.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
    // A `--no-X` flag given on the command line sets X to false.
    if (opts[camel] !== undefined && cmd.getOptionValueSource(camel) === "cli") out[spec.key] = opts[camel];
  }
  return out;
}

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
    .description(
      "create a new X25519 private key (a file of mode 0600, never overwritten, or a keyring entry) and print its public key as JSON",
    )
    .option("--key-file <path>", "where to create the private key")
    .option("--key <uri>", "file:PATH (a file, or a directory of keys), or keyring:SERVICE/ACCOUNT")
    .option("--rotate", "add a new key beside the existing ones (a key directory or keyring entry)")
    .action((opts: { keyFile?: string; key?: string; rotate?: boolean }) => {
      setAction(async () => {
        const { keygen } = await import("./commands/keygen.js");
        return keygen(opts);
      });
    });

  program
    .command("pubkey")
    .description('print {"kid", "public_key"} for the newest existing private key')
    .option("--key-file <path>", "the private key file")
    .option("--key <uri>", "file:PATH, systemd-credential:NAME, keyring:SERVICE/ACCOUNT or env:NAME")
    .option("--all", "print every key of the source, oldest first, as a JSON array")
    .action((opts: { keyFile?: string; key?: string; all?: boolean }) => {
      setAction(async () => {
        const { pubkey } = await import("./commands/pubkey.js");
        return pubkey(opts);
      });
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
      setAction(async () => {
        const { seal } = await import("./commands/seal.js");
        return seal(opts);
      });
    });

  program
    .command("materialize")
    .description(
      "open a sealed bundle and write the run's registry credentials into a new run directory; print the environment tofu needs",
    )
    .option("--key-file <path>", "the agent's private key file")
    .option("--key <uri>", "file:PATH, systemd-credential:NAME, keyring:SERVICE/ACCOUNT or env:NAME")
    .requiredOption("--agent-id <id>", "this agent's id")
    .requiredOption("--run-id <id>", "the run being prepared")
    .requiredOption("--bundle <file|->", "the sealed bundle")
    .requiredOption(
      "--run-dir <dir>",
      "the run's credential directory: must not exist yet (or be empty); its parent must exist",
    )
    .option(
      "--base-docker-config <file>",
      "an operator Docker config to merge (its other registries, credHelpers and credsStore are kept)",
    )
    .option(
      "--tofu-cli-config <file>",
      "the operator's OpenTofu CLI configuration to reproduce in the run's (default: /etc/oci-cred-agent/tofu.tfrc if it exists; never ~/.tofurc or TF_CLI_CONFIG_FILE)",
    )
    .addOption(new Option("--format <format>", "output format").choices(["env", "json"]).default("env"))
    .option("--max-bundle-lifetime <duration>", "refuse bundles valid for longer than this", "1h")
    .option("--clock-skew <duration>", "how far in the future a bundle's issue time may be", "2m")
    .option("--max-bundle-bytes <n>", "refuse bundles larger than this many bytes (default: 16 MiB)")
    .option(
      "--cloud-auth-host <host>",
      "a registry host (HOST[:PORT], a leading *. for any name under it) that may receive credentials minted from the cloud identity for cloud_auth entries, besides each cloud's own registries; repeatable",
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .action((opts: MaterializeOptions) => {
      setAction(async () => {
        const { materialize } = await import("./commands/materialize.js");
        return materialize(opts);
      });
    });

  program
    .command("wipe")
    .description("remove what materialize wrote and the run directory itself (idempotent)")
    .requiredOption("--run-dir <dir>", "the run directory")
    .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
    .action((opts: { runDir: string; format: string }) => {
      setAction(async () => {
        const { wipe } = await import("./commands/wipe.js");
        return wipe(opts);
      });
    });

  const runCommand = program
    .command("run")
    .description(
      "the daemon: register with the control plane, lease runs, put their credentials in place, run tofu, wipe on every ending",
    );
  addRunOptions(runCommand).action((_opts: unknown, cmd: Command) => {
    setAction(async () => {
      const { run } = await import("./commands/run.js");
      return run(givenFlags(cmd));
    });
  });

  const config = program.command("config").description("inspect the daemon's configuration");
  addRunOptions(
    config
      .command("print")
      .description("print the effective configuration of `run` and where each value came from (secrets redacted)"),
  )
    .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
    .action((_opts: unknown, cmd: Command) => {
      const flags = givenFlags(cmd);
      const format = cmd.opts<{ format: string }>().format;
      setAction(async () => {
        const { configPrint } = await import("./commands/config-print.js");
        return configPrint(flags, format);
      });
    });

  addRunOptions(
    program
      .command("doctor")
      .description(
        "check this host against the configuration `run` would use: keys, token, directories, tofu, control plane and clock skew; with --bundle, the pre-flight credential checks",
      ),
  )
    .option("--bundle <file|->", "a sealed bundle whose credentials to check against their registries (as before init)")
    .option("--agent-id <id>", "the agent id the bundle was sealed for")
    .option("--run-id <id>", "the run id the bundle was sealed for")
    .option("--configuration <dir>", "a run configuration to scan for oci:// sources (pull scopes, docker.io warnings)")
    .addOption(new Option("--format <format>", "output format").choices(["text", "json"]).default("text"))
    .action((opts: DoctorOptions, cmd: Command) => {
      const flags = givenFlags(cmd);
      setAction(async () => {
        const { doctor } = await import("./commands/doctor.js");
        return doctor(flags, opts);
      });
    });

  program
    .command("control-plane")
    .description("the reference control plane: admin API and agent API on one listener")
    .option("--listen <host:port>", "where to listen", "127.0.0.1:8480")
    .requiredOption("--admin-token-file <file>", "file holding the admin API token")
    .option(
      "--agent-token-file <file>",
      "file holding the agent pool token, which enrolls agents (required unless --no-pool-token-enrollment)",
    )
    .option(
      "--no-pool-token-enrollment",
      "no pool token: agents enroll only with single-use enrollment tokens (POST /api/admin/v1/enrollment-tokens)",
    )
    .option(
      "--data-file <file>",
      "keep state in this SQLite database (created 0600; every acknowledged change committed first); default in memory",
    )
    .option(
      "--data-key-file <file>",
      "with --data-file: the key that seals passwords, configurations and logs at rest, 32 random bytes in base64, kept outside the data file's directory [default: the systemd credential data-key]",
    )
    .option(
      "--retention <duration>",
      "delete finished runs, with their events and logs, this long after they ended",
      "30d",
    )
    .option("--lease-ttl <duration>", "a lease expires this long after its last heartbeat", "60s")
    .option("--heartbeat-interval <duration>", "how often agents heartbeat a lease", "10s")
    .option("--poll-wait <duration>", "how long a lease request is held open", "30s")
    .option("--bundle-ttl <duration>", "how long a sealed bundle stays valid", "10m")
    .option(
      "--agent-expiry <duration>",
      "an agent not seen for this long is removed (it enrolls again if it comes back); at least 5m and twice --poll-wait and --heartbeat-interval",
      "1h",
    )
    .option("--max-agents <n>", "most agents enrolled at once, pending enrollments included", "1000")
    .option(
      "--max-pending-enrollments <n>",
      "most pool-token enrollments waiting for the answer to their challenge (at most 16 from one address)",
      "1000",
    )
    // HTTPS and connection limits (docs/operations.md, TLS; docs/protocol.md, Limits).
    .option(
      "--tls-cert <file>",
      "serve HTTPS with this certificate chain (PEM); reloaded on SIGHUP and when it changes",
    )
    .option("--tls-key <file>", "the private key (PEM) of --tls-cert")
    .option(
      "--plain-http-behind-proxy",
      "serve plain HTTP on a non-loopback --listen because a proxy in front terminates TLS",
    )
    .option(
      "--max-connections <n>",
      "open connections at most (unauthenticated ones get a quarter, at most 256)",
      "1024",
    )
    .action((opts: ControlPlaneCommandOptions) => {
      setAction(async () => {
        const { controlPlane } = await import("./commands/control-plane.js");
        return controlPlane(opts);
      });
    });

  const agents = program
    .command("agents")
    .description(
      "operators: list, show, disable, enable and delete the agents enrolled with the reference control plane",
    );
  addAdminOptions(agents.command("list").description("list the agents: a table, or JSON lines with --format json"))
    .addOption(formatOption())
    .action((opts: AgentsCommandOptions) => {
      setAction(async () => {
        const { agentsList } = await import("./commands/agents.js");
        return agentsList(opts);
      });
    });
  addAdminOptions(agents.command("show").description("show one agent").argument("<agent-id>"))
    .addOption(formatOption())
    .action((id: string, opts: AgentsCommandOptions) => {
      setAction(async () => {
        const { agentsShow } = await import("./commands/agents.js");
        return agentsShow(id, opts);
      });
    });
  for (const [name, disabled, text] of [
    [
      "disable",
      true,
      "disable an agent: every request of it is refused (403 AGENT_DISABLED), it leases nothing, and the runs it holds end at once (AGENT_DISABLED)",
    ],
    ["enable", false, "enable a disabled agent: it leases runs again"],
  ] as const) {
    addAdminOptions(agents.command(name).description(text).argument("<agent-id>"))
      .addOption(formatOption())
      .action((id: string, opts: AgentsCommandOptions) => {
        setAction(async () => {
          const { agentsSetDisabled } = await import("./commands/agents.js");
          return agentsSetDisabled(id, disabled, opts);
        });
      });
  }
  addAdminOptions(
    agents
      .command("delete")
      .description(
        "delete an agent: its credential is refused at once and the runs it holds end (AGENT_DELETED); a daemon still running enrolls again as a new agent",
      )
      .argument("<agent-id>"),
  )
    .addOption(formatOption())
    .action((id: string, opts: AgentsCommandOptions) => {
      setAction(async () => {
        const { agentsDelete } = await import("./commands/agents.js");
        return agentsDelete(id, opts);
      });
    });

  const tokens = program
    .command("enrollment-tokens")
    .description("operators: single-use tokens that each enroll one agent, in place of the pool token");
  addAdminOptions(
    tokens
      .command("create")
      .description(
        "create an enrollment token and write it, the one time it is shown, to --out (a new 0600 file, or - for stdout)",
      ),
  )
    .requiredOption("--out <file|->", "where to write the token: a new file (mode 0600), or - for stdout")
    .option("--name <name>", "a name to recognise it by in the list")
    .option("--expires-in <duration>", "how long it may enroll (default 24h, at most 365d)")
    .action((opts: CreateEnrollmentTokenOptions) => {
      setAction(async () => {
        const { enrollmentTokensCreate } = await import("./commands/enrollment-tokens.js");
        return enrollmentTokensCreate(opts);
      });
    });
  addAdminOptions(tokens.command("list").description("list the enrollment tokens (never the tokens themselves)"))
    .addOption(formatOption())
    .action((opts: EnrollmentTokensCommandOptions) => {
      setAction(async () => {
        const { enrollmentTokensList } = await import("./commands/enrollment-tokens.js");
        return enrollmentTokensList(opts);
      });
    });
  addAdminOptions(
    tokens
      .command("delete")
      .description("revoke an enrollment token: it enrolls nothing from then on (an agent it enrolled stays)")
      .argument("<token-id>"),
  ).action((id: string, opts: EnrollmentTokensCommandOptions) => {
    setAction(async () => {
      const { enrollmentTokensDelete } = await import("./commands/enrollment-tokens.js");
      return enrollmentTokensDelete(id, opts);
    });
  });

  program
    .command("runner")
    .description(
      "run the phases an agent (`run --executor runner:PATH`) asks for over a Unix socket, one at a time, in a container without the key or the token; kills what each phase leaves running",
    )
    .requiredOption("--socket <path>", "the Unix socket to listen on (created 0660; a stale one is replaced)")
    .option("--tofu-bin <path>", "the tofu executable [default: OCI_CRED_AGENT_TOFU_BIN, else tofu]")
    .option(
      "--work-dir <dir>",
      "the agent's --work-dir: workspaces must lie under it [default: OCI_CRED_AGENT_WORK_DIR]",
    )
    .option(
      "--credentials-dir <dir>",
      "the agent's --credentials-dir: credential directories must lie under it [default: OCI_CRED_AGENT_CREDENTIALS_DIR, else <work-dir>/credentials]",
    )
    .option("--state-dir <dir>", "where each run's private HOME and TMPDIR go [default: $TMPDIR/oci-cred-agent-runner]")
    .option(
      "--pid-namespace",
      "the runner has a PID namespace of its own (its container's, under tini): after each phase, kill every other process in it (implied as PID 1; checked at start)",
    )
    .option(
      "--allow-ptrace",
      "run even where a phase could attach to the runner with ptrace (no Yama, or ptrace_scope 0)",
    )
    .addOption(new Option("--log-level <level>", "log level").default("info"))
    .addOption(new Option("--log-format <format>", "log format").choices(["json", "pretty"]).default("json"))
    .action((opts: RunnerCommandOptions) => {
      setAction(async () => {
        const { runner } = await import("./commands/runner.js");
        return runner(opts);
      });
    });

  // The hook a foreign runner calls around each phase (docs/sidecar.md); a small client that
  // loads nothing but the socket protocol, so that it starts fast.
  program
    .command("hook")
    .description(
      "for a foreign runner's hooks: get a run's registry credentials from `oci-cred-agent sidecar` before init (pre hooks print KEY='value' lines) and wipe them after each phase (post hooks)",
    )
    .argument("<name>", "pre-init, pre-plan, pre-apply, post-plan, post-apply or post-run")
    .option(
      "--socket <path>",
      "the sidecar's socket [default: OCI_CRED_AGENT_SOCKET, else /run/oci-cred-agent/sidecar.sock]",
    )
    .option(
      "--run-id <id>",
      "the control plane's run id [default: SCALR_RUN_ID, TFC_RUN_ID, TF_VAR_spacelift_run_id, BURRITO_RUNNER_RUN, in that order]",
    )
    .option(
      "--run-token-file <file>",
      "a file holding the run's token [default: OCI_CRED_AGENT_RUN_TOKEN; never on the command line]",
    )
    .option("--phase <phase>", "pre-init and post-run: init, plan or apply [default: SCALR_TERRAFORM_OPERATION]")
    .addOption(
      new Option("--outcome <outcome>", "post hooks: how the phase or run ended").choices(["succeeded", "failed"]),
    )
    .option(
      "--home <dir>",
      "the run's own HOME: copy the run's Docker config to <dir>/.docker/config.json (pre) and remove it (post) [default: $HOME when OCI_CRED_AGENT_WRITE_HOME=1, else none]",
    )
    .option("--timeout <duration>", "how long to wait for the sidecar's answer", "50s")
    .option(
      "--fail-if-unreachable",
      "post hooks: exit 1 when the sidecar cannot be reached (default: a warning, exit 0; the sidecar wipes on its own)",
    )
    .action((name: string, opts: HookCommandOptions) => {
      setAction(async () => {
        const { hook } = await import("./commands/hook.js");
        return hook(name, opts);
      });
    });

  // Sidecar mode (docs/sidecar.md): the daemon beside a foreign runner.
  addRunOptions(
    program
      .command("sidecar")
      .description(
        "beside a foreign runner: lease the runs it executes (executor external), and write each run's credentials for its pre hooks and wipe them at its post hooks, over a Unix socket; the runner holds neither key nor token",
      ),
  )
    .option(
      "--socket <path>",
      "the Unix socket hooks connect to (created 0660) [default: OCI_CRED_AGENT_SOCKET, else /run/oci-cred-agent/sidecar.sock]",
    )
    .option(
      "--socket-group <group>",
      "the runner's group (name or number): it gets the socket and read access to its runs' files",
    )
    .option("--hook-ttl <duration>", "wipe a run's files when no post hook came within this long", "2h")
    .option("--lease-wait <duration>", "how long a pre hook for a run not yet leased waits for its lease", "30s")
    .action((opts: SidecarCommandOptions, cmd: Command) => {
      const flags = givenFlags(cmd);
      setAction(async () => {
        const { sidecar } = await import("./commands/sidecar.js");
        return sidecar(flags, opts);
      });
    });

  program
    .command("dev")
    .description(
      "see the whole flow on one machine: reference control plane, sample integrations, one agent, one run, a summary",
    )
    .option("--work-dir <dir>", "the agent's working directory (default: a temporary one, removed afterwards)")
    .option("--log-level <level>", "agent log level", "info")
    .option("--offline", "do not probe the sample registries' /v2/ endpoints")
    .action((opts: { workDir?: string; logLevel: string; offline?: boolean }) => {
      setAction(async () => {
        const { dev } = await import("./commands/dev.js");
        return dev(opts);
      });
    });

  program
    .command("tofu-standin", { hidden: true })
    .description("labelled stand-in for tofu, used by dev when no tofu is on PATH")
    .argument("<phase>")
    .allowUnknownOption()
    .allowExcessArguments()
    .action((phase: string) => {
      setAction(async () => {
        const { tofuStandin } = await import("./commands/tofu-standin.js");
        return tofuStandin(phase);
      });
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
      return error.code === "commander.helpDisplayed" ||
        error.code === "commander.version" ||
        error.code === "commander.help"
        ? 0
        : 2;
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
    process.stderr.write(
      `oci-cred-agent: error INTERNAL: unexpected failure (${describeUnexpected(error)}); please report it\n`,
    );
    if (process.env["OCI_CRED_AGENT_DEBUG"] === "1" && error instanceof Error)
      process.stderr.write(`${error.stack ?? ""}\n`);
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
