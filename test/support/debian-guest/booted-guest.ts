/**
 * A booted Debian 12 for tests: systemd as PID 1 under `systemd-nspawn -b`, on its own loopback
 * (`--private-network`), on an overlay of a cached debootstrap tree that this module mounts: the
 * cache stays untouched, every test run starts from the same fresh system, and what the guest
 * writes survives a reboot of the guest (nspawn exits with 133 and is started again).
 *
 * The host here has no systemd and no system bus, so nspawn runs with `--keep-unit
 * --register=no` and there is no machinectl: commands enter the guest with `nsenter` into its
 * PID 1's namespaces, as root, with a login-like environment. nspawn is started inside a cgroup
 * of its own, so the `payload`/`supervisor` cgroups it creates land beneath it and are removed
 * with it. Every step is bounded in time. Nothing runs inside the guest while it shuts down or
 * reboots (that can hang it): `shutdown()` and `reboot()` kill running commands first. On any
 * ending, everything in the cgroup is killed and the cgroups, the overlay and nspawn's propagate
 * directory are removed; a later boot also removes what a killed test process left.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
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

/** Unmounts the guest's overlay (lazily if something still holds it) and removes its directories. */
function unmountOverlay(stateDir: string): void {
  const root = join(stateDir, "root");
  if (readFileSync("/proc/self/mountinfo", "utf8").includes(` ${root} `)) {
    try {
      execFileSync("umount", [root]);
    } catch {
      execFileSync("umount", ["--lazy", root]);
    }
  }
  rmSync(stateDir, { recursive: true, force: true });
}

/** A started nspawn, with the guest's init once it is there. */
interface Machine {
  readonly nspawn: ChildProcess;
  readonly console: { out: () => string; err: () => string };
}

export class BootedGuest {
  private readonly running = new Set<ChildProcess>();
  private stopped = false;
  private initPid = 0;
  private machine: Machine | undefined;

  private constructor(
    private readonly options: BootOptions,
    private readonly name: string,
    /** The overlay's directories: upper, work, and the merged root nspawn boots. */
    private readonly stateDir: string,
    private readonly cgroups: readonly string[],
  ) {}

  /**
   * Removes what a test process that died without shutting its guest down left: its guests
   * (named after its pid), their cgroups, overlay and nspawn's propagate directories.
   */
  private static async reapStale(): Promise<void> {
    const names = new Set<string>();
    for (const root of cgroupRoots()) for (const name of readdirSync(root)) names.add(name);
    for (const name of readdirSync(tmpdir())) names.add(name);
    for (const name of names) {
      const pid = /^oca-boot-(\d+)$/.exec(name)?.[1];
      if (pid === undefined || existsSync(`/proc/${pid}`)) continue;
      for (const root of cgroupRoots()) {
        killCgroupTree(join(root, name));
        await removeCgroupTreeWhenEmpty(join(root, name), 10_000);
      }
      unmountOverlay(join(tmpdir(), name));
      rmSync(`/run/systemd/nspawn/propagate/${name}`, { recursive: true, force: true });
    }
  }

  static async boot(options: BootOptions): Promise<BootedGuest> {
    await BootedGuest.reapStale();
    const name = `oca-boot-${process.pid}`;
    const stateDir = join(tmpdir(), name);
    const cgroups = cgroupRoots().map((root) => join(root, name));
    for (const dir of cgroups) mkdirSync(dir, { recursive: true });
    const guest = new BootedGuest(options, name, stateDir, cgroups);
    try {
      // A writable overlay on the cached tree: the cache stays as it is, and what the guest
      // writes survives a reboot of the guest (but not this test).
      for (const d of ["upper", "work", "root"]) mkdirSync(join(stateDir, d), { recursive: true });
      execFileSync("mount", [
        "-t",
        "overlay",
        "overlay",
        "-o",
        `lowerdir=${options.root},upperdir=${join(stateDir, "upper")},workdir=${join(stateDir, "work")}`,
        join(stateDir, "root"),
      ]);
      await guest.bootMachine();
      return guest;
    } catch (error) {
      await guest.destroy();
      throw error;
    }
  }

  /** Starts nspawn on the overlay and waits (bounded) until the guest has booted. */
  private async bootMachine(): Promise<void> {
    const args = [
      "--quiet",
      `--directory=${join(this.stateDir, "root")}`,
      `--machine=${this.name}`,
      "--keep-unit",
      "--register=no",
      "--private-network",
      "--console=read-only",
      "--link-journal=no",
      "--resolv-conf=off",
      "--timezone=off",
      ...this.options.binds.map((b) => `--bind${b.readOnly === true ? "-ro" : ""}=${b.host}:${b.guest}`),
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
        ...this.cgroups,
      ],
      { stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    this.machine = { nspawn, console: collect(nspawn) };
    const deadline = Date.now() + (this.options.bootTimeoutMs ?? 90_000);
    try {
      let initPid: number | undefined;
      while (initPid === undefined) {
        if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited with ${nspawn.exitCode}`);
        if (Date.now() > deadline) throw new Error("the guest's init did not start in time");
        initPid = nspawn.pid === undefined ? undefined : findGuestInit(nspawn.pid);
        if (initPid === undefined) await delay(50);
      }
      this.initPid = initPid;
      // `--wait` returns once start-up has finished: "running", or "degraded" when a unit failed;
      // "offline" while PID 1 does not answer yet.
      for (;;) {
        const state = await this.exec("systemctl is-system-running --wait || true", {
          timeoutMs: Math.max(1_000, deadline - Date.now()),
        });
        if (/^(running|degraded)$/m.test(state.stdout)) return;
        if (Date.now() > deadline) throw new Error(`the guest did not finish booting: ${state.stdout}${state.stderr}`);
        await delay(100);
      }
    } catch (error) {
      // The guest's console says why it did not boot.
      const output = this.machine.console;
      const consoleTail = (output.out() + output.err()).split("\n").slice(-40).join("\n");
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- guest console\n${consoleTail}`, {
        cause: error,
      });
    }
  }

  /**
   * Reboots the guest as `systemctl reboot` does, and waits until it has booted again. nspawn
   * exits with 133 when its guest reboots; it is started again on the same overlay.
   */
  async reboot(timeoutMs = 60_000): Promise<void> {
    const machine = this.machine;
    if (machine === undefined || this.stopped) throw new Error("the guest is not running");
    // Nothing may run inside the guest while it goes down.
    await this.killCommands();
    const exited = exitOf(machine.nspawn);
    await this.exec("systemctl reboot");
    await this.killCommands();
    const timer = setTimeout(() => killGroup(machine.nspawn, "SIGKILL"), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    if (code !== 133) throw new Error(`systemd-nspawn exited with ${code} on reboot, not 133`);
    for (const dir of this.cgroups) {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        if (entry.isDirectory()) await removeCgroupTreeWhenEmpty(join(dir, entry.name), 10_000);
      }
    }
    await this.bootMachine();
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
    // A command that exits without reading its stdin closes the pipe: not an error.
    child.stdin.on("error", () => undefined);
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
    return `systemd-nspawn ${this.machine?.nspawn.pid ?? "?"}, guest init ${this.initPid}, overlay ${this.stateDir}`;
  }

  /** Powers the guest off (bounded); anything left is killed. Idempotent. */
  async shutdown(timeoutMs = 30_000): Promise<void> {
    if (this.stopped) return;
    await this.killCommands();
    this.stopped = true;
    const nspawn = this.machine?.nspawn;
    if (nspawn !== undefined && nspawn.exitCode === null && nspawn.signalCode === null) {
      // SIGTERM to nspawn asks the guest's init for a clean poweroff.
      killGroup(nspawn, "SIGTERM");
      const timer = setTimeout(() => killGroup(nspawn, "SIGKILL"), timeoutMs);
      await exitOf(nspawn);
      clearTimeout(timer);
    }
    await this.destroy();
  }

  private async killCommands(): Promise<void> {
    for (const child of this.running) killGroup(child, "SIGKILL");
    await Promise.all([...this.running].map((c) => exitOf(c)));
  }

  /** Kills whatever is left (commands, nspawn, the guest) and removes cgroups, overlay, propagate directory. */
  private async destroy(): Promise<void> {
    this.stopped = true;
    await this.killCommands();
    const nspawn = this.machine?.nspawn;
    if (nspawn !== undefined) killGroup(nspawn, "SIGKILL");
    for (const dir of this.cgroups) killCgroupTree(dir);
    if (nspawn !== undefined) await exitOf(nspawn);
    for (const dir of this.cgroups) await removeCgroupTreeWhenEmpty(dir, 10_000);
    unmountOverlay(this.stateDir);
    rmSync(`/run/systemd/nspawn/propagate/${this.name}`, { recursive: true, force: true });
  }
}
