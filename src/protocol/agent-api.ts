/**
 * The agent API, version 1 (docs/protocol.md): paths, request and response shapes. The agent
 * validates every response against these schemas, so a malformed or hostile answer is refused
 * with a clear error instead of being trusted.
 */
import { z } from "zod";

export const AGENT_API_PREFIX = "/api/agent/v1";
export const ADMIN_API_PREFIX = "/api/admin/v1";

export const PHASES = ["init", "plan", "apply"] as const;
export type Phase = (typeof PHASES)[number];

const publicKeyDocSchema = z.object({
  kid: z.string().min(1).max(128),
  public_key: z.string().min(1).max(128),
});

/** Whether `text` has no control character (C0, DEL, C1): operators read names in a terminal. */
export function isPrintable(text: string): boolean {
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return false;
  }
  return true;
}

const printable = (max: number, min = 0): z.ZodType<string> =>
  z.string().min(min).max(max).refine(isPrintable, { message: "must not contain control characters" });

export const registerRequestSchema = z.object({
  name: printable(256, 1),
  version: printable(64),
  concurrency: z.number().int().positive().max(10_000),
  public_keys: z.array(publicKeyDocSchema).min(1).max(16),
  /** `sidecar` leases only runs an external runner executes (`oci-cred-agent sidecar`); `agent` (the default) only the others. */
  role: z.enum(["agent", "sidecar"]).optional(),
});
export type RegisterRequest = z.infer<typeof registerRequestSchema>;

/** A challenge sealed to one of the agent's keys (the bundle's envelope, `typ` "oci-cred-agent/challenge"). */
const challengeSchema = z.object({
  challenge_id: z.string().min(1).max(256),
  challenge: z
    .string()
    .min(1)
    .max(64 * 1024),
});
export type Challenge = z.infer<typeof challengeSchema>;

/** `POST /agents` (pool token): the agent is pending until it answers the challenge. */
export const enrollResponseSchema = challengeSchema.extend({ agent_id: z.string().min(1).max(256) });
export type EnrollResponse = z.infer<typeof enrollResponseSchema>;

/** The opened challenge, sent back: it proves the agent holds the private key. */
export const challengeAnswerSchema = z.object({
  challenge_id: z.string().min(1).max(256),
  answer: z.string().min(1).max(1024),
});
export type ChallengeAnswer = z.infer<typeof challengeAnswerSchema>;

/** `POST /agents/{id}/credential` (pool token + the answer): the per-agent credential. */
export const credentialResponseSchema = z.object({
  credential: z.string().min(32).max(512),
  poll_wait_seconds: z.number().positive().max(300),
  heartbeat_interval_seconds: z.number().positive().max(3600),
  lease_ttl_seconds: z.number().positive().max(86_400),
});
export type CredentialResponse = z.infer<typeof credentialResponseSchema>;

/** `POST /agents/{id}/keys/challenge` (per-agent credential): a challenge sealed to the current newest key. */
export const keyChallengeResponseSchema = challengeSchema;

/** `PUT /agents/{id}/keys`: the new keys, with the answer to a key challenge. */
export const updateKeysRequestSchema = challengeAnswerSchema.extend({
  public_keys: z.array(publicKeyDocSchema).min(1).max(16),
});
export type UpdateKeysRequest = z.infer<typeof updateKeysRequestSchema>;

export const leaseRequestSchema = z.object({
  max: z.number().int().positive().max(1000),
  wait_seconds: z.number().min(0).max(300),
});

/** Configuration archives up to this size travel inside the lease. */
export const MAX_INLINE_CONFIGURATION_BYTES = 256 * 1024;

/** Run ids become directory names on the agent: a conservative alphabet, never "." or "..". */
export const RUN_ID_PATTERN = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;

const leaseSchema = z.object({
  lease_id: z.string().min(1).max(256),
  expires_at: z.string().max(64),
  run: z.object({
    id: z.string().regex(RUN_ID_PATTERN),
    phases: z.array(z.enum(PHASES)).min(1).max(3),
    queued_at: z.string().max(64),
    configuration: z.object({
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
      size_bytes: z.number().int().nonnegative(),
      /** The archive itself when it is small (saves a round trip); otherwise GET .../configuration. */
      inline_base64: z
        .string()
        .max(Math.ceil((MAX_INLINE_CONFIGURATION_BYTES * 4) / 3) + 4)
        .optional(),
    }),
  }),
  bundle: z.string().max(64 * 1024 * 1024),
});
export type Lease = z.infer<typeof leaseSchema>;

export const leaseResponseSchema = z.object({ leases: z.array(leaseSchema).max(1000) });

/**
 * A lease of a run an external runner executes, as a sidecar gets it: the bundle sealed to the
 * sidecar's key, and no configuration (the foreign runner has it).
 */
const sidecarLeaseSchema = z.object({
  lease_id: z.string().min(1).max(256),
  expires_at: z.string().max(64),
  run: z.object({
    id: z.string().regex(RUN_ID_PATTERN),
    executor: z.literal("external"),
    phases: z.array(z.enum(PHASES)).min(1).max(3),
    queued_at: z.string().max(64),
  }),
  bundle: z.string().max(64 * 1024 * 1024),
});
export type SidecarLease = z.infer<typeof sidecarLeaseSchema>;

export const sidecarLeaseResponseSchema = z.object({ leases: z.array(sidecarLeaseSchema).max(1000) });

/** `POST /leases/{id}/run-token` (sidecar): is this the run's token? 204, or 403 RUN_TOKEN_INVALID. */
export const runTokenRequestSchema = z.object({ run_token: z.string().min(1).max(256) });

/** `POST /leases/{id}/bundle` (sidecar): a fresh bundle sealed to its newest key. */
export const bundleResponseSchema = z.object({ bundle: z.string().max(64 * 1024 * 1024) });

export const heartbeatResponseSchema = z.object({
  expires_at: z.string().max(64),
  cancel_requested: z.boolean(),
});
export type HeartbeatResponse = z.infer<typeof heartbeatResponseSchema>;

const runEventSchema = z.looseObject({
  type: z.string().min(1).max(64),
  at: z.string().max(64),
});
export type RunEvent = z.infer<typeof runEventSchema>;

export const eventsRequestSchema = z.object({ events: z.array(runEventSchema).max(1000) });

export const MAX_LOG_CHUNK_BYTES = 64 * 1024;
export const logChunkRequestSchema = z.object({
  phase: z.enum(PHASES),
  seq: z.number().int().nonnegative(),
  text: z.string().max(MAX_LOG_CHUNK_BYTES),
});
export type LogChunk = z.infer<typeof logChunkRequestSchema>;

const OUTCOMES = ["succeeded", "failed", "canceled"] as const;
export type Outcome = (typeof OUTCOMES)[number];

export const completeRequestSchema = z.object({
  outcome: z.enum(OUTCOMES),
  error: z.object({ code: z.string().max(64), message: z.string().max(4096) }).optional(),
  phases: z
    .array(
      z.object({
        name: z.enum(PHASES),
        exit_code: z.number().int().nullable(),
        signal: z.string().max(32).nullable(),
        duration_ms: z.number().nonnegative(),
      }),
    )
    .max(3),
  credentials_wiped: z.boolean(),
});
export type CompleteRequest = z.infer<typeof completeRequestSchema>;
