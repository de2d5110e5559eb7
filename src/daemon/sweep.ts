/**
 * Start-up sweep: before leasing, stop the tofu processes a previous agent process left running,
 * then remove every run directory it left behind (a crash, SIGKILL, power loss), and log what was
 * removed. Credentials directories go through
 * the same wipe as a normal ending, so only what the agent wrote is removed.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { AgentError } from "../core/errors.js";
import { wipeCredentialDir } from "../credentials/run-credentials.js";
import { stopOrphans } from "./orphans.js";
import { currentUid, PRIVATE_DIR_MODE, type FileSystem } from "../fs/secure-fs.js";

/** Creates (or accepts) a directory of the agent's own: a real directory, owned by it, mode 0700. */
async function ensureAgentDir(fs: FileSystem, path: string): Promise<void> {
  await fs.mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  const st = await fs.lstat(path);
  if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== currentUid()) {
    throw new AgentError(
      "RUN_DIR_UNSAFE",
      `${path} must be a directory owned by the agent's user (uid ${currentUid()}), not a link or another user's; fix --work-dir or --credentials-dir`,
      { path },
    );
  }
  await fs.chmod(path, PRIVATE_DIR_MODE);
}

export async function sweepLeftovers(
  fs: FileSystem,
  credentialsDir: string,
  workspacesDir: string,
  log: Logger,
  orphanGraceMs = 10_000,
  homesDir?: string,
): Promise<{ wiped: number; failed: number }> {
  await ensureAgentDir(fs, credentialsDir);
  await ensureAgentDir(fs, workspacesDir);
  // First the tofu processes an earlier agent process left running in those workspaces.
  await stopOrphans(workspacesDir, credentialsDir, orphanGraceMs, log);
  let wiped = 0;
  let failed = 0;
  for (const entry of await fs.readdir(credentialsDir)) {
    await wipeCredentialDir(fs, join(credentialsDir, entry), (outcome) => {
      if (outcome.ok) {
        wiped++;
        log.warn(
          { event: "swept_credentials", run_id: entry, files: outcome.removed.length },
          `removed credentials left by an earlier process for run ${entry}`,
        );
      } else {
        failed++;
        log.error({ event: "sweep_failed", run_id: entry, code: outcome.error.code }, outcome.error.message);
      }
    });
  }
  for (const entry of await fs.readdir(workspacesDir)) {
    await rm(join(workspacesDir, entry), { recursive: true, force: true });
    log.warn(
      { event: "swept_workspace", run_id: entry },
      `removed the workspace left by an earlier process for run ${entry}`,
    );
  }
  // The sandbox's private HOME and TMPDIR of runs an earlier process did not finish (no run of
  // this process has started yet).
  if (homesDir !== undefined) {
    for (const entry of await fs.readdir(homesDir).catch(() => [] as string[])) {
      await rm(join(homesDir, entry), { recursive: true, force: true });
    }
  }
  return { wiped, failed };
}
