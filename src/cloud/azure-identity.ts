/**
 * Which Entra ID identity @azure/identity will use for an azure entry, read from the environment
 * (and the entry's own tenant_id/client_id, which override it) without loading the SDK: for the
 * token cache's key, for refusals, and to pick the credential. Never a secret (client and tenant
 * ids are identifiers Entra itself prints in its errors; the federated token file is never read
 * here).
 */

/** How the agent authenticates to Entra ID, and as whom. */
export type AzureIdentity =
  | {
      /** AKS workload identity: a federated service-account token exchanged for an Entra token. */
      readonly kind: "workload";
      readonly tenantId: string | undefined;
      readonly clientId: string | undefined;
      readonly tokenFile: string;
    }
  | {
      /** The VM's, node pool's or App Service's managed identity: system-assigned unless a client id is named. */
      readonly kind: "managed";
      readonly tenantId: string | undefined;
      readonly clientId: string | undefined;
    };

function set(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

/** Workload identity when AZURE_FEDERATED_TOKEN_FILE is set (as the AKS webhook sets it), a managed identity otherwise. */
export function azureIdentityOf(
  env: NodeJS.ProcessEnv,
  entry: { readonly tenantId: string | undefined; readonly clientId: string | undefined },
): AzureIdentity {
  const tenantId = entry.tenantId ?? set(env["AZURE_TENANT_ID"]);
  const clientId = entry.clientId ?? set(env["AZURE_CLIENT_ID"]);
  const tokenFile = set(env["AZURE_FEDERATED_TOKEN_FILE"]);
  return tokenFile === undefined
    ? { kind: "managed", tenantId, clientId }
    : { kind: "workload", tenantId, clientId, tokenFile };
}

/** The identity as text: `workload identity client C in tenant T`, `managed identity client C`, ... */
export function describeAzureIdentity(identity: AzureIdentity): string {
  const tenant = identity.tenantId === undefined ? "" : ` in tenant ${identity.tenantId}`;
  if (identity.kind === "workload")
    return `workload identity client ${identity.clientId ?? "(no client id)"}${identity.tenantId === undefined ? " (no tenant id)" : tenant}`;
  return identity.clientId === undefined
    ? `the system-assigned managed identity${tenant}`
    : `managed identity client ${identity.clientId}${tenant}`;
}

/** For the cloud minter's cache key: the environment's identity, before an entry's overrides. */
export function azureIdentity(env: NodeJS.ProcessEnv): string {
  return describeAzureIdentity(azureIdentityOf(env, { tenantId: undefined, clientId: undefined }));
}
