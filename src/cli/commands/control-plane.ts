import { readFile } from "node:fs/promises";
import { DataFile } from "../../control-plane/data-file.js";
import { connectionLimitsFor } from "../../control-plane/limits.js";
import { createControlPlane } from "../../control-plane/server.js";
import {
  checkListenSecurity,
  readTlsFiles,
  tlsFilesOf,
  watchTlsFiles,
  type TlsFiles,
} from "../../control-plane/tls-files.js";
import { AgentError, errnoCode, isAgentError } from "../../core/errors.js";
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
  // HTTPS and connection limits (docs/operations.md, TLS; docs/protocol.md, Limits).
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly plainHttpBehindProxy?: boolean;
  readonly maxConnections: string;
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
  const adminToken = await token(opts.adminTokenFile, "--admin-token-file");
  const agentToken = await token(opts.agentTokenFile, "--agent-token-file");
  if (adminToken === agentToken)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "the admin token and the agent token must differ; agent tokens must not reach the admin API",
    );
  const tlsFiles = tlsFilesOf(opts.tlsCert, opts.tlsKey);
  checkListenSecurity(listen.host, tlsFiles !== undefined, opts.plainHttpBehindProxy === true);
  const tls = tlsFiles === undefined ? undefined : await readTlsFiles(tlsFiles);
  const connections = connectionLimitsFor(wholeNumberAtLeast("--max-connections", opts.maxConnections, 8));
  const cp = await createControlPlane({
    ...(tls === undefined ? {} : { tls }),
    limits: { connections },
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
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  process.off("SIGHUP", onHangup);
  unwatch?.();
  await cp.close();
  return 0;
}
