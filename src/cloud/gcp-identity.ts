/**
 * Which Google identity the agent will mint as, read without loading google-auth-library: for
 * the token cache's key and for refusals. From `GOOGLE_APPLICATION_CREDENTIALS`, when set, only
 * the fields that name an identity (`type`, `audience`, `service_account_impersonation_url`,
 * `client_email`), never a key or a token; otherwise the metadata server (GKE workload identity,
 * a GCE instance's service account).
 */
import { readFileSync } from "node:fs";

/** Files larger than this are no credential file (a real one is a few KiB). */
const MAX_CREDENTIAL_FILE_BYTES = 64 * 1024;

/** The credential file `GOOGLE_APPLICATION_CREDENTIALS` names, parsed, or why it cannot be used. */
export type GcpCredentialFile =
  | { readonly ok: true; readonly path: string; readonly json: Record<string, unknown> }
  | { readonly ok: false; readonly path: string; readonly problem: string };

export function gcpCredentialPath(env: NodeJS.ProcessEnv): string | undefined {
  const path = env["GOOGLE_APPLICATION_CREDENTIALS"];
  return path === undefined || path === "" ? undefined : path;
}

/** Reads and parses the file; a problem names the file and what is wrong, never its content. */
export function readGcpCredentialFile(path: string): GcpCredentialFile {
  let text: string;
  try {
    const buffer = readFileSync(path);
    if (buffer.length > MAX_CREDENTIAL_FILE_BYTES)
      return { ok: false, path, problem: `is larger than ${MAX_CREDENTIAL_FILE_BYTES} bytes` };
    text = buffer.toString("utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "an unknown error";
    return { ok: false, path, problem: `cannot be read (${code})` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the file, which may hold a private key.
    return { ok: false, path, problem: "is not JSON" };
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    return { ok: false, path, problem: "is not a JSON object" };
  return { ok: true, path, json: json as Record<string, unknown> };
}

function field(json: Record<string, unknown>, name: string): string | undefined {
  const value = json[name];
  return typeof value === "string" && value !== "" && value.length <= 512 ? value : undefined;
}

/** The service account an impersonation URL names (`.../serviceAccounts/EMAIL:generateAccessToken`). */
function impersonatedAccount(url: string): string | undefined {
  return /\/serviceAccounts\/([^/:]+):generateAccessToken$/.exec(url)?.[1];
}

/** Who a parsed credential file acts as. */
export function describeGcpCredentialFile(file: GcpCredentialFile): string {
  if (!file.ok) return `the credential file ${file.path} (GOOGLE_APPLICATION_CREDENTIALS), which ${file.problem}`;
  const type = field(file.json, "type") ?? "(no type)";
  const via = `(${file.path}, GOOGLE_APPLICATION_CREDENTIALS)`;
  switch (type) {
    case "external_account": {
      const audience = field(file.json, "audience") ?? "(no audience)";
      const impersonation = field(file.json, "service_account_impersonation_url");
      const account = impersonation === undefined ? undefined : impersonatedAccount(impersonation);
      return account !== undefined
        ? `service account ${account} through workload identity federation ${audience} ${via}`
        : `workload identity federation ${audience} ${via}`;
    }
    case "service_account":
      return `service account ${field(file.json, "client_email") ?? "(no client_email)"} (key file) ${via}`;
    case "impersonated_service_account": {
      const impersonation = field(file.json, "service_account_impersonation_url");
      const account = impersonation === undefined ? undefined : impersonatedAccount(impersonation);
      return `service account ${account ?? "(unnamed)"} (impersonated) ${via}`;
    }
    default:
      return `a ${type} credential ${via}`;
  }
}

export const METADATA_SERVER_IDENTITY = "the metadata server's default service account";

/** Who google-auth-library's default chain will act as, from the environment (and the file it names). */
export function gcpIdentity(env: NodeJS.ProcessEnv): string {
  const path = gcpCredentialPath(env);
  return path === undefined ? METADATA_SERVER_IDENTITY : describeGcpCredentialFile(readGcpCredentialFile(path));
}
