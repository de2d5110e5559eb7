/**
 * The agent API of the reference control plane, driven directly with fetch over real HTTP on
 * 127.0.0.1 as a third-party agent would drive it from docs/protocol.md section 3: a key made by
 * `bin/oci-cred-agent keygen`, registration, long-poll leases, the sealed bundle (opened with
 * the agent's key), heartbeats, completion and lease loss. The store's clock is the system clock
 * plus an offset that tests move forward, so "newer" and "later" never depend on waiting.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createControlPlane, type ControlPlane } from "../../src/control-plane/server.js";
import { systemClock, type RunRecord, type RunStatus, type StoreClock } from "../../src/control-plane/store.js";
import { parsePrivateKeyPem, type AgentPrivateKey } from "../../src/crypto/agent-key.js";
import { openBundle, openChallenge } from "../../src/crypto/sealed-bundle.js";
import { tarGz } from "../support/control-plane-harness.js";
import { leakForms } from "../support/leak-forms.js";

const execFileAsync = promisify(execFile);
const BIN = fileURLToPath(new URL("../../bin/oci-cred-agent", import.meta.url));
const CANARY_B = `CANARY-B-${randomBytes(6).toString("hex")}:pw"with\\odd/</x>`;
const CANARY_A = `CANARY-A-${randomBytes(6).toString("hex")}"older`;
const CANARY_OFF = `CANARY-OFF-${randomBytes(6).toString("hex")}\\off`;
const CANARY_SCOPED = `CANARY-S-${randomBytes(6).toString("hex")}'scoped`;

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
  headers: Headers;
}

interface Registered {
  agentId: string;
  keys: Map<string, AgentPrivateKey>;
  /** The per-agent credential from enrollment. */
  credential: string;
}

interface ExportEntry {
  id: string;
  name: string;
  url: string;
  updated_at: string;
  username?: string;
  password?: string;
  credential_helper?: string;
}

let dir: string;
let cp: ControlPlane;
let url: string;
let skewMs = 0;
const adminToken = randomBytes(24).toString("base64url");
const agentToken = randomBytes(24).toString("base64url");
const clock: StoreClock = { now: () => Date.now() + skewMs, setTimer: (fn, ms) => systemClock.setTimer(fn, ms) };
/** Every answer, raw; lease answers with their sealed bundle cut out (it is the one ciphertext). */
const answers: { where: string; text: string }[] = [];

async function call(method: string, path: string, body: unknown, token: string | null): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers["authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const json =
    text === "" || !(res.headers.get("content-type") ?? "").includes("json")
      ? {}
      : (JSON.parse(text) as Record<string, unknown>);
  let recorded = text;
  for (const lease of (json["leases"] as { bundle: string }[] | undefined) ?? [])
    recorded = recorded.replace(JSON.stringify(lease.bundle), '"<bundle>"');
  answers.push({ where: `${method} ${path} (${res.status})`, text: recorded });
  return { status: res.status, text, json, headers: res.headers };
}

/** Every enrolled agent's credential, by agent id, and the agent each lease was handed to. */
const credentials = new Map<string, string>();
const leaseHolders = new Map<string, string>();

/**
 * Calls the agent API as the agent the path names (`/agents/{id}/...`, or `/leases/{id}/...` of a
 * lease that agent was handed), with its credential; with the pool token otherwise.
 */
async function agentCall(method: string, path: string, body?: unknown): Promise<Answer> {
  const [collection, id] = path.split("/").filter(Boolean);
  const agentId = collection === "agents" ? id : collection === "leases" ? leaseHolders.get(id ?? "") : undefined;
  const a = await call(method, `/api/agent/v1${path}`, body, credentials.get(agentId ?? "") ?? agentToken);
  if (collection === "agents" && agentId !== undefined)
    for (const lease of (a.json["leases"] as { lease_id: string }[] | undefined) ?? [])
      leaseHolders.set(lease.lease_id, agentId);
  return a;
}

/** Enrollment, both steps, against the control plane at `base`: opens the challenge with `keys`. */
async function enroll(
  base: string,
  doc: { kid: string; public_key: string },
  keys: Map<string, AgentPrivateKey>,
): Promise<{ agentId: string; credential: string; answer: Record<string, unknown> }> {
  const post = async (path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await fetch(`${base}/api/agent/v1${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${agentToken}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: JSON.parse(await res.text()) as Record<string, unknown> };
  };
  const reg = await post("/agents", { name: "third-party", version: "9.9.9", concurrency: 2, public_keys: [doc] });
  expect(reg.status).toBe(201);
  const agentId = reg.json["agent_id"] as string;
  const challengeId = reg.json["challenge_id"] as string;
  const answer = await openChallenge(reg.json["challenge"] as string, {
    keys,
    agentId,
    challengeId,
    nowMs: Date.now(),
    clockSkewSeconds: 120,
  });
  const granted = await post(`/agents/${agentId}/credential`, { challenge_id: challengeId, answer });
  expect(granted.status).toBe(200);
  const credential = granted.json["credential"] as string;
  return { agentId, credential, answer: granted.json };
}
const adminCall = (method: string, path: string, body?: unknown): Promise<Answer> =>
  call(method, `/api/admin/v1${path}`, body, adminToken);

function errorOf(a: Answer): { code: string; message: string } {
  return a.json["error"] as { code: string; message: string };
}

async function register(): Promise<Registered> {
  const keyFile = join(dir, `agent-${randomBytes(4).toString("hex")}.key`);
  const { stdout: made } = await execFileAsync(BIN, ["keygen", "--key-file", keyFile], { encoding: "utf8" });
  const { stdout: shown } = await execFileAsync(BIN, ["pubkey", "--key-file", keyFile], { encoding: "utf8" });
  const doc = JSON.parse(shown) as { kid: string; public_key: string };
  expect(JSON.parse(made)).toEqual(doc);
  const key = await parsePrivateKeyPem(await readFile(keyFile, "utf8"), keyFile);
  expect(key.kid).toBe(doc.kid);
  const keys = new Map([[key.kid, key]]);
  const { agentId, credential } = await enroll(url, doc, keys);
  credentials.set(agentId, credential);
  return { agentId, keys, credential };
}

async function createIntegration(body: Record<string, unknown>): Promise<string> {
  const a = await adminCall("POST", "/integrations", body);
  expect(a.status, a.text).toBe(201);
  return a.json["id"] as string;
}

async function createRun(phases: string[] = ["init", "plan", "apply"]): Promise<{ id: string; archive: Buffer }> {
  const archive = await tarGz({ "main.tf": `# ${randomBytes(4).toString("hex")}\n` });
  const a = await adminCall("POST", "/runs", { configuration_tar_gz_base64: archive.toString("base64"), phases });
  expect(a.status).toBe(201);
  return { id: a.json["id"] as string, archive };
}

async function openLeaseBundle(
  agent: Registered,
  runId: string,
  bundle: string,
): Promise<{ version: number; registries: ExportEntry[] }> {
  const opened = await openBundle(Buffer.from(bundle, "utf8"), {
    keys: agent.keys,
    agentId: agent.agentId,
    runId,
    nowMs: Date.now(),
    maxLifetimeSeconds: 3600,
    clockSkewSeconds: 120,
  });
  return JSON.parse(Buffer.from(opened.plaintext).toString("utf8")) as { version: number; registries: ExportEntry[] };
}

interface LeaseJson {
  lease_id: string;
  expires_at: string;
  run: { id: string; phases: string[]; configuration: { sha256: string; size_bytes: number; inline_base64?: string } };
  bundle: string;
}

async function leaseOne(agent: Registered, waitSeconds = 5): Promise<LeaseJson> {
  const a = await agentCall("POST", `/agents/${agent.agentId}/leases`, { max: 1, wait_seconds: waitSeconds });
  expect(a.status).toBe(200);
  const leases = a.json["leases"] as LeaseJson[];
  expect(leases).toHaveLength(1);
  return leases[0] as LeaseJson;
}

function waitForStatus(control: ControlPlane, runId: string, statuses: readonly RunStatus[]): Promise<RunRecord> {
  return new Promise((resolve) => {
    const check = (): void => {
      const run = control.store.runs.get(runId);
      if (run && statuses.includes(run.status)) {
        control.store.off("run-changed", check);
        resolve(run);
      }
    };
    control.store.on("run-changed", check);
    check();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-cp-agent-"));
  cp = await createControlPlane({
    adminToken,
    agentToken,
    leaseTtlSeconds: 60,
    clock,
    agentApi: { pollWaitSeconds: 2, heartbeatIntervalSeconds: 1, bundleTtlSeconds: 120 },
    // The agent API is under test here; registry_url probing is the admin tests' business.
    probe: () => Promise.resolve({ warnings: [] }),
  });
  ({ url } = await cp.listen("127.0.0.1", 0));
});

afterAll(async () => {
  await (cp as ControlPlane | undefined)?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("agent API", () => {
  it("GET /ping answers 200 {api_version: 1, time} with a Date header", async () => {
    const a = await agentCall("GET", "/ping");
    expect(a.status).toBe(200);
    expect(a.json).toEqual({ api_version: 1, time: expect.any(String) as unknown });
    const time = Date.parse(a.json["time"] as string);
    expect(Math.abs(time - (Date.now() + skewMs))).toBeLessThan(5000);
    const date = a.headers.get("date");
    expect(date).not.toBeNull();
    expect(Math.abs(Date.parse(date ?? "") - Date.now())).toBeLessThan(5000);
  });

  it("enrolls an agent with the key from `keygen`/`pubkey`: a sealed challenge, then the credential and timings", async () => {
    const keyFile = join(dir, "reg.key");
    await execFileAsync(BIN, ["keygen", "--key-file", keyFile]);
    const doc = JSON.parse(
      (await execFileAsync(BIN, ["pubkey", "--key-file", keyFile], { encoding: "utf8" })).stdout,
    ) as { kid: string; public_key: string };
    const a = await agentCall("POST", "/agents", { name: "n", version: "1.0.0", concurrency: 1, public_keys: [doc] });
    expect(a.status).toBe(201);
    expect(a.json).toEqual({
      agent_id: expect.stringMatching(/^agent-/) as unknown,
      challenge_id: expect.stringMatching(/^challenge-/) as unknown,
      challenge: expect.any(String) as unknown,
    });
    // Not an agent until it answers: nothing is known by that id yet.
    expect(cp.store.agents.has(a.json["agent_id"] as string)).toBe(false);
    const key = await parsePrivateKeyPem(await readFile(keyFile, "utf8"), keyFile);
    const { agentId, credential, answer } = await enroll(url, doc, new Map([[key.kid, key]]));
    expect(answer).toEqual({
      credential: expect.stringMatching(/^oca1_[A-Za-z0-9_-]{43}$/) as unknown,
      poll_wait_seconds: 2,
      heartbeat_interval_seconds: 1,
      lease_ttl_seconds: 60,
    });
    // Stored hashed: the credential itself is nowhere in the store.
    expect(JSON.stringify(cp.store.agents.get(agentId))).not.toContain(credential);
  });

  it("refuses a public key whose kid is not its thumbprint (422 PUBLIC_KEY_INVALID)", async () => {
    const keyFile = join(dir, "bad.key");
    await execFileAsync(BIN, ["keygen", "--key-file", keyFile]);
    const doc = JSON.parse(
      (await execFileAsync(BIN, ["pubkey", "--key-file", keyFile], { encoding: "utf8" })).stdout,
    ) as { kid: string; public_key: string };
    const a = await agentCall("POST", "/agents", {
      name: "n",
      version: "1",
      concurrency: 1,
      // Another first character (a kid that starts with "x" would otherwise stay the same).
      public_keys: [{ ...doc, kid: `${doc.kid.startsWith("x") ? "y" : "x"}${doc.kid.slice(1)}` }],
    });
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("PUBLIC_KEY_INVALID");
  });

  it("an agent acts only as itself: another agent id answers 403 AGENT_NOT_CALLER", async () => {
    const agent = await register();
    const a = await call(
      "POST",
      "/api/agent/v1/agents/agent-nobody/leases",
      { max: 1, wait_seconds: 0 },
      agent.credential,
    );
    expect(a.status).toBe(403);
    expect(errorOf(a).code).toBe("AGENT_NOT_CALLER");
  });

  it("holds a lease request for its wait, then answers [] when nothing is queued", async () => {
    const agent = await register();
    const started = performance.now();
    const a = await agentCall("POST", `/agents/${agent.agentId}/leases`, { max: 1, wait_seconds: 0.4 });
    const elapsed = performance.now() - started;
    expect(a.status).toBe(200);
    expect(a.json).toEqual({ leases: [] });
    expect(elapsed).toBeGreaterThanOrEqual(380);
    expect(elapsed).toBeLessThan(3000);
  });

  it("answers a waiting lease request as soon as a run is queued", async () => {
    const agent = await register();
    // Know when the server holds the request: wrap the store's wait.
    const original = cp.store.waitForRuns.bind(cp.store);
    let held!: () => void;
    const waiting = new Promise<void>((resolve) => (held = resolve));
    cp.store.waitForRuns = (...args) => {
      const p = original(...args);
      held();
      return p;
    };
    try {
      const started = performance.now();
      const pending = agentCall("POST", `/agents/${agent.agentId}/leases`, { max: 1, wait_seconds: 30 });
      await waiting;
      expect(cp.store.runs.size === 0 || [...cp.store.runs.values()].every((r) => r.status !== "queued")).toBe(true);
      const run = await createRun(["init", "plan"]);
      const a = await pending;
      expect(performance.now() - started).toBeLessThan(10_000);
      const leases = a.json["leases"] as LeaseJson[];
      expect(leases).toHaveLength(1);
      const lease = leases[0] as LeaseJson;
      expect(lease.run.id).toBe(run.id);
      expect(lease.run.phases).toEqual(["init", "plan"]);
      expect(lease.lease_id).toMatch(/^lease-/);
      expect(lease.run.configuration.size_bytes).toBe(run.archive.byteLength);
      expect(Buffer.from(lease.run.configuration.inline_base64 ?? "", "base64").equals(run.archive)).toBe(true);
      const config = await fetch(`${url}/api/agent/v1/leases/${lease.lease_id}/configuration`, {
        headers: { authorization: `Bearer ${agent.credential}` },
      });
      expect(config.headers.get("content-type")).toBe("application/gzip");
      expect(Buffer.from(await config.arrayBuffer()).equals(run.archive)).toBe(true);
      expect((await adminCall("GET", `/runs/${run.id}`)).json["status"]).toBe("running");
      const done = await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
        outcome: "succeeded",
        phases: [],
        credentials_wiped: true,
      });
      expect(done.status).toBe(200);
    } finally {
      cp.store.waitForRuns = original;
    }
  });
});

describe("the sealed bundle and the run's events", () => {
  let ids: { older: string; newer: string; off: string; scoped: string; helper: string; scopedHelper: string };
  let agent: Registered;

  beforeAll(async () => {
    const x = "https://registry-x.example.test";
    const y = "https://registry-y.example.test";
    const older = await createIntegration({
      name: "X older",
      registry_url: x,
      username: "ann",
      password: CANARY_A,
      export_credentials: true,
    });
    skewMs += 5000;
    const newer = await createIntegration({
      name: "X newer",
      registry_url: `${x}/`,
      username: "bea",
      password: CANARY_B,
      export_credentials: true,
    });
    const off = await createIntegration({
      name: "Y export off",
      registry_url: y,
      username: "cid",
      password: CANARY_OFF,
      export_credentials: false,
    });
    const scoped = await createIntegration({
      name: "Y org-a",
      registry_url: `${y}/org-a`,
      username: "dee",
      password: CANARY_SCOPED,
      export_credentials: true,
    });
    const helper = await createIntegration({
      name: "ECR",
      registry_url: "https://123.dkr.ecr.example.test",
      credential_helper: "ecr-login",
      export_credentials: true,
    });
    // A helper on a repository path cannot be exported (credHelpers is keyed by host). Put in
    // the store directly, as an older data file could hold it, whatever the admin API accepts.
    const scopedHelper = "int-scoped-helper";
    const at = cp.store.iso();
    cp.store.integrations.set(scopedHelper, {
      id: scopedHelper,
      name: "helper with a path",
      registry_url: `${y}/org-b`,
      username: "",
      password: "",
      credential_helper: "gcr",
      export_credentials: true,
      created_at: at,
      updated_at: at,
    });
    ids = { older, newer, off, scoped, helper, scopedHelper };
    agent = await register();
  });

  it("holds exactly the export-on integrations, one per registry: the newer one wins a host", async () => {
    const run = await createRun();
    const lease = await leaseOne(agent);
    expect(lease.run.id).toBe(run.id);
    expect(lease.bundle).not.toContain(CANARY_B);
    const plain = await openLeaseBundle(agent, run.id, lease.bundle);
    expect(plain.version).toBe(1);
    const byId = new Map(plain.registries.map((r) => [r.id, r]));
    expect([...byId.keys()].sort()).toEqual([ids.newer, ids.scoped, ids.helper].sort());
    expect(byId.get(ids.newer)).toEqual({
      id: ids.newer,
      name: "X newer",
      url: "https://registry-x.example.test",
      username: "bea",
      password: CANARY_B,
      updated_at: expect.any(String) as unknown,
    });
    expect(byId.get(ids.scoped)).toMatchObject({
      url: "https://registry-y.example.test/org-a",
      username: "dee",
      password: CANARY_SCOPED,
    });
    expect(byId.get(ids.helper)).toEqual({
      id: ids.helper,
      name: "ECR",
      url: "https://123.dkr.ecr.example.test",
      credential_helper: "ecr-login",
      updated_at: expect.any(String) as unknown,
    });

    const events = (await adminCall("GET", `/runs/${run.id}`)).json["events"] as Record<string, unknown>[];
    const leftOut = events.filter((e) => e["type"] === "integration_left_out");
    expect(leftOut.map((e) => e["integration_id"]).sort()).toEqual([ids.older, ids.off, ids.scopedHelper].sort());
    const why = new Map(leftOut.map((e) => [e["integration_id"], e]));
    expect(why.get(ids.off)).toMatchObject({
      integration_name: "Y export off",
      code: "EXPORT_OFF",
      reason: expect.stringMatching(/export/) as unknown,
    });
    expect(why.get(ids.older)).toMatchObject({ integration_name: "X older", code: "DUPLICATE_REGISTRY" });
    expect(why.get(ids.older)?.["reason"]).toContain(ids.newer);
    expect(why.get(ids.older)?.["reason"]).toMatch(/updated more recently/);
    expect(why.get(ids.scopedHelper)).toMatchObject({
      code: "ENTRY_INVALID",
      reason: expect.stringMatching(/credential helpers serve a whole registry host/) as unknown,
    });
    await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "succeeded",
      phases: [],
      credentials_wiped: true,
    });
  });

  it("follows the integrations' changes: an update makes the other one newer, export off leaves it out", async () => {
    skewMs += 5000;
    expect((await adminCall("PATCH", `/integrations/${ids.older}`, { password: `${CANARY_A}-rotated` })).status).toBe(
      200,
    );
    expect((await adminCall("PATCH", `/integrations/${ids.scoped}`, { export_credentials: false })).status).toBe(200);
    const run = await createRun();
    const lease = await leaseOne(agent);
    const plain = await openLeaseBundle(agent, run.id, lease.bundle);
    expect(plain.registries.map((r) => r.id).sort()).toEqual([ids.older, ids.helper].sort());
    expect(plain.registries.find((r) => r.id === ids.older)?.password).toBe(`${CANARY_A}-rotated`);
    const events = (await adminCall("GET", `/runs/${run.id}`)).json["events"] as Record<string, unknown>[];
    const codes = new Map(
      events.filter((e) => e["type"] === "integration_left_out").map((e) => [e["integration_id"], e["code"]]),
    );
    expect(codes.get(ids.newer)).toBe("DUPLICATE_REGISTRY");
    expect(codes.get(ids.scoped)).toBe("EXPORT_OFF");
    await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "succeeded",
      phases: [],
      credentials_wiped: true,
    });
  });

  it("is sealed to the agent's newest key after PUT /agents/{id}/keys", async () => {
    const other = await register();
    const keyFile = join(dir, "rotated.key");
    await execFileAsync(BIN, ["keygen", "--key-file", keyFile]);
    const doc = JSON.parse(
      (await execFileAsync(BIN, ["pubkey", "--key-file", keyFile], { encoding: "utf8" })).stdout,
    ) as { kid: string; public_key: string };
    const [oldKid] = [...other.keys.keys()];
    const oldDoc = {
      kid: oldKid,
      public_key: Buffer.from((other.keys.get(oldKid ?? "") as AgentPrivateKey).publicKey).toString("base64url"),
    };
    // Without proof of a current key, refused, and the keys stay as they were.
    const unproved = await agentCall("PUT", `/agents/${other.agentId}/keys`, {
      public_keys: [oldDoc, doc],
      challenge_id: "challenge-made-up",
      answer: "guess",
    });
    expect(unproved.status).toBe(403);
    expect(errorOf(unproved).code).toBe("KEY_PROOF_FAILED");
    expect(cp.store.agents.get(other.agentId)?.public_keys.map((k) => k.kid)).toEqual([oldKid]);
    const challenge = await agentCall("POST", `/agents/${other.agentId}/keys/challenge`, {});
    expect(challenge.status).toBe(200);
    const challengeId = challenge.json["challenge_id"] as string;
    const answer = await openChallenge(challenge.json["challenge"] as string, {
      keys: other.keys,
      agentId: other.agentId,
      challengeId,
      nowMs: Date.now(),
      clockSkewSeconds: 120,
    });
    // The pool token cannot change keys, even with the answer.
    const pooled = await call(
      "PUT",
      `/api/agent/v1/agents/${other.agentId}/keys`,
      { public_keys: [doc], challenge_id: challengeId, answer },
      agentToken,
    );
    expect(pooled.status).toBe(401);
    expect(errorOf(pooled).code).toBe("POOL_TOKEN_NOT_ACCEPTED");
    const put = await agentCall("PUT", `/agents/${other.agentId}/keys`, {
      public_keys: [oldDoc, doc],
      challenge_id: challengeId,
      answer,
    });
    expect(put.status).toBe(200);
    // A challenge answers once.
    const replayed = await agentCall("PUT", `/agents/${other.agentId}/keys`, {
      public_keys: [doc],
      challenge_id: challengeId,
      answer,
    });
    expect(replayed.status).toBe(403);
    const newKey = await parsePrivateKeyPem(await readFile(keyFile, "utf8"), keyFile);
    const run = await createRun();
    const lease = await leaseOne(other);
    const header = JSON.parse(
      Buffer.from((JSON.parse(lease.bundle) as { protected: string }).protected, "base64url").toString("utf8"),
    ) as { kid: string };
    expect(header.kid).toBe(doc.kid);
    const both = new Map([...other.keys, [newKey.kid, newKey]]);
    const plain = await openLeaseBundle({ ...other, keys: both }, run.id, lease.bundle);
    expect(plain.version).toBe(1);
    await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "failed",
      error: { code: "X", message: "m" },
      phases: [],
      credentials_wiped: true,
    });
  });
});

describe("lease life", () => {
  let agent: Registered;

  beforeAll(async () => {
    agent = await register();
  });

  it("a heartbeat extends the lease by its TTL and carries cancel_requested", async () => {
    const run = await createRun();
    const lease = await leaseOne(agent);
    expect(lease.run.id).toBe(run.id);
    const leasedUntil = Date.parse(lease.expires_at);
    skewMs += 20_000;
    const hb = await agentCall("POST", `/leases/${lease.lease_id}/heartbeat`, {});
    expect(hb.status).toBe(200);
    expect(hb.json).toEqual({ expires_at: expect.any(String) as unknown, cancel_requested: false });
    const extended = Date.parse(hb.json["expires_at"] as string);
    expect(extended - leasedUntil).toBeGreaterThanOrEqual(20_000);
    expect(Math.abs(extended - (Date.now() + skewMs + 60_000))).toBeLessThan(5000);

    expect((await adminCall("POST", `/runs/${run.id}/cancel`)).status).toBe(202);
    const again = await agentCall("POST", `/leases/${lease.lease_id}/heartbeat`, {});
    expect(again.json["cancel_requested"]).toBe(true);
    expect(
      (
        await agentCall("POST", `/leases/${lease.lease_id}/events`, {
          events: [{ type: "phase_started", at: new Date().toISOString(), phase: "init" }],
        })
      ).status,
    ).toBe(204);
    expect(
      (await agentCall("POST", `/leases/${lease.lease_id}/logs`, { phase: "init", seq: 0, text: "Initializing...\n" }))
        .status,
    ).toBe(204);
    const done = await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "canceled",
      phases: [{ name: "init", exit_code: null, signal: "SIGTERM", duration_ms: 5 }],
      credentials_wiped: true,
    });
    expect(done.status).toBe(200);
    const view = (await adminCall("GET", `/runs/${run.id}`)).json;
    expect(view["status"]).toBe("canceled");
    expect((view["events"] as { type: string }[]).map((e) => e.type)).toEqual(
      expect.arrayContaining([
        "queued",
        "leased",
        "cancel_requested",
        "phase_started",
        "phase_result",
        "credentials_wiped",
        "completed",
      ]),
    );
    expect(view["logs"]).toEqual([{ phase: "init", seq: 0, text: "Initializing...\n" }]);
  });

  it("a completed lease is lost: heartbeat, events, logs and complete answer 409 LEASE_LOST", async () => {
    const run = await createRun();
    const lease = await leaseOne(agent);
    expect(lease.run.id).toBe(run.id);
    const done = await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "succeeded",
      phases: [{ name: "init", exit_code: 0, signal: null, duration_ms: 1 }],
      credentials_wiped: true,
    });
    expect(done.status).toBe(200);
    expect(done.json).toEqual({ id: run.id, status: "succeeded" });
    for (const [path, body] of [
      ["heartbeat", {}],
      ["events", { events: [] }],
      ["logs", { phase: "init", seq: 1, text: "x" }],
      ["complete", { outcome: "failed", phases: [], credentials_wiped: true }],
    ] as const) {
      const a = await agentCall("POST", `/leases/${lease.lease_id}/${path}`, body);
      expect(a.status, path).toBe(409);
      expect(errorOf(a).code).toBe("LEASE_LOST");
    }
    expect((await agentCall("GET", `/leases/${lease.lease_id}/configuration`)).status).toBe(409);
    expect((await adminCall("GET", `/runs/${run.id}`)).json["status"]).toBe("succeeded");
    expect((await call("POST", "/api/agent/v1/leases/lease-unknown/heartbeat", {}, agent.credential)).status).toBe(409);
  });

  it("a lease that is not heartbeated expires: the run fails LEASE_EXPIRED and is never leased again", async () => {
    const short = await createControlPlane({
      adminToken,
      agentToken,
      leaseTtlSeconds: 0.3,
      probe: () => Promise.resolve({ warnings: [] }),
    });
    try {
      const base = (await short.listen("127.0.0.1", 0)).url;
      const keyFile = join(dir, "short.key");
      await execFileAsync(BIN, ["keygen", "--key-file", keyFile]);
      const doc = JSON.parse(
        (await execFileAsync(BIN, ["pubkey", "--key-file", keyFile], { encoding: "utf8" })).stdout,
      ) as { kid: string; public_key: string };
      const post = async (path: string, body: unknown, token: string): Promise<Record<string, unknown>> => {
        const res = await fetch(`${base}${path}`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return { status: res.status, ...(JSON.parse(await res.text()) as Record<string, unknown>) };
      };
      const key = await parsePrivateKeyPem(await readFile(keyFile, "utf8"), keyFile);
      const { agentId, credential } = await enroll(base, doc, new Map([[key.kid, key]]));
      const archive = await tarGz({ "main.tf": "\n" });
      const runId = (
        await post(
          "/api/admin/v1/runs",
          { configuration_tar_gz_base64: archive.toString("base64"), phases: ["init"] },
          adminToken,
        )
      )["id"] as string;
      const leases = (await post(`/api/agent/v1/agents/${agentId}/leases`, { max: 1, wait_seconds: 0 }, credential))[
        "leases"
      ] as LeaseJson[];
      expect(leases.map((l) => l.run.id)).toEqual([runId]);
      const run = await waitForStatus(short, runId, ["failed", "succeeded", "canceled"]);
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("LEASE_EXPIRED");
      const hb = await post(`/api/agent/v1/leases/${leases[0]?.lease_id ?? ""}/heartbeat`, {}, credential);
      expect(hb["status"]).toBe(409);
      expect(await post(`/api/agent/v1/agents/${agentId}/leases`, { max: 5, wait_seconds: 0 }, credential)).toEqual({
        status: 200,
        leases: [],
      });
    } finally {
      await short.close();
    }
  });
});

describe("the pool token only enrolls", () => {
  it("a holder of the pool token who has not proved a key gets no lease, and a wrong answer gets no credential", async () => {
    const victim = await register();
    const [kid] = [...victim.keys.keys()];
    const victimDoc = {
      kid,
      public_key: Buffer.from((victim.keys.get(kid ?? "") as AgentPrivateKey).publicKey).toString("base64url"),
    };
    const run = await createRun();
    // The pool token reaches no agent or lease route, whatever the agent id.
    for (const agentId of [victim.agentId, "agent-nobody"]) {
      const a = await call("POST", `/api/agent/v1/agents/${agentId}/leases`, { max: 5, wait_seconds: 0 }, agentToken);
      expect(a.status).toBe(401);
      expect(errorOf(a).code).toBe("POOL_TOKEN_NOT_ACCEPTED");
      expect(errorOf(a).message).toMatch(/enroll/);
    }
    // Enrolling with someone else's public key: the challenge is sealed to a key the rogue lacks.
    const reg = await agentCall("POST", "/agents", {
      name: "rogue",
      version: "1",
      concurrency: 5,
      public_keys: [victimDoc],
    });
    expect(reg.status).toBe(201);
    const rogueId = reg.json["agent_id"] as string;
    const wrong = await agentCall("POST", `/agents/${rogueId}/credential`, {
      challenge_id: reg.json["challenge_id"],
      answer: randomBytes(32).toString("base64url"),
    });
    expect(wrong.status).toBe(403);
    expect(errorOf(wrong).code).toBe("CHALLENGE_FAILED");
    expect(wrong.text).not.toMatch(/oca1_/);
    const asPending = await call(
      "POST",
      `/api/agent/v1/agents/${rogueId}/leases`,
      { max: 5, wait_seconds: 0 },
      agentToken,
    );
    expect(asPending.status).toBe(401);
    // A made-up bearer is no credential either.
    const madeUp = await call(
      "POST",
      `/api/agent/v1/agents/${rogueId}/leases`,
      { max: 5, wait_seconds: 0 },
      `oca1_${randomBytes(32).toString("base64url")}`,
    );
    expect(madeUp.status).toBe(401);
    expect(errorOf(madeUp).code).toBe("AGENT_CREDENTIAL_INVALID");
    expect(cp.store.agents.has(rogueId)).toBe(false);
    expect(cp.store.runs.get(run.id)?.status).toBe("queued");
    // The real agent, with its credential, gets the run.
    const lease = await leaseOne(victim);
    expect(lease.run.id).toBe(run.id);
    await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "succeeded",
      phases: [],
      credentials_wiped: true,
    });
  });

  it("agent A cannot fetch, heartbeat, report on or complete agent B's lease (404 LEASE_NOT_HELD)", async () => {
    const a = await register();
    const b = await register();
    const run = await createRun();
    const lease = await leaseOne(b);
    expect(lease.run.id).toBe(run.id);
    for (const [method, path, body] of [
      ["GET", "configuration", undefined],
      ["POST", "heartbeat", {}],
      ["POST", "events", { events: [{ type: "forged", at: new Date().toISOString() }] }],
      ["POST", "logs", { phase: "init", seq: 0, text: "forged" }],
      ["POST", "complete", { outcome: "succeeded", phases: [], credentials_wiped: true }],
    ] as const) {
      const answer = await call(method, `/api/agent/v1/leases/${lease.lease_id}/${path}`, body, a.credential);
      expect(answer.status, path).toBe(404);
      expect(errorOf(answer).code, path).toBe("LEASE_NOT_HELD");
      // And the pool token, with the lease id alone, is no better.
      const pooled = await call(method, `/api/agent/v1/leases/${lease.lease_id}/${path}`, body, agentToken);
      expect(pooled.status, path).toBe(401);
    }
    const view = cp.store.runs.get(run.id);
    expect(view?.status).toBe("running");
    expect(view?.logs).toEqual([]);
    expect(view?.events.map((e) => e.type)).not.toContain("forged");
    const done = await agentCall("POST", `/leases/${lease.lease_id}/complete`, {
      outcome: "failed",
      error: { code: "X", message: "m" },
      phases: [],
      credentials_wiped: true,
    });
    expect(done.json).toEqual({ id: run.id, status: "failed" });
  });
});

describe("no agent or admin answer carries a password", () => {
  it("lists, gets, patches, runs, events and lease answers (bundle aside) hold no form of any password", async () => {
    const list = await adminCall("GET", "/integrations");
    for (const i of list.json["integrations"] as { id: string }[]) await adminCall("GET", `/integrations/${i.id}`);
    for (const r of (await adminCall("GET", "/runs")).json["runs"] as { id: string }[])
      await adminCall("GET", `/runs/${r.id}`);
    expect(answers.some((a) => a.text.includes("<bundle>"))).toBe(true);
    expect(answers.length).toBeGreaterThan(50);
    const secrets: [string, string][] = [
      [CANARY_A, "ann"],
      [`${CANARY_A}-rotated`, "ann"],
      [CANARY_B, "bea"],
      [CANARY_OFF, "cid"],
      [CANARY_SCOPED, "dee"],
    ];
    for (const { where, text } of answers) {
      for (const [secret, user] of secrets) {
        for (const form of leakForms(secret, user)) expect(text.includes(form), `${where} holds ${form}`).toBe(false);
      }
    }
  });
});
