/**
 * Materialize: open a run's sealed bundle and write its credentials where every tool of the
 * run reads them. Everything that can be refused is decided in memory first (bundle, export,
 * base config, CLI configuration); only then is the run directory created. If writing fails
 * part-way, what was written is wiped again, so a refusal never leaves a secret on disk.
 */
import { resolve } from "node:path";
import { AgentError } from "../core/errors.js";
import { selectCredentials, type CredentialSelection, type IgnoredEntry, type SelectedCredential } from "../core/credential-selection.js";
import { parseBaseDockerConfig, renderRegistryFiles, type DockerConfigDoc } from "../core/docker-config.js";
import { parseExport } from "../core/export-payload.js";
import type { ReplayCache } from "../core/replay-cache.js";
import { renderTofuCliConfig, type OperatorCliConfigSource } from "../core/tofu-cli-config.js";
import type { AgentPrivateKey } from "../crypto/agent-key.js";
import { openBundle } from "../crypto/sealed-bundle.js";
import { createRunDir, runFilePath, wipeRunDir, writeRunFile } from "../fs/run-dir.js";
import type { FileSystem } from "../fs/secure-fs.js";
import { findExecutable } from "../fs/executables.js";

export interface MaterializeRequest {
  readonly bundle: Uint8Array;
  readonly keys: ReadonlyMap<string, AgentPrivateKey>;
  readonly agentId: string;
  readonly runId: string;
  readonly runDir: string;
  readonly nowMs: number;
  readonly maxLifetimeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxBundleBytes?: number;
  readonly replayCache?: ReplayCache;
  readonly baseDockerConfig?: { readonly path: string; readonly text: string };
  readonly tofuCliConfigSources: readonly OperatorCliConfigSource[];
  readonly fs: FileSystem;
  /** Whether `docker-credential-<name>` can be run; checked before anything is written. */
  readonly helperExists?: (name: string) => Promise<boolean>;
}

export interface MaterializedRegistry {
  readonly host: string;
  readonly integration_id: string;
  readonly integration_name: string | null;
}

export interface MaterializeResult {
  readonly runDir: string;
  readonly env: Readonly<Record<string, string>>;
  readonly registries: readonly MaterializedRegistry[];
  readonly ignored: readonly IgnoredEntry[];
  readonly warnings: readonly string[];
  readonly bundleId: string;
  /**
   * Every secret value in the forms it may appear in output (raw, base64 `auth`, JSON-escaped),
   * for value-based log redaction. Never printed.
   */
  readonly secretValues: readonly string[];
  /** The selected credentials, secrets included, for the check before init. Never printed. */
  readonly credentials: readonly SelectedCredential[];
}

/** Tools that read the Docker config and match registry hosts only (no repository-scoped keys). */
const DOCKER_FAMILY_TOOLS = ["docker", "oras", "crane", "helm", "regctl"];

async function executablesOnPath(names: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const name of names) if ((await findExecutable(name)) !== undefined) found.push(name);
  return found;
}

/** Looks for an executable `docker-credential-<name>` on PATH, as tools resolve it. */
export async function defaultHelperExists(name: string): Promise<boolean> {
  return (await findExecutable(`docker-credential-${name}`)) !== undefined;
}

export function secretFormsOf(selected: readonly SelectedCredential[]): string[] {
  const forms = new Set<string>();
  for (const { entry } of selected) {
    if (entry.credentialHelper !== undefined) continue;
    const { password, username } = entry;
    forms.add(password);
    forms.add(JSON.stringify(password).slice(1, -1));
    forms.add(Buffer.from(`${username}:${password}`, "utf8").toString("base64"));
    forms.add(Buffer.from(password, "utf8").toString("base64"));
  }
  return [...forms].filter((s) => s.length >= 4);
}

/** Opens a sealed bundle and selects its credentials (one per registry and path); writes nothing. */
export async function openExport(request: Omit<MaterializeRequest, "runDir" | "tofuCliConfigSources" | "fs" | "baseDockerConfig" | "helperExists">): Promise<CredentialSelection & { readonly bundleId: string }> {
  const opened = await openBundle(request.bundle, {
    keys: request.keys,
    agentId: request.agentId,
    runId: request.runId,
    nowMs: request.nowMs,
    maxLifetimeSeconds: request.maxLifetimeSeconds,
    clockSkewSeconds: request.clockSkewSeconds,
    ...(request.maxBundleBytes === undefined ? {} : { maxBytes: request.maxBundleBytes }),
    ...(request.replayCache === undefined ? {} : { replayCache: request.replayCache }),
  });
  let exported;
  try {
    exported = parseExport(new TextDecoder().decode(opened.plaintext));
  } finally {
    opened.plaintext.fill(0);
  }
  return { ...selectCredentials(exported), bundleId: opened.header.bundle_id };
}

export async function materializeRun(request: MaterializeRequest): Promise<MaterializeResult> {
  const runDir = resolve(request.runDir);
  const selection = await openExport(request);
  const base: DockerConfigDoc | undefined =
    request.baseDockerConfig === undefined ? undefined : parseBaseDockerConfig(request.baseDockerConfig.text, request.baseDockerConfig.path);
  const registryFiles = renderRegistryFiles(selection.selected, base);
  const dockerConfigPath = runFilePath(runDir, "dockerConfig");
  const tofu = renderTofuCliConfig({
    sources: request.tofuCliConfigSources,
    dockerConfigPath,
    exportedRegistries: new Set(selection.selected.map((s) => s.target.registry)),
  });

  const helperExists = request.helperExists ?? defaultHelperExists;
  const helpers = [...new Set(selection.selected.flatMap((s) => (s.entry.credentialHelper === undefined ? [] : [s.entry.credentialHelper])))];
  if (helpers.length > 0) {
    const missing: string[] = [];
    for (const h of helpers) if (!(await helperExists(h))) missing.push(h);
    if (missing.length > 0) {
      const users = selection.selected.filter((s) => s.entry.credentialHelper !== undefined && missing.includes(s.entry.credentialHelper));
      throw new AgentError(
        "CREDENTIAL_HELPER_NOT_FOUND",
        `${missing.map((m) => `docker-credential-${m}`).join(", ")} ${missing.length === 1 ? "is" : "are"} not on PATH, but ${users.map((u) => `integration ${u.entry.id} (${u.target.host})`).join(", ")} ${users.length === 1 ? "needs" : "need"} it; install the helper on the agent host (and in its PATH). The run stops here rather than fall back to other credentials`,
        { helpers: missing },
      );
    }
  }

  // The operator's own helpers stay in the file OpenTofu reads; a missing one makes tofu init fail
  // for the registries it serves (for credsStore: every registry the run does not export).
  const baseHelpers = new Map<string, string>();
  for (const [key, name] of Object.entries(base?.credHelpers ?? {})) if (name !== "" && !registryFiles.overridden.some((o) => o.key === key)) baseHelpers.set(name, key);
  if (base?.credsStore !== undefined && base.credsStore !== "") baseHelpers.set(base.credsStore, "credsStore (every registry not exported)");
  const baseHelperWarnings: string[] = [];
  for (const [name, servedBy] of baseHelpers) {
    if (!(await helperExists(name))) {
      baseHelperWarnings.push(`the base Docker config names docker-credential-${name} for ${servedBy}, but it is not on PATH: tofu init will fail for those registries; install it or remove it from --base-docker-config`);
    }
  }

  // Which tools of the Docker CLI family (host-only keys) the run's environment has.
  const dockerFamilyOnPath = selection.selected.some((s) => s.target.path !== undefined) ? await executablesOnPath(DOCKER_FAMILY_TOOLS) : [];

  const warnings = [
    ...baseHelperWarnings,
    ...selection.selected
      .filter((s) => s.target.path !== undefined)
      .map(
        (s) =>
          `${s.target.host} is repository-scoped: OpenTofu and skopeo/podman/buildah use it for repositories under ${s.target.path ?? ""}; the Docker CLI family matches hosts only and ignores it${dockerFamilyOnPath.length > 0 ? ` (on PATH here: ${dockerFamilyOnPath.join(", ")})` : " (none of docker, oras, crane, helm, regctl is on PATH here)"}`,
      ),
    ...registryFiles.overridden.map(
      (o) => `the base Docker config's ${o.kind} entry ${JSON.stringify(o.key)} is replaced by the exported credential for that registry`,
    ),
    ...tofu.warnings,
  ];

  // createRunDir cleans up after itself; from here on, this function owns the directory.
  await createRunDir(request.fs, runDir, { runId: request.runId, agentId: request.agentId, createdAt: new Date(request.nowMs).toISOString() });
  try {
    await writeRunFile(request.fs, runDir, "dockerConfig", registryFiles.dockerConfig);
    await writeRunFile(request.fs, runDir, "containersAuth", registryFiles.containersAuth);
    await writeRunFile(request.fs, runDir, "tofuCliConfig", tofu.text);
  } catch (error) {
    await wipeRunDir(request.fs, runDir).catch(() => undefined);
    throw error;
  }

  return {
    runDir,
    env: {
      DOCKER_CONFIG: resolve(runDir, "docker"),
      REGISTRY_AUTH_FILE: runFilePath(runDir, "containersAuth"),
      TF_CLI_CONFIG_FILE: runFilePath(runDir, "tofuCliConfig"),
    },
    registries: selection.selected.map((s) => ({
      host: s.target.host,
      integration_id: s.entry.id,
      integration_name: s.entry.name ?? null,
    })),
    ignored: selection.ignored,
    warnings,
    bundleId: selection.bundleId,
    secretValues: secretFormsOf(selection.selected),
    credentials: selection.selected,
  };
}
