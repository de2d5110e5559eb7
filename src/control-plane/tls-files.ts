/**
 * HTTPS for `oci-cred-agent control-plane`: the rule for plain HTTP (loopback only, unless TLS is
 * terminated in front and the operator says so), the certificate and key read from their files,
 * and their reload when the files change (a renewal by certbot or cert-manager), besides SIGHUP.
 */
import { unwatchFile, watchFile, type Stats } from "node:fs";
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import { AgentError, errnoCode } from "../core/errors.js";
import type { TlsPem } from "./server.js";

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

const LOOPBACK_HOST = /^(localhost|127\.\d+\.\d+\.\d+|::1)$/i;

/**
 * The control plane serves plain HTTP only on loopback, unless `behindProxy` (TLS is terminated
 * in front of it): agents' credentials and sealed bundles would otherwise cross the network in
 * clear.
 */
export function checkListenSecurity(host: string, tls: boolean, behindProxy: boolean): void {
  if (tls || behindProxy || LOOPBACK_HOST.test(host)) return;
  throw new AgentError(
    "CONTROL_PLANE_TLS_REQUIRED",
    `--listen ${host} is not a loopback address and no certificate was given: agents' credentials would cross the network in plain HTTP; give --tls-cert FILE and --tls-key FILE, or, if a proxy in front terminates TLS, --plain-http-behind-proxy`,
    { host },
  );
}

/** Both flags or neither. */
export function tlsFilesOf(cert: string | undefined, key: string | undefined): TlsFiles | undefined {
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined)
    throw new AgentError(
      "INVALID_ARGUMENT",
      `${cert === undefined ? "--tls-key" : "--tls-cert"} was given without ${cert === undefined ? "--tls-cert" : "--tls-key"}: HTTPS needs both the certificate chain (PEM) and its private key (PEM)`,
    );
  return { cert, key };
}

async function readPem(path: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new AgentError("INPUT_UNREADABLE", `cannot read ${flag} ${path} (${errnoCode(error) ?? "error"})`, { path });
  }
}

/** The certificate chain and key, checked to form a pair Node can serve. */
export async function readTlsFiles(files: TlsFiles): Promise<TlsPem> {
  const pem = { cert: await readPem(files.cert, "--tls-cert"), key: await readPem(files.key, "--tls-key") };
  try {
    createSecureContext(pem);
  } catch (error) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      `--tls-cert ${files.cert} and --tls-key ${files.key} are not a PEM certificate chain and its private key (${error instanceof Error ? error.message.slice(0, 200) : "error"}); give the chain with the server certificate first, and the key it was issued for`,
      { cert: files.cert, key: files.key },
    );
  }
  return pem;
}

/**
 * Calls `reload` when either file changes (polled every `intervalMs`: a renewal usually renames
 * a new file into place, which watchers of the old inode miss). Returns the function that stops.
 */
export function watchTlsFiles(files: TlsFiles, reload: () => void, intervalMs = 10_000): () => void {
  const onChange = (now: Stats, before: Stats): void => {
    if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino || now.size !== before.size) reload();
  };
  for (const path of [files.cert, files.key]) watchFile(path, { interval: intervalMs, persistent: false }, onChange);
  return () => {
    for (const path of [files.cert, files.key]) unwatchFile(path, onChange);
  };
}
