/** Loads the agent's private key(s) into a key ring indexed by key id. */
import type { AgentPrivateKey } from "../crypto/agent-key.js";
import { parsePrivateKeyPem } from "../crypto/agent-key.js";
import { readProtectedKeyFile } from "../fs/key-file.js";
import type { FileSystem } from "../fs/secure-fs.js";

export type KeyRing = ReadonlyMap<string, AgentPrivateKey>;

export async function loadKeyFileRing(fs: FileSystem, keyFile: string): Promise<KeyRing> {
  const key = await parsePrivateKeyPem(await readProtectedKeyFile(fs, keyFile), keyFile);
  return new Map([[key.kid, key]]);
}
