/**
 * The reference control plane's limits against abuse (docs/protocol.md, Limits), each against a
 * real server on 127.0.0.1 and real sockets: 401 and 403 close the connection; trickled headers
 * and bodies are cut, a long-poll is not; the hard connection cap refuses clearly once every
 * connection is an authenticated, busy one; per-client rates answer 429 with Retry-After; a
 * run's events and log entries are capped (an empty chunk counts) while another agent is served;
 * request bodies are bounded per route. Limits are made small through the server's options.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { ControlPlaneOptions } from "../../src/control-plane/server.js";
import { SqliteStorage } from "../../src/control-plane/sqlite-storage.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { enrollAgent, type Enrolled } from "../support/enroll.js";
import { closesWithin, httpText, rawConnect, trickle, type RawClient } from "../support/raw-socket.js";

const API = "/api/agent/v1";
const harnesses: Harness[] = [];

afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
});

async function start(options: Partial<ControlPlaneOptions> = {}): Promise<Harness> {
  const h = await startControlPlane(options);
  harnesses.push(h);
  return h;
}

const portOf = (h: Harness): number => Number(new URL(h.url).port);

interface Answer {
  status: number;
  json: Record<string, unknown>;
  headers: Headers;
}

async function call(h: Harness, method: string, path: string, token: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${h.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return {
    status: res.status,
    json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
    headers: res.headers,
  };
}

const codeOf = (a: Answer): unknown => (a.json["error"] as { code?: unknown } | undefined)?.code;
const messageOf = (a: Answer): string => String((a.json["error"] as { message?: unknown } | undefined)?.message);

async function leaseOne(h: Harness, agent: Enrolled, max = 1): Promise<string[]> {
  const a = await call(h, "POST", `${API}/agents/${agent.agentId}/leases`, agent.credential, {
    max,
    wait_seconds: 5,
  });
  expect(a.status).toBe(200);
  return (a.json["leases"] as { lease_id: string }[]).map((l) => l.lease_id);
}

describe("401 and 403 end the connection", () => {
  it("a wrong admin token, a wrong agent credential, the pool token on a lease route and another agent's path: each answer closes the socket; a 200 keeps it", async () => {
    const h = await start();
    const a = await enrollAgent(h.url, h.agentToken);
    const b = await enrollAgent(h.url, h.agentToken);
    const cases: { request: string; status: number; code: string }[] = [
      {
        request: httpText("GET", "/api/admin/v1/runs", { Authorization: "Bearer not-the-admin-token" }),
        status: 401,
        code: "UNAUTHORIZED",
      },
      {
        // A body the server never reads: the connection still ends after the answer.
        request: httpText("POST", `${API}/agents`, { Authorization: "Bearer wrong", "Content-Length": "100000" }, "{"),
        status: 401,
        code: "UNAUTHORIZED",
      },
      {
        request: httpText("POST", `${API}/agents/${a.agentId}/leases`, { Authorization: "Bearer oca1_forged" }, "{}"),
        status: 401,
        code: "AGENT_CREDENTIAL_INVALID",
      },
      {
        request: httpText(
          "POST",
          `${API}/agents/${a.agentId}/leases`,
          { Authorization: `Bearer ${h.agentToken}` },
          "{}",
        ),
        status: 401,
        code: "POOL_TOKEN_NOT_ACCEPTED",
      },
      {
        request: httpText(
          "POST",
          `${API}/agents/${b.agentId}/leases`,
          { Authorization: `Bearer ${a.credential}` },
          '{"max":1,"wait_seconds":0}',
        ),
        status: 403,
        code: "AGENT_NOT_CALLER",
      },
    ];
    for (const c of cases) {
      const client = await rawConnect(portOf(h));
      client.socket.write(c.request);
      expect(await closesWithin(client, 5000), `${c.code}: the server closed the socket`).toBe(true);
      const answer = client.received();
      expect(answer.startsWith(`HTTP/1.1 ${c.status} `), answer).toBe(true);
      expect(answer.toLowerCase()).toContain("connection: close");
      expect(answer).toContain(`"code":"${c.code}"`);
    }
    // Kept: two answers on one connection, which stays open.
    const kept = await rawConnect(portOf(h));
    kept.socket.write(httpText("GET", "/healthz"));
    await kept.until((t) => t.includes('{"status":"ok"}'));
    kept.socket.write(httpText("GET", `${API}/ping`, { Authorization: `Bearer ${a.credential}` }));
    await kept.until((t) => t.split("HTTP/1.1 200 ").length === 3);
    expect(kept.socket.destroyed).toBe(false);
    kept.socket.destroy();
  });
});

describe("timeouts", () => {
  const limits = { headersTimeoutMs: 300, requestTimeoutMs: 600, answerTimeoutMs: 1500 };

  it("headers trickled byte by byte are cut at the headers timeout (408, closed)", async () => {
    const h = await start({ limits });
    const client = await rawConnect(portOf(h));
    const started = performance.now();
    const t = trickle(client, httpText("GET", "/healthz", { "X-Pad": "a".repeat(500) }), 20);
    expect(await closesWithin(client, 5000)).toBe(true);
    const elapsed = performance.now() - started;
    t.stop();
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(elapsed).toBeGreaterThanOrEqual(280);
    expect(elapsed).toBeLessThan(1500);
  });

  it("a body trickled byte by byte (with the pool token) is cut at the request timeout", async () => {
    const h = await start({ limits });
    const client = await rawConnect(portOf(h));
    const started = performance.now();
    client.socket.write(
      httpText("POST", `${API}/agents`, {
        Authorization: `Bearer ${h.agentToken}`,
        "Content-Type": "application/json",
        "Content-Length": "2000",
      }),
    );
    const t = trickle(client, " ".repeat(2000), 20);
    expect(await closesWithin(client, 5000)).toBe(true);
    const elapsed = performance.now() - started;
    t.stop();
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(t.sent()).toBeLessThan(2000);
    expect(elapsed).toBeGreaterThanOrEqual(580);
    expect(elapsed).toBeLessThan(2000);
  });

  it("a lease long-poll outlives the request and exchange timeouts: answered [] at its wait", async () => {
    const h = await start({ limits });
    const agent = await enrollAgent(h.url, h.agentToken);
    const started = performance.now();
    const a = await call(h, "POST", `${API}/agents/${agent.agentId}/leases`, agent.credential, {
      max: 1,
      wait_seconds: 2,
    });
    const elapsed = performance.now() - started;
    expect(a.status).toBe(200);
    expect(a.json).toEqual({ leases: [] });
    expect(elapsed).toBeGreaterThanOrEqual(1900);
    expect(h.cp.connectionStats().timedOut).toBe(0);
  });

  it("any other exchange is cut at the exchange timeout (a registry probe that never answers)", async () => {
    const h = await start({ limits, probe: () => new Promise<never>(() => undefined) });
    const started = performance.now();
    const failed = await fetch(`${h.url}/api/admin/v1/integrations`, {
      method: "POST",
      headers: { authorization: `Bearer ${h.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "x", registry_url: "https://hangs.test", username: "u", password: "p" }),
    }).then(
      () => false,
      () => true,
    );
    expect(failed).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1450);
    expect(h.cp.connectionStats().timedOut).toBe(1);
  });
});

describe("the hard connection cap", () => {
  const limits = { connections: { maxConnections: 8, maxUnproven: 2, maxUnprovenPerAddress: 2, maxPerIdentity: 4 } };

  /** A raw connection whose request the server has received (or that it closed). */
  async function sent(h: Harness, text: string): Promise<RawClient> {
    const c = await rawConnect(portOf(h));
    const seen = once(h.cp.server, "request");
    c.socket.write(text);
    await Promise.race([seen, c.closed]);
    return c;
  }

  /** A lease request whose body never comes: the connection is proven and busy until the request timeout. */
  const stalled = (agent: Enrolled): string =>
    httpText(
      "POST",
      `${API}/agents/${agent.agentId}/leases`,
      {
        Authorization: `Bearer ${agent.credential}`,
        "Content-Type": "application/json",
        "Content-Length": "100",
      },
      "{",
    );

  const longPoll = (agent: Enrolled, waitSeconds = 30): string =>
    httpText(
      "POST",
      `${API}/agents/${agent.agentId}/leases`,
      { Authorization: `Bearer ${agent.credential}`, "Content-Type": "application/json" },
      JSON.stringify({ max: 1, wait_seconds: waitSeconds }),
    );

  it("pool-token agents holding every connection busy: a legitimate agent's new connection and the admin's still get in", async () => {
    const h = await start({ limits });
    const legit = await enrollAgent(h.url, h.agentToken);
    // What anyone holding the pool token can do: enroll agents, keep each one's connections busy.
    const rogues = [
      await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 2 }),
      await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 2 }),
    ];
    const flood: RawClient[] = [];
    for (const rogue of rogues) for (let i = 0; i < 4; i++) flood.push(await sent(h, stalled(rogue)));
    expect(h.cp.connectionStats()).toMatchObject({ open: 8, proven: 8, unproven: 0, refused: 0 });

    // The agent's new connection gets in (before: 503 CONNECTION_LIMIT), and so does the admin.
    const poll = await sent(h, longPoll(legit));
    expect(poll.socket.destroyed).toBe(false);
    const agents = await call(h, "GET", "/api/admin/v1/agents", h.adminToken);
    expect(agents.status).toBe(200);
    expect((agents.json["agents"] as unknown[]).length).toBe(3);
    const rogue = rogues[0]?.agentId ?? "";
    expect((await call(h, "DELETE", `/api/admin/v1/agents/${rogue}`, h.adminToken)).status).toBe(204);

    // The flood keeps coming: it closes its own connections, never the agent's waiting long-poll.
    for (let i = 0; i < 4; i++) flood.push(await sent(h, stalled(rogues[1] as Enrolled)));
    const runId = await h.createRun({ "main.tf": "" }, ["init"]);
    expect(await poll.until((t) => t.includes(runId))).toMatch(/^HTTP\/1\.1 200 /);
    const stats = h.cp.connectionStats();
    expect(stats.refused).toBe(0);
    expect(stats.evicted).toBeGreaterThanOrEqual(6);
    for (const c of flood) c.socket.destroy();
    poll.socket.destroy();
  });

  it("an agent has one lease request waiting: a new one answers the one before with []", async () => {
    const h = await start({ limits });
    const rogue = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 2 });
    const polls: RawClient[] = [];
    for (let i = 0; i < 3; i++) polls.push(await sent(h, longPoll(rogue)));
    // The bound only limits how long a failing test waits: a passing one is answered at once.
    const answered = (c: RawClient): Promise<string> =>
      Promise.race([
        c.until((t) => t.includes("\r\n\r\n{")),
        closesWithin(c, 5000).then(() => `not answered within 5 s: ${c.received()}`),
      ]);
    for (const c of polls.slice(0, 2)) expect(await answered(c)).toContain('{"leases":[]}');
    const last = polls[2] as RawClient;
    expect(last.received()).toBe("");
    const runId = await h.createRun({ "main.tf": "" }, ["init"]);
    expect(await last.until((t) => t.includes(runId))).toMatch(/^HTTP\/1\.1 200 /);
    for (const c of polls) c.socket.destroy();
  });

  it("refuses a new connection with 503 CONNECTION_LIMIT only when every connection is the admin's, busy", async () => {
    const probes: RawClient[] = [];
    let release: () => void = () => undefined;
    const hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The registry probe of POST /integrations keeps an admin request busy for as long as the test wants.
    const busy = await start({
      limits: { connections: { maxConnections: 3, maxUnproven: 1, maxUnprovenPerAddress: 1, maxPerIdentity: 3 } },
      probe: () => hold.then(() => ({ warnings: [] })),
    });
    const body = JSON.stringify({ name: "r", registry_url: "https://registry.example", username: "u", password: "p" });
    for (let i = 0; i < 3; i++)
      probes.push(
        await sent(
          busy,
          httpText(
            "POST",
            "/api/admin/v1/integrations",
            { Authorization: `Bearer ${busy.adminToken}`, "Content-Type": "application/json" },
            body,
          ),
        ),
      );
    expect(busy.cp.connectionStats()).toMatchObject({ proven: 3, unproven: 0 });
    const refused = await rawConnect(portOf(busy));
    refused.socket.write(httpText("GET", "/healthz"));
    expect(await closesWithin(refused, 5000)).toBe(true);
    expect(refused.received()).toMatch(/^HTTP\/1\.1 503 /);
    expect(refused.received()).toContain('"code":"CONNECTION_LIMIT"');
    expect(refused.received()).toContain("--max-connections");
    expect(refused.received().toLowerCase()).toContain("retry-after: 1");
    expect(busy.cp.connectionStats().refused).toBe(1);
    release();
    for (const c of probes) expect(await c.until((t) => t.includes("HTTP/1.1 201"))).toBeTruthy();
    for (const c of probes) c.socket.destroy();
  });
});

describe("per-client rates", () => {
  it("an agent over its rate gets 429 AGENT_RATE_LIMITED with Retry-After; another agent is served", async () => {
    const h = await start({ limits: { rates: { agent: { perSecond: 1, burst: 3 } } } });
    const a = await enrollAgent(h.url, h.agentToken);
    const b = await enrollAgent(h.url, h.agentToken);
    const ping = (who: Enrolled): Promise<Answer> => call(h, "GET", `${API}/ping`, who.credential);
    for (let i = 0; i < 3; i++) expect((await ping(a)).status).toBe(200);
    const refused = await ping(a);
    expect(refused.status).toBe(429);
    expect(codeOf(refused)).toBe("AGENT_RATE_LIMITED");
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(messageOf(refused)).toMatch(/retry after 1 s/);
    expect((await ping(b)).status).toBe(200);
  });

  it("pool-token requests over the address's rate get 429 ENROLLMENT_RATE_LIMITED, and the connection closes", async () => {
    const h = await start({ limits: { rates: { enrollment: { perSecond: 0.5, burst: 2 } } } });
    for (let i = 0; i < 2; i++) expect((await call(h, "GET", `${API}/ping`, h.agentToken)).status).toBe(200);
    const client = await rawConnect(portOf(h));
    client.socket.write(httpText("GET", `${API}/ping`, { Authorization: `Bearer ${h.agentToken}` }));
    expect(await closesWithin(client, 5000)).toBe(true);
    expect(client.received()).toMatch(/^HTTP\/1\.1 429 /);
    expect(client.received()).toContain('"code":"ENROLLMENT_RATE_LIMITED"');
    expect(client.received().toLowerCase()).toContain("retry-after: 2");
  });

  it("failed authentications from an address get 429 AUTH_FAILURES_RATE_LIMITED; a valid credential from that address is still served", async () => {
    const h = await start({ limits: { rates: { authFailures: { perSecond: 0.2, burst: 3 } } } });
    const agent = await enrollAgent(h.url, h.agentToken);
    for (let i = 0; i < 3; i++) expect((await call(h, "GET", "/api/admin/v1/runs", `wrong-${i}`)).status).toBe(401);
    const refused = await call(h, "GET", "/api/admin/v1/runs", "wrong-again");
    expect(refused.status).toBe(429);
    expect(codeOf(refused)).toBe("AUTH_FAILURES_RATE_LIMITED");
    expect(refused.headers.get("retry-after")).toBe("5");
    expect((await call(h, "GET", `${API}/ping`, agent.credential)).status).toBe(200);
    expect((await call(h, "GET", "/api/admin/v1/runs", h.adminToken)).status).toBe(200);
    // The pool token still enrolls: its own rate, not the failures'.
    expect((await call(h, "GET", `${API}/ping`, h.agentToken)).status).toBe(200);
  });

  it("an agent whose credential was refused hears 401 AGENT_CREDENTIAL_INVALID while its address's failure budget is spent by others", async () => {
    const h = await start({ limits: { rates: { authFailures: { perSecond: 0.2, burst: 3 } } } });
    const deleted = await enrollAgent(h.url, h.agentToken);
    expect((await h.admin("DELETE", `/agents/${deleted.agentId}`)).status).toBe(204);
    // Someone on the agent's address (a NAT neighbour, a run's code) sends bogus bearers.
    for (let i = 0; i < 3; i++) expect((await call(h, "GET", `${API}/ping`, `bogus-${i}`)).status).toBe(401);
    expect(codeOf(await call(h, "GET", `${API}/ping`, "bogus"))).toBe("AUTH_FAILURES_RATE_LIMITED");
    // The deleted agent's old credential is still told the truth, so that it enrolls again.
    for (let i = 0; i < 5; i++) {
      const refused = await call(h, "POST", `${API}/agents/${deleted.agentId}/leases`, deleted.credential, {
        max: 1,
        wait_seconds: 0,
      });
      expect(refused.status).toBe(401);
      expect(codeOf(refused)).toBe("AGENT_CREDENTIAL_INVALID");
    }
    // A guess in the credential's shape is answered as such, and the budget stays spent for the rest.
    const shaped = `oca1_${randomBytes(32).toString("base64url")}`;
    expect(codeOf(await call(h, "GET", `${API}/ping`, shaped))).toBe("AGENT_CREDENTIAL_INVALID");
    expect(codeOf(await call(h, "GET", "/api/admin/v1/runs", shaped))).toBe("AUTH_FAILURES_RATE_LIMITED");
    expect(codeOf(await call(h, "GET", `${API}/ping`, "bogus"))).toBe("AUTH_FAILURES_RATE_LIMITED");
  });

  it("only credential guesses spend the failure budget: disabled agents, refused credentials, the pool token on a lease route do not", async () => {
    const h = await start({ limits: { rates: { authFailures: { perSecond: 0.2, burst: 3 } } } });
    const disabled = await enrollAgent(h.url, h.agentToken);
    const deleted = await enrollAgent(h.url, h.agentToken);
    expect((await h.admin("POST", `/agents/${disabled.agentId}/disable`)).status).toBe(200);
    expect((await h.admin("DELETE", `/agents/${deleted.agentId}`)).status).toBe(204);
    for (let i = 0; i < 5; i++) {
      expect(codeOf(await call(h, "GET", `${API}/ping`, disabled.credential))).toBe("AGENT_DISABLED");
      expect(codeOf(await call(h, "GET", `${API}/ping`, deleted.credential))).toBe("AGENT_CREDENTIAL_INVALID");
      const pool = await call(h, "POST", `${API}/agents/${disabled.agentId}/leases`, h.agentToken, {
        max: 1,
        wait_seconds: 0,
      });
      expect(codeOf(pool)).toBe("POOL_TOKEN_NOT_ACCEPTED");
    }
    // The whole budget (3) is still there for real guesses.
    for (let i = 0; i < 3; i++) expect((await call(h, "GET", `${API}/ping`, `wrong-${i}`)).status).toBe(401);
    expect(codeOf(await call(h, "GET", `${API}/ping`, "wrong-again"))).toBe("AUTH_FAILURES_RATE_LIMITED");
  });

  it("the admin token over its rate gets 429 ADMIN_RATE_LIMITED", async () => {
    const h = await start({ limits: { rates: { admin: { perSecond: 1, burst: 2 } } } });
    for (let i = 0; i < 2; i++) expect((await h.admin("GET", "/runs")).status).toBe(200);
    const refused = await call(h, "GET", "/api/admin/v1/runs", h.adminToken);
    expect(refused.status).toBe(429);
    expect(codeOf(refused)).toBe("ADMIN_RATE_LIMITED");
    expect(refused.headers.get("retry-after")).toBe("1");
  });
});

describe("per-run caps and body limits", () => {
  const quota = {
    heartbeatIntervalSeconds: 0.2,
    pollWaitSeconds: 5,
    bundleTtlSeconds: 120,
    maxEventsPerRun: 20,
    maxEventBytesPerRun: 4096,
    maxLogEntriesPerRun: 10,
    maxLogBytesPerRun: 2048,
  };

  it("event and log floods are refused with their codes while another agent is served", async () => {
    // The flood is about per-run caps, not the flooder's rate (tested above).
    const h = await start({ agentApi: quota, limits: { rates: { agent: { perSecond: 1000, burst: 1000 } } } });
    const flooder = await enrollAgent(h.url, h.agentToken, undefined, { concurrency: 4 });
    const other = await enrollAgent(h.url, h.agentToken);
    const runs = [];
    for (let i = 0; i < 4; i++) runs.push(await h.createRun({ "main.tf": "" }, ["init"]));
    const [entries, bytes, events, eventBytes] = await leaseOne(h, flooder, 4);
    if (entries === undefined || bytes === undefined || events === undefined || eventBytes === undefined)
      throw new Error("the flooder got fewer than 4 leases");
    const log = (lease: string, text: string): Promise<Answer> =>
      call(h, "POST", `${API}/leases/${lease}/logs`, flooder.credential, { phase: "init", seq: 0, text });
    const sendEvents = (lease: string, n: number, pad = ""): Promise<Answer> =>
      call(h, "POST", `${API}/leases/${lease}/events`, flooder.credential, {
        events: Array.from({ length: n }, () => ({ type: "flood", at: new Date().toISOString(), pad })),
      });

    // Empty chunks count as entries.
    for (let i = 0; i < 10; i++) expect((await log(entries, "")).status).toBe(204);
    const full = await log(entries, "");
    expect(full.status).toBe(422);
    expect(codeOf(full)).toBe("LOG_LIMIT_REACHED");
    expect(full.json["error"]).toMatchObject({ limit: "count" });
    expect(messageOf(full)).toMatch(/send no more log chunks for this run/);

    // The flood goes on, refused, while the other agent leases, logs and completes its run.
    const flooding = { on: true };
    const flood = (async () => {
      const codes = new Set<unknown>();
      while (flooding.on) codes.add(codeOf(await log(entries, "")));
      return codes;
    })();
    const otherRun = await h.createRun({ "main.tf": "" }, ["init"]);
    const [otherLease] = await leaseOne(h, other);
    expect(otherLease).toBeDefined();
    const otherLog = await call(h, "POST", `${API}/leases/${otherLease}/logs`, other.credential, {
      phase: "init",
      seq: 0,
      text: "served during the flood\n",
    });
    expect(otherLog.status).toBe(204);
    const done = await call(h, "POST", `${API}/leases/${otherLease}/complete`, other.credential, {
      outcome: "succeeded",
      phases: [],
      credentials_wiped: true,
    });
    expect(done.status).toBe(200);
    flooding.on = false;
    expect([...(await flood)]).toEqual(["LOG_LIMIT_REACHED"]);
    expect(h.cp.store.runs.get(otherRun)?.status).toBe("succeeded");
    expect(h.cp.store.runs.get(otherRun)?.logs.map((l) => l.text)).toEqual(["served during the flood\n"]);
    expect(h.cp.store.runs.get(runs[0] ?? "")?.logs).toHaveLength(10);

    // Log bytes: 2048 bytes in all (UTF-8: "é" is 2 bytes).
    expect((await log(bytes, "é".repeat(1000))).status).toBe(204);
    const overBytes = await log(bytes, "x".repeat(49));
    expect(overBytes.status).toBe(422);
    expect(overBytes.json["error"]).toMatchObject({ code: "LOG_LIMIT_REACHED", limit: "bytes" });
    expect((await log(bytes, "x".repeat(48))).status).toBe(204);

    // Events: 20 by count, 4096 bytes in all.
    expect((await sendEvents(events, 15)).status).toBe(204);
    const overCount = await sendEvents(events, 6);
    expect(overCount.status).toBe(422);
    expect(overCount.json["error"]).toMatchObject({ code: "EVENT_LIMIT_REACHED", limit: "count" });
    expect((await sendEvents(events, 5)).status).toBe(204);
    const overEventBytes = await sendEvents(eventBytes, 1, "p".repeat(5000));
    expect(overEventBytes.status).toBe(422);
    expect(overEventBytes.json["error"]).toMatchObject({ code: "EVENT_LIMIT_REACHED", limit: "bytes" });
    expect(h.cp.store.runs.get(runs[2] ?? "")?.events.filter((e) => e["source"] === "agent")).toHaveLength(20);

    // A run over its caps still completes.
    const completed = await call(h, "POST", `${API}/leases/${entries}/complete`, flooder.credential, {
      outcome: "succeeded",
      phases: [],
      credentials_wiped: true,
    });
    expect(completed.status).toBe(200);
  });

  it("a run kept across a restart of the control plane (--data-file) still counts what it stored", async () => {
    const dir = await mkdtemp(join(tmpdir(), "oca-quota-restart-"));
    const dataFile = join(dir, "state.db");
    const key = randomBytes(32);
    const options = { agentApi: quota, limits: { rates: { agent: { perSecond: 1000, burst: 1000 } } } };
    try {
      const storage = await SqliteStorage.open(dataFile, key);
      const before = await startControlPlane({ ...options, persistence: storage });
      let agent: Enrolled;
      let lease: string | undefined;
      try {
        agent = await enrollAgent(before.url, before.agentToken);
        await before.createRun({ "main.tf": "" }, ["init"]);
        [lease] = await leaseOne(before, agent);
        for (let i = 0; i < 9; i++)
          expect(
            (
              await call(before, "POST", `${API}/leases/${lease ?? ""}/logs`, agent.credential, {
                phase: "init",
                seq: i,
                text: "",
              })
            ).status,
          ).toBe(204);
      } finally {
        await before.close();
        storage.close();
      }
      const again = await SqliteStorage.open(dataFile, key);
      const after = await startControlPlane({ ...options, persistence: again });
      try {
        const log = (seq: number): Promise<Answer> =>
          call(after, "POST", `${API}/leases/${lease ?? ""}/logs`, agent.credential, { phase: "init", seq, text: "" });
        expect((await log(9)).status).toBe(204);
        const full = await log(10);
        expect(full.status).toBe(422);
        expect(codeOf(full)).toBe("LOG_LIMIT_REACHED");
      } finally {
        await after.close();
        again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a log request over 512 KiB is refused 413 BODY_TOO_LARGE, and the connection closes", async () => {
    const h = await start();
    const agent = await enrollAgent(h.url, h.agentToken);
    await h.createRun({ "main.tf": "" }, ["init"]);
    const [lease] = await leaseOne(h, agent);
    // The declared length alone refuses it; no body byte is sent (unread bytes would make the
    // close a reset, which could discard the answer before this client reads it).
    const client = await rawConnect(portOf(h));
    client.socket.write(
      httpText("POST", `${API}/leases/${lease ?? ""}/logs`, {
        Authorization: `Bearer ${agent.credential}`,
        "Content-Type": "application/json",
        "Content-Length": String(512 * 1024 + 1),
      }),
    );
    expect(await closesWithin(client, 5000)).toBe(true);
    expect(client.received()).toMatch(/^HTTP\/1\.1 413 /);
    expect(client.received()).toContain('"code":"BODY_TOO_LARGE"');
    expect(client.received()).toContain('"limit_bytes":524288');
  });
});
