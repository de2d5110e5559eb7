/** `--key URI` or `--key-file PATH` (the same as --key file:PATH): exactly one of them. */
import { AgentError } from "../core/errors.js";
import { parseKeyUri, type KeySource } from "../keys/key-source.js";

export interface KeyOptions {
  readonly key?: string;
  readonly keyFile?: string;
}

export function keySourceFrom(opts: KeyOptions): KeySource {
  if (opts.key !== undefined && opts.keyFile !== undefined) {
    throw new AgentError("INVALID_ARGUMENT", "give either --key URI or --key-file PATH, not both", { flag: "--key" });
  }
  if (opts.keyFile !== undefined) return { kind: "file", path: opts.keyFile };
  if (opts.key !== undefined) return parseKeyUri(opts.key);
  throw new AgentError(
    "INVALID_ARGUMENT",
    "the private key is missing: pass --key-file PATH or --key URI (file:, systemd-credential:, keyring:, env:)",
    { flag: "--key" },
  );
}
