/**
 * The default executor on hosts: each phase in a bubblewrap sandbox (sandbox-layout.ts says
 * what it sees). Per run, a private HOME and TMPDIR under the agent's work directory, removed
 * with the run. Cancel sends SIGTERM to the phase's processes inside the sandbox, then, after
 * the grace period, SIGKILL to bubblewrap, which takes the sandbox's PID namespace and every
 * process in it along. `checkSandbox` runs a trivial sandbox at start: where it fails, the agent
 * refuses to start (fail closed) rather than run phases unisolated.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { constants } from "node:os";
import { join } from "node:path";
import { AgentError } from "../core/errors.js";
import { findExecutable } from "../fs/executables.js";
import { tofuNotFound } from "./direct-executor.js";
import type {
  PhaseExecutor,
  PhaseRequest,
  PhaseResult,
  RunExecution,
  RunPaths,
  TofuCommand,
} from "./phase-executor.js";
import { tofuArgs } from "./phase-executor.js";
import { processGroupStop, runProcess, type StopStrategy } from "./phase-process.js";
import { bwrapArgs } from "./sandbox-layout.js";
import { sandboxSeccompProgram } from "./sandbox-seccomp.js";

export interface SandboxOptions {
  /** The bubblewrap executable (absolute). */
  readonly bwrap: string;
  /** tofu: a name looked up in `path` for each run (as a shell would), or a path. */
  readonly tofu: TofuCommand;
  /** The PATH tofu is looked up in (the agent's). */
  readonly path: string;
  /** Where the runs' private HOME and TMPDIR go (`<work dir>/homes`). */
  readonly homesDir: string;
  readonly readOnly: readonly string[];
  readonly readWrite: readonly string[];
  readonly hide: readonly { readonly path: string; readonly kind: "dir" | "file" }[];
}

/** The pids of every descendant of `root` (from /proc; a process that exits meanwhile is skipped). */
async function descendants(root: number): Promise<{ pid: number; comm: string }[]> {
  const parent = new Map<number, { ppid: number; comm: string }>();
  for (const name of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const close = stat.lastIndexOf(")");
    if (close < 0) continue;
    const ppid = Number(stat.slice(close + 2).split(" ")[1]);
    parent.set(Number(name), { ppid, comm: stat.slice(stat.indexOf("(") + 1, close) });
  }
  const found: { pid: number; comm: string }[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const at = queue.shift() as number;
    for (const [pid, p] of parent) {
      if (p.ppid === at) {
        found.push({ pid, comm: p.comm });
        queue.push(pid);
      }
    }
  }
  return found;
}

/**
 * SIGTERM to the phase's own processes (not to bubblewrap, which would take the sandbox down at
 * once); SIGKILL to bubblewrap, whose PID namespace ends with it.
 */
const sandboxStop: StopStrategy = {
  terminate: (child) => {
    if (child.pid === undefined) return;
    void descendants(child.pid).then((list) => {
      for (const p of list) {
        if (p.comm === "bwrap") continue;
        try {
          process.kill(p.pid, "SIGTERM");
        } catch {
          // exited meanwhile
        }
      }
    });
  },
  kill: (child: ChildProcess) => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // exited meanwhile
      }
    }
    processGroupStop.kill(child);
  },
};

/**
 * bubblewrap exits with 128 + N when the phase's process was killed by signal N: reported as
 * that signal, as a phase run without the sandbox would be. Pure.
 */
export function fromBubblewrapStatus(result: PhaseResult): PhaseResult {
  if (result.exitCode === null || result.exitCode <= 128 || result.signal !== null) return result;
  const name = Object.entries(constants.signals).find(([, n]) => n === (result.exitCode ?? 0) - 128)?.[0];
  return name === undefined ? result : { ...result, exitCode: null, signal: name as NodeJS.Signals };
}

/** Writes the sandbox's system call filter for this machine; SANDBOX_UNAVAILABLE where there is none. */
async function writeSeccompFilter(path: string): Promise<void> {
  const program = sandboxSeccompProgram(process.arch);
  if (program === undefined)
    throw sandboxUnavailable(
      `the sandbox has no system call filter for the ${process.arch} architecture (x64 and arm64 only)`,
    );
  await writeFile(path, program, { mode: 0o600 });
}

export class SandboxExecutor implements PhaseExecutor {
  readonly isolation = "sandbox";

  constructor(private readonly options: SandboxOptions) {}

  async openRun(paths: RunPaths): Promise<RunExecution> {
    const { options } = this;
    const runHome = join(options.homesDir, paths.runId);
    const home = join(runHome, "home");
    const tmp = join(runHome, "tmp");
    await mkdir(options.homesDir, { recursive: true, mode: 0o700 });
    await mkdir(runHome, { mode: 0o700 });
    await mkdir(home, { mode: 0o700 });
    await mkdir(tmp, { mode: 0o700 });
    const seccomp = join(runHome, "seccomp.bpf");
    await writeSeccompFilter(seccomp);
    // The sandbox shows tofu at its own path: find it as the phase's shell would have.
    const tofuFile = await findExecutable(options.tofu.file, { PATH: options.path });
    return {
      runPhase(request: PhaseRequest): Promise<PhaseResult> {
        if (tofuFile === undefined) return Promise.reject(tofuNotFound(options.tofu.file));
        // bubblewrap reads the filter from fd 3; the child keeps its own copy of the descriptor.
        const filterFd = openSync(seccomp, "r");
        try {
          const args = bwrapArgs({
            command: [tofuFile, ...options.tofu.argsPrefix, ...tofuArgs(request.phase, request.planned)],
            workspace: paths.workspace,
            credentials: paths.credentials,
            home,
            tmp,
            readOnly: [tofuFile, ...(options.tofu.needs ?? []), ...options.readOnly],
            readWrite: options.readWrite,
            hide: options.hide,
            seccompFd: 3,
          });
          return runProcess({
            ...request,
            file: options.bwrap,
            args,
            cwd: paths.workspace,
            env: { ...request.env, HOME: home, TMPDIR: tmp },
            stop: sandboxStop,
            extraFds: [filterFd],
            notFound: () => sandboxUnavailable(`cannot start ${options.bwrap}`),
          }).then(fromBubblewrapStatus);
        } finally {
          closeSync(filterFd);
        }
      },
      close: () => rm(runHome, { recursive: true, force: true }),
    };
  }
}

export function sandboxUnavailable(why: string): AgentError {
  return new AgentError(
    "SANDBOX_UNAVAILABLE",
    `runs cannot be isolated on this host: ${why}. Install bubblewrap 0.8 or newer (apt-get install bubblewrap, dnf install bubblewrap) and allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 where it exists; on Ubuntu 24.04 kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap; under systemd the unit's RestrictNamespaces= must allow user mnt pid ipc uts, as the shipped unit does); in Kubernetes use the runner (--executor runner:PATH, docs/kubernetes.md); or, knowing that runs then reach everything the agent's user can, --isolation none`,
    { reason: why },
  );
}

/**
 * Runs `true` in a sandbox laid out as a phase's (a throw-away workspace, credential directory,
 * HOME and TMPDIR under `homesDir`, the same extra paths): throws SANDBOX_UNAVAILABLE where it
 * cannot run. Bounded to 10 s.
 */
export async function checkSandbox(options: SandboxOptions, trueBin: string): Promise<void> {
  await mkdir(options.homesDir, { recursive: true, mode: 0o700 });
  const probe = await mkdtemp(join(options.homesDir, ".sandbox-check-"));
  try {
    const dirs = ["workspace", "credentials", "home", "tmp"].map((d) => join(probe, d));
    for (const d of dirs) await mkdir(d, { mode: 0o700 });
    const [workspace = "", credentials = "", home = "", tmp = ""] = dirs;
    const seccomp = join(probe, "seccomp.bpf");
    await writeSeccompFilter(seccomp);
    const args = bwrapArgs({
      command: [trueBin],
      workspace,
      credentials,
      home,
      tmp,
      readOnly: [...(options.tofu.needs ?? []), ...options.readOnly],
      readWrite: options.readWrite,
      hide: options.hide,
      seccompFd: 3,
    });
    const filterFd = openSync(seccomp, "r");
    await new Promise<void>((resolve, reject) => {
      const child = spawn(options.bwrap, args, {
        env: { PATH: "/usr/bin:/bin" },
        stdio: ["ignore", "ignore", "pipe", filterFd],
        timeout: 10_000,
      });
      closeSync(filterFd);
      let stderr = "";
      child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.once("error", (error) => {
        reject(sandboxUnavailable(`cannot start ${options.bwrap} (${error.message.slice(0, 200)})`));
      });
      child.once("close", (code, signal) => {
        const error = code === 0 ? null : new Error(`exit ${code ?? signal ?? "?"}`);
        if (error === null) {
          resolve();
          return;
        }
        const said = stderr.trim().split("\n")[0]?.slice(0, 300) ?? "";
        reject(
          sandboxUnavailable(
            said !== "" ? `bubblewrap said "${said}"` : `bubblewrap failed (${error.message.slice(0, 200)})`,
          ),
        );
      });
    });
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}
