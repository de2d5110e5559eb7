/**
 * The disk full when the credentials are written, the one ending test/daemon/endings.test.ts
 * does not cover. Two ways, both run where possible:
 *
 * 1. A real full file system, daemon level: a 256 KiB tmpfs is mounted as --credentials-dir
 *    (this needs CAP_SYS_ADMIN; the test says so and uses way 2 only when mounting is refused)
 *    and filled up, first completely, then to one free page (the marker fits, docker/config.json
 *    does not). The run fails with RUN_DIR_WRITE_FAILED at the control plane, nothing of it
 *    remains on the tmpfs, and once space is back the agent runs the next run.
 * 2. A fault injected at the file-system edge (the `FileSystem` object src/fs/secure-fs.ts takes),
 *    in process: ENOSPC at every write position in turn, after half of the bytes were written.
 *    Each is refused with RUN_DIR_WRITE_FAILED and nothing is left in the run directory's parent.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import * as nodeFs from "node:fs/promises";
import { mkdir, mkdtemp, open, readdir, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { materializeRun } from "../../src/credentials/materialize.js";
import { isAgentError } from "../../src/core/errors.js";
import { generatePrivateKeyPem, parsePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { sealBundle } from "../../src/crypto/sealed-bundle.js";
import type { FileSystem } from "../../src/fs/secure-fs.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import {
  addCanaryIntegration,
  agentFiles,
  canaryLeaks,
  launchAgent,
  MAIN_TF,
  newCanary,
  stopAgent,
  type Canary,
} from "../support/reliability-agents.js";
import { recordFigures } from "../support/reliability-figures.js";

let dir: string;
let canary: Canary;
const figures: Record<string, unknown> = {};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-diskfull-"));
  canary = newCanary();
});

afterAll(async () => {
  recordFigures("disk-full", figures);
  await rm(dir, { recursive: true, force: true });
});

function tryMount(path: string, size: string): string | undefined {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", path], { stdio: "pipe" });
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message.split("\n")[0] : "mount failed";
  }
}

/** Writes zeros until the file system is full. */
async function fill(path: string): Promise<number> {
  const handle = await open(path, "w");
  const page = Buffer.alloc(4096);
  let written = 0;
  try {
    for (;;) {
      await handle.write(page);
      written += page.length;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
  } finally {
    await handle.close();
  }
  return written;
}

describe("disk full while writing credentials", () => {
  it("a real full tmpfs as --credentials-dir: the run fails with RUN_DIR_WRITE_FAILED, nothing remains, the agent recovers", async () => {
    const mnt = join(dir, "tmpfs");
    await mkdir(mnt);
    const refused = tryMount(mnt, "256k");
    if (refused !== undefined) {
      // Way 2 below covers the ending through the file-system edge; say so in the figures.
      figures["tmpfs"] = { mounted: false, reason: refused };
      return;
    }
    let h: Harness | undefined;
    let agent: ReturnType<typeof launchAgent> | undefined;
    try {
      h = await startControlPlane();
      await addCanaryIntegration(h, canary);
      const files = await agentFiles(dir, h.agentToken);
      const creds = join(mnt, "creds");
      agent = launchAgent(h.url, files, join(dir, "work"), ["--credentials-dir", creds]);
      await agent.waitForLog((l) => l["event"] === "registered");
      const reserve = join(mnt, "reserve");
      await nodeFs.writeFile(reserve, Buffer.alloc(4096));
      const filled = await fill(join(mnt, "filler"));
      const results: Record<string, string> = {};

      // No free page at all: the marker cannot be written.
      const none = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      const r1 = await h.waitForStatus(none, ["succeeded", "failed", "canceled"]);
      results["no free page"] = r1.error?.code ?? r1.status;
      expect(r1.status).toBe("failed");
      expect(r1.error?.code).toBe("RUN_DIR_WRITE_FAILED");
      await agent.waitForLog((l) => l["run_id"] === none && l["event"] === "run_finished");
      expect(await readdir(creds)).toEqual([]);

      // One free page: the marker fits, the Docker config does not; what was written is wiped.
      await unlink(reserve);
      const one = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      const r2 = await h.waitForStatus(one, ["succeeded", "failed", "canceled"]);
      results["one free page"] = r2.error?.code ?? r2.status;
      expect(r2.status).toBe("failed");
      expect(r2.error?.code).toBe("RUN_DIR_WRITE_FAILED");
      await agent.waitForLog((l) => l["run_id"] === one && l["event"] === "run_finished");
      expect(await readdir(creds)).toEqual([]);
      expect(await canaryLeaks(mnt, canary)).toEqual([]);

      // Space back: the agent is healthy and runs the next run, then wipes it.
      await unlink(join(mnt, "filler"));
      const next = await h.createRun({ "main.tf": MAIN_TF }, ["init"]);
      expect((await h.waitForStatus(next, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
      await agent.waitForLog((l) => l["run_id"] === next && l["event"] === "credentials_wiped");
      expect(await readdir(creds)).toEqual([]);
      expect(await canaryLeaks(mnt, canary)).toEqual([]);
      expect(await canaryLeaks(join(dir, "work"), canary)).toEqual([]);
      figures["tmpfs"] = {
        mounted: true,
        size: "256k",
        filler_bytes: filled,
        results,
        next_run: "succeeded",
        canary_leaks: 0,
      };
    } finally {
      if (agent) await stopAgent(agent);
      await h?.close();
      execFileSync("umount", [mnt]);
    }
  });

  it("ENOSPC injected at the file-system edge at every write position: RUN_DIR_WRITE_FAILED, nothing left", async () => {
    const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
    const plaintext = JSON.stringify({
      version: 1,
      registries: [{ id: "int-1", url: "https://registry.canary.test", username: "octocat", password: canary.secret }],
    });
    const results: string[] = [];
    for (let failAt = 1; ; failAt++) {
      let creates = 0;
      const fault = { injected: false };
      // The failAt-th file created gets half its bytes, then ENOSPC (as a full disk does).
      const faulty: FileSystem = {
        ...nodeFs,
        open: (async (path: string, flags: number, mode?: number) => {
          const handle: FileHandle = await nodeFs.open(path, flags, mode);
          if (typeof flags !== "number" || (flags & nodeFs.constants.O_CREAT) === 0 || ++creates !== failAt)
            return handle;
          fault.injected = true;
          return new Proxy(handle, {
            get(target, prop, receiver) {
              if (prop === "writeFile") {
                return async (data: string | Uint8Array) => {
                  const bytes = typeof data === "string" ? Buffer.from(data) : Buffer.from(data);
                  await target.write(bytes.subarray(0, Math.floor(bytes.length / 2)));
                  throw Object.assign(new Error("ENOSPC: no space left on device, write"), {
                    code: "ENOSPC",
                    errno: -28,
                  });
                };
              }
              const value: unknown = Reflect.get(target, prop, receiver);
              return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
            },
          });
        }) as FileSystem["open"],
      };
      const parent = await mkdtemp(join(dir, "edge-"));
      const runDir = join(parent, "run-edge");
      const bundle = await sealBundle({
        recipient: key,
        agentId: "agent-edge",
        runId: "run-edge",
        plaintext: Buffer.from(plaintext),
        issuedAtMs: Date.now(),
        ttlSeconds: 60,
      });
      let code: string | undefined;
      try {
        await materializeRun({
          bundle: Buffer.from(bundle),
          keys: new Map([[key.kid, key]]),
          agentId: "agent-edge",
          runId: "run-edge",
          runDir,
          nowMs: Date.now(),
          maxLifetimeSeconds: 3600,
          clockSkewSeconds: 120,
          tofuCliConfigSources: [],
          fs: faulty,
        });
      } catch (error) {
        code = isAgentError(error) ? error.code : `foreign: ${String(error)}`;
      }
      if (!fault.injected) {
        // Past the last file the agent writes: this one succeeded.
        expect(code).toBeUndefined();
        break;
      }
      results.push(code ?? "accepted");
      expect(code, `ENOSPC at file ${failAt}`).toBe("RUN_DIR_WRITE_FAILED");
      expect(existsSync(runDir), `ENOSPC at file ${failAt}: the run directory is wiped`).toBe(false);
      expect(await readdir(parent)).toEqual([]);
      expect(await canaryLeaks(parent, canary)).toEqual([]);
    }
    expect(results.length).toBeGreaterThanOrEqual(4);
    figures["fs_edge"] = { write_positions: results.length, codes: results };
  });
});
