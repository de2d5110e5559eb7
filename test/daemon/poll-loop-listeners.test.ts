/**
 * The poll loop waits at full capacity without growing: it used to add an abort listener to its
 * stop signal every time it waited for a run to finish (50 listeners after 50 runs), and every
 * finished run must leave none on the agent's shutdown signal. In process, through the
 * composition root, against the reference control plane on loopback with the stand-in tofu; the
 * listener counts are read with node:events getEventListeners.
 */
import { getEventListeners } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { composeInProcess } from "../support/in-process-agent.js";
import { agentFiles } from "../support/reliability-agents.js";

const HOST = "listeners.canary.test";
const MAIN_TF = `module "m" {\n  source = "oci://${HOST}/team/mod?tag=1"\n}\n`;
const RUNS = 15;

let h: Harness;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-listeners-"));
  h = await startControlPlane();
  await h.createIntegration({
    name: "l",
    registry_url: `https://${HOST}`,
    username: "robot",
    password: "listener-password",
    export_credentials: true,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the poll loop at full capacity", () => {
  it(`adds no abort listener per wait: after ${RUNS} runs at concurrency 1, one on its stop signal and none on the runs' shutdown signal`, async () => {
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const env = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir };
    const agent = await composeInProcess(
      {
        control_plane_url: h.url,
        token_file: tokenFile,
        key_file: keyFile,
        work_dir: await mkdtemp(join(dir, "work-")),
        tofu_bin: FAKE_TOFU,
        concurrency: "1",
        preflight: false,
        log_level: "error",
      },
      env,
      { write: () => undefined },
    );
    const ended = agent.run();
    try {
      // Queued before the agent frees its slot: the loop waits at capacity between runs.
      const ids: string[] = [];
      for (let i = 0; i < RUNS; i++) ids.push(await h.createRun({ "main.tf": MAIN_TF }, ["init"]));
      for (const id of ids)
        expect((await h.waitForStatus(id, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      expect(getEventListeners(agent.daemon["pollAbort"].signal, "abort").length).toBeLessThanOrEqual(1);
      expect(getEventListeners(agent.daemon["runsAbort"].signal, "abort")).toHaveLength(0);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
    }
  });
});
