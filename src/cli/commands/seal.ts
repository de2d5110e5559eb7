import { parsePublicKeyDoc } from "../../crypto/agent-key.js";
import { sealBundle } from "../../crypto/sealed-bundle.js";
import { parseExport } from "../../core/export-payload.js";
import { durationSeconds, nonEmptyId, timestampMs } from "../options.js";
import { readInput, writeOutput } from "../io.js";

export interface SealOptions {
  readonly publicKey: string;
  readonly agentId: string;
  readonly runId: string;
  readonly ttl: string;
  readonly issuedAt?: string;
  readonly in: string;
  readonly out: string;
}

export async function seal(opts: SealOptions): Promise<number> {
  const recipient = parsePublicKeyDoc((await readInput(opts.publicKey, "public key")).toString("utf8"), opts.publicKey);
  const plaintext = await readInput(opts.in, "plaintext");
  // The same checks the agent makes after opening, now, where the mistake can still be fixed.
  parseExport(new TextDecoder().decode(plaintext));
  const bundle = await sealBundle({
    recipient,
    agentId: nonEmptyId("--agent-id", opts.agentId),
    runId: nonEmptyId("--run-id", opts.runId),
    plaintext,
    issuedAtMs: opts.issuedAt === undefined ? Date.now() : timestampMs("--issued-at", opts.issuedAt),
    ttlSeconds: durationSeconds("--ttl", opts.ttl),
  });
  plaintext.fill(0);
  await writeOutput(opts.out, bundle);
  return 0;
}
