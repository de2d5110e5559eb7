/**
 * A booted Debian 12 for tests: systemd as PID 1 under `systemd-nspawn -b`, on its own loopback
 * (`--private-network`), on a throw-away overlay of a cached debootstrap tree (`--volatile=overlay`:
 * every boot starts from the same fresh system and leaves the cache untouched).
 *
 * The host here has no systemd and no system bus, so nspawn runs with `--keep-unit
 * --register=no` and there is no machinectl: commands enter the guest with `nsenter` into its
 * PID 1's namespaces, as root, with a login-like environment. nspawn is started inside a cgroup
 * of its own, so the `payload`/`supervisor` cgroups it creates land beneath it and are removed
 * with it. Every step is bounded in time; `shutdown()` powers the guest off (never while a
 * command runs inside it: that can hang the guest's shutdown), and on any failure kills
 * everything in that cgroup and removes it, and nspawn's propagate directory.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  readonly stdin?: string;
  readonly timeoutMs?: number;
  readonly env?: Readonly<Record<string, string>>;
}

/** A command left running in the guest (for example `journalctl -f`), read as it goes. */
export interface RunningCommand {
  /** Resolves with the output so far once `predicate` holds for it (bounded by `timeoutMs`). */
  waitForOutput(predicate: (stdout: string) => boolean, timeoutMs: number): Promise<string>;
  /** Ends it (SIGINT, as Ctrl-C would, then SIGKILL) and resolves with its output. */
  stop(): Promise<ExecResult>;
}

interface BindMount {
  readonly host: string;
  readonly guest: string;
  readonly readOnly?: boolean;
}

export interface BootOptions {
  /** The debootstrap tree (left unchanged). */
  readonly root: string;
  readonly binds: readonly BindMount[];
  readonly bootTimeoutMs?: number;
}

const GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** What `sudo -i` gives root on Debian, without a terminal. */
const LOGIN_ENV: Record<string, string> = {
  PATH: GUEST_PATH,
  HOME: "/root",
  USER: "root",
  LOGNAME: "root",
  SHELL: "/bin/bash",
  LANG: "C.UTF-8",
  TERM: "dumb",
  SYSTEMD_PAGER: "",
  SYSTEMD_COLORS: "0",
};

/** cgroup hierarchies nspawn uses: the named systemd v1 one and the unified one (hybrid), or v2 alone. */
function cgroupRoots(): string[] {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return ["/sys/fs/cgroup"];
  return ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"].filter((d) => existsSync(join(d, "cgroup.procs")));
}

function killCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  if (existsSync(join(dir, "cgroup.kill"))) {
    try {
      writeFileSync(join(dir, "cgroup.kill"), "1");
    } catch {
      /* fall back to the process list */
    }
  }
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) killCgroupTree(join(dir, entry.name));
  }
  for (const pid of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(dir, entry.name));
  }
  rmdirSync(dir);
}

async function removeCgroupTreeWhenEmpty(dir: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      removeCgroupTree(dir);
      return;
    } catch (error) {
      // EBUSY while the killed processes are still being reaped.
      if (Date.now() > deadline) throw error;
      killCgroupTree(dir);
      await delay(50);
    }
  }
}

function collect(child: ChildProcess): { out: () => string; err: () => string } {
  let out = "";
  let err = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (err += d));
  return { out: () => out, err: () => err };
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once("close", (code) => resolve(code));
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    /* already gone */
  }
}

/** The guest's PID 1 as the host sees it: the descendant of nspawn whose innermost pid is 1. */
function findGuestInit(nspawnPid: number): number | undefined {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, "utf8");
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      /* exited meanwhile */
    }
  }
  const queue = [...(children.get(nspawnPid) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    try {
      const nspid = /^NSpid:\s+(.*)$/m
        .exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]
        ?.trim()
        .split(/\s+/);
      if (nspid !== undefined && nspid.length > 1 && nspid[nspid.length - 1] === "1") return pid;
    } catch {
      /* exited meanwhile */
    }
    queue.push(...(children.get(pid) ?? []));
  }
  return undefined;
}

export class BootedGuest {
  private readonly running = new Set<ChildProcess>();
  private stopped = false;

  private constructor(
    private readonly nspawn: ChildProcess,
    private readonly initPid: number,
    private readonly machine: string,
    private readonly cgroups: readonly string[],
  ) {}

  /**
   * Removes what a test process that died without shutting its guest down left: its guests
   * (named after its pid), their cgroups and nspawn's propagate directories.
   */
  private static async reapStale(): Promise<void> {
    for (const root of cgroupRoots()) {
      for (const name of readdirSync(root)) {
        const pid = /^oca-boot-(\d+)$/.exec(name)?.[1];
        if (pid === undefined || existsSync(`/proc/${pid}`)) continue;
        killCgroupTree(join(root, name));
        await removeCgroupTreeWhenEmpty(join(root, name), 10_000);
        rmSync(`/run/systemd/nspawn/propagate/${name}`, { recursive: true, force: true });
      }
    }
  }

  static async boot(options: BootOptions): Promise<BootedGuest> {
    await BootedGuest.reapStale();
    const machine = `oca-boot-${process.pid}`;
    const cgroups = cgroupRoots().map((root) => join(root, machine));
    for (const dir of cgroups) mkdirSync(dir, { recursive: true });
    const args = [
      "--quiet",
      `--directory=${options.root}`,
      `--machine=${machine}`,
      "--keep-unit",
      "--register=no",
      "--private-network",
      "--volatile=overlay",
      "--console=read-only",
      "--link-journal=no",
      "--resolv-conf=off",
      "--timezone=off",
      ...options.binds.map((b) => `--bind${b.readOnly === true ? "-ro" : ""}=${b.host}:${b.guest}`),
      "--boot",
    ];
    // Into our own cgroup first, so what nspawn creates is ours to kill and remove.
    const script = 'for c in "$@"; do echo $$ > "$c/cgroup.procs"; done; exec systemd-nspawn "${NSPAWN_ARGS[@]}"';
    const nspawn = spawn(
      "bash",
      [
        "-c",
        `NSPAWN_ARGS=(${args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ")}); ${script}`,
        "bash",
        ...cgroups,
      ],
      { stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    const consoleOutput = collect(nspawn);
    const guest = { value: undefined as BootedGuest | undefined };
    const deadline = Date.now() + (options.bootTimeoutMs ?? 90_000);
    try {
      let initPid: number | undefined;
      while (initPid === undefined) {
        if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited with ${nspawn.exitCode}`);
        if (Date.now() > deadline) throw new Error("the guest's init did not start in time");
        initPid = nspawn.pid === undefined ? undefined : findGuestInit(nspawn.pid);
        if (initPid === undefined) await delay(50);
      }
      guest.value = new BootedGuest(nspawn, initPid, machine, cgroups);
      // `--wait` returns once start-up has finished: "running", or "degraded" when a unit failed;
      // "offline" while PID 1 does not answer yet.
      for (;;) {
        const state = await guest.value.exec("systemctl is-system-running --wait || true", {
          timeoutMs: Math.max(1_000, deadline - Date.now()),
        });
        if (/^(running|degraded)$/m.test(state.stdout)) return guest.value;
        if (Date.now() > deadline) throw new Error(`the guest did not finish booting: ${state.stdout}${state.stderr}`);
        await delay(100);
      }
    } catch (error) {
      if (guest.value !== undefined) await guest.value.destroy();
      else await BootedGuest.cleanUp(nspawn, machine, cgroups);
      // The guest's console says why it did not boot.
      const consoleTail = (consoleOutput.out() + consoleOutput.err()).split("\n").slice(-40).join("\n");
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- guest console\n${consoleTail}`, {
        cause: error,
      });
    }
  }

  private spawnInGuest(script: string, env: Readonly<Record<string, string>> | undefined): ChildProcess {
    if (this.stopped) throw new Error("the guest has been shut down");
    const vars = Object.entries({ ...LOGIN_ENV, ...env }).map(([k, v]) => `${k}=${v}`);
    const child = spawn(
      "nsenter",
      [`--target=${this.initPid}`, "--all", "--", "/usr/bin/env", "-i", ...vars, "/bin/bash", "-c", script],
      { stdio: ["pipe", "pipe", "pipe"], detached: true },
    );
    this.running.add(child);
    child.once("close", () => this.running.delete(child));
    return child;
  }

  /**
   * Runs a bash script as root in the guest, in /root, with `set -euo pipefail`: the first
   * failing command fails it. Killed (with everything it started) when `timeoutMs` passes.
   */
  async exec(script: string, options: ExecOptions = {}): Promise<ExecResult> {
    const child = this.spawnInGuest(`cd /root\nset -euo pipefail\n${script}`, options.env);
    const output = collect(child);
    child.stdin?.end(options.stdin ?? "");
    const timeoutMs = options.timeoutMs ?? 30_000;
    const timer = setTimeout(() => killGroup(child, "SIGKILL"), timeoutMs);
    try {
      const code = await exitOf(child);
      if (child.signalCode === "SIGKILL") {
        throw new Error(
          `timed out after ${timeoutMs} ms in the guest: ${script}\n${output.out()}\n${output.err()}`.trim(),
        );
      }
      return { code, stdout: output.out(), stderr: output.err() };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Like exec, but a non-zero exit throws with the script's output. */
  async run(script: string, options: ExecOptions = {}): Promise<string> {
    const result = await this.exec(script, options);
    if (result.code !== 0) {
      throw new Error(
        `exit ${result.code} in the guest:\n${script}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
      );
    }
    return result.stdout;
  }

  /** Starts a command that runs until stopped (a follow, a blocking write). */
  start(script: string, options: { env?: Readonly<Record<string, string>> } = {}): RunningCommand {
    const child = this.spawnInGuest(`cd /root\nset -euo pipefail\n${script}`, options.env);
    child.stdin?.end();
    const output = collect(child);
    return {
      async waitForOutput(predicate, timeoutMs) {
        const deadline = Date.now() + timeoutMs;
        await new Promise<void>((resolve, reject) => {
          const check = (): void => {
            if (predicate(output.out())) {
              cleanup();
              resolve();
            } else if (Date.now() > deadline || child.exitCode !== null || child.signalCode !== null) {
              cleanup();
              reject(new Error(`no expected output from \`${script}\`:\n${output.out()}\n${output.err()}`));
            }
          };
          const timer = setInterval(check, 100);
          child.stdout?.on("data", check);
          child.once("close", check);
          const cleanup = (): void => {
            clearInterval(timer);
            child.stdout?.off("data", check);
            child.off("close", check);
          };
          check();
        });
        return output.out();
      },
      async stop() {
        killGroup(child, "SIGINT");
        const timer = setTimeout(() => killGroup(child, "SIGKILL"), 5_000);
        const code = await exitOf(child);
        clearTimeout(timer);
        return { code, stdout: output.out(), stderr: output.err() };
      },
    };
  }

  /** Where to find it: nspawn's and the guest init's process ids, as the host sees them. */
  describe(): string {
    return `systemd-nspawn ${this.nspawn.pid ?? "?"}, guest init ${this.initPid}`;
  }

  /** Powers the guest off (bounded); anything left is killed. Idempotent. */
  async shutdown(timeoutMs = 30_000): Promise<void> {
    if (this.stopped) return;
    // Nothing may still run inside the guest while it shuts down.
    for (const child of this.running) killGroup(child, "SIGKILL");
    await Promise.all([...this.running].map((c) => exitOf(c)));
    this.stopped = true;
    if (this.nspawn.exitCode === null && this.nspawn.signalCode === null) {
      // SIGTERM to nspawn asks the guest's init for a clean poweroff.
      killGroup(this.nspawn, "SIGTERM");
      const timer = setTimeout(() => killGroup(this.nspawn, "SIGKILL"), timeoutMs);
      await exitOf(this.nspawn);
      clearTimeout(timer);
    }
    await BootedGuest.cleanUp(this.nspawn, this.machine, this.cgroups);
  }

  private async destroy(): Promise<void> {
    this.stopped = true;
    for (const child of this.running) killGroup(child, "SIGKILL");
    await BootedGuest.cleanUp(this.nspawn, this.machine, this.cgroups);
  }

  private static async cleanUp(nspawn: ChildProcess, machine: string, cgroups: readonly string[]): Promise<void> {
    killGroup(nspawn, "SIGKILL");
    for (const dir of cgroups) killCgroupTree(dir);
    await exitOf(nspawn);
    for (const dir of cgroups) await removeCgroupTreeWhenEmpty(dir, 10_000);
    rmSync(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true, force: true });
  }
}
