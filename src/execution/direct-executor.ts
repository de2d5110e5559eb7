/**
 * `--isolation none`: each phase runs as the agent's own child in its own process group, with
 * everything the agent's user can reach. Chosen explicitly only (the agent says so at start).
 */
import { AgentError } from "../core/errors.js";
import type {
  PhaseExecutor,
  PhaseRequest,
  PhaseResult,
  RunExecution,
  RunPaths,
  TofuCommand,
} from "./phase-executor.js";
import { tofuArgs } from "./phase-executor.js";
import { processGroupStop, runProcess } from "./phase-process.js";

export function tofuNotFound(file: string): AgentError {
  return new AgentError(
    "TOFU_NOT_FOUND",
    `cannot start ${file}; install OpenTofu or point --tofu-bin at the tofu executable`,
    { tofu_bin: file },
  );
}

export class DirectExecutor implements PhaseExecutor {
  readonly isolation = "none";

  constructor(private readonly tofu: TofuCommand) {}

  openRun(paths: RunPaths): Promise<RunExecution> {
    const tofu = this.tofu;
    return Promise.resolve({
      runPhase(request: PhaseRequest): Promise<PhaseResult> {
        return runProcess({
          ...request,
          file: tofu.file,
          args: [...tofu.argsPrefix, ...tofuArgs(request.phase, request.planned)],
          cwd: paths.workspace,
          env: request.env,
          stop: processGroupStop,
          notFound: () => tofuNotFound(tofu.file),
        });
      },
      close: () => Promise.resolve(),
    });
  }
}
