import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { AgentError } from "../../core/errors.js";
import { Redactor } from "../../core/redactor.js";
import { createLogger } from "../../daemon/logger.js";
import { startRunnerServer } from "../../runner/runner-server.js";

export interface RunnerCommandOptions {
  readonly socket: string;
  readonly tofuBin?: string;
  readonly workDir?: string;
  readonly credentialsDir?: string;
  readonly stateDir?: string;
  readonly pidNamespace?: boolean;
  readonly allowPtrace?: boolean;
  readonly logLevel: string;
  readonly logFormat: string;
}

function absolute(flag: string, value: string): string {
  if (value === "" || !isAbsolute(value))
    throw new AgentError("INVALID_ARGUMENT", `${flag} must be an absolute path (the agent sends absolute paths)`, {
      flag,
    });
  return resolve(value);
}

/**
 * `runner`: serves phases to an agent until SIGTERM or SIGINT (a running phase is then canceled:
 * SIGTERM, its grace, SIGKILL). Defaults follow the image's OCI_CRED_AGENT_* variables, so the
 * runner and the agent agree on the directories when both run from it.
 */
export async function runner(opts: RunnerCommandOptions): Promise<number> {
  const env = process.env;
  const workDirText = opts.workDir ?? env["OCI_CRED_AGENT_WORK_DIR"];
  if (workDirText === undefined)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "--work-dir is required (the agent's --work-dir: the runner accepts workspaces under it only)",
      { flag: "--work-dir" },
    );
  const workDir = absolute("--work-dir", workDirText);
  const credentialsDir = absolute(
    "--credentials-dir",
    opts.credentialsDir ?? env["OCI_CRED_AGENT_CREDENTIALS_DIR"] ?? join(workDir, "credentials"),
  );
  const stateDir = absolute("--state-dir", opts.stateDir ?? join(tmpdir(), "oci-cred-agent-runner"));
  // What the phases create stays open to the group the agent shares (it removes the workspace),
  // and closed to others.
  process.umask(0o007);
  const log = await createLogger({
    level: opts.logLevel,
    format: opts.logFormat === "pretty" ? "pretty" : "json",
    redactor: new Redactor(),
  });
  let fatal: AgentError | undefined;
  let stop = (): void => undefined;
  const stopped = new Promise<void>((resolveStop) => {
    stop = resolveStop;
  });
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ event: "signal", signal }, `received ${signal}: stopping`);
    stop();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    const server = await startRunnerServer({
      socketPath: absolute("--socket", opts.socket),
      tofuBin: opts.tofuBin ?? env["OCI_CRED_AGENT_TOFU_BIN"] ?? "tofu",
      workDir,
      credentialsDir,
      stateDir,
      pidNamespace: opts.pidNamespace === true,
      allowPtrace: opts.allowPtrace === true,
      log,
      onFatal: (error) => {
        fatal = error;
        stop();
      },
    });
    await stopped;
    await server.close();
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
  if (fatal !== undefined) throw fatal;
  return 0;
}
