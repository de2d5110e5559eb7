/**
 * Local stand-ins for what an ACR credential needs. Azure itself cannot run here, so these speak
 * the documented wire formats on 127.0.0.1 (port 0):
 *
 * - Entra ID (HTTPS, reached through AZURE_AUTHORITY_HOST): the tenant's OpenID metadata and its
 *   v2.0 token endpoint, answering client_credentials with a client assertion (the federated
 *   service-account token) for known client ids, and AADSTS700016 for an unknown one;
 * - the managed identity endpoint (IMDS, plain HTTP, reached through
 *   AZURE_POD_IDENTITY_AUTHORITY_HOST): `GET /metadata/identity/oauth2/token` with `Metadata: true`;
 * - the registry's front (HTTPS, on the address the export names): ACR's `POST /oauth2/exchange`
 *   answered here, every other request (`/v2/...`) forwarded to a real docker-registry. Each
 *   exchange issues a new refresh token (a JWT whose `exp` the test chooses), handed to the test
 *   before it is answered so that the registry's htpasswd user
 *   `00000000-0000-0000-0000-000000000000` gets it as password.
 *
 * Every Entra, IMDS and exchange request is recorded (headers and form), so tests check what the
 * agent sent. The HTTPS servers use the caller's TLS material (a throwaway CA).
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { readFile } from "node:fs/promises";
import { request } from "undici";
import type { LocalRegistry, TlsMaterial } from "./registry-fixture.js";

interface RecordedRequest {
  readonly api: "entra-metadata" | "entra-token" | "imds" | "exchange";
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage["headers"];
  readonly form: URLSearchParams;
}

export interface AzureStandIns {
  /** `https://127.0.0.1:PORT`, for AZURE_AUTHORITY_HOST. */
  readonly authorityHost: string;
  /** `http://127.0.0.1:PORT`, for AZURE_POD_IDENTITY_AUTHORITY_HOST. */
  readonly imdsHost: string;
  /** `127.0.0.1:PORT`: the registry as the export names it (exchange here, /v2/ forwarded). */
  readonly registryHost: string;
  readonly requests: RecordedRequest[];
  /** Every Entra access token issued, in order. */
  readonly accessTokens: string[];
  /** The exchange answers 401 UNAUTHORIZED while set. */
  denyExchange: boolean;
  /**
   * A hostile or careless cloud, while set: Entra refuses quoting the client assertion (the
   * federated token) it was sent (`entra`); the exchange fails quoting the access token's first
   * 40 characters (`exchange`).
   */
  echo: "entra" | "exchange" | undefined;
  close(): Promise<void>;
}

export interface AzureStandInOptions {
  readonly tls: TlsMaterial;
  readonly registry: LocalRegistry;
  /** Client ids Entra knows (others get AADSTS700016), and the tenant they live in. */
  readonly tenantId: string;
  readonly clientIds: readonly string[];
  /** When the next refresh token expires (milliseconds since the epoch), or undefined for no `exp`. */
  readonly refreshExpiresAtMs: () => number | undefined;
  /** Called with each new refresh token before it is answered. */
  readonly onRefreshToken: (token: string) => Promise<void>;
}

function jwt(header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const part = (o: Record<string, unknown>): string => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part(header)}.${part(claims)}.${randomBytes(32).toString("base64url")}`;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export async function startAzureStandIns(options: AzureStandInOptions): Promise<AzureStandIns> {
  const requests: RecordedRequest[] = [];
  const accessTokens: string[] = [];
  const tlsOptions = {
    cert: await readFile(options.tls.serverCertFile),
    key: await readFile(options.tls.serverKeyFile),
  };
  const issueAccessToken = (clientId: string): { access_token: string; expires_in: number } => {
    const nowS = Math.floor(Date.now() / 1000);
    const token = jwt(
      { typ: "JWT", alg: "RS256", kid: randomBytes(8).toString("hex") },
      {
        aud: "https://containerregistry.azure.net",
        tid: options.tenantId,
        appid: clientId,
        oid: `oid-${clientId}`,
        iat: nowS,
        exp: nowS + 3600,
      },
    );
    accessTokens.push(token);
    return { access_token: token, expires_in: 3599 };
  };

  let authorityHost = "";
  const entra = createHttpsServer(tlsOptions, (req, res) => {
    void (async () => {
      const body = (await readBody(req)).toString("utf8");
      const url = new URL(req.url ?? "/", "https://127.0.0.1");
      const [tenant, ...rest] = url.pathname.slice(1).split("/");
      const path = rest.join("/");
      const form = new URLSearchParams(body);
      if (req.method === "GET" && path === "v2.0/.well-known/openid-configuration") {
        requests.push({ api: "entra-metadata", method: "GET", url: req.url ?? "", headers: req.headers, form });
        const base = `${authorityHost}/${tenant ?? ""}`;
        json(res, 200, {
          token_endpoint: `${base}/oauth2/v2.0/token`,
          authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
          end_session_endpoint: `${base}/oauth2/v2.0/logout`,
          issuer: `${base}/v2.0`,
          jwks_uri: `${base}/discovery/v2.0/keys`,
          response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
          token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        });
        return;
      }
      if (req.method === "POST" && path === "oauth2/v2.0/token") {
        requests.push({ api: "entra-token", method: "POST", url: req.url ?? "", headers: req.headers, form });
        const clientId = form.get("client_id") ?? "";
        if (state.echo === "entra") {
          json(res, 400, {
            error: "invalid_client",
            error_description: `AADSTS700024: Client assertion ${form.get("client_assertion") ?? ""} is not within its valid time range.`,
            error_codes: [700024],
          });
          return;
        }
        if (tenant !== options.tenantId || !options.clientIds.includes(clientId)) {
          json(res, 400, {
            error: "unauthorized_client",
            error_description: `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenant ?? ""}'. This can happen if the application has not been installed by the administrator of the tenant. Trace ID: 0 Correlation ID: 0 Timestamp: 2025-01-01 00:00:00Z`,
            error_codes: [700016],
          });
          return;
        }
        json(res, 200, { token_type: "Bearer", ext_expires_in: 3599, ...issueAccessToken(clientId) });
        return;
      }
      res.writeHead(404).end();
    })();
  });

  const imds = createServer((req, res) => {
    void (async () => {
      await readBody(req);
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      requests.push({
        api: "imds",
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        form: url.searchParams,
      });
      if (
        // MSAL asks for the path with a trailing slash.
        url.pathname.replace(/\/$/, "") !== "/metadata/identity/oauth2/token" ||
        req.headers["metadata"] !== "true"
      ) {
        json(res, 400, { error: "invalid_request", error_description: "Required metadata header not specified" });
        return;
      }
      const clientId = url.searchParams.get("client_id") ?? "system-assigned";
      const issued = issueAccessToken(clientId);
      json(res, 200, {
        access_token: issued.access_token,
        expires_in: String(issued.expires_in),
        expires_on: String(Math.floor(Date.now() / 1000) + issued.expires_in),
        ext_expires_in: String(issued.expires_in),
        not_before: String(Math.floor(Date.now() / 1000)),
        resource: url.searchParams.get("resource") ?? "",
        token_type: "Bearer",
      });
    })();
  });

  let registryHost = "";
  const state: AzureStandIns = {
    authorityHost: "",
    imdsHost: "",
    registryHost: "",
    requests,
    accessTokens,
    denyExchange: false,
    echo: undefined,
    close: () => Promise.resolve(),
  };
  const front = createHttpsServer(tlsOptions, (req, res) => {
    void (async () => {
      const body = await readBody(req);
      if (req.url === "/oauth2/exchange") {
        const form = new URLSearchParams(body.toString("utf8"));
        requests.push({ api: "exchange", method: req.method ?? "", url: req.url, headers: req.headers, form });
        if (state.echo === "exchange") {
          json(res, 500, {
            errors: [{ code: "INTERNAL", message: `could not read ${(form.get("access_token") ?? "").slice(0, 40)}` }],
          });
          return;
        }
        if (
          state.denyExchange ||
          req.method !== "POST" ||
          form.get("grant_type") !== "access_token" ||
          form.get("service") !== registryHost ||
          !accessTokens.includes(form.get("access_token") ?? "")
        ) {
          json(res, 401, {
            errors: [
              {
                code: "UNAUTHORIZED",
                message: "authentication required, visit https://aka.ms/acr/authorization for more information.",
              },
            ],
          });
          return;
        }
        const exp = options.refreshExpiresAtMs();
        // Compact, unlike ACR's (about 1 KB): htpasswd takes at most 256 characters, and bcrypt
        // reads the first 72 bytes only, so the random key id comes first.
        const refreshToken = jwt(
          { kid: randomBytes(12).toString("hex"), alg: "RS256" },
          { jti: randomBytes(6).toString("hex"), ...(exp === undefined ? {} : { exp: Math.floor(exp / 1000) }) },
        );
        await options.onRefreshToken(refreshToken);
        json(res, 200, { refresh_token: refreshToken });
        return;
      }
      // Everything else goes to the real registry behind.
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (value === undefined || ["host", "connection", "transfer-encoding", "content-length"].includes(name))
          continue;
        headers[name] = Array.isArray(value) ? value.join(", ") : value;
      }
      const upstream = await request(`${options.registry.url}${req.url ?? "/"}`, {
        method: (req.method ?? "GET") as "GET",
        headers,
        body: body.length > 0 ? body : null,
        dispatcher: options.registry.dispatcher(),
      });
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(upstream.headers)) {
        if (value === undefined || ["connection", "transfer-encoding", "keep-alive"].includes(name)) continue;
        out[name] = value;
      }
      res.writeHead(upstream.statusCode, out);
      for await (const chunk of upstream.body) res.write(chunk);
      res.end();
    })().catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
  });

  const [entraPort, imdsPort, frontPort] = await Promise.all([listen(entra), listen(imds), listen(front)]);
  authorityHost = `https://127.0.0.1:${entraPort}`;
  registryHost = `127.0.0.1:${frontPort}`;
  Object.assign(state, {
    authorityHost,
    imdsHost: `http://127.0.0.1:${imdsPort}`,
    registryHost,
    close: async () => {
      await Promise.all([close(entra), close(imds), close(front)]);
    },
  });
  return state;
}
