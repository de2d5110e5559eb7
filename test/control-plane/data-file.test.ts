/**
 * `oci-cred-agent control-plane --data-file`: state survives a restart of the real CLI process,
 * passwords are encrypted at rest (no form of the canary password in the file), the file and
 * its key are mode 0600, and a run in flight at the stop fails rather than running again. The
 * restored password is the real one: a bundle leased after the restart opens to it.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parsePrivateKeyPem } from "../../src/crypto/agent-key.js";
import { openBundle } from "../../src/crypto/sealed-bundle.js";
import { tarGz } from "../support/control-plane-harness.js";
import { enrollAgent } from "../support/enroll.js";
import { freePort } from "../support/free-port.js";
import { leakForms } from "../support/leak-forms.js";
import { spawnCliControlPlane, type CliControlPlane } from "../support/cli-control-plane.js";

const execFileAsync = promisify(execFile);
const BIN = fileURLToPath(new URL("../../bin/oci-cred-agent", import.meta.url));
const CANARY = `CANARY-${randomBytes(6).toString("hex")}:pw"with\\odd/</x>`;
const USER = "octocat";

let dir: string;
let dataFile: string;
const adminToken = randomBytes(24).toString("base64url");
const agentToken = randomBytes(24).toString("base64url");
const running: CliControlPlane[] = [];

async function startCliControlPlane(): Promise<CliControlPlane> {
  const cp = await spawnCliControlPlane([
    "--admin-token-file",
    join(dir, "admin.token"),
    "--agent-token-file",
    join(dir, "agent.token"),
    "--data-file",
    dataFile,
  ]);
  running.push(cp);
  return cp;
}

async function api(
  cp: CliControlPlane,
  method: string,
  path: string,
  body?: unknown,
  bearer?: string,
): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
  const token = bearer ?? (path.startsWith("/api/admin/") ? adminToken : agentToken);
  const res = await fetch(`${cp.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, text, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-cp-data-"));
  dataFile = join(dir, "state.json");
  await writeFile(join(dir, "admin.token"), `${adminToken}\n`, { mode: 0o600 });
  await writeFile(join(dir, "agent.token"), `${agentToken}\n`, { mode: 0o600 });
});

afterAll(async () => {
  for (const cp of running) await cp.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("--data-file", () => {
  let kept: Record<string, unknown>;
  let helper: Record<string, unknown>;
  let deleted: string;
  let queuedRun: string;
  let unreachable: string;

  it("the first process saves its state on SIGTERM, with the password encrypted and the files mode 0600", async () => {
    const first = await startCliControlPlane();
    unreachable = `https://127.0.0.1:${await freePort()}`;
    const made = await api(first, "POST", "/api/admin/v1/integrations", {
      name: "kept",
      registry_url: unreachable,
      username: USER,
      password: CANARY,
      export_credentials: true,
    });
    expect(made.status).toBe(201);
    const { warnings: _w, ...rest } = made.json;
    kept = rest;
    const h = await api(first, "POST", "/api/admin/v1/integrations", {
      name: "helper",
      registry_url: "https://127.0.0.1:1",
      credential_helper: "ecr-login",
      export_credentials: true,
    });
    expect(h.status).toBe(201);
    const { warnings: _w2, ...hrest } = h.json;
    helper = hrest;
    const gone = await api(first, "POST", "/api/admin/v1/integrations", {
      name: "deleted",
      registry_url: unreachable,
      username: "x",
      password: `${CANARY}-deleted`,
      export_credentials: true,
    });
    deleted = gone.json["id"] as string;
    expect((await api(first, "DELETE", `/api/admin/v1/integrations/${deleted}`)).status).toBe(204);
    const archive = await tarGz({ "main.tf": "\n" });
    queuedRun = (
      await api(first, "POST", "/api/admin/v1/runs", {
        configuration_tar_gz_base64: archive.toString("base64"),
        phases: ["init"],
      })
    ).json["id"] as string;

    expect(await first.stop()).toBe(0);
    expect(first.output()).not.toContain(CANARY);

    const st = await stat(dataFile);
    expect(st.mode & 0o777).toBe(0o600);
    expect((await stat(`${dataFile}.key`)).mode & 0o777).toBe(0o600);
    const text = await readFile(dataFile, "utf8");
    // The file is the state: it names what was saved...
    expect(text).toContain(kept["id"] as string);
    expect(text).toContain(queuedRun);
    // ...and holds no form of any password.
    for (const secret of [CANARY, `${CANARY}-deleted`]) {
      for (const form of leakForms(secret, USER))
        expect(text.includes(form), `the data file holds ${form}`).toBe(false);
    }
    // No temporary file is left beside it.
    expect((await readdir(dir)).filter((n) => n.startsWith("state.json")).sort()).toEqual([
      "state.json",
      "state.json.key",
    ]);
  });

  it("a restarted process serves the same integrations; the queued run failed CONTROL_PLANE_RESTARTED", async () => {
    const second = await startCliControlPlane();
    const list = await api(second, "GET", "/api/admin/v1/integrations");
    expect(list.status).toBe(200);
    const items = list.json["integrations"] as Record<string, unknown>[];
    expect(items.map((i) => i["id"]).sort()).toEqual([kept["id"], helper["id"]].sort());
    expect(items.find((i) => i["id"] === kept["id"])).toEqual(kept);
    expect(items.find((i) => i["id"] === helper["id"])).toEqual(helper);
    expect(kept).toMatchObject({
      name: "kept",
      registry_url: unreachable,
      username: USER,
      has_password: true,
      export_credentials: true,
    });
    expect(list.text).not.toContain(CANARY);

    const run = await api(second, "GET", `/api/admin/v1/runs/${queuedRun}`);
    expect(run.json).toMatchObject({ id: queuedRun, status: "failed", error: { code: "CONTROL_PLANE_RESTARTED" } });
  });

  it("the restored password is the real one: a bundle leased after the restart opens to it", async () => {
    const second = running[running.length - 1] as CliControlPlane;
    const keyFile = join(dir, "agent.key");
    await execFileAsync(BIN, ["keygen", "--key-file", keyFile]);
    const key = await parsePrivateKeyPem(await readFile(keyFile, "utf8"), keyFile);
    const { agentId, credential } = await enrollAgent(second.url, agentToken, new Map([[key.kid, key]]));
    const archive = await tarGz({ "main.tf": "\n" });
    const runId = (
      await api(second, "POST", "/api/admin/v1/runs", {
        configuration_tar_gz_base64: archive.toString("base64"),
        phases: ["init"],
      })
    ).json["id"] as string;
    // The failed run from before the restart is not leased again: only the new one.
    const leased = await api(
      second,
      "POST",
      `/api/agent/v1/agents/${agentId}/leases`,
      { max: 5, wait_seconds: 5 },
      credential,
    );
    const leases = leased.json["leases"] as { lease_id: string; run: { id: string }; bundle: string }[];
    expect(leases.map((l) => l.run.id)).toEqual([runId]);
    const opened = await openBundle(Buffer.from(leases[0]?.bundle ?? "", "utf8"), {
      keys: new Map([[key.kid, key]]),
      agentId,
      runId,
      nowMs: Date.now(),
      maxLifetimeSeconds: 3600,
      clockSkewSeconds: 120,
    });
    const plain = JSON.parse(Buffer.from(opened.plaintext).toString("utf8")) as {
      registries: Record<string, unknown>[];
    };
    expect(plain.registries.find((r) => r["id"] === kept["id"])).toMatchObject({ username: USER, password: CANARY });
    expect(plain.registries.find((r) => r["id"] === helper["id"])).toMatchObject({ credential_helper: "ecr-login" });
    expect(plain.registries.map((r) => r["id"])).not.toContain(deleted);
    expect(await second.stop()).toBe(0);
    const text = await readFile(dataFile, "utf8");
    for (const form of leakForms(CANARY, USER)) expect(text.includes(form), `the data file holds ${form}`).toBe(false);
    expect((await stat(dataFile)).mode & 0o777).toBe(0o600);
  });
});
