/**
 * Parses a run's configuration archive (tar, after gunzip) into a validated list of entries.
 * Pure: bytes in, entries or an AgentError out; nothing is written here.
 *
 * Only regular files, directories, symlinks and hardlinks are accepted. A path must be relative
 * and must not leave the configuration directory ("..", absolute paths); a symlink must point
 * inside it; a hardlink must name an earlier regular file of the archive (it becomes a copy);
 * no entry may pass through a symlink of the archive; no path may appear twice. Sizes and entry
 * counts are bounded. Supports ustar, pax extended headers (path, linkpath, size) and GNU long
 * names.
 */
import { posix } from "node:path";
import { AgentError } from "./errors.js";

export type ArchiveEntry =
  | { readonly type: "file"; readonly path: string; readonly mode: number; readonly data: Uint8Array }
  | { readonly type: "dir"; readonly path: string; readonly mode: number }
  | { readonly type: "symlink"; readonly path: string; readonly target: string };

export interface ArchiveLimits {
  readonly maxBytes: number;
  readonly maxEntries: number;
}

const BLOCK = 512;

function field(buf: Uint8Array, start: number, length: number): string {
  const slice = buf.subarray(start, start + length);
  const nul = slice.indexOf(0);
  return Buffer.from(nul === -1 ? slice : slice.subarray(0, nul)).toString("utf8");
}

function octal(buf: Uint8Array, start: number, length: number, what: string): number {
  const first = buf[start] ?? 0;
  if (first & 0x80) {
    // GNU base-256 encoding for large numbers.
    let value = 0;
    for (let i = start + 1; i < start + length; i++) value = value * 256 + (buf[i] ?? 0);
    return value;
  }
  const text = field(buf, start, length).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(`the ${what} field of an entry is not octal`);
  return parseInt(text, 8);
}

function invalid(detail: string): AgentError {
  return new AgentError(
    "ARCHIVE_INVALID",
    `the configuration archive is not a valid tar archive (${detail}); the control plane must send a tar.gz of the configuration directory`,
  );
}

function checksumOk(header: Uint8Array): boolean {
  const stored = octal(header, 148, 8, "checksum");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (header[i] ?? 0);
  return sum === stored;
}

function parsePax(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  const text = Buffer.from(data).toString("utf8");
  let i = 0;
  while (i < text.length) {
    const space = text.indexOf(" ", i);
    if (space === -1) break;
    const len = Number(text.slice(i, space));
    if (!Number.isInteger(len) || len <= 0) throw invalid("malformed pax header");
    const record = text.slice(space + 1, i + len - 1);
    const eq = record.indexOf("=");
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    i += len;
  }
  return out;
}

/** Normalizes an entry path; refuses absolute paths, "..", empty names and control characters. */
function safeRelativePath(raw: string): string {
  const unsafe = (why: string): AgentError =>
    new AgentError(
      "ARCHIVE_UNSAFE_PATH",
      `archive entry ${JSON.stringify(raw.slice(0, 200))} ${why}; the configuration archive must hold only paths inside its directory`,
      {
        entry: raw.slice(0, 200),
      },
    );
  if (raw.startsWith("/")) throw unsafe("is an absolute path");
  for (const ch of raw) if (ch.charCodeAt(0) < 0x20) throw unsafe("contains a control character");
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.some((p) => p === "..")) throw unsafe("contains '..'");
  return parts.join("/");
}

export function parseTar(tar: Uint8Array, limits: ArchiveLimits): ArchiveEntry[] {
  const entries: ArchiveEntry[] = [];
  const seen = new Set<string>();
  const files = new Map<string, { data: Uint8Array; mode: number }>();
  const symlinks = new Set<string>();
  const symlinkTargets = new Map<string, string>();
  /** Directories that exist because entries lie beneath them. */
  const implicitDirs = new Set<string>();
  let total = 0;
  let offset = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;

  while (offset + BLOCK <= tar.byteLength) {
    const header = tar.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break;
    if (!checksumOk(header)) throw invalid(`header checksum mismatch at byte ${offset}`);
    const type = String.fromCharCode(header[156] ?? 0);
    const size = pax.has("size") ? Number(pax.get("size")) : octal(header, 124, 12, "size");
    if (!Number.isSafeInteger(size) || size < 0) throw invalid("bad entry size");
    const dataStart = offset + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > tar.byteLength) throw invalid("truncated entry");
    const data = tar.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;

    if (type === "x") {
      pax = parsePax(data);
      continue;
    }
    if (type === "g") continue;
    if (type === "L") {
      longName = field(data, 0, data.byteLength);
      continue;
    }
    if (type === "K") {
      longLink = field(data, 0, data.byteLength);
      continue;
    }

    const prefix = field(header, 345, 155);
    const headerName =
      prefix !== "" && field(header, 257, 5) === "ustar" ? `${prefix}/${field(header, 0, 100)}` : field(header, 0, 100);
    const rawName = pax.get("path") ?? longName ?? headerName;
    const rawLink = pax.get("linkpath") ?? longLink ?? field(header, 157, 100);
    pax = new Map();
    longName = undefined;
    longLink = undefined;

    const path = safeRelativePath(rawName);
    if (path === "") continue; // the archive's own root ("./")
    if (entries.length >= limits.maxEntries) {
      throw new AgentError(
        "ARCHIVE_TOO_LARGE",
        `the configuration archive has more than ${limits.maxEntries} entries, a fixed limit no setting raises; send only the configuration itself (leave out .terraform/, .git/ and other generated files), or split it into smaller configurations`,
        { limit: limits.maxEntries },
      );
    }
    if (seen.has(path))
      throw new AgentError(
        "ARCHIVE_UNSAFE_PATH",
        `archive entry ${JSON.stringify(path)} appears twice; refusing to let one entry replace another`,
        { entry: path },
      );
    const parents = path.split("/");
    for (let i = 1; i < parents.length; i++) {
      const parent = parents.slice(0, i).join("/");
      if (symlinks.has(parent)) {
        throw new AgentError(
          "ARCHIVE_UNSAFE_LINK",
          `archive entry ${JSON.stringify(path)} passes through the symlink ${JSON.stringify(parent)}; refusing to write through links`,
          { entry: path },
        );
      }
      if (files.has(parent)) {
        throw new AgentError(
          "ARCHIVE_UNSAFE_PATH",
          `archive entry ${JSON.stringify(path)} lies beneath ${JSON.stringify(parent)}, which the archive holds as a file`,
          { entry: path },
        );
      }
      implicitDirs.add(parent);
    }
    if (implicitDirs.has(path) && type !== "5") {
      throw new AgentError(
        "ARCHIVE_UNSAFE_PATH",
        `archive entry ${JSON.stringify(path)} is not a directory, but earlier entries lie beneath it; refusing to let one entry replace another`,
        { entry: path },
      );
    }
    seen.add(path);
    const mode = octal(header, 100, 8, "mode") & 0o777;

    if (type === "0" || type === "\0" || type === "7") {
      total += size;
      if (total > limits.maxBytes) {
        throw new AgentError(
          "ARCHIVE_TOO_LARGE",
          `the configuration archive expands past ${limits.maxBytes} bytes; raise --max-config-bytes (max_config_bytes in the config file), or leave .terraform/, .git/ and other generated files out of the configuration`,
          { limit: limits.maxBytes },
        );
      }
      files.set(path, { data, mode });
      entries.push({ type: "file", path, mode, data });
    } else if (type === "5") {
      entries.push({ type: "dir", path, mode });
    } else if (type === "2") {
      if (rawLink.startsWith("/")) {
        throw new AgentError(
          "ARCHIVE_UNSAFE_LINK",
          `symlink ${JSON.stringify(path)} points to the absolute path ${JSON.stringify(rawLink.slice(0, 200))}; links must stay inside the configuration`,
          { entry: path },
        );
      }
      const resolved = posix.normalize(posix.join(posix.dirname(path), rawLink));
      if (resolved === ".." || resolved.startsWith("../")) {
        throw new AgentError(
          "ARCHIVE_UNSAFE_LINK",
          `symlink ${JSON.stringify(path)} points outside the configuration directory (${JSON.stringify(rawLink.slice(0, 200))})`,
          { entry: path },
        );
      }
      symlinks.add(path);
      symlinkTargets.set(path, rawLink);
      entries.push({ type: "symlink", path, target: rawLink });
    } else if (type === "1") {
      const target = safeRelativePath(rawLink);
      const source = files.get(target);
      if (source === undefined) {
        throw new AgentError(
          "ARCHIVE_UNSAFE_LINK",
          `hardlink ${JSON.stringify(path)} names ${JSON.stringify(rawLink.slice(0, 200))}, which is not an earlier file of the archive`,
          { entry: path },
        );
      }
      total += source.data.byteLength;
      if (total > limits.maxBytes) {
        throw new AgentError(
          "ARCHIVE_TOO_LARGE",
          `the configuration archive expands past ${limits.maxBytes} bytes; raise --max-config-bytes (max_config_bytes in the config file), or leave .terraform/, .git/ and other generated files out of the configuration`,
          { limit: limits.maxBytes },
        );
      }
      files.set(path, source);
      entries.push({ type: "file", path, mode: source.mode, data: source.data });
    } else {
      const kinds: Record<string, string> = { "3": "character device", "4": "block device", "6": "FIFO" };
      throw new AgentError(
        "ARCHIVE_ENTRY_UNSUPPORTED",
        `archive entry ${JSON.stringify(path)} is a ${kinds[type] ?? `type '${type}' entry`}; a configuration holds only files, directories and links`,
        { entry: path },
      );
    }
  }
  // Each target was checked on its own above; resolved the way the kernel does, through the
  // archive's other symlinks (in any order), none may leave the directory or loop.
  for (const [path, target] of symlinkTargets) {
    const problem = resolveThroughLinks(path, symlinkTargets);
    if (problem !== undefined) {
      throw new AgentError(
        "ARCHIVE_UNSAFE_LINK",
        `symlink ${JSON.stringify(path)} (${JSON.stringify(target.slice(0, 200))}) ${problem === "loop" ? "is part of a symlink loop" : "points outside the configuration directory through another symlink of the archive"}`,
        { entry: path },
      );
    }
  }
  return entries;
}

const MAX_LINK_HOPS = 40;

/** Walks a symlink's target component by component, expanding the archive's symlinks as it meets them. */
function resolveThroughLinks(linkPath: string, targets: ReadonlyMap<string, string>): "outside" | "loop" | undefined {
  const stack = linkPath.split("/").slice(0, -1);
  let rest = (targets.get(linkPath) ?? "").split("/");
  let hops = 0;
  while (rest.length > 0) {
    const component = rest.shift() ?? "";
    if (component === "" || component === ".") continue;
    if (component === "..") {
      if (stack.length === 0) return "outside";
      stack.pop();
      continue;
    }
    stack.push(component);
    const next = targets.get(stack.join("/"));
    if (next !== undefined) {
      if (++hops > MAX_LINK_HOPS) return "loop";
      if (next.startsWith("/")) return "outside";
      stack.pop();
      rest = [...next.split("/"), ...rest];
    }
  }
  return undefined;
}
