/**
 * The HTTP dispatcher for the control plane: Node's trust store (system CAs plus
 * NODE_EXTRA_CA_CERTS), plus --ca-file, and HTTPS_PROXY/HTTP_PROXY/NO_PROXY through undici's
 * EnvHttpProxyAgent.
 */
import { readFile } from "node:fs/promises";
import { rootCertificates } from "node:tls";
import { Agent, EnvHttpProxyAgent, type Dispatcher } from "undici";
import { AgentError, errnoCode } from "../core/errors.js";

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read ${what} ${path} (${errnoCode(error) ?? "error"})`, { path });
  }
}

/** Whether a proxy variable is set (then undici's EnvHttpProxyAgent applies it, with NO_PROXY). */
function proxyConfigured(env: NodeJS.ProcessEnv): boolean {
  return ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"].some((k) => (env[k] ?? "") !== "");
}

export async function controlPlaneDispatcher(env: NodeJS.ProcessEnv, caFile: string | undefined): Promise<Dispatcher> {
  let ca: string[] | undefined;
  if (caFile !== undefined) {
    // Passing `ca` replaces Node's default store, so rebuild it: system roots, NODE_EXTRA_CA_CERTS, --ca-file.
    ca = [...rootCertificates];
    const extra = env["NODE_EXTRA_CA_CERTS"];
    if (extra) ca.push(await readPem(extra, "NODE_EXTRA_CA_CERTS"));
    ca.push(await readPem(caFile, "--ca-file"));
  }
  const connect = ca === undefined ? {} : { connect: { ca } };
  const common = { keepAliveTimeout: 30_000, connections: 256 };
  return proxyConfigured(env) ? new EnvHttpProxyAgent({ ...common, ...connect }) : new Agent({ ...common, ...connect });
}

/**
 * The dispatcher for pre-flight checks against registries: Node's trust store (system CAs plus
 * NODE_EXTRA_CA_CERTS, as tofu's own trust follows the system's) and the proxy variables.
 */
export function registryDispatcher(env: NodeJS.ProcessEnv): Dispatcher {
  const common = { keepAliveTimeout: 4_000, connections: 16 };
  return proxyConfigured(env) ? new EnvHttpProxyAgent(common) : new Agent(common);
}
