import { publicKeyDoc } from "../../crypto/agent-key.js";
import { realFs } from "../../fs/secure-fs.js";
import { loadKeySource } from "../../keys/key-source.js";
import { keySourceFrom, type KeyOptions } from "../key-option.js";
import { printJson } from "../io.js";

/** Prints the newest key's public key document; with --all, every key's, oldest first. */
export async function pubkey(opts: KeyOptions & { all?: boolean }): Promise<number> {
  const { keys, warnings } = await loadKeySource(keySourceFrom(opts), { fs: realFs, env: process.env });
  for (const w of warnings) process.stderr.write(`oci-cred-agent: warning: ${w}\n`);
  const docs = keys.map((k) => publicKeyDoc(k.publicKey));
  await printJson(opts.all === true ? docs : docs[docs.length - 1]);
  return 0;
}
