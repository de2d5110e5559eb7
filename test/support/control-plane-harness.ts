/**
 * A real reference control plane on 127.0.0.1 (port 0), in the test process, with helpers that
 * use its admin API over HTTP and wait for run statuses through the store's events (no polling).
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { createControlPlane, type ControlPlane, type ControlPlaneOptions } from "../../src/control-plane/server.js";
import type { RunRecord, RunStatus } from "../../src/control-plane/store.js";

const execFileAsync = promisify(execFile);

export interface Harness {
  readonly cp: ControlPlane;
  readonly url: string;
  readonly adminToken: string;
  readonly agentToken: string;
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }>;
  createIntegration(body: Record<string, unknown>): Promise<{ id: string }>;
  createRun(files: Record<string, string>, phases?: string[]): Promise<string>;
  waitForStatus(runId: string, statuses: readonly RunStatus[], timeoutMs?: number): Promise<RunRecord>;
  close(): Promise<void>;
}

export async function tarGz(files: Record<string, string>): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), "oca-cfg-"));
  try {
    for (const [name, content] of Object.entries(files)) {
      await mkdir(dirname(join(dir, name)), { recursive: true });
      await writeFile(join(dir, name), content);
    }
    const { stdout } = await execFileAsync("tar", ["czf", "-", "-C", dir, "."], {
      encoding: "buffer",
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function startControlPlane(options: Partial<ControlPlaneOptions> = {}): Promise<Harness> {
  const adminToken = randomBytes(24).toString("base64url");
  const agentToken = randomBytes(24).toString("base64url");
  const cp = await createControlPlane({
    adminToken,
    agentToken,
    leaseTtlSeconds: 3,
    agentApi: { heartbeatIntervalSeconds: 0.2, pollWaitSeconds: 5, bundleTtlSeconds: 120 },
    // Tests name registries that cannot be reached from here; they are accepted with a warning.
    probe: () => Promise.resolve({ warnings: ["not probed in tests"] }),
    ...options,
  });
  const { url } = await cp.listen("127.0.0.1", 0);

  async function admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`${url}/api/admin/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, json: text === "" ? null : (JSON.parse(text) as unknown) };
  }

  return {
    cp,
    url,
    adminToken,
    agentToken,
    admin,
    async createIntegration(body) {
      const res = await admin("POST", "/integrations", body);
      if (res.status !== 201) throw new Error(`integration not created: ${res.status} ${JSON.stringify(res.json)}`);
      return res.json as { id: string };
    },
    async createRun(files, phases = ["init", "plan", "apply"]) {
      const archive = await tarGz(files);
      const res = await admin("POST", "/runs", { configuration_tar_gz_base64: archive.toString("base64"), phases });
      if (res.status !== 201) throw new Error(`run not created: ${res.status} ${JSON.stringify(res.json)}`);
      return (res.json as { id: string }).id;
    },
    waitForStatus(runId, statuses, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const run = cp.store.runs.get(runId);
          if (run && statuses.includes(run.status)) {
            cp.store.off("run-changed", onChange);
            clearTimeout(timer);
            resolve(run);
            return true;
          }
          return false;
        };
        const onChange = (): void => {
          check();
        };
        const timer = setTimeout(() => {
          cp.store.off("run-changed", onChange);
          reject(
            new Error(
              `run ${runId} did not reach ${statuses.join("/")} within ${timeoutMs} ms (status ${cp.store.runs.get(runId)?.status ?? "unknown"})`,
            ),
          );
        }, timeoutMs);
        cp.store.on("run-changed", onChange);
        check();
      });
    },
    close: () => cp.close(),
  };
}
