/**
 * tofu processes a previous agent process left running (it was SIGKILLed or crashed without its
 * service manager killing the rest: systemd's KillMode and a pod's restart do, a bare process
 * does not). Their runs have already failed at the control plane (the lease expired), their
 * credentials are about to be swept, and they must not go on applying. Found through /proc
 * (Linux): processes of the agent's user whose working directory is a run workspace and whose
 * environment names that run's credentials (TF_CLI_CONFIG_FILE under the credentials directory,
 * which the agent gives every phase; an operator's shell that happens to stand there does not
 * have it). Each gets
 * SIGTERM to its process group (tofu releases its state lock on SIGTERM), then SIGKILL after the
 * grace period. Elsewhere, or without /proc, nothing is found.
 */
import { readdir, readFile, readlink } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";

interface OrphanProcess {
  readonly pid: number;
  readonly pgid: number;
  readonly runId: string;
}

/** The process group of a /proc/<pid>/stat line (the field after state), or undefined. Pure. */
export function processGroupOf(stat: string): number | undefined {
  // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const pgid = Number(fields[2]);
  return Number.isInteger(pgid) && pgid > 0 ? pgid : undefined;
}

/** The run a working directory belongs to, if it is inside `workspacesDir`. Pure. */
export function runOfWorkingDirectory(cwd: string, workspacesDir: string): string | undefined {
  const prefix = `${workspacesDir.replace(/\/+$/, "")}/`;
  if (!cwd.startsWith(prefix)) return undefined;
  const runId = cwd
    .slice(prefix.length)
    .split("/")[0]
    ?.replace(/ \(deleted\)$/, "");
  return runId === undefined || runId === "" ? undefined : runId;
}

/** Whether a /proc/<pid>/environ names a run's CLI configuration under `credentialsDir`. Pure. */
export function startedForRun(environ: string, credentialsDir: string, runId: string): boolean {
  const expected = `TF_CLI_CONFIG_FILE=${credentialsDir.replace(/\/+$/, "")}/${runId}/`;
  return environ.split("\0").some((entry) => entry.startsWith(expected));
}

async function findOrphans(workspacesDir: string, credentialsDir: string, procDir = "/proc"): Promise<OrphanProcess[]> {
  let names: string[];
  try {
    names = await readdir(procDir);
  } catch {
    return [];
  }
  const found: OrphanProcess[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const runId = runOfWorkingDirectory(await readlink(`${procDir}/${name}/cwd`), workspacesDir);
      if (runId === undefined) continue;
      if (!startedForRun(await readFile(`${procDir}/${name}/environ`, "latin1"), credentialsDir, runId)) continue;
      const pgid = processGroupOf(await readFile(`${procDir}/${name}/stat`, "utf8"));
      if (pgid !== undefined) found.push({ pid: Number(name), pgid, runId });
    } catch {
      // gone meanwhile, or another user's process (EACCES): not ours to stop
    }
  }
  return found;
}

/** The state letter of a /proc/<pid>/stat line (R, S, D, Z, ...). Pure. */
export function processStateOf(stat: string): string | undefined {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
}

/** Still running: present in /proc and not a zombie waiting for its new parent to reap it. */
async function alive(pid: number): Promise<boolean> {
  try {
    const state = processStateOf(await readFile(`/proc/${pid}/stat`, "utf8"));
    return state !== undefined && state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

async function anyAlive(orphans: readonly OrphanProcess[]): Promise<boolean> {
  for (const o of orphans) if (await alive(o.pid)) return true;
  return false;
}

function signalGroup(orphan: OrphanProcess, signal: NodeJS.Signals, ownGroup: number | undefined): void {
  try {
    // The agent starts tofu in a process group of its own; never signal the agent's own group.
    if (orphan.pgid !== ownGroup) process.kill(-orphan.pgid, signal);
    else process.kill(orphan.pid, signal);
  } catch {
    // already gone
  }
}

/** How long a SIGKILLed orphan may take to be gone (an uninterruptible sleep can delay it). */
const KILL_WAIT_MS = 5_000;

/** Stops every orphan: SIGTERM, up to `graceMs` to exit, then SIGKILL. Returns how many were found. */
export async function stopOrphans(
  workspacesDir: string,
  credentialsDir: string,
  graceMs: number,
  log: Logger,
): Promise<number> {
  const orphans = await findOrphans(workspacesDir, credentialsDir);
  if (orphans.length === 0) return 0;
  const ownGroup = processGroupOf(await readFile("/proc/self/stat", "utf8").catch(() => ""));
  for (const o of orphans) {
    log.warn(
      { event: "orphan_found", run_id: o.runId, pid: o.pid },
      `tofu of run ${o.runId} (pid ${o.pid}) was left running by an earlier agent process; stopping it`,
    );
    signalGroup(o, "SIGTERM", ownGroup);
  }
  const deadline = Date.now() + graceMs;
  while ((await anyAlive(orphans)) && Date.now() < deadline) await delay(50);
  const killed = new Set<number>();
  for (const o of orphans) {
    if (!(await alive(o.pid))) continue;
    signalGroup(o, "SIGKILL", ownGroup);
    killed.add(o.pid);
  }
  // SIGKILL is asynchronous: the sweep that follows must not race a process still exiting.
  const killDeadline = Date.now() + KILL_WAIT_MS;
  while (killed.size > 0 && (await anyAlive(orphans)) && Date.now() < killDeadline) await delay(20);
  for (const o of orphans) {
    const fields = {
      event: "orphan_stopped",
      run_id: o.runId,
      pid: o.pid,
      signal: killed.has(o.pid) ? "SIGKILL" : "SIGTERM",
    };
    if (await alive(o.pid))
      log.error(
        { ...fields, event: "orphan_not_stopped" },
        `the leftover tofu of run ${o.runId} (pid ${o.pid}) is still running after SIGKILL; stop it by hand`,
      );
    else log.warn(fields, `stopped the leftover tofu of run ${o.runId}`);
  }
  return orphans.length;
}
