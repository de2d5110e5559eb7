import { resolve } from "node:path";
import { composeAgent } from "../../app/compose-agent.js";
import { resolveRunConfig, throwIfProblems, toRunSettings } from "../../config/load-run-config.js";
import { packageVersion } from "../version.js";

/** `run`: flags (only those given), then OCI_CRED_AGENT_* variables, then the config file. */
export async function run(flags: Record<string, string | boolean | undefined>): Promise<number> {
  const { resolved, problems } = await resolveRunConfig(flags, process.env);
  throwIfProblems(problems);
  const settings = toRunSettings(resolved);
  const { tofuBin, ...rest } = settings;
  const agent = await composeAgent({
    ...rest,
    // A path is fixed now: phases run in each run's workspace, where a relative path means nothing.
    tofu: { file: tofuBin.includes("/") ? resolve(tofuBin) : tofuBin, argsPrefix: [] },
    version: packageVersion(),
  });
  const { daemon, log } = agent;
  for (const w of resolved.warnings) log.warn({ event: "config_warning" }, w);
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
