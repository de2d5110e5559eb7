/**
 * docs/protocol.md, Limits, states the reference control plane's defaults: each figure there is
 * checked against the constants the code uses, so the two cannot drift.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULT_CONNECTION_LIMITS } from "../../src/control-plane/connection-policy.js";
import { DEFAULT_LIMITS, MAX_SCALED_CONCURRENCY, connectionLimitsFor } from "../../src/control-plane/limits.js";
import { DEFAULT_RUN_QUOTA } from "../../src/control-plane/run-quota.js";

const doc = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");
const limits = doc.slice(doc.indexOf("### Limits"), doc.indexOf("## 4. Admin API"));
const seconds = (ms: number): string => `${ms / 1000} s`;
const mib = (bytes: number): string => `${bytes / (1024 * 1024)} MiB`;

describe("docs/protocol.md, Limits", () => {
  it("states the time limits", () => {
    const { headersTimeoutMs, requestTimeoutMs, answerTimeoutMs, longPollMarginMs, keepAliveTimeoutMs } =
      DEFAULT_LIMITS;
    for (const ms of [headersTimeoutMs, requestTimeoutMs, answerTimeoutMs, keepAliveTimeoutMs])
      expect(limits).toContain(`| ${seconds(ms)} |`);
    expect(limits).toContain(`(at most 300 s) + ${seconds(longPollMarginMs)}`);
  });

  it("states the connection caps, as --max-connections derives them", () => {
    const c = DEFAULT_CONNECTION_LIMITS;
    expect(connectionLimitsFor(c.maxConnections)).toEqual(c);
    expect(limits).toContain(`| ${c.maxConnections} (\`--max-connections\`) |`);
    expect(limits).toContain(`a quarter of \`--max-connections\`, at most ${c.maxUnproven}`);
    expect(limits).toContain(`| ${c.maxUnprovenPerAddress} (at most the cap above) |`);
    expect(limits).toContain(`| ${c.maxPerIdentity} | its oldest idle one`);
  });

  it("states the rates", () => {
    const { agent, enrollment, authFailures, admin } = DEFAULT_LIMITS.rates;
    expect(limits).toContain(
      `${agent.perSecond} requests a second, bursts of ${agent.burst}, per run slot of its registered \`concurrency\` (at most ${MAX_SCALED_CONCURRENCY} slots)`,
    );
    expect(limits).toContain(`${enrollment.perSecond} a second, bursts of ${enrollment.burst} |`);
    expect(limits).toContain(`${authFailures.perSecond} a second, bursts of ${authFailures.burst};`);
    expect(limits).toContain(`${admin.perSecond} a second, bursts of ${admin.burst} |`);
  });

  it("states the per-run caps", () => {
    const q = DEFAULT_RUN_QUOTA;
    expect(limits).toContain(`| ${q.maxEventsPerRun} events, or ${mib(q.maxEventBytesPerRun)} of their JSON |`);
    expect(limits).toContain(
      `| ${q.maxLogEntriesPerRun.toLocaleString("en")} entries (an empty chunk is an entry), or ${mib(q.maxLogBytesPerRun)} of text (UTF-8) |`,
    );
  });
});
