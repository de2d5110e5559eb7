/**
 * Processes seen from this host through /proc, in any PID namespace: for tests that check what a
 * phase left behind without trusting pids recorded inside a sandbox, and without pgrep (whose
 * pattern would match the shell that runs it).
 */
import { readdir, readFile } from "node:fs/promises";

/**
 * Live processes (not zombies) whose arguments (or, with `source` "environ", environment
 * entries) satisfy `match`.
 */
export async function liveProcessesWhere(
  match: (entries: string[]) => boolean,
  source: "cmdline" | "environ" = "cmdline",
): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const entries = await readFile(`/proc/${name}/${source}`, "utf8");
      const st = await readFile(`/proc/${name}/stat`, "utf8");
      const state = st.slice(st.lastIndexOf(")") + 2).split(" ")[0];
      if (state !== "Z" && match(entries.split("\0"))) found.push(Number(name));
    } catch {
      // gone
    }
  }
  return found;
}
