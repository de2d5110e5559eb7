import { readFile } from "node:fs/promises";
import { DataFile } from "../../control-plane/data-file.js";
import { createControlPlane } from "../../control-plane/server.js";
import { AgentError, errnoCode } from "../../core/errors.js";
import { durationSeconds, hostPort } from "../options.js";

export interface ControlPlaneCommandOptions {
  readonly listen: string;
  readonly adminTokenFile: string;
  readonly agentTokenFile: string;
  readonly dataFile?: string;
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
  const adminToken = await token(opts.adminTokenFile, "--admin-token-file");
  const agentToken = await token(opts.agentTokenFile, "--agent-token-file");
  if (adminToken === agentToken)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "the admin token and the agent token must differ; agent tokens must not reach the admin API",
    );
  const cp = await createControlPlane({
    adminToken,
    agentToken,
    leaseTtlSeconds: durationSeconds("--lease-ttl", opts.leaseTtl),
    agentApi: {
      heartbeatIntervalSeconds: durationSeconds("--heartbeat-interval", opts.heartbeatInterval),
      pollWaitSeconds: durationSeconds("--poll-wait", opts.pollWait),
      bundleTtlSeconds: durationSeconds("--bundle-ttl", opts.bundleTtl),
    },
    ...(opts.dataFile === undefined ? {} : { dataFile: await DataFile.open(opts.dataFile) }),
    onError: (error) => {
      process.stderr.write(
        `oci-cred-agent control-plane: internal error: ${error instanceof Error ? error.name : "error"}\n`,
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
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  await cp.close();
  return 0;
}
