/**
 * What /readyz and /metrics report as the daemon's hooks fire, with a test clock: readiness
 * needs a key, a registration and a recent poll, and says why not in stable reason codes only
 * (/readyz answers without authentication: no agent id, no error text); the registered gauge
 * follows the registration both ways.
 */
import { describe, expect, it } from "vitest";
import type { DaemonObserver } from "../../src/daemon/observer.js";
import { AgentStatus, combineObservers } from "../../src/ops/agent-status.js";
import { startHealthServer } from "../../src/ops/health-server.js";
import { AgentMetrics } from "../../src/ops/metrics.js";

describe("readiness and metrics", () => {
  it("is ready only with a key, a registration and a recent poll, and names what is missing by code", () => {
    let now = 1_000_000;
    const status = new AgentStatus(() => now, 60_000);
    const hooks: DaemonObserver = status;
    expect(status.readiness()).toEqual({ ready: false, reasons: ["no_keys", "not_registered"], isolation: "unknown" });
    hooks.keysLoaded(1);
    hooks.pollFailed("network", "CONTROL_PLANE_UNAVAILABLE", "cannot reach the control plane");
    expect(status.readiness()).toEqual({ ready: false, reasons: ["not_registered"], isolation: "unknown" });
    hooks.registered("agent-1");
    expect(status.readiness()).toEqual({ ready: true, reasons: [], isolation: "unknown" });
    now += 61_000;
    expect(status.readiness()).toEqual({ ready: false, reasons: ["control_plane_unreachable"], isolation: "unknown" });
    hooks.pollSucceeded();
    expect(status.readiness()).toEqual({ ready: true, reasons: [], isolation: "unknown" });
    hooks.unregistered();
    expect(status.readiness()).toEqual({ ready: false, reasons: ["not_registered"], isolation: "unknown" });
  });

  it("/readyz shows no agent id and no error text to anyone who asks", async () => {
    const status = new AgentStatus(() => 0, 60_000);
    status.isolationIs("sandbox");
    const server = await startHealthServer("127.0.0.1", 0, status, new AgentMetrics("9.9.9"));
    try {
      const hooks: DaemonObserver = status;
      hooks.keysLoaded(1);
      hooks.registered("agent-7f3a-secret-id");
      hooks.unregistered();
      hooks.pollFailed("rejected", "CONTROL_PLANE_UNAUTHORIZED", "the control plane refused token tok-PROBE (401)");
      const res = await fetch(`${server.url}/readyz`);
      const text = await res.text();
      expect(res.status).toBe(503);
      expect(JSON.parse(text)).toEqual({ ready: false, reasons: ["not_registered"], isolation: "sandbox" });
      for (const leak of ["agent-7f3a", "CONTROL_PLANE_UNAUTHORIZED", "tok-PROBE", "401"])
        expect(text).not.toContain(leak);
    } finally {
      await server.close();
    }
  });

  it("counts runs, wipes and pre-flight results, and the registered gauge goes back to 0", async () => {
    const metrics = new AgentMetrics("9.9.9");
    const status = new AgentStatus(() => 0, 60_000);
    const both = combineObservers(status, metrics);
    both.registered("agent-1");
    both.runStarted("run-1");
    both.preflightChecked("refused");
    both.wiped(true);
    both.runFinished("run-1", "failed", "PREFLIGHT_FAILED");
    let text = await metrics.registry.metrics();
    expect(text).toMatch(/^oci_cred_agent_registered 1$/m);
    expect(text).toMatch(/^oci_cred_agent_runs_total\{outcome="failed"\} 1$/m);
    expect(text).toMatch(/^oci_cred_agent_wipes_total\{result="ok"\} 1$/m);
    expect(text).toMatch(/^oci_cred_agent_preflight_checks_total\{result="refused"\} 1$/m);
    expect(text).toMatch(/^oci_cred_agent_active_runs 0$/m);
    expect(text).toMatch(/^oci_cred_agent_build_info\{version="9\.9\.9",node="v\d+/m);
    both.unregistered();
    text = await metrics.registry.metrics();
    expect(text).toMatch(/^oci_cred_agent_registered 0$/m);
  });
});
