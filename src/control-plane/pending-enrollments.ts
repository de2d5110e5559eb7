/**
 * Enrollments waiting for the answer to their challenge (docs/protocol.md, section 3), in memory
 * only: a restart drops them and their agents enroll again. The agent API adds and answers them;
 * the admin API lists and deletes them, so that operators see who holds the enrollment caps.
 *
 * Pool-token enrollments and enrollment-token ones are counted apart: anyone holding the pool
 * token could otherwise fill the caps and keep out an agent an operator gave a token to. An
 * enrollment token has at most one pending enrollment (a new one replaces it).
 */
import type { AgentRecord } from "./store.js";

/** A challenge the control plane sealed and waits an answer to; only the answer's hash is kept. */
export interface PendingChallenge {
  readonly challengeId: string;
  readonly answerSha256: Buffer;
  readonly expiresAtMs: number;
}

export interface PendingEnrollment {
  /** The agent it would add; `enrollment_token_id` is null for the pool token. */
  readonly agent: AgentRecord;
  readonly challenge: PendingChallenge;
  /** The per-address key the pool-token caps count by (connection-policy.ts addressKey). */
  readonly addressKey: string;
  /** The remote address as the control plane saw it, for operators. */
  readonly remoteAddress: string;
  readonly startedAtMs: number;
}

export class PendingEnrollments {
  /** By agent id, oldest first. */
  private readonly byId = new Map<string, PendingEnrollment>();

  get size(): number {
    return this.byId.size;
  }

  /** Drops those whose challenge expired by `nowMs`. */
  sweep(nowMs: number): void {
    for (const [id, p] of this.byId) if (p.challenge.expiresAtMs <= nowMs) this.byId.delete(id);
  }

  /** Pending pool-token enrollments, all of them or from one address key. */
  poolCount(addressKey?: string): number {
    let n = 0;
    for (const p of this.byId.values())
      if (p.agent.enrollment_token_id === null && (addressKey === undefined || p.addressKey === addressKey)) n++;
    return n;
  }

  /** Pending enrollment-token enrollments. */
  tokenCount(): number {
    return this.byId.size - this.poolCount();
  }

  /** Drops the enrollment token's pending enrollment, if any (a token has one at most). */
  dropToken(tokenId: string): void {
    for (const [id, p] of this.byId) if (p.agent.enrollment_token_id === tokenId) this.byId.delete(id);
  }

  add(entry: PendingEnrollment): void {
    this.byId.set(entry.agent.id, entry);
  }

  get(agentId: string): PendingEnrollment | undefined {
    return this.byId.get(agentId);
  }

  delete(agentId: string): boolean {
    return this.byId.delete(agentId);
  }

  list(): PendingEnrollment[] {
    return [...this.byId.values()];
  }
}
