/**
 * The operators' commands through the built binary (`bin/oci-cred-agent agents ...` and
 * `enrollment-tokens ...`) against `bin/oci-cred-agent control-plane` as a real process on
 * 127.0.0.1 (port 0), and behind a TLS front with a throwaway CA for --ca-file. Also the
 * control-plane flags of this part: --max-agents, --agent-expiry, --no-pool-token-enrollment.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { displayText } from "../../src/http/control-plane-answer.js";
import { AGENT_BIN } from "../support/agent-process.js";
import { spawnCliControlPlane, type CliControlPlane } from "../support/cli-control-plane.js";
import { generatePrivateKeyPem, parsePrivateKeyPem, publicKeyDoc } from "../../src/crypto/agent-key.js";
import { enrollAgent } from "../support/enroll.js";
import { makeTlsMaterial } from "../support/registry-fixture.js";

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

let dir: string;
let cp: CliControlPlane;
let adminFile: string;
let poolFile: string;
let poolToken: string;
const outputs: string[] = [];
const secrets: string[] = [];

function cli(args: readonly string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    // A command that should have been refused but serves instead is stopped, not left behind.
    const options = { encoding: "utf8" as const, env: { ...process.env, ...env }, timeout: 30_000 };
    execFile(AGENT_BIN, [...args], options, (error, stdout, stderr) => {
      outputs.push(stdout, stderr);
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** An operator's command against the control plane, with the admin token file. */
function op(...args: string[]): Promise<Ran> {
  return cli([...args, "--control-plane-url", cp.url, "--admin-token-file", adminFile]);
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function tokenFile(name: string, token: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `${token}\n`, { mode: 0o600 });
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-agents-cli-"));
  const adminToken = randomBytes(24).toString("base64url");
  poolToken = randomBytes(24).toString("base64url");
  secrets.push(adminToken, poolToken);
  adminFile = await tokenFile("admin.token", adminToken);
  poolFile = await tokenFile("pool.token", poolToken);
  cp = await spawnCliControlPlane(["--admin-token-file", adminFile, "--agent-token-file", poolFile]);
});

afterAll(async () => {
  await (cp as CliControlPlane | undefined)?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("oci-cred-agent agents", () => {
  it("lists a new enrollment at once, as a table and as JSON lines, and shows it", async () => {
    const enrolled = await enrollAgent(cp.url, poolToken);
    secrets.push(enrolled.credential);
    const table = await op("agents", "list");
    expect(table.code, table.stderr).toBe(0);
    const [header, ...rows] = table.stdout.trimEnd().split("\n");
    expect(header?.split(/\s{2,}/)).toEqual([
      "ID",
      "NAME",
      "STATUS",
      "VERSION",
      "CONCURRENCY",
      "LEASES",
      "LAST SEEN",
      "ENROLLED WITH",
      "FROM",
    ]);
    const row = rows.find((r) => r.startsWith(enrolled.agentId));
    expect(row?.split(/\s{2,}/)).toEqual([
      enrolled.agentId,
      "test-agent",
      "enabled",
      "1",
      "1",
      "0",
      expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
      "pool token",
      "-",
    ]);
    const json = await op("agents", "list", "--format", "json");
    expect(jsonLines(json.stdout).find((a) => a["id"] === enrolled.agentId)).toMatchObject({
      status: "enabled",
      enrolled_with: "pool_token",
      running_leases: 0,
      key_ids: [...enrolled.keys.keys()],
    });
    const shown = await op("agents", "show", enrolled.agentId, "--format", "json");
    expect(jsonLines(shown.stdout)).toEqual([expect.objectContaining({ id: enrolled.agentId }) as unknown]);
    const text = await op("agents", "show", enrolled.agentId);
    expect(text.stdout).toMatch(new RegExp(`^id\\s+${enrolled.agentId}$`, "m"));
    expect(text.stdout).toMatch(/^enrolled with\s+pool token$/m);
  });

  it("lists a pending enrollment with the address it comes from, and deletes it", async () => {
    const key = await parsePrivateKeyPem(generatePrivateKeyPem(), "test key");
    const res = await fetch(`${cp.url}/api/agent/v1/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${poolToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "half", version: "1", concurrency: 1, public_keys: [publicKeyDoc(key.publicKey)] }),
    });
    expect(res.status).toBe(201);
    const agentId = ((await res.json()) as { agent_id: string }).agent_id;
    const table = await op("agents", "list");
    const row = table.stdout.split("\n").find((r) => r.startsWith(agentId));
    expect(row?.split(/\s{2,}/)).toEqual([
      agentId,
      "half",
      "pending",
      "1",
      "1",
      "0",
      expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
      "pool token",
      "127.0.0.1",
    ]);
    expect((await op("agents", "show", agentId)).stdout).toMatch(/^remote address\s+127\.0\.0\.1$/m);
    expect((await op("agents", "delete", agentId)).code).toBe(0);
    expect((await op("agents", "list")).stdout).not.toContain(agentId);
  });

  it("disables, enables and deletes: the agent's requests are refused accordingly", async () => {
    const enrolled = await enrollAgent(cp.url, poolToken);
    secrets.push(enrolled.credential);
    const leaseAs = async (): Promise<number> =>
      (
        await fetch(`${cp.url}/api/agent/v1/agents/${enrolled.agentId}/leases`, {
          method: "POST",
          headers: { authorization: `Bearer ${enrolled.credential}`, "content-type": "application/json" },
          body: JSON.stringify({ max: 1, wait_seconds: 0 }),
        })
      ).status;
    const disabled = await op("agents", "disable", enrolled.agentId, "--format", "json");
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(jsonLines(disabled.stdout)).toEqual([
      expect.objectContaining({ id: enrolled.agentId, status: "disabled" }) as unknown,
    ]);
    expect(await leaseAs()).toBe(403);
    const enabled = await op("agents", "enable", enrolled.agentId);
    expect(enabled.code).toBe(0);
    expect(enabled.stderr).toContain(`agent ${enrolled.agentId} is enabled`);
    expect(await leaseAs()).toBe(200);
    const deleted = await op("agents", "delete", enrolled.agentId);
    expect(deleted.code).toBe(0);
    expect(deleted.stderr).toContain(`agent ${enrolled.agentId} is deleted`);
    expect(await leaseAs()).toBe(401);
    const list = await op("agents", "list", "--format", "json");
    expect(jsonLines(list.stdout).map((a) => a["id"])).not.toContain(enrolled.agentId);
    for (const command of ["show", "disable", "enable", "delete"]) {
      const gone = await op("agents", command, enrolled.agentId);
      expect(gone.code, command).toBe(1);
      expect(gone.stderr, command).toMatch(/^oci-cred-agent: error AGENT_NOT_FOUND: .*agents list/);
    }
  });

  it("refuses a wrong admin token (ADMIN_TOKEN_REFUSED), a plain-http remote URL and a missing token file, naming the fix", async () => {
    const wrong = await cli(["agents", "list", "--control-plane-url", cp.url, "--admin-token-file", poolFile]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^oci-cred-agent: error ADMIN_TOKEN_REFUSED: .*--admin-token-file/);
    const remote = await cli([
      "agents",
      "list",
      "--control-plane-url",
      "http://control-plane.example.test:8480",
      "--admin-token-file",
      adminFile,
    ]);
    expect(remote.code).toBe(1);
    expect(remote.stderr).toMatch(/error INVALID_ARGUMENT: .*https:\/\/.*--allow-insecure-control-plane/);
    const missing = await cli([
      "agents",
      "list",
      "--control-plane-url",
      cp.url,
      "--admin-token-file",
      join(dir, "nope"),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/error INPUT_UNREADABLE: .*--admin-token-file/);
    const usage = await cli(["agents", "list", "--control-plane-url", cp.url]);
    expect(usage.code).toBe(2);
  });

  it("shows names from agents without control characters", () => {
    expect(displayText("a\u001b]0;x\u0007b\u009b2Jc\nd")).toBe("a?]0;x?b?2Jc?d");
  });
});

describe("oci-cred-agent enrollment-tokens", () => {
  it("creates a token into a new 0600 file, lists it without the token, and it enrolls one agent", async () => {
    const out = join(dir, "enroll.token");
    const made = await op("enrollment-tokens", "create", "--name", "host-7", "--expires-in", "2h", "--out", out);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toBe("");
    const token = (await readFile(out, "utf8")).trim();
    secrets.push(token);
    expect(token).toMatch(/^ocae_[A-Za-z0-9_-]{43}$/);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const id = /created enrollment token (enroll-\S+),/.exec(made.stderr)?.[1] ?? "";
    expect(id).not.toBe("");
    const listed = jsonLines((await op("enrollment-tokens", "list", "--format", "json")).stdout);
    const view = listed.find((t) => t["id"] === id);
    expect(view).toMatchObject({ name: "host-7", status: "unused", used_by_agent_id: null });
    expect(Date.parse(view?.["expires_at"] as string) - Date.parse(view?.["created_at"] as string)).toBe(7_200_000);

    const enrolled = await enrollAgent(cp.url, token);
    secrets.push(enrolled.credential);
    const table = await op("enrollment-tokens", "list");
    expect(
      table.stdout
        .split("\n")
        .find((r) => r.startsWith(id))
        ?.split(/\s{2,}/),
    ).toEqual([id, "host-7", "used", expect.any(String) as unknown, enrolled.agentId]);
    const agent = jsonLines((await op("agents", "show", enrolled.agentId, "--format", "json")).stdout)[0];
    expect(agent).toMatchObject({ enrolled_with: "enrollment_token", enrollment_token_id: id });
    await expect(enrollAgent(cp.url, token)).rejects.toThrow(/403.*ENROLLMENT_TOKEN_USED/);

    const revoked = await op("enrollment-tokens", "delete", id);
    expect(revoked.code).toBe(0);
    const again = await op("enrollment-tokens", "delete", id);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/error ENROLLMENT_TOKEN_NOT_FOUND: .*enrollment-tokens list/);
  });

  it("refuses an --out that exists before creating anything; --out - writes the token alone to stdout", async () => {
    const before = jsonLines((await op("enrollment-tokens", "list", "--format", "json")).stdout).length;
    const taken = join(dir, "taken");
    await writeFile(taken, "keep me\n");
    const refused = await op("enrollment-tokens", "create", "--out", taken);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/error OUTPUT_EXISTS: /);
    expect(await readFile(taken, "utf8")).toBe("keep me\n");
    expect(jsonLines((await op("enrollment-tokens", "list", "--format", "json")).stdout)).toHaveLength(before);
    const toStdout = await op("enrollment-tokens", "create", "--out", "-");
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout).toMatch(/^ocae_[A-Za-z0-9_-]{43}\n$/);
    secrets.push(toStdout.stdout.trim());
  });
});

describe("--ca-file", () => {
  let front: Server | undefined;
  afterAll(() => front?.close());

  it("reaches a control plane behind TLS signed by a CA the system does not know only with --ca-file", async () => {
    const tls = await makeTlsMaterial(join(dir, "tls"));
    const target = new URL(cp.url);
    front = createHttpsServer(
      { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
      (req, res) => {
        const upstream = httpRequest(
          { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        req.pipe(upstream);
      },
    );
    front.listen(0, "127.0.0.1");
    await once(front, "listening");
    const url = `https://127.0.0.1:${(front.address() as AddressInfo).port}`;
    const base = ["agents", "list", "--control-plane-url", url, "--admin-token-file", adminFile];
    const untrusted = await cli(base, { NODE_EXTRA_CA_CERTS: "" });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/error CONTROL_PLANE_UNAVAILABLE: .*--ca-file/);
    const trusted = await cli([...base, "--ca-file", tls.caFile], { NODE_EXTRA_CA_CERTS: "" });
    expect(trusted.code, trusted.stderr).toBe(0);
    expect(trusted.stdout).toMatch(/^ID\s+NAME/);
  });
});

describe("control-plane flags of enrollment", () => {
  it("--max-agents caps enrollment with 429 AGENTS_LIMIT", async () => {
    const capped = await spawnCliControlPlane([
      "--admin-token-file",
      adminFile,
      "--agent-token-file",
      poolFile,
      "--max-agents",
      "1",
    ]);
    try {
      secrets.push((await enrollAgent(capped.url, poolToken)).credential);
      await expect(enrollAgent(capped.url, poolToken)).rejects.toThrow(/429.*AGENTS_LIMIT/);
    } finally {
      await capped.stop();
    }
  });

  it("--no-pool-token-enrollment: no pool token at all; enrollment tokens enroll", async () => {
    const tokensOnly = await spawnCliControlPlane(["--admin-token-file", adminFile, "--no-pool-token-enrollment"]);
    try {
      await expect(enrollAgent(tokensOnly.url, poolToken)).rejects.toThrow(/401.*enrollment tokens only/);
      const out = join(dir, "tokens-only.token");
      const made = await cli([
        "enrollment-tokens",
        "create",
        "--out",
        out,
        "--control-plane-url",
        tokensOnly.url,
        "--admin-token-file",
        adminFile,
      ]);
      expect(made.code, made.stderr).toBe(0);
      const token = (await readFile(out, "utf8")).trim();
      secrets.push(token);
      secrets.push((await enrollAgent(tokensOnly.url, token)).credential);
    } finally {
      await tokensOnly.stop();
    }
  });

  it.each([
    [["--agent-token-file", "POOL", "--no-pool-token-enrollment"], /contradict/],
    [[], /--agent-token-file is missing.*--no-pool-token-enrollment/],
    [["--agent-token-file", "POOL", "--agent-expiry", "1m"], /--agent-expiry 1m is shorter than 300 s/],
    [
      ["--agent-token-file", "POOL", "--poll-wait", "300s", "--agent-expiry", "9m"],
      /--agent-expiry 9m is shorter than 600 s/,
    ],
    [["--agent-token-file", "POOL", "--max-agents", "0"], /--max-agents "0" is not a positive whole number/],
    [["--agent-token-file", "POOL", "--max-pending-enrollments", "x"], /--max-pending-enrollments/],
  ])("refuses %j with INVALID_ARGUMENT", async (flags, message) => {
    const args = flags.map((f) => (f === "POOL" ? poolFile : f));
    const ran = await cli(["control-plane", "--listen", "127.0.0.1:0", "--admin-token-file", adminFile, ...args]);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/^oci-cred-agent: error INVALID_ARGUMENT: /);
    expect(ran.stderr).toMatch(message);
  });
});

describe("no command output carries a token or a credential", () => {
  it("in any stdout or stderr above, save the enrollment token `create --out -` printed", () => {
    expect(outputs.length).toBeGreaterThan(30);
    const printed = outputs.filter((o) => /^ocae_[A-Za-z0-9_-]{43}\n$/.test(o));
    expect(printed).toHaveLength(1);
    for (const text of [...outputs.filter((o) => !printed.includes(o)), cp.output()])
      for (const secret of secrets) expect(text.includes(secret)).toBe(false);
  });
});
