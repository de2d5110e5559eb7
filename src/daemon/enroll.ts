/**
 * Enrollment, one way for the agent and the sidecar (docs/protocol.md section 3): the token in
 * --token-file gets a challenge sealed to the newest key; opening it proves the key, and the
 * answer gets the per-agent credential, which the client keeps in memory and the caller adds
 * to its redactor. Also the control plane's Retry-After, as both daemons' back-off reads it.
 */
import { isAgentError } from "../core/errors.js";
import { openChallenge } from "../crypto/sealed-bundle.js";
import type { KeyRing } from "../keys/key-ring.js";
import type { Challenge, CredentialResponse, RegisterRequest } from "../protocol/agent-api.js";
import type { ControlPlaneClient } from "./control-plane-client.js";

/** The secret of a challenge sealed to one of `keys`, checked as a bundle is (agent id, lifetime, kid). */
export function answerChallenge(
  challenge: Challenge,
  agentId: string,
  keys: KeyRing,
  clockSkewSeconds: number,
): Promise<string> {
  return openChallenge(challenge.challenge, {
    keys,
    agentId,
    challengeId: challenge.challenge_id,
    nowMs: Date.now(),
    clockSkewSeconds,
  });
}

/** Both steps of enrollment; the caller redacts `granted.credential`. */
export async function enroll(
  client: ControlPlaneClient,
  registration: RegisterRequest,
  keys: KeyRing,
  clockSkewSeconds: number,
): Promise<{ agentId: string; granted: CredentialResponse }> {
  const enrolled = await client.enroll(registration);
  const answer = await answerChallenge(enrolled, enrolled.agent_id, keys, clockSkewSeconds);
  const granted = await client.answerEnrollment(enrolled.agent_id, {
    challenge_id: enrolled.challenge_id,
    answer,
  });
  return { agentId: enrolled.agent_id, granted };
}

/** The wait the control plane asked for (Retry-After), if the error carries one. */
export function retryAfterOf(error: unknown): number | undefined {
  return isAgentError(error, "CONTROL_PLANE_UNAVAILABLE") ? error.details.retry_after_ms : undefined;
}
