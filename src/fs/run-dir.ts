/**
 * The per-run credential directory: its fixed layout, creation and wipe.
 *
 *   <run-dir>/                       0700, created by the agent
 *     .oci-cred-agent-run.json       marker (0600): says the directory is the agent's to wipe
 *     docker/config.json             Docker CLI family (DOCKER_CONFIG) and OpenTofu
 *     containers/auth.json           containers family (REGISTRY_AUTH_FILE)
 *     tofu/cli.tfrc                  OpenTofu CLI configuration (TF_CLI_CONFIG_FILE)
 *
 * Because the layout is fixed, wipe knows every name the agent may have written (including
 * temporary names of an interrupted write) without trusting anything inside the directory,
 * and it removes nothing else: an entry it does not recognize is reported and left in place.
 */
import type { Stats } from "node:fs";
import { join, resolve } from "node:path";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import {
  currentUid,
  isTempNameFor,
  lstatIfExists,
  makePrivateDir,
  withLeftover,
  writeFailed,
  writeSecretFileAtomic,
  type FileSystem,
} from "./secure-fs.js";

export const MARKER_NAME = ".oci-cred-agent-run.json";

export const RUN_FILES = {
  dockerConfig: { dir: "docker", name: "config.json" },
  containersAuth: { dir: "containers", name: "auth.json" },
  tofuCliConfig: { dir: "tofu", name: "cli.tfrc" },
} as const;

export type RunFileId = keyof typeof RUN_FILES;
const LAYOUT_DIRS = [...new Set(Object.values(RUN_FILES).map((f) => f.dir))];

export function runFilePath(runDir: string, id: RunFileId): string {
  const f = RUN_FILES[id];
  return join(runDir, f.dir, f.name);
}

export interface RunDirMeta {
  readonly runId: string;
  readonly agentId: string;
  readonly createdAt: string;
}

/**
 * Creates the run directory, its marker and its subdirectories. On a failure it wipes what it
 * created; when that wipe fails too, the error names the directory left behind.
 */
export async function createRunDir(
  fs: FileSystem,
  runDirPath: string,
  meta: RunDirMeta,
): Promise<{ created: boolean }> {
  // A trailing "/" or "/." makes lstat follow a symlink at the last component: normalize first.
  const runDir = resolve(runDirPath);
  const created = await makePrivateDir(fs, runDir, true);
  try {
    await writeSecretFileAtomic(
      fs,
      runDir,
      MARKER_NAME,
      `${JSON.stringify({ kind: "oci-cred-agent-run", version: 1, run_id: meta.runId, agent_id: meta.agentId, created_at: meta.createdAt, pid: process.pid })}\n`,
    );
    for (const dir of LAYOUT_DIRS) await makePrivateDir(fs, join(runDir, dir), false);
  } catch (error) {
    try {
      await wipeRunDir(fs, runDir);
    } catch (wipeError) {
      // The creation's failure stays the error; the directory it leaves behind is named in it.
      throw withLeftover(
        isAgentError(error) ? error : writeFailed(runDir, error),
        runDir,
        wipeError,
        `no credential was written into it yet; inspect it, then remove it or run \`oci-cred-agent wipe --run-dir ${runDir}\``,
      );
    }
    throw error;
  }
  return { created };
}

export async function writeRunFile(
  fs: FileSystem,
  runDir: string,
  id: RunFileId,
  data: string,
  options: { readonly replace?: boolean } = {},
): Promise<void> {
  const f = RUN_FILES[id];
  await writeSecretFileAtomic(fs, join(runDir, f.dir), f.name, data, { replaceOwnFile: options.replace === true });
}

export interface WipeReport {
  /** Paths removed, relative to the run directory. */
  readonly removed: readonly string[];
  /** True when the run directory did not exist (wipe is idempotent). */
  readonly absent: boolean;
}

function isOwnedRegularFile(st: Stats): boolean {
  return st.isFile() && st.uid === currentUid();
}

function wipeFailed(path: string, error: unknown): AgentError {
  return new AgentError(
    "WIPE_FAILED",
    `removing ${path} failed (${errnoCode(error) ?? "unknown error"}); check the file system and run \`oci-cred-agent wipe\` again`,
    { path },
    { cause: error },
  );
}

async function removeFile(fs: FileSystem, path: string): Promise<void> {
  try {
    await fs.unlink(path);
  } catch (error) {
    if (errnoCode(error) !== "ENOENT") throw wipeFailed(path, error);
  }
}

/**
 * Removes everything the agent wrote in `runDir` and the directory itself. Idempotent. Refuses a
 * directory without the agent's marker; leaves (and reports) anything it did not write, after
 * removing every credential file it did write.
 */
export async function wipeRunDir(fs: FileSystem, runDirPath: string): Promise<WipeReport> {
  // A trailing "/" or "/." makes lstat follow a symlink at the last component: normalize first.
  const runDir = resolve(runDirPath);
  const st = await lstatIfExists(fs, runDir);
  if (st === undefined) return { removed: [], absent: true };
  if (st.isSymbolicLink() || !st.isDirectory() || st.uid !== currentUid()) {
    throw new AgentError(
      "WIPE_NOT_AGENT_DIR",
      `${runDir} is ${st.isSymbolicLink() ? "a symbolic link" : !st.isDirectory() ? "not a directory" : "owned by another user"}; wipe removes only run directories the agent created`,
      { path: runDir },
    );
  }
  const topEntries = await fs.readdir(runDir);
  const marker = await lstatIfExists(fs, join(runDir, MARKER_NAME));
  if (marker === undefined || !isOwnedRegularFile(marker)) {
    if (topEntries.length === 0) {
      // Created, then interrupted before the marker was written: nothing of anyone's is inside.
      await fs.rmdir(runDir).catch((error: unknown) => {
        throw wipeFailed(runDir, error);
      });
      return { removed: [], absent: false };
    }
    throw new AgentError(
      "WIPE_NOT_AGENT_DIR",
      `${runDir} has no ${MARKER_NAME} marker written by the agent; wipe removes only run directories that materialize created`,
      { path: runDir },
    );
  }

  const removed: string[] = [];
  const foreign: string[] = [];
  const known = new Set<string>([
    MARKER_NAME,
    ...LAYOUT_DIRS,
    ...topEntries.filter((e) => isTempNameFor(e, MARKER_NAME)),
  ]);
  for (const entry of topEntries) if (!known.has(entry)) foreign.push(entry);
  for (const entry of topEntries) {
    if (isTempNameFor(entry, MARKER_NAME)) {
      const tst = await lstatIfExists(fs, join(runDir, entry));
      if (tst !== undefined && isOwnedRegularFile(tst)) {
        await removeFile(fs, join(runDir, entry));
        removed.push(entry);
      } else if (tst !== undefined) foreign.push(entry);
    }
  }

  for (const dir of LAYOUT_DIRS) {
    const dirPath = join(runDir, dir);
    const dst = await lstatIfExists(fs, dirPath);
    if (dst === undefined) continue;
    if (dst.isSymbolicLink() || !dst.isDirectory() || dst.uid !== currentUid()) {
      foreign.push(dir);
      continue;
    }
    const names = Object.values(RUN_FILES)
      .filter((f) => f.dir === dir)
      .map((f) => f.name);
    let dirForeign = false;
    for (const entry of await fs.readdir(dirPath)) {
      const rel = `${dir}/${entry}`;
      const ours = names.some((n) => entry === n || isTempNameFor(entry, n));
      const est = ours ? await lstatIfExists(fs, join(dirPath, entry)) : undefined;
      if (ours && est !== undefined && isOwnedRegularFile(est)) {
        await removeFile(fs, join(dirPath, entry));
        removed.push(rel);
      } else if (!ours || est !== undefined) {
        foreign.push(rel);
        dirForeign = true;
      }
    }
    if (!dirForeign) {
      try {
        await fs.rmdir(dirPath);
      } catch (error) {
        throw wipeFailed(dirPath, error);
      }
    }
  }

  if (foreign.length > 0) {
    throw new AgentError(
      "WIPE_FOREIGN_ENTRIES",
      `${runDir}: removed the agent's ${removed.length} file(s), but left ${foreign.length} entr${foreign.length === 1 ? "y" : "ies"} it did not write (${foreign.slice(0, 10).join(", ")}${foreign.length > 10 ? ", ..." : ""}); inspect and remove them, then run \`oci-cred-agent wipe --run-dir ${runDir}\` again`,
      { path: runDir, foreign, removed },
    );
  }
  await removeFile(fs, join(runDir, MARKER_NAME));
  removed.push(MARKER_NAME);
  try {
    await fs.rmdir(runDir);
  } catch (error) {
    throw wipeFailed(runDir, error);
  }
  return { removed, absent: false };
}
