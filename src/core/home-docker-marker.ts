/**
 * The hook's link at `$HOME/.docker/config.json` (OpenTofu reads that path without any
 * variable) to the sidecar's Docker config of the run, and the marker beside it that says the
 * hook wrote it: the target of each link the hook may have left there (and the SHA-256 of each
 * copy, which hooks before the link wrote). A config.json the marker does not list is someone
 * else's (the user's own `docker login`, another tool): the hook never overwrites it and never
 * removes it. Pure: the I/O (src/hook/home-docker-config.ts) hands in link targets, digests and
 * the marker's text.
 */

export const HOME_MARKER_NAME = ".oci-cred-agent-hook.json";

export interface HomeMarker {
  readonly v: 1;
  /** The run the last copy was written for (for messages). */
  readonly run_id: string;
  /** Hex SHA-256 digests of copies the hook may have left at config.json (hooks before the link). */
  readonly sha256: readonly string[];
  /** Targets of the links the hook may have left at config.json. */
  readonly links: readonly string[];
}

const DIGEST = /^[0-9a-f]{64}$/;

/** The marker, or undefined when the text is not one (then nothing is the hook's). */
export function parseHomeMarker(text: string): HomeMarker | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const m = value as Record<string, unknown>;
  const digests = m["sha256"];
  const links = m["links"] ?? [];
  if (
    m["v"] !== 1 ||
    typeof m["run_id"] !== "string" ||
    !Array.isArray(digests) ||
    digests.length > 2 ||
    !digests.every((d): d is string => typeof d === "string" && DIGEST.test(d)) ||
    !Array.isArray(links) ||
    links.length > 2 ||
    !links.every((l): l is string => typeof l === "string" && l.startsWith("/"))
  )
    return undefined;
  return { v: 1, run_id: m["run_id"], sha256: digests, links };
}

export function renderHomeMarker(marker: HomeMarker): string {
  return `${JSON.stringify(marker)}\n`;
}

/**
 * What stands at config.json: nothing, a symbolic link to this target, a regular file with this
 * digest, or something the hook never writes (a directory, a socket).
 */
export type HomeEntry =
  { kind: "absent" } | { kind: "link"; target: string } | { kind: "file"; sha256: string } | { kind: "other" };

function isOurs(entry: HomeEntry, marker: HomeMarker | undefined): boolean {
  if (marker === undefined) return false;
  if (entry.kind === "link") return marker.links.includes(entry.target);
  return entry.kind === "file" && marker.sha256.includes(entry.sha256);
}

/** Before a write: `write` when config.json is absent or the hook's own copy, else `foreign`. */
export function decideHomeWrite(entry: HomeEntry, marker: HomeMarker | undefined): "write" | "foreign" {
  return entry.kind === "absent" || isOurs(entry, marker) ? "write" : "foreign";
}

/**
 * The marker to write before replacing config.json: it lists the new link and, while the rename
 * is pending, the link or copy it replaces, so that a crash between the two leaves a state the
 * next hook still recognises as its own.
 */
export function markerBeforeWrite(
  runId: string,
  newTarget: string,
  entry: HomeEntry,
  marker: HomeMarker | undefined,
): HomeMarker {
  const ours = isOurs(entry, marker);
  return {
    v: 1,
    run_id: runId,
    sha256: ours && entry.kind === "file" ? [entry.sha256] : [],
    links: [newTarget, ...(ours && entry.kind === "link" && entry.target !== newTarget ? [entry.target] : [])],
  };
}

/** The marker once config.json is the new link. */
export function markerAfterWrite(runId: string, target: string): HomeMarker {
  return { v: 1, run_id: runId, sha256: [], links: [target] };
}

/**
 * After a phase:
 * - `remove`: config.json is the hook's link (or copy): remove it, then the marker;
 * - `gone`: nothing of the hook's is left at config.json: remove the marker if there is one;
 * - `changed`: the marker is there but config.json is not a link the hook wrote (a tool
 *   replaced it during the phase): leave both and warn, it may hold the run's credentials;
 * - `not-ours`: no marker, a config.json of someone else's: leave it, say nothing.
 */
export function decideHomeWipe(
  entry: HomeEntry,
  marker: HomeMarker | undefined,
): "remove" | "gone" | "changed" | "not-ours" {
  if (isOurs(entry, marker)) return "remove";
  if (entry.kind === "absent") return "gone";
  return marker === undefined ? "not-ours" : "changed";
}
