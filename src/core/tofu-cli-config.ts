/**
 * Renders the OpenTofu CLI configuration a run's tofu reads through TF_CLI_CONFIG_FILE. Pure.
 *
 * OpenTofu ignores DOCKER_CONFIG. The one dependable way to point it at the run's credentials
 * is an `oci_default_credentials` block naming the file in `docker_style_config_files`: then it
 * reads exactly that file, fails loudly if the file is missing or broken, and does not fall back
 * to whatever ambient files the host has (internal/command/cliconfig/oci_credentials.go).
 *
 * Setting TF_CLI_CONFIG_FILE replaces the operator's own CLI configuration and skips the CLI
 * config directory (internal/command/cliconfig/cliconfig.go, LoadConfig), so the operator's
 * configuration is reproduced verbatim above the agent's block. Only one
 * `oci_default_credentials` block may exist in the whole CLI configuration, so an operator
 * configuration that has one is refused with instructions; `oci_credentials` blocks for a
 * registry the run exports are cut out (they would otherwise win over the export), others kept.
 */
import { AgentError } from "./errors.js";
import { HclScanError, lineOf, scanTopLevel } from "./hcl-top-level.js";
import { identityOfConfigKey } from "./registry-address.js";

export interface OperatorCliConfigSource {
  readonly path: string;
  readonly text: string;
}

export interface TofuCliConfigInput {
  /** The operator's main CLI config file first, then the CLI config directory's files. */
  readonly sources: readonly OperatorCliConfigSource[];
  /** Absolute path of the Docker-style file OpenTofu must read. */
  readonly dockerConfigPath: string;
  /** Registries the run exports (RegistryTarget.registry values: `host` or `host/path`). */
  readonly exportedRegistries: ReadonlySet<string>;
}

export interface RenderedTofuCliConfig {
  readonly text: string;
  readonly warnings: readonly string[];
}

const BLOCK_COMMENT =
  "# oci-cred-agent: OpenTofu reads OCI registry credentials for this run from exactly the file below\n" +
  "# (docs/architecture.md). It is removed when the run ends.\n";

/** A host-level export covers every key of its host; a scoped export only its own key. */
function exportedFor(input: RunCliConfigInput, identity: string): boolean {
  return input.exportedRegistries.has(identity) || input.exportedRegistries.has(identity.split("/")[0] ?? identity);
}

function isJson(text: string): boolean {
  return text.trimStart().startsWith("{");
}

function conflict(path: string, line: number | undefined): AgentError {
  const where = line === undefined ? path : `${path}:${line}`;
  return new AgentError(
    "TOFU_CLI_CONFIG_CONFLICT",
    `the OpenTofu CLI configuration ${where} has an oci_default_credentials block, and OpenTofu allows only one; ` +
      "the agent needs that block to point tofu at the run's credentials. Remove it: move its docker_style_config_files " +
      "into --base-docker-config, and its docker_credentials_helper into that file's credsStore",
    { path },
  );
}

/** One `oci_credentials` block of an HCL source: where it stands and which registry it names. */
interface OciCredentialsBlock {
  readonly label: string;
  readonly registry: string | undefined;
  readonly start: number;
  readonly end: number;
  readonly line: number;
}

/**
 * The operator's CLI configuration, parsed and checked once (at start): every per-run render
 * only cuts and joins text. Parse errors and the oci_default_credentials conflict surface here.
 */
export type PreparedTofuCliConfig =
  | {
      readonly kind: "hcl";
      readonly sources: readonly {
        readonly path: string;
        readonly text: string;
        readonly ociCredentials: readonly OciCredentialsBlock[];
      }[];
      readonly warnings: readonly string[];
    }
  | {
      readonly kind: "json";
      readonly path: string;
      readonly doc: Readonly<Record<string, unknown>>;
      readonly warnings: readonly string[];
    };

function prepareHcl(sources: readonly OperatorCliConfigSource[]): PreparedTofuCliConfig {
  const warnings: string[] = [];
  const prepared = [];
  for (const source of sources) {
    if (isJson(source.text)) {
      warnings.push(
        `the CLI configuration ${source.path} is JSON and cannot be combined with HCL files; it is not part of the run's CLI configuration`,
      );
      continue;
    }
    let items;
    try {
      items = scanTopLevel(source.text);
    } catch (error) {
      const line = error instanceof HclScanError ? lineOf(source.text, error.offset) : undefined;
      throw new AgentError(
        "TOFU_CLI_CONFIG_INVALID",
        `the OpenTofu CLI configuration ${source.path}${line === undefined ? "" : `:${line}`} cannot be parsed (${error instanceof Error ? error.message : "syntax error"}); fix it (tofu would refuse it too)`,
        { path: source.path },
      );
    }
    const ociCredentials: OciCredentialsBlock[] = [];
    for (const item of items) {
      if (item.name === "oci_default_credentials") throw conflict(source.path, lineOf(source.text, item.start));
      if (item.name === "oci_credentials" && item.kind === "block") {
        const label = item.labels[0] ?? "";
        ociCredentials.push({
          label,
          registry: identityOfConfigKey(label),
          start: item.start,
          end: item.end,
          line: lineOf(source.text, item.start),
        });
      }
    }
    prepared.push({ path: source.path, text: source.text, ociCredentials });
  }
  return { kind: "hcl", sources: prepared, warnings };
}

function prepareJson(main: OperatorCliConfigSource, rest: readonly OperatorCliConfigSource[]): PreparedTofuCliConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(main.text);
  } catch {
    throw new AgentError(
      "TOFU_CLI_CONFIG_INVALID",
      `the OpenTofu CLI configuration ${main.path} looks like JSON but does not parse; fix it (tofu would refuse it too)`,
      { path: main.path },
    );
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new AgentError(
      "TOFU_CLI_CONFIG_INVALID",
      `the OpenTofu CLI configuration ${main.path} is not a JSON object`,
      {
        path: main.path,
      },
    );
  }
  if ("oci_default_credentials" in doc) throw conflict(main.path, undefined);
  const warnings = rest.map(
    (other) =>
      `the CLI configuration ${other.path} cannot be combined with the JSON file ${main.path}; it is not part of the run's CLI configuration`,
  );
  return { kind: "json", path: main.path, doc: doc as Record<string, unknown>, warnings };
}

/** Parses and checks the operator's CLI configuration (the main file first, then the directory's files). Pure. */
export function prepareTofuCliConfig(sources: readonly OperatorCliConfigSource[]): PreparedTofuCliConfig {
  const [main, ...rest] = sources;
  return main !== undefined && isJson(main.text) ? prepareJson(main, rest) : prepareHcl(sources);
}

function renderHcl(
  prepared: Extract<PreparedTofuCliConfig, { kind: "hcl" }>,
  input: RunCliConfigInput,
  warnings: string[],
): string {
  const parts: string[] = [];
  for (const source of prepared.sources) {
    let text = source.text;
    for (const block of [...source.ociCredentials].reverse()) {
      if (block.registry !== undefined && exportedFor(input, block.registry)) {
        warnings.push(
          `oci_credentials "${block.label}" in ${source.path}:${block.line} is left out of this run's CLI configuration because the run exports credentials for ${block.registry}`,
        );
        text = `${text.slice(0, block.start)}# (oci_credentials "${block.label}" left out by oci-cred-agent)${text.slice(block.end)}`;
      }
    }
    parts.push(`# --- from ${source.path} ---\n${text}${text.endsWith("\n") ? "" : "\n"}`);
  }
  const block =
    `${BLOCK_COMMENT}oci_default_credentials {\n` +
    `  discover_ambient_credentials = true\n` +
    `  docker_style_config_files    = [${JSON.stringify(input.dockerConfigPath)}]\n` +
    `}\n`;
  return [...parts, block].join("\n");
}

function renderJson(
  prepared: Extract<PreparedTofuCliConfig, { kind: "json" }>,
  input: RunCliConfigInput,
  warnings: string[],
): string {
  const obj = { ...prepared.doc };
  // HCL's JSON syntax writes labelled blocks as an object keyed by label, or a list of such objects.
  const cut = (labelled: Record<string, unknown>): Record<string, unknown> => {
    const kept: Record<string, unknown> = {};
    for (const [label, value] of Object.entries(labelled)) {
      const registry = identityOfConfigKey(label);
      if (registry !== undefined && exportedFor(input, registry)) {
        warnings.push(
          `oci_credentials "${label}" in ${prepared.path} is left out of this run's CLI configuration because the run exports credentials for ${registry}`,
        );
      } else {
        kept[label] = value;
      }
    }
    return kept;
  };
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  const oci = obj["oci_credentials"];
  if (isObject(oci)) obj["oci_credentials"] = cut(oci);
  else if (Array.isArray(oci))
    obj["oci_credentials"] = (oci as unknown[])
      .map((item) => (isObject(item) ? cut(item) : item))
      .filter((item) => !isObject(item) || Object.keys(item).length > 0);
  obj["oci_default_credentials"] = {
    discover_ambient_credentials: true,
    docker_style_config_files: [input.dockerConfigPath],
  };
  return `${JSON.stringify(obj, null, 2)}\n`;
}

/** What one run's CLI configuration depends on besides the operator's configuration. */
export type RunCliConfigInput = Omit<TofuCliConfigInput, "sources">;

/** Renders one run's CLI configuration from the prepared operator configuration. Pure. */
export function renderPreparedTofuCliConfig(
  prepared: PreparedTofuCliConfig,
  input: RunCliConfigInput,
): RenderedTofuCliConfig {
  const warnings = [...prepared.warnings];
  const text = prepared.kind === "json" ? renderJson(prepared, input, warnings) : renderHcl(prepared, input, warnings);
  return { text, warnings };
}

/** Prepares and renders in one step (one-shot callers and tests). */
export function renderTofuCliConfig(input: TofuCliConfigInput): RenderedTofuCliConfig {
  return renderPreparedTofuCliConfig(prepareTofuCliConfig(input.sources), input);
}
