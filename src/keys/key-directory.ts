/**
 * A key directory (`--key file:DIR`): which of its files are keys, the one rule that orders them
 * (the newest is the key the control plane seals to), and adding a new key (`keygen --rotate`)
 * so that it is the newest by that rule.
 *
 * The rule is the status change time (ctime), then the name. Not the modification time: whoever
 * can write a file can give it any mtime (`touch -d 2035-01-01`), so a file planted with a
 * far-future date would stay the newest key through every rotation. Nobody can choose a ctime:
 * the kernel sets it to the current time whenever the file or its metadata changes. A planted
 * file is therefore the newest only until the next `keygen --rotate`. (Writing in the directory
 * at all takes the agent's user, or group or others where its mode lets them: see the warning
 * in key-source.ts.)
 */
import { constants } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";
import { createKeyFile } from "../fs/key-file.js";
import { removeFailedWrite, withLeftover, type FileSystem } from "../fs/secure-fs.js";

const KEY_FILE_NAME = /\.(key|pem)$/;

/** Whether a directory entry is a key file: `*.key` or `*.pem`, not hidden (`..data` and its kin). */
export function isKeyFileName(name: string): boolean {
  return !name.startsWith(".") && KEY_FILE_NAME.test(name);
}

/** A key file of a directory, where its contents are, and its place in the order. */
export interface KeyFileEntry {
  /** The entry's name in the directory. */
  readonly name: string;
  /** The file to read: the entry itself, or where its link leads (inside the directory). */
  readonly path: string;
  /** Status change time of that file, in nanoseconds. */
  readonly ctimeNs: bigint;
}

/** The ordering rule, oldest first and newest last: ctime, then name. Pure. */
export function compareKeyFiles(a: KeyFileEntry, b: KeyFileEntry): number {
  if (a.ctimeNs !== b.ctimeNs) return a.ctimeNs < b.ctimeNs ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * Where a key directory's symlink leads; undefined when it leads nowhere (a dangling link or a
 * loop). Any other failure (EACCES, EIO) is refused as such, not taken for a bad link.
 */
async function linkTarget(fs: FileSystem, path: string): Promise<string | undefined> {
  try {
    return await fs.realpath(path);
  } catch (error) {
    const code = errnoCode(error);
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return undefined;
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot follow the key link ${path} (${code ?? "error"}); check the key directory's owner and mode`,
      { path },
      { cause: error },
    );
  }
}

/** The key files of a directory, oldest first, newest last; links are followed only inside it. */
export async function listKeyFiles(fs: FileSystem, dir: string): Promise<KeyFileEntry[]> {
  const realDir = await fs.realpath(dir);
  const found: KeyFileEntry[] = [];
  for (const name of await fs.readdir(dir)) {
    if (!isKeyFileName(name)) continue;
    let path = join(dir, name);
    const st = await fs.lstat(path);
    if (st.isSymbolicLink()) {
      // Kubernetes Secret volumes expose each key as a link into ..data/ inside the volume;
      // follow such a link only when its target stays inside the directory.
      const target = await linkTarget(fs, path);
      if (target === undefined) {
        throw new AgentError(
          "KEY_FILE_SYMLINK",
          `${path} is a symbolic link that leads nowhere (its target is missing, or it loops); replace it with the key file, inside ${dir}`,
          { path },
        );
      }
      if (!target.startsWith(`${realDir}/`)) {
        throw new AgentError(
          "KEY_FILE_SYMLINK",
          `${path} is a symbolic link that leaves the key directory ${dir}; keep key files inside it`,
          { path },
        );
      }
      path = target;
    }
    found.push({ name, path, ctimeNs: (await fs.lstat(path, { bigint: true })).ctimeNs });
  }
  return found.sort(compareKeyFiles);
}

/**
 * Whether others than the directory's owner may add, rename or remove its entries: group or
 * others may write it, on a file system mounted read-write (a Kubernetes Secret volume is
 * mode 1777 but mounted read-only, so nobody can).
 */
export async function writableByOthers(fs: FileSystem, dir: string, mode: number): Promise<boolean> {
  if ((mode & 0o022) === 0) return false;
  try {
    await fs.access(dir, constants.W_OK);
  } catch (error) {
    return errnoCode(error) !== "EROFS";
  }
  return true;
}

/** A sortable, filesystem-safe name for a new key: millisecond time then a random tail. */
function rotatedName(now: Date): string {
  return `agent-${now.toISOString().replace(/[-:]/g, "")}-${randomBytes(3).toString("hex")}.key`;
}

/**
 * Writes a new key file into `dir` and checks that it is the newest by the ordering rule. When
 * it is not (another file has a later ctime: the clock went back, or a file was changed in the
 * same instant), the new file is removed and KEY_ROTATION_NOT_NEWEST names the file in the way.
 * Returns the new file's path.
 */
export async function addKeyFile(fs: FileSystem, dir: string, pem: string, now: Date): Promise<string> {
  const name = rotatedName(now);
  const path = join(dir, name);
  await createKeyFile(fs, path, pem);
  const newest = (await listKeyFiles(fs, dir)).at(-1);
  if (newest === undefined || newest.name === name) return path;
  const failure = new AgentError(
    "KEY_ROTATION_NOT_NEWEST",
    `the new key ${path} would not be the newest key: ${join(dir, newest.name)} sorts after it (key files are ordered by status change time, then name). If you did not put that file there, someone who can write ${dir} did: inspect it and remove it, then run keygen --rotate again. The new key was removed`,
    { path, newest: join(dir, newest.name) },
  );
  const cleanup = await removeFailedWrite(fs, path);
  if (cleanup !== undefined)
    throw withLeftover(failure, path, cleanup, `delete it (rm ${path}) before running keygen --rotate again`);
  throw failure;
}
