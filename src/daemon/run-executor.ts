/**
 * Carries one leased run from lease to completion. The outline: fetch the configuration; open
 * the credentials and check them against their registries in memory; write them; run the
 * phases; then, whatever ended the run (success, a failing phase, cancellation, a lost lease, a
 * timeout, shutdown, a refusal), wipe the credentials and the workspace before the outcome is
 * reported. How each step is told (logs, events, metrics) lives in run-telemetry.ts; heartbeats
 * and the completion in lease-keeper.ts; the ways a run ends early in run-ending.ts.
 */
import { join } from "node:path";
import type { Logger } from "pino";
import type { AgentSettings } from "../config/load-run-config.js";
import type { CloudMinter } from "../core/cloud-auth.js";
import { AgentError, errnoCode, isAgentError, type ErrorCode } from "../core/errors.js";
import { repositoriesByRegistry } from "../core/oci-source-checks.js";
import type { Redactor } from "../core/redactor.js";
import type { ReplayCache } from "../core/replay-cache.js";
import type { ArchiveLimits } from "../core/tar-archive.js";
import type { OperatorConfig } from "../credentials/operator-config.js";
import { RunCredentials } from "../credentials/run-credentials.js";
import type { OciSource } from "../fs/oci-sources.js";
import type { FileSystem } from "../fs/secure-fs.js";
import type { KeyRing } from "../keys/key-ring.js";
import type { Lease, Outcome } from "../protocol/agent-api.js";
import type { PreflightChecker } from "../registry/preflight.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import { LeaseKeeper } from "./lease-keeper.js";
import type { DaemonObserver } from "./observer.js";
import type { PhaseExecutor, RunExecution } from "../execution/phase-executor.js";
import { RunEnding } from "./run-ending.js";
import { RunTelemetry } from "./run-telemetry.js";
import { RunWorkspace } from "./run-workspace.js";

/** What every run of the agent shares; built once by the composition root. */
export interface RunResources {
  readonly keys: () => KeyRing;
  readonly replayCache: ReplayCache;
  /** The operator's base Docker config and CLI configuration, parsed once at start. */
  readonly operator: OperatorConfig;
  readonly fs: FileSystem;
  readonly redactor: Redactor;
  /** Where and inside what each phase runs (the sandbox, the runner, or none). */
  readonly executor: PhaseExecutor;
  /** Environment every phase starts from (the agent's, minus its own secrets). */
  readonly baseEnv: NodeJS.ProcessEnv;
  readonly archiveLimits: ArchiveLimits;
  readonly maxBundleBytes: number;
  /** Absent with `--no-preflight`. */
  readonly preflight?: PreflightChecker;
  /** Mints the credentials of `cloud_auth` entries from the pool's cloud identity (src/cloud/). */
  readonly cloudMinter?: CloudMinter;
}

export interface RunContext {
  readonly agentId: string;
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly observer: DaemonObserver;
  readonly settings: AgentSettings;
  /** As the control plane asked at registration. */
  readonly heartbeatIntervalMs: number;
  readonly resources: RunResources;
}

const OUTCOME_FOR: Partial<Record<ErrorCode, Outcome>> = { RUN_CANCELED: "canceled", AGENT_SHUTDOWN: "canceled" };

export async function executeRun(lease: Lease, ctx: RunContext, shutdown: AbortSignal): Promise<Outcome> {
  const { client, settings, resources } = ctx;
  const runId = lease.run.id;
  const telemetry = new RunTelemetry(lease, {
    client,
    log: ctx.log,
    observer: ctx.observer,
    redactor: resources.redactor,
  });
  const ending = new RunEnding(shutdown, settings.runTimeoutMs);
  const keeper = new LeaseKeeper(lease, {
    client,
    log: telemetry.log,
    heartbeatIntervalMs: ctx.heartbeatIntervalMs,
    onEnd: (reason) => ending.end(reason),
  });
  const workspace = new RunWorkspace(join(settings.workspacesDir, runId));
  let credentials: RunCredentials | undefined;
  let execution: RunExecution | undefined;
  const forgetSecrets: (() => void)[] = [];
  let failure: AgentError | undefined;
  try {
    telemetry.configurationExtracted(await workspace.prepare(lease, client, resources.archiveLimits, ending.signal));
    ending.throwIfEnded();
    // The agent's own work on the credentials (open, then write), pre-flight's network time aside.
    const openStarted = performance.now();
    credentials = await RunCredentials.open({
      bundle: Buffer.from(lease.bundle, "utf8"),
      keys: resources.keys(),
      agentId: ctx.agentId,
      runId,
      nowMs: Date.now(),
      maxLifetimeSeconds: settings.maxBundleLifetimeSeconds,
      clockSkewSeconds: settings.clockSkewSeconds,
      maxBytes: resources.maxBundleBytes,
      replayCache: resources.replayCache,
      onWipe: telemetry.wiped,
    });
    const openMs = performance.now() - openStarted;
    telemetry.credentialsOpened(credentials);
    // cloud_auth entries become ordinary credentials here, before pre-flight; a refusal
    // (CLOUD_AUTH_FAILED) ends the run before anything is written.
    telemetry.cloudCredentialsMinted(await credentials.mintCloud(resources.cloudMinter, ending.signal), false);
    forgetSecrets.push(resources.redactor.add(credentials.secretForms()));
    await checkBeforeInit(
      credentials,
      await scanSources(workspace, telemetry),
      resources.preflight,
      telemetry,
      ending.signal,
    );
    ending.throwIfEnded();
    const writeStarted = performance.now();
    const written = await credentials.write({
      runDir: join(settings.credentialsDir, runId),
      fs: resources.fs,
      operator: resources.operator,
    });
    telemetry.credentialsWritten(credentials, written, openMs + performance.now() - writeStarted);
    const env: NodeJS.ProcessEnv = { ...resources.baseEnv, ...written.env, TF_IN_AUTOMATION: "1", TF_INPUT: "0" };
    let planned = false;
    for (const [index, phase] of lease.run.phases.entries()) {
      ending.throwIfEnded();
      if (index > 0) {
        // A minted token with less than the cache's margin left (15 minutes, or half its lifetime
        // when shorter: CLOUD_TOKEN_REFRESH_MARGIN_MS) is minted again and the files replaced; a
        // phase that runs longer than that can still outlive its token.
        const renewed = await credentials.refresh(resources.cloudMinter, ending.signal);
        if (renewed.length > 0) {
          forgetSecrets.push(resources.redactor.add(credentials.secretForms()));
          telemetry.cloudCredentialsMinted(renewed, true);
        }
      }
      const output = telemetry.phaseStarted(phase);
      execution ??= await resources.executor.openRun({
        runId,
        workspace: workspace.dir,
        credentials: join(settings.credentialsDir, runId),
      });
      const result = await execution.runPhase({
        phase,
        planned,
        env,
        signal: ending.signal,
        graceMs: settings.cancelGraceMs,
        redact: (text) => resources.redactor.redact(text),
        longestSecret: () => resources.redactor.longest,
        onOutput: (text) => {
          output.write(text);
        },
      });
      await output.finished(result);
      if (result.canceled) throw ending.signal.reason;
      if (result.exitCode !== 0) {
        const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode ?? "?"}`;
        throw new AgentError("PHASE_FAILED", `tofu ${phase} ${how}`, { phase, exit_code: result.exitCode });
      }
      if (phase === "plan") planned = true;
    }
  } catch (error) {
    // A step stopped by the run's end may reject with its own abort error: the end's reason is the failure.
    const ended: unknown = ending.signal.aborted ? ending.signal.reason : undefined;
    failure = isAgentError(error)
      ? error
      : isAgentError(ended)
        ? ended
        : new AgentError(
            "INTERNAL",
            `unexpected failure while running: ${error instanceof Error ? error.name : "error"}`,
          );
    if (failure.code === "INTERNAL") telemetry.unexpected(error);
  } finally {
    ending.dispose();
  }

  // Every ending comes through here: the phases' processes and private files, then the
  // credentials and the workspace; then report.
  await execution?.close().catch((error: unknown) => {
    telemetry.workspaceNotRemoved(errnoCode(error) ?? "INTERNAL");
  });
  const wiped = credentials === undefined ? true : (await credentials.wipe()).ok;
  await workspace.remove().catch((error: unknown) => {
    telemetry.workspaceNotRemoved(errnoCode(error) ?? "INTERNAL");
  });
  for (const forget of forgetSecrets) forget();
  const outcome: Outcome = failure === undefined ? "succeeded" : (OUTCOME_FOR[failure.code] ?? "failed");
  telemetry.finished(outcome, failure);
  await telemetry.close();
  if (failure?.code === "LEASE_LOST") await keeper.release();
  else {
    const error =
      failure === undefined ? {} : { error: { code: failure.code, message: failure.message.slice(0, 4000) } };
    await keeper.complete({ outcome, ...error, phases: telemetry.phases, credentials_wiped: wiped });
  }
  return outcome;
}

/** The configuration's `oci://` sources; a scan that fails only costs pre-flight its pull scopes. */
async function scanSources(workspace: RunWorkspace, telemetry: RunTelemetry): Promise<OciSource[]> {
  try {
    const sources = await workspace.sources();
    telemetry.sourcesFound(sources);
    return sources;
  } catch (error) {
    telemetry.sourcesUnreadable(errnoCode(error) ?? "INTERNAL");
    return [];
  }
}

/**
 * Pre-flight, in memory, before any file exists: each exported credential is tried against its
 * registry. A refusal throws PREFLIGHT_FAILED, which ends the run before init; the run's end
 * (cancel, timeout, shutdown) stops the check at once.
 */
async function checkBeforeInit(
  credentials: RunCredentials,
  sources: readonly OciSource[],
  checker: PreflightChecker | undefined,
  telemetry: RunTelemetry,
  signal: AbortSignal,
): Promise<void> {
  if (checker === undefined || credentials.selected.length === 0) return;
  const started = performance.now();
  try {
    telemetry.preflightPassed(
      await credentials.check(checker, repositoriesByRegistry(sources), signal),
      performance.now() - started,
    );
  } catch (error) {
    if (isAgentError(error, "PREFLIGHT_FAILED")) telemetry.preflightRefused(error);
    throw error;
  }
}
