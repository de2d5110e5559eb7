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
import { createLogger, type LogSink } from "../daemon/logger.js";
import { noopObserver, type DaemonObserver } from "../daemon/observer.js";
import type { TofuCommand } from "../daemon/phase-runner.js";
import { DEFAULT_ARCHIVE_LIMITS } from "../fs/config-workspace.js";
import { realFs } from "../fs/secure-fs.js";
import { discoverTofuCliConfig } from "../fs/tofu-cli-config-sources.js";
import { AgentStatus, combineObservers } from "../ops/agent-status.js";
import { startHealthServer, type HealthServer } from "../ops/health-server.js";
import { AgentMetrics } from "../ops/metrics.js";
import type { RunSettingsFromConfig } from "../config/load-run-config.js";
import { ReloadableKeyRing } from "../keys/key-ring.js";
import { describeKeySource } from "../keys/key-source.js";
import { watchForChanges, type Watcher } from "./change-watcher.js";
import { controlPlaneDispatcher, registryDispatcher } from "./tls-dispatcher.js";
import { PreflightChecker } from "../registry/preflight.js";

export interface AgentConfig extends Omit<RunSettingsFromConfig, "tofuBin" | "retry"> {
  readonly tofu: TofuCommand;
  readonly retry?: { readonly baseMs: number; readonly capMs: number };
  readonly version: string;
}

export interface ComposedAgent {
  readonly daemon: AgentDaemon;
  readonly log: Logger;
  readonly redactor: Redactor;
  readonly status: AgentStatus;
  readonly metrics: AgentMetrics;
  readonly health: HealthServer | undefined;
  /** Re-reads the keys (SIGHUP, or a change seen by the watcher); keeps the old ones on failure. */
  reloadKeys(reason: string): Promise<void>;
  /** Runs the daemon to its end, then closes the endpoints and watchers. */
  run(): ReturnType<AgentDaemon["run"]>;
}

/** Environment variables that belong to the agent and never reach a run. */
const AGENT_ONLY_ENV = /^(OCI_CRED_AGENT_|DOCKER_CONFIG$|REGISTRY_AUTH_FILE$|TF_CLI_CONFIG_FILE$|TERRAFORM_CONFIG$|CREDENTIALS_DIRECTORY$)/;

/**
 * The environment a run's tofu starts from: the agent's, minus what is the agent's own (its
 * settings, the token's and key's systemd credentials directory, the registry files a run gets
 * its own of) and minus MALLOC_ARENA_MAX when the launcher set it for the agent alone.
 */
export function runBaseEnv(env: NodeJS.ProcessEnv, alsoRemove?: string): NodeJS.ProcessEnv {
  const launcherArena = env["OCI_CRED_AGENT_LAUNCHER_SET_MALLOC_ARENA_MAX"] === "1";
  return Object.fromEntries(Object.entries(env).filter(([k]) => !AGENT_ONLY_ENV.test(k) && k !== alsoRemove && !(launcherArena && k === "MALLOC_ARENA_MAX")));
}

async function readToken(token: AgentConfig["token"]): Promise<string> {
  if ("value" in token) return token.value.trim();
  const path = token.file;
  let text: string;
  try {
    text = await realFs.readFile(path, "utf8");
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read the token file ${path} (${errnoCode(error) ?? "error"}); pass the agent pool token's file with --token-file`, { path });
  }
  const value = text.trim();
  if (value === "" || /\s/.test(value)) {
    throw new AgentError("INVALID_ARGUMENT", `the token file ${path} must hold the pool token on one line`, { path });
  }
  return value;
}

export async function composeAgent(
  config: AgentConfig,
  overrides: { sink?: LogSink; observer?: DaemonObserver; env?: NodeJS.ProcessEnv } = {},
): Promise<ComposedAgent> {
  const env = overrides.env ?? process.env;
  const redactor = new Redactor();
  const log = await createLogger({ level: config.logLevel, format: config.logFormat ?? (process.stdout.isTTY ? "pretty" : "json"), redactor, ...(overrides.sink ? { sink: overrides.sink } : {}) });
  const token = await readToken(config.token);
  redactor.add([token]);
  const { ring, warnings: keyWarnings } = await ReloadableKeyRing.open(config.keySource, { fs: realFs, env });
  for (const w of keyWarnings) log.warn({ event: "key_source_warning" }, w);
  const keySourceEnv = config.keySource.kind === "env" ? config.keySource.name : undefined;
  log.info({ event: "keys_loaded", source: describeKeySource(config.keySource), kids: ring.kids() }, `loaded ${ring.kids().length} key(s)`);
  const status = new AgentStatus(() => Date.now(), 2 * 60_000);
  const metrics = new AgentMetrics(config.version);
  const observer = combineObservers(status, metrics, overrides.observer ?? noopObserver);
  observer.keysLoaded(ring.kids().length);
  let baseDockerConfig: { path: string; text: string } | undefined;
  if (config.baseDockerConfigFile !== undefined) {
    baseDockerConfig = { path: config.baseDockerConfigFile, text: await realFs.readFile(config.baseDockerConfigFile, "utf8") };
  }
  const tofuCliConfigSources: readonly OperatorCliConfigSource[] = await discoverTofuCliConfig(realFs, env);
  const workDir = resolve(config.workDir);
  const client = new ControlPlaneClient({
    baseUrl: config.controlPlaneUrl,
    token,
    dispatcher: await controlPlaneDispatcher(env, config.caFile),
  });
  const daemon = new AgentDaemon({
    client,
    log,
    observer,
    concurrency: config.concurrency,
    drainTimeoutMs: config.drainTimeoutMs,
    ...(config.retry ? { backoff: config.retry } : {}),
    registration: () => ({
      name: config.name ?? `${hostname()}-${process.pid}`,
      version: config.version,
      concurrency: config.concurrency,
      public_keys: [...ring.current().values()].map((k) => publicKeyDoc(k.publicKey)),
    }),
    runDeps: {
      client,
      keys: () => ring.current(),
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
        baseEnv: runBaseEnv(env, keySourceEnv),
        heartbeatIntervalMs: 10_000,
        cancelGraceMs: config.cancelGraceMs,
        runTimeoutMs: config.runTimeoutMs,
        archiveLimits: { ...DEFAULT_ARCHIVE_LIMITS, maxBytes: config.maxConfigBytes },
        maxBundleLifetimeSeconds: config.maxBundleLifetimeSeconds,
        clockSkewSeconds: config.clockSkewSeconds,
        maxBundleBytes: 64 * 1024 * 1024,
        preflight: config.preflight,
      },
      preflight: new PreflightChecker({ cacheMs: 5 * 60_000, requestTimeoutMs: 10_000, checkTimeoutMs: 30_000, maxBodyBytes: 256 * 1024, now: () => Date.now(), dispatcher: registryDispatcher(env) }),
    },
  });
  let reloading: Promise<void> = Promise.resolve();
  const reloadKeys = (reason: string): Promise<void> => {
    reloading = reloading.then(async () => {
      try {
        const change = await ring.reload();
        observer.keysLoaded(ring.kids().length);
        if (!change.changed) {
          log.debug({ event: "keys_unchanged", reason }, "keys re-read; nothing changed");
          return;
        }
        const registeredNow = await daemon.updateKeys().then(
          () => true,
          (error: unknown) => {
            log.warn({ event: "key_registration_failed", code: error instanceof AgentError ? error.code : "INTERNAL" }, "could not send the new public keys to the control plane; they are sent again at the next registration");
            return false;
          },
        );
        log.info({ event: "keys_reloaded", reason, kids: ring.kids(), added: change.added, removed: change.removed, registered: registeredNow }, "keys reloaded");
      } catch (error) {
        log.error(
          { event: "key_reload_failed", reason, code: error instanceof AgentError ? error.code : "INTERNAL", kids: ring.kids() },
          `key reload failed, keeping the keys in use: ${error instanceof AgentError ? error.message : "unexpected error"}`,
        );
      }
    });
    return reloading;
  };
  const watched = [
    ...(config.keySource.kind === "file" ? [config.keySource.path] : []),
    ...(config.keySource.kind === "systemd-credential" && env["CREDENTIALS_DIRECTORY"] ? [join(env["CREDENTIALS_DIRECTORY"], config.keySource.name)] : []),
  ];
  const watcher: Watcher | undefined = watched.length > 0 ? await watchForChanges(watched, () => void reloadKeys("file change")) : undefined;

  const health = config.listen === undefined ? undefined : await startHealthServer(config.listen.host, config.listen.port, status, metrics);
  if (health) log.info({ event: "listening", url: health.url }, `health and metrics at ${health.url}`);
  return {
    daemon,
    log,
    redactor,
    status,
    metrics,
    health,
    reloadKeys,
    async run() {
      try {
        return await daemon.run();
      } finally {
        await watcher?.close();
        await reloading;
        await health?.close();
      }
    },
  };
}
