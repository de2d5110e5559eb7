/**
 * The runner's files: a private HOME and TMPDIR for the run whose phases it runs (under its
 * --state-dir, mode 0700, removed when the run ends, when another run starts, and at start-up),
 * the check that a path the agent sends lies under a directory the runner was given, and the
 * hand-back of a workspace to the agent after a phase (directories the phase created must be
 * open to the agent's group, which removes the workspace, whatever modes the phase set).
 */
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, realpath, rm } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";

const RUN_PREFIX = "run-";
/** How many entries a walk looks at, at most (a phase may create millions). */
const WALK_LIMIT = 200_000;

export interface RunHome {
  readonly runId: string;
  readonly home: string;
  readonly tmp: string;
}

/** Whether `path` lies strictly inside `dir`, as given and with every link resolved. */
export async function isInside(dir: string, path: string): Promise<boolean> {
  const lexical = (d: string, p: string): boolean => {
    const rel = relative(d, p);
    return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
  };
  if (!isAbsolute(path) || resolve(path) !== path.replace(/\/+$/, "") || !lexical(resolve(dir), path)) return false;
  try {
    return lexical(await realpath(dir), await realpath(path));
  } catch {
    return false; // missing (or unreadable): refused
  }
}

/**
 * Adds `bits` to the mode of every directory under `root` (itself included) owned by this
 * process's user, never following a link (each is opened O_NOFOLLOW and changed through its
 * descriptor). Run only when nothing of the run is left running.
 */
export async function openDirectories(root: string, bits: number): Promise<void> {
  const uid = process.getuid?.() ?? -1;
  const stack = [root];
  let seen = 0;
  while (stack.length > 0 && seen < WALK_LIMIT) {
    const dir = stack.pop() ?? root;
    try {
      const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        const st = await handle.stat();
        if (st.uid === uid && (st.mode & bits) !== bits) await handle.chmod((st.mode & 0o7777) | bits);
      } finally {
        await handle.close();
      }
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        seen++;
        if (entry.isDirectory()) stack.push(join(dir, entry.name));
      }
    } catch {
      // gone, a link, or another user's directory this process cannot open: left as it is
    }
  }
}

export class RunDirs {
  constructor(private readonly stateDir: string) {}

  /** Creates the state directory (0700, the runner's own) and removes what an earlier runner left in it. */
  async prepare(): Promise<void> {
    try {
      await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new AgentError(
        "INVALID_ARGUMENT",
        `cannot create --state-dir ${this.stateDir} (${errnoCode(error) ?? "error"}); give the runner a directory it can write (a volume of its own)`,
        { path: this.stateDir },
      );
    }
    const st = await lstat(this.stateDir);
    const uid = process.getuid?.() ?? -1;
    if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== uid) {
      throw new AgentError(
        "INVALID_ARGUMENT",
        `--state-dir ${this.stateDir} must be a directory owned by the runner's user (uid ${uid}), not a link or another user's; choose another --state-dir`,
        { path: this.stateDir },
      );
    }
    await chmod(this.stateDir, 0o700);
    await this.removeAllBut(undefined);
  }

  /** The run's private HOME and TMPDIR (created on its first phase); every other run's are removed first. */
  async open(runId: string): Promise<RunHome> {
    await this.removeAllBut(runId);
    const base = join(this.stateDir, `${RUN_PREFIX}${runId}`);
    const home = join(base, "home");
    const tmp = join(base, "tmp");
    for (const dir of [base, home, tmp]) {
      try {
        await mkdir(dir, { mode: 0o700 });
      } catch (error) {
        if (errnoCode(error) !== "EEXIST") throw error;
      }
    }
    // A phase of the same run may have changed them: they are the runner's, 0700, again.
    await openDirectories(base, 0o700);
    for (const dir of [base, home, tmp]) await chmod(dir, 0o700);
    return { runId, home, tmp };
  }

  /** Removes the run's HOME and TMPDIR (idempotent). */
  async remove(runId: string): Promise<void> {
    const base = join(this.stateDir, `${RUN_PREFIX}${runId}`);
    // A phase may have taken its own permissions away from directories it made.
    await openDirectories(base, 0o700);
    await rm(base, { recursive: true, force: true });
  }

  private async removeAllBut(keep: string | undefined): Promise<void> {
    for (const name of await readdir(this.stateDir)) {
      if (name.startsWith(RUN_PREFIX) && name !== `${RUN_PREFIX}${keep ?? ""}`)
        await this.remove(name.slice(RUN_PREFIX.length));
    }
  }
}
