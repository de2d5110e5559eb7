/**
 * Agents as operators manage them and as someone holding the pool token would attack them, over
 * real HTTP on 127.0.0.1 against the reference control plane: listing, disabling, deleting,
 * expiry (on a clock the test moves), single-use enrollment tokens, the caps on enrollments and
 * the lease bound of the agent's concurrency. Every admin answer is kept, to check at the end
 * that none carries a credential, a token or a hash of either.
 */
import { createHash, randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentApiSettings } from "../../src/control-plane/agent-api.js";
import { createControlPlane, type ControlPlane } from "../../src/control-plane/server.js";
import type { AgentRecord } from "../../src/control-plane/store.js";
import {
  generatePrivateKeyPem,
  parsePrivateKeyPem,
  publicKeyDoc,
  type AgentPrivateKey,
} from "../../src/crypto/agent-key.js";
import { openChallenge } from "../../src/crypto/sealed-bundle.js";
import { tarGz } from "../support/control-plane-harness.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";
import { TestClock } from "../support/test-clock.js";

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

interface Plane {
  readonly cp: ControlPlane;
  readonly url: string;
  readonly clock: TestClock;
  readonly adminToken: string;
  readonly poolToken: string;
}

const planes: ControlPlane[] = [];
/** Every admin answer of every test, and every secret handed out, for the leak check at the end. */
const adminAnswers: { where: string; text: string }[] = [];
const secrets: string[] = [];

afterEach(async () => {
  for (const cp of planes.splice(0)) await cp.close();
});

interface PlaneSettings {
  readonly leaseTtlSeconds?: number;
  /** false: the control plane has no pool token (enrollment tokens only). */
  readonly pool?: boolean;
  readonly agentApi?: Partial<AgentApiSettings>;
}

async function start(settings: PlaneSettings = {}): Promise<Plane> {
  const clock = new TestClock();
  const adminToken = randomBytes(24).toString("base64url");
  const poolToken = randomBytes(24).toString("base64url");
  const cp = await createControlPlane({
    adminToken,
    ...(settings.pool === false ? {} : { agentToken: poolToken }),
    leaseTtlSeconds: settings.leaseTtlSeconds ?? 60,
    clock,
    agentApi: { pollWaitSeconds: 2, heartbeatIntervalSeconds: 1, bundleTtlSeconds: 120, ...settings.agentApi },
    probe: () => Promise.resolve({ warnings: [] }),
  });
  planes.push(cp);
  const { url } = await cp.listen("127.0.0.1", 0);
  return { cp, url, clock, adminToken, poolToken };
}

async function call(p: Plane, method: string, path: string, token: string | null, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers["authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${p.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const json = text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
  if (path.startsWith("/api/admin/")) adminAnswers.push({ where: `${method} ${path} (${res.status})`, text });
  return { status: res.status, text, json };
}

const admin = (p: Plane, method: string, path: string, body?: unknown): Promise<Answer> =>
  call(p, method, `/api/admin/v1${path}`, p.adminToken, body);
const agentApi = (p: Plane, method: string, path: string, token: string | null, body?: unknown): Promise<Answer> =>
  call(p, method, `/api/agent/v1${path}`, token, body);

function errorOf(a: Answer): { code: string; message: string } {
  return a.json["error"] as { code: string; message: string };
}

function expectRefused(a: Answer, status: number, code: string, where = ""): void {
  expect(a.status, `${where} ${a.text}`).toBe(status);
  expect(errorOf(a).code, where).toBe(code);
}

async function enroll(p: Plane, token = p.poolToken, concurrency = 1): Promise<Enrolled> {
  const enrolled = await enrollAgent(p.url, token, undefined, { concurrency, nowMs: () => p.clock.now() });
  secrets.push(enrolled.credential);
  return enrolled;
}

async function newKeys(): Promise<Map<string, AgentPrivateKey>> {
  const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
  return new Map([[key.kid, key]]);
}

/** Step 1 only: a pending enrollment, and the answer its challenge opens to. */
async function startEnrollment(
  p: Plane,
  token: string,
  keys?: Map<string, AgentPrivateKey>,
): Promise<{ agentId: string; challengeId: string; answer: string; status: number }> {
  const ring = keys ?? (await newKeys());
  const reg = await agentApi(p, "POST", "/agents", token, {
    name: "pending",
    version: "1",
    concurrency: 1,
    public_keys: [...ring.values()].map((k) => publicKeyDoc(k.publicKey)),
  });
  if (reg.status !== 201) return { agentId: "", challengeId: "", answer: "", status: reg.status };
  const agentId = reg.json["agent_id"] as string;
  const challengeId = reg.json["challenge_id"] as string;
  const answer = await openChallenge(reg.json["challenge"] as string, {
    keys: ring,
    agentId,
    challengeId,
    nowMs: p.clock.now(),
    clockSkewSeconds: 120,
  });
  return { agentId, challengeId, answer, status: reg.status };
}

/** Step 1 with the pool token from `localAddress` (any 127.0.0.0/8 address on Linux): the answer's status and code. */
async function enrollFrom(
  p: Plane,
  localAddress: string,
): Promise<{ status: number; agentId?: string; code?: string }> {
  const ring = await newKeys();
  const body = JSON.stringify({
    name: "pending",
    version: "1",
    concurrency: 1,
    public_keys: [...ring.values()].map((k) => publicKeyDoc(k.publicKey)),
  });
  const url = new URL(`${p.url}/api/agent/v1/agents`);
  const text = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        localAddress,
        agent: false,
        headers: {
          authorization: `Bearer ${p.poolToken}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (data += c));
        res.on("end", () => {
          resolve({ status: res.statusCode ?? 0, text: data });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
  const json = JSON.parse(text.text) as { agent_id?: string; error?: { code: string } };
  return {
    status: text.status,
    ...(json.agent_id === undefined ? {} : { agentId: json.agent_id }),
    ...(json.error === undefined ? {} : { code: json.error.code }),
  };
}

async function createRun(p: Plane): Promise<string> {
  const archive = await tarGz({ "main.tf": `# ${randomBytes(4).toString("hex")}\n` });
  const a = await admin(p, "POST", "/runs", {
    configuration_tar_gz_base64: archive.toString("base64"),
    phases: ["init"],
  });
  expect(a.status).toBe(201);
  return a.json["id"] as string;
}

interface LeaseJson {
  lease_id: string;
  run: { id: string };
}

async function lease(p: Plane, agent: Enrolled, max = 1, waitSeconds = 0): Promise<LeaseJson[]> {
  const a = await agentApi(p, "POST", `/agents/${agent.agentId}/leases`, agent.credential, {
    max,
    wait_seconds: waitSeconds,
  });
  expect(a.status, a.text).toBe(200);
  return a.json["leases"] as LeaseJson[];
}

function complete(p: Plane, agent: Enrolled, leaseId: string): Promise<Answer> {
  return agentApi(p, "POST", `/leases/${leaseId}/complete`, agent.credential, {
    outcome: "succeeded",
    phases: [],
    credentials_wiped: true,
  });
}

/** Resolves once the control plane holds the next lease request open (it waits in the store). */
function heldRequest(p: Plane): Promise<void> {
  const store = p.cp.store;
  const original = store.waitForRuns.bind(store);
  return new Promise((resolve) => {
    store.waitForRuns = (...args) => {
      const waiting = original(...args);
      store.waitForRuns = original;
      resolve();
      return waiting;
    };
  });
}

/** Every agent and lease route an agent calls with its credential, for "refused everywhere" checks. */
function everyRoute(agent: Enrolled, leaseId: string): [string, string, unknown][] {
  return [
    ["GET", "/ping", undefined],
    ["POST", `/agents/${agent.agentId}/leases`, { max: 1, wait_seconds: 0 }],
    ["POST", `/agents/${agent.agentId}/keys/challenge`, {}],
    ["PUT", `/agents/${agent.agentId}/keys`, { public_keys: [], challenge_id: "c", answer: "a" }],
    ["GET", `/leases/${leaseId}/configuration`, undefined],
    ["POST", `/leases/${leaseId}/heartbeat`, {}],
    ["POST", `/leases/${leaseId}/events`, { events: [] }],
    ["POST", `/leases/${leaseId}/logs`, { phase: "init", seq: 0, text: "x" }],
    ["POST", `/leases/${leaseId}/complete`, { outcome: "succeeded", phases: [], credentials_wiped: true }],
  ];
}

describe("operators see every agent", () => {
  it("a new enrollment is listed at once with what operators need, and never its credential", async () => {
    const p = await start();
    const pending = await startEnrollment(p, p.poolToken);
    // Not an agent until it proves its key: listed as pending, with where it comes from.
    p.clock.advance(7000);
    const pendingView = {
      id: pending.agentId,
      name: "pending",
      version: "1",
      concurrency: 1,
      key_ids: [expect.any(String) as unknown],
      registered_at: new Date(p.clock.now() - 7000).toISOString(),
      last_seen_at: new Date(p.clock.now() - 7000).toISOString(),
      status: "pending",
      role: "agent",
      enrolled_with: "pool_token",
      enrollment_token_id: null,
      running_leases: 0,
      remote_address: "127.0.0.1",
      age_seconds: 7,
    };
    expect((await admin(p, "GET", "/agents")).json).toEqual({ agents: [pendingView] });
    expect((await admin(p, "GET", `/agents/${pending.agentId}`)).json).toEqual(pendingView);
    expectRefused(await admin(p, "POST", `/agents/${pending.agentId}/disable`), 409, "AGENT_PENDING");
    expect((await admin(p, "DELETE", `/agents/${pending.agentId}`)).status).toBe(204);
    const late = await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, p.poolToken, {
      challenge_id: pending.challengeId,
      answer: pending.answer,
    });
    expectRefused(late, 403, "CHALLENGE_FAILED");
    expect((await admin(p, "GET", "/agents")).json).toEqual({ agents: [] });
    const agent = await enroll(p, p.poolToken, 3);
    const [kid] = [...agent.keys.keys()];
    const view = {
      id: agent.agentId,
      name: "test-agent",
      version: "1",
      concurrency: 3,
      role: "agent",
      key_ids: [kid],
      registered_at: new Date(p.clock.now()).toISOString(),
      last_seen_at: new Date(p.clock.now()).toISOString(),
      status: "enabled",
      enrolled_with: "pool_token",
      enrollment_token_id: null,
      running_leases: 0,
    };
    expect((await admin(p, "GET", "/agents")).json).toEqual({ agents: [view] });
    expect((await admin(p, "GET", `/agents/${agent.agentId}`)).json).toEqual(view);
    await createRun(p);
    expect(await lease(p, agent)).toHaveLength(1);
    expect((await admin(p, "GET", `/agents/${agent.agentId}`)).json["running_leases"]).toBe(1);
  });
});

describe("DELETE /agents/{id}", () => {
  it("refuses its credential at once on every route, and its running run fails AGENT_DELETED, never queued again", async () => {
    const p = await start();
    const a = await enroll(p);
    const b = await enroll(p);
    const runId = await createRun(p);
    const [held] = await lease(p, a);
    expect(held?.run.id).toBe(runId);
    const deleted = await admin(p, "DELETE", `/agents/${a.agentId}`);
    expect(deleted.status).toBe(204);
    const run = p.cp.store.runs.get(runId);
    expect(run?.status).toBe("failed");
    expect(run?.error?.code).toBe("AGENT_DELETED");
    expect(run?.events.map((e) => e.type)).toContain("lease_revoked");
    for (const [method, path, body] of everyRoute(a, held?.lease_id ?? "")) {
      expectRefused(await agentApi(p, method, path, a.credential, body), 401, "AGENT_CREDENTIAL_INVALID", path);
    }
    expect((await admin(p, "GET", "/agents")).json["agents"]).toEqual([
      expect.objectContaining({ id: b.agentId }) as unknown,
    ]);
    expect((await admin(p, "GET", `/agents/${a.agentId}`)).status).toBe(404);
    expect((await admin(p, "DELETE", `/agents/${a.agentId}`)).status).toBe(404);
    // The run a deleted agent held is not handed to another.
    expect(await lease(p, b)).toEqual([]);
  });

  it("answers [] at once to a lease request the agent had waiting", async () => {
    const p = await start();
    const a = await enroll(p);
    const b = await enroll(p);
    const started = performance.now();
    const held = heldRequest(p);
    const waiting = lease(p, a, 1, 300);
    await held;
    expect((await admin(p, "DELETE", `/agents/${a.agentId}`)).status).toBe(204);
    expect(await waiting).toEqual([]);
    expect(performance.now() - started).toBeLessThan(30_000);
    const runId = await createRun(p);
    expect((await lease(p, b)).map((l) => l.run.id)).toEqual([runId]);
  });
});

describe("disable and enable", () => {
  it("a disabled agent gets 403 AGENT_DISABLED and the fix on every route, leases nothing, and its runs end", async () => {
    const p = await start();
    const a = await enroll(p, p.poolToken, 2);
    const b = await enroll(p);
    const canceledRun = await createRun(p);
    const failedRun = await createRun(p);
    const held = await lease(p, a, 2);
    expect(held.map((l) => l.run.id).sort()).toEqual([canceledRun, failedRun].sort());
    expect((await admin(p, "POST", `/runs/${canceledRun}/cancel`)).status).toBe(202);

    const disabled = await admin(p, "POST", `/agents/${a.agentId}/disable`);
    expect(disabled.status).toBe(200);
    expect(disabled.json).toMatchObject({ id: a.agentId, status: "disabled", running_leases: 0 });
    expect(p.cp.store.runs.get(canceledRun)).toMatchObject({ status: "canceled", error: { code: "AGENT_DISABLED" } });
    expect(p.cp.store.runs.get(failedRun)).toMatchObject({ status: "failed", error: { code: "AGENT_DISABLED" } });
    for (const [method, path, body] of everyRoute(a, held[0]?.lease_id ?? "")) {
      const refused = await agentApi(p, method, path, a.credential, body);
      expectRefused(refused, 403, "AGENT_DISABLED", path);
      expect(errorOf(refused).message).toContain(`agents enable ${a.agentId}`);
    }
    // A run queued now goes to the enabled agent.
    const next = await createRun(p);
    expect((await lease(p, b)).map((l) => l.run.id)).toEqual([next]);

    const enabled = await admin(p, "POST", `/agents/${a.agentId}/enable`);
    expect(enabled.json).toMatchObject({ status: "enabled" });
    const later = await createRun(p);
    expect((await lease(p, a, 2)).map((l) => l.run.id)).toEqual([later]);
    expect((await admin(p, "POST", "/agents/agent-nobody/disable")).status).toBe(404);
  });

  it("answers [] at once to a lease request the agent had waiting, and gives it nothing queued later", async () => {
    const p = await start();
    const a = await enroll(p);
    const started = performance.now();
    const held = heldRequest(p);
    const waiting = lease(p, a, 1, 300);
    await held;
    expect((await admin(p, "POST", `/agents/${a.agentId}/disable`)).status).toBe(200);
    expect(await waiting).toEqual([]);
    expect(performance.now() - started).toBeLessThan(30_000);
    const runId = await createRun(p);
    expect(p.cp.store.runs.get(runId)?.status).toBe("queued");
  });
});

describe("agents not seen for the expiry are removed", () => {
  const expiry = { agentExpirySeconds: 600 };

  it("by the sweep: the credential is then refused with AGENT_CREDENTIAL_INVALID, so the agent enrolls again", async () => {
    const p = await start({ agentApi: expiry });
    const quiet = await enroll(p);
    const busy = await enroll(p);
    p.clock.advance(500_000);
    expect((await agentApi(p, "GET", "/ping", busy.credential)).status).toBe(200);
    p.clock.advance(150_000);
    // The sweep ran on the store's clock: the quiet one is gone, the busy one stays.
    expect(p.cp.store.agents.has(quiet.agentId)).toBe(false);
    expect(p.cp.store.agents.has(busy.agentId)).toBe(true);
    expect((await admin(p, "GET", "/agents")).json["agents"]).toEqual([
      expect.objectContaining({ id: busy.agentId }) as unknown,
    ]);
    expectRefused(
      await agentApi(p, "POST", `/agents/${quiet.agentId}/leases`, quiet.credential, { max: 1, wait_seconds: 0 }),
      401,
      "AGENT_CREDENTIAL_INVALID",
    );
    expect((await agentApi(p, "GET", "/ping", busy.credential)).status).toBe(200);
    // It enrolls again as a new agent.
    const again = await enroll(p);
    expect(again.agentId).not.toBe(quiet.agentId);
  });

  it("before the sweep: a request past the expiry is refused and removes the agent", async () => {
    const p = await start({ agentApi: expiry });
    // Sweeps run at 60 s, 120 s, ...; enrolled at 30 s, the agent is due at 630 s, the next sweep at 660 s.
    p.clock.advance(30_000);
    const agent = await enroll(p);
    p.clock.advance(600_000);
    expect(p.cp.store.agents.has(agent.agentId)).toBe(true);
    expectRefused(await agentApi(p, "GET", "/ping", agent.credential), 401, "AGENT_CREDENTIAL_INVALID");
    expect(p.cp.store.agents.has(agent.agentId)).toBe(false);
  });

  it("ends the run an expired agent held with AGENT_EXPIRED (a lease that outlives the expiry)", async () => {
    const p = await start({ leaseTtlSeconds: 3600, agentApi: expiry });
    const agent = await enroll(p);
    const runId = await createRun(p);
    expect(await lease(p, agent)).toHaveLength(1);
    p.clock.advance(700_000);
    expect(p.cp.store.runs.get(runId)).toMatchObject({ status: "failed", error: { code: "AGENT_EXPIRED" } });
  });

  it("keeps a disabled agent that keeps asking, disabled, rather than letting it expire and come back enabled", async () => {
    const p = await start({ agentApi: expiry });
    const agent = await enroll(p);
    expect((await admin(p, "POST", `/agents/${agent.agentId}/disable`)).status).toBe(200);
    for (let i = 0; i < 4; i++) {
      p.clock.advance(300_000);
      expectRefused(await agentApi(p, "GET", "/ping", agent.credential), 403, "AGENT_DISABLED");
    }
    expect(p.cp.store.agents.get(agent.agentId)?.disabled).toBe(true);
  });
});

describe("single-use enrollment tokens", () => {
  async function createToken(p: Plane, body: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
    const made = await admin(p, "POST", "/enrollment-tokens", body);
    expect(made.status, made.text).toBe(201);
    const token = made.json["token"] as string;
    secrets.push(token);
    return { id: made.json["id"] as string, token };
  }

  it("are answered once, kept only as SHA-256, listed without the token, and live 24 h unless told", async () => {
    const p = await start();
    const made = await admin(p, "POST", "/enrollment-tokens", { name: "host-7", expires_in_seconds: 3600 });
    expect(made.status).toBe(201);
    const now = p.clock.now();
    const view = {
      id: expect.stringMatching(/^enroll-/) as unknown,
      name: "host-7",
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + 3_600_000).toISOString(),
      status: "unused",
      used_by_agent_id: null,
      used_at: null,
    };
    expect(made.json).toEqual({ ...view, token: expect.stringMatching(/^ocae_[A-Za-z0-9_-]{43}$/) as unknown });
    const token = made.json["token"] as string;
    secrets.push(token);
    const stored = JSON.stringify([...p.cp.store.enrollmentTokens.values()]);
    expect(stored).not.toContain(token);
    expect(stored).toContain(createHash("sha256").update(token).digest("hex"));
    const id = made.json["id"] as string;
    expect((await admin(p, "GET", "/enrollment-tokens")).json).toEqual({ enrollment_tokens: [view] });
    expect((await admin(p, "GET", `/enrollment-tokens/${id}`)).json).toEqual(view);
    const unnamed = await admin(p, "POST", "/enrollment-tokens", {});
    secrets.push(unnamed.json["token"] as string);
    expect(unnamed.json).toMatchObject({ name: null, expires_at: new Date(now + 86_400_000).toISOString() });
    for (const body of [
      { expires_in_seconds: 0 },
      { expires_in_seconds: 400 * 86_400 },
      { name: "a\u001bb" },
      { x: 1 },
    ])
      expectRefused(await admin(p, "POST", "/enrollment-tokens", body), 422, "BODY_INVALID", JSON.stringify(body));
  });

  it("enrolls exactly one agent: listed with the token's id; a second use is refused with 403 ENROLLMENT_TOKEN_USED", async () => {
    const p = await start();
    const { id, token } = await createToken(p, { name: "one" });
    const agent = await enroll(p, token);
    expect((await admin(p, "GET", `/agents/${agent.agentId}`)).json).toMatchObject({
      enrolled_with: "enrollment_token",
      enrollment_token_id: id,
    });
    expect((await admin(p, "GET", `/enrollment-tokens/${id}`)).json).toMatchObject({
      status: "used",
      used_by_agent_id: agent.agentId,
      used_at: expect.any(String) as unknown,
    });
    const refused = await agentApi(p, "POST", "/agents", token, {
      name: "second",
      version: "1",
      concurrency: 1,
      public_keys: [publicKeyDoc([...(await newKeys()).values()][0]?.publicKey ?? new Uint8Array())],
    });
    expectRefused(refused, 403, "ENROLLMENT_TOKEN_USED");
    expect(errorOf(refused).message).toMatch(/enrollment-tokens create/);
    // Its agent works as any other.
    expect((await agentApi(p, "GET", "/ping", agent.credential)).status).toBe(200);
  });

  it("two enrollments started with one token: the first answer uses it up, the second is refused", async () => {
    const p = await start();
    const { id, token } = await createToken(p);
    const first = await startEnrollment(p, token);
    const second = await startEnrollment(p, token);
    expect([first.status, second.status]).toEqual([201, 201]);
    const won = await agentApi(p, "POST", `/agents/${second.agentId}/credential`, token, {
      challenge_id: second.challengeId,
      answer: second.answer,
    });
    expect(won.status).toBe(200);
    secrets.push(won.json["credential"] as string);
    expectRefused(
      await agentApi(p, "POST", `/agents/${first.agentId}/credential`, token, {
        challenge_id: first.challengeId,
        answer: first.answer,
      }),
      403,
      "ENROLLMENT_TOKEN_USED",
    );
    expect([...p.cp.store.agents.values()].filter((a) => a.enrollment_token_id === id).map((a) => a.id)).toEqual([
      second.agentId,
    ]);
  });

  it("are used up in the same step as the agent is added: answers that passed the door together add one agent", async () => {
    const p = await start();
    const { id } = await createToken(p);
    // Both answers were checked at the door before either finished: the store decides.
    const record = (agentId: string): AgentRecord => ({
      id: agentId,
      name: "n",
      version: "1",
      concurrency: 1,
      public_keys: [],
      credential_sha256: randomBytes(32).toString("hex"),
      registered_at: new Date(p.clock.now()).toISOString(),
      last_seen_at: new Date(p.clock.now()).toISOString(),
      disabled: false,
      enrollment_token_id: id,
      role: "agent",
    });
    expect(p.cp.store.addAgent(record("agent-first"))).toBe(true);
    expect(p.cp.store.addAgent(record("agent-second"))).toBe(false);
    expect([...p.cp.store.agents.keys()]).toEqual(["agent-first"]);
    expect(p.cp.store.enrollmentTokens.get(id)?.used_by_agent_id).toBe("agent-first");
  });

  it("a revoked token enrolls nothing, not even an enrollment it started (401 UNAUTHORIZED)", async () => {
    const p = await start();
    const { id, token } = await createToken(p);
    const pending = await startEnrollment(p, token);
    expect((await admin(p, "DELETE", `/enrollment-tokens/${id}`)).status).toBe(204);
    expect((await admin(p, "DELETE", `/enrollment-tokens/${id}`)).status).toBe(404);
    expectRefused(
      await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, token, {
        challenge_id: pending.challengeId,
        answer: pending.answer,
      }),
      401,
      "UNAUTHORIZED",
    );
    expect((await startEnrollment(p, token)).status).toBe(401);
    expect(p.cp.store.agents.size).toBe(0);
  });

  it("an expired token is refused with 403 ENROLLMENT_TOKEN_EXPIRED, also between the two steps", async () => {
    const p = await start();
    const { id, token } = await createToken(p, { expires_in_seconds: 120 });
    const pending = await startEnrollment(p, token);
    p.clock.advance(120_000);
    expect((await admin(p, "GET", `/enrollment-tokens/${id}`)).json["status"]).toBe("expired");
    expectRefused(
      await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, token, {
        challenge_id: pending.challengeId,
        answer: pending.answer,
      }),
      403,
      "ENROLLMENT_TOKEN_EXPIRED",
    );
    expect((await startEnrollment(p, token)).status).toBe(403);
  });

  it("step 2 carries the token step 1 did: the pool token cannot answer a token's enrollment, nor the reverse", async () => {
    const p = await start();
    const { token } = await createToken(p);
    const viaToken = await startEnrollment(p, token);
    const viaPool = await startEnrollment(p, p.poolToken);
    for (const [pending, other] of [
      [viaToken, p.poolToken],
      [viaPool, token],
    ] as const) {
      expectRefused(
        await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, other, {
          challenge_id: pending.challengeId,
          answer: pending.answer,
        }),
        403,
        "CHALLENGE_FAILED",
      );
    }
    // With the right one, each still enrolls.
    for (const [pending, right] of [
      [viaToken, token],
      [viaPool, p.poolToken],
    ] as const) {
      const ok = await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, right, {
        challenge_id: pending.challengeId,
        answer: pending.answer,
      });
      expect(ok.status).toBe(200);
      secrets.push(ok.json["credential"] as string);
    }
  });

  it("reach enrollment and ping only; admin tokens, credentials and enrollment tokens stay in their own API", async () => {
    const p = await start();
    const { token } = await createToken(p);
    const agent = await enroll(p);
    expect((await agentApi(p, "GET", "/ping", token)).status).toBe(200);
    expectRefused(
      await agentApi(p, "POST", `/agents/${agent.agentId}/leases`, token, { max: 1, wait_seconds: 0 }),
      401,
      "ENROLLMENT_TOKEN_NOT_ACCEPTED",
    );
    for (const bearer of [token, p.poolToken, agent.credential])
      expectRefused(await call(p, "GET", "/api/admin/v1/agents", bearer), 401, "UNAUTHORIZED");
    expectRefused(await call(p, "POST", "/api/admin/v1/enrollment-tokens", token, {}), 401, "UNAUTHORIZED");
    // The admin token and an agent's credential enroll nothing.
    for (const bearer of [p.adminToken, agent.credential]) expect((await startEnrollment(p, bearer)).status).toBe(401);
    expectRefused(
      await agentApi(p, "POST", `/agents/${agent.agentId}/leases`, p.adminToken, { max: 1, wait_seconds: 0 }),
      401,
      "AGENT_CREDENTIAL_INVALID",
    );
    // A used token no longer passes ping (doctor tells the operator).
    await enroll(p, token);
    expectRefused(await agentApi(p, "GET", "/ping", token), 403, "ENROLLMENT_TOKEN_USED");
  });

  it("are the only way in when the control plane has no pool token", async () => {
    const p = await start({ pool: false });
    const refused = await agentApi(p, "POST", "/agents", p.poolToken, {
      name: "n",
      version: "1",
      concurrency: 1,
      public_keys: [publicKeyDoc([...(await newKeys()).values()][0]?.publicKey ?? new Uint8Array())],
    });
    expectRefused(refused, 401, "UNAUTHORIZED");
    expect(errorOf(refused).message).toMatch(/enrollment tokens only/);
    const { token } = await createToken(p);
    const agent = await enroll(p, token);
    expect(p.cp.store.agents.has(agent.agentId)).toBe(true);
  });
});

describe("caps on enrollment", () => {
  it("past the cap on agents, 429 AGENTS_LIMIT (pending enrollments count) until an agent is deleted", async () => {
    const p = await start({ agentApi: { maxAgents: 2 } });
    const first = await enroll(p);
    const pending = await startEnrollment(p, p.poolToken);
    expect(pending.status).toBe(201);
    const refused = await agentApi(p, "POST", "/agents", p.poolToken, {
      name: "n",
      version: "1",
      concurrency: 1,
      public_keys: [publicKeyDoc([...(await newKeys()).values()][0]?.publicKey ?? new Uint8Array())],
    });
    expectRefused(refused, 429, "AGENTS_LIMIT");
    expect(errorOf(refused).message).toMatch(/agents delete/);
    expect(errorOf(refused).message).toMatch(/--max-agents/);
    const answered = await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, p.poolToken, {
      challenge_id: pending.challengeId,
      answer: pending.answer,
    });
    expect(answered.status).toBe(200);
    secrets.push(answered.json["credential"] as string);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(429);
    expect((await admin(p, "DELETE", `/agents/${first.agentId}`)).status).toBe(204);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(201);
  });

  it("past the cap on pending enrollments, 429 ENROLLMENTS_PENDING_LIMIT until they expire (60 s)", async () => {
    const p = await start({ agentApi: { maxPendingEnrollments: 2 } });
    expect((await startEnrollment(p, p.poolToken)).status).toBe(201);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(201);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(429);
    p.clock.advance(59_000);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(429);
    p.clock.advance(1000);
    expect((await startEnrollment(p, p.poolToken)).status).toBe(201);
  });

  it("pool-token enrollments left unanswered cannot keep out an enrollment token, nor another address", async () => {
    const p = await start({ agentApi: { maxPendingEnrollments: 5, maxPendingEnrollmentsPerAddress: 3 } });
    for (let i = 0; i < 3; i++) expect((await enrollFrom(p, "127.0.0.2")).status).toBe(201);
    expect(await enrollFrom(p, "127.0.0.2")).toMatchObject({ status: 429, code: "ENROLLMENTS_PENDING_LIMIT" });
    // Another address has its own share, up to the cap of them all.
    for (let i = 0; i < 2; i++) expect((await enrollFrom(p, "127.0.0.3")).status).toBe(201);
    expect(await enrollFrom(p, "127.0.0.4")).toMatchObject({ status: 429, code: "ENROLLMENTS_PENDING_LIMIT" });
    // An operator's enrollment token is not held up by them (before: 429 ENROLLMENTS_PENDING_LIMIT).
    const made = await admin(p, "POST", "/enrollment-tokens", { name: "host-8" });
    const token = made.json["token"] as string;
    secrets.push(token);
    const enrolled = await enroll(p, token);
    // Operators see where the pending ones come from, and clear them.
    const listed = (await admin(p, "GET", "/agents")).json["agents"] as {
      id: string;
      status: string;
      remote_address?: string;
    }[];
    const pending = listed.filter((a) => a.status === "pending");
    expect(pending.map((a) => a.remote_address).sort()).toEqual([
      "127.0.0.2",
      "127.0.0.2",
      "127.0.0.2",
      "127.0.0.3",
      "127.0.0.3",
    ]);
    expect(listed.find((a) => a.id === enrolled.agentId)?.status).toBe("enabled");
    const first = pending.find((a) => a.remote_address === "127.0.0.2");
    expect((await admin(p, "DELETE", `/agents/${first?.id ?? ""}`)).status).toBe(204);
    expect((await enrollFrom(p, "127.0.0.2")).status).toBe(201);
  });

  it("an enrollment token has one pending enrollment: a new one replaces it", async () => {
    const p = await start();
    const made = await admin(p, "POST", "/enrollment-tokens", {});
    const token = made.json["token"] as string;
    secrets.push(token);
    const first = await startEnrollment(p, token);
    const second = await startEnrollment(p, token);
    expect([first.status, second.status]).toEqual([201, 201]);
    const pending = ((await admin(p, "GET", "/agents")).json["agents"] as { id: string }[]).map((a) => a.id);
    expect(pending).toEqual([second.agentId]);
    const answer = (e: typeof first): Promise<Answer> =>
      agentApi(p, "POST", `/agents/${e.agentId}/credential`, token, { challenge_id: e.challengeId, answer: e.answer });
    expectRefused(await answer(first), 403, "CHALLENGE_FAILED");
    const done = await answer(second);
    expect(done.status).toBe(200);
    secrets.push(done.json["credential"] as string);
  });

  it("concurrent enrollments do not overshoot the cap on pending ones", async () => {
    const p = await start({ agentApi: { maxPendingEnrollments: 4 } });
    const answers = await Promise.all(Array.from({ length: 12 }, () => startEnrollment(p, p.poolToken)));
    expect(answers.filter((a) => a.status === 201)).toHaveLength(4);
    expect(answers.filter((a) => a.status === 429)).toHaveLength(8);
  });

  it("pending pool-token enrollments do not take an enrollment token's place under the cap on agents", async () => {
    const p = await start({ agentApi: { maxAgents: 2 } });
    await enroll(p);
    const pooled = await startEnrollment(p, p.poolToken);
    expect(pooled.status).toBe(201);
    const made = await admin(p, "POST", "/enrollment-tokens", {});
    const token = made.json["token"] as string;
    secrets.push(token);
    // Before: 429 AGENTS_LIMIT, the pending pool-token enrollment counted.
    await enroll(p, token);
    const late = await agentApi(p, "POST", `/agents/${pooled.agentId}/credential`, p.poolToken, {
      challenge_id: pooled.challengeId,
      answer: pooled.answer,
    });
    expectRefused(late, 429, "AGENTS_LIMIT");
    expect(p.cp.store.agents.size).toBe(2);
  });
});

describe("leases are bounded by the agent's registered concurrency", () => {
  it("one request cannot take the whole queue; a second agent gets the rest; a freed slot serves a waiting request", async () => {
    const p = await start();
    const a = await enroll(p, p.poolToken, 2);
    const b = await enroll(p, p.poolToken, 3);
    const runs: string[] = [];
    for (let i = 0; i < 6; i++) runs.push(await createRun(p));
    const first = await lease(p, a, 1000);
    expect(first.map((l) => l.run.id)).toEqual(runs.slice(0, 2));
    // At its concurrency, asking again gets nothing, whatever `max`.
    expect(await lease(p, a, 1000)).toEqual([]);
    expect((await lease(p, b, 1000)).map((l) => l.run.id)).toEqual(runs.slice(2, 5));
    expect(p.cp.store.runs.get(runs[5] ?? "")?.status).toBe("queued");
    // A request at full concurrency waits; when one of its runs ends, it gets the last one.
    const held = heldRequest(p);
    const waiting = lease(p, a, 1000, 30);
    await held;
    expect(p.cp.store.runs.get(runs[5] ?? "")?.status).toBe("queued");
    expect((await complete(p, a, first[0]?.lease_id ?? "")).status).toBe(200);
    expect((await waiting).map((l) => l.run.id)).toEqual([runs[5]]);
    expect(p.cp.store.runningLeases(a.agentId)).toBe(2);
    expect(p.cp.store.runningLeases(b.agentId)).toBe(3);
  });
});

describe("attacks with the pool token", () => {
  it("replaying an enrollment answer gets no second credential", async () => {
    const p = await start();
    const pending = await startEnrollment(p, p.poolToken);
    const body = { challenge_id: pending.challengeId, answer: pending.answer };
    const ok = await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, p.poolToken, body);
    expect(ok.status).toBe(200);
    secrets.push(ok.json["credential"] as string);
    const replayed = await agentApi(p, "POST", `/agents/${pending.agentId}/credential`, p.poolToken, body);
    expectRefused(replayed, 403, "CHALLENGE_FAILED");
    expect(replayed.text).not.toMatch(/oca1_/);
    expect(p.cp.store.agents.size).toBe(1);
  });

  it("answering another enrollment's challenge fails: with one's own challenge id or answer", async () => {
    const p = await start();
    const mine = await startEnrollment(p, p.poolToken);
    const victim = await startEnrollment(p, p.poolToken);
    for (const body of [
      { challenge_id: mine.challengeId, answer: mine.answer },
      { challenge_id: victim.challengeId, answer: mine.answer },
    ])
      expectRefused(
        await agentApi(p, "POST", `/agents/${victim.agentId}/credential`, p.poolToken, body),
        403,
        "CHALLENGE_FAILED",
      );
    expect(p.cp.store.agents.size).toBe(0);
  });

  it("an agent cannot lease as another, change its keys, or ask for its key challenge", async () => {
    const p = await start();
    const a = await enroll(p);
    const b = await enroll(p);
    const runId = await createRun(p);
    for (const [method, path, body] of [
      ["POST", `/agents/${b.agentId}/leases`, { max: 1, wait_seconds: 0 }],
      ["POST", `/agents/${b.agentId}/keys/challenge`, {}],
      ["PUT", `/agents/${b.agentId}/keys`, { public_keys: [], challenge_id: "c", answer: "a" }],
    ] as const)
      expectRefused(await agentApi(p, method, path, a.credential, body), 403, "AGENT_NOT_CALLER", path);
    expect(p.cp.store.runs.get(runId)?.status).toBe("queued");
  });

  it("names and versions with control characters are refused (operators read them in a terminal)", async () => {
    const p = await start();
    const doc = publicKeyDoc([...(await newKeys()).values()][0]?.publicKey ?? new Uint8Array());
    for (const [name, version] of [
      ["evil\u001b]0;owned\u0007", "1"],
      ["ok", "1\u009b2J"],
    ]) {
      const a = await agentApi(p, "POST", "/agents", p.poolToken, {
        name,
        version,
        concurrency: 1,
        public_keys: [doc],
      });
      expectRefused(a, 422, "BODY_INVALID");
    }
  });
});

describe("no admin answer carries a credential, a token or a hash of either", () => {
  it("in any answer above, save the one that creates a token (which shows that token once)", () => {
    expect(adminAnswers.length).toBeGreaterThan(40);
    expect(secrets.length).toBeGreaterThan(10);
    for (const secret of secrets) {
      const forms = [secret, createHash("sha256").update(secret).digest("hex")];
      for (const { where, text } of adminAnswers) {
        if (where.startsWith("POST /api/admin/v1/enrollment-tokens (201)") && text.includes(secret)) continue;
        for (const form of forms) expect(text.includes(form), `${where} holds ${form.slice(0, 12)}...`).toBe(false);
      }
    }
  });
});
