/**
 * Runner mode hands a run's credentials and workspace to the runner's group, and nothing else:
 * real files in a temp dir; the "socket" is any file whose group is the runner's.
 */
import { chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { shareWithRunner } from "../../src/execution/share-with-runner.js";
import { isAgentError } from "../../src/core/errors.js";

const RUNNER_GID = 45678;
const root = mkdtempSync(join(tmpdir(), "oca-share-"));
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function layout() {
  const base = mkdtempSync(join(root, "agent-"));
  const dirs = {
    workDir: join(base, "work"),
    workspacesDir: join(base, "work", "workspaces"),
    credentialsDir: join(base, "credentials"),
  };
  const paths = {
    runId: "run-1",
    workspace: join(dirs.workspacesDir, "run-1"),
    credentials: join(dirs.credentialsDir, "run-1"),
  };
  for (const d of [dirs.workDir, dirs.workspacesDir, dirs.credentialsDir, paths.workspace, paths.credentials])
    mkdirSync(d, { recursive: true, mode: 0o700 });
  mkdirSync(join(paths.credentials, "docker"), { mode: 0o700 });
  writeFileSync(join(paths.credentials, "docker", "config.json"), "{}", { mode: 0o600 });
  writeFileSync(join(paths.workspace, "main.tf"), "", { mode: 0o600 });
  writeFileSync(join(paths.workspace, "run.sh"), "", { mode: 0o700 });
  const socket = join(base, "runner.sock");
  writeFileSync(socket, "");
  chownSync(socket, 0, RUNNER_GID);
  const keys = join(base, "keys");
  mkdirSync(keys, { mode: 0o700 });
  return { dirs, paths, socket, keys };
}

const modeOf = (p: string): string => (lstatSync(p).mode & 0o7777).toString(8);
const gidOf = (p: string): number => lstatSync(p).gid;

describe("shareWithRunner", () => {
  it("gives the credentials read-only and the workspace read-write to the runner's group, the parents searchable", async () => {
    const { dirs, paths, socket } = layout();
    await shareWithRunner(paths, socket, dirs);
    for (const d of [dirs.workDir, dirs.workspacesDir, dirs.credentialsDir])
      expect([modeOf(d), gidOf(d)]).toEqual(["750", RUNNER_GID]);
    expect(modeOf(paths.credentials)).toBe("750");
    expect([
      modeOf(join(paths.credentials, "docker", "config.json")),
      gidOf(join(paths.credentials, "docker", "config.json")),
    ]).toEqual(["640", RUNNER_GID]);
    expect(modeOf(paths.workspace)).toBe("2770");
    expect(modeOf(join(paths.workspace, "main.tf"))).toBe("660");
    expect(modeOf(join(paths.workspace, "run.sh"))).toBe("770");
  });

  it("never follows a link out, never touches another user's file, never what lies outside its directories", async () => {
    const { dirs, paths, socket, keys } = layout();
    symlinkSync(keys, join(paths.workspace, "planted-link"));
    const foreign = join(paths.workspace, "foreign");
    writeFileSync(foreign, "", { mode: 0o600 });
    chownSync(foreign, 4242, 4242);
    await shareWithRunner(paths, socket, dirs);
    expect([modeOf(keys), gidOf(keys)]).toEqual(["700", 0]);
    expect([modeOf(foreign), gidOf(foreign)]).toEqual(["600", 4242]);
    const error: unknown = await shareWithRunner({ ...paths, workspace: keys }, socket, dirs).catch((e: unknown) => e);
    expect(isAgentError(error, "RUN_DIR_UNSAFE")).toBe(true);
    expect(modeOf(keys)).toBe("700");
  });
});
