/**
 * One external run the sidecar holds a lease on, from lease to end. Its hooks are served one at
 * a time, in order (a pre hook and a post hook of one run never interleave):
 *
 *   pre hook   the run token is checked with the control plane, a fresh bundle is asked for and
 *              opened, its cloud_auth entries minted (a token near its expiry is minted again:
 *              each phase's pre hook renews what the phase needs), a new generation of the run's files is written and given to the runner's
 *              group, the previous generation wiped; the hook TTL is armed
 *   post hook  the token is checked, the files wiped; `post-run`, or the post hook of the run's
 *              last phase (`post-plan` of a plan-only run, `post-apply`), also completes the lease
 *   TTL        no post hook within --hook-ttl after a pre hook: the files are wiped (the lease stays:
 *              the next phase's pre hook writes them again)
 *   end        the control plane canceled the run or the lease is lost: everything is wiped
 *
 * Between phases the sidecar holds no secret of the run: each pre hook opens a new bundle, and
 * the opened credentials are forgotten at the wipe. The lease heartbeats all along.
 */
import { join } from "node:path";
import type { Logger } from "pino";
import type { CloudMinter } from "../core/cloud-auth.js";
import { AgentError, isAgentError } from "../core/errors.js";
import type { ReplayCache } from "../core/replay-cache.js";
import type { OperatorConfig } from "../credentials/operator-config.js";
import { RunCredentials, type WipeOutcome } from "../credentials/run-credentials.js";
import type { ControlPlaneClient } from "../daemon/control-plane-client.js";
import { LeaseKeeper } from "../daemon/lease-keeper.js";
import { runFilePath } from "../fs/run-dir.js";
import type { FileSystem } from "../fs/secure-fs.js";
import type { KeyRing } from "../keys/key-ring.js";
import type { Outcome, SidecarLease } from "../protocol/agent-api.js";
import { hookEndsRun, type HookRequest, type PostHookAnswer, type PreHookAnswer } from "../protocol/sidecar-api.js";
import { generationName, makeRunParent, shareWithGroup, sidecarRoot, wipeRunParent } from "./run-files.js";

/** How long a pre hook waits for cloud credentials (the minter bounds each mint at 30 s). */
const MINT_WAIT_MS = 35_000;

export interface SidecarRunContext {
  readonly agentId: string;
  readonly client: ControlPlaneClient;
  readonly log: Logger;
  readonly fs: FileSystem;
  readonly keys: () => KeyRing;
  readonly replayCache: ReplayCache;
  readonly operator: OperatorConfig;
  readonly credentialsDir: string;
  /** The runner's group, which may read the run's files; undefined: the sidecar's user only. */
  readonly gid: number | undefined;
  readonly hookTtlMs: number;
  readonly heartbeatIntervalMs: number;
  readonly maxBundleLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxBundleBytes: number;
  /** Mints the credentials of `cloud_auth` entries from the pool's cloud identity (src/cloud/). */
  readonly cloudMinter?: CloudMinter;
  /** The run ended (completed, canceled, lost): the daemon forgets it. */
  readonly onGone: (runId: string) => void;
}

export class SidecarRun {
  private chain: Promise<unknown> = Promise.resolve();
  /** Pre hooks served: counted for the log (a generation's name is random). */
  private generation = 0;
  private current: RunCredentials | undefined;
  private ttl: NodeJS.Timeout | undefined;
  private ended = false;
  private readonly keeper: LeaseKeeper;
  readonly runId: string;
  private readonly dir: string;

  constructor(
    private readonly lease: SidecarLease,
    private readonly ctx: SidecarRunContext,
  ) {
    this.runId = lease.run.id;
    this.dir = join(sidecarRoot(ctx.credentialsDir), this.runId);
    this.keeper = new LeaseKeeper(lease, {
      client: ctx.client,
      log: ctx.log.child({ run_id: this.runId }),
      heartbeatIntervalMs: ctx.heartbeatIntervalMs,
      onEnd: (reason) => {
        void this.end(reason);
      },
    });
  }

  /** One hook at a time per run, in arrival order. */
  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private notLeased(): AgentError {
    return new AgentError(
      "RUN_NOT_LEASED",
      `run ${this.runId} has ended at the control plane (completed, canceled or its lease lost); its credentials are wiped`,
      { run_id: this.runId },
    );
  }

  /**
   * The control plane says whether the hook's token is the run's; nothing is written before. A
   * token it refused already (`refusedAlready`, asked once the hook's turn came) is not sent again.
   */
  private async checkToken(request: HookRequest, refusedAlready: () => boolean): Promise<void> {
    if (refusedAlready())
      throw new AgentError(
        "RUN_TOKEN_INVALID",
        `the control plane refused this run token for run ${this.runId} already; give the hook the run's own token (OCI_CRED_AGENT_RUN_TOKEN or --run-token-file)`,
        { run_id: this.runId },
      );
    try {
      await this.ctx.client.checkRunToken(this.lease.lease_id, request.run_token);
    } catch (error) {
      if (isAgentError(error, "RUN_TOKEN_INVALID")) throw error;
      if (isAgentError(error, "LEASE_LOST")) {
        await this.endNow(error);
        throw this.notLeased();
      }
      throw new AgentError(
        "SIDECAR_UNAVAILABLE",
        `the sidecar could not check the run token with the control plane (${isAgentError(error) ? error.code : "unexpected error"}); retry the hook, and check the sidecar's log and its --control-plane-url`,
        { run_id: this.runId },
        { cause: error },
      );
    }
  }

  private event(type: string, fields: Record<string, unknown>): Promise<void> {
    return this.ctx.client
      .events(this.lease.lease_id, [{ type, at: new Date().toISOString(), ...fields }])
      .catch((error: unknown) => {
        this.ctx.log.warn(
          { event: "events_upload_failed", run_id: this.runId, code: isAgentError(error) ? error.code : "INTERNAL" },
          "could not report a hook to the control plane",
        );
      });
  }

  private wiped = (outcome: WipeOutcome): void => {
    if (outcome.ok) {
      if (outcome.runDir !== "")
        this.ctx.log.info(
          { event: "credentials_wiped", run_id: this.runId, files: outcome.removed.length },
          `wiped the credentials of run ${this.runId}`,
        );
    } else
      this.ctx.log.error({ event: "wipe_failed", run_id: this.runId, code: outcome.error.code }, outcome.error.message);
  };

  pre(request: HookRequest, refusedAlready: () => boolean = () => false): Promise<PreHookAnswer> {
    return this.serialize(async () => {
      if (this.ended) throw this.notLeased();
      await this.checkToken(request, refusedAlready);
      const { ctx } = this;
      let bundle: string;
      try {
        bundle = await ctx.client.freshBundle(this.lease.lease_id);
      } catch (error) {
        if (isAgentError(error, "LEASE_LOST")) {
          await this.endNow(error);
          throw this.notLeased();
        }
        throw error;
      }
      const credentials = await RunCredentials.open({
        bundle: Buffer.from(bundle, "utf8"),
        keys: ctx.keys(),
        agentId: ctx.agentId,
        runId: this.runId,
        nowMs: Date.now(),
        maxLifetimeSeconds: ctx.maxBundleLifetimeSeconds,
        clockSkewSeconds: ctx.clockSkewSeconds,
        maxBytes: ctx.maxBundleBytes,
        replayCache: ctx.replayCache,
        onWipe: this.wiped,
      });
      // A refusal (CLOUD_AUTH_FAILED) fails the hook, so the phase never starts; nothing is written.
      const minted = await credentials.mintCloud(ctx.cloudMinter, AbortSignal.timeout(MINT_WAIT_MS));
      for (const m of minted)
        ctx.log.info(
          {
            event: "cloud_credentials_minted",
            run_id: this.runId,
            registry: m.host,
            integration_id: m.integration_id,
            provider: m.provider,
            identity: m.identity,
            expires_at: m.expires_at,
          },
          `minted a ${m.provider} registry credential for ${m.host} as ${m.identity}, valid until ${m.expires_at}`,
        );
      await makeRunParent(ctx.fs, this.dir, ctx.gid);
      // Named with 128 random bits: the group may pass through the run's directory, not list it.
      const runDir = join(this.dir, generationName());
      this.generation++;
      const written = await credentials.write({ runDir, fs: ctx.fs, operator: ctx.operator });
      try {
        await shareWithGroup(runDir, ctx.gid, true);
      } catch (error) {
        await credentials.wipe();
        throw error;
      }
      const previous = this.current;
      this.current = credentials;
      await previous?.wipe();
      this.armTtl();
      ctx.log.info(
        {
          event: "credentials_written",
          run_id: this.runId,
          hook: request.hook,
          phase: request.phase,
          generation: this.generation,
          registries: credentials.registries.map((r) => r.host),
        },
        `wrote the credentials of run ${this.runId} for its ${request.hook} hook`,
      );
      for (const warning of written.warnings)
        ctx.log.warn({ event: "credentials_warning", run_id: this.runId }, warning);
      await this.event("phase_started", { hook: request.hook, phase: request.phase, source: "sidecar" });
      const env = written.env;
      return {
        ok: true as const,
        run_dir: runDir,
        env: {
          TF_CLI_CONFIG_FILE: env["TF_CLI_CONFIG_FILE"] ?? runFilePath(runDir, "tofuCliConfig"),
          DOCKER_CONFIG: env["DOCKER_CONFIG"] ?? join(runDir, "docker"),
          REGISTRY_AUTH_FILE: env["REGISTRY_AUTH_FILE"] ?? runFilePath(runDir, "containersAuth"),
        },
        docker_config_file: runFilePath(runDir, "dockerConfig"),
      };
    });
  }

  post(request: HookRequest, refusedAlready: () => boolean = () => false): Promise<PostHookAnswer> {
    return this.serialize(async () => {
      if (this.ended) return { ok: true as const, wiped: 0 };
      await this.checkToken(request, refusedAlready);
      const wiped = await this.wipeCurrent();
      await this.event("phase_finished", {
        hook: request.hook,
        phase: request.phase,
        outcome: request.outcome,
        source: "sidecar",
      });
      if (hookEndsRun(request.hook, this.lease.run.phases)) await this.finish(request.outcome ?? "succeeded");
      return { ok: true as const, wiped };
    });
  }

  private armTtl(): void {
    clearTimeout(this.ttl);
    this.ttl = setTimeout(() => {
      void this.serialize(async () => {
        const files = await this.wipeCurrent();
        if (files > 0)
          this.ctx.log.warn(
            { event: "hook_ttl_expired", run_id: this.runId, files, hook_ttl_ms: this.ctx.hookTtlMs },
            `no post hook came for run ${this.runId} within --hook-ttl: its credentials are wiped (the next pre hook writes them again)`,
          );
      });
    }, this.ctx.hookTtlMs);
    this.ttl.unref();
  }

  /** Wipes every generation of the run's files; returns how many files went. */
  private async wipeCurrent(): Promise<number> {
    clearTimeout(this.ttl);
    this.ttl = undefined;
    const credentials = this.current;
    this.current = undefined;
    const outcome = await credentials?.wipe();
    // Whatever else is left under the run's directory (a generation whose wipe was interrupted),
    // and the directory itself.
    const { files } = await wipeRunParent(this.ctx.fs, this.dir, this.wiped);
    return files + (outcome?.ok === true ? outcome.removed.length : 0);
  }

  private async finish(outcome: Outcome): Promise<void> {
    this.ended = true;
    await this.keeper.complete({ outcome, phases: [], credentials_wiped: true });
    this.ctx.log.info({ event: "run_finished", run_id: this.runId, outcome }, `run ${this.runId} ended: ${outcome}`);
    this.ctx.onGone(this.runId);
  }

  /** The control plane ended the run (cancel, lost lease): wipe, then report or let go. */
  private end(reason: AgentError): Promise<void> {
    if (this.ended) return Promise.resolve();
    return this.serialize(() => this.endNow(reason));
  }

  private async endNow(reason: AgentError): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const files = await this.wipeCurrent();
    this.ctx.log.warn(
      { event: "run_ended", run_id: this.runId, code: reason.code, files },
      `run ${this.runId} ended at the control plane (${reason.code}); its credentials are wiped`,
    );
    if (reason.code === "RUN_CANCELED")
      await this.keeper.complete({ outcome: "canceled", phases: [], credentials_wiped: true });
    else await this.keeper.release();
    this.ctx.onGone(this.runId);
  }

  /** The sidecar stops: wipe everything, stop heartbeating (the lease then expires at the control plane). */
  shutdown(): Promise<void> {
    return this.serialize(async () => {
      this.ended = true;
      await this.wipeCurrent();
      await this.keeper.release();
    });
  }
}
