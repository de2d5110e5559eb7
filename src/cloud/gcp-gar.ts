/**
 * Google Artifact Registry (and Container Registry): a registry credential from the pool's own
 * Google identity. Loaded only when an entry asks for gcp (src/cloud/cloud-minter.ts imports this
 * module dynamically), with google-auth-library.
 *
 * The identity is one of two, never gcloud's own login files and never a `gcloud` subprocess:
 * - `GOOGLE_APPLICATION_CREDENTIALS` names a credential file: usually an external account
 *   (workload identity federation: a subject token from a file or URL exchanged at STS, then,
 *   when the file says so, a service account's token from IAM Credentials' generateAccessToken);
 * - otherwise the metadata server (GKE workload identity, a GCE instance's service account), found
 *   by the library's detection request and asked for `service-accounts/default/token`.
 * Both ask for the `cloud-platform` scope. The access token is written with the user
 * `oauth2accesstoken`; it expires when Google says (about an hour). The library honours its
 * documented overrides (`GCE_METADATA_HOST`; the file's `token_url` and
 * `service_account_impersonation_url`), which is how private endpoints, and the tests' local
 * stand-ins, are reached.
 *
 * Each mint asks Google anew (a new client): the token cache of src/core/cloud-token-cache.ts is
 * the only cache, so a token it calls stale is never handed back by the library's own cache.
 * No token reaches a log: the library's debug log (`GOOGLE_SDK_NODE_LOGGING`, which prints
 * whole token answers) makes this minter refuse, and a refusal is built from the answer's status
 * and Google's error code only, never from Google's free text nor the library's error object
 * (either may quote a token; its request holds a bearer token).
 */
import { Compute, GoogleAuth, gcpMetadata, type AuthClient } from "google-auth-library";
import { cloudAuthFailed, type CloudAuth, type CloudMinter, type MintedCredential } from "../core/cloud-auth.js";
import { AgentError } from "../core/errors.js";
import {
  describeGcpCredentialFile,
  gcpCredentialPath,
  METADATA_SERVER_IDENTITY,
  readGcpCredentialFile,
} from "./gcp-identity.js";
import { readTokenFile } from "./token-files.js";

export const GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform";

/** The user Artifact Registry takes an OAuth access token with. */
export const GAR_USERNAME = "oauth2accesstoken";

/** Google's access token lifetime, used when an answer carries no expiry. */
const ACCESS_TOKEN_LIFETIME_MS = 3_600_000;

const LOGGING_VARIABLE = "GOOGLE_SDK_NODE_LOGGING";

const ROLE_FIX = "grant it roles/artifactregistry.reader on the repositories";

interface Refused {
  readonly reason: string;
  readonly status: number | undefined;
  readonly permission: string | undefined;
}

/** A marker on this module's own errors, whose messages name files, never a secret. */
const OWN_ERROR = Symbol("gcp-gar own error");

/** Google's error codes are short words (`PERMISSION_DENIED`, `invalid_grant`); anything else is not shown. */
function errorCode(value: unknown): string | undefined {
  return typeof value === "string" && /^[A-Za-z_]{1,64}$/.test(value) ? value : undefined;
}

/**
 * What Google answered, from the HTTP status and Google's error code only: a Google API error
 * (`{"error": {"status": "PERMISSION_DENIED", "message": "Permission 'iam.serviceAccounts.getAccessToken' denied ..."}}`,
 * whose message gives the missing permission's name and nothing else), an OAuth error from STS
 * (`{"error": "invalid_grant", ...}`), or the metadata server's status. Never the answer's free
 * text nor the library's Error.message: either may quote a token (a subject token in STS's
 * error_description, a token in a metadata answer the library could not parse). Without an
 * answer: the error's class and code (`ECONNREFUSED`), or this module's own message.
 */
function refusedBy(error: unknown): Refused {
  const response = (error as { response?: { status?: unknown; data?: unknown } } | undefined)?.response;
  if (response !== undefined && typeof response.status === "number") {
    const status = response.status;
    const data = response.data;
    let code: string | undefined;
    let permission: string | undefined;
    if (typeof data === "object" && data !== null) {
      const body = data as { error?: unknown };
      if (typeof body.error === "object" && body.error !== null) {
        const apiError = body.error as { status?: unknown; message?: unknown };
        code = errorCode(apiError.status);
        if (typeof apiError.message === "string")
          permission = /Permission '([A-Za-z0-9.]+)' denied/.exec(apiError.message)?.[1];
      } else code = errorCode(body.error);
    }
    return { reason: `HTTP ${status}${code === undefined ? "" : ` ${code}`}`, status, permission };
  }
  if (typeof error === "object" && error !== null && OWN_ERROR in error && error instanceof Error)
    return { reason: error.message, status: undefined, permission: undefined };
  const name = error instanceof Error ? error.name : "an unexpected failure";
  const code = errorCode((error as { code?: unknown } | undefined)?.code);
  return {
    reason: `google-auth-library failed (${name}${code === undefined ? "" : ` ${code}`})`,
    status: undefined,
    permission: undefined,
  };
}

/** The client for the identity of the environment, and who it is; undefined when there is none. */
async function identityClient(env: NodeJS.ProcessEnv): Promise<{ client: AuthClient; identity: string } | undefined> {
  const path = gcpCredentialPath(env);
  if (path !== undefined) {
    const file = readGcpCredentialFile(path);
    const identity = describeGcpCredentialFile(file);
    if (!file.ok)
      throw Object.assign(new Error(`GOOGLE_APPLICATION_CREDENTIALS: ${identity}`), { identity, [OWN_ERROR]: true });
    // The parsed content, not the path: this module read it and reports its problems without quoting it.
    const client = await new GoogleAuth({ credentials: file.json, scopes: [GCP_SCOPE] }).getClient();
    return { client, identity };
  }
  if (!(await gcpMetadata.isAvailable())) {
    // The library keeps a failed detection for the life of the process: the next entry asks again.
    gcpMetadata.resetIsAvailableCache();
    return undefined;
  }
  return { client: new Compute({ scopes: [GCP_SCOPE] }), identity: METADATA_SERVER_IDENTITY };
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error("aborted"));
  return new Promise<T>((resolve, reject) => {
    const leave = (): void => {
      reject(new Error("aborted"));
    };
    signal.addEventListener("abort", leave, { once: true });
    promise
      .finally(() => {
        signal.removeEventListener("abort", leave);
      })
      .then(resolve, reject);
  });
}

/**
 * What a refusal is scrubbed of besides token-like text: the credential file's subject token (the
 * file its `credential_source` names) and a key file's private key.
 */
function credentialFileSecrets(path: string | undefined): (string | undefined)[] {
  if (path === undefined) return [];
  const file = readGcpCredentialFile(path);
  if (!file.ok) return [];
  const source = file.json["credential_source"];
  const subjectFile =
    typeof source === "object" && source !== null ? (source as Record<string, unknown>)["file"] : undefined;
  const privateKey = file.json["private_key"];
  return [
    typeof subjectFile === "string" ? readTokenFile(subjectFile) : undefined,
    typeof privateKey === "string" ? privateKey : undefined,
  ];
}

export class GcpGarMinter implements CloudMinter {
  async mint(auth: CloudAuth, registryHost: string, signal: AbortSignal): Promise<MintedCredential> {
    if (auth.provider !== "gcp") throw new AgentError("INTERNAL", `the gcp minter was given a ${auth.provider} entry`);
    const env = process.env;
    const path = gcpCredentialPath(env);
    let identity = path === undefined ? METADATA_SERVER_IDENTITY : `the credential file ${path}`;
    const secrets = credentialFileSecrets(path);
    const refuse = (refused: Refused, fix: string): AgentError =>
      cloudAuthFailed({
        provider: "gcp",
        identity,
        registry: registryHost,
        permission: refused.permission,
        reason: signal.aborted ? "Google did not answer within 30 s" : refused.reason,
        fix,
        secrets,
      });
    if ((env[LOGGING_VARIABLE] ?? "") !== "")
      throw refuse(
        {
          reason: `${LOGGING_VARIABLE} is set, and google-auth-library's debug log prints access tokens`,
          status: undefined,
          permission: undefined,
        },
        `unset ${LOGGING_VARIABLE} in the agent's environment`,
      );

    let found;
    try {
      found = await untilAborted(identityClient(env), signal);
    } catch (error) {
      const named = (error as { identity?: unknown }).identity;
      if (typeof named === "string") identity = named;
      throw refuse(
        refusedBy(error),
        path === undefined
          ? "check the metadata server (GCE_METADATA_HOST)"
          : "point GOOGLE_APPLICATION_CREDENTIALS at a readable credential file (gcloud iam workload-identity-pools create-cred-config writes one for workload identity federation)",
      );
    }
    if (found === undefined) {
      identity = "none found (no GOOGLE_APPLICATION_CREDENTIALS, and no metadata server answered)";
      throw refuse(
        { reason: "no Google identity in the agent's environment", status: undefined, permission: undefined },
        "give the agent a Google identity: GKE workload identity or a GCE service account (the metadata server), or GOOGLE_APPLICATION_CREDENTIALS naming an external-account file (workload identity federation)",
      );
    }
    identity = found.identity;

    let token: string | null | undefined;
    try {
      token = (await untilAborted(found.client.getAccessToken(), signal)).token;
    } catch (error) {
      const refused = refusedBy(error);
      throw refuse(
        refused,
        refused.permission !== undefined
          ? `allow ${refused.permission} to the federated principal on the service account (roles/iam.workloadIdentityUser), and ${ROLE_FIX}`
          : path === undefined && refused.status === 404
            ? `attach a service account: on GKE bind the Kubernetes service account to a Google service account (iam.gke.io/gcp-service-account) or grant the workload identity principal access; on GCE attach one to the instance; and ${ROLE_FIX}`
            : path === undefined && refused.status === 403
              ? `give the instance the cloud-platform access scope (${GCP_SCOPE}), and ${ROLE_FIX} to ${identity}`
              : path === undefined
                ? `check the metadata server's service account, and ${ROLE_FIX}`
                : "check the workload identity pool's provider (audience, attribute conditions) and the subject token the file names, or turn export off for this integration",
      );
    }
    if (typeof token === "string") secrets.push(token);
    if (typeof token !== "string" || token === "")
      throw refuse(
        { reason: "Google answered without an access token", status: undefined, permission: undefined },
        "check the identity's configuration",
      );
    const expiry = found.client.credentials.expiry_date;
    return {
      username: GAR_USERNAME,
      password: token,
      expiresAtMs: typeof expiry === "number" && expiry > 0 ? expiry : Date.now() + ACCESS_TOKEN_LIFETIME_MS,
      identity,
    };
  }
}
