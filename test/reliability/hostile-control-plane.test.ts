/**
 * A hostile control plane: a node:http server on 127.0.0.1 that registers the agent properly,
 * then answers its long-polls (and, for one lease, its configuration download) with malformed
 * JSON, wrong types, hostile run ids, deep nesting, huge bodies (declared and streamed) and a body
 * that drips one byte at a time and never ends. The agent is a real process.
 *
 * Asserted for each: the agent refuses the answer with the right code (logged), keeps running and
 * polls again; its resident memory (VmRSS, sampled) stays bounded, and a dripping body is given up
 * within the call's deadline. A lease whose configuration download is hostile fails that run with
 * a code, reported to the control plane, and the agent carries on.
 */
import { createHash } from "node:crypto";
import { EventEmitter, once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parsePublicKeyDoc } from "../../src/crypto/agent-key.js";
import { sealBundle, sealChallenge } from "../../src/crypto/sealed-bundle.js";
import type { AgentProcess, LogLine } from "../support/agent-process.js";
import { tarGz } from "../support/control-plane-harness.js";
import { agentFiles, launchAgent, stopAgent, type AgentFiles } from "../support/reliability-agents.js";
import { recordFigures, rssBytes } from "../support/reliability-figures.js";

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

const TOKEN = "hostile-cp-token";
/** The per-agent credential this control plane hands out once the agent answers its challenge. */
const CREDENTIAL = "oca1_hostile-control-plane-credential-0123456789";
const CHALLENGE_SECRET = "hostile-challenge-secret";
const POLL_WAIT_S = 1;
const MIB = 1024 * 1024;

let server: Server;
let url: string;
let dir: string;
let files: AgentFiles;
let agent: AgentProcess;
let publicKey: { kid: string; public_key: string } | undefined;
const leaseAnswers: Answer[] = [];
let pendingPoll: ((a: Answer) => void) | undefined;

/** Answers the long-poll in progress, or the next one. */
function answerNextPoll(a: Answer): void {
  if (pendingPoll) pendingPoll(a);
  else leaseAnswers.push(a);
}
const configAnswers = new Map<string, Answer>();
/** Heartbeat answers by lease id, used once each; and leases whose heartbeats ask to cancel. */
const heartbeatAnswers = new Map<string, Answer>();
const cancelLeases = new Set<string>();
const completions: { leaseId: string; body: { outcome: string; error?: { code: string } } }[] = [];
let leaseRequests = 0;
/** The number of the long-poll that got the last queued answer. */
let answeredRequest = 0;
/** "lease" for every long-poll request, "complete" for every completion. */
const cpEvents = new EventEmitter();
let maxRss = 0;
let sampler: NodeJS.Timeout | undefined;
const figures: Record<string, unknown> = {};

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Streams `total` bytes of `fill` without a content-length, honouring backpressure. */
function stream(res: ServerResponse, total: number, fill: string): void {
  res.writeHead(200, { "content-type": "application/json" });
  const chunk = Buffer.alloc(64 * 1024, fill);
  let sent = 0;
  const pump = (): void => {
    while (sent < total && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once("drain", pump);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  res.on("close", () => {
    sent = total;
  });
  pump();
}

function drip(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "application/json" });
  res.write('{"leases":[');
  const timer = setInterval(() => {
    if (res.destroyed) clearInterval(timer);
    else res.write(" ");
  }, 500);
  res.on("close", () => {
    clearInterval(timer);
  });
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = req.url ?? "/";
  const enrolling = path === "/api/agent/v1/agents" || path === "/api/agent/v1/agents/agent-hostile/credential";
  if (req.headers.authorization !== `Bearer ${enrolling ? TOKEN : CREDENTIAL}`) {
    json(res, 401, { error: { code: "UNAUTHORIZED", message: "no" } });
    return;
  }
  if (path === "/api/agent/v1/agents" && req.method === "POST") {
    const body = JSON.parse(await readAll(req)) as { public_keys: { kid: string; public_key: string }[] };
    publicKey = body.public_keys[body.public_keys.length - 1];
    const challenge = await sealChallenge({
      recipient: parsePublicKeyDoc(JSON.stringify(publicKey), "agent key"),
      agentId: "agent-hostile",
      challengeId: "challenge-hostile",
      secret: CHALLENGE_SECRET,
      issuedAtMs: Date.now(),
      ttlSeconds: 300,
    });
    json(res, 201, { agent_id: "agent-hostile", challenge_id: "challenge-hostile", challenge });
    return;
  }
  if (path === "/api/agent/v1/agents/agent-hostile/credential" && req.method === "POST") {
    const body = JSON.parse(await readAll(req)) as { answer: string };
    if (body.answer !== CHALLENGE_SECRET) {
      json(res, 403, { error: { code: "CHALLENGE_FAILED", message: "no" } });
      return;
    }
    json(res, 200, {
      credential: CREDENTIAL,
      poll_wait_seconds: POLL_WAIT_S,
      heartbeat_interval_seconds: 0.2,
      lease_ttl_seconds: 60,
    });
    return;
  }
  if (/^\/api\/agent\/v1\/agents\/[^/]+\/leases$/.test(path)) {
    await readAll(req);
    const index = ++leaseRequests;
    cpEvents.emit("lease");
    const answer = leaseAnswers.shift();
    if (answer) {
      answeredRequest = index;
      answer(req, res);
      return;
    }
    // A long-poll: held until the test queues an answer, or the wait ends with no lease.
    const timer = setTimeout(() => {
      pendingPoll = undefined;
      json(res, 200, { leases: [] });
    }, POLL_WAIT_S * 1000);
    pendingPoll = (a) => {
      clearTimeout(timer);
      pendingPoll = undefined;
      answeredRequest = index;
      a(req, res);
    };
    res.on("close", () => {
      clearTimeout(timer);
      pendingPoll = undefined;
    });
    return;
  }
  const lease = /^\/api\/agent\/v1\/leases\/([^/]+)\/(\w+)$/.exec(path);
  if (lease) {
    const [, leaseId = "", action] = lease;
    if (action === "configuration") {
      const answer = configAnswers.get(leaseId);
      if (answer) answer(req, res);
      else json(res, 404, { error: { code: "NO", message: "no" } });
      return;
    }
    const body = await readAll(req);
    const hb = action === "heartbeat" ? heartbeatAnswers.get(leaseId) : undefined;
    if (hb) {
      heartbeatAnswers.delete(leaseId);
      hb(req, res);
    } else if (action === "heartbeat")
      json(res, 200, {
        expires_at: new Date(Date.now() + 60_000).toISOString(),
        cancel_requested: cancelLeases.has(leaseId),
      });
    else if (action === "complete") {
      completions.push({ leaseId, body: JSON.parse(body) as { outcome: string; error?: { code: string } } });
      json(res, 200, {});
      cpEvents.emit("complete");
    } else res.writeHead(204).end();
    return;
  }
  json(res, 404, { error: { code: "NOT_FOUND", message: path } });
}

/** Log lines from now on that match. */
function nextLog(predicate: (l: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> {
  const from = agent.lines.length;
  return agent.waitForLog((l) => agent.lines.indexOf(l) >= from && predicate(l), timeoutMs);
}

async function leaseWithBigConfiguration(
  runId: string,
  configuration: Buffer,
  answer: Answer | "inline",
  announcedSha256?: string,
): Promise<string> {
  if (!publicKey) throw new Error("agent not registered");
  const bundle = await sealBundle({
    recipient: parsePublicKeyDoc(JSON.stringify(publicKey), "agent key"),
    agentId: "agent-hostile",
    runId,
    plaintext: Buffer.from(JSON.stringify({ version: 1, registries: [] })),
    issuedAtMs: Date.now(),
    ttlSeconds: 300,
  });
  const leaseId = `lease-${runId}`;
  if (answer !== "inline") configAnswers.set(leaseId, answer);
  answerNextPoll((_req, res) => {
    json(res, 200, {
      leases: [
        {
          lease_id: leaseId,
          expires_at: new Date(Date.now() + 60_000).toISOString(),
          run: {
            id: runId,
            phases: ["init"],
            queued_at: new Date().toISOString(),
            // No inline copy: the agent downloads it from GET /leases/{id}/configuration.
            configuration: {
              sha256: announcedSha256 ?? createHash("sha256").update(configuration).digest("hex"),
              size_bytes: configuration.byteLength,
              ...(answer === "inline" ? { inline_base64: configuration.toString("base64") } : {}),
            },
          },
          bundle,
        },
      ],
    });
  });
  return leaseId;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-hostile-cp-"));
  server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  files = await agentFiles(dir, TOKEN);
  agent = launchAgent(url, files, join(dir, "work"), [
    "--retry-base",
    "100ms",
    "--retry-max",
    "500ms",
    "--max-config-bytes",
    "1MiB",
    "--concurrency",
    "4",
    "--cancel-grace",
    "200ms",
    "--drain-timeout",
    "2s",
  ]);
  await agent.waitForLog((l) => l["event"] === "registered");
  sampler = setInterval(() => {
    const rss = rssBytes(agent.child.pid ?? 0);
    if (rss !== undefined) maxRss = Math.max(maxRss, rss);
  }, 50);
});

afterAll(async () => {
  if (sampler) clearInterval(sampler);
  figures["agent_max_rss_mib"] = Math.round(maxRss / MIB);
  recordFigures("hostile-control-plane", figures);
  await stopAgent(agent);
  server.closeAllConnections();
  await new Promise<void>((r) =>
    server.close(() => {
      r();
    }),
  );
  await rm(dir, { recursive: true, force: true });
});

const RSS_BOUND = 600 * MIB;

const cases: [string, Answer, string, string][] = [
  [
    "malformed JSON",
    (_q, res) => {
      res.writeHead(200, { "content-type": "application/json" }).end('{"leases": [1,');
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "an HTML error page with 200",
    (_q, res) => {
      res.writeHead(200, { "content-type": "text/html" }).end("<html>proxy error</html>");
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "wrong types",
    (_q, res) => {
      json(res, 200, { leases: "none" });
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "a lease with wrong field types",
    (_q, res) => {
      json(res, 200, { leases: [{ lease_id: 5, expires_at: null, run: [], bundle: {} }] });
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "a run id that is a path",
    (_q, res) => {
      json(res, 200, {
        leases: [
          {
            lease_id: "l",
            expires_at: "x",
            run: {
              id: "../../etc",
              phases: ["init"],
              queued_at: "x",
              configuration: { sha256: "0".repeat(64), size_bytes: 1 },
            },
            bundle: "b",
          },
        ],
      });
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "a phase that is a command",
    (_q, res) => {
      json(res, 200, {
        leases: [
          {
            lease_id: "l",
            expires_at: "x",
            run: {
              id: "r",
              phases: ["init; rm -rf /"],
              queued_at: "x",
              configuration: { sha256: "0".repeat(64), size_bytes: 1 },
            },
            bundle: "b",
          },
        ],
      });
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "a million nested arrays",
    (_q, res) => {
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(`{"leases":${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}}`);
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "a 2 GB declared body",
    (_q, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": String(2 * 1024 * MIB) });
      res.write("{");
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "too_large",
  ],
  [
    "a 200 MB streamed body (no length)",
    (_q, res) => {
      stream(res, 200 * MIB, " ");
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "too_large",
  ],
  [
    "a 50 MB body of junk under the limit",
    (_q, res) => {
      stream(res, 50 * MIB, "x");
    },
    "CONTROL_PLANE_BAD_RESPONSE",
    "bad_response",
  ],
  [
    "an unknown status",
    (_q, res) => {
      json(res, 418, { error: { code: "TEAPOT", message: "x".repeat(10_000) } });
    },
    "CONTROL_PLANE_REJECTED",
    "rejected",
  ],
  [
    "a 503 with a 20 MB body",
    (_q, res) => {
      res.writeHead(503, { "content-type": "text/plain" });
      res.end(Buffer.alloc(20 * MIB, "e"));
    },
    "CONTROL_PLANE_UNAVAILABLE",
    "server_error",
  ],
];

describe("a hostile control plane", () => {
  for (const [what, answer, code, kind] of cases) {
    it(`refuses ${what} (${code}), in bounded memory, and polls again`, async () => {
      const refused = nextLog((l) => l["event"] === "control_plane_error" && l["during"] === "lease");
      answerNextPoll(answer);
      const t0 = Date.now();
      const line = await refused;
      const ms = Date.now() - t0;
      expect(line["code"]).toBe(code);
      expect(line["kind"]).toBe(kind);
      // It keeps running and asks again.
      while (leaseRequests <= answeredRequest) await once(cpEvents, "lease", { signal: AbortSignal.timeout(30_000) });
      expect(agent.child.exitCode).toBeNull();
      const rss = rssBytes(agent.child.pid ?? 0) ?? 0;
      figures[what] = { code, kind, ms, rss_mib_after: Math.round(rss / MIB) };
      expect(maxRss).toBeLessThan(RSS_BOUND);
    });
  }

  it("gives up on a body that drips forever within the call's deadline (poll wait + 15 s), then polls again", async () => {
    const refused = nextLog((l) => l["event"] === "control_plane_error" && l["during"] === "lease", 60_000);
    const t0 = Date.now();
    answerNextPoll((_q, res) => {
      drip(res);
    });
    const line = await refused;
    const ms = Date.now() - t0;
    expect(line["code"]).toBe("CONTROL_PLANE_UNAVAILABLE");
    expect(line["kind"]).toBe("timeout");
    expect(ms).toBeLessThan(POLL_WAIT_S * 1000 + 15_000 + 15_000);
    while (leaseRequests <= answeredRequest) await once(cpEvents, "lease", { signal: AbortSignal.timeout(30_000) });
    expect(agent.child.exitCode).toBeNull();
    figures["a body that drips one byte per 500 ms"] = {
      code: line["code"],
      kind: line["kind"],
      gave_up_after_ms: ms,
      deadline_ms: POLL_WAIT_S * 1000 + 15_000,
    };
  }, 60_000);

  it("fails a run whose configuration download is huge, and one whose checksum does not match, each with a code", async () => {
    const archive = await tarGz({ "main.tf": "# nothing\n" });
    const ended = [
      nextLog((l) => l["run_id"] === "run-huge-config" && l["event"] === "run_finished"),
      nextLog((l) => l["run_id"] === "run-bad-sum" && l["event"] === "run_finished"),
    ];
    const big = await leaseWithBigConfiguration("run-huge-config", archive, (_q, res) => {
      stream(res, 300 * MIB, "z");
    });
    const bad = await leaseWithBigConfiguration(
      "run-bad-sum",
      archive,
      (_q, res) => {
        res.writeHead(200, { "content-type": "application/gzip", "content-length": archive.byteLength }).end(archive);
      },
      "f".repeat(64),
    );
    const finished = await Promise.all(ended);
    expect(finished[0]?.["code"]).toBe("CONTROL_PLANE_BAD_RESPONSE");
    expect(finished[1]?.["code"]).toBe("ARCHIVE_CHECKSUM_MISMATCH");
    while (completions.length < 2) await once(cpEvents, "complete", { signal: AbortSignal.timeout(30_000) });
    expect(completions.find((c) => c.leaseId === big)?.body.error?.code).toBe("CONTROL_PLANE_BAD_RESPONSE");
    expect(completions.find((c) => c.leaseId === bad)?.body.error?.code).toBe("ARCHIVE_CHECKSUM_MISMATCH");
    expect(completions.every((c) => c.body.outcome === "failed")).toBe(true);
    expect(agent.child.exitCode).toBeNull();
    expect(maxRss).toBeLessThan(RSS_BOUND);
    figures["hostile configuration downloads"] = { huge: finished[0]?.["code"], checksum: finished[1]?.["code"] };
  });

  it("refuses huge heartbeat answers for several runs at once in bounded memory, and the runs still end", async () => {
    const archive = await tarGz({ "main.tf": "# nothing\n", "fake-tofu.json": JSON.stringify({ hang: "init" }) });
    const runIds = ["run-hb-1", "run-hb-2", "run-hb-3", "run-hb-4"];
    const leaseIds: string[] = [];
    for (const id of runIds) {
      const leaseId = `lease-${id}`;
      // The first heartbeat of each run gets 70 MB of junk, all four at about the same time.
      heartbeatAnswers.set(leaseId, (_q, res) => {
        stream(res, 70 * MIB, "h");
      });
      leaseIds.push(leaseId);
    }
    const failed = runIds.map((id) => nextLog((l) => l["run_id"] === id && l["event"] === "heartbeat_failed"));
    // The peak during this test alone (before the fix of the per-answer bound it was 680 MiB+).
    const priorMax = maxRss;
    maxRss = 0;
    const done = completions.length;
    // Four leases on consecutive polls: the agent has four slots, so their heartbeats overlap.
    for (const id of runIds) await leaseWithBigConfiguration(id, archive, "inline");
    const lines = await Promise.all(failed);
    for (const l of lines) expect(l["code"]).toBe("CONTROL_PLANE_BAD_RESPONSE");
    expect(maxRss).toBeLessThan(RSS_BOUND);
    for (const id of leaseIds) cancelLeases.add(id);
    while (completions.length < done + runIds.length)
      await once(cpEvents, "complete", { signal: AbortSignal.timeout(30_000) });
    for (const id of leaseIds) expect(completions.find((c) => c.leaseId === id)?.body.outcome).toBe("canceled");
    expect(agent.child.exitCode).toBeNull();
    figures["huge heartbeat answers, 4 runs at once"] = {
      code: lines[0]?.["code"],
      agent_max_rss_mib_during: Math.round(maxRss / MIB),
    };
    maxRss = Math.max(priorMax, maxRss);
  });
});
