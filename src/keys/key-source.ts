/**
 * Where the agent's private key(s) live, named by a URI (`--key`):
 *   file:PATH                a key file, or a directory of key files (rotation: one file per key;
 *                            Kubernetes Secret volumes, whose files are links into ..data/, work)
 *   systemd-credential:NAME  $CREDENTIALS_DIRECTORY/NAME (LoadCredential=/LoadCredentialEncrypted=)
 *   keyring:SERVICE/ACCOUNT  the OS keyring (Secret Service) through @napi-rs/keyring, loaded
 *                            only when used so hosts without it still start
 *   env:NAME                 an environment variable, with a warning; left out of the
 *                            environment the agent gives runs, but a run outside the sandbox can
 *                            still read the agent's own environment (/proc/<pid>/environ)
 * A file, credential, keyring entry or variable may hold several PEM keys, one after the other;
 * the last is the newest. In a directory, files are ordered by status change time, then name,
 * newest last (key-directory.ts says why not by modification time).
 * The control plane seals to the newest key; bundles sealed to an older key still open until
 * that key is removed.
 */
import { join } from "node:path";
import { AgentError, errnoCode } from "../core/errors.js";
import { parsePrivateKeyPem, type AgentPrivateKey } from "../crypto/agent-key.js";
import { readProtectedKeyFile } from "../fs/key-file.js";
import type { FileSystem } from "../fs/secure-fs.js";
import { listKeyFiles, writableByOthers } from "./key-directory.js";

export type KeySource =
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "systemd-credential"; readonly name: string }
  | { readonly kind: "keyring"; readonly service: string; readonly account: string }
  | { readonly kind: "env"; readonly name: string };

export function parseKeyUri(uri: string): KeySource {
  const bad = (): AgentError =>
    new AgentError(
      "INVALID_ARGUMENT",
      `--key ${JSON.stringify(uri)} is not a key source; use file:PATH, systemd-credential:NAME, keyring:SERVICE/ACCOUNT or env:NAME`,
      { flag: "--key" },
    );
  const colon = uri.indexOf(":");
  if (colon < 0) throw bad();
  const scheme = uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
  if (rest === "") throw bad();
  switch (scheme) {
    case "file":
      return { kind: "file", path: rest };
    case "systemd-credential":
      if (rest.includes("/")) throw bad();
      return { kind: "systemd-credential", name: rest };
    case "keyring": {
      const slash = rest.indexOf("/");
      if (slash <= 0 || slash === rest.length - 1) throw bad();
      return { kind: "keyring", service: rest.slice(0, slash), account: rest.slice(slash + 1) };
    }
    case "env":
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(rest)) throw bad();
      return { kind: "env", name: rest };
    default:
      throw bad();
  }
}

export function describeKeySource(source: KeySource): string {
  switch (source.kind) {
    case "file":
      return `file:${source.path}`;
    case "systemd-credential":
      return `systemd-credential:${source.name}`;
    case "keyring":
      return `keyring:${source.service}/${source.account}`;
    case "env":
      return `env:${source.name}`;
  }
}

const PEM_BLOCK = /-----BEGIN PRIVATE KEY-----[\s\S]*?-----END PRIVATE KEY-----/g;

/** Parses one or more PEM private keys from a text; the order is kept (last = newest). */
async function parseKeyBundle(text: string, where: string): Promise<AgentPrivateKey[]> {
  const blocks = text.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) {
    throw new AgentError(
      "KEY_FILE_INVALID",
      `${where} holds no PEM private key; create one with \`oci-cred-agent keygen\``,
      { source: where },
    );
  }
  const keys: AgentPrivateKey[] = [];
  for (const [i, block] of blocks.entries())
    keys.push(await parsePrivateKeyPem(block, blocks.length > 1 ? `${where} (key ${i + 1})` : where));
  return keys;
}

export interface LoadedKeys {
  /** Oldest first, newest last; one entry per key id. */
  readonly keys: readonly AgentPrivateKey[];
  readonly warnings: readonly string[];
}

function dedupe(keys: readonly AgentPrivateKey[]): AgentPrivateKey[] {
  const byKid = new Map<string, AgentPrivateKey>();
  for (const k of keys) {
    byKid.delete(k.kid);
    byKid.set(k.kid, k);
  }
  return [...byKid.values()];
}

/** Reads every key file of a directory (a key directory or a Kubernetes Secret volume), oldest first. */
async function loadKeyDirectory(fs: FileSystem, dir: string): Promise<AgentPrivateKey[]> {
  const files = await listKeyFiles(fs, dir);
  if (files.length === 0) {
    throw new AgentError(
      "KEY_FILE_NOT_FOUND",
      `the key directory ${dir} holds no key file (*.key or *.pem); create one with \`oci-cred-agent keygen --key file:${dir}\``,
      { path: dir },
    );
  }
  const keys: AgentPrivateKey[] = [];
  for (const file of files)
    keys.push(...(await parseKeyBundle(await readProtectedKeyFile(fs, file.path), join(dir, file.name))));
  return keys;
}

/** The warning for a key directory that others than its owner may write; undefined when none may. */
async function keyDirectoryWarning(fs: FileSystem, dir: string, mode: number): Promise<string | undefined> {
  if (!(await writableByOthers(fs, dir, mode))) return undefined;
  const who = [(mode & 0o020) !== 0 ? "its group" : "", (mode & 0o002) !== 0 ? "every user" : ""].filter(Boolean);
  return `the key directory ${dir} has mode ${(mode & 0o7777).toString(8).padStart(4, "0")}: ${who.join(" and ")} may add, rename or remove files in it, so they can retire the agent's keys or put files there that stop it from loading them; run: chmod go-w ${dir}`;
}

export interface KeySourceContext {
  readonly fs: FileSystem;
  readonly env: NodeJS.ProcessEnv;
}

interface KeyringEntry {
  getPassword(): string | null;
  setPassword(password: string): void;
}

async function keyringEntry(service: string, account: string): Promise<KeyringEntry> {
  try {
    const { Entry } = await import("@napi-rs/keyring");
    return new Entry(service, account);
  } catch (error) {
    throw new AgentError(
      "KEY_SOURCE_UNAVAILABLE",
      `the OS keyring cannot be used on this host (${error instanceof Error ? error.message.slice(0, 200) : "load failed"}); use --key file:PATH or systemd-credential:NAME`,
      { source: `keyring:${service}/${account}` },
    );
  }
}

function keyringFailure(source: KeySource, error: unknown): AgentError {
  return new AgentError(
    "KEY_SOURCE_UNAVAILABLE",
    `the OS keyring did not answer for ${describeKeySource(source)} (${error instanceof Error ? error.message.slice(0, 200) : "error"}); is a Secret Service (gnome-keyring, KWallet) running and unlocked for this user?`,
    { source: describeKeySource(source) },
  );
}

export async function loadKeySource(source: KeySource, ctx: KeySourceContext): Promise<LoadedKeys> {
  const warnings: string[] = [];
  switch (source.kind) {
    case "file": {
      let st;
      try {
        st = await ctx.fs.lstat(source.path);
      } catch (error) {
        if (errnoCode(error) === "ENOENT") {
          throw new AgentError(
            "KEY_FILE_NOT_FOUND",
            `the key file ${source.path} does not exist; create it with \`oci-cred-agent keygen --key-file ${source.path}\``,
            { path: source.path },
          );
        }
        throw error;
      }
      if (!st.isDirectory()) {
        const keys = await parseKeyBundle(await readProtectedKeyFile(ctx.fs, source.path), source.path);
        return { keys: dedupe(keys), warnings };
      }
      const keys = await loadKeyDirectory(ctx.fs, source.path);
      const warning = await keyDirectoryWarning(ctx.fs, source.path, st.mode);
      if (warning !== undefined) warnings.push(warning);
      return { keys: dedupe(keys), warnings };
    }
    case "systemd-credential": {
      const dir = ctx.env["CREDENTIALS_DIRECTORY"];
      if (!dir) {
        throw new AgentError(
          "KEY_SOURCE_UNAVAILABLE",
          `systemd-credential:${source.name} needs $CREDENTIALS_DIRECTORY, which systemd sets for a service with LoadCredential= or LoadCredentialEncrypted=${source.name}:...; run the agent from its unit (docs/install-systemd.md)`,
          { source: describeKeySource(source) },
        );
      }
      const path = join(dir, source.name);
      const keys = await parseKeyBundle(await readProtectedKeyFile(ctx.fs, path), path);
      return { keys: dedupe(keys), warnings };
    }
    case "keyring": {
      const entry = await keyringEntry(source.service, source.account);
      let text: string | null;
      try {
        text = entry.getPassword();
      } catch (error) {
        throw keyringFailure(source, error);
      }
      if (text === null) {
        throw new AgentError(
          "KEY_KEYRING_ENTRY_NOT_FOUND",
          `the keyring has no entry for service ${JSON.stringify(source.service)}, account ${JSON.stringify(source.account)}; create it with \`oci-cred-agent keygen --key ${describeKeySource(source)}\` (as the agent's user), or check the --key value`,
          { source: describeKeySource(source) },
        );
      }
      return { keys: dedupe(await parseKeyBundle(text, describeKeySource(source))), warnings };
    }
    case "env": {
      const text = ctx.env[source.name];
      if (text === undefined || text === "") {
        throw new AgentError(
          "KEY_ENV_NOT_SET",
          `the environment variable ${source.name} (--key env:${source.name}) is ${text === undefined ? "not set" : "empty"}; set it to the agent's PEM private key (what \`oci-cred-agent keygen\` writes), or use --key file:PATH`,
          { source: describeKeySource(source) },
        );
      }
      warnings.push(
        `the private key comes from the environment variable ${source.name}: environment variables leak into child processes and crash dumps; prefer file:, systemd-credential: or keyring:. The agent leaves ${source.name} out of the environment it gives runs, but a run that is not isolated from the agent (no sandbox) can still read the agent's own environment through /proc/<agent pid>/environ; only a sandboxed run cannot`,
      );
      return { keys: dedupe(await parseKeyBundle(text, describeKeySource(source))), warnings };
    }
  }
}

/** Stores PEM text in the keyring (keygen --key keyring:...). */
export async function storeInKeyring(source: Extract<KeySource, { kind: "keyring" }>, text: string): Promise<void> {
  const entry = await keyringEntry(source.service, source.account);
  try {
    entry.setPassword(text);
  } catch (error) {
    throw keyringFailure(source, error);
  }
}

export async function readKeyringText(source: Extract<KeySource, { kind: "keyring" }>): Promise<string | null> {
  const entry = await keyringEntry(source.service, source.account);
  try {
    return entry.getPassword();
  } catch (error) {
    throw keyringFailure(source, error);
  }
}
