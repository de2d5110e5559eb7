/**
 * One run's registry credentials, from sealed bundle to wipe. The object is the only owner of the
 * run's secrets, and its methods are the lifecycle, in order:
 *
 *   open   the bundle is opened and the export parsed and selected (one credential per registry
 *          and path); nothing is written, so every refusal leaves nothing on disk
 *   mintCloud  `cloud_auth` entries get their short-lived username and password from the pool's
 *          cloud identity (the CloudMinter the composition root hands in); from here on they are
 *          ordinary entries for pre-flight and the files (never `identitytoken`)
 *   check  pre-flight: each selected credential is tried against its registry, in memory,
 *          before any file exists (optional; the caller's signal ends it at once)
 *   write  the run directory and its files, where every tool of the run reads them; a write
 *          that fails part-way wipes what it wrote before it throws
 *   refresh  between phases: minted credentials with less than the cache's margin left (15
 *          minutes, core/cloud-token-cache.ts) are minted again and the files
 *          replaced in place (one rename each), so a run that outlives a token keeps working
 *   wipe   removes what write wrote; idempotent, never throws, and reports every outcome to
 *          the listener given at open: wipe failures have one place to go
 *
 * After wipe the object forgets its secrets (it holds no reference to them).
 */
import { resolve } from "node:path";
import type { CloudMinter, CloudProvider } from "../core/cloud-auth.js";
import { selectCredentials, type IgnoredEntry, type SelectedCredential } from "../core/credential-selection.js";
import { encodeAuth, renderRegistryFiles } from "../core/docker-config.js";
import { AgentError, errnoCode, isAgentError } from "../core/errors.js";
import { parseExport } from "../core/export-payload.js";
import { renderPreparedTofuCliConfig } from "../core/tofu-cli-config.js";
import { openBundle, type OpenOptions } from "../crypto/sealed-bundle.js";
import { findExecutable } from "../fs/executables.js";
import { createRunDir, runFilePath, wipeRunDir, writeRunFile } from "../fs/run-dir.js";
import { withLeftover, type FileSystem } from "../fs/secure-fs.js";
import type { PreflightChecker, PreflightOutcome } from "../registry/preflight.js";
import type { OperatorConfig } from "./operator-config.js";

/** What a wipe did: the files it removed, or the refusal that kept it from finishing. */
export type WipeOutcome =
  | {
      readonly ok: true;
      readonly runDir: string;
      /** Paths removed, relative to the run directory. */ readonly removed: readonly string[];
      readonly absent: boolean;
      readonly durationMs: number;
    }
  | { readonly ok: false; readonly runDir: string; readonly error: AgentError };

/** Where every wipe outcome goes (the daemon logs and counts it; a command prints it). */
export type WipeListener = (outcome: WipeOutcome) => void;

/**
 * Removes a run directory the agent wrote, and tells `listener` how it went. The one place a
 * wipe's failure is turned into data: it never throws, and it never stays silent.
 */
export async function wipeCredentialDir(fs: FileSystem, runDir: string, listener: WipeListener): Promise<WipeOutcome> {
  const started = performance.now();
  let outcome: WipeOutcome;
  try {
    const report = await wipeRunDir(fs, runDir);
    outcome = {
      ok: true,
      runDir,
      removed: report.removed,
      absent: report.absent,
      durationMs: performance.now() - started,
    };
  } catch (error) {
    const agentError = isAgentError(error)
      ? error
      : new AgentError(
          "WIPE_FAILED",
          `removing ${runDir} failed (${errnoCode(error) ?? "unexpected error"}); check the file system and run \`oci-cred-agent wipe --run-dir ${runDir}\``,
          { path: runDir },
          { cause: error },
        );
    outcome = { ok: false, runDir, error: agentError };
  }
  listener(outcome);
  return outcome;
}

/** A write's own error, extended with the cleanup's failure when what was written could not be removed. */
function withCleanup(error: unknown, wiped: WipeOutcome): unknown {
  if (wiped.ok || !isAgentError(error)) return error;
  return withLeftover(error, wiped.runDir, wiped.error, `it may hold credentials; ${wiped.error.message}`);
}

/** The bundle and how to open it (keys, ids, clock, limits: sealed-bundle.ts), and who hears of the wipe. */
export interface OpenRequest extends OpenOptions {
  readonly bundle: Uint8Array;
  /** Told the outcome of the wipe: after a failed write, and at the end of the run. */
  readonly onWipe: WipeListener;
}

export interface WriteRequest {
  readonly runDir: string;
  readonly fs: FileSystem;
  readonly operator: OperatorConfig;
  /** Whether `docker-credential-<name>` can be run; checked before anything is written. */
  readonly helperExists?: (name: string) => Promise<boolean>;
}

/** A credential minted for a `cloud_auth` entry, as a run tells it: never the secret. */
export interface MintedRegistry {
  readonly host: string;
  readonly integration_id: string;
  readonly provider: CloudProvider;
  readonly identity: string;
  readonly expires_at: string;
}

export interface MaterializedRegistry {
  readonly host: string;
  readonly integration_id: string;
  readonly integration_name: string | null;
}

export interface WrittenCredentials {
  readonly runDir: string;
  /** The variables every tool of the run needs to find its files. */
  readonly env: Readonly<Record<string, string>>;
  readonly warnings: readonly string[];
}

/** Tools that read the Docker config and match registry hosts only (no repository-scoped keys). */
const DOCKER_FAMILY_TOOLS = ["docker", "oras", "crane", "helm", "regctl"];

/** Looks for an executable `docker-credential-<name>` on PATH, as tools resolve it. */
export async function defaultHelperExists(name: string): Promise<boolean> {
  return (await findExecutable(`docker-credential-${name}`)) !== undefined;
}

/** The refusal for exported helpers that are not on PATH, or undefined when all are there. */
export async function missingHelpersError(
  selected: readonly SelectedCredential[],
  helperExists: (name: string) => Promise<boolean>,
): Promise<AgentError | undefined> {
  const helpers = [
    ...new Set(selected.flatMap((s) => (s.entry.credentialHelper === undefined ? [] : [s.entry.credentialHelper]))),
  ];
  const missing: string[] = [];
  for (const h of helpers) if (!(await helperExists(h))) missing.push(h);
  if (missing.length === 0) return undefined;
  const users = selected.filter(
    (s) => s.entry.credentialHelper !== undefined && missing.includes(s.entry.credentialHelper),
  );
  return new AgentError(
    "CREDENTIAL_HELPER_NOT_FOUND",
    `${missing.map((m) => `docker-credential-${m}`).join(", ")} ${missing.length === 1 ? "is" : "are"} not on PATH, but ${users.map((u) => `integration ${u.entry.id} (${u.target.host})`).join(", ")} ${users.length === 1 ? "needs" : "need"} it; install the helper on the agent host (and in its PATH). The run stops here rather than fall back to other credentials`,
    { helpers: missing },
  );
}

/** Every secret value in the forms it may appear in output (raw, JSON-escaped, base64), for value-based redaction. */
function secretFormsOf(selected: readonly SelectedCredential[]): string[] {
  const forms = new Set<string>();
  for (const { entry } of selected) {
    if (entry.credentialHelper !== undefined) continue;
    const { password, username } = entry;
    forms.add(password);
    forms.add(JSON.stringify(password).slice(1, -1));
    forms.add(encodeAuth(username, password));
    forms.add(Buffer.from(password, "utf8").toString("base64"));
  }
  return [...forms].filter((s) => s.length >= 4);
}

export class RunCredentials {
  private selectedCredentials: readonly SelectedCredential[];
  private written: { runDir: string; fs: FileSystem; operator: OperatorConfig } | undefined;
  private wiping: Promise<WipeOutcome> | undefined;

  private constructor(
    selected: readonly SelectedCredential[],
    readonly ignored: readonly IgnoredEntry[],
    readonly bundleId: string,
    private readonly agentId: string,
    private readonly runId: string,
    private readonly onWipe: WipeListener,
  ) {
    this.selectedCredentials = selected;
  }

  /** Opens a sealed bundle and selects its credentials (one per registry and path); writes nothing. */
  static async open(request: OpenRequest): Promise<RunCredentials> {
    const opened = await openBundle(request.bundle, request);
    let exported;
    try {
      exported = parseExport(new TextDecoder().decode(opened.plaintext));
    } finally {
      opened.plaintext.fill(0);
    }
    const selection = selectCredentials(exported);
    return new RunCredentials(
      selection.selected,
      selection.ignored,
      opened.header.bundle_id,
      request.agentId,
      request.runId,
      request.onWipe,
    );
  }

  /** The selected credentials, secrets included: for pre-flight and resolution only, never printed. */
  get selected(): readonly SelectedCredential[] {
    return this.selectedCredentials;
  }

  /** One line per registry: which integration serves it (no secret). */
  get registries(): readonly MaterializedRegistry[] {
    return this.selectedCredentials.map((s) => ({
      host: s.target.host,
      integration_id: s.entry.id,
      integration_name: s.entry.name ?? null,
    }));
  }

  /** The secrets in every form they may take in output, for value-based redaction. */
  secretForms(): string[] {
    return secretFormsOf(this.selectedCredentials);
  }

  /**
   * Pre-flight, before anything is written: throws PREFLIGHT_FAILED on the first refusal, or the
   * signal's reason as soon as it aborts.
   */
  check(
    checker: PreflightChecker,
    repositoriesByHost: ReadonlyMap<string, readonly string[]>,
    signal: AbortSignal,
  ): Promise<PreflightOutcome[]> {
    return checker.check(this.selectedCredentials, repositoriesByHost, signal);
  }

  /** Whether an entry asks for a credential minted from the cloud identity. */
  get needsCloud(): boolean {
    return this.selectedCredentials.some((s) => s.entry.cloudAuth !== undefined);
  }

  /**
   * Mints the credential of every `cloud_auth` entry (through the minter's cache) and puts it in
   * place of the entry's empty username and password. Throws CLOUD_AUTH_FAILED on the first
   * refusal, or the signal's reason as soon as it aborts; nothing is written either way.
   */
  async mintCloud(minter: CloudMinter | undefined, signal: AbortSignal): Promise<MintedRegistry[]> {
    if (!this.needsCloud) return [];
    if (minter === undefined) {
      throw new AgentError(
        "CLOUD_AUTH_FAILED",
        "an exported entry has cloud_auth, but this command mints no cloud credentials; use `oci-cred-agent run` or `sidecar`, or export the integration with a username and password",
      );
    }
    const minted: MintedRegistry[] = [];
    const selected = await Promise.all(
      this.selectedCredentials.map(async (s): Promise<SelectedCredential> => {
        const auth = s.entry.cloudAuth;
        if (auth === undefined) return s;
        const m = await minter.mint(auth, s.target.hostKey, signal);
        minted.push({
          host: s.target.host,
          integration_id: s.entry.id,
          provider: auth.provider,
          identity: m.identity,
          expires_at: new Date(m.expiresAtMs).toISOString(),
        });
        return { target: s.target, entry: { ...s.entry, username: m.username, password: m.password } };
      }),
    );
    if (this.isWiping()) return [];
    this.selectedCredentials = selected;
    return minted;
  }

  /**
   * Before a phase: mints the cloud credentials again (the minter's cache hands out the same
   * ones until shortly before they expire) and, when any changed, replaces the run's registry
   * files in place. Returns what was renewed (empty: nothing changed, nothing written).
   */
  async refresh(minter: CloudMinter | undefined, signal: AbortSignal): Promise<MintedRegistry[]> {
    const written = this.written;
    if (written === undefined || this.wiping !== undefined || !this.needsCloud) return [];
    const before = new Map(this.selectedCredentials.map((s) => [s.entry.id, s.entry.password]));
    const minted = await this.mintCloud(minter, signal);
    const renewed = minted.filter((m) => before.get(m.integration_id) !== this.passwordOf(m.integration_id));
    // A wipe that began while the mint was under way wins: nothing is written after it.
    if (renewed.length === 0 || this.isWiping()) return [];
    const files = renderRegistryFiles(this.selectedCredentials, written.operator.baseDockerConfig);
    await writeRunFile(written.fs, written.runDir, "dockerConfig", files.dockerConfig, { replace: true });
    await writeRunFile(written.fs, written.runDir, "containersAuth", files.containersAuth, { replace: true });
    return renewed;
  }

  private isWiping(): boolean {
    return this.wiping !== undefined;
  }

  private passwordOf(id: string): string | undefined {
    return this.selectedCredentials.find((s) => s.entry.id === id)?.entry.password;
  }

  /**
   * Writes the run directory and its files. Everything that can be refused (helpers, the
   * operator's configuration merged in) is decided before the directory is created.
   */
  async write(request: WriteRequest): Promise<WrittenCredentials> {
    if (this.written !== undefined || this.wiping !== undefined) {
      throw new AgentError(
        "INTERNAL",
        "a run's credentials are written once; open the bundle again for another run directory",
      );
    }
    // Fail closed: a cloud entry is never written with the empty password it arrived with.
    if (this.selectedCredentials.some((s) => s.entry.cloudAuth !== undefined && s.entry.password === "")) {
      throw new AgentError("INTERNAL", "cloud_auth entries are minted (mintCloud) before the credentials are written");
    }
    const runDir = resolve(request.runDir);
    const selected = this.selectedCredentials;
    const base = request.operator.baseDockerConfig;
    const registryFiles = renderRegistryFiles(selected, base);
    const tofu = renderPreparedTofuCliConfig(request.operator.tofuCliConfig, {
      dockerConfigPath: runFilePath(runDir, "dockerConfig"),
      exportedRegistries: new Set(selected.map((s) => s.target.registry)),
    });
    const helperExists = request.helperExists ?? defaultHelperExists;
    const missing = await missingHelpersError(selected, helperExists);
    if (missing !== undefined) throw missing;
    const warnings = [
      ...(await this.baseHelperWarnings(request, registryFiles.overridden, helperExists)),
      ...(await this.scopedWarnings()),
      ...registryFiles.overridden.map(
        (o) =>
          `the base Docker config's ${o.kind} entry ${JSON.stringify(o.key)} is replaced by the exported credential for that registry`,
      ),
      ...tofu.warnings,
    ];

    // createRunDir cleans up after itself; from here on, this object owns the directory.
    await createRunDir(request.fs, runDir, {
      runId: this.runId,
      agentId: this.agentId,
      createdAt: new Date().toISOString(),
    });
    this.written = { runDir, fs: request.fs, operator: request.operator };
    try {
      await writeRunFile(request.fs, runDir, "dockerConfig", registryFiles.dockerConfig);
      await writeRunFile(request.fs, runDir, "containersAuth", registryFiles.containersAuth);
      await writeRunFile(request.fs, runDir, "tofuCliConfig", tofu.text);
    } catch (error) {
      throw withCleanup(error, await this.wipe());
    }
    return {
      runDir,
      env: {
        DOCKER_CONFIG: resolve(runDir, "docker"),
        REGISTRY_AUTH_FILE: runFilePath(runDir, "containersAuth"),
        TF_CLI_CONFIG_FILE: runFilePath(runDir, "tofuCliConfig"),
      },
      warnings,
    };
  }

  /**
   * Removes what write wrote and forgets the secrets. Idempotent (a second call returns the first
   * call's outcome); never throws; the outcome also goes to the listener given to open, once.
   * Nothing written: nothing to remove, and the outcome says so.
   */
  wipe(): Promise<WipeOutcome> {
    this.selectedCredentials = [];
    if (this.wiping !== undefined) return this.wiping;
    const written = this.written;
    if (written !== undefined) this.wiping = wipeCredentialDir(written.fs, written.runDir, this.onWipe);
    else {
      const nothing: WipeOutcome = { ok: true, runDir: "", removed: [], absent: true, durationMs: 0 };
      this.onWipe(nothing);
      this.wiping = Promise.resolve(nothing);
    }
    return this.wiping;
  }

  /** The operator's own helpers stay in the file OpenTofu reads; a missing one makes init fail for the registries it serves. */
  private async baseHelperWarnings(
    request: WriteRequest,
    overridden: readonly { readonly key: string }[],
    helperExists: (name: string) => Promise<boolean>,
  ): Promise<string[]> {
    const base = request.operator.baseDockerConfig;
    const baseHelpers = new Map<string, string>();
    for (const [key, name] of Object.entries(base?.credHelpers ?? {}))
      if (name !== "" && !overridden.some((o) => o.key === key)) baseHelpers.set(name, key);
    if (base?.credsStore !== undefined && base.credsStore !== "")
      baseHelpers.set(base.credsStore, "credsStore (every registry not exported)");
    const warnings: string[] = [];
    for (const [name, servedBy] of baseHelpers) {
      if (!(await helperExists(name))) {
        warnings.push(
          `the base Docker config names docker-credential-${name} for ${servedBy}, but it is not on PATH: tofu init will fail for those registries; install it or remove it from --base-docker-config`,
        );
      }
    }
    return warnings;
  }

  /** Repository-scoped entries, which the Docker CLI family (host keys only) ignores. */
  private async scopedWarnings(): Promise<string[]> {
    const scoped = this.selectedCredentials.filter((s) => s.target.path !== undefined);
    if (scoped.length === 0) return [];
    const onPath: string[] = [];
    for (const name of DOCKER_FAMILY_TOOLS) if ((await findExecutable(name)) !== undefined) onPath.push(name);
    return scoped.map(
      (s) =>
        `${s.target.host} is repository-scoped: OpenTofu and skopeo/podman/buildah use it for repositories under ${s.target.path ?? ""}; the Docker CLI family matches hosts only and ignores it${onPath.length > 0 ? ` (on PATH here: ${onPath.join(", ")})` : " (none of docker, oras, crane, helm, regctl is on PATH here)"}`,
    );
  }
}
