/**
 * The registry_url probe against endpoints that never finish answering, over real HTTPS on
 * 127.0.0.1 (a throwaway CA from openssl): the probe ends at its deadline with the usual
 * "saved unverified" warning, and reads an endless /v2/ answer no further than its byte limit.
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
import { probeRegistry } from "../../src/control-plane/registry-probe.js";
import { makeTlsMaterial, type TlsMaterial } from "../support/registry-fixture.js";

let dir: string;
let tls: TlsMaterial;
let dispatcher: Agent;
const servers: Server[] = [];

/** An HTTPS endpoint; resolves to its URL and, per request, whether the client hung up before the end. */
async function endpoint(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: URL; hungUp: Promise<boolean>[] }> {
  const hungUp: Promise<boolean>[] = [];
  const server = createServer(
    { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
    (req, res) => {
      hungUp.push(once(res, "close").then(() => !res.writableFinished));
      handler(req, res);
    },
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return { url: new URL(`https://127.0.0.1:${(server.address() as AddressInfo).port}`), hungUp };
}

/** One byte every 100 ms until the client hangs up. */
function drip(res: ServerResponse): void {
  const timer = setInterval(() => res.write(" "), 100);
  res.once("close", () => clearInterval(timer));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-probe-bounds-"));
  tls = await makeTlsMaterial(join(dir, "tls"));
  dispatcher = new Agent({ connect: { ca: tls.caPem } });
});

afterAll(async () => {
  await dispatcher.destroy();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await rm(dir, { recursive: true, force: true });
});

describe("registry probe bounds", () => {
  it.each([
    ["sends no headers", () => undefined],
    [
      "answers 401 and drips its body",
      (_req: IncomingMessage, res: ServerResponse) => {
        res.writeHead(401, {
          "www-authenticate": 'Bearer realm="https://127.0.0.1/token"',
          "docker-distribution-api-version": "registry/2.0",
          "content-length": "5000",
        });
        drip(res);
      },
    ],
  ])("an endpoint that %s is saved unverified at the deadline", async (_name, handler) => {
    const { url } = await endpoint(handler);
    const from = Date.now();
    const result = await probeRegistry(url, { timeoutMs: 400, dispatcher });
    expect(result.warnings).toEqual([
      `could not reach ${url.origin}/v2/ to verify the endpoint (timeout); saved unverified`,
    ]);
    expect(Date.now() - from).toBeLessThan(5_000);
  });

  it("reads an endless /v2/ answer only up to the byte limit, then judges it by status and headers", async () => {
    const { url, hungUp } = await endpoint((_req, res) => {
      res.writeHead(401, {
        "www-authenticate": 'Bearer realm="https://127.0.0.1/token"',
        "docker-distribution-api-version": "registry/2.0",
      });
      const chunk = Buffer.alloc(64 * 1024, " ");
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on("drain", pump);
      pump();
    });
    expect(await probeRegistry(url, { timeoutMs: 30_000, maxBodyBytes: 1024, dispatcher })).toEqual({ warnings: [] });
    expect(await hungUp[0]).toBe(true);
  });
});
