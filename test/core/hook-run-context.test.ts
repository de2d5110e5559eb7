import { describe, expect, it } from "vitest";
import { findRunId, hookPhase, RUN_ID_VARIABLES } from "../../src/core/hook-run-context.js";

describe("findRunId", () => {
  const all = {
    SCALR_RUN_ID: "run-scalr",
    TFC_RUN_ID: "run-tfc",
    TF_VAR_spacelift_run_id: "run-spacelift",
    BURRITO_RUNNER_RUN: "run-burrito",
  };

  it("looks in the documented order: --run-id, SCALR_RUN_ID, TFC_RUN_ID, TF_VAR_spacelift_run_id, BURRITO_RUNNER_RUN", () => {
    expect(RUN_ID_VARIABLES.map((v) => v.variable)).toEqual([
      "SCALR_RUN_ID",
      "TFC_RUN_ID",
      "TF_VAR_spacelift_run_id",
      "BURRITO_RUNNER_RUN",
    ]);
    expect(findRunId("run-flag", all)).toEqual({ runId: "run-flag", source: "--run-id" });
    expect(findRunId(undefined, all)).toEqual({ runId: "run-scalr", source: "SCALR_RUN_ID" });
    const rest = new Map(Object.entries(all));
    for (const { variable } of RUN_ID_VARIABLES) {
      expect(findRunId(undefined, Object.fromEntries(rest))?.source).toBe(variable);
      rest.delete(variable);
    }
    expect(findRunId(undefined, Object.fromEntries(rest))).toBeUndefined();
  });

  it("skips a variable that is set but empty", () => {
    expect(findRunId(undefined, { SCALR_RUN_ID: "", TFC_RUN_ID: "run-tfc" })).toEqual({
      runId: "run-tfc",
      source: "TFC_RUN_ID",
    });
  });
});

describe("hookPhase", () => {
  it("takes the phase from the hook's name", () => {
    expect(hookPhase("pre-plan", undefined, {})).toBe("plan");
    expect(hookPhase("post-plan", undefined, { SCALR_TERRAFORM_OPERATION: "apply" })).toBe("plan");
    expect(hookPhase("pre-apply", undefined, {})).toBe("apply");
    expect(hookPhase("post-apply", "apply", {})).toBe("apply");
  });

  it("pre-init and post-run: --phase, else SCALR_TERRAFORM_OPERATION, else null", () => {
    expect(hookPhase("pre-init", undefined, { SCALR_TERRAFORM_OPERATION: "apply" })).toBe("apply");
    expect(hookPhase("pre-init", "init", { SCALR_TERRAFORM_OPERATION: "apply" })).toBe("init");
    expect(hookPhase("pre-init", undefined, { SCALR_TERRAFORM_OPERATION: "policy" })).toBeNull();
    expect(hookPhase("post-run", undefined, {})).toBeNull();
  });

  it("refuses a --phase that contradicts the hook, or that is no phase", () => {
    expect(() => hookPhase("pre-plan", "apply", {})).toThrow(/contradicts the hook pre-plan/);
    expect(() => hookPhase("pre-init", "destroy", {})).toThrow(/--phase must be init, plan or apply/);
  });
});
