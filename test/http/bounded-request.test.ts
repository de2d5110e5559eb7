/**
 * boundedRequest against a real HTTPS server on 127.0.0.1 (a throwaway CA from openssl): the
 * deadline covers headers and body together, the caller's abort rejects with its own reason,
 * and a body is never read past the byte limit (an endless body still ends the call).
 */
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { boundedRequest, BoundedRequestError, type BoundedRequestOptions } from "../../src/http/bounded-request.js";
import { makeTlsMaterial } from "../support/registry-fixture.js";

let dir: string;
let server: Server;
let base: string;
let dispatcher: Agent;
/** Paths whose request reached the server. */
const arrived: string[] = [];
/** Per path, the last response's close: true when it closed before the server finished it. */
const closed = new Map<string, Promise<boolean>>();

/** Writes one byte every 50 ms until the client goes away. */
function drip(res: ServerResponse): void {
  const timer = setInterval(() => res.write("x"), 50);
  res.once("close", () => clearInterval(timer));
}

/** Writes 64 KiB chunks as fast as the client reads, forever. */
function endless(res: ServerResponse): void {
  const chunk = Buffer.alloc(64 * 1024, "a");
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
  };
  res.on("drain", pump);
  pump();
}

const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  "/ok": (_q, res) => res.writeHead(200, { "content-type": "text/plain", "x-test": "yes" }).end("hello"),
  "/exact": (_q, res) => res.writeHead(200).end("0123456789"),
  "/silent": () => undefined,
  "/drip": (_q, res) => {
    res.writeHead(401, { "content-length": "10000", "www-authenticate": 'Basic realm="t"' });
    drip(res);
  },
  "/declared-huge": (_q, res) => {
    res.writeHead(401, { "content-length": String(1024 * 1024 * 1024), "www-authenticate": 'Basic realm="t"' });
    drip(res);
  },
  "/endless": (_q, res) => {
    res.writeHead(401, { "www-authenticate": 'Basic realm="t"' });
    endless(res);
  },
  "/cut": (req, res) => {
    res.writeHead(200, { "content-length": "100" });
    res.write("0123456789", () => req.socket.destroy());
  },
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-bounded-"));
  const tls = await makeTlsMaterial(join(dir, "tls"));
  server = createServer(
    { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
    (req, res) => {
      const path = req.url ?? "";
      arrived.push(path);
      closed.set(
        path,
        once(res, "close").then(() => !res.writableFinished),
      );
      routes[path]?.(req, res);
    },
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dispatcher = new Agent({ connect: { ca: tls.caPem } });
});

afterAll(async () => {
  await dispatcher.close();
  server.closeAllConnections();
  server.close();
  await rm(dir, { recursive: true, force: true });
});

const get = (path: string, extra: Partial<BoundedRequestOptions> = {}) =>
  boundedRequest(`${base}${path}`, { method: "GET", dispatcher, timeoutMs: 10_000, maxBodyBytes: 64 * 1024, ...extra });

async function failure(promise: Promise<unknown>): Promise<BoundedRequestError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BoundedRequestError);
  return error as BoundedRequestError;
}

/** Resolves once the server has seen a request for `path`. */
async function arrival(path: string): Promise<void> {
  while (!arrived.includes(path)) await once(server, "request");
}

describe("boundedRequest", () => {
  it("returns the status, the headers and the body", async () => {
    const res = await get("/ok");
    expect(res.status).toBe(200);
    expect(res.headers["x-test"]).toBe("yes");
    expect(res.bytes.toString("utf8")).toBe("hello");
  });

  it("accepts a body of exactly the limit", async () => {
    expect((await get("/exact", { maxBodyBytes: 10 })).bytes.toString("utf8")).toBe("0123456789");
  });

  it.each([
    ["headers that never come", "/silent"],
    ["a body that drips one byte per 50 ms", "/drip"],
  ])("ends %s at the deadline of the whole exchange", async (_name, path) => {
    const started = Date.now();
    const error = await failure(get(path, { timeoutMs: 400 }));
    expect(error.kind).toBe("timeout");
    expect(error.message).toContain(`GET ${base}${path} did not finish within 0.4 s`);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it.each([
    ["before the headers", "/silent"],
    ["during the body", "/drip"],
  ])("rejects with the caller's reason when its signal aborts %s", async (_name, path) => {
    arrived.length = 0;
    const controller = new AbortController();
    const reason = new Error("run canceled");
    const pending = get(path, { signal: controller.signal });
    await arrival(path);
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it("refuses a declared body over the limit without reading it", async () => {
    const error = await failure(get("/declared-huge"));
    expect(error.kind).toBe("too_large");
    expect(error.details.declaredBytes).toBe(1024 * 1024 * 1024);
    expect(error.message).toContain("is 1073741824 bytes, over the limit of 65536");
  });

  it("stops reading an endless body at the limit", async () => {
    const error = await failure(get("/endless"));
    expect(error.kind).toBe("too_large");
    expect(error.details.declaredBytes).toBeUndefined();
    expect(error.message).toContain("exceeds 65536 bytes");
    expect(await closed.get("/endless")).toBe(true); // the client hung up mid-body
  });

  it.each([
    ["an endless body", "/endless"],
    ["a declared body over the limit", "/declared-huge"],
  ])("dumps %s up to the limit and still returns the status and headers", async (_name, path) => {
    const res = await get(path, { consume: "dump" });
    expect(res.status).toBe(401);
    expect(res.headers["www-authenticate"]).toBe('Basic realm="t"');
    expect(res.bytes.byteLength).toBe(0);
  });

  it("reports a refused connection as network, with its errno", async () => {
    const closed = createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, "close");
    const error = await failure(
      boundedRequest(`https://127.0.0.1:${port}/`, { method: "GET", dispatcher, timeoutMs: 5_000, maxBodyBytes: 1024 }),
    );
    expect(error.kind).toBe("network");
    expect(error.details.errno).toBe("ECONNREFUSED");
  });

  it("reports a body that breaks off as cut_off", async () => {
    const error = await failure(get("/cut"));
    expect(error.kind).toBe("cut_off");
    expect(error.details.label).toMatch(/^UND_ERR_/);
  });
});
