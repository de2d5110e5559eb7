/**
 * The daemon's configuration: one schema for flags, environment (OCI_CRED_AGENT_*) and a
 * config file (YAML or JSON), in that order of precedence. The same table generates
 * docs/configuration.md, the commander options and the validation. Pure.
 */
import { parseByteSize } from "../core/byte-size.js";
import { parseDurationMs } from "../core/duration.js";
import { parseCloudHostPattern } from "../core/cloud-hosts.js";
import { parseHostPort } from "../core/host-port.js";

export type FieldKind =
  | "string"
  | "path"
  | "path-list"
  | "host-list"
  | "url"
  | "duration"
  | "int"
  | "bool"
  | "size"
  | "listen"
  | "enum"
  | "key-uri";

/**
 * A `path-list` or `host-list` value travels as one string, its items separated by newlines (a
 * repeated flag, a YAML list, or an environment variable separated by `:` for paths and by `,`
 * for hosts, which may carry a port, become that).
 */
export const PATH_LIST_SEPARATOR = "\n";

/** Whether a field takes several values (a repeated flag, a YAML list). */
export function isListKind(kind: FieldKind): boolean {
  return kind === "path-list" || kind === "host-list";
}

export interface FieldSpec {
  /** Key in the config file (snake_case). */
  readonly key: string;
  readonly flag: string;
  readonly env: string;
  readonly kind: FieldKind;
  readonly description: string;
  readonly default?: string;
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** Never shown in errors or `config print`. */
  readonly secret?: boolean;
  readonly required?: boolean;
  /** Only from the environment or a flag, never the file (e.g. the file's own path). */
  readonly notInFile?: boolean;
  /** Never a flag: a command line is visible to every user of the host (/proc/PID/cmdline). */
  readonly noFlag?: boolean;
}

const f = (key: string, kind: FieldKind, description: string, extra: Partial<FieldSpec> = {}): FieldSpec => ({
  key,
  flag: `--${key.replace(/_/g, "-")}`,
  env: `OCI_CRED_AGENT_${key.toUpperCase()}`,
  kind,
  description,
  ...extra,
});

export const RUN_FIELDS: readonly FieldSpec[] = [
  f("config", "path", "YAML or JSON file with any of these settings (keys as in the first column)", {
    notInFile: true,
  }),
  f("control_plane_url", "url", "the control plane's base URL: https://, or http:// on loopback", { required: true }),
  f("allow_insecure_control_plane", "bool", "accept a plain http:// control plane URL that is not loopback", {
    default: "false",
  }),
  f("token_file", "path", "file holding the agent pool token (preferred over token)"),
  f(
    "token",
    "string",
    "the agent pool token itself, from the environment only (never a flag: command lines are visible to every user), with a warning (it leaks into child processes and crash dumps)",
    { secret: true, notInFile: true, noFlag: true },
  ),
  f(
    "key",
    "key-uri",
    "where the private key(s) live: file:PATH (a key file or a directory of key files), systemd-credential:NAME, keyring:SERVICE/ACCOUNT or env:NAME",
  ),
  f("key_file", "path", "shorthand for --key file:PATH"),
  f("work_dir", "path", "the agent's working directory (workspaces, and credentials unless credentials_dir)", {
    required: true,
  }),
  f("credentials_dir", "path", "where run credential directories go; put it on tmpfs (default <work_dir>/credentials)"),
  f(
    "ca_file",
    "path",
    "extra CA certificates (PEM) to trust for the control plane, besides the system's and NODE_EXTRA_CA_CERTS",
  ),
  f("tofu_bin", "string", "the tofu executable", { default: "tofu" }),
  f(
    "isolation",
    "enum",
    "what each phase runs in: sandbox (bubblewrap: new user, mount, PID, IPC and UTS namespaces; the phase sees the system read-only, its own workspace, its own credentials and the network, nothing of the agent; the agent refuses to start where it cannot be set up) or none (the phase runs as the agent's own child and can reach all the agent's user can: its key, token and other runs)",
    { default: "sandbox", choices: ["sandbox", "none"] },
  ),
  f(
    "executor",
    "string",
    "where phases run: local (this host, in the sandbox unless isolation is none), or runner:PATH (an `oci-cred-agent runner` listening on the Unix socket PATH, in another container without the key or the token: Kubernetes pods, docs/kubernetes.md)",
    { default: "local" },
  ),
  f(
    "sandbox_ro_bind",
    "path-list",
    "more paths the sandbox shows read-only at the same place (a plugin cache, a CA bundle, a tool directory); repeat the flag, or separate with : in the environment",
  ),
  f(
    "sandbox_bind",
    "path-list",
    "more paths the sandbox shows read-write at the same place (a shared plugin cache); repeat the flag, or separate with : in the environment",
  ),
  f(
    "cloud_auth_host",
    "host-list",
    "registry hosts (HOST[:PORT], a leading *. for any name under it) that may receive credentials minted from the pool's cloud identity for cloud_auth entries, besides each cloud's own registries (aws *.dkr.ecr.REGION.amazonaws.com[.cn] of the entry's region, azure *.azurecr.io/.cn/.us, gcp *.pkg.dev, gcr.io, *.gcr.io): private endpoints and proxies you trust with that identity; repeat the flag, or separate with , in the environment",
  ),
  f(
    "run_cloud_env",
    "enum",
    "the pool's cloud identity and runs: drop (every variable through which the clouds' SDKs and CLIs take an identity, such as AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, GOOGLE_APPLICATION_CREDENTIALS, stays out of a run's environment, and the sandbox masks the files they name where it would show them) or pass (runs inherit them, for runs whose providers must act as the pool; the metadata service stays reachable either way: docs/architecture.md)",
    { default: "drop", choices: ["drop", "pass"] },
  ),
  f("concurrency", "int", "runs at once", { default: "1", min: 1, max: 1024 }),
  f("drain_timeout", "duration", "on SIGTERM, how long running runs may finish before they are canceled", {
    default: "5m",
  }),
  f("cancel_grace", "duration", "after SIGTERM to tofu, how long before SIGKILL", { default: "10s" }),
  f("run_timeout", "duration", "cancel a run that takes longer", { default: "2h" }),
  f("max_bundle_lifetime", "duration", "refuse bundles valid for longer than this", { default: "1h" }),
  f("clock_skew", "duration", "how far in the future a bundle's issue time may be", { default: "2m" }),
  f("max_config_bytes", "size", "refuse configuration archives that expand past this", { default: "256MiB" }),
  f("base_docker_config", "path", "an operator Docker config merged into every run's"),
  f(
    "tofu_cli_config",
    "path",
    "the operator's OpenTofu CLI configuration, reproduced in every run's (default: /etc/oci-cred-agent/tofu.tfrc when it exists and the agent's user can reach it); never read from HOME, XDG_CONFIG_HOME, TF_CLI_CONFIG_FILE or ~/.terraform.d",
  ),
  f("name", "string", "the agent's name at the control plane (default host-pid)"),
  f("log_level", "enum", "log level", {
    default: "info",
    choices: ["fatal", "error", "warn", "info", "debug", "trace"],
  }),
  f("log_format", "enum", "json lines, or pretty text (default: pretty on a terminal)", {
    choices: ["json", "pretty"],
  }),
  f("listen", "listen", "serve /healthz, /readyz and /metrics here (HOST:PORT, or off)", { default: "127.0.0.1:9480" }),
  f(
    "preflight",
    "bool",
    "check each exported credential against its registry before init (GET /v2/, then Basic or a pull-scoped token) and stop the run early on a refusal; the flag --no-preflight (or false) turns it off",
    { default: "true", flag: "--no-preflight" },
  ),
  f("retry_base", "duration", "first retry delay after a control-plane failure (full jitter)", { default: "1s" }),
  f("retry_max", "duration", "longest retry delay (a Retry-After is capped to it too)", { default: "60s" }),
];

export type Source = "flag" | "env" | "file" | "default";

interface ParsedValue {
  readonly value: string | number | boolean;
  readonly source: Source;
}

/** Checks one raw value; returns the parsed value or what was expected. */
export function parseFieldValue(
  spec: FieldSpec,
  raw: string,
): { ok: true; value: string | number | boolean } | { ok: false; expected: string } {
  const text = raw.trim();
  switch (spec.kind) {
    case "string":
    case "path":
      return text === "" ? { ok: false, expected: "a non-empty value" } : { ok: true, value: text };
    case "path-list": {
      const paths = text.split(PATH_LIST_SEPARATOR).map((p) => p.trim());
      return paths.every((p) => p.startsWith("/") && !p.split("/").includes(".."))
        ? { ok: true, value: paths.join(PATH_LIST_SEPARATOR) }
        : { ok: false, expected: "absolute paths (starting with /, without ..)" };
    }
    case "host-list": {
      const hosts = text.split(PATH_LIST_SEPARATOR).map((h) => parseCloudHostPattern(h));
      return hosts.every((h) => h !== undefined)
        ? { ok: true, value: hosts.join(PATH_LIST_SEPARATOR) }
        : { ok: false, expected: "host names HOST[:PORT] (such as registry.corp.example:5000 or *.corp.example)" };
    }
    case "url":
      try {
        const u = new URL(text);
        return u.protocol === "https:" || u.protocol === "http:"
          ? { ok: true, value: text }
          : { ok: false, expected: "an https:// URL" };
      } catch {
        return { ok: false, expected: "an https:// URL such as https://cp.example.com" };
      }
    case "duration": {
      const ms = parseDurationMs(text);
      return ms !== undefined && ms > 0
        ? { ok: true, value: ms }
        : { ok: false, expected: "a duration such as 30s, 10m or 1h" };
    }
    case "int": {
      const n = Number(text);
      const inRange =
        Number.isInteger(n) && n >= (spec.min ?? Number.MIN_SAFE_INTEGER) && n <= (spec.max ?? Number.MAX_SAFE_INTEGER);
      return inRange
        ? { ok: true, value: n }
        : { ok: false, expected: `a whole number from ${spec.min ?? "-∞"} to ${spec.max ?? "∞"}` };
    }
    case "bool":
      if (/^(true|1|yes|on)$/i.test(text)) return { ok: true, value: true };
      if (/^(false|0|no|off)$/i.test(text)) return { ok: true, value: false };
      return { ok: false, expected: "true or false" };
    case "size": {
      const n = parseByteSize(text);
      return n !== undefined ? { ok: true, value: n } : { ok: false, expected: "a size such as 256MiB or 64k" };
    }
    case "listen":
      return text === "off" || parseHostPort(text) !== undefined
        ? { ok: true, value: text }
        : { ok: false, expected: "HOST:PORT (such as 127.0.0.1:9480) or off" };
    case "enum":
      return spec.choices?.includes(text)
        ? { ok: true, value: text }
        : { ok: false, expected: `one of ${spec.choices?.join(", ") ?? ""}` };
    case "key-uri":
      return /^(file:.+|systemd-credential:[^/]+|keyring:[^/]+\/.+|env:[A-Za-z_][A-Za-z0-9_]*)$/.test(text)
        ? { ok: true, value: text }
        : { ok: false, expected: "file:PATH, systemd-credential:NAME, keyring:SERVICE/ACCOUNT or env:NAME" };
  }
}

export interface ConfigInputs {
  /** Only the flags given on the command line (not commander defaults), by key. */
  readonly flags: Readonly<Record<string, string | boolean | undefined>>;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The config file's contents, already parsed, and its path for messages. */
  readonly file?: { readonly path: string; readonly data: unknown };
}

export interface ResolvedConfig {
  readonly values: ReadonlyMap<string, ParsedValue>;
  readonly warnings: readonly string[];
}

export interface ConfigProblem {
  readonly key: string;
  readonly message: string;
}

/** A URL's user information (user:password@) replaced, so that it is never shown or logged. */
function withoutUserInfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1[REDACTED]@");
}

/** A refused value as an error may show it: never a secret, never a URL's user information. */
function shownValue(spec: FieldSpec, raw: string): string {
  if (spec.secret) return "(value hidden)";
  const text = spec.kind === "url" ? withoutUserInfo(raw) : raw;
  // A URL too broken to find its user information in may still hold one: hide it whole.
  if (spec.kind === "url" && text.replace("[REDACTED]@", "").includes("@"))
    return "(value hidden: it may hold user information)";
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
}

function describeSource(spec: FieldSpec, source: Source, filePath: string | undefined): string {
  if (source === "flag") return spec.flag;
  if (source === "env") return spec.env;
  if (source === "file") return `${spec.key} in ${filePath ?? "the config file"}`;
  return "the default";
}

function fixHint(spec: FieldSpec): string {
  const where = [...(spec.noFlag ? [] : [spec.flag]), spec.env];
  return `set ${where.join(", ")}${spec.notInFile ? "" : ` or ${spec.key} in the config file`}`;
}

/** Resolves every field from flags, environment, file and defaults; collects every problem at once. */
export function resolveConfig(
  fields: readonly FieldSpec[],
  inputs: ConfigInputs,
): { config: ResolvedConfig; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const warnings: string[] = [];
  const values = new Map<string, ParsedValue>();
  let fileData: Record<string, unknown> = {};
  if (inputs.file) {
    const data = inputs.file.data;
    if (data === null || data === undefined) fileData = {};
    else if (typeof data !== "object" || Array.isArray(data)) {
      problems.push({
        key: "config",
        message: `${inputs.file.path} must hold a mapping of settings (key: value), not ${Array.isArray(data) ? "a list" : typeof data}`,
      });
    } else fileData = data as Record<string, unknown>;
    for (const key of Object.keys(fileData)) {
      const spec = fields.find((s) => s.key === key);
      if (spec === undefined) {
        problems.push({
          key,
          message: `${inputs.file.path} has an unknown setting ${JSON.stringify(key)}; known settings are listed in docs/configuration.md`,
        });
      } else if (spec.notInFile) {
        problems.push({
          key,
          message: `${key} in ${inputs.file.path} is not read from a config file${spec.secret ? " (its value is not shown)" : ""}: remove it there and ${fixHint(spec)}`,
        });
      }
    }
  }
  for (const spec of fields) {
    const flag = spec.noFlag ? undefined : inputs.flags[spec.key];
    const env = inputs.env[spec.env];
    const fromFile = spec.notInFile ? undefined : fileData[spec.key];
    let raw: string | undefined;
    let source: Source = "default";
    if (flag !== undefined) {
      raw = String(flag);
      source = "flag";
    } else if (env !== undefined && env !== "") {
      raw =
        spec.kind === "path-list"
          ? env.split(":").join(PATH_LIST_SEPARATOR)
          : spec.kind === "host-list"
            ? env.split(",").join(PATH_LIST_SEPARATOR)
            : env;
      source = "env";
    } else if (
      isListKind(spec.kind) &&
      Array.isArray(fromFile) &&
      fromFile.length > 0 &&
      fromFile.every((x) => typeof x === "string")
    ) {
      raw = fromFile.join(PATH_LIST_SEPARATOR);
      source = "file";
    } else if (fromFile !== undefined && fromFile !== null) {
      if (typeof fromFile !== "string" && typeof fromFile !== "number" && typeof fromFile !== "boolean") {
        problems.push({
          key: spec.key,
          message: `${spec.key} in ${inputs.file?.path ?? "the config file"} must be a single value, not a ${Array.isArray(fromFile) ? "list" : typeof fromFile === "object" ? "mapping" : typeof fromFile}`,
        });
        continue;
      }
      raw = String(fromFile);
      source = "file";
    } else if (spec.default !== undefined) {
      raw = spec.default;
    }
    if (raw === undefined) {
      if (spec.required) problems.push({ key: spec.key, message: `${spec.key} is required: ${fixHint(spec)}` });
      continue;
    }
    const parsed = parseFieldValue(spec, raw);
    if (!parsed.ok) {
      const shown = shownValue(spec, raw);
      problems.push({
        key: spec.key,
        message: `${spec.key}: ${shown} from ${describeSource(spec, source, inputs.file?.path)} is not ${parsed.expected}; ${fixHint(spec)}`,
      });
      continue;
    }
    values.set(spec.key, { value: parsed.value, source });
    if (spec.key === "token" && source === "env") {
      warnings.push(
        `the agent token comes from ${spec.env}: environment variables leak into child processes and crash dumps; prefer --token-file`,
      );
    }
  }
  return { config: { values, warnings }, problems };
}

/** The effective configuration with the source of each value, secrets redacted (`config print`). */
export function describeConfig(
  fields: readonly FieldSpec[],
  config: ResolvedConfig,
): { key: string; value: string | number | boolean | null; source: Source | "unset" }[] {
  return fields.map((spec) => {
    const v = config.values.get(spec.key);
    if (v === undefined) return { key: spec.key, value: null, source: "unset" };
    if (spec.secret) return { key: spec.key, value: "[REDACTED]", source: v.source };
    // A URL may carry user information (refused by `run`, but print must not show it either).
    const value = spec.kind === "url" && typeof v.value === "string" ? withoutUserInfo(v.value) : v.value;
    return { key: spec.key, value, source: v.source };
  });
}
