/**
 * File-system primitives for files that hold secrets: exclusive creation without following
 * symlinks, mode 0600/0700, write to a temporary name, fsync, rename, fsync the directory.
 *
 * Node has no openat(2): O_NOFOLLOW guards only the last path component. The callers therefore
 * write only inside directories the agent itself created and verified (owner, type, mode), and
 * check each path with lstat before use.
 *
 * The operations go through a `FileSystem` object so that tests can inject faults (ENOSPC, EIO)
 * at exactly this edge; production passes node:fs/promises.
 */
import { constants, type Stats } from "node:fs";
import * as nodeFs from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";

export type FileSystem = Pick<
  typeof nodeFs,
  | "mkdir"
  | "lstat"
  | "open"
  | "rename"
  | "unlink"
  | "rmdir"
  | "readdir"
  | "chmod"
  | "stat"
  | "readFile"
  | "realpath"
  | "access"
>;

export const realFs: FileSystem = nodeFs;

export const SECRET_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

export function currentUid(): number {
  return process.getuid?.() ?? -1;
}

export async function lstatIfExists(fs: FileSystem, path: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw error;
  }
}

/** Temporary names the agent uses beside a file it writes; wipe recognizes and removes them. */
export const TEMP_SUFFIX = /\.tmp-[0-9a-f]{16}$/;

export function tempNameFor(name: string): string {
  return `.${name}.tmp-${randomBytes(8).toString("hex")}`;
}

export function isTempNameFor(entry: string, name: string): boolean {
  return entry.startsWith(`.${name}.tmp-`) && TEMP_SUFFIX.test(entry);
}

/**
 * Creates `path` and opens it for writing: a new file only (O_CREAT|O_EXCL: never one that is
 * there already), never through a symbolic link (O_NOFOLLOW), mode 0600 unless given (the
 * umask applies). Anything already at `path` fails it: see isAlreadyThere.
 */
export function openNewFile(
  fs: Pick<FileSystem, "open">,
  path: string,
  mode: number = SECRET_FILE_MODE,
): Promise<nodeFs.FileHandle> {
  return fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
}

/** Whether openNewFile failed because something is at the path already: a file, a directory, or a symbolic link (even a dangling one). */
export function isAlreadyThere(error: unknown): boolean {
  const code = errnoCode(error);
  return code === "EEXIST" || code === "ELOOP";
}

async function fsyncDir(fs: FileSystem, dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function writeFailed(path: string, error: unknown): AgentError {
  const code = errnoCode(error) ?? "unknown error";
  const hint =
    code === "ENOSPC" || code === "EDQUOT"
      ? "the file system is full; free space (or enlarge the tmpfs) under the run directory"
      : "check the run directory's file system and permissions";
  return new AgentError(
    "RUN_DIR_WRITE_FAILED",
    `writing ${path} failed (${code}); ${hint}`,
    { path, errno: code },
    { cause: error },
  );
}

/**
 * Removes a file the agent created when the write that followed failed. Resolves with undefined
 * once the file is gone, else with why it is not (its errno): the caller must not let that
 * leftover vanish, see `withLeftover`.
 */
export async function removeFailedWrite(fs: FileSystem, path: string): Promise<string | undefined> {
  try {
    await fs.unlink(path);
    return undefined;
  } catch (error) {
    const code = errnoCode(error);
    return code === "ENOENT" ? undefined : (code ?? "unknown error");
  }
}

function describeCleanupFailure(error: unknown): string {
  if (typeof error === "string") return error;
  if (isAgentError(error)) {
    const errno = errnoCode(error.cause);
    return errno === undefined ? error.code : `${error.code}, ${errno}`;
  }
  return errnoCode(error) ?? "unknown error";
}

/**
 * The failure of a write whose cleanup failed too. The write's failure stays the error (same
 * code, its message first, itself as the cause); the message goes on to name the leftover and
 * what to do about it, and details gain `leftover` (the path) and `cleanup_error` (why it was
 * not removed: an errno, or the code of the wipe that refused).
 */
export function withLeftover(
  failure: AgentError,
  leftover: string,
  cleanupError: unknown,
  whatToDo: string,
): AgentError {
  const why = describeCleanupFailure(cleanupError);
  return new AgentError(
    failure.code,
    `${failure.message}. Removing ${leftover} afterwards failed too (${why}): ${whatToDo}`,
    { ...failure.details, leftover, cleanup_error: why },
    { cause: failure },
  );
}

/**
 * Writes `data` to dir/name: a fresh temporary file (O_CREAT|O_EXCL|O_NOFOLLOW, 0600), fsync,
 * then rename over nothing (anything already at dir/name is refused, except, with `replaceOwnFile`,
 * a regular file of the agent's own), then fsync the directory.
 * On any failure the temporary file is removed; when that fails too, the error names it.
 */
export async function writeSecretFileAtomic(
  fs: FileSystem,
  dir: string,
  name: string,
  data: string | Uint8Array,
  options: { readonly replaceOwnFile?: boolean } = {},
): Promise<void> {
  const finalPath = join(dir, name);
  const tempPath = join(dir, tempNameFor(name));
  let created = false;
  try {
    const handle = await openNewFile(fs, tempPath);
    created = true;
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const existing = await lstatIfExists(fs, finalPath);
    // With replaceOwnFile, a regular file of the agent's own is replaced in one rename (a
    // renewed credential); anything else there is still refused.
    const replaceable = options.replaceOwnFile === true && existing?.isFile() === true && existing.uid === currentUid();
    if (existing !== undefined && !replaceable) {
      throw new AgentError(
        "RUN_DIR_ENTRY_UNSAFE",
        `${finalPath} exists already (${existing.isSymbolicLink() ? "a symbolic link" : "an entry"} the agent did not write); refusing to replace it. Something else writes into the run directory: give the agent a directory of its own`,
        { path: finalPath },
      );
    }
    await fs.rename(tempPath, finalPath);
    created = false;
    await fsyncDir(fs, dir);
  } catch (error) {
    const failure = isAgentError(error) ? error : writeFailed(finalPath, error);
    const cleanup = created ? await removeFailedWrite(fs, tempPath) : undefined;
    if (cleanup === undefined) throw failure;
    throw withLeftover(
      failure,
      tempPath,
      cleanup,
      "it may hold part of a credential; delete it, or run `oci-cred-agent wipe --run-dir <run directory>`, which removes the agent's temporary files",
    );
  }
}

/**
 * Creates `path` as a 0700 directory owned by the agent, or accepts an existing one only when
 * it is an empty, real directory owned by the agent's user. Returns whether it was created.
 */
export async function makePrivateDir(fs: FileSystem, path: string, allowExistingEmpty: boolean): Promise<boolean> {
  let created = true;
  try {
    await fs.mkdir(path, { mode: PRIVATE_DIR_MODE });
  } catch (error) {
    if (errnoCode(error) !== "EEXIST") {
      if (errnoCode(error) === "ENOENT") {
        throw new AgentError(
          "RUN_DIR_PARENT_MISSING",
          `the parent of ${path} does not exist; create it first (the agent creates only the run directory itself)`,
          { path },
        );
      }
      throw writeFailed(path, error);
    }
    created = false;
  }
  const st = await fs.lstat(path);
  const problem = st.isSymbolicLink()
    ? "is a symbolic link"
    : !st.isDirectory()
      ? "is not a directory"
      : st.uid !== currentUid()
        ? `is owned by uid ${st.uid}, not the agent's uid ${currentUid()}`
        : undefined;
  if (problem !== undefined) {
    throw new AgentError(
      "RUN_DIR_UNSAFE",
      `${path} ${problem}; the run directory must be a new or empty directory of the agent's own`,
      { path },
    );
  }
  if (!created) {
    if (!allowExistingEmpty) {
      throw new AgentError(
        "RUN_DIR_ENTRY_UNSAFE",
        `${path} exists already; the agent creates it itself. Something else writes into the run directory`,
        { path },
      );
    }
    const entries = await fs.readdir(path);
    if (entries.length > 0) {
      throw new AgentError(
        "RUN_DIR_UNSAFE",
        `${path} is not empty (${entries.length} entries); pass a run directory that does not exist yet, or an empty one. Remove an old run's files with \`oci-cred-agent wipe --run-dir ${path}\``,
        { path },
      );
    }
  }
  await fs.chmod(path, PRIVATE_DIR_MODE);
  return created;
}
