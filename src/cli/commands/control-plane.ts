import { readFile } from "node:fs/promises";
import { createControlPlane } from "../../control-plane/server.js";
import type { SqliteStorage } from "../../control-plane/sqlite-storage.js";
import { AgentError, errnoCode } from "../../core/errors.js";
import { durationSeconds, hostPort } from "../options.js";

export interface ControlPlaneCommandOptions {
  readonly listen: string;
  readonly adminTokenFile: string;
  readonly agentTokenFile: string;
  readonly dataFile?: string;
  readonly dataKeyFile?: string;
  readonly retention: string;
  readonly leaseTtl: string;
  readonly heartbeatInterval: string;
  readonly pollWait: string;
  readonly bundleTtl: string;
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

export async function controlPlane(opts: ControlPlaneCommandOptions): Promise<number> {
  const listen = hostPort("--listen", opts.listen);
  const retentionSeconds = durationSeconds("--retention", opts.retention);
  const adminToken = await token(opts.adminTokenFile, "--admin-token-file");
  const agentToken = await token(opts.agentTokenFile, "--agent-token-file");
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
  // Whatever stops the control plane: a signal (undefined), or a write to the data file that failed.
  let stop!: (failure: AgentError | undefined) => void;
  const stopped = new Promise<AgentError | undefined>((resolve) => {
    stop = resolve;
  });
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
      adminToken,
      agentToken,
      leaseTtlSeconds: durationSeconds("--lease-ttl", opts.leaseTtl),
      agentApi: {
        heartbeatIntervalSeconds: durationSeconds("--heartbeat-interval", opts.heartbeatInterval),
        pollWaitSeconds: durationSeconds("--poll-wait", opts.pollWait),
        bundleTtlSeconds: durationSeconds("--bundle-ttl", opts.bundleTtl),
      },
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
    const onSignal = (): void => {
      stop(undefined);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    const failure = await stopped;
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    await cp.close();
    if (failure) throw failure;
    return 0;
  } finally {
    storage?.close();
  }
}
