/**
 * Things planted at the paths the daemon writes and removes, by someone else with the agent's
 * uid (another process, a careless operator): a symlink to a directory outside, a dangling
 * symlink, a foreign file, a hardlink to a file outside, a foreign directory with content, a
 * FIFO, at `<work-dir>/credentials/<run-id>` and `<work-dir>/workspaces/<run-id>`; leftovers for
 * the start-up sweep whose files are links to outside; and a credentials directory that is a
 * symlink.
 *
 * The run ids are known in advance: the runs are created at the control plane before any agent
 * runs. The agent starts behind a fault proxy that answers 503 (test/support/fault-proxy.ts), so
 * it sweeps and then waits; the test plants after the sweep, then lets the control plane through.
 *
 * Asserted: each run fails at the control plane with the refusal's code, nothing outside the
 * work directory changes (a sentinel directory is snapshotted byte for byte, hardlinked files
 * included), no canary byte is written anywhere, and the agent keeps running.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.js";
import {
  addCanaryIntegration,
  agentFiles,
  canaryLeaks,
  launchAgent,
  MAIN_TF,
  newCanary,
  stopAgent,
  type AgentFiles,
  type Canary,
} from "../support/reliability-agents.js";
import { recordFigures } from "../support/reliability-figures.js";
import { fakeTofuRecord } from "../support/sandbox-test-env.js";

let h: Harness;
let proxy: FaultProxy;
let dir: string;
let files: AgentFiles;
let canary: Canary;
let sentinel: string;
const figures: Record<string, unknown> = {};

async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      const rel = relative(root, p);
      if (st.isSymbolicLink()) out[rel] = `link:${await readlink(p)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir:${(st.mode & 0o7777).toString(8)}`;
        await walk(p);
      } else
        out[rel] = `file:${(st.mode & 0o7777).toString(8)}:${st.size}:${createHash("sha256")
          .update(await readFile(p))
          .digest("hex")}`;
    }
  };
  await walk(root);
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-plants-"));
  h = await startControlPlane();
  proxy = await startFaultProxy(h.url);
  files = await agentFiles(dir, h.agentToken);
  canary = newCanary();
  await addCanaryIntegration(h, canary);
  sentinel = join(dir, "sentinel");
  await mkdir(join(sentinel, "inner"), { recursive: true });
  await writeFile(join(sentinel, "secret.txt"), "outside the agent's directories\n");
  await writeFile(join(sentinel, "other.txt"), "also outside\n");
});

afterAll(async () => {
  recordFigures("fs-plants", figures);
  await proxy.close();
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

type Plant = (path: string) => Promise<void>;

const plants: [string, "credentials" | "workspaces", Plant, string][] = [
  ["a symlink to a directory outside", "credentials", (p) => symlink(join(sentinel, "inner"), p), "RUN_DIR_UNSAFE"],
  [
    "a dangling symlink to a path outside",
    "credentials",
    (p) => symlink(join(sentinel, "created-through-link"), p),
    "RUN_DIR_UNSAFE",
  ],
  ["a foreign file", "credentials", (p) => writeFile(p, "foreign\n"), "RUN_DIR_UNSAFE"],
  ["a hardlink to a file outside", "credentials", (p) => link(join(sentinel, "secret.txt"), p), "RUN_DIR_UNSAFE"],
  [
    "a foreign directory whose docker/ is a symlink outside",
    "credentials",
    async (p) => {
      await mkdir(p, { mode: 0o700 });
      await symlink(join(sentinel, "inner"), join(p, "docker"));
    },
    "RUN_DIR_UNSAFE",
  ],
  [
    "a FIFO",
    "credentials",
    (p) => Promise.resolve(execFileSync("mkfifo", [p])).then(() => undefined),
    "RUN_DIR_UNSAFE",
  ],
  ["a symlink to a directory outside", "workspaces", (p) => symlink(join(sentinel, "inner"), p), "RUN_DIR_UNSAFE"],
  ["a foreign file", "workspaces", (p) => writeFile(p, "foreign\n"), "RUN_DIR_UNSAFE"],
  ["a hardlink to a file outside", "workspaces", (p) => link(join(sentinel, "other.txt"), p), "RUN_DIR_UNSAFE"],
  ["an empty directory", "workspaces", (p) => mkdir(p, { mode: 0o700 }), "RUN_DIR_ENTRY_UNSAFE"],
];

describe("planted file-system entries", () => {
  it(`refuses ${plants.length} runs whose paths were planted, touches nothing outside, leaks nothing, keeps running`, async () => {
    const workDir = join(dir, "work-plants");
    const runIds: string[] = [];
    for (let i = 0; i < plants.length; i++) runIds.push(await h.createRun({ "main.tf": MAIN_TF }, ["init"]));
    proxy.setMode({ kind: "status", status: 503 });
    const agent = launchAgent(
      proxy.url,
      files,
      workDir,
      ["--retry-base", "100ms", "--retry-max", "500ms", "--concurrency", "4"],
      fakeTofuRecord(join(dir, "plants.jsonl")),
    );
    try {
      // Registration failing means the sweep is done: plant now.
      await agent.waitForLog((l) => l["event"] === "control_plane_error" && l["during"] === "register");
      for (const [i, [, where, plant]] of plants.entries()) await plant(join(workDir, where, runIds[i]!));
      const before = await snapshot(sentinel);
      proxy.setMode({ kind: "pass" });
      const results: Record<string, string> = {};
      for (const [i, [what, where, , code]] of plants.entries()) {
        const run = await h.waitForStatus(runIds[i]!, ["succeeded", "failed", "canceled"]);
        results[`${where}: ${what}`] = run.error?.code ?? run.status;
        expect(run.status, `${where}: ${what}`).toBe("failed");
        expect(run.error?.code, `${where}: ${what}`).toBe(code);
        await agent.waitForLog((l) => l["run_id"] === runIds[i] && l["event"] === "run_finished");
      }
      expect(await snapshot(sentinel)).toEqual(before);
      expect(existsSync(join(sentinel, "created-through-link"))).toBe(false);
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      expect(await canaryLeaks(sentinel, canary)).toEqual([]);
      // No tofu ran for any of them, and the agent still takes a clean run.
      expect(existsSync(join(dir, "plants.jsonl"))).toBe(false);
      const next = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      expect((await h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === next && l["event"] === "credentials_wiped");
      expect(await canaryLeaks(workDir, canary)).toEqual([]);
      // The planted credentials entries are left where they were (the agent removes only what it wrote).
      expect((await readdir(join(workDir, "credentials"))).sort()).toEqual(runIds.slice(0, 6).sort());
      figures["run_paths"] = {
        planted: plants.length,
        refused: Object.values(results).filter((c) => c.startsWith("RUN_DIR")).length,
        outside_changed: 0,
        canary_leaks: 0,
        codes: results,
      };
    } finally {
      proxy.setMode({ kind: "pass" });
      await stopAgent(agent);
    }
  });

  it("the start-up sweep leaves links to outside alone and removes only what the agent wrote", async () => {
    const workDir = join(dir, "work-sweep");
    const fake = join(workDir, "credentials", "run-leftover");
    await mkdir(join(fake, "docker"), { recursive: true, mode: 0o700 });
    await mkdir(join(fake, "containers"), { mode: 0o700 });
    await mkdir(join(fake, "tofu"), { mode: 0o700 });
    await writeFile(join(fake, ".oci-cred-agent-run.json"), '{"kind":"oci-cred-agent-run"}\n', { mode: 0o600 });
    await symlink(join(sentinel, "secret.txt"), join(fake, "docker", "config.json"));
    await link(join(sentinel, "other.txt"), join(fake, "containers", "auth.json"));
    await symlink(join(sentinel, "inner"), join(fake, "tofu", "cli.tfrc"));
    await mkdir(join(workDir, "workspaces"), { recursive: true, mode: 0o700 });
    await symlink(sentinel, join(workDir, "workspaces", "run-linked"));
    const before = await snapshot(sentinel);
    const agent = launchAgent(h.url, files, workDir);
    try {
      const failed = await agent.waitForLog((l) => l["event"] === "sweep_failed");
      expect(failed["code"]).toBe("WIPE_FOREIGN_ENTRIES");
      await agent.waitForLog((l) => l["event"] === "registered");
      expect(await snapshot(sentinel)).toEqual(before);
      expect(existsSync(join(sentinel, "secret.txt"))).toBe(true);
      // The symlinks stay (not the agent's to remove); the workspace link is gone, not its target.
      expect((await lstat(join(fake, "docker", "config.json"))).isSymbolicLink()).toBe(true);
      expect(existsSync(join(workDir, "workspaces", "run-linked"))).toBe(false);
      figures["sweep"] = { code: failed["code"], outside_changed: 0 };
    } finally {
      await stopAgent(agent);
    }
  });

  it("refuses to start when the credentials directory is a symlink, and writes nothing through it", async () => {
    const workDir = join(dir, "work-linked-root");
    await mkdir(workDir, { mode: 0o700 });
    await symlink(join(sentinel, "inner"), join(workDir, "credentials"));
    const before = await snapshot(sentinel);
    const agent = launchAgent(h.url, files, workDir);
    const exit = await agent.exited;
    expect(exit.code).toBe(1);
    expect(agent.output()).toContain("RUN_DIR_UNSAFE");
    expect(await snapshot(sentinel)).toEqual(before);
    figures["credentials_dir_symlink"] = { exit_code: exit.code, code: "RUN_DIR_UNSAFE" };
  });
});
