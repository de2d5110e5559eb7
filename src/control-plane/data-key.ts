/**
 * The key that seals the control plane's data at rest (data-cipher.ts). It never lives beside the
 * data: `--data-key-file PATH`, or the systemd credential `data-key`
 * (`$CREDENTIALS_DIRECTORY/data-key`, from LoadCredential= or LoadCredentialEncrypted=). The
 * file holds 32 random bytes in base64 (`head -c 32 /dev/urandom | base64`), one line.
 *
 * Refused: no key at all (DATA_KEY_REQUIRED), a key file in the data file's directory or below
 * it, where a copy of the data takes the key along (DATA_KEY_BESIDE_DATA), a key file that group
 * or others may access, or not owned by the control plane's user (DATA_KEY_PERMISSIONS, as ssh
 * refuses a private key; a systemd credential may show group bits, its ACL), and anything but
 * base64 of 32 bytes (DATA_KEY_INVALID).
 */
import { constants } from "node:fs";
import { lstat, open, realpath } from "node:fs/promises";
import { dirname, join, relative, resolve, isAbsolute } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";
import { currentUid } from "../fs/secure-fs.js";
import { DATA_KEY_BYTES } from "./data-cipher.js";

/** The systemd credential name the control plane looks for when --data-key-file is not given. */
const DATA_KEY_CREDENTIAL = "data-key";

const MAKE_ONE = "make one with `(umask 077; head -c 32 /dev/urandom | base64 > /etc/ref-control-plane/data.key)`";

export interface DataKeySource {
  readonly dataFile: string;
  readonly keyFile: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
}

function where(source: DataKeySource): { path: string; label: string; credential: boolean } {
  if (source.keyFile !== undefined)
    return { path: resolve(source.keyFile), label: "--data-key-file", credential: false };
  const dir = source.env["CREDENTIALS_DIRECTORY"];
  if (dir !== undefined && dir !== "")
    return {
      path: join(dir, DATA_KEY_CREDENTIAL),
      label: `the systemd credential ${DATA_KEY_CREDENTIAL}`,
      credential: true,
    };
  throw new AgentError(
    "DATA_KEY_REQUIRED",
    `--data-file needs a key to seal passwords, configurations and logs at rest, kept apart from the data: give --data-key-file PATH (${MAKE_ONE}), or run from a systemd unit with LoadCredential=${DATA_KEY_CREDENTIAL}:PATH (or LoadCredentialEncrypted=)`,
  );
}

async function realDir(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/** Whether `inner` is `outer` or lies below it. */
function within(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

export async function readDataKey(source: DataKeySource): Promise<Buffer> {
  const { path, label, credential } = where(source);
  let st;
  try {
    st = await lstat(path);
  } catch (error) {
    const code = errnoCode(error);
    if (code === "ENOENT" && source.keyFile === undefined)
      throw new AgentError(
        "DATA_KEY_REQUIRED",
        `--data-file needs a key, and ${path} does not exist: add LoadCredential=${DATA_KEY_CREDENTIAL}:PATH (or LoadCredentialEncrypted=) to the unit, or give --data-key-file PATH (${MAKE_ONE})`,
        { path },
      );
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot read ${label} ${path} (${code ?? "error"}); ${code === "ENOENT" ? MAKE_ONE : "check its owner and mode"}`,
      { path },
    );
  }
  const keyDir = await realDir(dirname(path));
  const dataDir = await realDir(dirname(resolve(source.dataFile)));
  if (within(keyDir, dataDir))
    throw new AgentError(
      "DATA_KEY_BESIDE_DATA",
      `${label} ${path} lies in the data file's directory ${dataDir}, so every copy of the data carries its key; keep the key elsewhere (for example /etc/ref-control-plane/data.key, or a systemd credential)`,
      { path },
    );
  if (!st.isFile())
    throw new AgentError(
      "DATA_KEY_INVALID",
      `${label} ${path} is not a regular file; point it at the key file itself (${MAKE_ONE})`,
      { path },
    );
  const mode = st.mode & 0o777;
  const shown = mode.toString(8).padStart(4, "0");
  // systemd grants a credential to a service user through an ACL, which shows as group bits;
  // its directory is the service's alone.
  const exposed = credential ? mode & 0o007 : mode & 0o077;
  if (exposed !== 0 || (st.uid !== currentUid() && st.uid !== 0))
    throw new AgentError(
      "DATA_KEY_PERMISSIONS",
      `UNPROTECTED DATA KEY: ${path} has mode ${shown} and owner uid ${st.uid}; only the control plane's user (or root) may own it and nobody else may access it: run chown $(id -u) ${path}; chmod 600 ${path}`,
      { path, mode: shown },
    );
  let text: string;
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new AgentError(
      "INPUT_UNREADABLE",
      `cannot read ${label} ${path} (${errnoCode(error) ?? "error"}); check its owner and mode`,
      { path },
    );
  }
  const b64 = text.trim();
  const key = Buffer.from(b64, "base64");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || key.byteLength !== DATA_KEY_BYTES || key.toString("base64") !== b64)
    throw new AgentError(
      "DATA_KEY_INVALID",
      `${label} ${path} must hold ${DATA_KEY_BYTES} random bytes in base64 on one line; ${MAKE_ONE}`,
      { path },
    );
  return key;
}
