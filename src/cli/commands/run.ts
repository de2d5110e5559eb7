import { resolve } from "node:path";
import { composeAgent } from "../../app/compose-agent.js";
import { byteSize, controlPlaneUrl, durationSeconds, positiveInt } from "../options.js";
import { packageVersion } from "../version.js";

export interface RunOptions {
  readonly controlPlaneUrl: string;
  readonly allowInsecureControlPlane?: boolean;
  readonly tokenFile: string;
  readonly keyFile: string;
  readonly workDir: string;
  readonly credentialsDir?: string;
  readonly tofuBin: string;
  readonly concurrency: string;
  readonly drainTimeout: string;
  readonly cancelGrace: string;
  readonly runTimeout: string;
  readonly maxBundleLifetime: string;
  readonly clockSkew: string;
  readonly maxConfigBytes: string;
  readonly baseDockerConfig?: string;
  readonly name?: string;
  readonly logLevel: string;
  readonly logFormat?: string;
}

export async function run(opts: RunOptions): Promise<number> {
  const { daemon, log } = await composeAgent({
    controlPlaneUrl: controlPlaneUrl("--control-plane-url", opts.controlPlaneUrl, opts.allowInsecureControlPlane === true),
    tokenFile: opts.tokenFile,
    keyFile: opts.keyFile,
    workDir: opts.workDir,
    ...(opts.credentialsDir === undefined ? {} : { credentialsDir: opts.credentialsDir }),
    // A path is fixed now: phases run in each run's workspace, where a relative path means nothing.
    tofu: { file: opts.tofuBin.includes("/") ? resolve(opts.tofuBin) : opts.tofuBin, argsPrefix: [] },
    concurrency: positiveInt("--concurrency", opts.concurrency),
    drainTimeoutMs: durationSeconds("--drain-timeout", opts.drainTimeout) * 1000,
    cancelGraceMs: durationSeconds("--cancel-grace", opts.cancelGrace) * 1000,
    runTimeoutMs: durationSeconds("--run-timeout", opts.runTimeout) * 1000,
    maxBundleLifetimeSeconds: durationSeconds("--max-bundle-lifetime", opts.maxBundleLifetime),
    clockSkewSeconds: durationSeconds("--clock-skew", opts.clockSkew),
    maxConfigBytes: byteSize("--max-config-bytes", opts.maxConfigBytes),
    ...(opts.baseDockerConfig === undefined ? {} : { baseDockerConfigFile: opts.baseDockerConfig }),
    ...(opts.name === undefined ? {} : { name: opts.name }),
    logLevel: opts.logLevel,
    logFormat: opts.logFormat === "pretty" || (opts.logFormat === undefined && process.stdout.isTTY) ? "pretty" : "json",
    version: packageVersion(),
  });
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ event: "signal", signal }, `received ${signal}`);
    daemon.requestShutdown();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const exit = await daemon.run();
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  if (exit.code !== 0) process.stderr.write(`oci-cred-agent: error ${exit.error.code}: ${exit.error.message}\n`);
  return exit.code;
}
