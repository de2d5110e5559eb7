/**
 * The reference control plane's admin API, black-box: `bin/oci-cred-agent control-plane` as a
 * real process on 127.0.0.1 (port 0, read from its listening line), driven over HTTP with fetch.
 * Its Node trusts a throwaway CA through NODE_EXTRA_CA_CERTS, so the registry_url probe meets a
 * real docker-registry (htpasswd auth) and small HTTPS servers that redirect or answer 404.
 * No response may ever carry the canary password in any encoding.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ENTRY_FIELD_MAX_LENGTH } from "../../src/core/export-payload.js";
import { enrollAgent } from "../support/enroll.js";
import { tarGz } from "../support/control-plane-harness.js";
import { makeTlsMaterial, startHtpasswdRegistry, type LocalRegistry } from "../support/registry-fixture.js";
import { freePort } from "../support/free-port.js";
import { leakForms } from "../support/leak-forms.js";
import { spawnCliControlPlane, type CliControlPlane as SpawnedControlPlane } from "../support/cli-control-plane.js";

const CANARY = `CANARY-${randomBytes(6).toString("hex")}:pw"with\\odd/</x>`;
const CANARY2 = `CANARY2-${randomBytes(6).toString("hex")}"second\\one`;

function expectNoLeak(text: string, where: string, secrets: readonly { secret: string; username: string }[]): void {
  for (const { secret, username } of secrets) {
    for (const form of leakForms(secret, username))
      expect(text.includes(form), `${where} contains a form of the password: ${form}`).toBe(false);
  }
}

interface CliControlPlane extends SpawnedControlPlane {
  readonly adminToken: string;
  readonly agentToken: string;
}

async function startCliControlPlane(dir: string, env: Record<string, string>): Promise<CliControlPlane> {
  const adminToken = randomBytes(24).toString("base64url");
  const agentToken = randomBytes(24).toString("base64url");
  await writeFile(join(dir, "admin.token"), `${adminToken}\n`, { mode: 0o600 });
  await writeFile(join(dir, "agent.token"), `${agentToken}\n`, { mode: 0o600 });
  const spawned = await spawnCliControlPlane(
    ["--admin-token-file", join(dir, "admin.token"), "--agent-token-file", join(dir, "agent.token")],
    env,
  );
  return Object.assign(spawned, { adminToken, agentToken });
}

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

let dir: string;
let registry: LocalRegistry;
let cp: CliControlPlane;
const servers: Server[] = [];
const probedPaths: string[] = [];
let scopedRegistryPort: number;
let redirectingPort: number;
let notFoundPort: number;
let websitePort: number;
/** A registry whose /v2/ answer is held until the test lets it go. */
let holdingPort: number;
let probeHeld: Promise<void>;
let releaseProbe: () => void = () => undefined;
/** Every answer any test got, raw, for the leak check at the end. */
const answers: { where: string; text: string }[] = [];

async function call(
  method: string,
  path: string,
  body?: unknown,
  token: string | null = cp.adminToken,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers["authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${cp.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  answers.push({ where: `${method} ${path} (${res.status})`, text });
  return { status: res.status, text, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

const admin = (method: string, path: string, body?: unknown): Promise<Answer> =>
  call(method, `/api/admin/v1${path}`, body);

function errorOf(a: Answer): { code: string; message: string } & Record<string, unknown> {
  return a.json["error"] as { code: string; message: string } & Record<string, unknown>;
}

async function httpsServer(
  tls: { serverCertFile: string; serverKeyFile: string },
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<number> {
  const server = createHttpsServer(
    { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
    handler,
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-cp-admin-"));
  registry = await startHtpasswdRegistry({ alice: CANARY });
  const tls = await makeTlsMaterial(join(dir, "tls"));
  // A registry-like endpoint: /v2/ answers 401 with a Bearer challenge, as GHCR does.
  scopedRegistryPort = await httpsServer(tls, (req, res) => {
    probedPaths.push(req.url ?? "");
    res
      .writeHead(401, {
        "docker-distribution-api-version": "registry/2.0",
        "www-authenticate": 'Bearer realm="https://127.0.0.1/token"',
      })
      .end("{}");
  });
  redirectingPort = await httpsServer(tls, (_req, res) => {
    res.writeHead(301, { location: `https://127.0.0.1:${scopedRegistryPort}/v2/` }).end();
  });
  websitePort = await httpsServer(tls, (_req, res) => {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>Welcome</title><p>our website</p>");
  });
  let heldArrived: () => void = () => undefined;
  probeHeld = new Promise((resolve) => (heldArrived = resolve));
  holdingPort = await httpsServer(tls, (_req, res) => {
    releaseProbe = () => {
      res.writeHead(401, { "docker-distribution-api-version": "registry/2.0" }).end("{}");
    };
    heldArrived();
  });
  notFoundPort = await httpsServer(tls, (_req, res) => {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  });
  // One trust file for both throwaway CAs: the registry fixture's and ours.
  const caBundle = join(dir, "ca-bundle.pem");
  await writeFile(caBundle, `${registry.caPem.trim()}\n${tls.caPem.trim()}\n`);
  cp = await startCliControlPlane(dir, { NODE_EXTRA_CA_CERTS: caBundle });
});

afterAll(async () => {
  await (cp as CliControlPlane | undefined)?.stop();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await (registry as LocalRegistry | undefined)?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("admin API: integrations", () => {
  let id: string;

  it("POST answers 201 with an id, has_password and no password field", async () => {
    const a = await admin("POST", "/integrations", {
      name: "local registry",
      registry_url: registry.url,
      username: "alice",
      password: CANARY,
      export_credentials: true,
    });
    expect(a.status).toBe(201);
    expect(a.json["id"]).toMatch(/^int-/);
    expect(a.json).toMatchObject({
      name: "local registry",
      registry_url: registry.url,
      username: "alice",
      export_credentials: true,
      has_password: true,
      credential_helper: null,
    });
    expect(a.json).not.toHaveProperty("password");
    expect(a.text).not.toContain(CANARY);
    // A real registry answered its /v2/ (401 here): accepted without warnings.
    expect(a.json["warnings"]).toEqual([]);
    id = a.json["id"] as string;
  });

  it("GET lists it and GET /{id} shows it, without the password", async () => {
    const list = await admin("GET", "/integrations");
    expect(list.status).toBe(200);
    const items = list.json["integrations"] as Record<string, unknown>[];
    const mine = items.find((i) => i["id"] === id);
    expect(mine).toMatchObject({ name: "local registry", has_password: true, export_credentials: true });
    expect(mine).not.toHaveProperty("password");
    const one = await admin("GET", `/integrations/${id}`);
    expect(one.status).toBe(200);
    expect(one.json).toMatchObject({ id, registry_url: registry.url, has_password: true });
    expect(one.json).not.toHaveProperty("password");
  });

  it("PATCH changes any subset of the fields and answers without the password", async () => {
    const renamed = await admin("PATCH", `/integrations/${id}`, { name: "renamed", export_credentials: false });
    expect(renamed.status).toBe(200);
    expect(renamed.json).toMatchObject({
      id,
      name: "renamed",
      export_credentials: false,
      username: "alice",
      has_password: true,
    });
    const repassed = await admin("PATCH", `/integrations/${id}`, { password: CANARY2 });
    expect(repassed.status).toBe(200);
    expect(repassed.json).toMatchObject({ id, name: "renamed", has_password: true });
    expect(repassed.json).not.toHaveProperty("password");
    expect((await admin("GET", `/integrations/${id}`)).json).toMatchObject({
      name: "renamed",
      export_credentials: false,
    });
  });

  it("PATCH with an invalid field is refused and changes nothing", async () => {
    const bad = await admin("PATCH", `/integrations/${id}`, { username: "a:b" });
    expect(bad.status).toBe(422);
    expect(errorOf(bad).message).toMatch(/username/);
    const http = await admin("PATCH", `/integrations/${id}`, { registry_url: "http://127.0.0.1:5000" });
    expect(http.status).toBe(422);
    expect(errorOf(http).code).toBe("REGISTRY_URL_NOT_HTTPS");
    expect((await admin("GET", `/integrations/${id}`)).json).toMatchObject({
      username: "alice",
      registry_url: registry.url,
    });
  });

  it("DELETE answers 204; the integration is gone from GET and the list", async () => {
    const made = await admin("POST", "/integrations", {
      name: "to delete",
      registry_url: registry.url,
      username: "bob",
      password: CANARY,
      export_credentials: true,
    });
    expect(made.status).toBe(201);
    const gone = made.json["id"] as string;
    const del = await admin("DELETE", `/integrations/${gone}`);
    expect(del.status).toBe(204);
    expect(del.text).toBe("");
    expect((await admin("GET", `/integrations/${gone}`)).status).toBe(404);
    const ids = ((await admin("GET", "/integrations")).json["integrations"] as { id: string }[]).map((i) => i.id);
    expect(ids).toContain(id);
    expect(ids).not.toContain(gone);
    expect((await admin("DELETE", `/integrations/${gone}`)).status).toBe(404);
  });
});

describe("admin API: changing where a password goes, and the audit trail", () => {
  let id: string;
  let scoped: string;

  beforeAll(async () => {
    const made = await admin("POST", "/integrations", {
      name: "audited",
      registry_url: registry.url,
      username: "alice",
      password: CANARY,
      export_credentials: false,
    });
    expect(made.status).toBe(201);
    id = made.json["id"] as string;
    scoped = `https://127.0.0.1:${scopedRegistryPort}`;
  });

  it("refuses a registry_url or username change without the password (PASSWORD_REQUIRED) and changes nothing", async () => {
    for (const [body, fields] of [
      [{ registry_url: scoped }, ["registry_url"]],
      [{ username: "mallory" }, ["username"]],
      [{ registry_url: scoped, username: "mallory", name: "x" }, ["registry_url", "username"]],
    ] as const) {
      const a = await admin("PATCH", `/integrations/${id}`, body);
      expect(a.status, JSON.stringify(body)).toBe(422);
      expect(errorOf(a)).toMatchObject({ code: "PASSWORD_REQUIRED", fields });
      expect(errorOf(a).message).toMatch(/send "password" in the same request/);
    }
    expect((await admin("GET", `/integrations/${id}`)).json).toMatchObject({
      name: "audited",
      registry_url: registry.url,
      username: "alice",
    });
  });

  it("accepts the same URL or username again without the password (nothing moves)", async () => {
    const same = await admin("PATCH", `/integrations/${id}`, {
      registry_url: `${registry.url}/v2/`,
      username: "alice",
    });
    expect(same.status).toBe(200);
  });

  it("accepts the change with the password", async () => {
    const moved = await admin("PATCH", `/integrations/${id}`, { registry_url: scoped, password: CANARY2 });
    expect(moved.status).toBe(200);
    expect(moved.json).toMatchObject({ registry_url: scoped, username: "alice", has_password: true });
  });

  it("records creation, URL, password, export changes and deletion, in order, never a password", async () => {
    expect((await admin("PATCH", `/integrations/${id}`, { export_credentials: true })).status).toBe(200);
    expect((await admin("DELETE", `/integrations/${id}`)).status).toBe(204);
    const a = await admin("GET", `/audit?integration_id=${id}`);
    expect(a.status).toBe(200);
    const entries = a.json["entries"] as Record<string, unknown>[];
    expect(entries.map((e) => [e["type"], e["from"], e["to"]])).toEqual([
      ["integration_created", undefined, registry.url],
      ["integration_url_changed", registry.url, scoped],
      ["integration_password_changed", undefined, undefined],
      ["integration_export_changed", false, true],
      ["integration_deleted", scoped, undefined],
    ]);
    for (const e of entries) expect(e).toMatchObject({ integration_id: id, integration_name: "audited" });
    const seqs = entries.map((e) => e["seq"] as number);
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    // Paging: after the second entry, one at a time.
    const page = await admin("GET", `/audit?integration_id=${id}&after=${String(seqs[1])}&limit=1`);
    expect((page.json["entries"] as { seq: number }[]).map((e) => e.seq)).toEqual([seqs[2]]);
    expect(page.json["next_after"]).toBe(seqs[2]);
    expect(a.text).not.toContain(CANARY);
    expect(a.text).not.toContain(CANARY2);
  });

  it("writes each entry to the control plane's log as one JSON line", () => {
    const lines = cp
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l["event"] === "integration_audit" && l["integration_id"] === id);
    expect(lines.map((l) => l["type"])).toEqual([
      "integration_created",
      "integration_url_changed",
      "integration_password_changed",
      "integration_export_changed",
      "integration_deleted",
    ]);
  });

  it("a URL change whose probe waits does not land on a password set meanwhile (INTEGRATION_CHANGED)", async () => {
    const made = await admin("POST", "/integrations", {
      name: "helper first",
      registry_url: `https://127.0.0.1:${scopedRegistryPort}`,
      credential_helper: "ecr-login",
    });
    expect(made.status).toBe(201);
    const hid = made.json["id"] as string;
    // A helper integration needs no password to move; its probe is held by the new host...
    const moving = admin("PATCH", `/integrations/${hid}`, { registry_url: `https://127.0.0.1:${holdingPort}` });
    await probeHeld;
    // ...while an operator gives it a password for the old host.
    const repassed = await admin("PATCH", `/integrations/${hid}`, { username: "alice", password: CANARY });
    expect(repassed.status).toBe(200);
    releaseProbe();
    const moved = await moving;
    expect(moved.status).toBe(409);
    expect(errorOf(moved).code).toBe("INTEGRATION_CHANGED");
    expect((await admin("GET", `/integrations/${hid}`)).json).toMatchObject({
      registry_url: `https://127.0.0.1:${scopedRegistryPort}`,
      username: "alice",
      has_password: true,
    });
  });

  it("refuses a malformed audit query (QUERY_INVALID)", async () => {
    const a = await admin("GET", "/audit?limit=0");
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("QUERY_INVALID");
  });
});

describe("admin API: registry_url validation", () => {
  const creds = { username: "alice", password: CANARY, export_credentials: true };
  const create = (registry_url: string, extra: Record<string, unknown> = creds): Promise<Answer> =>
    admin("POST", "/integrations", { name: `check ${registry_url}`, registry_url, ...extra });
  let before: number;

  beforeAll(async () => {
    before = ((await admin("GET", "/integrations")).json["integrations"] as unknown[]).length;
  });

  it("refuses http://", async () => {
    const a = await create(`http://127.0.0.1:${registry.port}`);
    expect(a.status).toBe(422);
    expect(errorOf(a)).toMatchObject({ code: "REGISTRY_URL_NOT_HTTPS", field: "registry_url" });
    expect(errorOf(a).message).toMatch(/https:\/\//);
  });

  it.each([
    ["a query", (u: string) => `${u}/?tenant=1`],
    ["a fragment", (u: string) => `${u}/#top`],
    ["user information", (u: string) => u.replace("https://", "https://alice:secret@")],
    ["a path that is not a repository path", (u: string) => `${u}/Org_A/..x`],
    ["a path with an upper-case segment", (u: string) => `${u}/Org-A`],
  ])("refuses a URL with %s (REGISTRY_URL_NOT_BARE)", async (_what, make) => {
    const a = await create(make(registry.url));
    expect(a.status).toBe(422);
    expect(errorOf(a)).toMatchObject({ code: "REGISTRY_URL_NOT_BARE", field: "registry_url" });
    expect(errorOf(a).message).toContain(`https://${registry.host}`);
  });

  it.each([
    ["registry_url", (u: string) => ({ registry_url: `${u}/${"a".repeat(ENTRY_FIELD_MAX_LENGTH.url)}` })],
    ["username", () => ({ username: "u".repeat(ENTRY_FIELD_MAX_LENGTH.username + 1) })],
    ["password", () => ({ password: "p".repeat(ENTRY_FIELD_MAX_LENGTH.password + 1) })],
  ])("refuses a %s longer than an agent accepts in an export entry", async (field, make) => {
    const a = await admin("POST", "/integrations", {
      name: `long ${field}`,
      registry_url: registry.url,
      ...creds,
      ...make(registry.url),
    });
    expect(a.status).toBe(422);
    expect(errorOf(a)).toMatchObject({ code: "BODY_INVALID" });
    expect(errorOf(a).message).toContain(`${field}:`);
  });

  it("refuses https://docker.io, naming https://registry-1.docker.io", async () => {
    const a = await create("https://docker.io");
    expect(a.status).toBe(422);
    expect(errorOf(a)).toMatchObject({ code: "REGISTRY_URL_REDIRECTS", use_instead: "https://registry-1.docker.io" });
    expect(errorOf(a).message).toContain("https://registry-1.docker.io");
  });

  it("accepts a repository-scoped URL and probes the host's /v2/", async () => {
    probedPaths.length = 0;
    const a = await create(`https://127.0.0.1:${scopedRegistryPort}/org-a/`);
    expect(a.status).toBe(201);
    expect(a.json).toMatchObject({ registry_url: `https://127.0.0.1:${scopedRegistryPort}/org-a`, warnings: [] });
    expect(probedPaths).toEqual(["/v2/"]);
    await admin("DELETE", `/integrations/${a.json["id"] as string}`);
  });

  it("refuses an endpoint whose /v2/ redirects, naming the endpoint to use (REGISTRY_URL_REDIRECTS)", async () => {
    const a = await create(`https://127.0.0.1:${redirectingPort}`);
    expect(a.status).toBe(422);
    const e = errorOf(a);
    expect(e).toMatchObject({ code: "REGISTRY_URL_REDIRECTS", use_instead: `https://127.0.0.1:${scopedRegistryPort}` });
    expect(e.message).toContain(`Use https://127.0.0.1:${scopedRegistryPort}`);
    expect(e.message).toContain("301");
  });

  it("refuses an endpoint whose /v2/ answers 404 (REGISTRY_URL_NOT_A_REGISTRY)", async () => {
    const a = await create(`https://127.0.0.1:${notFoundPort}`);
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("REGISTRY_URL_NOT_A_REGISTRY");
    expect(errorOf(a).message).toContain("404");
  });

  it("refuses a website whose /v2/ answers 200 HTML without Docker-Distribution-API-Version (REGISTRY_URL_NOT_A_REGISTRY)", async () => {
    const a = await create(`https://127.0.0.1:${websitePort}`);
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("REGISTRY_URL_NOT_A_REGISTRY");
  });

  it("refuses credential_helper on a repository-scoped URL (credHelpers is keyed by host)", async () => {
    const a = await create(`${registry.url}/org-a`, { credential_helper: "gcr", export_credentials: true });
    expect(a.status).toBe(422);
    expect(errorOf(a).message).toMatch(/credential helper/);
  });

  it("normalizes an API-suffixed URL (https://HOST/v2/) to the bare endpoint", async () => {
    const a = await create(`${registry.url}/v2/`);
    expect(a.status).toBe(201);
    expect(a.json["registry_url"]).toBe(registry.url);
    await admin("DELETE", `/integrations/${a.json["id"] as string}`);
  });

  it("PATCH keeps the rule of POST: credential_helper with a password is refused; a password needs a username", async () => {
    const made = await create(registry.url, { credential_helper: "ecr-login", export_credentials: true });
    const hid = made.json["id"] as string;
    const both = await admin("PATCH", `/integrations/${hid}`, {
      credential_helper: "gcr",
      username: "u",
      password: CANARY,
    });
    expect(both.status).toBe(422);
    const noUser = await admin("PATCH", `/integrations/${hid}`, { password: CANARY });
    expect(noUser.status).toBe(422);
    expect((await admin("GET", `/integrations/${hid}`)).json).toMatchObject({
      credential_helper: "ecr-login",
      has_password: false,
      username: "",
    });
    const switched = await admin("PATCH", `/integrations/${hid}`, { username: "u", password: CANARY });
    expect(switched.status).toBe(200);
    expect(switched.json).toMatchObject({ credential_helper: null, has_password: true, username: "u" });
    await admin("DELETE", `/integrations/${hid}`);
  });

  it("answers 400, not 500, to a malformed percent-encoded path", async () => {
    const a = await admin("GET", "/integrations/%E0%A4%A");
    expect(a.status).toBe(400);
  });

  it("accepts an endpoint that cannot be reached, with a warning that it could not be verified", async () => {
    const port = await freePort();
    const a = await create(`https://127.0.0.1:${port}`);
    expect(a.status).toBe(201);
    const warnings = a.json["warnings"] as string[];
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/could not reach https:\/\/127\.0\.0\.1:\d+\/v2\/ to verify/);
    expect(warnings[0]).toMatch(/unverified/);
    await admin("DELETE", `/integrations/${a.json["id"] as string}`);
  });

  it("accepts credential_helper without username and password, refuses it with them", async () => {
    const helper = await create(registry.url, { credential_helper: "ecr-login", export_credentials: true });
    expect(helper.status).toBe(201);
    expect(helper.json).toMatchObject({ credential_helper: "ecr-login", has_password: false, username: "" });
    await admin("DELETE", `/integrations/${helper.json["id"] as string}`);

    const both = await create(registry.url, { ...creds, credential_helper: "ecr-login" });
    expect(both.status).toBe(422);
    expect(errorOf(both).code).toBe("BODY_INVALID");
    expect(errorOf(both).message).toMatch(/credential_helper/);
    const neither = await create(registry.url, { export_credentials: true });
    expect(neither.status).toBe(422);
    const badName = await create(registry.url, { credential_helper: "../evil", export_credentials: true });
    expect(badName.status).toBe(422);
  });

  it("stored none of the refused integrations", async () => {
    const after = (await admin("GET", "/integrations")).json["integrations"] as unknown[];
    expect(after).toHaveLength(before);
  });
});

describe("tokens", () => {
  it("an agent token, a missing or a garbage Authorization cannot reach the admin API (401)", async () => {
    for (const token of [cp.agentToken, null, "garbage", `${cp.adminToken}x`, ""]) {
      const a = await call("GET", "/api/admin/v1/integrations", undefined, token);
      expect(a.status, `token ${String(token)}`).toBe(401);
      expect(errorOf(a).code).toBe("UNAUTHORIZED");
      expect(a.text).not.toContain('integrations":');
    }
    const basic = await fetch(`${cp.url}/api/admin/v1/integrations`, {
      headers: { authorization: `Basic ${Buffer.from(`admin:${cp.adminToken}`).toString("base64")}` },
    });
    expect(basic.status).toBe(401);
    const post = await call(
      "POST",
      "/api/admin/v1/integrations",
      { name: "x", registry_url: registry.url, username: "u", password: "p", export_credentials: true },
      cp.agentToken,
    );
    expect(post.status).toBe(401);
  });

  it("an admin token, a missing or a garbage Authorization cannot register or lease on the agent API (401)", async () => {
    for (const token of [cp.adminToken, null, "garbage"]) {
      const reg = await call(
        "POST",
        "/api/agent/v1/agents",
        { name: "a", version: "1", concurrency: 1, public_keys: [{ kid: "k", public_key: "x" }] },
        token,
      );
      expect(reg.status, `token ${String(token)}`).toBe(401);
      expect(errorOf(reg).code).toBe("UNAUTHORIZED");
      const lease = await call("POST", "/api/agent/v1/agents/agent-x/leases", { max: 1, wait_seconds: 0 }, token);
      expect(lease.status).toBe(401);
      expect((await call("GET", "/api/agent/v1/ping", undefined, token)).status).toBe(401);
    }
    expect((await call("GET", "/api/agent/v1/ping", undefined, cp.agentToken)).status).toBe(200);
  });
});

describe("admin API: runs", () => {
  let archive: Buffer;

  beforeAll(async () => {
    archive = await tarGz({ "main.tf": 'module "m" {\n  source = "oci://127.0.0.1/acme/m?tag=1"\n}\n' });
  });

  it("POST answers 201 {id}; GET shows it queued with its events; cancel makes it canceled", async () => {
    const made = await admin("POST", "/runs", {
      configuration_tar_gz_base64: archive.toString("base64"),
      phases: ["init", "plan"],
    });
    expect(made.status).toBe(201);
    const id = made.json["id"] as string;
    expect(id).toMatch(/^run-[A-Za-z0-9._-]+$/);
    const got = await admin("GET", `/runs/${id}`);
    expect(got.status).toBe(200);
    expect(got.json).toMatchObject({ id, status: "queued", phases: ["init", "plan"] });
    expect((got.json["events"] as { type: string }[]).map((e) => e.type)).toEqual(["queued"]);
    expect(
      ((await admin("GET", "/runs")).json["runs"] as { id: string; status: string }[]).find((r) => r.id === id)?.status,
    ).toBe("queued");

    const canceled = await admin("POST", `/runs/${id}/cancel`);
    expect(canceled.status).toBe(202);
    const after = await admin("GET", `/runs/${id}`);
    expect(after.json["status"]).toBe("canceled");
    expect((after.json["events"] as { type: string }[]).map((e) => e.type)).toEqual(["queued", "canceled"]);
    // A canceled run is never leased.
    const enrolled = await enrollAgent(cp.url, cp.agentToken);
    const lease = await call(
      "POST",
      `/api/agent/v1/agents/${enrolled.agentId}/leases`,
      { max: 5, wait_seconds: 0 },
      enrolled.credential,
    );
    expect(lease.json).toEqual({ leases: [] });
  });

  it("phases default to init, plan, apply", async () => {
    const made = await admin("POST", "/runs", { configuration_tar_gz_base64: archive.toString("base64") });
    expect(made.status).toBe(201);
    const id = made.json["id"] as string;
    expect((await admin("GET", `/runs/${id}`)).json["phases"]).toEqual(["init", "plan", "apply"]);
    await admin("POST", `/runs/${id}/cancel`);
  });

  it.each([
    [
      "configuration that is not base64",
      { configuration_tar_gz_base64: "not base64 at all!", phases: ["init"] },
      /configuration_tar_gz_base64 is not base64/,
    ],
    [
      "configuration that is not gzip",
      { configuration_tar_gz_base64: Buffer.from("plain text").toString("base64"), phases: ["init"] },
      /not a gzip archive/,
    ],
    ["a missing configuration", { phases: ["init"] }, /configuration_tar_gz_base64/],
    [
      "an unknown phase",
      { configuration_tar_gz_base64: "H4sIAAAAAAAAAwMAAAAAAAAAAAA=", phases: ["init", "destroy"] },
      /phases/,
    ],
    ["no phases", { configuration_tar_gz_base64: "H4sIAAAAAAAAAwMAAAAAAAAAAAA=", phases: [] }, /phases/],
    [
      "phases that are not a list",
      { configuration_tar_gz_base64: "H4sIAAAAAAAAAwMAAAAAAAAAAAA=", phases: "init" },
      /phases/,
    ],
  ])("refuses %s with 422 and a message naming the field", async (_what, body, message) => {
    const before = ((await admin("GET", "/runs")).json["runs"] as unknown[]).length;
    const a = await admin("POST", "/runs", body);
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("BODY_INVALID");
    expect(errorOf(a).message).toMatch(message);
    expect((await admin("GET", "/runs")).json["runs"]).toHaveLength(before);
  });

  it("answers 400 to a body that is not JSON and 404 to an unknown run", async () => {
    const a = await admin("POST", "/runs", "{not json");
    expect(a.status).toBe(400);
    expect(errorOf(a).code).toBe("BODY_NOT_JSON");
    expect((await admin("GET", "/runs/run-nope")).status).toBe(404);
    expect((await admin("POST", "/runs/run-nope/cancel")).status).toBe(404);
  });
});

describe("no answer carries a password", () => {
  it("in plain, JSON-escaped, URL-encoded or base64 form, in any answer above or in the process output", () => {
    expect(answers.length).toBeGreaterThan(40);
    // The check is meaningful: the forms are found where the password is.
    expect(leakForms(CANARY, "alice").some((f) => JSON.stringify({ p: CANARY }).includes(f))).toBe(true);
    const secrets = [
      { secret: CANARY, username: "alice" },
      { secret: CANARY2, username: "alice" },
    ];
    for (const a of answers) expectNoLeak(a.text, a.where, secrets);
    expectNoLeak(cp.output(), "the control plane's output", secrets);
  });
});
