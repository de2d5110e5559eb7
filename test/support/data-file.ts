/**
 * Helpers for tests of the control plane's data file (`--data-file`): a data key in a file of
 * its own, the raw bytes SQLite left on disk (the database and its -wal and -shm files), a
 * read-only look inside, and a configuration archive stored uncompressed (gzip level 0) so that
 * its text would show in the raw bytes if it were ever written unsealed.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { DatabaseSync, type SQLOutputValue } from "node:sqlite";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";

const execFileAsync = promisify(execFile);

/** Writes a new data key (base64 of 32 random bytes), mode 0600, and returns it. */
export async function writeDataKey(path: string): Promise<Buffer> {
  const key = randomBytes(32);
  await writeFile(path, `${key.toString("base64")}\n`, { mode: 0o600 });
  return key;
}

/** The database file and, where they exist, its -wal and -shm files, as SQLite left them. */
export async function rawDataFileBytes(path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      parts.push(await readFile(file));
    } catch {
      // not there
    }
  }
  return Buffer.concat(parts);
}

/** Rows of a query on a read-only connection (beside the control plane's own, as WAL allows). */
export function queryDataFile(path: string, sql: string, ...params: string[]): Record<string, SQLOutputValue>[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare(sql).all(...params);
  } finally {
    db.close();
  }
}

/** A tar.gz whose deflate blocks are stored, not compressed: the files' text is in its bytes. */
export async function storedTarGz(files: Record<string, string>): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), "oca-cfg-"));
  try {
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(dir, name)), { recursive: true });
      await writeFile(join(dir, name), content);
    }
    const { stdout } = await execFileAsync("tar", ["cf", "-", "-C", dir, "."], {
      encoding: "buffer",
      maxBuffer: 64 * 1024 * 1024,
    });
    return gzipSync(stdout, { level: 0 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
