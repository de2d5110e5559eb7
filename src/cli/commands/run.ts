import { composeAgent } from "../../app/compose-agent.js";
import { prepareAgent } from "../../app/prepare-agent.js";
import { loadSettings, requireSettings } from "../../config/load-run-config.js";
import { realFs } from "../../fs/secure-fs.js";
import { packageVersion } from "../version.js";

/** `run`: flags (only those given), then OCI_CRED_AGENT_* variables, then the config file. */
export async function run(flags: Record<string, string | boolean | undefined>): Promise<number> {
  const loaded = await loadSettings(flags, process.env);
  const prepared = await prepareAgent(requireSettings(loaded), realFs, process.env);
  const agent = await composeAgent(prepared, { version: packageVersion(), env: process.env });
  const { daemon, log } = agent;
  for (const w of loaded.resolved.warnings) log.warn({ event: "config_warning" }, w);
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ event: "signal", signal }, `received ${signal}`);
    daemon.requestShutdown();
  };
  const onHup = (): void => {
    log.info({ event: "signal", signal: "SIGHUP" }, "received SIGHUP: reloading keys");
    void agent.reloadKeys("SIGHUP");
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("SIGHUP", onHup);
  const exit = await agent.run();
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  process.off("SIGHUP", onHup);
  if (exit.code !== 0) process.stderr.write(`oci-cred-agent: error ${exit.error.code}: ${exit.error.message}\n`);
  return exit.code;
}
