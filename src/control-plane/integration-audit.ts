/**
 * The rules for changing an integration that are about its password, and the audit entries a
 * change leaves; pure, so that admin-api.ts validates and then stores.
 *
 * A password belongs to a registry host and a user: a change of `registry_url` or `username`
 * without the password again would send the old password to the new host or for the new user,
 * so it is refused. Audit entries name what changed, with old and new values for the fields
 * that are not secret and only the fact of a change for the password.
 */

/** The fields of a stored integration these rules read (store.ts's Integration has them all). */
interface Integration {
  readonly name: string;
  readonly registry_url: string;
  readonly username: string;
  readonly password: string;
  readonly credential_helper: string | null;
  readonly cloud_auth?: Readonly<Record<string, string>> | null;
  readonly export_credentials: boolean;
}

/** An integration's fields after validation, as a PATCH would set them. */
export interface IntegrationChange {
  readonly name?: string | undefined;
  /** Normalized (the form that would be stored). */
  readonly registry_url?: string | undefined;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** A helper name, or null when the integration goes back to a username and password. */
  readonly credential_helper?: string | null | undefined;
  /** Validated wire form, or null when the integration goes back to a username and password. */
  readonly cloud_auth?: Readonly<Record<string, string>> | null | undefined;
  readonly export_credentials?: boolean | undefined;
}

type AuditType =
  | "integration_created"
  | "integration_deleted"
  | "integration_url_changed"
  | "integration_username_changed"
  | "integration_password_changed"
  | "integration_export_changed"
  | "integration_helper_changed"
  | "integration_cloud_auth_changed"
  | "integration_renamed";

/** One audit entry as the store keeps it; `from`/`to` never hold a password. */
export interface AuditEntry {
  readonly seq: number;
  readonly at: string;
  readonly type: AuditType;
  readonly integration_id: string;
  readonly integration_name: string;
  readonly remote_address: string | null;
  readonly from?: string | boolean | null;
  readonly to?: string | boolean | null;
}

export type AuditFacts = Omit<AuditEntry, "seq" | "at" | "integration_id" | "integration_name" | "remote_address">;

/** The fields whose change needs the password again, when the integration keeps (or gets) a password. */
export function fieldsNeedingPassword(before: Integration, change: IntegrationChange): ("registry_url" | "username")[] {
  if (change.password !== undefined || change.credential_helper !== undefined || change.cloud_auth !== undefined)
    return [];
  // A credential helper or cloud_auth integration holds no password; switching to a password gives one (checked elsewhere).
  if ((before.credential_helper !== null || (before.cloud_auth ?? null) !== null) && change.username === undefined)
    return [];
  const out: ("registry_url" | "username")[] = [];
  if (change.registry_url !== undefined && change.registry_url !== before.registry_url) out.push("registry_url");
  if (change.username !== undefined && change.username !== before.username) out.push("username");
  return out;
}

/** What a change does to the integration, one entry per kind of change; nothing when nothing changes. */
export function changeFacts(before: Integration, change: IntegrationChange): AuditFacts[] {
  const out: AuditFacts[] = [];
  const diff = <T extends string | boolean | null>(type: AuditType, from: T, to: T | undefined): void => {
    if (to !== undefined && to !== from) out.push({ type, from, to });
  };
  diff("integration_url_changed", before.registry_url, change.registry_url);
  diff("integration_username_changed", before.username || null, change.username);
  if (change.password !== undefined && change.password !== before.password)
    out.push({ type: "integration_password_changed" });
  diff("integration_helper_changed", before.credential_helper, change.credential_helper);
  const cloudText = (c: Readonly<Record<string, string>> | null | undefined): string | null | undefined =>
    c === undefined ? undefined : c === null ? null : JSON.stringify(c);
  diff("integration_cloud_auth_changed", cloudText(before.cloud_auth) ?? null, cloudText(change.cloud_auth));
  diff("integration_export_changed", before.export_credentials, change.export_credentials);
  diff("integration_renamed", before.name, change.name);
  return out;
}
