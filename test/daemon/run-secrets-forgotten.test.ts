/**
 * A run's secrets leave the redactor when the run ends: during the run the password (and its
 * other forms) is masked wherever it appears, even in tofu's own output; after the run the
 * redactor holds exactly what it held before (the agent's token), so it neither grows with
 * every run nor keeps an old run's secrets. In process, through the composition root
 * (src/app/compose-agent.ts composeAgent: its `redactor`, `daemon` and `run()`), against the
 * reference control plane on loopback with the stand-in tofu.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REDACTED } from "../../src/core/redactor.js";
import { FAKE_TOFU } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { composeInProcess } from "../support/in-process-agent.js";
import { logCollector } from "../support/log-collector.js";
import { leakForms } from "../support/leak-forms.js";
import { agentFiles } from "../support/reliability-agents.js";

const CANARY = `CANARY-${randomBytes(6).toString("hex")}`;
const HOST = "forget.canary.test";
const MAIN_TF = `module "m" {\n  source = "oci://${HOST}/team/mod?tag=1"\n}\n`;

let h: Harness;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-forget-"));
  h = await startControlPlane();
  await h.createIntegration({
    name: "forget",
    registry_url: `https://${HOST}`,
    username: "robot",
    password: CANARY,
    export_credentials: true,
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

describe("after a run", () => {
  it("the redactor no longer holds the run's secrets, and holds what it held before", async () => {
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const log = logCollector();
    const env = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir };
    const agent = await composeInProcess(
      {
        control_plane_url: h.url,
        token_file: tokenFile,
        key_file: keyFile,
        work_dir: await mkdtemp(join(dir, "work-")),
        tofu_bin: FAKE_TOFU,
        cancel_grace: "1s",
        run_timeout: "60s",
        preflight: false,
      },
      env,
      log.sink,
    );
    const ended = agent.run();
    let before: { size: number; longest: number } | undefined;
    try {
      await log.next((l) => l["event"] === "registered");
      before = { size: agent.redactor.size, longest: agent.redactor.longest };
      // The pool token, and the per-agent credential enrollment gave (oca1_ + 43 characters).
      expect(before).toEqual({ size: 2, longest: Math.max(h.agentToken.length, 48) });
      expect(agent.redactor.redact(CANARY)).toBe(CANARY);

      const runId = await h.createRun(
        { "main.tf": MAIN_TF, "fake-tofu.json": JSON.stringify({ echo_secret_phase: "plan" }) },
        ["init", "plan"],
      );
      expect((await h.waitForStatus(runId, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      // During the run the password was in the redactor: tofu printed it, the log shows it masked.
      const leak = await log.next(
        (l) => l["run_id"] === runId && typeof l["msg"] === "string" && l["msg"].startsWith("leaked password"),
      );
      expect(leak["msg"]).toContain(REDACTED);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
    }
    // Once the run is over (run() returned after draining it), only the token and credential are left.
    expect({ size: agent.redactor.size, longest: agent.redactor.longest }).toEqual(before);
    expect(agent.redactor.redact(`x ${CANARY} y`)).toBe(`x ${CANARY} y`);
    expect(agent.redactor.redact(`x ${h.agentToken} y`)).toBe(`x ${REDACTED} y`);
    for (const form of leakForms(CANARY, "robot")) expect(log.raw()).not.toContain(form);
    expect(log.raw()).not.toMatch(/oca1_/);
  });
});
