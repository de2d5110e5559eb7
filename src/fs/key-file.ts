/**
 * Reading and creating the agent's private key file, with OpenSSH's caution: a key file that is
 * a symlink, not a regular file, owned by another user, or accessible by group or others is
 * refused ("UNPROTECTED PRIVATE KEY FILE"), with the command that fixes it. One exception: a key
 * that root provisions read-only for the agent's group (Kubernetes Secret volumes).
 */
import { constants } from "node:fs";
import { AgentError, errnoCode } from "../core/errors.js";
import {
  currentUid,
  isAlreadyThere,
  openNewFile,
  removeFailedWrite,
  withLeftover,
  type FileSystem,
} from "./secure-fs.js";

/**
 * A key that root provisions for the agent: owned by root, writable by nobody else, nothing for
 * others, and readable by a group the agent is in, or by root's group (whose members are
 * administrators anyway; systemd 255+ grants credentials through an ACL, which shows as that
 * mask). Kubernetes writes Secret volumes this way: root:fsGroup, mode 0440. Only for an agent
 * that does not run as root itself.
 */
function rootProvisioned(uid: number, gid: number, mode: number): boolean {
  if (uid !== 0 || currentUid() === 0 || currentUid() === -1) return false;
  if ((mode & 0o037) !== 0 || (mode & 0o040) === 0) return false;
  return gid === 0 || (process.getgroups?.() ?? []).includes(gid);
}

/** Checks a key file's metadata; returns its contents. */
export async function readProtectedKeyFile(fs: FileSystem, path: string): Promise<string> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") {
      throw new AgentError(
        "KEY_FILE_NOT_FOUND",
        `the key file ${path} does not exist; create it with \`oci-cred-agent keygen --key-file ${path}\``,
        { path },
      );
    }
    throw new AgentError("INPUT_UNREADABLE", `the key file ${path} cannot be read (${errnoCode(error) ?? "error"})`, {
      path,
    });
  }
  if (st.isSymbolicLink()) {
    throw new AgentError(
      "KEY_FILE_SYMLINK",
      `the key file ${path} is a symbolic link; the agent reads keys only from regular files. Point --key-file at the real file`,
      { path },
    );
  }
  if (!st.isFile()) {
    throw new AgentError(
      "KEY_FILE_NOT_REGULAR",
      `the key file ${path} is not a regular file; point --key-file at the key file itself`,
      { path },
    );
  }
  const mode = st.mode & 0o777;
  const provisioned = rootProvisioned(st.uid, st.gid, mode);
  if (st.uid !== currentUid() && !provisioned) {
    throw new AgentError(
      "KEY_FILE_WRONG_OWNER",
      `the key file ${path} is owned by uid ${st.uid} (mode ${mode.toString(8).padStart(4, "0")}, group ${st.gid}), but the agent runs as uid ${currentUid()}; make the agent's user its owner (chown $(id -u) ${path}), or, for a key that root provisions (a Kubernetes Secret with fsGroup), leave it root-owned, mode 0440, with a group the agent is in`,
      { path, uid: st.uid },
    );
  }
  if (!provisioned && (mode & 0o077) !== 0) {
    throw new AgentError(
      "KEY_FILE_PERMISSIONS",
      `UNPROTECTED PRIVATE KEY FILE: ${path} has mode ${mode.toString(8).padStart(4, "0")}, so group or others can access it; run: chmod 600 ${path}`,
      { path, mode: mode.toString(8).padStart(4, "0") },
    );
  }
  let handle;
  try {
    handle = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new AgentError(
      "INPUT_UNREADABLE",
      `the key file ${path} cannot be opened by uid ${currentUid()} (${errnoCode(error) ?? "error"}); check its owner, group and mode`,
      { path },
    );
  }
  try {
    const again = await handle.stat();
    if (again.ino !== st.ino || again.dev !== st.dev) {
      throw new AgentError(
        "KEY_FILE_NOT_REGULAR",
        `the key file ${path} was replaced while it was being read; try again`,
        { path },
      );
    }
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

function keyWriteFailed(path: string, error: unknown): AgentError {
  const code = errnoCode(error) ?? "unknown error";
  const hint =
    code === "ENOSPC" || code === "EDQUOT"
      ? "the file system is full; free space, then run keygen again"
      : code === "EACCES" || code === "EPERM" || code === "EROFS"
        ? "the agent's user may not write there; choose a directory it owns (mode 0700), then run keygen again"
        : "check the directory's file system, then run keygen again";
  return new AgentError(
    "KEY_FILE_WRITE_FAILED",
    `writing the new key file ${path} failed (${code}); ${hint}`,
    { path, errno: code },
    { cause: error },
  );
}

/**
 * Creates a new key file with mode 0600; never overwrites. A write that fails removes the
 * partly written key; when that removal fails too, the error names the file to delete.
 */
export async function createKeyFile(fs: FileSystem, path: string, pem: string): Promise<void> {
  let handle;
  try {
    handle = await openNewFile(fs, path);
  } catch (error) {
    const code = errnoCode(error);
    if (isAlreadyThere(error)) {
      throw new AgentError(
        "KEY_FILE_EXISTS",
        `${path} exists already; keygen never overwrites a key. Choose another --key-file, or remove the old key if it is retired`,
        { path },
      );
    }
    if (code === "ENOENT") {
      throw new AgentError(
        "INVALID_ARGUMENT",
        `the directory for ${path} does not exist; create it (mode 0700) first`,
        { path },
      );
    }
    throw keyWriteFailed(path, error);
  }
  let writeError: unknown;
  try {
    await handle.writeFile(pem);
    await handle.sync();
  } catch (error) {
    writeError = error;
  }
  try {
    await handle.close();
  } catch (error) {
    // Some file systems (NFS) report a lost write only at close. After a failed write, the
    // write's own error is the one to report.
    writeError ??= error;
  }
  if (writeError === undefined) return;
  const failure = keyWriteFailed(path, writeError);
  const cleanup = await removeFailedWrite(fs, path);
  if (cleanup !== undefined) {
    throw withLeftover(
      failure,
      path,
      cleanup,
      `it may hold the private key, whole or in part; delete it (rm ${path}) before running keygen again`,
    );
  }
  throw failure;
}
