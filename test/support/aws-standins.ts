/**
 * Local stand-ins for the two AWS APIs an ECR credential needs. AWS itself cannot run here, so
 * these speak the documented wire formats on 127.0.0.1 (port 0), reached through the SDK's
 * documented endpoint overrides (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL_ECR):
 *
 * - STS AssumeRoleWithWebIdentity (query protocol: a form POST, an XML answer) issues session
 *   credentials for the role;
 * - ECR GetAuthorizationToken (JSON 1.1: `X-Amz-Target`) answers `base64("AWS:<password>")` with
 *   its expiry, or AccessDeniedException as ECR words it.
 *
 * Every request is recorded, headers and body, so tests check what the agent sent: the web
 * identity token file's content and the role, and a SigV4 signature made with the key id STS
 * issued, for the entry's region and the `ecr` service.
 *
 * `startImdsStandIn` stands in for the instance metadata service (IMDSv2), the instance-role link
 * of the chain, reached through AWS_EC2_METADATA_SERVICE_ENDPOINT.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

interface RecordedRequest {
  readonly api: "sts" | "ecr";
  readonly headers: IncomingMessage["headers"];
  readonly body: string;
}

export interface AwsStandIns {
  /** `http://127.0.0.1:PORT`, for AWS_ENDPOINT_URL_STS and AWS_ENDPOINT_URL_ECR. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** The session credentials STS issued last. */
  issued: { accessKeyId: string; secretAccessKey: string; sessionToken: string } | undefined;
  /** ECR answers AccessDeniedException for this principal while set. */
  denyEcr: string | undefined;
  /**
   * A hostile or careless cloud, while set: STS refuses quoting the web identity token it was
   * sent (`sts`); ECR refuses quoting the request's signature and session token (`ecr`).
   */
  echo: "sts" | "ecr" | undefined;
  close(): Promise<void>;
}

export interface AwsStandInOptions {
  readonly assumedRoleArn: string;
  /** When the next ECR token expires (milliseconds since the epoch). */
  readonly ecrExpiresAtMs: () => number;
  /** Called with each new ECR password before it is answered (a test sets the registry's htpasswd to it). */
  readonly onEcrPassword: (password: string) => Promise<void>;
}

function xml(text: string): string {
  return text.replace(/[<>&]/g, (c) => (c === "<" ? "&lt;" : c === ">" ? "&gt;" : "&amp;"));
}

export async function startAwsStandIns(options: AwsStandInOptions): Promise<AwsStandIns> {
  const requests: RecordedRequest[] = [];
  const state: AwsStandIns = {
    url: "",
    requests,
    issued: undefined,
    denyEcr: undefined,
    echo: undefined,
    close: () => Promise.resolve(),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const target = req.headers["x-amz-target"];
        if (target === "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken") {
          requests.push({ api: "ecr", headers: req.headers, body });
          if (state.echo === "ecr") {
            res.writeHead(400, {
              "content-type": "application/x-amz-json-1.1",
              "x-amzn-errortype": "AccessDeniedException",
            });
            res.end(
              JSON.stringify({
                __type: "AccessDeniedException",
                message: `User: ${options.assumedRoleArn} is not authorized; the request was signed ${String(req.headers["authorization"])} with session token ${String(req.headers["x-amz-security-token"])}`,
              }),
            );
            return;
          }
          if (state.denyEcr !== undefined) {
            res.writeHead(400, {
              "content-type": "application/x-amz-json-1.1",
              "x-amzn-errortype": "AccessDeniedException",
              "x-amzn-requestid": randomBytes(8).toString("hex"),
            });
            res.end(
              JSON.stringify({
                __type: "AccessDeniedException",
                message: `User: ${state.denyEcr} is not authorized to perform: ecr:GetAuthorizationToken on resource: * because no identity-based policy allows the ecr:GetAuthorizationToken action`,
              }),
            );
            return;
          }
          const password = `ecr-${randomBytes(24).toString("base64url")}`;
          await options.onEcrPassword(password);
          res.writeHead(200, { "content-type": "application/x-amz-json-1.1" });
          res.end(
            JSON.stringify({
              authorizationData: [
                {
                  authorizationToken: Buffer.from(`AWS:${password}`).toString("base64"),
                  expiresAt: options.ecrExpiresAtMs() / 1000,
                  proxyEndpoint: "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                },
              ],
            }),
          );
          return;
        }
        const form = new URLSearchParams(body);
        requests.push({ api: "sts", headers: req.headers, body });
        if (form.get("Action") !== "AssumeRoleWithWebIdentity") {
          res.writeHead(400, { "content-type": "text/xml" });
          res.end("<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>");
          return;
        }
        if (state.echo === "sts") {
          res.writeHead(400, { "content-type": "text/xml" });
          res.end(
            `<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>The web identity token ${xml(form.get("WebIdentityToken") ?? "")} is not valid</Message></Error><RequestId>1</RequestId></ErrorResponse>`,
          );
          return;
        }
        const accessKeyId = `ASIA${randomBytes(8).toString("hex").toUpperCase()}`;
        const secretAccessKey = randomBytes(20).toString("base64url");
        const sessionToken = `session-${randomBytes(24).toString("base64url")}`;
        state.issued = { accessKeyId, secretAccessKey, sessionToken };
        const expiration = new Date(Date.now() + 3_600_000).toISOString();
        res.writeHead(200, { "content-type": "text/xml" });
        res.end(`<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>${accessKeyId}</AccessKeyId>
      <SecretAccessKey>${secretAccessKey}</SecretAccessKey>
      <SessionToken>${sessionToken}</SessionToken>
      <Expiration>${expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>${xml(options.assumedRoleArn)}</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:${xml(form.get("RoleSessionName") ?? "")}</AssumedRoleId>
    </AssumedRoleUser>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>${randomBytes(8).toString("hex")}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`);
      })().catch(() => {
        res.destroy();
      });
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  });
  return state;
}

interface ImdsRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingMessage["headers"];
}

export interface ImdsStandIn {
  /** `http://127.0.0.1:PORT`, for AWS_EC2_METADATA_SERVICE_ENDPOINT. */
  readonly url: string;
  readonly requests: ImdsRequest[];
  /** The session tokens PUT /latest/api/token issued, in order. */
  readonly sessionTokens: string[];
  /** The role credentials IMDS handed out last (the secret key too, so a test can check a SigV4 signature). */
  issued: { accessKeyId: string; secretAccessKey: string; sessionToken: string } | undefined;
  /** While false, the instance has no role: security-credentials/ answers 404, as IMDS does. */
  hasRole: boolean;
  close(): Promise<void>;
}

/**
 * A local stand-in for the EC2 instance metadata service, IMDSv2 only (as instances with
 * `HttpTokens: required` run it): `PUT /latest/api/token` with
 * `X-aws-ec2-metadata-token-ttl-seconds` (1 to 21600) issues a session token; every GET must carry
 * it in `X-aws-ec2-metadata-token`, else 401. `GET /latest/meta-data/iam/security-credentials/`
 * names the instance's role, and `.../security-credentials/<role>` answers its credentials in
 * IMDS's JSON (Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration).
 */
export async function startImdsStandIn(options: { readonly roleName: string }): Promise<ImdsStandIn> {
  const base = "/latest/meta-data/iam/security-credentials/";
  const state: ImdsStandIn = {
    url: "",
    requests: [],
    sessionTokens: [],
    issued: undefined,
    hasRole: true,
    close: () => Promise.resolve(),
  };
  const server: Server = createServer((req, res) => {
    const path = req.url ?? "";
    state.requests.push({ method: req.method ?? "", path, headers: req.headers });
    req.resume();
    const text = (status: number, body: string): void => {
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(body);
    };
    if (path === "/latest/api/token") {
      if (req.method !== "PUT") return text(405, "");
      const ttl = Number(req.headers["x-aws-ec2-metadata-token-ttl-seconds"]);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21_600) return text(400, "");
      const token = `imds-${randomBytes(24).toString("base64url")}`;
      state.sessionTokens.push(token);
      return text(200, token);
    }
    const sent = req.headers["x-aws-ec2-metadata-token"];
    if (req.method !== "GET" || typeof sent !== "string" || !state.sessionTokens.includes(sent)) return text(401, "");
    if (!state.hasRole) return text(404, "");
    if (path === base) return text(200, options.roleName);
    if (path === `${base}${options.roleName}`) {
      const issued = {
        accessKeyId: `ASIA${randomBytes(8).toString("hex").toUpperCase()}`,
        secretAccessKey: randomBytes(30).toString("base64"),
        sessionToken: `imds-session-${randomBytes(24).toString("base64url")}`,
      };
      state.issued = issued;
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(
        JSON.stringify({
          Code: "Success",
          LastUpdated: new Date().toISOString(),
          Type: "AWS-HMAC",
          AccessKeyId: issued.accessKeyId,
          SecretAccessKey: issued.secretAccessKey,
          Token: issued.sessionToken,
          Expiration: new Date(Date.now() + 6 * 3_600_000).toISOString(),
        }),
      );
      return;
    }
    text(404, "");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  });
  return state;
}
