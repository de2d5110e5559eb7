import { wipeCredentialDir } from "../../credentials/run-credentials.js";
import { realFs } from "../../fs/secure-fs.js";
import { printJson } from "../io.js";

/** `wipe`: a refusal (a foreign entry, a directory the agent did not create) exits 1 with its code. */
export async function wipe(opts: { runDir: string; format: string }): Promise<number> {
  const outcome = await wipeCredentialDir(realFs, opts.runDir, () => undefined);
  if (!outcome.ok) throw outcome.error;
  if (opts.format === "json")
    await printJson({ run_dir: opts.runDir, removed: outcome.removed, absent: outcome.absent });
  else
    process.stderr.write(
      outcome.absent
        ? `oci-cred-agent: ${opts.runDir} does not exist; nothing to wipe\n`
        : `oci-cred-agent: wiped ${opts.runDir} (${outcome.removed.length} files)\n`,
    );
  return 0;
}
