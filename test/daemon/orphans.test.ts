import { describe, expect, it } from "vitest";
import { processGroupOf, processStateOf, runOfWorkingDirectory, startedForRun } from "../../src/daemon/orphans.js";

describe("reading /proc for orphaned tofu", () => {
  it.each([
    ["4242 (tofu) S 1 4242 4242 0 -1 4194560", 4242, "S"],
    // comm may hold spaces and parentheses: fields are read after the last ")".
    ["77 (my (odd) name) Z 1 70 70 0 -1", 70, "Z"],
    ["9 (x) R 1 0 0", undefined, "R"],
  ])("%s: group %s, state %s", (stat, pgid, state) => {
    expect(processGroupOf(stat)).toBe(pgid);
    expect(processStateOf(stat)).toBe(state);
  });

  it.each([
    ["/var/lib/a/work/workspaces/run-1", "run-1"],
    ["/var/lib/a/work/workspaces/run-1/modules/x", "run-1"],
    ["/var/lib/a/work/workspaces/run-1 (deleted)", "run-1"],
    ["/var/lib/a/work/workspaces", undefined],
    ["/var/lib/a/work/workspaces-other/run-1", undefined],
    ["/home/op", undefined],
  ])("%s belongs to run %s", (cwd, runId) => {
    expect(runOfWorkingDirectory(cwd, "/var/lib/a/work/workspaces/")).toBe(runId);
  });

  it("counts a process as the run's only when its environment names that run's CLI configuration", () => {
    const env = ["PATH=/usr/bin", "TF_CLI_CONFIG_FILE=/run/oca/credentials/run-1/tofu/cli.tfrc", ""].join("\0");
    expect(startedForRun(env, "/run/oca/credentials", "run-1")).toBe(true);
    expect(startedForRun(env, "/run/oca/credentials/", "run-1")).toBe(true);
    expect(startedForRun(env, "/run/oca/credentials", "run-2")).toBe(false);
    expect(startedForRun("PATH=/usr/bin\0HOME=/root\0", "/run/oca/credentials", "run-1")).toBe(false);
    expect(startedForRun("X=TF_CLI_CONFIG_FILE=/run/oca/credentials/run-1/\0", "/run/oca/credentials", "run-1")).toBe(
      false,
    );
  });
});
