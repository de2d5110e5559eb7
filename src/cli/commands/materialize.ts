import { loadKeySource } from "../../keys/key-source.js";
import { keySourceFrom } from "../key-option.js";
import { createCloudMinter } from "../../cloud/cloud-minter.js";
import { materializeRun } from "../../credentials/materialize.js";
import { parseCloudHostPattern } from "../../core/cloud-hosts.js";
import { AgentError } from "../../core/errors.js";
import { readOperatorTofuCliConfig } from "../../fs/tofu-cli-config-sources.js";
import { realFs } from "../../fs/secure-fs.js";
import { durationSeconds, nonEmptyId, positiveInt } from "../options.js";
import { readInput, writeOutput } from "../io.js";

export interface MaterializeOptions {
  readonly keyFile?: string;
  readonly key?: string;
  readonly agentId: string;
  readonly runId: string;
  readonly bundle: string;
  readonly runDir: string;
  readonly baseDockerConfig?: string;
  readonly tofuCliConfig?: string;
  readonly format: string;
  readonly maxBundleLifetime: string;
  readonly clockSkew: string;
  readonly maxBundleBytes?: string;
  /** Registry hosts that may receive cloud-minted credentials besides the clouds' own (repeatable). */
  readonly cloudAuthHost?: readonly string[];
}

/** Single-quotes a value for POSIX shells. */
function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export async function materialize(opts: MaterializeOptions): Promise<number> {
  if (opts.format !== "env" && opts.format !== "json") {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `--format ${JSON.stringify(opts.format)} is not supported; use env or json`,
      { flag: "--format" },
    );
  }
  const maxLifetimeSeconds = durationSeconds("--max-bundle-lifetime", opts.maxBundleLifetime);
  const clockSkewSeconds = durationSeconds("--clock-skew", opts.clockSkew);
  const maxBundleBytes =
    opts.maxBundleBytes === undefined ? undefined : positiveInt("--max-bundle-bytes", opts.maxBundleBytes);
  const allowedHosts = (opts.cloudAuthHost ?? []).map((text) => {
    const pattern = parseCloudHostPattern(text);
    if (pattern === undefined)
      throw new AgentError(
        "INVALID_ARGUMENT",
        `--cloud-auth-host ${JSON.stringify(text)} is not a host name HOST[:PORT] (a leading *. for any name under it); use e.g. --cloud-auth-host registry.corp.example:5000`,
        { flag: "--cloud-auth-host" },
      );
    return pattern;
  });
  const loaded = await loadKeySource(keySourceFrom(opts), { fs: realFs, env: process.env });
  for (const w of loaded.warnings) process.stderr.write(`oci-cred-agent: warning: ${w}\n`);
  const keys = new Map(loaded.keys.map((k) => [k.kid, k]));
  const bundle = await readInput(opts.bundle, "bundle");
  const base =
    opts.baseDockerConfig === undefined
      ? undefined
      : {
          path: opts.baseDockerConfig,
          text: (await readInput(opts.baseDockerConfig, "base Docker config")).toString("utf8"),
        };
  const result = await materializeRun({
    bundle,
    keys,
    agentId: nonEmptyId("--agent-id", opts.agentId),
    runId: nonEmptyId("--run-id", opts.runId),
    runDir: opts.runDir,
    nowMs: Date.now(),
    maxLifetimeSeconds,
    clockSkewSeconds,
    ...(maxBundleBytes === undefined ? {} : { maxBytes: maxBundleBytes }),
    ...(base === undefined ? {} : { baseDockerConfig: base }),
    tofuCliConfigSources: await readOperatorTofuCliConfig(realFs, opts.tofuCliConfig),
    fs: realFs,
    // Loads a cloud's SDK only when a cloud_auth entry needs it.
    cloudMinter: createCloudMinter({ allowedHosts }),
    onWipe: (outcome) => {
      if (!outcome.ok) process.stderr.write(`oci-cred-agent: error ${outcome.error.code}: ${outcome.error.message}\n`);
    },
  });
  for (const warning of result.warnings) process.stderr.write(`oci-cred-agent: warning: ${warning}\n`);
  for (const ignored of result.ignored) {
    process.stderr.write(
      `oci-cred-agent: ignored integration ${ignored.integration_id ?? "(no id)"} [${ignored.code}]: ${ignored.reason}\n`,
    );
  }
  if (opts.format === "json") {
    await writeOutput(
      "-",
      `${JSON.stringify({ env: result.env, registries: result.registries, ignored: result.ignored, warnings: result.warnings }, null, 2)}\n`,
    );
  } else {
    await writeOutput(
      "-",
      Object.entries(result.env)
        .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
        .join(""),
    );
  }
  return 0;
}
