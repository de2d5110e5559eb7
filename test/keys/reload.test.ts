/**
 * Key replacement without a restart, the way Kubernetes Secret volumes do it: the key file is a
 * link into `..data/`, and an update swaps the `..data` symlink to a new timestamped folder.
 * A watcher of the file itself misses that; the agent watches the folder. A replacement that
 * does not parse keeps the keys in use. Real agent process, real control plane on loopback.
 */
import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN, FAKE_TOFU, startAgent } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";

let h: Harness;
let dir: string;

async function writeVersion(secretDir: string, version: string, content: string): Promise<void> {
  const folder = join(secretDir, `..${version}`);
  await mkdir(folder, { mode: 0o700 });
  await writeFile(join(folder, "agent.key"), content, { mode: 0o600 });
  await chmod(join(folder, "agent.key"), 0o600);
}

/** Kubernetes' atomic writer: point ..data at the new version with one rename. */
async function swapData(secretDir: string, version: string): Promise<void> {
  await symlink(`..${version}`, join(secretDir, "..data_tmp"));
  await rename(join(secretDir, "..data_tmp"), join(secretDir, "..data"));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-reload-"));
  h = await startControlPlane();
  await h.createIntegration({
    name: "r",
    registry_url: "https://reload.canary.test",
    username: "u",
    password: "reload-secret",
    export_credentials: true,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("key reload", () => {
  it("picks up a key replaced through a ..data symlink swap, re-registers it, and keeps the old keys when a replacement is broken", async () => {
    const secretDir = join(dir, "secret");
    await mkdir(secretDir, { mode: 0o700 });
    const keyA = join(dir, "a.key");
    const keyB = join(dir, "b.key");
    const kidA = (
      JSON.parse(execFileSync(AGENT_BIN, ["keygen", "--key-file", keyA], { encoding: "utf8" })) as { kid: string }
    ).kid;
    const kidB = (
      JSON.parse(execFileSync(AGENT_BIN, ["keygen", "--key-file", keyB], { encoding: "utf8" })) as { kid: string }
    ).kid;
    const { readFile } = await import("node:fs/promises");
    await writeVersion(secretDir, "v1", await readFile(keyA, "utf8"));
    await symlink("..v1", join(secretDir, "..data"));
    await symlink("..data/agent.key", join(secretDir, "agent.key"));

    const tokenFile = join(dir, "token");
    await writeFile(tokenFile, h.agentToken, { mode: 0o600 });
    const workDir = join(dir, "work");
    const agent = startAgent(
      [
        "--control-plane-url",
        h.url,
        "--token-file",
        tokenFile,
        "--key",
        `file:${secretDir}`,
        "--work-dir",
        workDir,
        "--tofu-bin",
        FAKE_TOFU,
        "--listen",
        "127.0.0.1:0",
      ],
      { HOME: dir },
    );
    try {
      const registered = await agent.waitForLog((l) => l["event"] === "registered");
      const agentId = String(registered["agent_id"]);
      expect(h.cp.store.agents.get(agentId)?.public_keys.map((k) => k.kid)).toEqual([kidA]);

      await writeVersion(secretDir, "v2", await readFile(keyB, "utf8"));
      await swapData(secretDir, "v2");
      const reloaded = await agent.waitForLog((l) => l["event"] === "keys_reloaded");
      expect(reloaded["kids"]).toEqual([kidB]);
      expect(reloaded["removed"]).toEqual([kidA]);
      // The control plane now seals to the new key, and the agent opens it.
      const run1 = await h.createRun({ "main.tf": "# empty\n" });
      expect((await h.waitForStatus(run1, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      expect(h.cp.store.agents.get(agentId)?.public_keys.map((k) => k.kid)).toEqual([kidB]);

      await writeVersion(secretDir, "v3", "this is not a key\n");
      await swapData(secretDir, "v3");
      const failed = await agent.waitForLog((l) => l["event"] === "key_reload_failed");
      expect(failed["code"]).toBe("KEY_FILE_INVALID");
      expect(failed["kids"]).toEqual([kidB]);
      const run2 = await h.createRun({ "main.tf": "# empty\n" });
      expect((await h.waitForStatus(run2, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");

      agent.kill("SIGHUP");
      const hup = await agent.waitForLog((l) => l["event"] === "key_reload_failed" && l["reason"] === "SIGHUP");
      expect(hup["kids"]).toEqual([kidB]);
    } finally {
      agent.kill("SIGTERM");
      await agent.exited;
    }
  });
});
