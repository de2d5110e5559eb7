/**
 * The environment variables through which the clouds' SDKs and command-line tools take an
 * identity: the pool's own, when the agent holds one to mint registry credentials from
 * (`cloud_auth`). A run's code is hostile; by default none of these reach it (`run_cloud_env`,
 * docs/architecture.md "The pool's cloud identity"). Pure.
 *
 * The list follows each SDK's documented credential sources (and what the installed SDKs read):
 * - AWS (SDK for JavaScript v3 default chain, the AWS CLI): static keys, profiles and their
 *   files, web identity (IRSA), the container credential endpoints (ECS, EKS Pod Identity), the
 *   login cache, bearer tokens, the instance metadata endpoint override;
 * - Azure (`@azure/identity`, `az`): client secret, certificate, user and password, workload
 *   identity (the AKS webhook's `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`),
 *   the managed identity endpoints (App Service, Arc, Service Fabric, Cloud Shell, pod identity),
 *   the Azure CLI's configuration directory (its token cache);
 * - Google Cloud (`google-auth-library`, `gcloud`): the credential file, the mTLS certificate
 *   configuration, the metadata server's address overrides, gcloud's configuration directory
 *   (its credential database), account and named configuration, and every `CLOUDSDK_AUTH_*`
 *   property (access token file, credential file override, impersonation).
 *
 * Settings that grant nothing stay: regions, endpoints of services (`AWS_ENDPOINT_URL_*`),
 * `AZURE_AUTHORITY_HOST`, project ids, trust and proxy settings (`AWS_CA_BUNDLE`,
 * `CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE`, `CLOUDSDK_PROXY_*`), switches that turn a source off
 * (`AWS_EC2_METADATA_DISABLED`). A tofu provider's own variables (`ARM_*`, `GOOGLE_CREDENTIALS`)
 * are read by no SDK the agent uses: they are not the pool's identity, and pass on as the
 * operator put them.
 */

/** Exact names. */
const NAMES: ReadonlySet<string> = new Set([
  // AWS
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_SECURITY_TOKEN",
  "AWS_CREDENTIAL_EXPIRATION",
  "AWS_CREDENTIAL_SCOPE",
  "AWS_ACCOUNT_ID",
  "AWS_PROFILE",
  "AWS_DEFAULT_PROFILE",
  "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE",
  "AWS_ROLE_ARN",
  "AWS_ROLE_SESSION_NAME",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_LOGIN_CACHE_DIRECTORY",
  "AWS_EC2_METADATA_SERVICE_ENDPOINT",
  // Azure
  "AZURE_CLIENT_ID",
  "AZURE_TENANT_ID",
  "AZURE_CLIENT_SECRET",
  "AZURE_CLIENT_CERTIFICATE_PATH",
  "AZURE_CLIENT_CERTIFICATE_PASSWORD",
  "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
  "AZURE_USERNAME",
  "AZURE_PASSWORD",
  "AZURE_FEDERATED_TOKEN_FILE",
  "AZURE_POD_IDENTITY_AUTHORITY_HOST",
  "AZURE_CONFIG_DIR",
  "IDENTITY_ENDPOINT",
  "IDENTITY_HEADER",
  "IDENTITY_SERVER_THUMBPRINT",
  "IMDS_ENDPOINT",
  "MSI_ENDPOINT",
  "MSI_SECRET",
  // Google Cloud
  "GOOGLE_APPLICATION_CREDENTIALS",
  "GOOGLE_API_CERTIFICATE_CONFIG",
  "GCE_METADATA_HOST",
  "GCE_METADATA_IP",
  // gcloud: its configuration directory (the credential database), the account and named
  // configuration it picks there.
  "CLOUDSDK_CONFIG",
  "CLOUDSDK_CORE_ACCOUNT",
  "CLOUDSDK_ACTIVE_CONFIG_NAME",
]);

/** Prefixes: every name that starts with one. */
const PREFIXES: readonly string[] = [
  // ECS and EKS Pod Identity: the endpoint and its authorization token (or token file).
  "AWS_CONTAINER_",
  // Bearer tokens per service (AWS_BEARER_TOKEN_BEDROCK).
  "AWS_BEARER_TOKEN_",
  // gcloud's auth properties (access token file, credential file override, impersonation).
  "CLOUDSDK_AUTH_",
];

/** Whether `name` is one of the variables through which a cloud SDK or CLI takes an identity. */
export function isCloudIdentityVariable(name: string): boolean {
  return NAMES.has(name) || PREFIXES.some((p) => name.startsWith(p));
}

/**
 * The variables among them that name a file or directory holding an identity (a key, a token,
 * a profile, a token cache): the sandbox masks these paths when the system directories it shows
 * would otherwise show them.
 */
export const CLOUD_IDENTITY_PATH_VARIABLES: readonly string[] = [
  "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
  "AWS_LOGIN_CACHE_DIRECTORY",
  "AZURE_FEDERATED_TOKEN_FILE",
  "AZURE_CLIENT_CERTIFICATE_PATH",
  "AZURE_CONFIG_DIR",
  "GOOGLE_APPLICATION_CREDENTIALS",
  "GOOGLE_API_CERTIFICATE_CONFIG",
  "CLOUDSDK_CONFIG",
];

/** The same tools' default places under HOME, when no variable names another. */
const HOME_IDENTITY_DIRS: readonly string[] = [".aws", ".azure", ".config/gcloud"];

/**
 * The absolute paths of the identity files and directories `env` names (and the defaults under
 * its HOME): what a run must not read when the pool's identity is not passed to it. Pure.
 */
export function cloudIdentityPaths(env: Readonly<Record<string, string | undefined>>): string[] {
  const named = CLOUD_IDENTITY_PATH_VARIABLES.map((v) => env[v]);
  const home = env["HOME"];
  const defaults =
    home?.startsWith("/") === true ? HOME_IDENTITY_DIRS.map((d) => `${home.replace(/\/+$/, "")}/${d}`) : [];
  return [...new Set([...named, ...defaults].filter((p): p is string => p?.startsWith("/") === true))];
}
