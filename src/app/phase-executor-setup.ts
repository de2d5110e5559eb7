/**
 * Builds the executor the settings ask for, and checks at start that it works: the sandbox must
 * run a trivial phase here, or the agent refuses to start (SANDBOX_UNAVAILABLE) rather than run
 * phases unisolated. `--isolation none` is taken only when asked for, and said out loud.
 */
import { realpath, stat } from "node:fs/promises";
import type { AgentSettings } from "../config/load-run-config.js";
import { cloudIdentityPaths } from "../core/cloud-identity-env.js";
import { DirectExecutor } from "../execution/direct-executor.js";
import type { PhaseExecutor, TofuCommand } from "../execution/phase-executor.js";
import { checkSandbox, SandboxExecutor, sandboxUnavailable } from "../execution/sandbox-executor.js";
import { AGENT_ETC_DIR, pathsToHide } from "../execution/sandbox-layout.js";
import { findExecutable } from "../fs/executables.js";
import { connectRunner, RunnerExecutor } from "../execution/runner-executor.js";

async function kindOf(path: string): Promise<"dir" | "file" | undefined> {
  try {
    return (await stat(path)).isDirectory() ? "dir" : "file";
  } catch {
    return undefined;
  }
}

/** What the executor depends on: `doctor` has these even when the configuration has problems. */
export type ExecutorSettings = Pick<
  AgentSettings,
  | "isolation"
  | "executor"
  | "homesDir"
  | "workDir"
  | "workspacesDir"
  | "credentialsDir"
  | "sandboxReadOnly"
  | "sandboxReadWrite"
> &
  Partial<Pick<AgentSettings, "token" | "keySource" | "configFile" | "runCloudEnv">>;

/**
 * The agent's own files that the sandbox's view of the system would otherwise show: its
 * configuration, token and key, and, unless runs are to act as the
 * pool (`run_cloud_env: pass`), the cloud identity files its environment names.
 */
function agentPaths(settings: ExecutorSettings, env: NodeJS.ProcessEnv): string[] {
  const paths = [AGENT_ETC_DIR];
  if (settings.token !== undefined && "file" in settings.token) paths.push(settings.token.file);
  if (settings.keySource?.kind === "file") paths.push(settings.keySource.path);
  if (settings.configFile !== undefined) paths.push(settings.configFile);
  if (settings.runCloudEnv !== "pass") paths.push(...cloudIdentityPaths(env));
  return paths;
}

export async function setUpPhaseExecutor(
  settings: ExecutorSettings,
  tofu: TofuCommand,
  env: NodeJS.ProcessEnv,
): Promise<{ executor: PhaseExecutor; runnerKillsNamespace?: boolean }> {
  if (settings.executor.kind === "runner") {
    // Fails closed: RUNNER_UNAVAILABLE when nothing answers at the socket.
    const hello = await connectRunner(settings.executor.socket);
    return {
      executor: new RunnerExecutor(settings.executor.socket, { shareWith: settings }),
      runnerKillsNamespace: hello.pid_namespace,
    };
  }
  if (settings.isolation === "none") return { executor: new DirectExecutor(tofu) };
  const bwrap = await findExecutable("bwrap", env);
  if (bwrap === undefined) throw sandboxUnavailable("bubblewrap (bwrap) is not on PATH");
  const trueBin = (await findExecutable("true", { PATH: "/usr/bin:/bin" })) ?? "/bin/true";
  const hide: { path: string; kind: "dir" | "file" }[] = [];
  for (const path of agentPaths(settings, env)) {
    const kind = await kindOf(path);
    // A link (a Secret's ..data, a file placed elsewhere) is masked where it leads: bubblewrap
    // follows a link it mounts over, and cannot mount over one that leads out of the sandbox
    // (which then needs no mask: the link leads nowhere there).
    const target = kind === undefined ? undefined : await realpath(path).catch(() => undefined);
    if (kind !== undefined && target !== undefined) hide.push({ path: target, kind });
  }
  const options = {
    bwrap,
    tofu,
    path: env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
    homesDir: settings.homesDir,
    readOnly: settings.sandboxReadOnly,
    readWrite: settings.sandboxReadWrite,
    hide: pathsToHide(hide),
  };
  await checkSandbox(options, trueBin);
  return { executor: new SandboxExecutor(options) };
}
