/**
 * One credential set per registry, chosen deterministically. Pure.
 *
 * Rule (the platform's, and the reference control plane applies the same one): where several
 * entries target one registry, the latest `updated_at` wins (a missing one counts as oldest);
 * a tie goes to the smallest `id` (code-unit order). Every entry not used is reported with its
 * id, name, a stable code and a reason, never its secret.
 */
import type { ExportedCredential, ParsedExport } from "./export-payload.js";
import { normalizeRegistryUrl, type EntryRefusalCode, type RegistryTarget } from "./registry-address.js";

export interface SelectedCredential {
  readonly target: RegistryTarget;
  readonly entry: ExportedCredential;
}

export interface IgnoredEntry {
  readonly integration_id: string | null;
  readonly integration_name: string | null;
  readonly code: EntryRefusalCode;
  readonly reason: string;
}

export interface CredentialSelection {
  /** Sorted by registry so that rendered files are byte-for-byte reproducible. */
  readonly selected: readonly SelectedCredential[];
  readonly ignored: readonly IgnoredEntry[];
}

/** True when `a` should be used rather than `b` for the same registry. */
export function preferOver(a: ExportedCredential, b: ExportedCredential): boolean {
  const ta = a.updatedAtMs ?? Number.NEGATIVE_INFINITY;
  const tb = b.updatedAtMs ?? Number.NEGATIVE_INFINITY;
  if (ta !== tb) return ta > tb;
  return a.id < b.id;
}

function winnerReason(winner: ExportedCredential, loser: ExportedCredential): string {
  const ta = winner.updatedAtMs ?? Number.NEGATIVE_INFINITY;
  const tb = loser.updatedAtMs ?? Number.NEGATIVE_INFINITY;
  return ta !== tb ? "it was updated more recently" : "both have the same updated_at and its id sorts first";
}

export function selectCredentials(parsed: ParsedExport): CredentialSelection {
  const ignored: IgnoredEntry[] = parsed.invalid.map((bad) => ({
    integration_id: bad.id ?? null,
    integration_name: bad.name ?? null,
    code: "ENTRY_INVALID",
    reason: `registries[${bad.index}] is malformed: ${bad.problems.join("; ")}`,
  }));

  const byRegistry = new Map<string, { target: RegistryTarget; entries: ExportedCredential[] }>();
  for (const entry of parsed.entries) {
    const normalized = normalizeRegistryUrl(entry.url);
    if (!normalized.ok) {
      ignored.push({
        integration_id: entry.id,
        integration_name: entry.name ?? null,
        code: normalized.code,
        reason: normalized.reason,
      });
      continue;
    }
    if (entry.credentialHelper !== undefined && normalized.target.path !== undefined) {
      ignored.push({
        integration_id: entry.id,
        integration_name: entry.name ?? null,
        code: "ENTRY_INVALID",
        reason: `credential helpers serve a whole registry host (credHelpers is keyed by host); use the bare endpoint https://${normalized.target.hostKey} for docker-credential-${entry.credentialHelper}`,
      });
      continue;
    }
    const group = byRegistry.get(normalized.target.registry);
    if (group) group.entries.push(entry);
    else byRegistry.set(normalized.target.registry, { target: normalized.target, entries: [entry] });
  }

  const selected: SelectedCredential[] = [];
  for (const { target, entries } of byRegistry.values()) {
    let winner = entries[0];
    if (winner === undefined) continue;
    for (const candidate of entries) if (preferOver(candidate, winner)) winner = candidate;
    selected.push({ target, entry: winner });
    for (const loser of entries) {
      if (loser === winner) continue;
      ignored.push({
        integration_id: loser.id,
        integration_name: loser.name ?? null,
        code: "DUPLICATE_REGISTRY",
        reason: `${target.host} is served by integration ${winner.id}${winner.name === undefined ? "" : ` (${winner.name})`} because ${winnerReason(winner, loser)}; one credential set per registry`,
      });
    }
  }
  selected.sort((a, b) => (a.target.registry < b.target.registry ? -1 : a.target.registry > b.target.registry ? 1 : 0));
  return { selected, ignored };
}
