/**
 * Shared set-up for the daemon-level reliability tests: a key, a token file, a canary
 * integration at the control plane, agents started as real processes against a given URL, and
 * the after-the-fact checks (no canary byte under a directory, empty run directories).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AGENT_BIN, FAKE_TOFU, startAgent, type AgentProcess, type LogLine } from "./agent-process.js";
import type { Harness } from "./control-plane-harness.js";

const CANARY_HOST = "registry.canary.test";
export const MAIN_TF = `module "net" {\n  source = "oci://${CANARY_HOST}/acme/net?tag=1.0.0"\n}\n`;

export interface Canary {
  readonly secret: string;
  readonly forms: readonly string[];
}

export function newCanary(): Canary {
  const secret = `CANARY-${randomBytes(8).toString("hex")}`;
  return { secret, forms: [secret, Buffer.from(`octocat:${secret}`).toString("base64")] };
}

export async function addCanaryIntegration(h: Harness, canary: Canary): Promise<void> {
  await h.createIntegration({
    name: "canary",
    registry_url: `https://${CANARY_HOST}`,
    username: "octocat",
    password: canary.secret,
    export_credentials: true,
  });
}

export interface AgentFiles {
  readonly dir: string;
  readonly keyFile: string;
  readonly tokenFile: string;
}

export async function agentFiles(parent: string, token: string): Promise<AgentFiles> {
  const dir = await mkdtemp(join(parent, "agent-"));
  const keyFile = join(dir, "agent.key");
  const tokenFile = join(dir, "agent.token");
  execFileSync(AGENT_BIN, ["keygen", "--key-file", keyFile]);
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  return { dir, keyFile, tokenFile };
}

/** A stand-in tofu that costs one `sh`: it checks the run's Docker config exists, nothing else. */
export async function shTofu(dir: string): Promise<string> {
  const path = join(dir, "sh-tofu");
  await writeFile(
    path,
    '#!/bin/sh\ntest -f "$DOCKER_CONFIG/config.json" || { echo "no credentials" >&2; exit 7; }\nexit 0\n',
  );
  await chmod(path, 0o755);
  return path;
}

/**
 * Starts `oci-cred-agent run`. The registries of these tests do not exist, so the check before
 * init is off (--no-preflight): it is not what these tests are about, and under load every run
 * would wait on DNS for the same missing host.
 */
export function launchAgent(
  url: string,
  files: AgentFiles,
  workDir: string,
  extra: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): AgentProcess {
  return startAgent(
    [
      "--control-plane-url",
      url,
      "--token-file",
      files.tokenFile,
      "--key-file",
      files.keyFile,
      "--work-dir",
      workDir,
      "--tofu-bin",
      FAKE_TOFU,
      "--cancel-grace",
      "500ms",
      "--listen",
      "127.0.0.1:0",
      "--no-preflight",
      ...extra,
    ],
    { HOME: files.dir, TF_CLI_CONFIG_FILE: "", ...env },
  );
}

export async function stopAgent(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

export const forRun =
  (runId: string, event: string, extra: (l: LogLine) => boolean = () => true) =>
  (l: LogLine): boolean =>
    l["run_id"] === runId && l["event"] === event && extra(l);

export async function filesUnder(root: string): Promise<string[]> {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

/** Files under `root` holding any form of the canary. */
export async function canaryLeaks(root: string, canary: Canary): Promise<string[]> {
  const leaks: string[] = [];
  for (const file of await filesUnder(root)) {
    const text = await readFile(file, "latin1").catch(() => "");
    if (canary.forms.some((f) => text.includes(f))) leaks.push(file);
  }
  return leaks;
}
