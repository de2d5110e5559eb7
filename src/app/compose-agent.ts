/**
 * The composition root of the daemon: the one place that builds the agent from its parts
 * (key ring, control-plane client, logger, redactor, file system, settings) and wires them.
 */
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { AgentError, errnoCode } from "../core/errors.js";
import { Redactor } from "../core/redactor.js";
import { ReplayCache } from "../core/replay-cache.js";
import type { OperatorCliConfigSource } from "../core/tofu-cli-config.js";
import { publicKeyDoc } from "../crypto/agent-key.js";
import { AgentDaemon } from "../daemon/agent-daemon.js";
import { ControlPlaneClient } from "../daemon/control-plane-client.js";
import { createLogger, type LogFormat, type LogSink } from "../daemon/logger.js";
import { noopObserver, type DaemonObserver } from "../daemon/observer.js";
import type { TofuCommand } from "../daemon/phase-runner.js";
import { DEFAULT_ARCHIVE_LIMITS } from "../fs/config-workspace.js";
import { realFs } from "../fs/secure-fs.js";
import { discoverTofuCliConfig } from "../fs/tofu-cli-config-sources.js";
import { loadKeyFileRing, type KeyRing } from "./agent-keys.js";

export interface AgentConfig {
  readonly controlPlaneUrl: string;
  readonly tokenFile: string;
  readonly keyFile: string;
  readonly workDir: string;
  /** Where run credential directories go; default <work-dir>/credentials (put it on tmpfs). */
  readonly credentialsDir?: string;
  readonly tofu: TofuCommand;
  readonly concurrency: number;
  readonly drainTimeoutMs: number;
  readonly cancelGraceMs: number;
  readonly runTimeoutMs: number;
  readonly maxBundleLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxConfigBytes: number;
  readonly baseDockerConfigFile?: string;
  readonly name?: string;
  readonly logLevel: string;
  readonly logFormat: LogFormat;
  readonly version: string;
}

export interface ComposedAgent {
  readonly daemon: AgentDaemon;
  readonly log: Logger;
  readonly redactor: Redactor;
}

/** Environment variables that belong to the agent and never reach a run. */
const AGENT_ONLY_ENV = /^(OCI_CRED_AGENT_|DOCKER_CONFIG$|REGISTRY_AUTH_FILE$|TF_CLI_CONFIG_FILE$|TERRAFORM_CONFIG$)/;

export function runBaseEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !AGENT_ONLY_ENV.test(k)));
}

async function readToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await realFs.readFile(path, "utf8");
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read the token file ${path} (${errnoCode(error) ?? "error"}); pass the agent pool token's file with --token-file`, { path });
  }
  const token = text.trim();
  if (token === "" || /\s/.test(token)) {
    throw new AgentError("INVALID_ARGUMENT", `the token file ${path} must hold the pool token on one line`, { path });
  }
  return token;
}

export async function composeAgent(
  config: AgentConfig,
  overrides: { sink?: LogSink; observer?: DaemonObserver; env?: NodeJS.ProcessEnv } = {},
): Promise<ComposedAgent> {
  const env = overrides.env ?? process.env;
  const redactor = new Redactor();
  const log = await createLogger({ level: config.logLevel, format: config.logFormat, redactor, ...(overrides.sink ? { sink: overrides.sink } : {}) });
  const token = await readToken(config.tokenFile);
  redactor.add([token]);
  const keys: KeyRing = await loadKeyFileRing(realFs, config.keyFile);
  const observer = overrides.observer ?? noopObserver;
  observer.keysLoaded(keys.size);
  let baseDockerConfig: { path: string; text: string } | undefined;
  if (config.baseDockerConfigFile !== undefined) {
    baseDockerConfig = { path: config.baseDockerConfigFile, text: await realFs.readFile(config.baseDockerConfigFile, "utf8") };
  }
  const tofuCliConfigSources: readonly OperatorCliConfigSource[] = await discoverTofuCliConfig(realFs, env);
  const workDir = resolve(config.workDir);
  const client = new ControlPlaneClient({ baseUrl: config.controlPlaneUrl, token });
  const daemon = new AgentDaemon({
    client,
    log,
    observer,
    concurrency: config.concurrency,
    drainTimeoutMs: config.drainTimeoutMs,
    registration: () => ({
      name: config.name ?? `${hostname()}-${process.pid}`,
      version: config.version,
      concurrency: config.concurrency,
      public_keys: [...keys.values()].map((k) => publicKeyDoc(k.publicKey)),
    }),
    runDeps: {
      client,
      keys: () => keys,
      replayCache: new ReplayCache(),
      baseDockerConfig: () => baseDockerConfig,
      tofuCliConfigSources: () => tofuCliConfigSources,
      fs: realFs,
      log,
      redactor,
      observer,
      settings: {
        credentialsDir: resolve(config.credentialsDir ?? join(workDir, "credentials")),
        workspacesDir: join(workDir, "workspaces"),
        tofu: config.tofu,
        baseEnv: runBaseEnv(env),
        heartbeatIntervalMs: 10_000,
        cancelGraceMs: config.cancelGraceMs,
        runTimeoutMs: config.runTimeoutMs,
        archiveLimits: { ...DEFAULT_ARCHIVE_LIMITS, maxBytes: config.maxConfigBytes },
        maxBundleLifetimeSeconds: config.maxBundleLifetimeSeconds,
        clockSkewSeconds: config.clockSkewSeconds,
        maxBundleBytes: 64 * 1024 * 1024,
      },
    },
  });
  return { daemon, log, redactor };
}
