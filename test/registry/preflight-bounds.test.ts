/**
 * Pre-flight against registries that never finish answering, over real HTTPS on 127.0.0.1 (a
 * throwaway CA from openssl): a 401 challenge that declares a large body and drips it a byte
 * every 100 ms, an endpoint that never sends headers, a token service whose JSON never ends.
 * A run's signal ends its wait at once with the signal's reason; without one, the check ends as
 * "unreachable" at its deadline; a check shared by two runs goes on for the one that stays.
 */
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, type Dispatcher } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SelectedCredential } from "../../src/core/credential-selection.js";
import { AgentError } from "../../src/core/errors.js";
import { targetForHost } from "../../src/core/registry-address.js";
import { PreflightChecker, type PreflightOptions } from "../../src/registry/preflight.js";
import { makeTlsMaterial, type TlsMaterial } from "../support/registry-fixture.js";

interface TestRegistry {
  readonly server: Server;
  readonly host: string;
  /** Every request's method, path and whether it carried credentials, in arrival order. */
  readonly requests: string[];
  /** Per request (as in `requests`, first of each), its response's close: true when the client hung up before the end. */
  readonly closed: Map<string, Promise<boolean>>;
}

let dir: string;
let tls: TlsMaterial;
let dispatcher: Agent;
const started: TestRegistry[] = [];

async function registry(
  handler: (req: IncomingMessage, res: ServerResponse, self: TestRegistry) => void,
): Promise<TestRegistry> {
  const requests: string[] = [];
  const closed = new Map<string, Promise<boolean>>();
  const server = createServer({ cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const self: TestRegistry = { server, host: `127.0.0.1:${(server.address() as AddressInfo).port}`, requests, closed };
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const request = `${req.method ?? ""} ${(req.url ?? "").replace(/\?.*$/, "")}${req.headers.authorization === undefined ? "" : " (auth)"}`;
    requests.push(request);
    if (!closed.has(request))
      closed.set(
        request,
        once(res, "close").then(() => !res.writableFinished),
      );
    handler(req, res, self);
  });
  started.push(self);
  return self;
}

/** Resolves once `r` has seen `count` requests. */
async function arrivals(r: TestRegistry, count: number): Promise<void> {
  while (r.requests.length < count) await once(r.server, "request");
}

/** Sends one byte every 100 ms until the client hangs up. */
function drip(res: ServerResponse): void {
  const timer = setInterval(() => res.write("x"), 100);
  res.once("close", () => clearInterval(timer));
}

/** Sends 64 KiB chunks as fast as the client reads, forever. */
function endless(res: ServerResponse, first: string): void {
  res.write(first);
  const chunk = Buffer.alloc(64 * 1024, "a");
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
  };
  res.on("drain", pump);
  pump();
}

const cred = (host: string, password: string): SelectedCredential => ({
  target: targetForHost(host),
  entry: {
    id: `int-${password}`,
    name: undefined,
    url: `https://${host}`,
    username: "robot",
    password,
    credentialHelper: undefined,
    updatedAtMs: undefined,
  },
});

const checker = (bounds: Partial<PreflightOptions>): PreflightChecker =>
  new PreflightChecker({
    cacheMs: 60_000,
    requestTimeoutMs: 30_000,
    checkTimeoutMs: 30_000,
    maxBodyBytes: 64 * 1024,
    now: () => Date.now(),
    dispatcher,
    ...bounds,
  });

async function settled<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown; ms: number }> {
  const from = Date.now();
  return promise.then(
    (value) => ({ value, ms: Date.now() - from }),
    (error: unknown) => ({ error, ms: Date.now() - from }),
  );
}

let stallers: Record<string, TestRegistry>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-preflight-bounds-"));
  tls = await makeTlsMaterial(join(dir, "tls"));
  dispatcher = new Agent({ connect: { ca: tls.caPem } });
  const dripping = (challenge: string) =>
    registry((_req, res) => {
      // Far more than it will ever send, and under maxBodyBytes: only the deadline ends it.
      res.writeHead(401, { "www-authenticate": challenge, "content-length": "60000" });
      drip(res);
    });
  stallers = {
    "a Basic challenge whose body drips": await dripping('Basic realm="stall"'),
    "a Bearer challenge whose body drips": await dripping('Bearer realm="https://127.0.0.1:1/token",service="stall"'),
    "no headers at all": await registry(() => undefined),
  };
});

afterAll(async () => {
  // destroy, not close: checks whose runs left are still running until their deadline.
  await dispatcher.destroy();
  for (const r of started) {
    r.server.closeAllConnections();
    r.server.close();
  }
  await rm(dir, { recursive: true, force: true });
});

describe("pre-flight against a registry that never finishes answering", () => {
  for (const name of [
    "a Basic challenge whose body drips",
    "a Bearer challenge whose body drips",
    "no headers at all",
  ]) {
    it(`${name}: a run's signal ends its check at once, with the signal's reason`, async () => {
      const r = stallers[name]!;
      const controller = new AbortController();
      const reason = new AgentError("RUN_CANCELED", "the run was canceled");
      const seen = r.requests.length;
      const pending = settled(checker({}).check([cred(r.host, `abort-${name}`)], new Map(), controller.signal));
      await arrivals(r, seen + 1);
      controller.abort(reason);
      const { error, ms } = await pending;
      expect(error).toBe(reason);
      expect(ms).toBeLessThan(2_000 + 5_000); // arrival plus a prompt exit; the check's deadline is 30 s
    });

    it(`${name}: without a signal, the check ends "unreachable" at checkTimeoutMs`, async () => {
      const r = stallers[name]!;
      const { value, ms } = await settled(
        checker({ checkTimeoutMs: 500 }).check([cred(r.host, `check-${name}`)], new Map()),
      );
      expect(value?.[0]).toMatchObject({
        result: "unreachable",
        detail: `GET https://${r.host}/v2/ failed (the check timed out after 0.5 s); not verified, tofu init will tell`,
      });
      expect(ms).toBeLessThan(10_000);
    });

    it(`${name}: each request ends at requestTimeoutMs`, async () => {
      const r = stallers[name]!;
      const [outcome] = await checker({ requestTimeoutMs: 300 }).check([cred(r.host, `request-${name}`)], new Map());
      expect(outcome).toMatchObject({
        result: "unreachable",
        detail: `GET https://${r.host}/v2/ failed (timed out after 0.3 s); not verified, tofu init will tell`,
      });
    });
  }

  it("doctor's checkEach leaves on its signal too, and does not report the reason as a result", async () => {
    const r = stallers["no headers at all"]!;
    const controller = new AbortController();
    const reason = new AgentError("RUN_CANCELED", "stopped");
    const seen = r.requests.length;
    const pending = settled(checker({}).checkEach([cred(r.host, "each")], new Map(), controller.signal));
    await arrivals(r, seen + 1);
    controller.abort(reason);
    expect((await pending).error).toBe(reason);
  });

  it("a signal aborted before the check starts sends nothing", async () => {
    const r = stallers["no headers at all"]!;
    let dispatched = 0;
    const counting = new (class extends Agent {
      override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
        dispatched++;
        return super.dispatch(options, handler);
      }
    })({ connect: { ca: tls.caPem } });
    const reason = new Error("already stopped");
    await expect(
      checker({ dispatcher: counting }).check([cred(r.host, "pre-aborted")], new Map(), AbortSignal.abort(reason)),
    ).rejects.toBe(reason);
    expect(dispatched).toBe(0);
    await counting.close();
  });
});

describe("a check shared by two runs", () => {
  it("one run's cancel lets it leave; the check goes on and the other run gets its result", async () => {
    const held: ServerResponse[] = [];
    const r = await registry((req, res) => {
      if (req.headers.authorization !== undefined) res.writeHead(200).end("{}");
      else held.push(res); // answered by the test, below
    });
    const shared = checker({});
    const c = cred(r.host, "shared");
    const canceled = new AbortController();
    const reason = new AgentError("RUN_CANCELED", "run A was canceled");
    const a = settled(shared.check([c], new Map(), canceled.signal));
    let bDone = false;
    const b = shared.check([c], new Map(), new AbortController().signal).finally(() => (bDone = true));
    const plain = shared.check([c], new Map());
    await arrivals(r, 1);
    canceled.abort(reason);
    expect((await a).error).toBe(reason);
    expect(bDone).toBe(false);
    held[0]!.writeHead(401, { "www-authenticate": 'Basic realm="t"' }).end();
    expect((await b)[0]?.result).toBe("ok");
    expect((await plain)[0]?.result).toBe("ok");
    expect(r.requests).toEqual(["GET /v2/", "GET /v2/ (auth)"]); // one check for all three
  });
});

describe("answers over the byte limit", () => {
  it.each([
    [
      "a token answer that never ends",
      (res: ServerResponse) => {
        res.writeHead(200, { "content-type": "application/json" });
        endless(res, '{"token":"');
      },
    ],
    [
      "a token answer that declares 1 GiB",
      (res: ServerResponse) => {
        res.writeHead(200, { "content-type": "application/json", "content-length": String(1024 * 1024 * 1024) });
        drip(res);
      },
    ],
  ])("%s leaves the credential unverified, read no further than maxBodyBytes", async (_name, answer) => {
    const r = await registry((req, res, self) => {
      if (req.url?.startsWith("/token")) answer(res);
      else res.writeHead(401, { "www-authenticate": `Bearer realm="https://${self.host}/token",service="big"` }).end();
    });
    const [outcome] = await checker({}).check([cred(r.host, "big-token")], new Map([[r.host, ["org/mod"]]]));
    expect(outcome).toMatchObject({
      result: "unreachable",
      detail: `GET https://${r.host}/token (token service, scope repository:org/mod:pull) failed (its answer is over 65536 bytes); not verified, tofu init will tell`,
    });
    expect(await r.closed.get("GET /token (auth)")).toBe(true); // the agent hung up mid-answer
    expect(r.requests).toEqual(["GET /v2/", "GET /token (auth)"]);
  });

  it("a challenge that declares 1 GiB is not read: the check goes on to the credentials", async () => {
    const r = await registry((req, res) => {
      if (req.headers.authorization !== undefined) {
        res.writeHead(200).end("{}");
        return;
      }
      res.writeHead(401, { "www-authenticate": 'Basic realm="t"', "content-length": String(1024 * 1024 * 1024) });
      drip(res);
    });
    const [outcome] = await checker({}).check([cred(r.host, "declared-challenge")], new Map());
    expect(outcome?.result).toBe("ok");
    expect(await r.closed.get("GET /v2/")).toBe(true);
  });
});
