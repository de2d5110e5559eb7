/**
 * Carries one leased run from lease to completion: configuration, credentials, phases,
 * heartbeats, cancellation, wipe, report. Whatever ends the run (success, a failing phase,
 * cancellation, a lost lease, a timeout, shutdown, a refusal), the credentials and the
 * workspace are wiped before the outcome is reported.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import { materializeRun } from "../app/materialize-run.js";
import type { KeyRing } from "../keys/key-ring.js";
import { AgentError, isAgentError, type ErrorCode } from "../core/errors.js";
import type { Redactor } from "../core/redactor.js";
import type { ReplayCache } from "../core/replay-cache.js";
import type { ArchiveLimits } from "../core/tar-archive.js";
import type { OperatorCliConfigSource } from "../core/tofu-cli-config.js";
import { extractConfiguration, verifyChecksum } from "../fs/config-workspace.js";
import { wipeRunDir } from "../fs/run-dir.js";
import type { FileSystem } from "../fs/secure-fs.js";
import { MAX_LOG_CHUNK_BYTES, type CompleteRequest, type Lease, type Outcome, type Phase, type RunEvent } from "../protocol/agent-api.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import type { DaemonObserver } from "./observer.js";
import { runPhase, type TofuCommand } from "./phase-runner.js";
import type { PreflightChecker } from "../registry/preflight.js";
import { findOciSources } from "../fs/oci-sources.js";
import { anonymousDockerHubSources, repositoriesByRegistry } from "../core/oci-source-checks.js";
import type { SelectedCredential } from "../core/credential-selection.js";

export interface RunSettings {
  readonly credentialsDir: string;
  readonly workspacesDir: string;
  readonly tofu: TofuCommand;
  /** Environment every phase starts from (the agent's, minus its own secrets). */
  readonly baseEnv: NodeJS.ProcessEnv;
  readonly heartbeatIntervalMs: number;
  readonly cancelGraceMs: number;
  readonly runTimeoutMs: number;
  readonly archiveLimits: ArchiveLimits;
  readonly maxBundleLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxBundleBytes: number;
  /** Check each exported credential against its registry before init (`--no-preflight` turns it off). */
  readonly preflight: boolean;
}

export interface RunDeps {
  readonly client: ControlPlaneClient;
  readonly agentId: string;
  readonly keys: () => KeyRing;
  readonly replayCache: ReplayCache;
  readonly baseDockerConfig: () => { path: string; text: string } | undefined;
  readonly tofuCliConfigSources: () => readonly OperatorCliConfigSource[];
  readonly fs: FileSystem;
  readonly log: Logger;
  readonly redactor: Redactor;
  readonly observer: DaemonObserver;
  readonly settings: RunSettings;
  readonly preflight?: PreflightChecker;
}

const OUTCOME_FOR: Partial<Record<ErrorCode, Outcome>> = { RUN_CANCELED: "canceled", AGENT_SHUTDOWN: "canceled" };

/** At most this much of a phase's output waits to be sent to the control plane. */
export const MAX_QUEUED_LOG_BYTES = 4 * 1024 * 1024;

/**
 * Batches a phase's output into bounded chunks for the control plane. What waits to be sent is
 * bounded too: a tofu that prints faster than the control plane takes its output (a provider
 * in a loop, a slow control plane) must not grow the agent's memory with everything it prints.
 * Output that does not fit is counted, not kept, and one line says how much was left out.
 */
class LogShipper {
  private buffer = "";
  private seq = 0;
  private sending: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** Characters buffered or handed to send() and not yet done. */
  private queued = 0;
  private dropped = 0;

  constructor(
    private readonly send: (phase: Phase, seq: number, text: string) => Promise<void>,
    private readonly phase: Phase,
    private readonly maxQueued: number = MAX_QUEUED_LOG_BYTES,
  ) {}

  push(text: string): void {
    if (this.queued + text.length > this.maxQueued) {
      this.dropped += text.length;
      return;
    }
    if (this.dropped > 0) this.noteDropped();
    this.append(text);
  }

  private noteDropped(): void {
    this.append(`[oci-cred-agent: ${this.dropped} characters of ${this.phase} output were not sent: the control plane took them more slowly than tofu printed them]\n`);
    this.dropped = 0;
  }

  private append(text: string): void {
    this.buffer += text;
    this.queued += text.length;
    if (this.buffer.length >= MAX_LOG_CHUNK_BYTES / 2) this.flush();
    else this.timer ??= setTimeout(() => {
      this.flush();
    }, 250);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.buffer.length > 0) {
      const text = this.buffer.slice(0, MAX_LOG_CHUNK_BYTES / 2);
      this.buffer = this.buffer.slice(text.length);
      const seq = this.seq++;
      this.sending = this.sending
        .then(() => this.send(this.phase, seq, text))
        .catch(() => undefined)
        .then(() => {
          this.queued -= text.length;
        });
    }
  }

  async close(): Promise<void> {
    if (this.dropped > 0) this.noteDropped();
    this.flush();
    await this.sending;
  }
}

/**
 * Batches a run's events: they reach the control plane within 250 ms, in order, in one
 * request per batch (a short run's events all travel in one request before completion).
 */
class EventBuffer {
  private pending: RunEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();

  constructor(private readonly send: (events: RunEvent[]) => Promise<void>) {}

  push(event: RunEvent): void {
    this.pending.push(event);
    this.timer ??= setTimeout(() => {
      this.flush();
    }, 250);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.sending = this.sending.then(() => this.send(batch)).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.flush();
    await this.sending;
  }
}

export async function executeRun(lease: Lease, deps: RunDeps, shutdown: AbortSignal): Promise<Outcome> {
  const { client, log: baseLog, settings, observer } = deps;
  const runId = lease.run.id;
  const log = baseLog.child({ run_id: runId, lease_id: lease.lease_id });
  const credentialsDir = join(settings.credentialsDir, runId);
  const workspaceDir = join(settings.workspacesDir, runId);
  const started = performance.now();
  observer.runStarted(runId);
  log.info({ event: "run_leased", phases: lease.run.phases, queued_at: lease.run.queued_at }, "leased run");

  // One abort for every way a run can end early; its reason is the AgentError that ended it.
  const abort = new AbortController();
  const end = (error: AgentError): void => {
    if (!abort.signal.aborted) abort.abort(error);
  };
  const onShutdown = (): void => {
    end(new AgentError("AGENT_SHUTDOWN", "the agent is shutting down and canceled the run"));
  };
  const throwIfEnded = (): void => {
    if (abort.signal.aborted) throw abort.signal.reason as AgentError;
  };
  if (shutdown.aborted) onShutdown();
  shutdown.addEventListener("abort", onShutdown, { once: true });
  const timeout = setTimeout(() => {
    end(new AgentError("RUN_TIMEOUT", `the run exceeded --run-timeout (${Math.round(settings.runTimeoutMs / 1000)} s) and was canceled`));
  }, settings.runTimeoutMs);

  // Heartbeats run until the outcome is reported, not only until the run ends: a completion
  // delayed by an outage must still find the lease held.
  const heartbeatStop = new AbortController();
  const heartbeats = heartbeatLoop(lease, deps, heartbeatStop.signal, end);
  const events = new EventBuffer((batch) => client.events(lease.lease_id, batch));
  const phases: CompleteRequest["phases"] = [];
  let failure: AgentError | undefined;
  let removeSecrets: (() => void) | undefined;
  let credentialsWritten = false;

  try {
    const inline = lease.run.configuration.inline_base64;
    const archive = inline !== undefined ? Buffer.from(inline, "base64") : await client.configuration(lease.lease_id, settings.archiveLimits.maxBytes + 1024 * 1024);
    verifyChecksum(archive, lease.run.configuration.sha256);
    const extracted = await extractConfiguration(archive, workspaceDir, settings.archiveLimits);
    log.info({ event: "configuration_extracted", files: extracted.files, bytes: extracted.bytes }, "configuration extracted");
    throwIfEnded();

    const base = deps.baseDockerConfig();
    credentialsWritten = true;
    const materializeStarted = performance.now();
    const result = await materializeRun({
      bundle: Buffer.from(lease.bundle, "utf8"),
      keys: deps.keys(),
      agentId: deps.agentId,
      runId,
      runDir: credentialsDir,
      nowMs: Date.now(),
      maxLifetimeSeconds: settings.maxBundleLifetimeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      maxBundleBytes: settings.maxBundleBytes,
      replayCache: deps.replayCache,
      ...(base === undefined ? {} : { baseDockerConfig: base }),
      tofuCliConfigSources: deps.tofuCliConfigSources(),
      fs: deps.fs,
    });
    const materializeMs = performance.now() - materializeStarted;
    removeSecrets = deps.redactor.add(result.secretValues);
    const queuedAt = Date.parse(lease.run.queued_at);
    const pickupMs = Number.isFinite(queuedAt) ? Date.now() - queuedAt : undefined;
    if (pickupMs !== undefined) observer.pickup(pickupMs);
    observer.credentialsWritten(result.registries.length);
    for (const r of result.registries) {
      log.info({ event: "credentials_written", registry: r.host, integration_id: r.integration_id, integration_name: r.integration_name }, `credentials for ${r.host} from integration ${r.integration_id}`);
    }
    log.info(
      { event: "credentials_ready", registries: result.registries.length, duration_ms: Number(materializeMs.toFixed(3)), pickup_ms: pickupMs ?? null, bundle_id: result.bundleId },
      `credentials in place for ${result.registries.length} registr${result.registries.length === 1 ? "y" : "ies"}`,
    );
    for (const ig of result.ignored) {
      log.warn({ event: "integration_ignored", integration_id: ig.integration_id, integration_name: ig.integration_name, code: ig.code }, ig.reason);
    }
    for (const w of result.warnings) log.warn({ event: "credentials_warning" }, w);
    events.push({ type: "credentials_written", at: new Date().toISOString(), pickup_ms: pickupMs ?? null, registries: result.registries, ignored: result.ignored.map(({ integration_id, code }) => ({ integration_id, code })) });
    await checkBeforeInit(result.credentials, workspaceDir, deps, log, abort.signal);

    const env: NodeJS.ProcessEnv = { ...settings.baseEnv, ...result.env, TF_IN_AUTOMATION: "1", TF_INPUT: "0" };
    let planned = false;
    for (const phase of lease.run.phases) {
      throwIfEnded();
      const plog = log.child({ phase });
      plog.info({ event: "phase_started" }, `${phase} started`);
      events.push({ type: "phase_started", at: new Date().toISOString(), phase });
      const shipper = new LogShipper((p, seq, text) => client.log(lease.lease_id, { phase: p, seq, text }), phase);
      const outcome = await runPhase({
        command: settings.tofu,
        phase,
        planned,
        cwd: workspaceDir,
        env,
        signal: abort.signal,
        graceMs: settings.cancelGraceMs,
        redact: (text) => deps.redactor.redact(text),
        longestSecret: () => deps.redactor.longest,
        onOutput: (text) => {
          const clean = deps.redactor.redact(text);
          shipper.push(clean);
          for (const line of clean.split("\n")) if (line !== "") plog.info({ event: "phase_output" }, line);
        },
      });
      await shipper.close();
      phases.push({ name: phase, exit_code: outcome.exitCode, signal: outcome.signal, duration_ms: Math.round(outcome.durationMs) });
      const ok = outcome.exitCode === 0 && !outcome.canceled;
      observer.phaseFinished(phase, outcome.durationMs, ok);
      plog.info({ event: "phase_finished", exit_code: outcome.exitCode, signal: outcome.signal, duration_ms: Math.round(outcome.durationMs) }, `${phase} finished`);
      events.push({ type: "phase_finished", at: new Date().toISOString(), phase, exit_code: outcome.exitCode, signal: outcome.signal, duration_ms: Math.round(outcome.durationMs) });
      if (outcome.canceled) throw abort.signal.reason;
      if (!ok) {
        throw new AgentError("PHASE_FAILED", `tofu ${phase} ${outcome.signal ? `was killed by ${outcome.signal}` : `exited with code ${outcome.exitCode ?? "?"}`}`, {
          phase,
          exit_code: outcome.exitCode,
        });
      }
      if (phase === "plan") planned = true;
    }
  } catch (error) {
    failure = isAgentError(error) ? error : new AgentError("INTERNAL", `unexpected failure while running: ${error instanceof Error ? error.name : "error"}`);
    if (failure.code === "INTERNAL") log.error({ event: "run_error", err: error }, "unexpected failure");
  } finally {
    clearTimeout(timeout);
    shutdown.removeEventListener("abort", onShutdown);
  }

  // Every ending comes through here: wipe first, then report.
  let wiped = true;
  if (credentialsWritten) {
    try {
      const wipeStarted = performance.now();
      const report = await wipeRunDir(deps.fs, credentialsDir);
      observer.wiped(true);
      log.info({ event: "credentials_wiped", files: report.removed.length, duration_ms: Number((performance.now() - wipeStarted).toFixed(3)) }, "credentials wiped");
    } catch (error) {
      wiped = false;
      observer.wiped(false);
      log.error({ event: "wipe_failed", code: isAgentError(error) ? error.code : "WIPE_FAILED" }, isAgentError(error) ? error.message : "wipe failed");
    }
  }
  await rm(workspaceDir, { recursive: true, force: true }).catch((error: unknown) => {
    log.error({ event: "workspace_cleanup_failed", err: error }, "could not remove the run's workspace");
  });
  abort.abort(new AgentError("RUN_CANCELED", "run finished"));

  const outcome: Outcome = failure === undefined ? "succeeded" : (OUTCOME_FOR[failure.code] ?? "failed");
  const durationMs = Math.round(performance.now() - started);
  if (failure) {
    log[outcome === "canceled" ? "warn" : "error"]({ event: "run_finished", outcome, code: failure.code, duration_ms: durationMs }, failure.message);
  } else {
    log.info({ event: "run_finished", outcome, duration_ms: durationMs }, "run succeeded");
  }
  removeSecrets?.();
  observer.runFinished(runId, outcome, failure?.code);

  await events.close();
  if (failure?.code !== "LEASE_LOST") {
    await reportCompletion(client, lease, {
      outcome,
      ...(failure ? { error: { code: failure.code, message: failure.message.slice(0, 4000) } } : {}),
      phases,
      credentials_wiped: wiped,
    }, log);
  }
  heartbeatStop.abort();
  await heartbeats;
  return outcome;
}

/**
 * Before init: warn about `oci://docker.io/...` sources (OpenTofu pulls them anonymously whatever
 * credentials exist), then check each exported credential against its registry. A refusal
 * throws PREFLIGHT_FAILED, which ends the run before init (and wipes).
 */
async function checkBeforeInit(credentials: readonly SelectedCredential[], workspaceDir: string, deps: RunDeps, log: Logger, signal: AbortSignal): Promise<void> {
  const sources = await findOciSources(workspaceDir).catch(() => []);
  for (const { source: s, fix } of anonymousDockerHubSources(sources)) {
    log.warn(
      { event: "docker_hub_source", file: s.file, source: s.address, code: "DOCKER_HUB_ANONYMOUS" },
      `${s.file}: ${s.address} is pulled anonymously by OpenTofu, whatever credentials exist; write it as ${fix}`,
    );
  }
  if (!deps.settings.preflight || deps.preflight === undefined || credentials.length === 0) return;
  const repositoriesByHost = repositoriesByRegistry(sources);
  const started = performance.now();
  try {
    const outcomes = await deps.preflight.check(credentials, repositoriesByHost);
    for (const o of outcomes) {
      deps.observer.preflightChecked(o.result);
      const fields = { event: "preflight", registry: o.host, integration_id: o.integration_id, result: o.result };
      if (o.result === "unreachable") log.warn(fields, `pre-flight check for ${o.host} not conclusive: ${o.detail}`);
      else log.info(fields, `pre-flight check for ${o.host}: ${o.result} (${o.detail})`);
    }
    const unverified = outcomes.filter((o) => o.result === "unreachable").length;
    log.info(
      { event: "preflight_finished", registries: outcomes.length, unverified, duration_ms: Math.round(performance.now() - started) },
      unverified === 0 ? "pre-flight checks passed" : `pre-flight checks done; ${unverified} registr${unverified === 1 ? "y" : "ies"} could not be verified`,
    );
  } catch (error) {
    if (isAgentError(error)) {
      deps.observer.preflightChecked("refused");
      const d = error.details as { integration_id?: unknown; registry?: unknown; status?: unknown };
      log.error({ event: "preflight", registry: d.registry, integration_id: d.integration_id, result: "refused", status: d.status, code: error.code }, error.message);
    }
    throw error;
  }
  if (signal.aborted) throw signal.reason as AgentError;
}

async function heartbeatLoop(lease: Lease, deps: RunDeps, signal: AbortSignal, end: (e: AgentError) => void): Promise<void> {
  let expiresAt = Date.parse(lease.expires_at);
  while (!signal.aborted) {
    try {
      await delay(deps.settings.heartbeatIntervalMs, undefined, { signal });
    } catch {
      return;
    }
    try {
      const hb = await deps.client.heartbeat(lease.lease_id);
      const next = Date.parse(hb.expires_at);
      if (Number.isFinite(next)) expiresAt = next;
      if (hb.cancel_requested) end(new AgentError("RUN_CANCELED", "the run was canceled from the control plane"));
    } catch (error) {
      if (isAgentError(error) && (error.code === "LEASE_LOST" || error.code === "CONTROL_PLANE_UNAUTHORIZED")) {
        end(error.code === "LEASE_LOST" ? error : new AgentError("LEASE_LOST", `heartbeats are refused (${error.message}); the run is aborted`));
        return;
      }
      deps.log.warn({ run_id: lease.run.id, event: "heartbeat_failed", code: isAgentError(error) ? error.code : "INTERNAL" }, "heartbeat failed; retrying");
      if (Number.isFinite(expiresAt) && Date.now() >= expiresAt) {
        end(new AgentError("LEASE_LOST", "heartbeats failed until the lease expired; the run is aborted"));
        return;
      }
    }
  }
}

async function reportCompletion(client: ControlPlaneClient, lease: Lease, body: CompleteRequest, log: Logger): Promise<void> {
  const deadline = Date.now() + 5 * 60_000;
  for (let attempt = 0; ; attempt++) {
    try {
      await client.complete(lease.lease_id, body);
      return;
    } catch (error) {
      const retryable = isAgentError(error) && error.code === "CONTROL_PLANE_UNAVAILABLE";
      if (!retryable || Date.now() > deadline) {
        log.error({ event: "completion_failed", code: isAgentError(error) ? error.code : "INTERNAL" }, "could not report the run's outcome to the control plane");
        return;
      }
      await delay(Math.min(30_000, 250 * 2 ** attempt) * Math.random());
    }
  }
}
