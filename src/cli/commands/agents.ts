/**
 * `oci-cred-agent agents list|show|disable|enable|delete`: operators manage the agents enrolled
 * with the reference control plane through its admin API. Text for people (names from agents
 * are shown without control characters), JSON lines for scripts.
 */
import { agentListSchema, agentViewSchema, type AgentView } from "../../protocol/admin-agents.js";
import { displayText } from "../../http/control-plane-answer.js";
import { withAdminClient, type AdminConnectionOptions } from "../admin-client.js";
import { writeOutput } from "../io.js";
import { nonEmptyId } from "../options.js";
import { renderTable } from "../table.js";

export interface AgentsCommandOptions extends AdminConnectionOptions {
  readonly format: string;
}

function agentPath(id: string): string {
  return `/agents/${encodeURIComponent(nonEmptyId("the agent id", id))}`;
}

function notFound(id: string): { code: "AGENT_NOT_FOUND"; message: string } {
  return {
    code: "AGENT_NOT_FOUND",
    message: `the control plane knows no agent ${displayText(id, 256)} (deleted, expired, or never enrolled); oci-cred-agent agents list shows the agents`,
  };
}

function jsonLines(values: readonly unknown[]): Promise<void> {
  return writeOutput("-", values.map((v) => `${JSON.stringify(v)}\n`).join(""));
}

function describe(agent: AgentView): string {
  const fields: [string, string][] = [
    ["id", agent.id],
    ["name", agent.name],
    ["status", agent.status],
    ["version", agent.version],
    ["concurrency", String(agent.concurrency)],
    ["running leases", String(agent.running_leases)],
    ["key ids", agent.key_ids.join(", ")],
    ["registered at", agent.registered_at],
    ["last seen at", agent.last_seen_at],
    [
      "enrolled with",
      agent.enrolled_with === "pool_token" ? "pool token" : `enrollment token ${agent.enrollment_token_id ?? ""}`,
    ],
    ...pendingFields(agent),
  ];
  return renderTable(
    ["field", "value"],
    fields.map(([k, v]) => [k, displayText(v, 1024)]),
  )
    .split("\n")
    .slice(1)
    .join("\n");
}

/** A pending enrollment's remote address and age, for `show`. */
function pendingFields(agent: AgentView): [string, string][] {
  if (agent.status !== "pending") return [];
  return [
    ["remote address", agent.remote_address ?? ""],
    ["pending for", `${agent.age_seconds ?? 0} s`],
  ];
}

export async function agentsList(opts: AgentsCommandOptions): Promise<number> {
  const list = await withAdminClient(opts, (c) => c.json("GET", "/agents", agentListSchema));
  const agents = list.agents;
  if (opts.format === "json") {
    await jsonLines(agents);
    return 0;
  }
  await writeOutput(
    "-",
    renderTable(
      ["ID", "NAME", "STATUS", "VERSION", "CONCURRENCY", "LEASES", "LAST SEEN", "ENROLLED WITH", "FROM"],
      agents.map((a) => [
        displayText(a.id, 256),
        displayText(a.name, 64),
        a.status,
        displayText(a.version, 64),
        String(a.concurrency),
        String(a.running_leases),
        displayText(a.last_seen_at, 64),
        a.enrolled_with === "pool_token" ? "pool token" : displayText(a.enrollment_token_id ?? "", 256),
        // Where a pending enrollment comes from: a flood of them shows its address.
        a.remote_address === undefined ? "-" : displayText(a.remote_address, 64),
      ]),
    ),
  );
  return 0;
}

export async function agentsShow(id: string, opts: AgentsCommandOptions): Promise<number> {
  const agent = await withAdminClient(opts, (c) =>
    c.json("GET", agentPath(id), agentViewSchema, { notFound: notFound(id) }),
  );
  await writeOutput("-", opts.format === "json" ? `${JSON.stringify(agent)}\n` : describe(agent));
  return 0;
}

/** `disable` ends the agent's running runs at once (AGENT_DISABLED); `enable` lets it lease again. */
export async function agentsSetDisabled(id: string, disabled: boolean, opts: AgentsCommandOptions): Promise<number> {
  const agent = await withAdminClient(opts, (c) =>
    c.json("POST", `${agentPath(id)}/${disabled ? "disable" : "enable"}`, agentViewSchema, { notFound: notFound(id) }),
  );
  if (opts.format === "json") await jsonLines([agent]);
  else
    process.stderr.write(
      disabled
        ? `oci-cred-agent: agent ${displayText(agent.id, 256)} is disabled: it leases nothing, and the runs it held ended (AGENT_DISABLED); agents enable ${displayText(agent.id, 256)} undoes it\n`
        : `oci-cred-agent: agent ${displayText(agent.id, 256)} is enabled: it leases runs again\n`,
    );
  return 0;
}

/** `delete`: the agent's credential stops working at once and the runs it held end (AGENT_DELETED). */
export async function agentsDelete(id: string, opts: AgentsCommandOptions): Promise<number> {
  await withAdminClient(opts, (c) => c.send("DELETE", agentPath(id), { notFound: notFound(id) }));
  if (opts.format === "json") await jsonLines([{ id, deleted: true }]);
  else
    process.stderr.write(
      `oci-cred-agent: agent ${displayText(id, 256)} is deleted: its credential is refused and the runs it held ended (AGENT_DELETED); a daemon still running enrolls again as a new agent\n`,
    );
  return 0;
}
