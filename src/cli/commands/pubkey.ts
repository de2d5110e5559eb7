import { publicKeyDoc, publicKeyOfPem } from "../../crypto/agent-key.js";
import { readProtectedKeyFile } from "../../fs/key-file.js";
import { realFs } from "../../fs/secure-fs.js";
import { printJson } from "../io.js";

export async function pubkey(opts: { keyFile: string }): Promise<number> {
  const pem = await readProtectedKeyFile(realFs, opts.keyFile);
  await printJson(publicKeyDoc(publicKeyOfPem(pem, opts.keyFile)));
  return 0;
}
