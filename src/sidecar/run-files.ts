/**
 * Where the sidecar writes a run's files, and how it gives them to the runner's group and takes
 * them back. Each pre hook writes a new generation of the run's directory:
 *
 *   <credentials-dir>/                           0710 (group: the runner's)
 *     sidecar/                                   0710
 *       .lock                                    a socket only the live sidecar listens on (0600)
 *       <run-id>/                                0710
 *         <generation>/                          0750, RunCredentials' layout and its marker
 *           .oci-cred-agent-run.json             0640  the durable marker (src/fs/run-dir.ts)
 *           docker/config.json, containers/auth.json, tofu/cli.tfrc   0640
 *
 * The group may pass through the directories above a generation but not list them, and each
 * generation is named with 128 random bits: a run reaches only the generation whose path the
 * sidecar answered to its own hook, not another run's (whose run id may well be known).
 *
 * A generation is written whole before the one before it is wiped, so a hook retried while a
 * phase reads the old files never sees a half-written file. Every wipe goes through the same
 * marker-checked wipe as the daemon's (`wipeCredentialDir`), so only what the sidecar wrote is
 * ever removed; the start-up sweep does the same for what a killed sidecar left, and follows no
 * symbolic link. One sidecar at a time uses a credentials directory: the `.lock` socket.
 */
import { randomBytes } from "node:crypto";
import { chmod, chown, lstat, readdir, rmdir } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import { wipeCredentialDir, type WipeOutcome } from "../credentials/run-credentials.js";
import { currentUid, makePrivateDir, PRIVATE_DIR_MODE, type FileSystem } from "../fs/secure-fs.js";
import { listenOnSocket, takeSocketPath } from "../fs/socket-path.js";

/** The sidecar's own directory below --credentials-dir. */
export function sidecarRoot(credentialsDir: string): string {
  return join(credentialsDir, "sidecar");
}

/** A new generation's name: 128 random bits, so that no one guesses the path of another run's files. */
export function generationName(): string {
  return randomBytes(16).toString("base64url");
}

/**
 * Gives `path` (and below it, for directories) to `gid`, read-only: directories 0750, files
 * 0640. Only what the sidecar's own user owns is changed, never through a symbolic link.
 */
export async function shareWithGroup(path: string, gid: number | undefined, recursive: boolean): Promise<void> {
  if (gid === undefined) return;
  const st = await lstat(path);
  if (st.isSymbolicLink() || st.uid !== currentUid()) return;
  await chown(path, -1, gid);
  await chmod(path, st.isDirectory() ? 0o750 : 0o640);
  if (recursive && st.isDirectory())
    for (const entry of await readdir(path)) await shareWithGroup(join(path, entry), gid, true);
}

/** A directory above the generations: the group may pass through it (0710), not list it. */
async function letGroupPass(fs: FileSystem, path: string, gid: number | undefined): Promise<void> {
  if (gid === undefined) {
    await fs.chmod(path, PRIVATE_DIR_MODE);
    return;
  }
  await chown(path, -1, gid);
  await fs.chmod(path, 0o710);
}

/** A directory of the sidecar's own (created, or checked: real, owned, not a link), shared with the group. */
async function ensureSharedDir(fs: FileSystem, path: string, gid: number | undefined): Promise<void> {
  try {
    await fs.mkdir(path, { mode: PRIVATE_DIR_MODE });
  } catch (error) {
    if (errnoCode(error) === "ENOENT")
      throw new AgentError(
        "RUN_DIR_PARENT_MISSING",
        `the parent of ${path} does not exist; create --work-dir (or the parent of --credentials-dir) for the sidecar's user first`,
        { path },
      );
    if (errnoCode(error) !== "EEXIST") throw error;
  }
  const st = await fs.lstat(path);
  if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== currentUid())
    throw new AgentError(
      "RUN_DIR_UNSAFE",
      `${path} must be a directory owned by the sidecar's user (uid ${currentUid()}), not a link or another user's; fix --credentials-dir`,
      { path },
    );
  await letGroupPass(fs, path, gid);
}

/** A run's directory (the parent of its generations), created for it. */
export async function makeRunParent(fs: FileSystem, path: string, gid: number | undefined): Promise<void> {
  await makePrivateDir(fs, path, true).catch(async (error: unknown) => {
    // It exists with generations in it (a second pre hook): still ours?
    const st = await fs.lstat(path).catch(() => undefined);
    if (st?.isDirectory() !== true || st.isSymbolicLink() || st.uid !== currentUid()) throw error;
  });
  await letGroupPass(fs, path, gid);
}

/** Wipes every generation under a run's directory, then the directory; never throws. */
export async function wipeRunParent(
  fs: FileSystem,
  path: string,
  onWipe: (outcome: WipeOutcome) => void,
): Promise<{ files: number; ok: boolean }> {
  let entries: string[];
  try {
    // Never through a symbolic link, nor into what is not the sidecar's own directory.
    const st = await fs.lstat(path);
    if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== currentUid())
      throw new AgentError(
        "RUN_DIR_UNSAFE",
        `${path} is ${st.isSymbolicLink() ? "a symbolic link" : !st.isDirectory() ? "not a directory" : `owned by uid ${st.uid}`}, not a directory of the sidecar's own (uid ${currentUid()}); it is left in place: remove it by hand`,
        { path },
      );
    entries = await fs.readdir(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return { files: 0, ok: true };
    onWipe({
      ok: false,
      runDir: path,
      error: isAgentError(error)
        ? error
        : new AgentError(
            "WIPE_FAILED",
            `reading ${path} failed (${errnoCode(error) ?? "error"}); check the file system`,
            {
              path,
            },
          ),
    });
    return { files: 0, ok: false };
  }
  let files = 0;
  let ok = true;
  for (const entry of entries) {
    const outcome = await wipeCredentialDir(fs, join(path, entry), onWipe);
    if (outcome.ok) files += outcome.removed.length;
    else ok = false;
  }
  if (ok) await rmdir(path).catch(() => undefined);
  return { files, ok };
}

/**
 * Start-up sweep: takes the directory's lock (one sidecar per credentials directory), then
 * removes every run directory an earlier sidecar process left (a crash, kill -9). Returns the
 * lock's release.
 */
export async function sweepSidecarDir(
  fs: FileSystem,
  credentialsDir: string,
  gid: number | undefined,
  log: Logger,
): Promise<() => Promise<void>> {
  await ensureSharedDir(fs, credentialsDir, gid);
  const root = sidecarRoot(credentialsDir);
  await ensureSharedDir(fs, root, gid);
  const unlock = await lockSidecarDir(credentialsDir);
  try {
    await sweepRuns(fs, root, log);
  } catch (error) {
    await unlock();
    throw error;
  }
  return unlock;
}

async function sweepRuns(fs: FileSystem, root: string, log: Logger): Promise<void> {
  for (const runId of await fs.readdir(root)) {
    if (runId === LOCK_NAME) continue;
    const result = await wipeRunParent(fs, join(root, runId), (outcome) => {
      if (!outcome.ok)
        log.error({ event: "sweep_failed", run_id: runId, code: outcome.error.code }, outcome.error.message);
    });
    if (result.ok)
      log.warn(
        { event: "swept_credentials", run_id: runId, files: result.files },
        `removed credentials left by an earlier sidecar process for run ${runId}`,
      );
  }
}

const LOCK_NAME = ".lock";

/**
 * Takes `<credentials-dir>/sidecar/.lock`: a Unix socket the sidecar listens on while it runs (a
 * listening socket dies with its process, even after kill -9, so a stale one is simply taken).
 * Refused with SIDECAR_DIR_IN_USE while another sidecar holds it: two sidecars on one directory
 * would sweep each other's files. Returns the release.
 */
async function lockSidecarDir(credentialsDir: string): Promise<() => Promise<void>> {
  const path = join(sidecarRoot(credentialsDir), LOCK_NAME);
  try {
    await takeSocketPath(path, "SIDECAR_SOCKET_IN_USE", "sidecar");
  } catch (error) {
    if (!isAgentError(error, "SIDECAR_SOCKET_IN_USE")) throw error;
    throw new AgentError(
      "SIDECAR_DIR_IN_USE",
      `another sidecar uses --credentials-dir ${credentialsDir} (it holds ${path}); stop it first, or give this one its own --work-dir or --credentials-dir`,
      { path },
    );
  }
  const server = createServer((socket) => socket.destroy());
  try {
    await listenOnSocket(server, path);
  } catch (error) {
    if (errnoCode(error) !== "EADDRINUSE") throw error;
    throw new AgentError(
      "SIDECAR_DIR_IN_USE",
      `another sidecar took --credentials-dir ${credentialsDir} at the same time (${path}); stop it first, or give this one its own --work-dir or --credentials-dir`,
      { path },
    );
  }
  await chmod(path, 0o600);
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
    });
}
