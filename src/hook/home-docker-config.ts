/**
 * The hook's copy of a run's Docker config at `<home>/.docker/config.json`, for runners that give
 * each run a HOME of its own (OpenTofu's ambient search reads that file with no variable:
 * internal/command/cliconfig/ociauthconfig/docker_cli_credentials_config.go). The marker beside
 * it (src/core/home-docker-marker.ts) records what the hook wrote, so that the hook never
 * overwrites or removes a config.json it did not write. Writes are atomic (a new 0600 file, then
 * rename): OpenTofu drops every ambient file when one fails to parse, so a half-written copy
 * must never be seen.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { lstat, mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";
import {
  decideHomeWipe,
  decideHomeWrite,
  HOME_MARKER_NAME,
  markerBeforeWrite,
  parseHomeMarker,
  renderHomeMarker,
  type HomeEntry,
  type HomeMarker,
} from "../core/home-docker-marker.js";
import { currentUid, isTempNameFor, lstatIfExists, openNewFile, realFs, tempNameFor } from "../fs/secure-fs.js";

/** The largest Docker config the hook copies. */
const MAX_DOCKER_CONFIG_BYTES = 1024 * 1024;

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function failed(what: string, path: string, error: unknown): AgentError {
  const errno = errnoCode(error) ?? "error";
  return new AgentError(
    "HOOK_HOME_WRITE_FAILED",
    `${what} ${path} failed (${errno}); check that the hook's user owns that HOME and its file system is not full`,
    { path, errno },
    { cause: error },
  );
}

/** `<home>/.docker`, created 0700 if missing; refused unless a real directory of the hook's user. */
async function dockerDir(home: string, create: boolean): Promise<string | undefined> {
  const homeStat = await lstatIfExists(realFs, home).catch((e: unknown) => {
    throw failed("reading", home, e);
  });
  if (homeStat === undefined || !homeStat.isDirectory())
    throw new AgentError(
      "HOOK_HOME_UNSAFE",
      `the run's HOME ${home} is not a directory; give --home (or HOME with OCI_CRED_AGENT_WRITE_HOME=1) the run's own home directory`,
      { path: home },
    );
  const dir = join(home, ".docker");
  let st = await lstatIfExists(realFs, dir).catch((e: unknown) => {
    throw failed("reading", dir, e);
  });
  if (st === undefined) {
    if (!create) return undefined;
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (error) {
      if (errnoCode(error) !== "EEXIST") throw failed("creating", dir, error);
    }
    st = await lstat(dir);
  }
  if (!st.isDirectory() || st.uid !== currentUid())
    throw new AgentError(
      "HOOK_HOME_UNSAFE",
      `${dir} is ${st.isSymbolicLink() ? "a symbolic link" : st.isDirectory() ? "a directory of another user" : "not a directory"}; the hook writes only into a real directory its user owns: remove it, or leave --home out`,
      { path: dir },
    );
  return dir;
}

async function entryAt(path: string): Promise<HomeEntry> {
  const st = await lstatIfExists(realFs, path).catch((e: unknown) => {
    throw failed("reading", path, e);
  });
  if (st === undefined) return { kind: "absent" };
  if (!st.isFile()) return { kind: "other" };
  try {
    return { kind: "file", sha256: sha256(await readFile(path)) };
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return { kind: "absent" };
    throw failed("reading", path, error);
  }
}

async function markerAt(path: string): Promise<HomeMarker | undefined> {
  const st = await lstatIfExists(realFs, path).catch((e: unknown) => {
    throw failed("reading", path, e);
  });
  if (st === undefined || !st.isFile()) return undefined;
  try {
    return parseHomeMarker(await readFile(path, "utf8"));
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return undefined;
    throw failed("reading", path, error);
  }
}

/** Writes `data` to dir/name through a new 0600 temporary file and a rename (replacing what is there). */
async function replaceAtomically(dir: string, name: string, data: string | Buffer): Promise<void> {
  const finalPath = join(dir, name);
  const tempPath = join(dir, tempNameFor(name));
  try {
    const handle = await openNewFile(realFs, tempPath);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tempPath, finalPath);
    const d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch (error) {
    await unlink(tempPath).catch(() => undefined);
    throw failed("writing", finalPath, error);
  }
}

/** Reads the sidecar's Docker config for the run; refuses one that is too large or not a JSON object. */
export async function readRunDockerConfig(path: string): Promise<Buffer> {
  let data: Buffer;
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      data = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new AgentError(
      "HOOK_HOME_WRITE_FAILED",
      `reading the run's Docker config ${path} failed (${errnoCode(error) ?? "error"}): the hook's user must be able to read the sidecar's credential files (mount the same volume, same group)`,
      { path },
    );
  }
  let parsed: unknown;
  try {
    parsed = data.length <= MAX_DOCKER_CONFIG_BYTES ? JSON.parse(data.toString("utf8")) : undefined;
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new AgentError(
      "HOOK_HOME_WRITE_FAILED",
      `the run's Docker config ${path} is not a JSON object of at most ${MAX_DOCKER_CONFIG_BYTES} bytes; the hook does not copy it (OpenTofu would drop every ambient file)`,
      { path },
    );
  return data;
}

/**
 * Copies `data` to `<home>/.docker/config.json` (0600) unless something the hook did not write
 * is there (HOOK_HOME_CONFIG_FOREIGN). The marker is written first, listing the new content and
 * the copy it replaces, then config.json, then the marker again with the new content alone.
 */
export async function writeHomeDockerConfig(home: string, runId: string, data: Buffer): Promise<string> {
  const dir = (await dockerDir(home, true)) ?? join(home, ".docker");
  const configPath = join(dir, "config.json");
  const markerPath = join(dir, HOME_MARKER_NAME);
  const entry = await entryAt(configPath);
  const marker = await markerAt(markerPath);
  if (decideHomeWrite(entry, marker) === "foreign")
    throw new AgentError(
      "HOOK_HOME_CONFIG_FOREIGN",
      `${configPath} exists and the hook did not write it (no matching ${HOME_MARKER_NAME} beside it); the hook never overwrites it. Move it away, give the run a HOME of its own, or leave --home and OCI_CRED_AGENT_WRITE_HOME out (TF_CLI_CONFIG_FILE alone then points OpenTofu at the run's files)`,
      { path: configPath },
    );
  const digest = sha256(data);
  await replaceAtomically(dir, HOME_MARKER_NAME, renderHomeMarker(markerBeforeWrite(runId, digest, entry, marker)));
  await replaceAtomically(dir, "config.json", data);
  await replaceAtomically(dir, HOME_MARKER_NAME, renderHomeMarker({ v: 1, run_id: runId, sha256: [digest] }));
  return configPath;
}

export type HomeWipeOutcome = "removed" | "gone" | "changed" | "not-ours";

/** Removes the hook's copy and its marker; idempotent; leaves anything the hook did not write. */
export async function wipeHomeDockerConfig(home: string): Promise<{ outcome: HomeWipeOutcome; path: string }> {
  const dir = await dockerDir(home, false);
  const configPath = join(home, ".docker", "config.json");
  if (dir === undefined) return { outcome: "gone", path: configPath };
  const markerPath = join(dir, HOME_MARKER_NAME);
  const decision = decideHomeWipe(await entryAt(configPath), await markerAt(markerPath));
  const remove = async (path: string): Promise<void> => {
    try {
      await unlink(path);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw failed("removing", path, error);
    }
  };
  if (decision === "remove") await remove(configPath);
  // Temporary files of a copy interrupted before its rename (a killed hook) hold the credentials too.
  for (const name of await readdir(dir).catch(() => []))
    if (isTempNameFor(name, "config.json")) await remove(join(dir, name));
  if (decision === "remove" || decision === "gone") await remove(markerPath);
  return { outcome: decision === "remove" ? "removed" : decision, path: configPath };
}
