/**
 * `oci-cred-agent enrollment-tokens create|list|delete`: single-use tokens that each enroll one
 * agent (put in its --token-file in place of the pool token). `create` writes the token to a new
 * 0600 file (or stdout with `--out -`), the one time it is shown; nothing else ever shows it.
 */
import { lstat } from "node:fs/promises";
import { AgentError } from "../../core/errors.js";
import {
  createdEnrollmentTokenSchema,
  enrollmentTokenListSchema,
  type CreateEnrollmentTokenRequest,
} from "../../protocol/admin-agents.js";
import { displayText } from "../../http/control-plane-answer.js";
import { withAdminClient, type AdminConnectionOptions } from "../admin-client.js";
import { writeOutput } from "../io.js";
import { durationSeconds, nonEmptyId } from "../options.js";
import { renderTable } from "../table.js";

export interface EnrollmentTokensCommandOptions extends AdminConnectionOptions {
  readonly format?: string;
}

export interface CreateEnrollmentTokenOptions extends AdminConnectionOptions {
  readonly out: string;
  readonly name?: string;
  readonly expiresIn?: string;
}

export async function enrollmentTokensCreate(opts: CreateEnrollmentTokenOptions): Promise<number> {
  const body: CreateEnrollmentTokenRequest = {
    ...(opts.name === undefined ? {} : { name: nonEmptyId("--name", opts.name) }),
    ...(opts.expiresIn === undefined
      ? {}
      : { expires_in_seconds: Math.max(1, Math.round(durationSeconds("--expires-in", opts.expiresIn))) }),
  };
  // Refused before the token exists, rather than a token created and nowhere to put it.
  if (
    opts.out !== "-" &&
    (await lstat(opts.out).then(
      () => true,
      () => false,
    ))
  )
    throw new AgentError(
      "OUTPUT_EXISTS",
      `--out ${opts.out} exists already; the token goes to a new file only: choose another path, or remove it first`,
      { path: opts.out },
    );
  const created = await withAdminClient(opts, (c) =>
    c.json("POST", "/enrollment-tokens", createdEnrollmentTokenSchema, { body }),
  );
  try {
    await writeOutput(opts.out, `${created.token}\n`);
  } catch (error) {
    throw new AgentError(
      "OUTPUT_UNWRITABLE",
      `enrollment token ${created.id} was created but could not be written to --out ${opts.out} (${error instanceof AgentError ? error.code : "error"}); revoke it (oci-cred-agent enrollment-tokens delete ${created.id}) and create another with a new --out path`,
      { path: opts.out },
    );
  }
  process.stderr.write(
    `oci-cred-agent: created enrollment token ${created.id}, valid until ${created.expires_at}; it enrolls one agent: put it in that agent's --token-file${opts.out === "-" ? "" : ` (it is in ${opts.out})`}\n`,
  );
  return 0;
}

export async function enrollmentTokensList(opts: EnrollmentTokensCommandOptions): Promise<number> {
  const list = await withAdminClient(opts, (c) => c.json("GET", "/enrollment-tokens", enrollmentTokenListSchema));
  const tokens = list.enrollment_tokens;
  if (opts.format === "json") {
    await writeOutput("-", tokens.map((t) => `${JSON.stringify(t)}\n`).join(""));
    return 0;
  }
  await writeOutput(
    "-",
    renderTable(
      ["ID", "NAME", "STATUS", "EXPIRES AT", "USED BY"],
      tokens.map((t) => [
        displayText(t.id, 256),
        displayText(t.name ?? "", 64),
        t.status,
        displayText(t.expires_at, 64),
        displayText(t.used_by_agent_id ?? "", 256),
      ]),
    ),
  );
  return 0;
}

/** `delete` revokes: the token enrolls nothing from then on; an agent it enrolled stays. */
export async function enrollmentTokensDelete(id: string, opts: EnrollmentTokensCommandOptions): Promise<number> {
  const path = `/enrollment-tokens/${encodeURIComponent(nonEmptyId("the enrollment token id", id))}`;
  await withAdminClient(opts, (c) =>
    c.send("DELETE", path, {
      notFound: {
        code: "ENROLLMENT_TOKEN_NOT_FOUND",
        message: `the control plane knows no enrollment token ${displayText(id, 256)}; oci-cred-agent enrollment-tokens list shows them`,
      },
    }),
  );
  process.stderr.write(`oci-cred-agent: enrollment token ${displayText(id, 256)} is revoked\n`);
  return 0;
}
