/** Which post hook ends an external run: post-run, or the post hook of the run's last phase. */
import { describe, expect, it } from "vitest";
import { hookEndsRun } from "../../src/protocol/sidecar-api.js";

describe("hookEndsRun", () => {
  it("post-run always ends the run", () => {
    expect(hookEndsRun("post-run", ["init", "plan", "apply"])).toBe(true);
    expect(hookEndsRun("post-run", ["init"])).toBe(true);
  });

  it("the post hook of the last phase ends it: post-plan for a plan-only run, post-apply otherwise", () => {
    expect(hookEndsRun("post-plan", ["init", "plan"])).toBe(true);
    expect(hookEndsRun("post-apply", ["init", "plan", "apply"])).toBe(true);
  });

  it("an earlier phase's post hook does not (plan and apply may be hours apart)", () => {
    expect(hookEndsRun("post-plan", ["init", "plan", "apply"])).toBe(false);
    expect(hookEndsRun("post-apply", ["init", "plan"])).toBe(false);
  });

  it("pre hooks never end a run; an init-only run ends at post-run only", () => {
    expect(hookEndsRun("pre-apply", ["init", "plan", "apply"])).toBe(false);
    expect(hookEndsRun("pre-init", ["init"])).toBe(false);
    expect(hookEndsRun("post-plan", ["init"])).toBe(false);
  });
});
