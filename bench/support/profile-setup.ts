/**
 * What the ad-hoc profiles share: a reference control plane in this process with one exported
 * integration, an agent key and token in a temporary directory, a one-file configuration
 * archive, and the `run` arguments that point an agent at them (no-op tofu, no health endpoint,
 * no pre-flight: the integration's host does not exist).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createControlPlane, type ControlPlane } from "../../src/control-plane/server.js";
import { generatePrivateKeyPem } from "../../src/crypto/agent-key.js";

export interface ProfileSetup {
  readonly dir: string;
  readonly cp: ControlPlane;
  readonly archive: Buffer;
  /** `run` and its flags, for `dist/cli/main.js`. */
  readonly runArgs: (concurrency: number, workDirPrefix: string, logLevel: string) => string[];
}

export async function profileSetup(tmpPrefix: string): Promise<ProfileSetup> {
  const dir = await mkdtemp(tmpPrefix);
  await writeFile(join(dir, "agent.key"), generatePrivateKeyPem(), { mode: 0o600 });
  const agentToken = randomBytes(24).toString("base64url");
  await writeFile(join(dir, "token"), agentToken, { mode: 0o600 });
  const cp = await createControlPlane({
    adminToken: "x".repeat(20),
    agentToken,
    leaseTtlSeconds: 120,
    agentApi: { heartbeatIntervalSeconds: 30 },
    probe: () => Promise.resolve({ warnings: [] }),
  });
  const { url } = await cp.listen("127.0.0.1", 0);
  cp.store.integrations.set("i", {
    id: "i",
    name: "b",
    registry_url: "https://r.test",
    username: "u",
    password: "p",
    credential_helper: null,
    export_credentials: true,
    created_at: "",
    updated_at: "",
  });
  await mkdir(join(dir, "cfg"));
  await writeFile(join(dir, "cfg", "main.tf"), "# x\n");
  const archive = execFileSync("tar", ["czf", "-", "-C", join(dir, "cfg"), "."]);
  return {
    dir,
    cp,
    archive,
    runArgs: (concurrency, workDirPrefix, logLevel) => [
      "run",
      "--control-plane-url",
      url,
      "--token-file",
      join(dir, "token"),
      "--key-file",
      join(dir, "agent.key"),
      "--work-dir",
      join("/dev/shm", `${workDirPrefix}${Date.now()}`),
      "--tofu-bin",
      "/bin/true",
      "--concurrency",
      String(concurrency),
      "--listen",
      "off",
      "--no-preflight",
      "--log-level",
      logLevel,
    ],
  };
}
