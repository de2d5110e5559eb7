/**
 * The pre-flight checker's sharing and memory, against a real HTTP server on 127.0.0.1 that
 * answers /v2/ like a Basic-auth registry and counts requests. The checker talks https://; its
 * dispatcher connects to the test server over plain TCP instead (TLS is not what is under test
 * here; test/integration/beyond-platform.test.ts runs the checker against real registries over
 * TLS). Runs that start together share one check, an unreachable registry is not asked again
 * for a while, and a refusal is never remembered.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PreflightChecker, UNREACHABLE_MEMORY_MS } from "../../src/registry/preflight.js";
import { targetForHost } from "../../src/core/registry-address.js";
import type { SelectedCredential } from "../../src/core/credential-selection.js";
import { isAgentError } from "../../src/core/errors.js";

let server: Server;
let port: number;
let requests = 0;
let accept = true;
let challenge = 'Basic realm="test"';

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests++;
    if (req.headers.authorization === undefined) {
      res.writeHead(401, { "www-authenticate": challenge }).end();
      return;
    }
    res.writeHead(accept ? 200 : 401).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** A dispatcher that sends https://registry.test/... to the plain-HTTP test server (no TLS here: the checker's HTTP logic is under test). */
function toTestServer(): Agent {
  return new Agent({
    connect: (_opts, callback) => {
      void import("node:net").then(({ connect }) => {
        const socket = connect(port, "127.0.0.1");
        socket.once("connect", () => callback(null, socket));
        socket.once("error", (e) => callback(e, null));
      });
    },
  });
}

const cred = (host: string, password: string): SelectedCredential => ({
  target: targetForHost(host),
  entry: {
    id: `int-${host}`,
    name: undefined,
    url: `https://${host}`,
    username: "robot",
    password,
    credentialHelper: undefined,
    updatedAtMs: undefined,
  },
});

describe("pre-flight sharing and memory", () => {
  it("runs that start together share one check; a success is then cached", async () => {
    let clock = 1_000_000;
    const checker = new PreflightChecker({
      cacheMs: 60_000,
      requestTimeoutMs: 2_000,
      checkTimeoutMs: 5_000,
      maxBodyBytes: 64 * 1024,
      now: () => clock,
      dispatcher: toTestServer(),
    });
    requests = 0;
    accept = true;
    const c = cred("registry.test", "pw-1");
    const results = await Promise.all(Array.from({ length: 10 }, () => checker.check([c], new Map())));
    expect(results.map((r) => r[0]?.result)).toEqual(Array(10).fill("ok"));
    expect(requests).toBe(2); // one challenge, one authenticated GET, for all ten
    clock += 1_000;
    expect((await checker.check([c], new Map()))[0]?.result).toBe("cached");
    expect(requests).toBe(2);
    clock += 60_000;
    expect((await checker.check([c], new Map()))[0]?.result).toBe("ok");
    expect(requests).toBe(4);
  });

  it("a refusal is never remembered: the next run asks again", async () => {
    const checker = new PreflightChecker({
      cacheMs: 60_000,
      requestTimeoutMs: 2_000,
      checkTimeoutMs: 5_000,
      maxBodyBytes: 64 * 1024,
      now: () => 5_000_000,
      dispatcher: toTestServer(),
    });
    accept = false;
    requests = 0;
    const c = cred("registry.test", "pw-2");
    for (let i = 0; i < 2; i++) {
      const error = await checker.check([c], new Map()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAgentError(error) && error.code).toBe("PREFLIGHT_FAILED");
    }
    expect(requests).toBe(4);
    accept = true;
  });

  it("an unreachable registry is remembered for a while, then asked again", async () => {
    let clock = 9_000_000;
    let connects = 0;
    const dead = new Agent({
      connect: (_opts, callback) => {
        connects++;
        callback(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), null);
      },
    });
    const checker = new PreflightChecker({
      cacheMs: 60_000,
      requestTimeoutMs: 2_000,
      checkTimeoutMs: 5_000,
      maxBodyBytes: 64 * 1024,
      now: () => clock,
      dispatcher: dead,
    });
    const c = cred("dead.test", "pw-3");
    expect((await checker.check([c], new Map()))[0]?.result).toBe("unreachable");
    const first = connects;
    clock += UNREACHABLE_MEMORY_MS - 1;
    const again = await checker.check([c], new Map());
    expect(again[0]?.result).toBe("unreachable");
    expect(again[0]?.detail).toMatch(/remembered/);
    expect(connects).toBe(first);
    clock += 2;
    await checker.check([c], new Map());
    expect(connects).toBeGreaterThan(first);
  });

  it("never sends a credential to a token service that is not https", async () => {
    const checker = new PreflightChecker({
      cacheMs: 60_000,
      requestTimeoutMs: 2_000,
      checkTimeoutMs: 5_000,
      maxBodyBytes: 64 * 1024,
      now: () => 20_000_000,
      dispatcher: toTestServer(),
    });
    challenge = `Bearer realm="http://127.0.0.1:${port}/token",service="registry"`;
    requests = 0;
    try {
      const [outcome] = await checker.check([cred("registry.test", "pw-4")], new Map());
      expect(outcome?.result).toBe("unreachable");
      expect(outcome?.detail).toMatch(/not https/);
      expect(requests).toBe(1); // the challenge only; nothing went to the realm
    } finally {
      challenge = 'Basic realm="test"';
    }
  });
});
