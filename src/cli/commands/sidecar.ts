import { composeSidecar } from "../../app/compose-sidecar.js";
import { prepareAgent } from "../../app/prepare-agent.js";
import { loadSettings, requireSettings } from "../../config/load-run-config.js";
import { parseDurationMs } from "../../core/duration.js";
import { AgentError } from "../../core/errors.js";
import { realFs } from "../../fs/secure-fs.js";
import { DEFAULT_SIDECAR_SOCKET } from "../../protocol/sidecar-api.js";
import { packageVersion } from "../version.js";

export interface SidecarCommandOptions {
  readonly socket?: string;
  readonly socketGroup?: string;
  readonly hookTtl: string;
  readonly leaseWait: string;
}

/** Runs a sidecar leases at once unless --concurrency (or its variable or file key) says otherwise. */
const SIDECAR_DEFAULT_CONCURRENCY = 64;

function duration(flag: string, text: string): number {
  const ms = parseDurationMs(text);
  if (ms === undefined || ms <= 0)
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${text} is not a duration such as 30s, 15m or 2h`, { flag });
  return ms;
}

/**
 * `sidecar`: the run settings as for `run` (flags, OCI_CRED_AGENT_* variables, config file),
 * plus the socket. SIGTERM or SIGINT: stop serving, wipe every run's files, exit; a second
 * signal exits at once.
 */
export async function sidecar(
  flags: Record<string, string | boolean | undefined>,
  opts: SidecarCommandOptions,
): Promise<number> {
  const hookTtlMs = duration("--hook-ttl", opts.hookTtl);
  const leaseWaitMs = duration("--lease-wait", opts.leaseWait);
  const loaded = await loadSettings(flags, process.env);
  const settings = requireSettings(loaded);
  // A sidecar holds no process per run, only a lease and files between hooks, and runners wait
  // for their hooks: unless the operator set it (flag, variable or file), it holds many runs at once.
  const concurrencyUnset = loaded.resolved.values.get("concurrency")?.source === "default";
  const prepared = await prepareAgent(
    concurrencyUnset ? { ...settings, concurrency: SIDECAR_DEFAULT_CONCURRENCY } : settings,
    realFs,
    process.env,
  );
  const composed = await composeSidecar(prepared, {
    socketPath: opts.socket ?? process.env["OCI_CRED_AGENT_SOCKET"] ?? DEFAULT_SIDECAR_SOCKET,
    ...(opts.socketGroup === undefined ? {} : { socketGroup: opts.socketGroup }),
    hookTtlMs,
    leaseWaitMs,
    version: packageVersion(),
    env: process.env,
  });
  const { daemon, log } = composed;
  for (const w of loaded.resolved.warnings) log.warn({ event: "config_warning" }, w);
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info(
      { event: "signal", signal },
      `received ${signal}: wiping every run's credentials, then exiting (a second signal exits at once)`,
    );
    // The next signal takes Node's default action: the process ends at once, and the next
    // start's sweep removes what is left.
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    daemon.requestShutdown();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const exit = await composed.run();
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  if (exit.code !== 0) process.stderr.write(`oci-cred-agent: error ${exit.error.code}: ${exit.error.message}\n`);
  return exit.code;
}
