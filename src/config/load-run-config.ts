/**
 * Reads the daemon's configuration from flags, environment and the config file (YAML or JSON),
 * validates all of it at once, and turns it into the composition root's settings. Every
 * problem is reported in one error that names the field, the bad value (never a secret), what
 * was expected and where to fix it.
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { BackoffPolicy } from "../core/backoff.js";
import { AgentError, errnoCode } from "../core/errors.js";
import { hostPort } from "../core/host-port.js";
import { parseKeyUri, type KeySource } from "../keys/key-source.js";
import { PATH_LIST_SEPARATOR, RUN_FIELDS, resolveConfig, type ConfigProblem, type ResolvedConfig } from "./schema.js";

/** Where the pool token comes from: a file (preferred) or the environment. */
export type TokenSource = { readonly file: string } | { readonly value: string };

/**
 * Every setting of the agent, typed, with defaults applied and paths made absolute: the one
 * settings object that `run`, `doctor` and `dev` build the agent from (docs/configuration.md).
 */
export interface AgentSettings {
  /** The config file the settings came from, if any (the sandbox hides it from runs). */
  readonly configFile?: string;
  readonly controlPlaneUrl: string;
  readonly token: TokenSource;
  readonly keySource: KeySource;
  readonly workDir: string;
  /** Run credential directories go below it (default `<workDir>/credentials`). */
  readonly credentialsDir: string;
  /** Run workspaces go below it (`<workDir>/workspaces`). */
  readonly workspacesDir: string;
  /** Runs' private HOME and TMPDIR in the sandbox go below it (`<workDir>/homes`). */
  readonly homesDir: string;
  readonly caFile?: string;
  /** `tofu` on PATH, or an absolute path (a relative one means nothing in a run's workspace). */
  readonly tofuBin: string;
  /** What phases run in (docs/architecture.md, "Trust model"). */
  readonly isolation: "sandbox" | "none";
  /** Where phases run: here, or an `oci-cred-agent runner` at a Unix socket. */
  readonly executor: { readonly kind: "local" } | { readonly kind: "runner"; readonly socket: string };
  /** Paths the sandbox shows besides the system's, read-only and read-write. */
  readonly sandboxReadOnly: readonly string[];
  readonly sandboxReadWrite: readonly string[];
  /** Registry hosts that may receive cloud-minted credentials besides the clouds' own (`cloud_auth_host`). */
  readonly cloudAuthHosts: readonly string[];
  /** Whether runs inherit the agent's cloud identity variables (`pass`) or not (`drop`, the default). */
  readonly runCloudEnv: "drop" | "pass";
  readonly concurrency: number;
  readonly drainTimeoutMs: number;
  readonly cancelGraceMs: number;
  readonly runTimeoutMs: number;
  readonly maxBundleLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxConfigBytes: number;
  readonly baseDockerConfigFile?: string;
  /** The operator's OpenTofu CLI configuration (`--tofu-cli-config`); unset: the default file, if any. */
  readonly tofuCliConfigFile?: string;
  readonly name?: string;
  readonly logLevel: string;
  readonly logFormat?: "json" | "pretty";
  readonly listen?: { readonly host: string; readonly port: number };
  readonly retry: BackoffPolicy;
  readonly preflight: boolean;
}

/** The settings a configuration with problems still yields (`doctor` checks what it can). */
export type SettingsDraft = Omit<AgentSettings, DraftKey> & Partial<Pick<AgentSettings, DraftKey>>;
type DraftKey = "controlPlaneUrl" | "token" | "keySource" | "workDir" | "credentialsDir" | "workspacesDir" | "homesDir";

export interface LoadedSettings {
  readonly resolved: ResolvedConfig;
  readonly problems: readonly ConfigProblem[];
  readonly draft: SettingsDraft;
  /** Present when there is no problem. */
  readonly settings?: AgentSettings;
}

/** Hosts where plain http:// to the control plane stays on the machine (`URL.hostname` form). */
export const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/;

async function readConfigFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new AgentError(
      "CONFIG_INVALID",
      `cannot read the config file ${path} (${errnoCode(error) ?? "error"}); check --config / OCI_CRED_AGENT_CONFIG`,
      { path },
    );
  }
  // YAML is loaded only when a config file is used: the parser costs memory every agent would pay.
  const { parse: parseYaml } = await import("yaml");
  try {
    return parseYaml(text) as unknown;
  } catch (error) {
    const where =
      error instanceof Error && "linePos" in error && Array.isArray(error.linePos)
        ? ` at line ${String((error.linePos[0] as { line?: number } | undefined)?.line ?? "?")}`
        : "";
    throw new AgentError(
      "CONFIG_INVALID",
      `the config file ${path} is not valid YAML or JSON${where}; fix its syntax`,
      { path },
    );
  }
}

export async function resolveRunConfig(
  flags: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
): Promise<{ resolved: ResolvedConfig; problems: ConfigProblem[] }> {
  const configPath = typeof flags["config"] === "string" ? flags["config"] : env["OCI_CRED_AGENT_CONFIG"] || undefined;
  const file = configPath === undefined ? undefined : { path: configPath, data: await readConfigFile(configPath) };
  const { config, problems } = resolveConfig(RUN_FIELDS, { flags, env, ...(file ? { file } : {}) });
  const v = (key: string): string | number | boolean | undefined => config.values.get(key)?.value;

  if (v("key") !== undefined && v("key_file") !== undefined)
    problems.push({
      key: "key",
      message: "key and key_file are both set; set only one (key_file PATH is key file:PATH)",
    });
  if (v("key") === undefined && v("key_file") === undefined)
    problems.push({
      key: "key",
      message:
        "the private key is missing: set --key / OCI_CRED_AGENT_KEY / key, or --key-file / OCI_CRED_AGENT_KEY_FILE / key_file",
    });
  if (v("token") === undefined && v("token_file") === undefined)
    problems.push({
      key: "token_file",
      message: "the agent pool token is missing: set --token-file / OCI_CRED_AGENT_TOKEN_FILE / token_file",
    });
  const url = v("control_plane_url");
  if (typeof url === "string") {
    const u = new URL(url);
    if (u.username !== "" || u.password !== "") {
      problems.push({
        key: "control_plane_url",
        message:
          "control_plane_url carries user information (user:password@); it would be shown and logged: remove it and put the pool token in --token-file",
      });
    }
    if (u.protocol === "http:" && !LOOPBACK.test(u.hostname) && v("allow_insecure_control_plane") !== true) {
      problems.push({
        key: "control_plane_url",
        message: `control_plane_url ${u.origin} is plain http to a non-loopback host: the token and bundles would cross the network unprotected; use https://, or set --allow-insecure-control-plane if you really mean it`,
      });
    }
  }
  const executor = v("executor");
  if (typeof executor === "string" && executor !== "local") {
    const parsed = parseExecutor(executor);
    if (parsed === undefined)
      problems.push({
        key: "executor",
        message: `executor ${JSON.stringify(executor)} is neither local nor runner:PATH with an absolute socket path; set --executor local or --executor runner:/run/oci-cred-agent-runner/runner.sock`,
      });
    else {
      if (v("isolation") === "none")
        problems.push({
          key: "isolation",
          message:
            "isolation none and executor runner:PATH are both set: phases in the runner are isolated by the runner's container; remove --isolation none",
        });
      if (typeof v("concurrency") === "number" && (v("concurrency") as number) > 1)
        problems.push({
          key: "concurrency",
          message:
            "executor runner:PATH runs one run at a time (one runner, one run): set --concurrency 1 and scale out with more pods",
        });
    }
  }
  return { resolved: config, problems };
}

function throwIfProblems(problems: readonly ConfigProblem[]): void {
  if (problems.length === 0) return;
  throw new AgentError(
    "CONFIG_INVALID",
    `the configuration has ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n${problems.map((p) => `  - ${p.message}`).join("\n")}\n(every setting: docs/configuration.md)`,
    { fields: problems.map((p) => p.key) },
  );
}

/** `local`, or `runner:PATH` with an absolute PATH; undefined for anything else. Pure. */
function parseExecutor(text: string): AgentSettings["executor"] | undefined {
  if (text === "local") return { kind: "local" };
  const socket = text.startsWith("runner:") ? text.slice("runner:".length) : undefined;
  return socket?.startsWith("/") === true ? { kind: "runner", socket } : undefined;
}

/** Turns resolved values (already validated by the schema) into the typed settings. */
export function settingsFromConfig(resolved: ResolvedConfig): SettingsDraft {
  const get = (key: string): string | number | boolean | undefined => resolved.values.get(key)?.value;
  const str = (key: string): string | undefined => {
    const x = get(key);
    return x === undefined ? undefined : String(x);
  };
  const num = (key: string): number => Number(get(key));
  const optional = <K extends string, T>(key: K, value: T | undefined): { [P in K]?: T } =>
    value === undefined ? {} : ({ [key]: value } as { [P in K]: T });
  const tokenFile = str("token_file");
  const tokenValue = str("token");
  const keyUri = str("key") ?? (str("key_file") === undefined ? undefined : `file:${str("key_file") ?? ""}`);
  const workDir = str("work_dir") === undefined ? undefined : resolve(str("work_dir") ?? "");
  const credentialsDir = str("credentials_dir") ?? (workDir === undefined ? undefined : join(workDir, "credentials"));
  const tofuBin = str("tofu_bin") ?? "tofu";
  const paths = (key: string): string[] => str(key)?.split(PATH_LIST_SEPARATOR) ?? [];
  const listen = str("listen") ?? "off";
  const logFormat = str("log_format");
  return {
    ...optional("configFile", str("config") === undefined ? undefined : resolve(str("config") ?? "")),
    ...optional("controlPlaneUrl", str("control_plane_url")?.replace(/\/+$/, "")),
    ...optional(
      "token",
      tokenFile !== undefined ? { file: tokenFile } : tokenValue !== undefined ? { value: tokenValue } : undefined,
    ),
    ...optional("keySource", keyUri === undefined ? undefined : parseKeyUri(keyUri)),
    ...optional("workDir", workDir),
    ...optional("credentialsDir", credentialsDir === undefined ? undefined : resolve(credentialsDir)),
    ...optional("workspacesDir", workDir === undefined ? undefined : join(workDir, "workspaces")),
    ...optional("homesDir", workDir === undefined ? undefined : join(workDir, "homes")),
    ...optional("caFile", str("ca_file")),
    tofuBin: tofuBin.includes("/") ? resolve(tofuBin) : tofuBin,
    isolation: str("isolation") === "none" ? "none" : "sandbox",
    executor: parseExecutor(str("executor") ?? "local") ?? { kind: "local" },
    sandboxReadOnly: paths("sandbox_ro_bind"),
    sandboxReadWrite: paths("sandbox_bind"),
    cloudAuthHosts: paths("cloud_auth_host"),
    runCloudEnv: str("run_cloud_env") === "pass" ? "pass" : "drop",
    concurrency: num("concurrency"),
    drainTimeoutMs: num("drain_timeout"),
    cancelGraceMs: num("cancel_grace"),
    runTimeoutMs: num("run_timeout"),
    maxBundleLifetimeSeconds: num("max_bundle_lifetime") / 1000,
    clockSkewSeconds: num("clock_skew") / 1000,
    maxConfigBytes: num("max_config_bytes"),
    ...optional("baseDockerConfigFile", str("base_docker_config")),
    ...optional("tofuCliConfigFile", str("tofu_cli_config")),
    ...optional("name", str("name")),
    logLevel: str("log_level") ?? "info",
    ...(logFormat === "json" || logFormat === "pretty" ? { logFormat } : {}),
    ...(listen === "off" ? {} : { listen: hostPort(listen) }),
    retry: { baseMs: num("retry_base"), capMs: num("retry_max") },
    preflight: get("preflight") !== false,
  };
}

/** Whether a draft has every setting the agent needs (true when its configuration had no problem). */
export function isComplete(draft: SettingsDraft): draft is AgentSettings {
  return (
    draft.controlPlaneUrl !== undefined &&
    draft.token !== undefined &&
    draft.keySource !== undefined &&
    draft.workDir !== undefined &&
    draft.credentialsDir !== undefined &&
    draft.workspacesDir !== undefined &&
    draft.homesDir !== undefined
  );
}

/**
 * The settings pipeline: flags (only those given), then OCI_CRED_AGENT_* variables, then the
 * config file, then defaults; every problem at once; the typed settings when there is none.
 */
export async function loadSettings(
  flags: Record<string, string | boolean | undefined>,
  env: NodeJS.ProcessEnv,
): Promise<LoadedSettings> {
  const { resolved, problems } = await resolveRunConfig(flags, env);
  const draft = settingsFromConfig(resolved);
  return problems.length === 0 && isComplete(draft)
    ? { resolved, problems, draft, settings: draft }
    : { resolved, problems, draft };
}

/** The settings, or CONFIG_INVALID listing every problem. */
export function requireSettings(loaded: LoadedSettings): AgentSettings {
  throwIfProblems(loaded.problems);
  if (loaded.settings === undefined)
    throw new AgentError("INTERNAL", "the configuration resolved without problems but is incomplete; please report it");
  return loaded.settings;
}
