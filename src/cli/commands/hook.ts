/**
 * `oci-cred-agent hook NAME`: what a foreign runner (Scalr, HCP Terraform or Spacelift agents,
 * Atlantis, a Kubernetes runner pod) calls around each phase to get a run's registry credentials
 * from `oci-cred-agent sidecar` and to wipe them (docs/sidecar.md). A small client: it loads no
 * daemon, no control-plane code, no crypto and no logger, so it starts fast.
 *
 * Pre hooks print the run's variables as `KEY='value'` lines on stdout (and nothing else),
 * append them to `$TFC_AGENT_ENV` as plain `KEY=value` lines when that is set, and with --home
 * (or OCI_CRED_AGENT_WRITE_HOME=1) make `$HOME/.docker/config.json` a link to the run's Docker
 * config in the sidecar's files (src/hook/home-docker-config.ts says why a link). Post hooks
 * remove that link and tell the sidecar to wipe. Every failure is one line
 * `oci-cred-agent hook: CODE: message` on stderr and a non-zero exit; stdout stays empty.
 */
import { appendFile } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { parseDurationMs } from "../../core/duration.js";
import { plainEnvLines, shellEnvLines } from "../../core/env-lines.js";
import { AgentError, errnoCode, isAgentError } from "../../core/errors.js";
import { findRunId, hookPhase, RUN_ID_VARIABLES } from "../../core/hook-run-context.js";
import { RUN_ID_PATTERN } from "../../protocol/agent-api.js";
import { DEFAULT_SIDECAR_SOCKET, HOOKS, isPreHook, type Hook, type HookRequest } from "../../protocol/sidecar-api.js";
import { realFs } from "../../fs/secure-fs.js";
import { readTokenFile } from "../../fs/token-file.js";
import {
  checkHomeLinkable,
  checkRunDockerConfig,
  linkHomeDockerConfig,
  wipeHomeDockerConfig,
} from "../../hook/home-docker-config.js";
import { askSidecar } from "../../hook/sidecar-client.js";

export interface HookCommandOptions {
  readonly socket?: string;
  readonly runId?: string;
  readonly runTokenFile?: string;
  readonly phase?: string;
  readonly outcome?: string;
  readonly home?: string;
  readonly timeout: string;
  readonly failIfUnreachable?: boolean;
}

type Env = Readonly<Record<string, string | undefined>>;

interface Io {
  readonly env: Env;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** A refusal the sidecar answered: its own code and message. */
class SidecarRefusal extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** One line, whatever the text holds (the sidecar's message is shown as it came, minus control characters). */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 2048);
}

function socketPath(opts: HookCommandOptions, env: Env): string {
  const path = opts.socket ?? env["OCI_CRED_AGENT_SOCKET"] ?? DEFAULT_SIDECAR_SOCKET;
  if (!isAbsolute(path))
    throw new AgentError(
      "INVALID_ARGUMENT",
      `the sidecar socket must be an absolute path (--socket or OCI_CRED_AGENT_SOCKET)`,
      {
        flag: "--socket",
      },
    );
  return path;
}

function runIdOf(opts: HookCommandOptions, env: Env): string {
  const found = findRunId(opts.runId, env);
  if (found === undefined)
    throw new AgentError(
      "HOOK_RUN_ID_MISSING",
      `no run id: pass --run-id, or run the hook where the runner sets one of ${RUN_ID_VARIABLES.map((v) => v.variable).join(", ")}`,
    );
  if (!RUN_ID_PATTERN.test(found.runId))
    throw new AgentError(
      "INVALID_ARGUMENT",
      `the run id from ${found.source} is not a run id (1 to 128 of A-Z a-z 0-9 . _ -); pass the control plane's run id with --run-id`,
      { source: found.source },
    );
  return found.runId;
}

async function runTokenOf(opts: HookCommandOptions, env: Env): Promise<string> {
  if (opts.runTokenFile !== undefined)
    return readTokenFile(realFs, opts.runTokenFile, { flag: "--run-token-file", what: "the run token" });
  const token = env["OCI_CRED_AGENT_RUN_TOKEN"]?.trim();
  if (token === undefined || token === "")
    throw new AgentError(
      "HOOK_RUN_TOKEN_MISSING",
      "no run token: set OCI_CRED_AGENT_RUN_TOKEN, or pass --run-token-file with a file that holds the run_token the control plane answered when the run was queued",
    );
  if (/\s/.test(token) || token.length > 256)
    throw new AgentError(
      "INVALID_ARGUMENT",
      "OCI_CRED_AGENT_RUN_TOKEN must hold one token: no white space, at most 256 characters",
    );
  return token;
}

/** The run's HOME to link the Docker config into, or undefined when the hook leaves HOME alone. */
function homeOf(opts: HookCommandOptions, env: Env): string | undefined {
  if (opts.home !== undefined) {
    if (!isAbsolute(opts.home))
      throw new AgentError("INVALID_ARGUMENT", "--home must be an absolute path: the run's own home directory", {
        flag: "--home",
      });
    return opts.home;
  }
  const write = env["OCI_CRED_AGENT_WRITE_HOME"];
  if (write === undefined || write === "" || write === "0") return undefined;
  if (write !== "1")
    throw new AgentError("INVALID_ARGUMENT", "OCI_CRED_AGENT_WRITE_HOME must be 1 (link in $HOME/.docker) or 0");
  const home = env["HOME"];
  if (home === undefined || !isAbsolute(home))
    throw new AgentError(
      "HOOK_HOME_UNSAFE",
      "OCI_CRED_AGENT_WRITE_HOME=1 but HOME is not an absolute path; set HOME to the run's own home directory, or pass --home",
    );
  return home;
}

function timeoutOf(opts: HookCommandOptions): number {
  const ms = parseDurationMs(opts.timeout);
  if (ms === undefined || ms <= 0 || ms > 10 * 60 * 1000)
    throw new AgentError("INVALID_ARGUMENT", "--timeout must be a duration such as 50s, at most 10m", {
      flag: "--timeout",
    });
  return ms;
}

function hookName(name: string): Hook {
  const hook = HOOKS.find((h) => h === name);
  if (hook === undefined)
    throw new AgentError(
      "INVALID_ARGUMENT",
      `unknown hook ${JSON.stringify(name.slice(0, 64))}: use one of ${HOOKS.join(", ")}`,
    );
  return hook;
}

async function request(hook: Hook, opts: HookCommandOptions, env: Env): Promise<HookRequest> {
  if (opts.outcome !== undefined && isPreHook(hook))
    throw new AgentError("INVALID_ARGUMENT", "--outcome is for post hooks: a pre hook has no outcome yet", {
      flag: "--outcome",
    });
  return {
    v: 1,
    hook,
    run_id: runIdOf(opts, env),
    run_token: await runTokenOf(opts, env),
    phase: hookPhase(hook, opts.phase, env),
    outcome: opts.outcome === "succeeded" || opts.outcome === "failed" ? opts.outcome : null,
  };
}

async function preHook(hook: Hook, opts: HookCommandOptions, io: Io): Promise<number> {
  const home = homeOf(opts, io.env);
  const req = await request(hook, opts, io.env);
  const answer = await askSidecar(socketPath(opts, io.env), req, timeoutOf(opts));
  if (!answer.ok) throw new SidecarRefusal(answer.code, answer.message);
  if (!("env" in answer))
    throw new AgentError(
      "HOOK_SIDECAR_PROTOCOL_ERROR",
      `the sidecar answered the ${hook} hook with a post hook's answer; run the same oci-cred-agent version as hook and sidecar`,
    );
  // Every line is rendered before anything is written: a value that cannot be one line writes nothing.
  const shellLines = shellEnvLines(answer.env);
  const plainLines = plainEnvLines(answer.env);
  if (home !== undefined) {
    await checkHomeLinkable(home);
    await checkRunDockerConfig(answer.docker_config_file);
  }
  const envFile = io.env["TFC_AGENT_ENV"];
  if (envFile !== undefined && envFile !== "") {
    try {
      await appendFile(envFile, plainLines, { mode: 0o600 });
    } catch (error) {
      throw new AgentError(
        "HOOK_ENV_FILE_FAILED",
        `appending to $TFC_AGENT_ENV (${envFile}) failed (${errnoCode(error) ?? "error"}); run the hook as the agent's user, from the agent's hook directory`,
        { path: envFile },
      );
    }
  }
  // HOME last, so that no failure after it leaves the link behind (and a failing hook removes it):
  // the sidecar's wipe covers its files at every ending, but nothing else wipes this HOME. When
  // the link fails after the append, $TFC_AGENT_ENV keeps the variables (paths, no secret) and
  // the hook's failure fails the operation.
  if (home !== undefined) {
    try {
      await linkHomeDockerConfig(home, req.run_id, answer.docker_config_file);
      io.stdout(shellLines);
    } catch (error) {
      await wipeHomeDockerConfig(home).catch(() => undefined);
      throw error;
    }
  } else io.stdout(shellLines);
  return 0;
}

async function postHook(hook: Hook, opts: HookCommandOptions, io: Io): Promise<number> {
  // The HOME link goes first: it needs no sidecar, no run id and no token.
  const home = homeOf(opts, io.env);
  if (home !== undefined) {
    const { outcome, path } = await wipeHomeDockerConfig(home);
    if (outcome === "changed")
      io.stderr(
        `oci-cred-agent hook: warning: HOOK_HOME_CONFIG_CHANGED: ${path} changed after the hook linked it to the run's credentials, so it was left in place; it may hold them: remove it (the next pre hook refuses until then)\n`,
      );
  }
  const req = await request(hook, opts, io.env);
  try {
    const answer = await askSidecar(socketPath(opts, io.env), req, timeoutOf(opts));
    if (!answer.ok) throw new SidecarRefusal(answer.code, answer.message);
    if (!("wiped" in answer))
      throw new AgentError(
        "HOOK_SIDECAR_PROTOCOL_ERROR",
        `the sidecar answered the ${hook} hook with a pre hook's answer; run the same oci-cred-agent version as hook and sidecar`,
      );
    return 0;
  } catch (error) {
    // The sidecar wipes on its own when the run ends or its TTL passes: an unreachable sidecar
    // is reported, and fails the hook only when asked to.
    if (isAgentError(error, "HOOK_SIDECAR_UNREACHABLE") && opts.failIfUnreachable !== true) {
      io.stderr(
        `oci-cred-agent hook: warning: HOOK_SIDECAR_UNREACHABLE: ${error.message} (the sidecar wipes the run's files itself when the run ends or no post hook came in time)\n`,
      );
      return 0;
    }
    throw error;
  }
}

/** Runs one hook; returns the exit status (0, 1 refused or failed, 2 usage) after writing its one error line. */
export async function hook(
  name: string,
  opts: HookCommandOptions,
  io: Io = {
    env: process.env,
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
  },
): Promise<number> {
  try {
    const h = hookName(name);
    return isPreHook(h) ? await preHook(h, opts, io) : await postHook(h, opts, io);
  } catch (error) {
    if (error instanceof SidecarRefusal) {
      io.stderr(`oci-cred-agent hook: ${error.code}: ${oneLine(error.message)}\n`);
      return 1;
    }
    if (error instanceof AgentError) {
      io.stderr(`oci-cred-agent hook: ${error.code}: ${oneLine(error.message)}\n`);
      return error.code === "INVALID_ARGUMENT" ? 2 : 1;
    }
    const errno = errnoCode(error);
    io.stderr(
      `oci-cred-agent hook: INTERNAL: unexpected failure (${errno ?? (error instanceof Error ? error.name : "unknown error")}); please report it\n`,
    );
    return 1;
  }
}
