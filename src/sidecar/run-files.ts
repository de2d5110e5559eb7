/**
 * Where the sidecar writes a run's files, and how it gives them to the runner's group and takes
 * them back. Each pre hook writes a new generation of the run's directory:
 *
 *   <credentials-dir>/sidecar/                   0750 (group: the runner's)
 *     <run-id>/                                  0750
 *       <generation>/                            0750, RunCredentials' layout and its marker
 *         .oci-cred-agent-run.json               0640  the durable marker (src/fs/run-dir.ts)
 *         docker/config.json, containers/auth.json, tofu/cli.tfrc   0640
 *
 * A generation is written whole before the one before it is wiped, so a hook retried while a
 * phase reads the old files never sees a half-written file. Every wipe goes through the same
 * marker-checked wipe as the daemon's (`wipeCredentialDir`), so only what the sidecar wrote is
 * ever removed; the start-up sweep does the same for what a killed sidecar left.
 */
import { chmod, chown, lstat, readdir, rmdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { AgentError, errnoCode } from "../core/errors.js";
import { wipeCredentialDir, type WipeOutcome } from "../credentials/run-credentials.js";
import { currentUid, makePrivateDir, PRIVATE_DIR_MODE, type FileSystem } from "../fs/secure-fs.js";

/** The sidecar's own directory below --credentials-dir. */
export function sidecarRoot(credentialsDir: string): string {
  return join(credentialsDir, "sidecar");
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
  if (gid === undefined) await fs.chmod(path, PRIVATE_DIR_MODE);
  else await shareWithGroup(path, gid, false);
}

/** A run's directory (the parent of its generations), created for it. */
export async function makeRunParent(fs: FileSystem, path: string, gid: number | undefined): Promise<void> {
  await makePrivateDir(fs, path, true).catch(async (error: unknown) => {
    // It exists with generations in it (a second pre hook): still ours?
    const st = await fs.lstat(path).catch(() => undefined);
    if (st?.isDirectory() !== true || st.isSymbolicLink() || st.uid !== currentUid()) throw error;
  });
  await shareWithGroup(path, gid, false);
}

/** Wipes every generation under a run's directory, then the directory; never throws. */
export async function wipeRunParent(
  fs: FileSystem,
  path: string,
  onWipe: (outcome: WipeOutcome) => void,
): Promise<{ files: number; ok: boolean }> {
  let entries: string[];
  try {
    entries = await fs.readdir(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return { files: 0, ok: true };
    onWipe({
      ok: false,
      runDir: path,
      error: new AgentError(
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

/** Start-up sweep: removes every run directory an earlier sidecar process left (a crash, kill -9). */
export async function sweepSidecarDir(
  fs: FileSystem,
  credentialsDir: string,
  gid: number | undefined,
  log: Logger,
): Promise<{ wiped: number; failed: number }> {
  await ensureSharedDir(fs, credentialsDir, gid);
  const root = sidecarRoot(credentialsDir);
  await ensureSharedDir(fs, root, gid);
  let wiped = 0;
  let failed = 0;
  for (const runId of await fs.readdir(root)) {
    const result = await wipeRunParent(fs, join(root, runId), (outcome) => {
      if (!outcome.ok)
        log.error({ event: "sweep_failed", run_id: runId, code: outcome.error.code }, outcome.error.message);
    });
    if (result.ok) {
      wiped++;
      log.warn(
        { event: "swept_credentials", run_id: runId, files: result.files },
        `removed credentials left by an earlier sidecar process for run ${runId}`,
      );
    } else failed++;
  }
  return { wiped, failed };
}
