/**
 * The hook's copy of a run's Docker config at `$HOME/.docker/config.json` (OpenTofu reads it
 * without any variable), and the marker beside it that says the hook wrote it: the SHA-256 of
 * each content the hook may have left there. A config.json whose digest the marker does not
 * list is someone else's (the user's own `docker login`, another tool): the hook never
 * overwrites it and never removes it. Pure: the I/O (src/hook/home-docker-config.ts) hands in
 * digests and the marker's text.
 */

export const HOME_MARKER_NAME = ".oci-cred-agent-hook.json";

export interface HomeMarker {
  readonly v: 1;
  /** The run the last copy was written for (for messages). */
  readonly run_id: string;
  /** Hex SHA-256 digests of the contents the hook may have left at config.json. */
  readonly sha256: readonly string[];
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
  if (
    m["v"] !== 1 ||
    typeof m["run_id"] !== "string" ||
    !Array.isArray(digests) ||
    digests.length > 2 ||
    !digests.every((d): d is string => typeof d === "string" && DIGEST.test(d))
  )
    return undefined;
  return { v: 1, run_id: m["run_id"], sha256: digests };
}

export function renderHomeMarker(marker: HomeMarker): string {
  return `${JSON.stringify(marker)}\n`;
}

/**
 * What stands at config.json: nothing, a regular file with this digest, or something the hook
 * never writes (a symbolic link, a directory).
 */
export type HomeEntry = { kind: "absent" } | { kind: "file"; sha256: string } | { kind: "other" };

function isOurs(entry: HomeEntry, marker: HomeMarker | undefined): boolean {
  return entry.kind === "file" && marker !== undefined && marker.sha256.includes(entry.sha256);
}

/** Before a write: `write` when config.json is absent or the hook's own copy, else `foreign`. */
export function decideHomeWrite(entry: HomeEntry, marker: HomeMarker | undefined): "write" | "foreign" {
  return entry.kind === "absent" || isOurs(entry, marker) ? "write" : "foreign";
}

/**
 * The marker to write before replacing config.json: it lists the new content and, while the
 * rename is pending, the copy it replaces, so that a crash between the two leaves a state the
 * next hook still recognises as its own.
 */
export function markerBeforeWrite(
  runId: string,
  newSha256: string,
  entry: HomeEntry,
  marker: HomeMarker | undefined,
): HomeMarker {
  const previous = isOurs(entry, marker) && entry.kind === "file" ? [entry.sha256] : [];
  return { v: 1, run_id: runId, sha256: [newSha256, ...previous.filter((d) => d !== newSha256)] };
}

/**
 * After a phase:
 * - `remove`: config.json is the hook's copy: remove it, then the marker;
 * - `gone`: nothing of the hook's is left at config.json: remove the marker if there is one;
 * - `changed`: the marker is there but config.json is not a copy the hook wrote (something
 *   rewrote it during the phase): leave both and warn, it may hold the run's credentials;
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
