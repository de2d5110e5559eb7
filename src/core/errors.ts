/**
 * Every refusal the agent makes carries one of these stable codes. Codes never change meaning
 * once released; docs/errors.md lists them with the fix for each. Messages say what was wrong,
 * what was expected and which flag, field or command fixes it, and never contain a secret.
 */
export const ERROR_CODES = {
  // Usage and inputs
  INVALID_ARGUMENT: "a flag or argument has a value the agent cannot use",
  INPUT_UNREADABLE: "an input file could not be read",
  OUTPUT_EXISTS: "an output file exists already and the agent refuses to overwrite it",
  OUTPUT_UNWRITABLE: "an output file could not be created",

  // Agent key
  KEY_FILE_NOT_FOUND: "the private key file does not exist",
  KEY_FILE_EXISTS: "keygen refuses to overwrite an existing key file",
  KEY_FILE_SYMLINK: "the private key path is a symbolic link",
  KEY_FILE_NOT_REGULAR: "the private key path is not a regular file",
  KEY_FILE_WRONG_OWNER: "the private key file is owned by another user",
  KEY_FILE_PERMISSIONS: "the private key file is accessible by group or others",
  KEY_FILE_INVALID: "the private key file does not hold an X25519 private key",
  KEY_FILE_WRITE_FAILED: "creating or writing a new private key file failed (keygen)",
  KEY_ROTATION_NOT_NEWEST: "keygen --rotate: another file in the key directory sorts after the new key",
  KEY_ENV_NOT_SET: "the environment variable named by --key env:NAME is not set or is empty",
  KEY_KEYRING_ENTRY_NOT_FOUND: "the OS keyring has no entry for --key keyring:SERVICE/ACCOUNT",
  PUBLIC_KEY_INVALID: "the public key document is not what `pubkey` prints",
  KEY_SOURCE_UNAVAILABLE: "the key source (systemd credentials, OS keyring) is not available here",

  // Configuration
  CONFIG_INVALID: "the configuration (flags, environment, config file) has invalid or missing settings",

  // Sealed bundle
  BUNDLE_TOO_LARGE: "the sealed bundle exceeds the size limit",
  BUNDLE_MALFORMED: "the sealed bundle is not a well-formed envelope",
  BUNDLE_VERSION_UNSUPPORTED: "the sealed bundle has a format version this agent does not know",
  BUNDLE_SUITE_UNSUPPORTED: "the sealed bundle uses an HPKE suite this agent does not accept",
  BUNDLE_WRONG_AGENT: "the sealed bundle was issued for another agent",
  BUNDLE_WRONG_RUN: "the sealed bundle was issued for another run",
  BUNDLE_EXPIRED: "the sealed bundle has expired",
  BUNDLE_NOT_YET_VALID: "the sealed bundle was issued in the future",
  BUNDLE_LIFETIME_TOO_LONG: "the sealed bundle's lifetime exceeds the maximum",
  BUNDLE_UNKNOWN_KEY: "the sealed bundle names a key id this agent does not hold",
  BUNDLE_REPLAYED: "the sealed bundle was opened before by this agent process",
  BUNDLE_DECRYPT_FAILED: "the sealed bundle failed authentication (tampered, or sealed to another key)",

  // Plaintext inside the bundle
  PAYLOAD_INVALID: "the opened bundle does not hold a valid credential export",
  PAYLOAD_VERSION_UNSUPPORTED: "the credential export has a version this agent does not know",

  // Operator configuration merged into the run's files
  BASE_DOCKER_CONFIG_INVALID: "the base Docker config is not a valid Docker config file",
  TOFU_CLI_CONFIG_CONFLICT: "the operator's OpenTofu CLI configuration conflicts with the agent's",
  TOFU_CLI_CONFIG_INVALID: "the operator's OpenTofu CLI configuration cannot be parsed",

  // Credential checks before init
  CREDENTIAL_HELPER_NOT_FOUND: "an exported entry names a docker-credential-<name> helper that is not on PATH",
  PREFLIGHT_FAILED: "a registry refused an exported credential in the check before tofu init",
  CLOUD_AUTH_FAILED:
    "the agent's cloud identity could not mint a registry credential for a cloud_auth entry (no identity, or the cloud refused it)",
  DOCKER_HUB_ANONYMOUS:
    "warning: an oci://docker.io/... source, which OpenTofu pulls anonymously; write oci://registry-1.docker.io/...",

  // Run directory
  RUN_DIR_PARENT_MISSING: "the run directory's parent does not exist",
  RUN_DIR_UNSAFE: "the run directory is not a plain, empty directory owned by the agent",
  RUN_DIR_ENTRY_UNSAFE: "something the agent did not create stands at a path it writes",
  RUN_DIR_WRITE_FAILED: "writing a credential file failed",
  WIPE_NOT_AGENT_DIR: "wipe was pointed at a directory the agent did not create",
  WIPE_FOREIGN_ENTRIES: "the run directory holds entries the agent did not write; they were left in place",
  WIPE_FAILED: "removing a credential file failed",

  // Configuration archive of a run
  ARCHIVE_CHECKSUM_MISMATCH: "the configuration archive does not match the checksum the lease announced",
  ARCHIVE_INVALID: "the configuration archive is not a valid tar.gz",
  ARCHIVE_TOO_LARGE: "the configuration archive expands past the size or entry limit",
  ARCHIVE_UNSAFE_PATH: "an archive entry's path is absolute or leaves the configuration directory",
  ARCHIVE_UNSAFE_LINK: "an archive link points outside the configuration directory",
  ARCHIVE_ENTRY_UNSUPPORTED: "an archive entry is a device, FIFO or other unsupported type",

  // The daemon and its control plane
  CONTROL_PLANE_UNAUTHORIZED: "the control plane refused the agent's token (401/403)",
  CONTROL_PLANE_UNAVAILABLE:
    "the control plane could not be reached, answered 429/5xx, or disabled this agent (403 AGENT_DISABLED)",
  CONTROL_PLANE_BAD_RESPONSE: "the control plane answered something that is not the agent API",
  CONTROL_PLANE_REJECTED: "the control plane rejected a request as invalid, or over one of its limits (4xx)",
  CONTROL_PLANE_TLS_REQUIRED:
    "control-plane: --listen is not loopback and no --tls-cert/--tls-key (or --plain-http-behind-proxy) was given",
  CONTROL_PLANE_TLS_FAILED:
    "the TLS connection to the control plane failed: its certificate is not trusted (CA, host name, dates) or it speaks no TLS",
  LEASE_LOST: "the control plane no longer holds the run's lease for this agent (409)",
  RUN_CANCELED: "the run was canceled from the control plane",
  RUN_TIMEOUT: "the run exceeded its time limit",
  PHASE_FAILED: "a tofu phase exited non-zero or was killed",
  TOFU_NOT_FOUND: "the tofu executable could not be started",
  SANDBOX_UNAVAILABLE: "the sandbox runs are isolated in (bubblewrap, user namespaces) cannot be set up on this host",
  AGENT_SHUTDOWN: "the agent was shutting down and canceled the run",

  // Operators' commands on the reference control plane (`agents`, `enrollment-tokens`)
  ADMIN_TOKEN_REFUSED: "the control plane refused the admin token (401): --admin-token-file holds another token",
  AGENT_NOT_FOUND: "the control plane knows no agent with that id (deleted, expired, or never enrolled)",
  ENROLLMENT_TOKEN_NOT_FOUND: "the control plane knows no enrollment token with that id (revoked, or never created)",

  // The runner (`run --executor runner:PATH` and `oci-cred-agent runner`)
  RUNNER_UNAVAILABLE: "no runner answers on the executor's socket (runner:PATH)",
  RUNNER_LOST: "the connection to the runner ended before the phase's result",
  RUNNER_BUSY: "the runner is running another phase; a runner runs one phase at a time",
  RUNNER_PATH_REFUSED: "the runner refused a workspace or credential path outside its --work-dir or --credentials-dir",
  RUNNER_PROTOCOL_ERROR: "a runner protocol message was malformed, too long, or of another version",
  RUNNER_SOCKET_IN_USE: "another runner answers on the --socket path, or the path is not a socket",
  RUNNER_PID_NAMESPACE_SHARED: "--pid-namespace was given but the runner's PID namespace holds other processes",
  RUNNER_PTRACE_UNRESTRICTED:
    "phases could attach to the runner with ptrace (kernel.yama.ptrace_scope is 0 or Yama is missing)",
  // Sidecar mode (`oci-cred-agent sidecar` and `oci-cred-agent hook`)
  RUN_TOKEN_INVALID: "the run token of a hook request is not the run's (wrong, another run's, or missing)",
  RUN_NOT_LEASED:
    "the sidecar holds no lease of the run a hook asked for (not queued as external, not yet leased, or ended)",
  REQUEST_INVALID: "a hook request to the sidecar was malformed, too long, or of another protocol version",
  SIDECAR_UNAVAILABLE: "the sidecar cannot serve the hook now (stopping, or the control plane cannot be reached)",
  SIDECAR_SOCKET_IN_USE: "another sidecar answers on the --socket path, or the path is not a socket",
  SIDECAR_SOCKET_DIR_UNSAFE:
    "the directory of the sidecar's --socket is missing, or others than its owner (root or the sidecar's user) may write to it",
  SIDECAR_DIR_IN_USE: "another sidecar uses the same --credentials-dir (it holds <credentials-dir>/sidecar/.lock)",
  // `oci-cred-agent hook NAME`, called by a foreign runner around its phases (docs/sidecar.md)
  HOOK_RUN_ID_MISSING:
    "the hook found no run id: no --run-id, SCALR_RUN_ID, TFC_RUN_ID, TF_VAR_spacelift_run_id or BURRITO_RUNNER_RUN",
  HOOK_RUN_TOKEN_MISSING: "the hook found no run token: no --run-token-file and no OCI_CRED_AGENT_RUN_TOKEN",
  HOOK_SIDECAR_UNREACHABLE: "the hook could not reach the sidecar's socket, or the sidecar did not answer in time",
  HOOK_SIDECAR_PROTOCOL_ERROR: "the sidecar's answer was malformed, too long, or of another protocol version",
  HOOK_ENV_VALUE_REFUSED: "a variable of the run cannot be written as a KEY=value line (a newline, a NUL, a bad name)",
  HOOK_ENV_FILE_FAILED: "appending the run's variables to $TFC_AGENT_ENV failed",
  HOOK_HOME_CONFIG_FOREIGN:
    "$HOME/.docker/config.json exists and the hook did not write it; the hook never overwrites a file of someone else's",
  HOOK_HOME_CONFIG_CHANGED:
    "warning: $HOME/.docker/config.json was replaced after the hook linked it to the run's credentials; left in place",
  HOOK_HOME_UNSAFE: "$HOME/.docker is not a plain directory owned by the hook's user, or HOME is not usable",
  HOOK_HOME_WRITE_FAILED: "linking $HOME/.docker/config.json to the run's Docker config, or removing the link, failed",
  // The reference control plane's data file (`control-plane --data-file`)
  DATA_KEY_REQUIRED: "--data-file was given without a data key (--data-key-file, or the systemd credential data-key)",
  DATA_KEY_BESIDE_DATA:
    "the data key file lies in the data file's directory, where every copy of the data takes it along",
  DATA_KEY_PERMISSIONS: "the data key file is accessible by group or others, or owned by another user",
  DATA_KEY_INVALID: "the data key file does not hold 32 bytes in base64",
  DATA_KEY_WRONG: "the data key does not open the data file: it was written under another key",
  DATA_FILE_OLD_FORMAT: "the data file is the JSON file of an earlier version, not an SQLite database",
  DATA_FILE_FOREIGN: "the data file is an SQLite database of something other than the control plane",
  DATA_FILE_TOO_NEW: "the data file was written by a newer control plane (a newer schema version)",
  DATA_FILE_CORRUPT: "the data file is damaged, or not a database",
  DATA_FILE_PERMISSIONS: "the data file (or its -wal or -shm file) is accessible by group or others",
  DATA_FILE_OPEN_FAILED: "the data file cannot be created or opened",
  DATA_FILE_WRITE_FAILED: "a write to the data file failed; the control plane stops",
  DATA_FILE_TAKEN_OVER: "another control plane opened the same data file; this one stops",

  INTERNAL: "an unexpected failure inside the agent",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The details of the codes whose details control flow reads (retry decisions, re-registration,
 * log fields), typed per code. Every other code carries free-form, non-secret details for logs
 * and JSON output only: nothing may branch on them.
 */
interface ErrorDetailsByCode {
  CONTROL_PLANE_UNAVAILABLE: {
    /** `disabled`: an operator disabled the agent (403 AGENT_DISABLED); it waits to be enabled. */
    readonly kind: "network" | "timeout" | "too_large" | "throttled" | "server_error" | "disabled" | "challenge_lost";
    readonly status?: number;
    readonly errno?: string | null;
    /** The server's Retry-After, in milliseconds from when the answer arrived. */
    readonly retry_after_ms?: number;
  };
  /** `api_code`: the control plane's own error code (LOG_LIMIT_REACHED, ...), when it gave one. */
  CONTROL_PLANE_REJECTED: { readonly kind: "rejected"; readonly status: number; readonly api_code?: string };
  CONTROL_PLANE_BAD_RESPONSE: { readonly kind: "bad_response" | "too_large"; readonly fields?: readonly string[] };
  /** `reenroll`: only the per-agent credential was refused; the pool token may still enroll. */
  CONTROL_PLANE_UNAUTHORIZED: { readonly status: number; readonly reenroll?: boolean };
  LEASE_LOST: { readonly status?: number };
  PREFLIGHT_FAILED: {
    readonly integration_id: string;
    readonly registry: string;
    readonly status: number;
    readonly repository?: string;
  };
  PHASE_FAILED: { readonly phase: string; readonly exit_code: number | null };
}

/** Details of `C`: typed where control flow reads them, free-form (for logs) elsewhere. */
export type ErrorDetails<C extends ErrorCode> = C extends keyof ErrorDetailsByCode
  ? ErrorDetailsByCode[C]
  : Readonly<Record<string, unknown>>;

/** Details are required for the codes whose details are typed and have a required field. */
type DetailsArgs<C extends ErrorCode> = [C] extends [keyof ErrorDetailsByCode]
  ? object extends ErrorDetailsByCode[C]
    ? [details?: ErrorDetails<C>, options?: { cause?: unknown }]
    : [details: ErrorDetails<C>, options?: { cause?: unknown }]
  : [details?: ErrorDetails<C>, options?: { cause?: unknown }];

export class AgentError<C extends ErrorCode = ErrorCode> extends Error {
  override readonly name = "AgentError";
  readonly code: C;
  /** Safe, non-secret details for logs and JSON output (field paths, hosts, ids). */
  readonly details: ErrorDetails<C>;

  constructor(code: C, message: string, ...rest: DetailsArgs<C>) {
    const [details, options] = rest;
    super(message, options);
    this.code = code;
    this.details = (details ?? {}) as ErrorDetails<C>;
  }
}

/** Whether `value` is an AgentError, and, given codes, one of those codes (narrowing its details). */
export function isAgentError<C extends ErrorCode = ErrorCode>(value: unknown, ...codes: C[]): value is AgentError<C> {
  if (!(value instanceof AgentError)) return false;
  const code: string = (value as AgentError).code;
  return codes.length === 0 || (codes as string[]).includes(code);
}

/** Narrow a caught value to a Node system error code such as ENOENT, without trusting its shape. */
export function errnoCode(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = error.code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}
