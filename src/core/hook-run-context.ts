/**
 * What `oci-cred-agent hook NAME` learns from the runner that calls it: which run (the run id
 * each runner puts in its environment, in a fixed order) and which phase. Pure: the flags and
 * the environment are passed in. docs/sidecar.md shows the table.
 */
import { AgentError } from "./errors.js";

type Env = Readonly<Record<string, string | undefined>>;

/** Where runners put the run id, in the order the hook looks (after `--run-id`). */
export const RUN_ID_VARIABLES = [
  { variable: "SCALR_RUN_ID", runner: "Scalr agent (agent-level hooks)" },
  { variable: "TFC_RUN_ID", runner: "HCP Terraform / Terraform Enterprise agent (agent hooks)" },
  { variable: "TF_VAR_spacelift_run_id", runner: "Spacelift worker (before_init, after_run)" },
  { variable: "BURRITO_RUNNER_RUN", runner: "Burrito runner pod" },
] as const;

export interface FoundRunId {
  readonly runId: string;
  /** `--run-id`, or the variable it came from (for messages). */
  readonly source: string;
}

/**
 * The run id: `--run-id` when given, else the first variable of RUN_ID_VARIABLES that is set
 * and not empty; undefined when there is none. The value is not checked here (the caller checks
 * it against the protocol's pattern and names `source` when it refuses).
 */
export function findRunId(flag: string | undefined, env: Env): FoundRunId | undefined {
  if (flag !== undefined) return { runId: flag, source: "--run-id" };
  for (const { variable } of RUN_ID_VARIABLES) {
    const value = env[variable];
    if (value !== undefined && value !== "") return { runId: value, source: variable };
  }
  return undefined;
}

export type HookPhase = "init" | "plan" | "apply";

/** The phase a hook name implies; pre-init and post-run imply none. */
const PHASE_OF_HOOK: Readonly<Record<string, HookPhase>> = {
  "pre-plan": "plan",
  "post-plan": "plan",
  "pre-apply": "apply",
  "post-apply": "apply",
};

const PHASES: readonly string[] = ["init", "plan", "apply"];

/**
 * The phase to report: the hook name's (pre-plan, post-apply, ...); for pre-init and post-run,
 * `--phase`, else Scalr's SCALR_TERRAFORM_OPERATION (`plan` or `apply`; another value counts as
 * unknown), else null. A `--phase` that contradicts the hook name is refused.
 */
export function hookPhase(hook: string, flag: string | undefined, env: Env): HookPhase | null {
  if (flag !== undefined && !PHASES.includes(flag))
    throw new AgentError("INVALID_ARGUMENT", `--phase must be init, plan or apply, not ${JSON.stringify(flag)}`, {
      flag: "--phase",
    });
  const implied = PHASE_OF_HOOK[hook];
  if (implied !== undefined) {
    if (flag !== undefined && flag !== implied)
      throw new AgentError(
        "INVALID_ARGUMENT",
        `--phase ${flag} contradicts the hook ${hook}, which is the ${implied} phase's; leave --phase out, or call the pre-init or post-run hook`,
        { flag: "--phase" },
      );
    return implied;
  }
  if (flag !== undefined) return flag as HookPhase;
  const scalr = env["SCALR_TERRAFORM_OPERATION"];
  return scalr === "plan" || scalr === "apply" ? scalr : null;
}
