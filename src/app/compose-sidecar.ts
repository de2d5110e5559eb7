/**
 * The composition root of `oci-cred-agent sidecar`: the prepared parts (settings, token, keys,
 * operator configuration) wired into the sidecar daemon, its hook socket and the health
 * endpoints. Order at start: sweep what an earlier process left, then serve the socket, then
 * enroll and lease; at the end: stop serving, wipe everything, close the endpoints.
 */
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { createCloudMinter } from "../cloud/cloud-minter.js";
import { AgentError } from "../core/errors.js";
import { ReplayCache } from "../core/replay-cache.js";
import { publicKeyDoc } from "../crypto/agent-key.js";
import { ControlPlaneClient } from "../daemon/control-plane-client.js";
import type { LogSink } from "../daemon/logger.js";
import { realFs } from "../fs/secure-fs.js";
import { AgentStatus, combineObservers } from "../ops/agent-status.js";
import { startHealthServer } from "../ops/health-server.js";
import { AgentMetrics } from "../ops/metrics.js";
import { startHookServer } from "../sidecar/hook-server.js";
import { SidecarDaemon } from "../sidecar/sidecar-daemon.js";
import type { PreparedAgent } from "./prepare-agent.js";
import { startLogging } from "./start-logging.js";
import { controlPlaneDispatcher } from "./tls-dispatcher.js";

/** Bundles are small (a few KiB per integration); this bounds a hostile one. */
const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;

export interface SidecarOptions {
  readonly socketPath: string;
  /** The runner's group, by name or number; absent: the sidecar's own group, files private to its user. */
  readonly socketGroup?: string;
  readonly hookTtlMs: number;
  readonly leaseWaitMs: number;
  readonly version: string;
  readonly env: NodeJS.ProcessEnv;
  readonly sink?: LogSink;
}

export interface ComposedSidecar {
  readonly log: Logger;
  readonly daemon: SidecarDaemon;
  run(): ReturnType<SidecarDaemon["run"]>;
}

/** A group name (from /etc/group) or number, as a gid. */
async function resolveGroup(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const text = await readFile("/etc/group", "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new AgentError(
    "INVALID_ARGUMENT",
    `--socket-group ${group}: no such group in /etc/group; give the runner's group by name or number`,
    { flag: "--socket-group" },
  );
}

export async function composeSidecar(prepared: PreparedAgent, options: SidecarOptions): Promise<ComposedSidecar> {
  const { settings, keys: ring } = prepared;
  const { redactor, log } = await startLogging(prepared, options.sink);
  const gid = options.socketGroup === undefined ? undefined : await resolveGroup(options.socketGroup);
  const status = new AgentStatus(() => Date.now(), 2 * 60_000);
  const metrics = new AgentMetrics(options.version);
  const observer = combineObservers(status, metrics);
  observer.keysLoaded(ring.kids().length);
  const client = new ControlPlaneClient({
    baseUrl: settings.controlPlaneUrl,
    token: prepared.token,
    dispatcher: await controlPlaneDispatcher(options.env, settings.caFile),
  });
  const daemon = new SidecarDaemon({
    client,
    log,
    observer,
    settings: {
      credentialsDir: settings.credentialsDir,
      concurrency: settings.concurrency,
      hookTtlMs: options.hookTtlMs,
      leaseWaitMs: options.leaseWaitMs,
      maxBundleLifetimeSeconds: settings.maxBundleLifetimeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      retry: settings.retry,
      gid,
    },
    registration: () => ({
      name: settings.name ?? `${hostname()}-${process.pid}`,
      version: options.version,
      concurrency: settings.concurrency,
      public_keys: [...ring.current().values()].map((k) => publicKeyDoc(k.publicKey)),
    }),
    keys: () => ring.current(),
    replayCache: new ReplayCache(),
    operator: prepared.operator,
    fs: realFs,
    maxBundleBytes: MAX_BUNDLE_BYTES,
    // Loads a cloud's SDK only when a cloud_auth entry first needs it.
    cloudMinter: createCloudMinter({ allowedHosts: settings.cloudAuthHosts }),
    redact: (secret) => {
      redactor.add([secret]);
    },
  });
  return {
    log,
    daemon,
    async run() {
      // Nothing is served before what an earlier process left is gone, and no other sidecar
      // uses the directory (the lock is held until the end).
      const unlock = await daemon.sweep();
      try {
        const hooks = await startHookServer({
          socketPath: options.socketPath,
          gid,
          log,
          handle: (request, signal) => daemon.handle(request, signal),
        });
        const health =
          settings.listen === undefined
            ? undefined
            : await startHealthServer(settings.listen.host, settings.listen.port, status, metrics);
        if (health) log.info({ event: "listening", url: health.url }, `health and metrics at ${health.url}`);
        try {
          return await daemon.run();
        } finally {
          await hooks.close();
          await daemon.stop();
          await health?.close();
        }
      } finally {
        await unlock();
      }
    },
  };
}
