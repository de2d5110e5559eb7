/**
 * Prometheus metrics through prom-client (docs/operations.md lists them with alerts worth
 * setting). A DaemonObserver: the daemon reports, this counts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { DaemonObserver } from "../daemon/observer.js";
import type { Outcome, Phase } from "../protocol/agent-api.js";

export class AgentMetrics implements DaemonObserver {
  readonly registry = new Registry();
  private readonly runs = new Counter({
    name: "oci_cred_agent_runs_total",
    help: "Runs finished, by outcome.",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  private readonly phaseSeconds = new Histogram({
    name: "oci_cred_agent_phase_duration_seconds",
    help: "Duration of tofu phases.",
    labelNames: ["phase", "result"],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers: [this.registry],
  });
  private readonly pickupSeconds = new Histogram({
    name: "oci_cred_agent_pickup_latency_seconds",
    help: "From the run being queued (control plane clock) to its credentials in place (agent clock).",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  private readonly credentials = new Counter({
    name: "oci_cred_agent_credentials_written_total",
    help: "Registry credentials written into run directories.",
    registers: [this.registry],
  });
  private readonly preflight = new Counter({
    name: "oci_cred_agent_preflight_checks_total",
    help: "Pre-flight checks of exported credentials before init, by result (ok, cached, anonymous, skipped, unreachable, refused).",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly wipes = new Counter({
    name: "oci_cred_agent_wipes_total",
    help: "Credential wipes, by result (ok, failed).",
    labelNames: ["result"],
    registers: [this.registry],
  });
  private readonly active = new Gauge({
    name: "oci_cred_agent_active_runs",
    help: "Runs in progress.",
    registers: [this.registry],
  });
  private readonly pollErrors = new Counter({
    name: "oci_cred_agent_poll_errors_total",
    help: "Failed exchanges with the control plane, by kind.",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  private readonly registeredGauge = new Gauge({
    name: "oci_cred_agent_registered",
    help: "1 when registered with the control plane.",
    registers: [this.registry],
  });
  private readonly keys = new Gauge({
    name: "oci_cred_agent_keys_loaded",
    help: "Private keys loaded.",
    registers: [this.registry],
  });

  private readonly isolation = new Gauge({
    name: "oci_cred_agent_isolation",
    help: "1 for what runs' phases run in: mode sandbox, runner or none (none isolates nothing).",
    labelNames: ["mode"],
    registers: [this.registry],
  });

  /** What phases run in, once the executor is set up. */
  isolationIs(mode: string): void {
    this.isolation.reset();
    this.isolation.set({ mode }, 1);
  }

  constructor(version: string) {
    new Gauge({
      name: "oci_cred_agent_build_info",
      help: "Build information.",
      labelNames: ["version", "node"],
      registers: [this.registry],
    }).set({ version, node: process.version }, 1);
    collectDefaultMetrics({ register: this.registry, prefix: "oci_cred_agent_" });
    for (const outcome of ["succeeded", "failed", "canceled"]) this.runs.inc({ outcome }, 0);
    for (const result of ["ok", "failed"]) this.wipes.inc({ result }, 0);
    for (const result of ["ok", "refused", "unreachable"]) this.preflight.inc({ result }, 0);
  }

  registered(): void {
    this.registeredGauge.set(1);
  }
  unregistered(): void {
    this.registeredGauge.set(0);
  }
  keysLoaded(count: number): void {
    this.keys.set(count);
  }
  pollSucceeded(): void {
    // Successes are visible as the absence of errors and as readiness.
  }
  pollFailed(kind: string): void {
    this.pollErrors.inc({ kind });
  }
  runStarted(): void {
    this.active.inc();
  }
  pickup(ms: number): void {
    this.pickupSeconds.observe(ms / 1000);
  }
  credentialsWritten(count: number): void {
    this.credentials.inc(count);
  }
  preflightChecked(result: string): void {
    this.preflight.inc({ result });
  }
  phaseFinished(phase: Phase, ms: number, ok: boolean): void {
    this.phaseSeconds.observe({ phase, result: ok ? "ok" : "failed" }, ms / 1000);
  }
  wiped(ok: boolean): void {
    this.wipes.inc({ result: ok ? "ok" : "failed" });
  }
  runFinished(_runId: string, outcome: Outcome): void {
    this.active.dec();
    this.runs.inc({ outcome });
  }
}
