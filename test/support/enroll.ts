/**
 * Enrolls an agent with a reference control plane over HTTP, as docs/protocol.md describes it:
 * POST /agents with the pool token, open the challenge sealed to the agent's newest key, answer
 * it for the per-agent credential.
 */
import {
  generatePrivateKeyPem,
  parsePrivateKeyPem,
  publicKeyDoc,
  type AgentPrivateKey,
} from "../../src/crypto/agent-key.js";
import { openChallenge } from "../../src/crypto/sealed-bundle.js";

export interface Enrolled {
  readonly agentId: string;
  readonly credential: string;
  readonly keys: Map<string, AgentPrivateKey>;
}

async function post(url: string, token: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

export interface EnrollOptions {
  readonly concurrency?: number;
  /** `sidecar` leases only external runs; absent: the control plane's default (agent). */
  readonly role?: "agent" | "sidecar";
  /** The clock the challenge is opened at (the control plane's, when a test moves it). */
  readonly nowMs?: () => number;
}

/**
 * Enrolls with `keys` (a new key when omitted) and `token` (the pool token or an enrollment
 * token); throws unless both steps succeed.
 */
export async function enrollAgent(
  baseUrl: string,
  token: string,
  keys?: Map<string, AgentPrivateKey>,
  options: EnrollOptions = {},
): Promise<Enrolled> {
  let ring = keys;
  if (ring === undefined) {
    const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
    ring = new Map([[key.kid, key]]);
  }
  const api = `${baseUrl.replace(/\/+$/, "")}/api/agent/v1`;
  const reg = await post(`${api}/agents`, token, {
    name: "test-agent",
    version: "1",
    concurrency: options.concurrency ?? 1,
    public_keys: [...ring.values()].map((k) => publicKeyDoc(k.publicKey)),
    ...(options.role === undefined ? {} : { role: options.role }),
  });
  const agentId = reg["agent_id"] as string;
  const challengeId = reg["challenge_id"] as string;
  const answer = await openChallenge(reg["challenge"] as string, {
    keys: ring,
    agentId,
    challengeId,
    nowMs: options.nowMs?.() ?? Date.now(),
    clockSkewSeconds: 120,
  });
  const granted = await post(`${api}/agents/${agentId}/credential`, token, { challenge_id: challengeId, answer });
  return { agentId, credential: granted["credential"] as string, keys: ring };
}
