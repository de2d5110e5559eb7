/**
 * The hook's link from `<home>/.docker/config.json` to the sidecar's Docker config of the run,
 * for runners that give each run a HOME of its own (OpenTofu's ambient search reads that path
 * with no variable: internal/command/cliconfig/ociauthconfig/docker_cli_credentials_config.go).
 *
 * A link, not a copy: the credentials then live only in the sidecar's files, which every ending
 * wipes (post hook, hook TTL, the run ended at the control plane, the sidecar's SIGTERM and its
 * start-up sweep), where a copy in HOME outlived every ending but a post hook. What an ending
 * leaves in HOME is a dangling link, which OpenTofu's ambient search skips like a missing file
 * (FindDockerCLIStyleCredentialsConfigs: a read error that satisfies os.IsNotExist, ENOENT
 * through the link included, is skipped, not joined into the error that drops every ambient
 * file). The link names the sidecar's file, so `.docker` is kept 0700.
 *
 * The marker beside it (src/core/home-docker-marker.ts) records what the hook wrote, so that the
 * hook never overwrites or removes a config.json it did not write. The link is replaced
 * atomically (a new link, then a rename): no reader ever sees config.json missing in between.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, rename, symlink, unlink } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";
import {
  decideHomeWipe,
  decideHomeWrite,
  HOME_MARKER_NAME,
  markerAfterWrite,
  markerBeforeWrite,
  parseHomeMarker,
  renderHomeMarker,
  type HomeEntry,
  type HomeMarker,
} from "../core/home-docker-marker.js";
import { currentUid, isTempNameFor, lstatIfExists, openNewFile, realFs, tempNameFor } from "../fs/secure-fs.js";

/** Only the owner may search `.docker`: reading the link needs nothing more, and it names the sidecar's file. */
const DOCKER_DIR_MODE = 0o700;

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

/**
 * `<home>/.docker`, created 0700 if missing, made 0700 when the hook is about to link; refused
 * unless a real directory of the hook's user.
 */
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
      await mkdir(dir, { mode: DOCKER_DIR_MODE });
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
  if (create && (st.mode & 0o777) !== DOCKER_DIR_MODE)
    await chmod(dir, DOCKER_DIR_MODE).catch((e: unknown) => {
      throw failed("restricting", dir, e);
    });
  return dir;
}

async function entryAt(path: string): Promise<HomeEntry> {
  const st = await lstatIfExists(realFs, path).catch((e: unknown) => {
    throw failed("reading", path, e);
  });
  if (st === undefined) return { kind: "absent" };
  if (st.isSymbolicLink()) {
    try {
      return { kind: "link", target: await readlink(path) };
    } catch (error) {
      if (errnoCode(error) === "ENOENT") return { kind: "absent" };
      throw failed("reading", path, error);
    }
  }
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

/**
 * Puts at dir/name, replacing what is there, a file holding `data` (a new 0600 temporary file,
 * then a rename) or a symbolic link to `data.symlinkTo` (a new link, then a rename).
 */
async function replaceAtomically(dir: string, name: string, data: string | { symlinkTo: string }): Promise<void> {
  const finalPath = join(dir, name);
  const tempPath = join(dir, tempNameFor(name));
  try {
    if (typeof data === "string") {
      const handle = await openNewFile(realFs, tempPath);
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
    } else await symlink(data.symlinkTo, tempPath);
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

/**
 * Checks the sidecar's Docker config for the run before linking to it: an absolute path that the
 * hook's user (who runs tofu) can read, holding a JSON object of at most 1 MiB.
 */
export async function checkRunDockerConfig(path: string): Promise<void> {
  if (!isAbsolute(path))
    throw new AgentError(
      "HOOK_SIDECAR_PROTOCOL_ERROR",
      "the sidecar answered a Docker config path that is not absolute; run the same oci-cred-agent version as hook and sidecar",
    );
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
      `reading the run's Docker config ${path} failed (${errnoCode(error) ?? "error"}): the hook's user, who runs tofu, must be able to read the sidecar's credential files (mount the same volume, same group)`,
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
      `the run's Docker config ${path} is not a JSON object of at most ${MAX_DOCKER_CONFIG_BYTES} bytes; the hook does not link to it (OpenTofu would drop every ambient file)`,
      { path },
    );
}

/** What stands at `<home>/.docker/config.json` and its marker; refuses a config.json the hook did not write. */
async function linkable(
  home: string,
  create: boolean,
): Promise<{ dir: string; entry: HomeEntry; marker: HomeMarker | undefined }> {
  const dir = (await dockerDir(home, create)) ?? join(home, ".docker");
  const configPath = join(dir, "config.json");
  const entry = await entryAt(configPath);
  const marker = await markerAt(join(dir, HOME_MARKER_NAME));
  if (decideHomeWrite(entry, marker) === "foreign")
    throw new AgentError(
      "HOOK_HOME_CONFIG_FOREIGN",
      `${configPath} exists and the hook did not write it (no matching ${HOME_MARKER_NAME} beside it); the hook never overwrites it. Move it away, give the run a HOME of its own, or leave --home and OCI_CRED_AGENT_WRITE_HOME out (TF_CLI_CONFIG_FILE alone then points OpenTofu at the run's files)`,
      { path: configPath },
    );
  return { dir, entry, marker };
}

/**
 * Refuses, before the pre hook writes anything, a HOME the hook could not link in (not a
 * directory, `.docker` not the hook user's own, a config.json the hook did not write). Creates
 * nothing: `linkHomeDockerConfig` checks again when it writes.
 */
export async function checkHomeLinkable(home: string): Promise<void> {
  await linkable(home, false);
}

/**
 * Makes `<home>/.docker/config.json` a symbolic link to `target` (the sidecar's file) unless
 * something the hook did not write is there (HOOK_HOME_CONFIG_FOREIGN). The marker is written
 * first, listing the new link and what it replaces, then config.json, then the marker again with
 * the new link alone.
 */
export async function linkHomeDockerConfig(home: string, runId: string, target: string): Promise<string> {
  const { dir, entry, marker } = await linkable(home, true);
  await replaceAtomically(dir, HOME_MARKER_NAME, renderHomeMarker(markerBeforeWrite(runId, target, entry, marker)));
  await replaceAtomically(dir, "config.json", { symlinkTo: target });
  await replaceAtomically(dir, HOME_MARKER_NAME, renderHomeMarker(markerAfterWrite(runId, target)));
  return join(dir, "config.json");
}

export type HomeWipeOutcome = "removed" | "gone" | "changed" | "not-ours";

/** Removes the hook's link (or an earlier hook's copy) and its marker; idempotent; leaves anything the hook did not write. */
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
  // Temporary links (or an earlier hook's temporary copies) interrupted before their rename (a killed hook).
  for (const name of await readdir(dir).catch(() => []))
    if (isTempNameFor(name, "config.json")) await remove(join(dir, name));
  if (decision === "remove" || decision === "gone") await remove(markerPath);
  return { outcome: decision === "remove" ? "removed" : decision, path: configPath };
}
