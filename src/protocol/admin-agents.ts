/**
 * The admin API's agents and enrollment tokens (docs/protocol.md, section 4): what the reference
 * control plane answers and what `oci-cred-agent agents` and `enrollment-tokens` accept. Neither
 * shape has room for an agent credential, a token's hash, or (but once, at creation) a token.
 */
import { z } from "zod";

const timestamp = z.string().max(64);

export const agentViewSchema = z.object({
  id: z.string().min(1).max(256),
  name: z.string().max(256),
  version: z.string().max(64),
  concurrency: z.number().int().positive(),
  /** `sidecar`: leases only runs an external runner executes. Absent from control planes of earlier versions. */
  role: z.enum(["agent", "sidecar"]).default("agent"),
  key_ids: z.array(z.string().max(128)).max(16),
  registered_at: timestamp,
  last_seen_at: timestamp,
  /** pending: enrolling, its challenge not answered yet (it leases nothing; it can be deleted). */
  status: z.enum(["enabled", "disabled", "pending"]),
  enrolled_with: z.enum(["pool_token", "enrollment_token"]),
  enrollment_token_id: z.string().max(256).nullable(),
  running_leases: z.number().int().nonnegative(),
  /** A pending enrollment's remote address, as the control plane saw it. */
  remote_address: z.string().max(64).optional(),
  /** How long ago a pending enrollment started. */
  age_seconds: z.number().int().nonnegative().optional(),
});
export type AgentView = z.infer<typeof agentViewSchema>;

export const agentListSchema = z.object({ agents: z.array(agentViewSchema) });

const enrollmentTokenViewSchema = z.object({
  id: z.string().min(1).max(256),
  name: z.string().max(256).nullable(),
  created_at: timestamp,
  expires_at: timestamp,
  status: z.enum(["unused", "used", "expired"]),
  used_by_agent_id: z.string().max(256).nullable(),
  used_at: timestamp.nullable(),
});
export type EnrollmentTokenView = z.infer<typeof enrollmentTokenViewSchema>;

export const enrollmentTokenListSchema = z.object({ enrollment_tokens: z.array(enrollmentTokenViewSchema) });

/** `POST /enrollment-tokens`: the view and, this once, the token. */
export const createdEnrollmentTokenSchema = enrollmentTokenViewSchema.extend({
  token: z.string().regex(/^ocae_[A-Za-z0-9_-]{43}$/),
});

/** The body of `POST /enrollment-tokens`. */
export interface CreateEnrollmentTokenRequest {
  readonly name?: string;
  readonly expires_in_seconds?: number;
}
