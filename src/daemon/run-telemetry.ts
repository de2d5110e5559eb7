/**
 * What one run tells operators and the control plane: its log lines (event names are part of the
 * interface, docs/operations.md), its events (batched to the control plane), its phase output
 * (shipped in chunks) and the daemon's observer hooks (metrics, readiness). The run executor
 * says what happened; this decides how it is told. Never a secret: registries, integration ids
 * and codes only, and phase output passes the redactor first.
 */
import type { Logger } from "pino";
import { AgentError, isAgentError } from "../core/errors.js";
import { anonymousDockerHubSources } from "../core/oci-source-checks.js";
import type { Redactor } from "../core/redactor.js";
import type {
  MintedRegistry,
  RunCredentials,
  WipeOutcome,
  WrittenCredentials,
} from "../credentials/run-credentials.js";
import type { OciSource } from "../fs/oci-sources.js";
import type { CompleteRequest, Lease, LogChunk, Outcome, Phase, RunEvent } from "../protocol/agent-api.js";
import type { PreflightOutcome } from "../registry/preflight.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import { EventBatcher } from "./event-batcher.js";
import { LogShipper } from "./log-shipper.js";
import type { DaemonObserver } from "./observer.js";
import type { PhaseResult } from "../execution/phase-executor.js";

export interface RunTelemetryDeps {
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly observer: DaemonObserver;
  readonly redactor: Redactor;
}

const ms = (value: number): number => Number(value.toFixed(3));

/** Whether the control plane refused a request as over one of a run's limits (`code`). */
function limitReached(error: unknown, code: string): error is AgentError<"CONTROL_PLANE_REJECTED"> {
  return isAgentError(error, "CONTROL_PLANE_REJECTED") && error.details.api_code === code;
}

export class RunTelemetry {
  readonly log: Logger;
  readonly phases: CompleteRequest["phases"][number][] = [];
  private readonly events: EventBatcher;
  private readonly started = performance.now();

  constructor(
    private readonly lease: Lease,
    private readonly deps: RunTelemetryDeps,
  ) {
    // The lease id is a capability (it acts on the run, with the agent's credential): kept off
    // info lines, logged once at debug.
    this.log = deps.log.child({ run_id: lease.run.id });
    this.log.debug({ event: "lease_id", lease_id: lease.lease_id }, "lease id");
    this.events = new EventBatcher((batch) => this.sendEvents(batch));
    deps.observer.runStarted(lease.run.id);
    this.log.info({ event: "run_leased", phases: lease.run.phases, queued_at: lease.run.queued_at }, "leased run");
  }

  configurationExtracted(extracted: { files: number; bytes: number }): void {
    this.log.info(
      { event: "configuration_extracted", files: extracted.files, bytes: extracted.bytes },
      "configuration extracted",
    );
  }

  /** The scan for `oci://` sources failed: pre-flight goes on without pull scopes. */
  sourcesUnreadable(code: string): void {
    this.log.warn(
      { event: "sources_scan_failed", code },
      `could not scan the configuration for oci:// sources (${code}); pre-flight checks the registries without pull scopes`,
    );
  }

  /** OpenTofu pulls `oci://docker.io/...` anonymously, whatever credentials exist. */
  sourcesFound(sources: readonly OciSource[]): void {
    for (const { source: s, fix } of anonymousDockerHubSources(sources)) {
      this.log.warn(
        { event: "docker_hub_source", file: s.file, source: s.address, code: "DOCKER_HUB_ANONYMOUS" },
        `${s.file}: ${s.address} is pulled anonymously by OpenTofu, whatever credentials exist; write it as ${fix}`,
      );
    }
  }

  credentialsOpened(credentials: RunCredentials): void {
    for (const ig of credentials.ignored) {
      this.log.warn(
        {
          event: "integration_ignored",
          integration_id: ig.integration_id,
          integration_name: ig.integration_name,
          code: ig.code,
        },
        ig.reason,
      );
    }
  }

  /** Credentials minted for cloud_auth entries (at the start, or renewed before a phase); never the secret. */
  cloudCredentialsMinted(minted: readonly MintedRegistry[], renewed: boolean): void {
    for (const m of minted)
      this.log.info(
        {
          event: renewed ? "cloud_credentials_renewed" : "cloud_credentials_minted",
          registry: m.host,
          integration_id: m.integration_id,
          provider: m.provider,
          identity: m.identity,
          expires_at: m.expires_at,
        },
        `${renewed ? "renewed" : "minted"} a ${m.provider} registry credential for ${m.host} as ${m.identity}, valid until ${m.expires_at}`,
      );
  }

  preflightPassed(outcomes: readonly PreflightOutcome[], durationMs: number): void {
    for (const o of outcomes) {
      this.deps.observer.preflightChecked(o.result);
      const fields = { event: "preflight", registry: o.host, integration_id: o.integration_id, result: o.result };
      if (o.result === "unreachable")
        this.log.warn(fields, `pre-flight check for ${o.host} not conclusive: ${o.detail}`);
      else this.log.info(fields, `pre-flight check for ${o.host}: ${o.result} (${o.detail})`);
    }
    const unverified = outcomes.filter((o) => o.result === "unreachable").length;
    this.log.info(
      { event: "preflight_finished", registries: outcomes.length, unverified, duration_ms: Math.round(durationMs) },
      unverified === 0
        ? "pre-flight checks passed"
        : `pre-flight checks done; ${unverified} registr${unverified === 1 ? "y" : "ies"} could not be verified`,
    );
  }

  preflightRefused(error: AgentError<"PREFLIGHT_FAILED">): void {
    this.deps.observer.preflightChecked("refused");
    const d = error.details;
    this.log.error(
      {
        event: "preflight",
        registry: d.registry,
        integration_id: d.integration_id,
        result: "refused",
        status: d.status,
        code: error.code,
      },
      error.message,
    );
  }

  credentialsWritten(credentials: RunCredentials, written: WrittenCredentials, durationMs: number): void {
    const registries = credentials.registries;
    const queuedAt = Date.parse(this.lease.run.queued_at);
    const pickupMs = Number.isFinite(queuedAt) ? Date.now() - queuedAt : undefined;
    if (pickupMs !== undefined) this.deps.observer.pickup(pickupMs);
    this.deps.observer.credentialsWritten(registries.length);
    for (const r of registries) {
      this.log.info(
        {
          event: "credentials_written",
          registry: r.host,
          integration_id: r.integration_id,
          integration_name: r.integration_name,
        },
        `credentials for ${r.host} from integration ${r.integration_id}`,
      );
    }
    this.log.info(
      {
        event: "credentials_ready",
        registries: registries.length,
        duration_ms: ms(durationMs),
        pickup_ms: pickupMs ?? null,
        bundle_id: credentials.bundleId,
      },
      `credentials in place for ${registries.length} registr${registries.length === 1 ? "y" : "ies"}`,
    );
    for (const w of written.warnings) this.log.warn({ event: "credentials_warning" }, w);
    this.events.push({
      type: "credentials_written",
      at: new Date().toISOString(),
      pickup_ms: pickupMs ?? null,
      registries,
      ignored: credentials.ignored.map(({ integration_id, code }) => ({ integration_id, code })),
    });
  }

  /** A phase starts: its output goes, redacted, to the log and to the control plane. */
  phaseStarted(phase: Phase): PhaseOutput {
    const plog = this.log.child({ phase });
    plog.info({ event: "phase_started" }, `${phase} started`);
    this.events.push({ type: "phase_started", at: new Date().toISOString(), phase });
    const shipper = new LogShipper((p, seq, text) => this.sendLog({ phase: p, seq, text }), phase);
    return {
      write: (text) => {
        const clean = this.deps.redactor.redact(text);
        shipper.push(clean);
        for (const line of clean.split("\n")) if (line !== "") plog.info({ event: "phase_output" }, line);
      },
      finished: async (result) => {
        const shipped = await shipper.close();
        if (shipped.failedChunks > 0) {
          plog.warn(
            { event: "log_upload_failed", chunks: shipped.chunks, failed_chunks: shipped.failedChunks },
            `${shipped.failedChunks} of ${shipped.chunks} chunks of ${phase} output could not be delivered to the control plane`,
          );
        }
        const durationMs = Math.round(result.durationMs);
        const ok = result.exitCode === 0 && !result.canceled;
        this.phases.push({ name: phase, exit_code: result.exitCode, signal: result.signal, duration_ms: durationMs });
        this.deps.observer.phaseFinished(phase, result.durationMs, ok);
        plog.info(
          { event: "phase_finished", exit_code: result.exitCode, signal: result.signal, duration_ms: durationMs },
          `${phase} finished`,
        );
        this.events.push({
          type: "phase_finished",
          at: new Date().toISOString(),
          phase,
          exit_code: result.exitCode,
          signal: result.signal,
          duration_ms: durationMs,
        });
      },
    };
  }

  /**
   * The control plane keeps a bounded log and bounded events per run (docs/protocol.md, Limits).
   * Once it refuses one as over its limit, nothing more of that kind is sent for this run: the
   * output stays in the agent's own log, and the run goes on (a refusal never fails a run).
   */
  private logsRefused = false;
  private eventsRefused = false;
  /** What a chunk or a batch not sent after such a refusal counts as (it is counted, not logged). */
  private readonly refusal = { kind: "rejected", status: 422 } as const;

  private async sendLog(chunk: LogChunk): Promise<void> {
    if (this.logsRefused)
      throw new AgentError(
        "CONTROL_PLANE_REJECTED",
        "not sent: the control plane's log limit for this run was reached",
        this.refusal,
      );
    try {
      await this.deps.client.log(this.lease.lease_id, chunk);
    } catch (error) {
      if (limitReached(error, "LOG_LIMIT_REACHED")) {
        this.logsRefused = true;
        this.log.warn(
          { event: "log_limit_reached", code: error.code, api_code: "LOG_LIMIT_REACHED" },
          "the control plane keeps no more of this run's output (LOG_LIMIT_REACHED); the rest is only in this log",
        );
      }
      throw error;
    }
  }

  private async sendEvents(batch: RunEvent[]): Promise<void> {
    if (this.eventsRefused)
      throw new AgentError(
        "CONTROL_PLANE_REJECTED",
        "not sent: the control plane's event limit for this run was reached",
        this.refusal,
      );
    try {
      await this.deps.client.events(this.lease.lease_id, batch);
    } catch (error) {
      if (limitReached(error, "EVENT_LIMIT_REACHED")) {
        this.eventsRefused = true;
        this.log.warn(
          { event: "events_limit_reached", code: error.code, api_code: "EVENT_LIMIT_REACHED" },
          "the control plane keeps no more of this run's events (EVENT_LIMIT_REACHED); the run goes on",
        );
      }
      throw error;
    }
  }

  /** The run's wipe listener: every wipe outcome is counted and logged, a failure as an error. */
  readonly wiped = (outcome: WipeOutcome): void => {
    this.deps.observer.wiped(outcome.ok);
    if (outcome.ok)
      this.log.info(
        { event: "credentials_wiped", files: outcome.removed.length, duration_ms: ms(outcome.durationMs) },
        "credentials wiped",
      );
    else this.log.error({ event: "wipe_failed", code: outcome.error.code }, outcome.error.message);
  };

  workspaceNotRemoved(code: string): void {
    this.log.error({ event: "workspace_cleanup_failed", code }, "could not remove the run's workspace");
  }

  /** Something no rule expected: logged with the error, then the run ends as INTERNAL. */
  unexpected(error: unknown): void {
    this.log.error({ event: "run_error", err: error }, "unexpected failure");
  }

  finished(outcome: Outcome, failure: AgentError | undefined): void {
    const durationMs = Math.round(performance.now() - this.started);
    if (failure) {
      this.log[outcome === "canceled" ? "warn" : "error"](
        { event: "run_finished", outcome, code: failure.code, duration_ms: durationMs },
        failure.message,
      );
    } else {
      this.log.info({ event: "run_finished", outcome, duration_ms: durationMs }, "run succeeded");
    }
    this.deps.observer.runFinished(this.lease.run.id, outcome, failure?.code);
  }

  /** Delivers the pending events (before the completion, so the control plane has them all). */
  async close(): Promise<void> {
    const { lostEvents } = await this.events.close();
    if (lostEvents > 0)
      this.log.warn(
        { event: "events_upload_failed", events: lostEvents },
        `${lostEvents} run events could not be delivered to the control plane`,
      );
  }
}

export interface PhaseOutput {
  write(text: string): void;
  finished(result: PhaseResult): Promise<void>;
}
