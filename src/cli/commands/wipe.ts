import { wipeRunDir } from "../../fs/run-dir.js";
import { realFs } from "../../fs/secure-fs.js";
import { printJson } from "../io.js";

export async function wipe(opts: { runDir: string; format: string }): Promise<number> {
  const report = await wipeRunDir(realFs, opts.runDir);
  if (opts.format === "json") await printJson({ run_dir: opts.runDir, removed: report.removed, absent: report.absent });
  else process.stderr.write(report.absent ? `oci-cred-agent: ${opts.runDir} does not exist; nothing to wipe\n` : `oci-cred-agent: wiped ${opts.runDir} (${report.removed.length} files)\n`);
  return 0;
}
