/**
 * A registry that stalls pre-flight cannot hold a canceled run: a real agent process, pre-flight
 * on, against a TLS registry stand-in (127.0.0.1, a throwaway CA) that answers /v2/ with a Basic
 * challenge and then never answers the request with credentials (the check would otherwise end
 * only at its deadlines, 10 s per request). The run is canceled while the agent waits: it ends `canceled` within the cancel grace plus a few
 * heartbeats, and no credential file ever exists, because pre-flight runs before anything is
 * written. Then the agent drains at once on SIGTERM.
 */
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_TOFU, startAgent } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { agentFiles } from "../support/reliability-agents.js";
import { makeTlsMaterial, type TlsMaterial } from "../support/registry-fixture.js";

let dir: string;
let tls: TlsMaterial;
let h: Harness;
let registry: Server;
let host: string;
/** Resolves when the request with credentials has arrived (and is left unanswered). */
let dripping: Promise<void>;
/** Whether the agent hung up on it (it must: the run ended). */
let hungUp: Promise<boolean>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-preflight-cancel-"));
  tls = await makeTlsMaterial(dir);
  let startDrip: () => void = () => undefined;
  dripping = new Promise((resolve) => (startDrip = resolve));
  let noteHangUp: (value: boolean) => void = () => undefined;
  hungUp = new Promise((resolve) => (noteHangUp = resolve));
  registry = createServer(
    { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
    (req: IncomingMessage, res: ServerResponse) => {
      if (req.headers.authorization === undefined) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="stall"', "content-type": "application/json" }).end("{}");
        return;
      }
      // Headers, then nothing: the agent's per-request deadline (10 s) and the check's (30 s) are far away.
      res.once("close", () => {
        noteHangUp(!res.writableFinished);
      });
      startDrip();
    },
  );
  registry.listen(0, "127.0.0.1");
  await once(registry, "listening");
  host = `127.0.0.1:${(registry.address() as AddressInfo).port}`;
  h = await startControlPlane();
  await h.createIntegration({
    name: "stalling registry",
    registry_url: `https://${host}`,
    username: "robot",
    password: "stall-password-123",
    export_credentials: true,
  });
});

afterAll(async () => {
  registry.closeAllConnections();
  registry.close();
  await h.close();
  await rm(dir, { recursive: true, force: true });
});

async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe("a stalled registry during pre-flight", () => {
  it("a canceled run ends within the cancel grace, with no credential file ever written, and the agent hangs up on the registry", async () => {
    const { keyFile, tokenFile } = await agentFiles(dir, h.agentToken);
    const workDir = await mkdtemp(join(dir, "work-"));
    const agent = startAgent(
      [
        "--control-plane-url",
        h.url,
        "--token-file",
        tokenFile,
        "--key-file",
        keyFile,
        "--work-dir",
        workDir,
        "--tofu-bin",
        FAKE_TOFU,
        "--cancel-grace",
        "500ms",
        "--listen",
        "off",
      ],
      { HOME: dir, TF_CLI_CONFIG_FILE: "", NODE_EXTRA_CA_CERTS: tls.caFile },
    );
    try {
      await agent.waitForLog((l) => l["event"] === "registered");
      const runId = await h.createRun({ "main.tf": `module "m" {\n  source = "oci://${host}/team/mod?tag=1"\n}\n` }, [
        "init",
      ]);
      await dripping;
      // Pre-flight is waiting on the registry: nothing of the run's credentials is on disk.
      expect(await filesUnder(join(workDir, "credentials"))).toEqual([]);
      const canceledAt = performance.now();
      expect((await h.admin("POST", `/runs/${runId}/cancel`)).status).toBe(202);
      const run = await h.waitForStatus(runId, ["succeeded", "failed", "canceled"], 10_000);
      const tookMs = performance.now() - canceledAt;
      expect(run.status).toBe("canceled");
      expect(run.error?.code).toBe("RUN_CANCELED");
      // Heartbeats every 200 ms carry the cancel; 500 ms of grace; generous for a loaded machine.
      expect(tookMs).toBeLessThan(5_000);
      expect(await hungUp).toBe(true);
      const finished = await agent.waitForLog((l) => l["run_id"] === runId && l["event"] === "run_finished");
      expect(finished).toMatchObject({ outcome: "canceled", code: "RUN_CANCELED" });
      expect(agent.lines.some((l) => l["run_id"] === runId && l["event"] === "credentials_written")).toBe(false);
      expect(await filesUnder(join(workDir, "credentials"))).toEqual([]);
      agent.kill("SIGTERM");
      expect((await agent.exited).code).toBe(0);
    } finally {
      agent.kill("SIGKILL");
    }
  });
});
