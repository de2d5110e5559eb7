/**
 * The agent's client and a 429 (src/daemon/control-plane-client.ts): with Retry-After it waits
 * and sends the same request again, up to 3 times while the waits of that request add up to at
 * most 30 s; a longer wait is left to the caller's backoff at once. A real HTTP server on
 * 127.0.0.1 answers as told.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { isAgentError } from "../../src/core/errors.js";
import { ControlPlaneClient } from "../../src/daemon/control-plane-client.js";

const servers: Server[] = [];

afterEach(() => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});

/** A control plane that answers each log request with the next status of `statuses` (then 204). */
async function answering(statuses: { status: number; retryAfter?: string }[]): Promise<{ url: string; at: number[] }> {
  const at: number[] = [];
  const server = createServer((req, res) => {
    req.resume();
    if (req.url?.endsWith("/credential")) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          credential: `oca1_${"c".repeat(43)}`,
          poll_wait_seconds: 5,
          heartbeat_interval_seconds: 1,
          lease_ttl_seconds: 30,
        }),
      );
      return;
    }
    at.push(performance.now());
    const next = statuses.shift() ?? { status: 204 };
    const body =
      next.status === 204 ? "" : JSON.stringify({ error: { code: "AGENT_RATE_LIMITED", message: "slow down" } });
    res.writeHead(next.status, {
      ...(next.retryAfter === undefined ? {} : { "retry-after": next.retryAfter }),
      ...(body === "" ? {} : { "content-type": "application/json" }),
    });
    res.end(body);
  });
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, at };
}

async function client(url: string): Promise<ControlPlaneClient> {
  const c = new ControlPlaneClient({ baseUrl: url, token: "pool-token-0123456789" });
  await c.answerEnrollment("agent-1", { challenge_id: "c", answer: "a" });
  return c;
}

const chunk = { phase: "init", seq: 0, text: "x" } as const;

describe("429 with Retry-After", () => {
  it("is waited out and the same request sent again: the log chunk arrives", async () => {
    const { url, at } = await answering([
      { status: 429, retryAfter: "1" },
      { status: 429, retryAfter: "1" },
    ]);
    const c = await client(url);
    try {
      await c.log("lease-1", chunk);
      expect(at).toHaveLength(3);
      expect((at[1] ?? 0) - (at[0] ?? 0)).toBeGreaterThanOrEqual(990);
      expect((at[2] ?? 0) - (at[1] ?? 0)).toBeGreaterThanOrEqual(990);
    } finally {
      await c.close();
    }
  });

  it("when the wait asked for passes 30 s, or after 3 retries, goes to the caller as CONTROL_PLANE_UNAVAILABLE (throttled)", async () => {
    const { url, at } = await answering([{ status: 429, retryAfter: "31" }]);
    const c = await client(url);
    try {
      const error = await c.log("lease-1", chunk).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(at).toHaveLength(1);
      expect(isAgentError(error, "CONTROL_PLANE_UNAVAILABLE") && error.details).toMatchObject({
        kind: "throttled",
        retry_after_ms: 31_000,
      });
    } finally {
      await c.close();
    }
    const many = await answering(Array.from({ length: 5 }, () => ({ status: 429, retryAfter: "0" })));
    const c2 = await client(many.url);
    try {
      const error = await c2.log("lease-1", chunk).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(many.at).toHaveLength(4);
      expect(isAgentError(error, "CONTROL_PLANE_UNAVAILABLE")).toBe(true);
    } finally {
      await c2.close();
    }
  });

  it("without Retry-After is not retried here (the caller backs off)", async () => {
    const { url, at } = await answering([{ status: 429 }]);
    const c = await client(url);
    try {
      await expect(c.log("lease-1", chunk)).rejects.toMatchObject({ code: "CONTROL_PLANE_UNAVAILABLE" });
      expect(at).toHaveLength(1);
    } finally {
      await c.close();
    }
  });
});
