/**
 * `oci-cred-agent doctor`: checks an agent host against the configuration `run` would use and
 * prints a readable report: configuration, keys and their permissions, the token file, the work
 * and credential directories (tmpfs or disk), the tofu binary, control-plane reachability and
 * clock skew, and, given a sealed bundle, the same pre-flight checks as the daemon runs before
 * init (credentials against their registries, credential helpers on PATH, docker.io sources).
 */
import { constants } from "node:fs";
import { access, stat, statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { request, type Dispatcher } from "undici";
import type { LoadedSettings } from "../config/load-run-config.js";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import { repositoriesByRegistry } from "../core/oci-source-checks.js";
import { anonymousDockerHubSources } from "../core/oci-source-checks.js";
import { defaultHelperExists, missingHelpersError, RunCredentials } from "../credentials/run-credentials.js";
import { setUpPhaseExecutor } from "./phase-executor-setup.js";
import { findExecutable } from "../fs/executables.js";
import { findOciSources } from "../fs/oci-sources.js";
import { tlsFailure } from "../http/tls-failure.js";
import { realFs } from "../fs/secure-fs.js";
import { describeKeySource, loadKeySource } from "../keys/key-source.js";
import type { KeyRing } from "../keys/key-ring.js";
import { AGENT_API_PREFIX } from "../protocol/agent-api.js";
import { PREFLIGHT_LIMITS, PreflightChecker } from "../registry/preflight.js";
import { readBaseDockerConfig, readPoolToken, readTofuCliConfig } from "./prepare-agent.js";
import { controlPlaneDispatcher, registryDispatcher } from "./tls-dispatcher.js";

type CheckStatus = "ok" | "warn" | "fail" | "skip";

export interface DoctorCheck {
  readonly check: string;
  readonly status: CheckStatus;
  readonly detail: string;
  readonly code?: string;
}

export interface DoctorInputs {
  /** The settings `run` would use (a configuration with problems still yields what it can). */
  readonly loaded: LoadedSettings;
  readonly env: NodeJS.ProcessEnv;
  readonly nowMs: () => number;
  readonly bundle?: { readonly bytes: Uint8Array; readonly agentId: string; readonly runId: string };
  readonly configurationDir?: string;
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

function failure(check: string, error: unknown): DoctorCheck {
  if (isAgentError(error)) return { check, status: "fail", detail: error.message, code: error.code };
  return {
    check,
    status: "fail",
    detail: `unexpected failure (${errnoCode(error) ?? (error instanceof Error ? error.name : "error")})`,
    code: "INTERNAL",
  };
}

async function checkDirectory(check: string, dir: string, wantTmpfs: boolean): Promise<DoctorCheck> {
  let path = resolve(dir);
  let exists = true;
  try {
    const st = await stat(path);
    if (!st.isDirectory())
      return { check, status: "fail", detail: `${path} exists but is not a directory`, code: "RUN_DIR_UNSAFE" };
    if (typeof process.getuid === "function" && st.uid !== process.getuid()) {
      return {
        check,
        status: "fail",
        detail: `${path} is owned by uid ${st.uid}, not by the agent's user (uid ${process.getuid()}); chown it`,
        code: "RUN_DIR_UNSAFE",
      };
    }
  } catch {
    exists = false;
    // The agent creates missing directories with their parents: the nearest existing ancestor counts.
    path = dirname(path);
    for (;;) {
      try {
        await stat(path);
        break;
      } catch {
        if (dirname(path) === path) break;
        path = dirname(path);
      }
    }
  }
  try {
    await access(path, constants.W_OK | constants.X_OK);
  } catch {
    return {
      check,
      status: "fail",
      detail: `${path} is not writable by the agent's user; create it and chown it to that user`,
      code: "RUN_DIR_UNSAFE",
    };
  }
  const created = exists ? "" : ` (does not exist yet; the agent creates it in ${path})`;
  if (!wantTmpfs) return { check, status: "ok", detail: `${resolve(dir)}${created}` };
  const fsType = (await statfs(path)).type;
  if (fsType === TMPFS_MAGIC || fsType === RAMFS_MAGIC)
    return { check, status: "ok", detail: `${resolve(dir)} on tmpfs${created}` };
  return {
    check,
    status: "warn",
    detail: `${resolve(dir)} is on disk: wiped credentials may survive in free blocks; put --credentials-dir on tmpfs (systemd RuntimeDirectory=, Kubernetes emptyDir medium: Memory)${created}`,
  };
}

async function checkControlPlane(
  url: string,
  token: string,
  dispatcher: Dispatcher,
  nowMs: () => number,
  skewLimitMs: number,
): Promise<DoctorCheck[]> {
  const sentAt = nowMs();
  let res: Dispatcher.ResponseData;
  try {
    res = await request(`${url.replace(/\/+$/, "")}${AGENT_API_PREFIX}/ping`, {
      dispatcher,
      headers: { authorization: `Bearer ${token}` },
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
  } catch (error) {
    const label = errnoCode(error) ?? (error instanceof Error ? error.name : "error");
    const tls = tlsFailure(errnoCode(error));
    return [
      tls === undefined
        ? {
            check: "control plane",
            status: "fail",
            detail: `cannot reach ${url} (${label}); check the URL, DNS, firewalls, HTTPS_PROXY/NO_PROXY and --ca-file`,
            code: "CONTROL_PLANE_UNAVAILABLE",
          }
        : {
            check: "control plane",
            status: "fail",
            detail: `TLS to ${url} failed (${label}): ${tls}`,
            code: "CONTROL_PLANE_TLS_FAILED",
          },
    ];
  }
  await res.body.dump();
  const receivedAt = nowMs();
  const out: DoctorCheck[] = [];
  if (res.statusCode === 401 || res.statusCode === 403) {
    out.push({
      check: "control plane",
      status: "fail",
      detail: `${url} refused the agent token (HTTP ${res.statusCode}); put a valid pool token in --token-file`,
      code: "CONTROL_PLANE_UNAUTHORIZED",
    });
  } else if (res.statusCode === 404) {
    out.push({
      check: "control plane",
      status: "warn",
      detail: `${url} answers, but has no agent API v1 ping (HTTP 404); is --control-plane-url the agent API's base URL?`,
    });
  } else if (res.statusCode >= 200 && res.statusCode < 300) {
    out.push({
      check: "control plane",
      status: "ok",
      detail: `${url} accepts the agent token (${receivedAt - sentAt} ms)`,
    });
  } else {
    out.push({
      check: "control plane",
      status: "fail",
      detail: `${url} answered HTTP ${res.statusCode}`,
      code: "CONTROL_PLANE_UNAVAILABLE",
    });
  }
  const dateHeader = res.headers["date"];
  const serverMs = typeof dateHeader === "string" ? Date.parse(dateHeader) : Number.NaN;
  if (!Number.isFinite(serverMs)) {
    out.push({ check: "clock skew", status: "skip", detail: "the control plane sent no Date header" });
  } else {
    // The Date header has one-second resolution: compare against the middle of the round trip.
    const skew = Math.round((sentAt + receivedAt) / 2 - (serverMs + 500));
    const abs = Math.abs(skew);
    const detail = `this host's clock is ${abs < 1000 ? "within a second of" : `${(abs / 1000).toFixed(1)} s ${skew > 0 ? "ahead of" : "behind"}`} the control plane's`;
    if (abs > skewLimitMs)
      out.push({
        check: "clock skew",
        status: "fail",
        detail: `${detail}, past --clock-skew (${skewLimitMs / 1000} s): bundles will be refused as not yet valid or expired; run NTP (chrony, systemd-timesyncd)`,
        code: "BUNDLE_NOT_YET_VALID",
      });
    else if (abs > 10_000)
      out.push({ check: "clock skew", status: "warn", detail: `${detail}; run NTP (chrony, systemd-timesyncd)` });
    else out.push({ check: "clock skew", status: "ok", detail });
  }
  return out;
}

/** One check per step of the agent's preparation (prepare-agent.ts), each reported on its own. */
export async function runDoctor(inputs: DoctorInputs): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const { problems, draft: settings } = inputs.loaded;
  if (problems.length === 0) checks.push({ check: "configuration", status: "ok", detail: "valid" });
  for (const p of problems)
    checks.push({ check: "configuration", status: "fail", detail: p.message, code: "CONFIG_INVALID" });

  // Keys
  let keys: KeyRing | undefined;
  if (settings.keySource === undefined) checks.push({ check: "keys", status: "skip", detail: "no key configured" });
  else {
    try {
      const loaded = await loadKeySource(settings.keySource, { fs: realFs, env: inputs.env });
      keys = new Map(loaded.keys.map((k) => [k.kid, k]));
      checks.push({
        check: "keys",
        status: "ok",
        detail: `${loaded.keys.length} key(s) from ${describeKeySource(settings.keySource)}; newest kid ${loaded.keys.at(-1)?.kid ?? "?"}`,
      });
      for (const w of loaded.warnings) checks.push({ check: "keys", status: "warn", detail: w });
    } catch (error) {
      checks.push(failure("keys", error));
    }
  }

  // Token: read by the same rule as `run`; a file others can read is a warning.
  let token: string | undefined;
  if (settings.token === undefined) checks.push({ check: "token", status: "skip", detail: "no token configured" });
  else {
    try {
      token = await readPoolToken(realFs, settings.token);
      if ("value" in settings.token)
        checks.push({
          check: "token",
          status: "warn",
          detail: "the token comes from the environment; prefer --token-file",
        });
      else {
        const mode = (await stat(settings.token.file)).mode & 0o777;
        if ((mode & 0o077) !== 0)
          checks.push({
            check: "token",
            status: "warn",
            detail: `${settings.token.file} is readable by group or others (mode ${mode.toString(8)}); chmod 600 it`,
          });
        else checks.push({ check: "token", status: "ok", detail: `${settings.token.file} (mode ${mode.toString(8)})` });
      }
    } catch (error) {
      checks.push(failure("token", error));
    }
  }

  // The operator's files merged into every run's: read and checked as at start.
  if (settings.baseDockerConfigFile !== undefined) {
    try {
      await readBaseDockerConfig(realFs, settings.baseDockerConfigFile);
      checks.push({ check: "base Docker config", status: "ok", detail: settings.baseDockerConfigFile });
    } catch (error) {
      checks.push(failure("base Docker config", error));
    }
  }
  try {
    const cli = await readTofuCliConfig(realFs, settings.tofuCliConfigFile);
    const files = cli.kind === "json" ? [cli.path] : cli.sources.map((f) => f.path);
    checks.push({
      check: "tofu CLI config",
      status: "ok",
      detail: files.length === 0 ? "none (OpenTofu's defaults)" : files.join(", "),
    });
    for (const w of cli.warnings) checks.push({ check: "tofu CLI config", status: "warn", detail: w });
  } catch (error) {
    checks.push(failure("tofu CLI config", error));
  }

  // Directories
  if (settings.workDir !== undefined && settings.credentialsDir !== undefined) {
    checks.push(await checkDirectory("work directory", settings.workDir, false));
    checks.push(await checkDirectory("credentials directory", settings.credentialsDir, true));
  } else checks.push({ check: "work directory", status: "skip", detail: "no work_dir configured" });

  // tofu
  const tofuPath = await findExecutable(settings.tofuBin, inputs.env);
  checks.push(
    tofuPath
      ? { check: "tofu", status: "ok", detail: tofuPath }
      : {
          check: "tofu",
          status: "fail",
          detail: `${settings.tofuBin} is not on PATH; install OpenTofu or set --tofu-bin`,
          code: "TOFU_NOT_FOUND",
        },
  );

  // Isolation: the same set-up and start-up check as `run`.
  const { homesDir, workDir, workspacesDir, credentialsDir } = settings;
  if (homesDir !== undefined && workDir !== undefined && workspacesDir !== undefined && credentialsDir !== undefined) {
    try {
      const { executor } = await setUpPhaseExecutor(
        { ...settings, homesDir, workDir, workspacesDir, credentialsDir },
        { file: settings.tofuBin, argsPrefix: [] },
        inputs.env,
      );
      checks.push(
        executor.isolation === "none"
          ? {
              check: "isolation",
              status: "warn",
              detail:
                "isolation none: phases run as the agent's children and reach everything its user can (key, token, other runs); remove --isolation none to use the sandbox",
            }
          : { check: "isolation", status: "ok", detail: `phases run in the ${executor.isolation}` },
      );
    } catch (error) {
      checks.push(failure("isolation", error));
    }
  }

  // Control plane and clock
  const url = settings.controlPlaneUrl;
  if (url !== undefined && token !== undefined) {
    try {
      checks.push(
        ...(await checkControlPlane(
          url,
          token,
          await controlPlaneDispatcher(inputs.env, settings.caFile),
          inputs.nowMs,
          settings.clockSkewSeconds * 1000,
        )),
      );
    } catch (error) {
      checks.push(failure("control plane", error));
    }
  } else if (url !== undefined) {
    checks.push({
      check: "control plane",
      status: "skip",
      detail: "not checked: no usable token (see the token check)",
    });
  } else checks.push({ check: "control plane", status: "skip", detail: "no control_plane_url configured" });

  // Configuration sources
  const sources = inputs.configurationDir === undefined ? [] : await findOciSources(inputs.configurationDir);
  for (const { source: s, fix } of anonymousDockerHubSources(sources)) {
    checks.push({
      check: "sources",
      status: "warn",
      detail: `${s.file}: ${s.address} is pulled anonymously by OpenTofu; write ${fix}`,
      code: "DOCKER_HUB_ANONYMOUS",
    });
  }

  // Credentials of a bundle: opened and checked as a run's are, before anything is written.
  if (inputs.bundle !== undefined) {
    if (keys === undefined)
      checks.push({ check: "credentials", status: "skip", detail: "no usable key to open the bundle with" });
    else
      checks.push(
        ...(await checkBundle(
          inputs.bundle,
          keys,
          settings.maxBundleLifetimeSeconds,
          settings.clockSkewSeconds,
          sources,
          inputs,
        )),
      );
  }
  return checks;
}

async function checkBundle(
  bundle: NonNullable<DoctorInputs["bundle"]>,
  keys: KeyRing,
  maxLifetimeSeconds: number,
  clockSkewSeconds: number,
  sources: Awaited<ReturnType<typeof findOciSources>>,
  inputs: DoctorInputs,
): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  let credentials: RunCredentials | undefined;
  try {
    credentials = await RunCredentials.open({
      bundle: bundle.bytes,
      keys,
      agentId: bundle.agentId,
      runId: bundle.runId,
      nowMs: inputs.nowMs(),
      maxLifetimeSeconds,
      clockSkewSeconds,
      onWipe: () => undefined /* doctor never writes */,
    });
    for (const ig of credentials.ignored)
      checks.push({
        check: "credentials",
        status: "warn",
        detail: `integration ${ig.integration_id ?? "(no id)"} ignored: ${ig.reason}`,
        code: ig.code,
      });
    const missing = await missingHelpersError(credentials.selected, defaultHelperExists);
    if (missing !== undefined) checks.push(failure("credentials", missing));
    const checker = new PreflightChecker({
      cacheMs: 0,
      ...PREFLIGHT_LIMITS,
      now: inputs.nowMs,
      dispatcher: registryDispatcher(inputs.env),
    });
    // Every credential, so that a refusal does not hide the others' results.
    for (const o of await checker.checkEach(credentials.selected, repositoriesByRegistry(sources))) {
      if (o instanceof AgentError) {
        checks.push(failure("credentials", o));
        continue;
      }
      const status: CheckStatus = o.result === "unreachable" ? "warn" : o.result === "skipped" ? "skip" : "ok";
      checks.push({
        check: "credentials",
        status,
        detail: `integration ${o.integration_id} for ${o.host}: ${o.result} (${o.detail})`,
      });
    }
  } catch (error) {
    checks.push(failure("credentials", error));
  } finally {
    await credentials?.wipe();
  }
  return checks;
}

const MARK: Record<CheckStatus, string> = { ok: "ok  ", warn: "WARN", fail: "FAIL", skip: "skip" };

/** The readable report. Pure. */
export function renderDoctorReport(checks: readonly DoctorCheck[]): string {
  const width = Math.max(...checks.map((c) => c.check.length));
  const lines = checks.map(
    (c) =>
      `${MARK[c.status]}  ${c.check.padEnd(width)}  ${c.detail}${c.code && c.status !== "ok" ? ` [${c.code}]` : ""}`,
  );
  const failed = checks.filter((c) => c.status === "fail").length;
  const warned = checks.filter((c) => c.status === "warn").length;
  lines.push(
    "",
    failed === 0
      ? `all checks passed${warned > 0 ? ` (${warned} warning${warned === 1 ? "" : "s"})` : ""}`
      : `${failed} check${failed === 1 ? "" : "s"} failed, ${warned} warning${warned === 1 ? "" : "s"}`,
  );
  return `${lines.join("\n")}\n`;
}

export function doctorFailed(checks: readonly DoctorCheck[]): boolean {
  return checks.some((c) => c.status === "fail");
}
