import { readFile } from "node:fs/promises";
import { connectionLimitsFor } from "../../control-plane/limits.js";
import { createControlPlane } from "../../control-plane/server.js";
import type { SqliteStorage } from "../../control-plane/sqlite-storage.js";
import {
  checkListenSecurity,
  readTlsFiles,
  tlsFilesOf,
  watchTlsFiles,
  type TlsFiles,
} from "../../control-plane/tls-files.js";
import { AgentError, errnoCode, isAgentError } from "../../core/errors.js";
import { durationSeconds, hostPort, positiveInt } from "../options.js";

export interface ControlPlaneCommandOptions {
  readonly listen: string;
  readonly adminTokenFile: string;
  readonly agentTokenFile?: string;
  /** false with --no-pool-token-enrollment. */
  readonly poolTokenEnrollment: boolean;
  readonly dataFile?: string;
  readonly dataKeyFile?: string;
  readonly retention: string;
  readonly leaseTtl: string;
  readonly heartbeatInterval: string;
  readonly pollWait: string;
  readonly bundleTtl: string;
  // HTTPS and connection limits (docs/operations.md, TLS; docs/protocol.md, Limits).
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly plainHttpBehindProxy?: boolean;
  readonly maxConnections: string;
  readonly agentExpiry: string;
  readonly maxAgents: string;
  readonly maxPendingEnrollments: string;
}

/** The pool token, unless the operator enrolls with enrollment tokens only; exactly one of the two. */
async function poolToken(opts: ControlPlaneCommandOptions): Promise<string | undefined> {
  if (!opts.poolTokenEnrollment) {
    if (opts.agentTokenFile !== undefined)
      throw new AgentError(
        "INVALID_ARGUMENT",
        "--no-pool-token-enrollment and --agent-token-file contradict each other: without pool-token enrollment there is no pool token; drop one of them",
        { flag: "--agent-token-file" },
      );
    return undefined;
  }
  if (opts.agentTokenFile === undefined)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "--agent-token-file is missing: give the file holding the agent pool token, or --no-pool-token-enrollment to enroll agents with single-use enrollment tokens only",
      { flag: "--agent-token-file" },
    );
  return token(opts.agentTokenFile, "--agent-token-file");
}

/** --agent-expiry: a live agent asks at least every poll wait or heartbeat, so it never expires. */
function agentExpirySeconds(opts: ControlPlaneCommandOptions, pollWait: number, heartbeat: number): number {
  const expiry = durationSeconds("--agent-expiry", opts.agentExpiry);
  const floor = Math.max(300, 2 * pollWait, 2 * heartbeat);
  if (expiry < floor)
    throw new AgentError(
      "INVALID_ARGUMENT",
      `--agent-expiry ${opts.agentExpiry} is shorter than ${floor} s: it must be at least 5m and twice --poll-wait and --heartbeat-interval, or live agents would expire between two requests`,
      { flag: "--agent-expiry" },
    );
  return expiry;
}

async function token(path: string, flag: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read ${flag} ${path} (${errnoCode(error) ?? "error"})`, { path });
  }
  const t = text.trim();
  if (t.length < 16 || /\s/.test(t))
    throw new AgentError("INVALID_ARGUMENT", `${flag} ${path} must hold one token of at least 16 characters`, { path });
  return t;
}

function wholeNumberAtLeast(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min)
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${flag} ${JSON.stringify(text)} must be a whole number, at least ${min}`,
      {
        flag,
      },
    );
  return n;
}

export async function controlPlane(opts: ControlPlaneCommandOptions): Promise<number> {
  const listen = hostPort("--listen", opts.listen);
  const retentionSeconds = durationSeconds("--retention", opts.retention);
  const adminToken = await token(opts.adminTokenFile, "--admin-token-file");
  const agentToken = await poolToken(opts);
  if (adminToken === agentToken)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "the admin token and the agent token must differ; agent tokens must not reach the admin API",
    );
  if (opts.dataFile === undefined && opts.dataKeyFile !== undefined)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "--data-key-file seals the data of --data-file, which was not given; give both, or neither to keep state in memory",
    );
  const tlsFiles = tlsFilesOf(opts.tlsCert, opts.tlsKey);
  checkListenSecurity(listen.host, tlsFiles !== undefined, opts.plainHttpBehindProxy === true);
  const tls = tlsFiles === undefined ? undefined : await readTlsFiles(tlsFiles);
  const connections = connectionLimitsFor(wholeNumberAtLeast("--max-connections", opts.maxConnections, 8));
  // Whatever stops the control plane: a signal (undefined), or a write to the data file that failed.
  let stop!: (failure: AgentError | undefined) => void;
  const stopped = new Promise<AgentError | undefined>((resolve) => {
    stop = resolve;
  });
  const heartbeatIntervalSeconds = durationSeconds("--heartbeat-interval", opts.heartbeatInterval);
  const pollWaitSeconds = durationSeconds("--poll-wait", opts.pollWait);
  const agentApi = {
    heartbeatIntervalSeconds,
    pollWaitSeconds,
    bundleTtlSeconds: durationSeconds("--bundle-ttl", opts.bundleTtl),
    agentExpirySeconds: agentExpirySeconds(opts, pollWaitSeconds, heartbeatIntervalSeconds),
    maxAgents: positiveInt("--max-agents", opts.maxAgents),
    maxPendingEnrollments: positiveInt("--max-pending-enrollments", opts.maxPendingEnrollments),
  };
  let storage: SqliteStorage | undefined;
  if (opts.dataFile !== undefined) {
    // Loaded here only: node:sqlite is needed for --data-file alone.
    const { readDataKey } = await import("../../control-plane/data-key.js");
    const { SqliteStorage } = await import("../../control-plane/sqlite-storage.js");
    const key = await readDataKey({ dataFile: opts.dataFile, keyFile: opts.dataKeyFile, env: process.env });
    storage = await SqliteStorage.open(opts.dataFile, key, {
      // After the failed request's 500 is written.
      onFailure: (error) =>
        setImmediate(() => {
          stop(error);
        }),
    });
    key.fill(0);
  }
  try {
    const cp = await createControlPlane({
      ...(tls === undefined ? {} : { tls }),
      limits: { connections },
      adminToken,
      ...(agentToken === undefined ? {} : { agentToken }),
      leaseTtlSeconds: durationSeconds("--lease-ttl", opts.leaseTtl),
      agentApi,
      retentionSeconds,
      ...(storage === undefined ? {} : { persistence: storage }),
      onError: (error) => {
        process.stderr.write(
          `oci-cred-agent control-plane: internal error: ${error instanceof AgentError ? error.code : error instanceof Error ? error.name : "error"}\n`,
        );
      },
    });
    // The audit trail also goes to the operator's log, one JSON line per entry (never a secret).
    cp.store.on("audit", (entry: object) => {
      process.stdout.write(`${JSON.stringify({ event: "integration_audit", ...entry })}\n`);
    });
    const { url } = await cp.listen(listen.host, listen.port);
    process.stdout.write(
      `${JSON.stringify({ event: "control_plane_listening", url, admin_api: `${url}/api/admin/v1`, agent_api: `${url}/api/agent/v1` })}\n`,
    );
    // A renewed certificate is served to new connections: on SIGHUP, or when the files change.
    const reloadTls = async (files: TlsFiles, trigger: string): Promise<void> => {
      let line: Record<string, unknown> = { event: "tls_reloaded", trigger };
      try {
        cp.setTls(await readTlsFiles(files));
      } catch (error) {
        // The certificate served so far stays; the next change or SIGHUP tries again.
        const code = isAgentError(error) ? error.code : "INVALID_ARGUMENT";
        line = { event: "tls_reload_failed", trigger, code, message: error instanceof Error ? error.message : "error" };
      }
      process.stdout.write(`${JSON.stringify(line)}\n`);
    };
    const onHangup = (): void => {
      if (tlsFiles !== undefined) void reloadTls(tlsFiles, "SIGHUP");
    };
    if (tlsFiles !== undefined) process.on("SIGHUP", onHangup);
    const unwatch =
      tlsFiles === undefined ? undefined : watchTlsFiles(tlsFiles, () => void reloadTls(tlsFiles, "file_changed"));
    const onSignal = (): void => {
      stop(undefined);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    const failure = await stopped;
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    process.off("SIGHUP", onHangup);
    unwatch?.();
    await cp.close();
    if (failure) throw failure;
    return 0;
  } finally {
    storage?.close();
  }
}
