/**
 * A real Docker Registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 with TLS from
 * a throwaway CA made with openssl (SAN IP:127.0.0.1), in one of two auth modes:
 *
 * - htpasswd: bcrypt entries made by `htpasswd -niB` (password on stdin, never argv).
 *   `setPassword` and `revoke` rewrite the file; distribution 2.8 re-reads it when its
 *   modification time changes (registry/auth/htpasswd/access.go; observed here: no restart is
 *   needed), and the fixture polls `GET /v2/` until the change is in effect, so a test can
 *   revoke a credential and rely on it at once.
 * - token: the registry's `auth.token` (the Bearer flow) points at a small HTTPS token server run
 *   in the test process. It checks Basic credentials and grants `pull`/`push` only on the
 *   repositories each user's ACL allows (patterns such as `org-a/*`), issuing RS256 JWTs whose
 *   `x5c` header carries a certificate signed by the same CA the registry trusts
 *   (`rootcertbundle`). Every request is recorded in `tokenRequests` for assertions.
 *
 * Trust, without touching the host: `certDir` holds only `ca.crt` (skopeo `--cert-dir`,
 * `--src-cert-dir`, `--dest-cert-dir`), `caFile` is the CA alone (NODE_EXTRA_CA_CERTS,
 * `trustEnv`), and `dispatcher()` gives an undici Agent that trusts it.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash, createPrivateKey, randomBytes, sign, type KeyObject } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { Agent, request } from "undici";
import { freePort } from "./free-port.js";

const execFileAsync = promisify(execFile);

type RegistryAction = "pull" | "push";

/** One ACL line of a token-mode user: repositories matching `pattern` (`*` is any text). */
interface AclRule {
  readonly pattern: string;
  readonly actions: readonly RegistryAction[];
}

export interface TokenUser {
  readonly password: string;
  readonly acl: readonly AclRule[];
}

interface TokenRequestRecord {
  /** The Basic username presented, or undefined for an anonymous request. */
  readonly user: string | undefined;
  /** Whether the Basic credentials were valid (a token was issued). */
  readonly authenticated: boolean;
  /** The scopes asked for, e.g. `repository:org-a/mod:pull,push`. */
  readonly scopes: readonly string[];
  /** What the issued token grants: `repository:NAME:ACTIONS` entries. */
  readonly granted: readonly string[];
}

export interface TlsMaterial {
  readonly dir: string;
  readonly caPem: string;
  /** The CA certificate alone (PEM). */
  readonly caFile: string;
  /** A directory holding only `ca.crt`, for skopeo's `--cert-dir` family of flags. */
  readonly certDir: string;
  readonly caKeyFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
}

export interface LocalRegistry {
  /** `127.0.0.1:PORT`, the registry key every tool uses. */
  readonly host: string;
  readonly port: number;
  /** `https://127.0.0.1:PORT`, the bare endpoint an export names. */
  readonly url: string;
  readonly caPem: string;
  readonly caFile: string;
  readonly certDir: string;
  /** Environment that makes Node trust the CA (no secrets): NODE_EXTRA_CA_CERTS. */
  readonly trustEnv: Readonly<Record<string, string>>;
  readonly auth: "htpasswd" | "token";
  /** An undici dispatcher that trusts the CA; closed by stop(). */
  dispatcher(): Agent;
  /**
   * The HTTP status of `GET /v2/` (or, given a repository, `GET /v2/REPO/tags/list`) with these
   * credentials: Basic for htpasswd; for token auth, a token for `repository:REPO:pull` first
   * (the token server's status if it refuses).
   */
  probe(username: string, password: string, repository?: string): Promise<number>;
  /** Adds or changes a user's password; resolves once the registry honours it. */
  setPassword(username: string, password: string): Promise<void>;
  /** Removes a user; resolves once the registry refuses the old credential. */
  revoke(username: string): Promise<void>;
  /** Stops the registry (and token server) and removes every file. Idempotent. */
  stop(): Promise<void>;
}

export interface TokenRegistry extends LocalRegistry {
  readonly auth: "token";
  /** The token server's realm URL (`https://127.0.0.1:PORT/token`). */
  readonly realm: string;
  readonly service: string;
  readonly tokenRequests: TokenRequestRecord[];
  /** Replaces a user's ACL at runtime. */
  setAcl(username: string, acl: readonly AclRule[]): void;
}

async function run(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  const { stdout } = await execFileAsync(cmd, [...args], { encoding: "utf8", ...(cwd === undefined ? {} : { cwd }) });
  return stdout;
}

/** A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with openssl. */
export async function makeTlsMaterial(dir: string): Promise<TlsMaterial> {
  const certDir = join(dir, "certs");
  await mkdir(certDir, { recursive: true, mode: 0o700 });
  const caKeyFile = join(dir, "ca.key");
  const caFile = join(certDir, "ca.crt");
  const serverKeyFile = join(dir, "server.key");
  const serverCertFile = join(dir, "server.crt");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run("openssl", [
    "req",
    "-x509",
    ...ec,
    "-days",
    "2",
    "-subj",
    "/CN=oci-cred-agent test CA",
    "-keyout",
    caKeyFile,
    "-out",
    caFile,
  ]);
  await run("openssl", [
    "req",
    ...ec,
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    serverKeyFile,
    "-out",
    join(dir, "server.csr"),
  ]);
  await writeFile(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    join(dir, "server.csr"),
    "-CA",
    caFile,
    "-CAkey",
    caKeyFile,
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    join(dir, "server.ext"),
    "-out",
    serverCertFile,
  ]);
  return { dir, caPem: await readFile(caFile, "utf8"), caFile, certDir, caKeyFile, serverCertFile, serverKeyFile };
}

/** A bcrypt htpasswd line; the password goes through stdin (`htpasswd -niB`), never argv. */
async function bcryptLine(username: string, password: string): Promise<string> {
  const child = spawn("htpasswd", ["-niB", username], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (err += c.toString("utf8")));
  child.stdin.end(`${password}\n`);
  const [code] = (await once(child, "close")) as [number | null];
  if (code !== 0 || !out.startsWith(`${username}:$2`)) throw new Error(`htpasswd failed (${String(code)}): ${err}`);
  return out.trim();
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, "utf8").toString("base64")}`;
}

interface RegistryProcess {
  child: ChildProcess;
  exited: Promise<unknown>;
}

/** Starts docker-registry and polls `GET /v2/` until it answers 401 (auth on) or it exits. */
async function startRegistryProcess(
  configFile: string,
  port: number,
  dispatcher: Agent,
): Promise<RegistryProcess | undefined> {
  const child = spawn("docker-registry", ["serve", configFile], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString("utf8")).slice(-4000);
  });
  const state = { gone: false };
  const exited = new Promise<void>((resolve) => {
    child.once("error", (error) => {
      stderr += String(error);
      state.gone = true;
      resolve();
    });
    child.once("exit", () => {
      state.gone = true;
      resolve();
    });
  });
  for (let i = 0; i < 300 && !state.gone; i++) {
    try {
      const res = await request(`https://127.0.0.1:${port}/v2/`, { dispatcher });
      await res.body.dump();
      if (res.statusCode === 401) return { child, exited };
    } catch {
      // not listening yet
    }
    await delay(Math.min(10 + i * 5, 100));
  }
  if (!state.gone) {
    child.kill("SIGKILL");
    await exited;
    throw new Error(`docker-registry did not become ready on port ${port}: ${stderr}`);
  }
  if (stderr.includes("ENOENT")) throw new Error(`docker-registry cannot be run: ${stderr}`);
  // Exited: usually the port was taken between freePort() and bind; the caller retries.
  return undefined;
}

async function stopProcess(p: RegistryProcess | undefined): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill("SIGTERM");
  await p.exited;
}

function registryConfig(dir: string, port: number, tls: TlsMaterial, auth: string): string {
  return [
    "version: 0.1",
    "log: { level: error, accesslog: { disabled: true } }",
    `storage: { filesystem: { rootdirectory: ${join(dir, "data")} }, delete: { enabled: true } }`,
    `http: { addr: "127.0.0.1:${port}", tls: { certificate: ${tls.serverCertFile}, key: ${tls.serverKeyFile} } }`,
    auth,
    "",
  ].join("\n");
}

async function launch(
  dir: string,
  tls: TlsMaterial,
  dispatcher: Agent,
  authYaml: string,
): Promise<{ port: number; proc: RegistryProcess }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const configFile = join(dir, "config.yml");
    await writeFile(configFile, registryConfig(dir, port, tls, authYaml));
    const proc = await startRegistryProcess(configFile, port, dispatcher);
    if (proc) return { port, proc };
  }
  throw new Error("docker-registry did not start (5 attempts)");
}

function baseRegistry(
  kind: "htpasswd" | "token",
  tls: TlsMaterial,
  port: number,
  dispatcher: Agent,
): Omit<LocalRegistry, "probe" | "setPassword" | "revoke" | "stop"> {
  return {
    host: `127.0.0.1:${port}`,
    port,
    url: `https://127.0.0.1:${port}`,
    caPem: tls.caPem,
    caFile: tls.caFile,
    certDir: tls.certDir,
    trustEnv: { NODE_EXTRA_CA_CERTS: tls.caFile },
    auth: kind,
    dispatcher: () => dispatcher,
  };
}

async function probeStatus(
  dispatcher: Agent,
  port: number,
  authorization: string | undefined,
  repository: string | undefined,
): Promise<number> {
  const path = repository === undefined ? "/v2/" : `/v2/${repository}/tags/list`;
  const res = await request(`https://127.0.0.1:${port}${path}`, {
    dispatcher,
    headers: authorization === undefined ? {} : { authorization },
  });
  await res.body.dump();
  return res.statusCode;
}

async function pollUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await delay(10);
  }
  throw new Error(`registry fixture: ${what} did not take effect`);
}

/**
 * Starts a registry with htpasswd auth for `users` (username → password). `probe` answers the
 * status of `GET /v2/` (or `/v2/REPO/tags/list`) with those Basic credentials.
 */
export async function startHtpasswdRegistry(users: Readonly<Record<string, string>>): Promise<LocalRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "oca-reg-htpasswd-"));
  try {
    const tls = await makeTlsMaterial(dir);
    await mkdir(join(dir, "data"));
    const htpasswdFile = join(dir, "htpasswd");
    const passwords = new Map<string, string>(Object.entries(users));
    const lines = new Map<string, string>();
    for (const [u, p] of passwords) lines.set(u, await bcryptLine(u, p));
    const writeHtpasswd = async (): Promise<void> => {
      const before = await stat(htpasswdFile).catch(() => undefined);
      const tmp = `${htpasswdFile}.tmp`;
      await writeFile(tmp, [...lines.values()].map((l) => `${l}\n`).join(""), { mode: 0o600 });
      await rename(tmp, htpasswdFile);
      // distribution 2.8 re-reads the file when its modification time changes; make sure it does.
      const after = await stat(htpasswdFile);
      if (before !== undefined && after.mtimeMs === before.mtimeMs) {
        const t = new Date(before.mtimeMs + 1000);
        await utimes(htpasswdFile, t, t);
      }
    };
    await writeHtpasswd();
    const dispatcher = new Agent({ connect: { ca: tls.caPem } });
    const { port, proc } = await launch(
      dir,
      tls,
      dispatcher,
      `auth: { htpasswd: { realm: oci-cred-agent-test, path: ${htpasswdFile} } }`,
    );
    const probe = (username: string, password: string, repository?: string): Promise<number> =>
      probeStatus(dispatcher, port, basic(username, password), repository);
    let stopped = false;
    return {
      ...baseRegistry("htpasswd", tls, port, dispatcher),
      probe,
      async setPassword(username, password) {
        const old = passwords.get(username);
        passwords.set(username, password);
        lines.set(username, await bcryptLine(username, password));
        await writeHtpasswd();
        await pollUntil(`the new password of ${username}`, async () => (await probe(username, password)) === 200);
        if (old !== undefined && old !== password) {
          await pollUntil(`the old password of ${username}`, async () => (await probe(username, old)) === 401);
        }
      },
      async revoke(username) {
        const old = passwords.get(username);
        passwords.delete(username);
        lines.delete(username);
        await writeHtpasswd();
        if (old !== undefined)
          await pollUntil(`revoking ${username}`, async () => (await probe(username, old)) === 401);
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopProcess(proc);
        await dispatcher.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** `*` matches any text (slashes included); everything else literally. */
function aclMatches(pattern: string, repository: string): boolean {
  const re = new RegExp(
    `^${pattern
      .split("*")
      .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*")}$`,
  );
  return re.test(repository);
}

/** Parses `repository:NAME:pull,push` (NAME may not contain ':' in repository scopes). */
function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(",")
      .filter((a) => a !== ""),
  };
}

interface TokenSigner {
  readonly key: KeyObject;
  readonly certDerB64: string;
}

/** An RSA key and a certificate for it signed by the CA, for the token server's JWTs. */
async function makeTokenSigner(tls: TlsMaterial): Promise<TokenSigner> {
  const keyFile = join(tls.dir, "token.key");
  const csr = join(tls.dir, "token.csr");
  const certFile = join(tls.dir, "token.crt");
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=oci-cred-agent test token issuer",
    "-keyout",
    keyFile,
    "-out",
    csr,
  ]);
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    tls.caFile,
    "-CAkey",
    tls.caKeyFile,
    "-CAcreateserial",
    "-days",
    "2",
    "-out",
    certFile,
  ]);
  const pem = await readFile(certFile, "utf8");
  const b64 = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
  return { key: createPrivateKey(await readFile(keyFile, "utf8")), certDerB64: b64 };
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function signJwt(signer: TokenSigner, claims: Record<string, unknown>): string {
  const header = { typ: "JWT", alg: "RS256", x5c: [signer.certDerB64] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign("sha256", Buffer.from(input), signer.key))}`;
}

function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined || !header.startsWith("Basic ")) return undefined;
  const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Starts a registry with token auth and its token server. `users`: username → password and ACL,
 * e.g. `{ alice: { password, acl: [{ pattern: "org-a/*", actions: ["pull"] }] } }`.
 */
export async function startTokenRegistry(users: Readonly<Record<string, TokenUser>>): Promise<TokenRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "oca-reg-token-"));
  let server: Server | undefined;
  try {
    const tls = await makeTlsMaterial(dir);
    await mkdir(join(dir, "data"));
    const signer = await makeTokenSigner(tls);
    const accounts = new Map<string, TokenUser>(Object.entries(users));
    const service = "oci-cred-agent-test-registry";
    const issuer = "oci-cred-agent-test-token-server";
    const tokenRequests: TokenRequestRecord[] = [];

    const handle = (req: IncomingMessage, res: ServerResponse): void => {
      const url = new URL(req.url ?? "/", "https://127.0.0.1");
      if (url.pathname !== "/token") {
        res.writeHead(404).end();
        return;
      }
      const scopes = url.searchParams
        .getAll("scope")
        .flatMap((s) => s.split(" "))
        .filter((s) => s !== "");
      const creds = parseBasic(req.headers.authorization);
      const account = creds === undefined ? undefined : accounts.get(creds.user);
      if (creds === undefined || account?.password !== creds.password) {
        tokenRequests.push({ user: creds?.user, authenticated: false, scopes, granted: [] });
        res.writeHead(401, {
          "content-type": "application/json",
          "www-authenticate": 'Basic realm="oci-cred-agent-test"',
        });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
        return;
      }
      const access: { type: string; name: string; actions: string[] }[] = [];
      for (const scope of scopes) {
        const parsed = parseScope(scope);
        if (parsed?.type !== "repository") continue;
        const allowed = new Set(
          account.acl.filter((r) => aclMatches(r.pattern, parsed.name)).flatMap((r) => r.actions),
        );
        const actions = parsed.actions.filter((a) => allowed.has(a as RegistryAction));
        if (actions.length > 0) access.push({ type: "repository", name: parsed.name, actions });
      }
      tokenRequests.push({
        user: creds.user,
        authenticated: true,
        scopes,
        granted: access.map((a) => `${a.type}:${a.name}:${a.actions.join(",")}`),
      });
      const now = Math.floor(Date.now() / 1000);
      const token = signJwt(signer, {
        iss: issuer,
        sub: creds.user,
        aud: service,
        exp: now + 300,
        nbf: now - 5,
        iat: now,
        jti: randomBytes(12).toString("hex"),
        access,
      });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }),
      );
    };
    server = createHttpsServer(
      { cert: await readFile(tls.serverCertFile), key: await readFile(tls.serverKeyFile) },
      handle,
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const realm = `https://127.0.0.1:${(server.address() as AddressInfo).port}/token`;

    const dispatcher = new Agent({ connect: { ca: tls.caPem } });
    const { port, proc } = await launch(
      dir,
      tls,
      dispatcher,
      `auth: { token: { realm: "${realm}", service: ${service}, issuer: ${issuer}, rootcertbundle: ${tls.caFile} } }`,
    );

    const probe = async (username: string, password: string, repository?: string): Promise<number> => {
      const q = new URLSearchParams({ service });
      if (repository !== undefined) q.set("scope", `repository:${repository}:pull`);
      const res = await request(`${realm}?${q.toString()}`, {
        dispatcher,
        headers: { authorization: basic(username, password) },
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return res.statusCode;
      }
      const { token } = (await res.body.json()) as { token: string };
      return probeStatus(dispatcher, port, `Bearer ${token}`, repository);
    };
    const tokenServer = server;
    let stopped = false;
    return {
      ...baseRegistry("token", tls, port, dispatcher),
      auth: "token",
      realm,
      service,
      tokenRequests,
      probe,
      setPassword(username, password) {
        accounts.set(username, { password, acl: accounts.get(username)?.acl ?? [] });
        return Promise.resolve();
      },
      revoke(username) {
        accounts.delete(username);
        return Promise.resolve();
      },
      setAcl(username, acl) {
        const account = accounts.get(username);
        if (account === undefined) throw new Error(`no token user ${username}`);
        accounts.set(username, { password: account.password, acl });
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopProcess(proc);
        await dispatcher.close();
        tokenServer.closeAllConnections();
        await new Promise<void>((resolve) =>
          tokenServer.close(() => {
            resolve();
          }),
        );
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    server?.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The sha256 digest (`sha256:HEX`) of bytes. */
export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}
