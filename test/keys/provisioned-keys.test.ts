/**
 * Keys that root provisions for a non-root agent, as a Kubernetes Secret volume does: a `..data`
 * directory swapped by symlink, files owned by root with the pod's fsGroup and mode 0440. The
 * agent (the real CLI, run as uid 10001 through util-linux's setpriv) opens them, and still
 * refuses the unsafe variants. Needs root to chown and to switch users (the CI runs as root).
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN } from "../support/agent-process.js";

const AGENT_UID = 10001;
const FS_GROUP = 2000;
let dir: string;
let pem: string;

function runAs(groups: number[], args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "setpriv",
      [`--reuid=${AGENT_UID}`, `--regid=${AGENT_UID}`, `--groups=${groups.join(",")}`, "--", AGENT_BIN, ...args],
      { env: { PATH: process.env["PATH"] ?? "", HOME: dir }, encoding: "utf8" },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

/** Lays out a Secret volume as the kubelet does: <dir>/..data -> ..<ts>/, agent.key -> ..data/agent.key. */
async function secretVolume(name: string, mode: number, gid: number): Promise<string> {
  const volume = join(dir, name);
  const ts = join(volume, "..2026_11_24_10_00_00.000000001");
  await mkdir(ts, { recursive: true });
  await writeFile(join(ts, "agent.key"), pem);
  await chown(join(ts, "agent.key"), 0, gid);
  await chmod(join(ts, "agent.key"), mode);
  await symlink("..2026_11_24_10_00_00.000000001", join(volume, "..data"));
  await symlink("..data/agent.key", join(volume, "agent.key"));
  await chmod(volume, 0o755);
  await chmod(ts, 0o755);
  return volume;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-provisioned-"));
  await chmod(dir, 0o755);
  const keyFile = join(dir, "source.key");
  await new Promise<void>((resolve, reject) => {
    execFile(AGENT_BIN, ["keygen", "--key-file", keyFile], (error) => {
      if (error) reject(new Error(`keygen failed: ${error.message}`));
      else resolve();
    });
  });
  pem = await readFile(keyFile, "utf8");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("root-provisioned keys for a non-root agent", () => {
  it("opens a Kubernetes Secret volume key (root:fsGroup 0440) through --key file:DIR when the agent is in fsGroup", async () => {
    const volume = await secretVolume("ok", 0o440, FS_GROUP);
    const res = await runAs([FS_GROUP], ["pubkey", "--key", `file:${volume}`]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const doc = JSON.parse(res.stdout) as { kid?: unknown; public_key?: unknown };
    expect(typeof doc.kid).toBe("string");
    expect(typeof doc.public_key).toBe("string");
  });

  it("refuses it when the agent is not in the file's group", async () => {
    const volume = await secretVolume("other-group", 0o440, 3000);
    const res = await runAs([FS_GROUP], ["pubkey", "--key", `file:${volume}`]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("KEY_FILE_WRONG_OWNER");
    expect(res.stderr).toContain("0440");
  });

  it("refuses a root-owned key that its group may write or others may read, or that the agent cannot read", async () => {
    for (const mode of [0o460, 0o444, 0o604, 0o400]) {
      const volume = await secretVolume(`mode-${mode.toString(8)}`, mode, FS_GROUP);
      const res = await runAs([FS_GROUP], ["pubkey", "--key", `file:${volume}`]);
      expect(res.code, `mode ${mode.toString(8)}`).toBe(1);
      expect(res.stderr).toMatch(/KEY_FILE_WRONG_OWNER|KEY_FILE_PERMISSIONS/);
    }
  });

  it("still refuses the agent's own key file when its group can read it (OpenSSH's rule)", async () => {
    const own = join(dir, "own.key");
    await writeFile(own, pem);
    await chown(own, AGENT_UID, FS_GROUP);
    await chmod(own, 0o640);
    const res = await runAs([FS_GROUP], ["pubkey", "--key-file", own]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("KEY_FILE_PERMISSIONS");
    expect(res.stderr).toContain("chmod 600");
  });

  it("an operator CLI configuration the agent cannot read is a clear refusal, not a crash", async () => {
    const keyFile = join(dir, "agent-owned.key");
    await writeFile(keyFile, pem, { mode: 0o600 });
    await chown(keyFile, AGENT_UID, AGENT_UID);
    const rc = join(dir, "unreadable.tfrc");
    await writeFile(rc, 'plugin_cache_dir = "/x"\n', { mode: 0o600 });
    const res = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        "setpriv",
        [
          `--reuid=${AGENT_UID}`,
          `--regid=${AGENT_UID}`,
          "--clear-groups",
          "--",
          AGENT_BIN,
          "materialize",
          "--key-file",
          keyFile,
          "--agent-id",
          "a",
          "--run-id",
          "r",
          "--bundle",
          "/dev/null",
          "--run-dir",
          join(dir, "never"),
          "--tofu-cli-config",
          rc,
        ],
        { env: { PATH: process.env["PATH"] ?? "", HOME: dir }, encoding: "utf8" },
        (error, _stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stderr });
        },
      );
    });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("TOFU_CLI_CONFIG_INVALID");
    expect(res.stderr).toContain(rc);
    expect(res.stderr).not.toContain("INTERNAL");
  });
});
