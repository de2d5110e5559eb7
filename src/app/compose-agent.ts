/**
 * The composition root of the daemon: the one place that builds the agent from its prepared
 * parts (settings, token, keys, operator configuration) and wires logger, redactor, metrics,
 * health endpoints, key reloads and the daemon together. `run` and `dev` both come through here.
 */
import { hostname } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { isCloudIdentityVariable } from "../core/cloud-identity-env.js";
import { AgentError } from "../core/errors.js";
import type { Redactor } from "../core/redactor.js";
import { ReplayCache } from "../core/replay-cache.js";
import { publicKeyDoc } from "../crypto/agent-key.js";
import { AgentDaemon } from "../daemon/agent-daemon.js";
import { ControlPlaneClient } from "../daemon/control-plane-client.js";
import type { LogSink } from "../daemon/logger.js";
import { noopObserver, type DaemonObserver } from "../daemon/observer.js";
import type { TofuCommand } from "../execution/phase-executor.js";
import { setUpPhaseExecutor } from "./phase-executor-setup.js";
import { DEFAULT_ARCHIVE_LIMITS } from "../fs/config-workspace.js";
import { realFs } from "../fs/secure-fs.js";
import { AgentStatus, combineObservers } from "../ops/agent-status.js";
import { startHealthServer, type HealthServer } from "../ops/health-server.js";
import { AgentMetrics } from "../ops/metrics.js";
import { PREFLIGHT_LIMITS, PreflightChecker } from "../registry/preflight.js";
import { createCloudMinter } from "../cloud/cloud-minter.js";
import { watchForChanges, type Watcher } from "./change-watcher.js";
import type { PreparedAgent } from "./prepare-agent.js";
import { startLogging } from "./start-logging.js";
import { controlPlaneDispatcher, registryDispatcher } from "./tls-dispatcher.js";

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

export interface ComposeOptions {
  readonly version: string;
  readonly env: NodeJS.ProcessEnv;
  readonly sink?: LogSink;
  readonly observer?: DaemonObserver;
  /** What runs as tofu (default: `settings.tofuBin`); `dev` runs a labelled stand-in. */
  readonly tofu?: TofuCommand;
}

/** Environment variables of the agent that it leaves out of a run's environment (outside the sandbox a run can still read /proc/<agent pid>/environ). */
const AGENT_ONLY_ENV =
  /^(OCI_CRED_AGENT_|DOCKER_CONFIG$|REGISTRY_AUTH_FILE$|TF_CLI_CONFIG_FILE$|TERRAFORM_CONFIG$|CREDENTIALS_DIRECTORY$)/;

/** How long a credential that a registry accepted is not checked again. */
const PREFLIGHT_CACHE_MS = 5 * 60_000;
/** Bundles are small (a few KiB per integration); this bounds a hostile one. */
const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;

/**
 * The environment a run's tofu starts from: the agent's, minus what is the agent's own (its
 * settings, the token's and key's systemd credentials directory, the registry files a run gets
 * its own of, the variable of `--key env:NAME` given as `alsoRemove`), minus the pool's cloud
 * identity unless `cloudEnv` is `pass` (src/core/cloud-identity-env.ts), and minus
 * MALLOC_ARENA_MAX when the launcher set it for the agent alone.
 */
export function runBaseEnv(
  env: NodeJS.ProcessEnv,
  options: { readonly alsoRemove?: string; readonly cloudEnv?: "drop" | "pass" } = {},
): NodeJS.ProcessEnv {
  const launcherArena = env["OCI_CRED_AGENT_LAUNCHER_SET_MALLOC_ARENA_MAX"] === "1";
  const dropCloud = options.cloudEnv !== "pass";
  return Object.fromEntries(
    Object.entries(env).filter(
      ([k]) =>
        !AGENT_ONLY_ENV.test(k) &&
        k !== options.alsoRemove &&
        !(dropCloud && isCloudIdentityVariable(k)) &&
        !(launcherArena && k === "MALLOC_ARENA_MAX"),
    ),
  );
}

export async function composeAgent(prepared: PreparedAgent, options: ComposeOptions): Promise<ComposedAgent> {
  const { settings, keys: ring } = prepared;
  const env = options.env;
  const { redactor, log } = await startLogging(prepared, options.sink);
  // Fails closed: where the sandbox cannot run, the agent does not start.
  const { executor, runnerKillsNamespace } = await setUpPhaseExecutor(
    settings,
    options.tofu ?? { file: settings.tofuBin, argsPrefix: [] },
    env,
  );
  if (runnerKillsNamespace === false) {
    log.warn(
      { event: "runner_without_pid_namespace" },
      "the runner does not have a PID namespace of its own: after each phase it stops only the leftovers it can identify (same user, inside the run's directories); run it as its container's PID 1 (--pid-namespace), as deploy/kubernetes does",
    );
  }
  if (executor.isolation === "none") {
    log.warn(
      { event: "isolation", isolation: executor.isolation },
      "isolation none: phases run as the agent's own children and reach everything its user can (its key, its token, other runs' credentials and workspaces); use the sandbox (the default) or the runner",
    );
  } else log.info({ event: "isolation", isolation: executor.isolation }, `phases run in the ${executor.isolation}`);
  const cloudVariables = Object.keys(env)
    .filter((k) => isCloudIdentityVariable(k))
    .sort();
  if (cloudVariables.length > 0 && settings.runCloudEnv === "pass") {
    log.warn(
      { event: "run_cloud_env", run_cloud_env: "pass", variables: cloudVariables },
      "run_cloud_env pass: runs inherit the agent's cloud identity variables and can act as the pool; give the pool a pull-only identity (docs/architecture.md)",
    );
  } else if (cloudVariables.length > 0) {
    log.info(
      { event: "run_cloud_env", run_cloud_env: "drop", variables: cloudVariables },
      "runs do not inherit the agent's cloud identity variables; set run_cloud_env: pass only if runs must act as the pool",
    );
  }
  const status = new AgentStatus(() => Date.now(), 2 * 60_000);
  const metrics = new AgentMetrics(options.version);
  status.isolationIs(executor.isolation);
  metrics.isolationIs(executor.isolation);
  const observer = combineObservers(status, metrics, options.observer ?? noopObserver);
  observer.keysLoaded(ring.kids().length);
  const client = new ControlPlaneClient({
    baseUrl: settings.controlPlaneUrl,
    token: prepared.token,
    dispatcher: await controlPlaneDispatcher(env, settings.caFile),
  });
  const daemon = new AgentDaemon({
    client,
    log,
    observer,
    settings,
    registration: () => ({
      name: settings.name ?? `${hostname()}-${process.pid}`,
      version: options.version,
      concurrency: settings.concurrency,
      public_keys: [...ring.current().values()].map((k) => publicKeyDoc(k.publicKey)),
    }),
    runs: {
      keys: () => ring.current(),
      replayCache: new ReplayCache(),
      operator: prepared.operator,
      fs: realFs,
      redactor,
      executor,
      baseEnv: runBaseEnv(env, {
        ...(settings.keySource.kind === "env" ? { alsoRemove: settings.keySource.name } : {}),
        cloudEnv: settings.runCloudEnv,
      }),
      archiveLimits: { ...DEFAULT_ARCHIVE_LIMITS, maxBytes: settings.maxConfigBytes },
      maxBundleBytes: MAX_BUNDLE_BYTES,
      // Loads a cloud's SDK only when a cloud_auth entry first needs it.
      cloudMinter: createCloudMinter({ allowedHosts: settings.cloudAuthHosts }),
      ...(settings.preflight
        ? {
            preflight: new PreflightChecker({
              cacheMs: PREFLIGHT_CACHE_MS,
              ...PREFLIGHT_LIMITS,
              now: () => Date.now(),
              dispatcher: registryDispatcher(env),
            }),
          }
        : {}),
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
            log.warn(
              { event: "key_registration_failed", code: error instanceof AgentError ? error.code : "INTERNAL" },
              "could not send the new public keys to the control plane; they are sent again at the next registration",
            );
            return false;
          },
        );
        log.info(
          {
            event: "keys_reloaded",
            reason,
            kids: ring.kids(),
            added: change.added,
            removed: change.removed,
            registered: registeredNow,
          },
          "keys reloaded",
        );
      } catch (error) {
        log.error(
          {
            event: "key_reload_failed",
            reason,
            code: error instanceof AgentError ? error.code : "INTERNAL",
            kids: ring.kids(),
          },
          `key reload failed, keeping the keys in use: ${error instanceof AgentError ? error.message : "unexpected error"}`,
        );
      }
    });
    return reloading;
  };
  const source = settings.keySource;
  const watched = [
    ...(source.kind === "file" ? [source.path] : []),
    ...(source.kind === "systemd-credential" && env["CREDENTIALS_DIRECTORY"]
      ? [join(env["CREDENTIALS_DIRECTORY"], source.name)]
      : []),
  ];
  const watcher: Watcher | undefined =
    watched.length > 0 ? await watchForChanges(watched, () => void reloadKeys("file change")) : undefined;

  const health =
    settings.listen === undefined
      ? undefined
      : await startHealthServer(settings.listen.host, settings.listen.port, status, metrics);
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
