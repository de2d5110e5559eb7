import { AgentError, errnoCode } from "../../core/errors.js";
import { generatePrivateKeyPem, publicKeyDoc, publicKeyOfPem } from "../../crypto/agent-key.js";
import { createKeyFile } from "../../fs/key-file.js";
import { realFs } from "../../fs/secure-fs.js";
import { addKeyFile, isKeyFileName } from "../../keys/key-directory.js";
import { describeKeySource, readKeyringText, storeInKeyring } from "../../keys/key-source.js";
import { keySourceFrom, type KeyOptions } from "../key-option.js";
import { printJson } from "../io.js";

export async function keygen(opts: KeyOptions & { rotate?: boolean }): Promise<number> {
  const source = keySourceFrom(opts);
  const pem = generatePrivateKeyPem();
  switch (source.kind) {
    case "file": {
      const st = await realFs.lstat(source.path).catch((error: unknown) => {
        if (errnoCode(error) === "ENOENT") return undefined;
        throw error;
      });
      if (st?.isDirectory()) {
        const existing = (await realFs.readdir(source.path)).filter(isKeyFileName);
        if (existing.length > 0 && opts.rotate !== true) {
          throw new AgentError(
            "KEY_FILE_EXISTS",
            `${source.path} already holds ${existing.length} key file(s); pass --rotate to add a new key beside them`,
            { path: source.path },
          );
        }
        // Named by time, and checked to be the newest by the key directory's ordering rule.
        await addKeyFile(realFs, source.path, pem, new Date());
      } else if (st !== undefined && opts.rotate === true) {
        throw new AgentError(
          "INVALID_ARGUMENT",
          `${source.path} is a single key file; rotation keeps several keys side by side in a directory. Move the key into a directory (mode 0700) and run keygen --rotate --key file:DIR`,
          { path: source.path },
        );
      } else {
        await createKeyFile(realFs, source.path, pem);
      }
      break;
    }
    case "keyring": {
      const existing = await readKeyringText(source);
      if (existing !== null && opts.rotate !== true) {
        throw new AgentError(
          "KEY_FILE_EXISTS",
          `${describeKeySource(source)} already holds a key; pass --rotate to add a new one beside it`,
          { source: describeKeySource(source) },
        );
      }
      await storeInKeyring(source, existing === null ? pem : `${existing.trimEnd()}\n${pem}`);
      break;
    }
    case "systemd-credential":
    case "env":
      throw new AgentError(
        "INVALID_ARGUMENT",
        `keygen cannot write to ${describeKeySource(source)}: create a key file with --key-file, then hand it to systemd (systemd-creds encrypt) or the environment`,
        { flag: "--key" },
      );
  }
  await printJson(publicKeyDoc(publicKeyOfPem(pem, "the new key")));
  return 0;
}
