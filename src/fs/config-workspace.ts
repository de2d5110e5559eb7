/**
 * Unpacks a run's configuration archive into a fresh workspace directory the agent creates.
 * Checks the checksum the lease announced, bounds the gunzipped size, and writes only what
 * src/core/tar-archive.ts accepted: files created exclusively without following links, links
 * created last so nothing is ever written through one.
 */
import { createHash } from "node:crypto";
import { mkdir, rm, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { AgentError } from "../core/errors.js";
import { parseTar, type ArchiveLimits } from "../core/tar-archive.js";
import { makePrivateDir, openNewFile, realFs } from "./secure-fs.js";

const gunzipAsync = promisify(gunzip);

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = { maxBytes: 256 * 1024 * 1024, maxEntries: 100_000 };

export function verifyChecksum(archive: Uint8Array, expectedSha256: string): void {
  const actual = createHash("sha256").update(archive).digest("hex");
  if (actual !== expectedSha256) {
    throw new AgentError(
      "ARCHIVE_CHECKSUM_MISMATCH",
      `the configuration archive's SHA-256 is ${actual}, but the lease announced ${expectedSha256}; it was damaged or altered in transit. The run is refused`,
      { expected: expectedSha256, actual },
    );
  }
}

export async function extractConfiguration(
  archive: Uint8Array,
  dir: string,
  limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
): Promise<{ files: number; bytes: number }> {
  let tar: Buffer;
  try {
    // Headers and padding add at most ~1 KiB per entry on top of the file bytes.
    tar = await gunzipAsync(archive, { maxOutputLength: limits.maxBytes + limits.maxEntries * 1024 + 1024 * 1024 });
  } catch (error) {
    if (
      error instanceof RangeError ||
      (error instanceof Error && "code" in error && error.code === "ERR_BUFFER_TOO_LARGE")
    ) {
      throw new AgentError(
        "ARCHIVE_TOO_LARGE",
        `the configuration archive expands past ${limits.maxBytes} bytes; raise --max-config-bytes or slim the configuration`,
        { limit: limits.maxBytes },
      );
    }
    throw new AgentError(
      "ARCHIVE_INVALID",
      "the configuration archive is not valid gzip; the control plane must send a tar.gz of the configuration directory",
    );
  }
  const entries = parseTar(tar, limits);
  await makePrivateDir(realFs, dir, false);
  let bytes = 0;
  let files = 0;
  try {
    for (const entry of entries) {
      const target = join(dir, entry.path);
      if (entry.type === "dir") {
        await mkdir(target, { recursive: true, mode: 0o755 });
      } else if (entry.type === "file") {
        await mkdir(dirname(target), { recursive: true, mode: 0o755 });
        const handle = await openNewFile(realFs, target, (entry.mode & 0o755) | 0o600);
        try {
          await handle.writeFile(entry.data);
        } finally {
          await handle.close();
        }
        bytes += entry.data.byteLength;
        files++;
      }
    }
    for (const entry of entries) {
      if (entry.type !== "symlink") continue;
      const target = join(dir, entry.path);
      await mkdir(dirname(target), { recursive: true, mode: 0o755 });
      await symlink(entry.target, target);
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return { files, bytes };
}
