/**
 * Enrollment through the composition root: the agent proves its key for a per-agent credential,
 * keeps it only in memory (and in the redactor, never in the log), and enrolls again when the
 * control plane refuses it (here: the control plane forgot the agent, as after a restart).
 * In process, against the reference control plane on loopback with the stand-in tofu.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, type LogLine } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { composeInProcess } from "../support/in-process-agent.js";
import { agentFiles } from "../support/reliability-agents.js";

let h: Harness;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-enroll-"));
  // Short long-polls, so the agent meets the refusal soon after the control plane forgets it.
  h = await startControlPlane({
    agentApi: { heartbeatIntervalSeconds: 0.2, pollWaitSeconds: 0.2, bundleTtlSeconds: 120 },
  });
});

afterAll(async () => {
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

/** Collects the agent's JSON log lines; `next` resolves at the first (or an earlier) line that matches. */
function logCollector(): {
  sink: { write(text: string): void };
  lines: LogLine[];
  raw: () => string;
  next(match: (l: LogLine) => boolean): Promise<LogLine>;
} {
  const lines: LogLine[] = [];
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let raw = "";
  return {
    lines,
    raw: () => raw,
    sink: {
      write(text) {
        raw += text;
        for (const part of text.split("\n").filter(Boolean)) {
          const line = JSON.parse(part) as LogLine;
          lines.push(line);
          for (const w of [...waiters]) if (w.match(line)) waiters.splice(waiters.indexOf(w), 1)[0]?.resolve(line);
        }
      },
    },
    next(match) {
      const found = lines.find(match);
      return found ? Promise.resolve(found) : new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

describe("enrollment", () => {
  it("enrolls with proof of its key, and enrolls again when its credential is refused", async () => {
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
    try {
      const first = (await log.next((l) => l["event"] === "registered"))["agent_id"] as string;
      expect(h.cp.store.agents.get(first)?.credential_sha256).toMatch(/^[0-9a-f]{64}$/);
      // The control plane forgets the agent: its credential is refused at the next poll.
      h.cp.store.agents.delete(first);
      const again = await log.next((l) => l["event"] === "reregistering");
      expect(again["code"]).toBe("CONTROL_PLANE_UNAUTHORIZED");
      const second = (await log.next((l) => l["event"] === "registered" && l["agent_id"] !== first))[
        "agent_id"
      ] as string;
      expect(h.cp.store.agents.has(second)).toBe(true);
      const runId = await h.createRun({ "main.tf": "\n" }, ["init"]);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"]);
      expect(run.status).toBe("succeeded");
      expect(run.events.find((e) => e.type === "leased")?.["agent_id"]).toBe(second);
      expect(log.lines.some((l) => l["event"] === "unauthorized")).toBe(false);
    } finally {
      agent.daemon.requestShutdown();
      expect((await ended).code).toBe(0);
    }
    // Both credentials stay redacted; neither reached the log, nor did a lease id at info.
    expect(agent.redactor.size).toBe(3);
    expect(log.raw()).not.toMatch(/oca1_/);
    expect(log.lines.filter((l) => "lease_id" in l)).toEqual([]);
  });
});
