/**
 * Builds the executor the settings ask for, and checks at start that it works: the sandbox must
 * run a trivial phase here, or the agent refuses to start (SANDBOX_UNAVAILABLE) rather than run
 * phases unisolated. `--isolation none` is taken only when asked for, and said out loud.
 */
import { stat } from "node:fs/promises";
import type { AgentSettings } from "../config/load-run-config.js";
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

/** The agent's own files that the sandbox's view of the system would otherwise show. */
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
  Partial<Pick<AgentSettings, "token" | "keySource" | "configFile">>;

function agentPaths(settings: ExecutorSettings): string[] {
  const paths = [AGENT_ETC_DIR];
  if (settings.token !== undefined && "file" in settings.token) paths.push(settings.token.file);
  if (settings.keySource?.kind === "file") paths.push(settings.keySource.path);
  if (settings.configFile !== undefined) paths.push(settings.configFile);
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
  for (const path of agentPaths(settings)) {
    const kind = await kindOf(path);
    if (kind !== undefined) hide.push({ path, kind });
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
