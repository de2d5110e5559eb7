/**
 * What /readyz and /metrics report as the daemon's hooks fire, with a test clock: readiness
 * needs a key, a registration and a recent poll, and says why not; the registered gauge follows
 * the registration both ways.
 */
import { describe, expect, it } from "vitest";
import { AgentStatus, combineObservers } from "../../src/ops/agent-status.js";
import { AgentMetrics } from "../../src/ops/metrics.js";

describe("readiness and metrics", () => {
  it("is ready only with a key, a registration and a recent poll, and names what is missing", () => {
    let now = 1_000_000;
    const status = new AgentStatus(() => now, 60_000);
    expect(status.readiness().reasons).toEqual(["no private key is loaded", "not registered with the control plane"]);
    status.keysLoaded(1);
    status.pollFailed("network", "CONTROL_PLANE_UNAVAILABLE", "cannot reach the control plane");
    expect(status.readiness()).toMatchObject({
      ready: false,
      reasons: ["not registered with the control plane (CONTROL_PLANE_UNAVAILABLE: cannot reach the control plane)"],
    });
    status.registered("agent-1");
    expect(status.readiness()).toMatchObject({ ready: true, agent_id: "agent-1" });
    now += 61_000;
    expect(status.readiness().ready).toBe(false);
    expect(status.readiness().reasons[0]).toMatch(/no successful poll of the control plane for 61 s/);
    status.pollSucceeded();
    expect(status.readiness().ready).toBe(true);
    status.unregistered();
    expect(status.readiness()).toMatchObject({ ready: false, agent_id: null });
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
