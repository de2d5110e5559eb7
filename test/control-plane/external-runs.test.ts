/**
 * Runs an external runner executes (sidecar mode): the run token shown once and kept as a hash,
 * sidecars and agents each leasing only their kind, the run-token check and fresh bundles on the
 * sidecar's own lease.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openBundle } from "../../src/crypto/sealed-bundle.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";

let h: Harness;
beforeEach(async () => {
  h = await startControlPlane();
});
afterEach(async () => {
  await h.close();
});

async function agentPost(who: Enrolled, path: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${h.url}/api/agent/v1${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${who.credential}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? null : (JSON.parse(text) as unknown) };
}

interface LeaseJson {
  lease_id: string;
  run: { id: string; executor?: string; configuration?: unknown };
  bundle: string;
}

async function lease(who: Enrolled, waitSeconds = 0): Promise<LeaseJson[]> {
  const res = await agentPost(who, `/agents/${who.agentId}/leases`, { max: 5, wait_seconds: waitSeconds });
  expect(res.status).toBe(200);
  return (res.json as { leases: LeaseJson[] }).leases;
}

async function externalRun(phases = ["init", "plan", "apply"]): Promise<{ id: string; run_token: string }> {
  const res = await h.admin("POST", "/runs", { executor: "external", phases });
  expect(res.status).toBe(201);
  return res.json as { id: string; run_token: string };
}

describe("external runs", () => {
  it("answers a run token once, keeps only its hash, and shows the executor", async () => {
    const run = await externalRun();
    expect(run.run_token).toMatch(/^ocrt_[A-Za-z0-9_-]{43}$/);
    const stored = h.cp.store.runs.get(run.id);
    expect(stored?.executor).toBe("external");
    expect(stored?.run_token_sha256).toMatch(/^[0-9a-f]{64}$/);
    const view = await h.admin("GET", `/runs/${run.id}`);
    expect(JSON.stringify(view.json)).not.toContain(run.run_token);
    expect(view.json).toMatchObject({ executor: "external" });
    // An agent-executed run still needs its configuration.
    const missing = await h.admin("POST", "/runs", { phases: ["plan"] });
    expect(missing.status).toBe(422);
  });

  it("leases external runs to sidecars only and agent runs to agents only", async () => {
    const agent = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 5 });
    const sidecar = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 5, role: "sidecar" });
    const roles = await h.admin("GET", "/agents");
    const byId = new Map((roles.json as { agents: { id: string; role: string }[] }).agents.map((a) => [a.id, a.role]));
    expect(byId.get(agent.agentId)).toBe("agent");
    expect(byId.get(sidecar.agentId)).toBe("sidecar");

    const external = await externalRun();
    const agentRunId = await h.createRun({ "main.tf": "" });
    // The agent asks first, with the external run oldest in the queue: it gets only its own kind.
    const agentLeases = await lease(agent);
    expect(agentLeases.map((l) => l.run.id)).toEqual([agentRunId]);
    const sidecarLeases = await lease(sidecar);
    expect(sidecarLeases.map((l) => l.run.id)).toEqual([external.id]);
    expect(sidecarLeases[0]?.run.executor).toBe("external");
    expect(sidecarLeases[0]?.run.configuration).toBeUndefined();

    // A sidecar waiting in a long poll is not handed an agent run, and vice versa.
    const waiting = lease(sidecar, 5);
    const second = await h.createRun({ "main.tf": "" });
    expect((await lease(agent)).map((l) => l.run.id)).toEqual([second]);
    const third = await externalRun();
    expect((await waiting).map((l) => l.run.id)).toEqual([third.id]);
  });

  it("checks the run token on the sidecar's own lease, and seals fresh bundles to it", async () => {
    const sidecar = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 5, role: "sidecar" });
    const agent = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 5 });
    const a = await externalRun();
    const b = await externalRun();
    const leases = await lease(sidecar);
    const leaseA = leases.find((l) => l.run.id === a.id);
    expect(leaseA).toBeDefined();
    const path = `/leases/${leaseA?.lease_id ?? ""}`;

    expect((await agentPost(sidecar, `${path}/run-token`, { run_token: a.run_token })).status).toBe(204);
    for (const wrong of [b.run_token, `${a.run_token.slice(0, -1)}A`, "x"]) {
      const refused = await agentPost(sidecar, `${path}/run-token`, { run_token: wrong });
      expect(refused.status).toBe(403);
      expect(refused.json).toMatchObject({ error: { code: "RUN_TOKEN_INVALID" } });
    }
    const events = h.cp.store.runs.get(a.id)?.events ?? [];
    expect(events.filter((e) => e.type === "run_token_refused")).toHaveLength(3);
    expect(JSON.stringify(events)).not.toContain(b.run_token);
    // Another client's lease is not the agent's to check.
    expect((await agentPost(agent, `${path}/run-token`, { run_token: a.run_token })).status).toBe(404);

    const fresh = await agentPost(sidecar, `${path}/bundle`, {});
    expect(fresh.status).toBe(200);
    const bundle = (fresh.json as { bundle: string }).bundle;
    expect(bundle).not.toBe(leaseA?.bundle);
    const opened = await openBundle(Buffer.from(bundle, "utf8"), {
      keys: sidecar.keys,
      agentId: sidecar.agentId,
      runId: a.id,
      nowMs: Date.now(),
      maxLifetimeSeconds: 3600,
      clockSkewSeconds: 60,
    });
    expect(JSON.parse(new TextDecoder().decode(opened.plaintext))).toMatchObject({ registries: [] });
  });

  it("refuses the sidecar routes on an agent's lease of an agent run", async () => {
    const agent = await enrollAgent(h.url, h.agentToken);
    await h.createRun({ "main.tf": "" });
    const [l] = await lease(agent);
    const res = await agentPost(agent, `/leases/${l?.lease_id ?? ""}/bundle`, {});
    expect(res.status).toBe(409);
    expect(res.json).toMatchObject({ error: { code: "RUN_NOT_EXTERNAL" } });
  });
});
