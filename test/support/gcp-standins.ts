/**
 * Local stand-ins for the Google APIs a GAR credential needs. Google Cloud itself cannot run
 * here, so these speak the documented wire formats on 127.0.0.1 (port 0), reached through the
 * library's documented overrides (GCE_METADATA_HOST; an external-account file's `token_url` and
 * `service_account_impersonation_url`):
 *
 * - the GCE/GKE metadata server: `GET /computeMetadata/v1/instance` (google-auth-library's
 *   detection request) and `GET /computeMetadata/v1/instance/service-accounts/default/token?scopes=...`,
 *   both only with `Metadata-Flavor: Google`, answered with the same header; a refusal is the
 *   metadata server's 404 or 403 text;
 * - STS `POST /v1/token` (RFC 8693 token exchange, a form) issues a federated access token for
 *   the subject token, or `invalid_grant`;
 * - IAM Credentials `POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken` (bearer: the
 *   federated token) issues the service account's token, or PERMISSION_DENIED as Google words it.
 *
 * Every request is recorded (path, query, headers, body) so tests check what the agent sent.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

interface RecordedRequest {
  readonly api: "metadata-ping" | "metadata-token" | "sts" | "iam" | "other";
  readonly method: string;
  readonly url: URL;
  readonly headers: IncomingMessage["headers"];
  readonly body: string;
}

export interface GcpStandIns {
  /** `127.0.0.1:PORT`, for GCE_METADATA_HOST. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`, for an external-account file's URLs. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** The federated token STS issued last. */
  federatedToken: string | undefined;
  /** The metadata server answers its token path with this status (403 or 404) while set. */
  denyMetadata: 403 | 404 | undefined;
  /** IAM Credentials answers PERMISSION_DENIED while set. */
  denyImpersonation: boolean;
  /**
   * A hostile or careless cloud, while set: the metadata server answers its token path with a
   * token in a body that is not JSON (`metadata-not-json`) or fails quoting a token
   * (`metadata-500`); STS refuses quoting the subject token it was sent (`sts`). Each token so
   * answered goes to `echoedTokens`.
   */
  echo: "metadata-not-json" | "metadata-500" | "sts" | undefined;
  readonly echoedTokens: string[];
  close(): Promise<void>;
}

export interface GcpStandInOptions {
  /** The `expires_in` (seconds) of the next access token. */
  readonly expiresInSeconds: () => number;
  /** Called with each new access token before it is answered (a test sets the registry's htpasswd to it). */
  readonly onAccessToken: (token: string) => Promise<void>;
}

const FLAVOR = { "metadata-flavor": "Google" };

export async function startGcpStandIns(options: GcpStandInOptions): Promise<GcpStandIns> {
  const requests: RecordedRequest[] = [];
  const state: GcpStandIns = {
    host: "",
    url: "",
    requests,
    federatedToken: undefined,
    denyMetadata: undefined,
    denyImpersonation: false,
    echo: undefined,
    echoedTokens: [],
    close: () => Promise.resolve(),
  };
  const newToken = async (): Promise<string> => {
    const token = `ya29.${randomBytes(32).toString("base64url")}`;
    await options.onAccessToken(token);
    return token;
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const url = new URL(req.url ?? "/", "http://stand-in");
        const record = (api: RecordedRequest["api"]): void => {
          requests.push({ api, method: req.method ?? "", url, headers: req.headers, body });
        };
        if (url.pathname.startsWith("/computeMetadata/v1/")) {
          const isToken = url.pathname === "/computeMetadata/v1/instance/service-accounts/default/token";
          record(
            isToken ? "metadata-token" : url.pathname === "/computeMetadata/v1/instance" ? "metadata-ping" : "other",
          );
          // The metadata server refuses requests without the header (and with X-Forwarded-For).
          if (req.headers["metadata-flavor"] !== "Google" || req.headers["x-forwarded-for"] !== undefined) {
            res.writeHead(403, { ...FLAVOR, "content-type": "text/html" });
            res.end("Missing required header: Metadata-Flavor");
            return;
          }
          if (url.pathname === "/computeMetadata/v1/instance") {
            res.writeHead(200, { ...FLAVOR, "content-type": "application/text" });
            res.end("attributes/\nhostname\nservice-accounts/\n");
            return;
          }
          if (!isToken) {
            res.writeHead(404, { ...FLAVOR, "content-type": "text/html" });
            res.end("Not Found");
            return;
          }
          if (state.denyMetadata === 404) {
            res.writeHead(404, { ...FLAVOR, "content-type": "text/plain" });
            res.end("Service account not found: default");
            return;
          }
          if (state.denyMetadata === 403) {
            res.writeHead(403, { ...FLAVOR, "content-type": "text/plain" });
            res.end("Instance does not have the requested access scopes");
            return;
          }
          if (state.echo === "metadata-not-json" || state.echo === "metadata-500") {
            const token = `ya29.${randomBytes(32).toString("base64url")}`;
            state.echoedTokens.push(token);
            const notJson = state.echo === "metadata-not-json";
            res.writeHead(notJson ? 200 : 500, {
              ...FLAVOR,
              "content-type": notJson ? "application/json" : "text/plain",
            });
            res.end(notJson ? `access_token=${token}&expires_in=3599` : `internal error while minting ${token}`);
            return;
          }
          const token = await newToken();
          res.writeHead(200, { ...FLAVOR, "content-type": "application/json" });
          res.end(
            JSON.stringify({ access_token: token, expires_in: options.expiresInSeconds(), token_type: "Bearer" }),
          );
          return;
        }
        if (req.method === "POST" && url.pathname === "/v1/token") {
          record("sts");
          const form = new URLSearchParams(body);
          if (state.echo === "sts") {
            res.writeHead(400, { "content-type": "application/json" });
            res.end(
              JSON.stringify({
                error: "invalid_grant",
                error_description: `The subject token ${form.get("subject_token") ?? ""} is invalid`,
              }),
            );
            return;
          }
          if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:token-exchange") {
            res.writeHead(400, { "content-type": "application/json" });
            res.end(JSON.stringify({ error: "unsupported_grant_type", error_description: "Unsupported grant type" }));
            return;
          }
          const federated = `federated.${randomBytes(24).toString("base64url")}`;
          state.federatedToken = federated;
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              access_token: federated,
              issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
              token_type: "Bearer",
              expires_in: 3600,
            }),
          );
          return;
        }
        const iam = /^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/.exec(url.pathname);
        if (req.method === "POST" && iam !== null) {
          record("iam");
          if (state.denyImpersonation || req.headers["authorization"] !== `Bearer ${state.federatedToken ?? "?"}`) {
            res.writeHead(403, { "content-type": "application/json" });
            res.end(
              JSON.stringify({
                error: {
                  code: 403,
                  message: "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
                  status: "PERMISSION_DENIED",
                  details: [
                    {
                      "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                      reason: "IAM_PERMISSION_DENIED",
                      domain: "iam.googleapis.com",
                      metadata: { permission: "iam.serviceAccounts.getAccessToken" },
                    },
                  ],
                },
              }),
            );
            return;
          }
          const token = await newToken();
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              accessToken: token,
              expireTime: new Date(Date.now() + options.expiresInSeconds() * 1000).toISOString(),
            }),
          );
          return;
        }
        record("other");
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("Not Found");
      })().catch(() => {
        res.destroy();
      });
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  Object.assign(state, {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  });
  return state;
}
