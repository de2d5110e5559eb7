/**
 * Runner mode: the runner (another user, in Kubernetes another container) must read a run's
 * credential files and read and write its workspace, and nothing of the agent's own. The agent
 * writes them private (0700/0600) as always, then, when the run is handed to the runner, gives
 * them to the runner's group, taken from the runner's socket (which the runner creates 0660
 * with its own group): credentials 0750/0640 (read-only to the group), the workspace 2770/0660
 * (setgid, so what the phase creates keeps the group and the agent can remove it), and the
 * agent's work, workspaces and credentials directories searchable by the group (0750). The
 * agent's user must be a member of that group (in Kubernetes the pod's fsGroup; on a host, add
 * it). Only what the agent's own user owns is changed, never through a symbolic link, and never
 * outside those directories: the key, the token and the agent's state keep their modes.
 */
import { chmod, chown, lstat, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { AgentError } from "../core/errors.js";
import type { RunPaths } from "./phase-executor.js";

/** The agent's directories the run's paths live in. */
export interface SharedDirs {
  readonly workDir: string;
  readonly workspacesDir: string;
  readonly credentialsDir: string;
}

function inside(path: string, dir: string): boolean {
  return path.startsWith(dir.endsWith("/") ? dir : `${dir}/`);
}

export async function shareWithRunner(paths: RunPaths, socketPath: string, dirs: SharedDirs): Promise<void> {
  if (!inside(paths.workspace, dirs.workspacesDir) || !inside(paths.credentials, dirs.credentialsDir)) {
    throw new AgentError(
      "RUN_DIR_UNSAFE",
      `the run's paths ${paths.workspace} and ${paths.credentials} are not inside the work and credentials directories; please report it`,
      { path: paths.workspace },
    );
  }
  const uid = process.getuid?.() ?? -1;
  const gid = (await stat(socketPath)).gid;
  /** Gives `path` to the group if it is the agent's own, real file or directory; says whether it is a directory. */
  const give = async (path: string, mode: (isDir: boolean, current: number) => number): Promise<boolean> => {
    const st = await lstat(path);
    if (st.isSymbolicLink() || st.uid !== uid) return false;
    await chown(path, -1, gid);
    await chmod(path, mode(st.isDirectory(), st.mode & 0o7777));
    return st.isDirectory();
  };
  const walk = async (path: string, mode: (isDir: boolean, current: number) => number): Promise<void> => {
    if (await give(path, mode)) for (const entry of await readdir(path)) await walk(join(path, entry), mode);
  };
  for (const dir of [dirs.workDir, dirs.workspacesDir, dirs.credentialsDir]) await give(dir, () => 0o750);
  await walk(paths.credentials, (isDir) => (isDir ? 0o750 : 0o640));
  await walk(paths.workspace, (isDir, current) =>
    isDir ? 0o2770 : current | 0o660 | ((current & 0o100) !== 0 ? 0o010 : 0),
  );
}
