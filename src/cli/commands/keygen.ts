import { generatePrivateKeyPem, publicKeyDoc, publicKeyOfPem } from "../../crypto/agent-key.js";
import { createKeyFile } from "../../fs/key-file.js";
import { realFs } from "../../fs/secure-fs.js";
import { printJson } from "../io.js";

export async function keygen(opts: { keyFile: string }): Promise<number> {
  const pem = generatePrivateKeyPem();
  await createKeyFile(realFs, opts.keyFile, pem);
  await printJson(publicKeyDoc(publicKeyOfPem(pem, opts.keyFile)));
  return 0;
}
