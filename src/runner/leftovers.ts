/**
 * What a phase leaves running after it ends, found through /proc and SIGKILLed, so that nothing a
 * run started (a double-forked, setsid'ed process included) lives on to read a later run's
 * credentials. Two scopes:
 *
 *   - `pid-namespace`: the runner has a PID namespace of its own (its container's; PID 1 is the
 *     runner, or an init such as tini whose only child it is). After each phase every other
 *     process in it but PID 1 is killed (`kill(-1, SIGKILL)`, which the kernel applies to the
 *     whole namespace at once, so a fork loop cannot outrun it). Nothing escapes this.
 *   - `own-processes` (everywhere else: tests, a runner on a host): every process of the
 *     runner's own uid, other than the runner and its ancestors, whose working directory is under
 *     the work directory or the runner's state directory, or whose environment still holds the
 *     run's private HOME. The limit: a process that leaves those directories, and re-executes
 *     itself with another HOME, after leaving the phase's process group, is not found. On hosts
 *     the bubblewrap sandbox (its own PID namespace) is the isolation that holds.
 *
 * Zombies: a killed leftover stays a zombie until its parent reaps it, and a leftover's parent is
 * the namespace's PID 1. Node reaps only the children it spawned itself (libuv waits for their
 * pids, never for -1) and cannot call waitpid(-1), so the runner is meant to run under tini (the
 * image's ENTRYPOINT; deploy/kubernetes does), which reaps every orphan. As PID 1 itself the
 * runner still kills everything, but the zombies stay until it exits (it warns at start,
 * `runner_is_pid_1`); they hold a PID each, no memory.
 *
 * Also the two start-up checks the runner's guarantees rest on: that the PID namespace is really
 * its own, and that a phase cannot attach to the runner with ptrace.
 */
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { errnoCode } from "../core/errors.js";

export type KillScope =
  | { readonly kind: "pid-namespace" }
  | {
      readonly kind: "own-processes";
      /** Working directories under these mark a run's process. */
      readonly dirs: readonly string[];
      /** An environment entry (HOME=<the run's private HOME>) that marks a run's process. */
      readonly environMarker?: string;
    };

const PROC = "/proc";
/** How long killed processes may take to be gone before the next round looks again. */
const ROUND_WAIT_MS = 2_000;
const MAX_ROUNDS = 20;

interface ProcStat {
  readonly state: string;
  readonly ppid: number;
}

/** State and parent from a /proc/<pid>/stat line. Pure. */
function parseProcStat(stat: string): ProcStat | undefined {
  // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ppid = Number(fields[1]);
  if (fields[0] === undefined || !Number.isInteger(ppid)) return undefined;
  return { state: fields[0], ppid };
}

// /proc is read synchronously: its files are in memory, and a sweep reads hundreds of them
// (through the thread pool, each read would cost several round trips).
function statOf(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`${PROC}/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** Processes still running (zombies only wait for their parent to reap them). */
function liveProcesses(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync(PROC)) {
    if (!/^\d+$/.test(name)) continue;
    const stat = statOf(Number(name));
    if (stat !== undefined && stat.state !== "Z" && stat.state !== "X") pids.push(Number(name));
  }
  return pids;
}

async function waitGone(pids: readonly number[], ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    let any = false;
    for (const pid of pids) {
      const stat = statOf(pid);
      if (stat !== undefined && stat.state !== "Z" && stat.state !== "X") any = true;
    }
    if (!any || Date.now() >= deadline) return;
    await delay(10);
  }
}

function ancestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.ppid;
  while (pid > 0 && !out.has(pid)) {
    out.add(pid);
    pid = statOf(pid)?.ppid ?? 0;
  }
  return out;
}

function under(path: string, dir: string): boolean {
  const p = path.replace(/ \(deleted\)$/, "");
  const d = dir.replace(/\/+$/, "");
  return p === d || p.startsWith(`${d}/`);
}

function isRunProcess(pid: number, uid: number, scope: Extract<KillScope, { kind: "own-processes" }>): boolean {
  try {
    // /proc/<pid> belongs to the process's effective uid.
    if (lstatSync(`${PROC}/${pid}`).uid !== uid) return false;
    const cwd = readlinkSync(`${PROC}/${pid}/cwd`);
    if (scope.dirs.some((dir) => under(cwd, dir))) return true;
    if (scope.environMarker === undefined) return false;
    const environ = readFileSync(`${PROC}/${pid}/environ`, "latin1");
    return environ.split("\0").includes(scope.environMarker);
  } catch {
    return false; // gone meanwhile, or not ours to look at
  }
}

/** Kills what the last phase left running; returns how many processes were killed. */
export async function killLeftovers(scope: KillScope): Promise<number> {
  if (scope.kind === "pid-namespace" && process.pid !== 1 && process.ppid !== 1)
    throw new Error("the runner's PID namespace is no longer its own (its init is gone)");
  const killed = new Set<number>();
  const self = process.pid;
  const spared = scope.kind === "pid-namespace" ? new Set([1]) : ancestors();
  const uid = process.getuid?.() ?? -1;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const found: number[] = [];
    for (const pid of liveProcesses()) {
      if (pid === self || spared.has(pid)) continue;
      if (scope.kind === "pid-namespace" || isRunProcess(pid, uid, scope)) found.push(pid);
    }
    if (found.length === 0) break;
    for (const pid of found) killed.add(pid);
    if (scope.kind === "pid-namespace") {
      // Every process the runner may signal in its namespace, except PID 1 and itself, at once.
      // Only ever with a namespace checked at start to be the runner's own (checkPidNamespace).
      signal(-1);
    } else {
      for (const pid of found) signal(pid);
    }
    await waitGone(found, ROUND_WAIT_MS);
  }
  return killed.size;
}

function signal(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone already, or nothing left to signal
  }
}

/**
 * Whether this PID namespace is the runner's own: it is PID 1, or PID 1 is its parent (an init
 * such as tini) and nothing else runs in it. Returns the number of other processes found.
 */
export function otherProcessesInNamespace(): number {
  if (process.pid === 1) return 0;
  const pids = liveProcesses();
  // PID 1 must be visible (a /proc mounted with hidepid hides other users' processes) and our parent.
  if (process.ppid !== 1 || !pids.includes(1)) return Math.max(1, pids.length - 1);
  return pids.filter((pid) => pid !== 1 && pid !== process.pid).length;
}

/**
 * Whether processes of the runner's user cannot attach to it: Yama's ptrace_scope is 1 or more
 * (a process may trace only its descendants; a phase is the runner's descendant, never its
 * ancestor). Without Yama, or with scope 0, a phase could take over the runner (or its init)
 * through ptrace or /proc/<pid>/mem and outlive its phase inside it.
 */
export async function ptraceRestricted(scopeFile = "/proc/sys/kernel/yama/ptrace_scope"): Promise<boolean> {
  try {
    const scope = Number((await readFile(scopeFile, "utf8")).trim());
    return Number.isInteger(scope) && scope >= 1;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  }
}
