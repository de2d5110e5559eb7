/**
 * A STAND-IN for AWS, for `oci-cred-agent dev` only: the tour shows a `cloud_auth` integration
 * resolving with no cloud account and no network. Nothing else uses it, and it is no AWS client
 * or test double of the agent: the agent's own code (src/cloud/aws-ecr.ts, the AWS SDK's default
 * chain) reaches it exactly as it reaches AWS, through the SDK's documented overrides
 * (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`, web identity from `AWS_ROLE_ARN` and
 * `AWS_WEB_IDENTITY_TOKEN_FILE`), which `awsOverrides` gives.
 *
 * One HTTP server on 127.0.0.1 (port 0) answers the two documented calls an ECR credential needs:
 * - STS AssumeRoleWithWebIdentity (a form POST, an XML answer): session credentials for the role,
 *   when the web identity token is the one dev wrote;
 * - ECR GetAuthorizationToken (JSON 1.1, `X-Amz-Target`): `base64("AWS:<password>")`, valid 12 h,
 *   only when the request is signed (SigV4) with the key id STS issued.
 * It records what it saw (which role, how many tokens), never a secret, for dev's summary.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

const ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const ECR_TOKEN_LIFETIME_MS = 12 * 3_600_000;
const MAX_BODY_BYTES = 64 * 1024;

export interface DevAwsStandIn {
  /** `http://127.0.0.1:PORT`: the STS and ECR endpoint both. */
  readonly url: string;
  /** Roles STS assumed for a web identity, in order. */
  readonly assumedRoles: string[];
  /** ECR tokens issued to requests signed with an STS-issued key. */
  ecrTokens: number;
  close(): Promise<void>;
}

function xml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function answer(res: ServerResponse, status: number, type: string, body: string, headers = {}): void {
  res.writeHead(status, { "content-type": type, ...headers });
  res.end(body);
}

function ecrError(res: ServerResponse, type: string, message: string): void {
  answer(res, 400, "application/x-amz-json-1.1", JSON.stringify({ __type: type, message }), {
    "x-amzn-errortype": type,
  });
}

/** Starts the stand-in; `webIdentityToken` is the content of the file dev hands the SDK. */
export async function startDevAwsStandIn(options: {
  readonly webIdentityToken: string;
  readonly accountId: string;
}): Promise<DevAwsStandIn> {
  const issuedKeyIds = new Set<string>();
  const state: DevAwsStandIn = { url: "", assumedRoles: [], ecrTokens: 0, close: () => Promise.resolve() };

  const handle = (req: IncomingMessage, res: ServerResponse, body: string): void => {
    if (req.method !== "POST") return answer(res, 405, "text/plain", "POST only\n");
    if (req.headers["x-amz-target"] === ECR_TARGET) {
      const keyId = /Credential=([A-Z0-9]+)\//.exec(req.headers["authorization"] ?? "")?.[1];
      if (keyId === undefined || !issuedKeyIds.has(keyId))
        return ecrError(res, "UnrecognizedClientException", "The security token included in the request is invalid.");
      state.ecrTokens += 1;
      const password = `dev-ecr-${randomBytes(24).toString("base64url")}`;
      return answer(
        res,
        200,
        "application/x-amz-json-1.1",
        JSON.stringify({
          authorizationData: [
            {
              authorizationToken: Buffer.from(`AWS:${password}`).toString("base64"),
              expiresAt: (Date.now() + ECR_TOKEN_LIFETIME_MS) / 1000,
            },
          ],
        }),
      );
    }
    const form = new URLSearchParams(body);
    if (form.get("Action") !== "AssumeRoleWithWebIdentity")
      return answer(res, 400, "text/xml", "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>");
    const role = form.get("RoleArn") ?? "";
    if (form.get("WebIdentityToken") !== options.webIdentityToken)
      return answer(
        res,
        400,
        "text/xml",
        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>the web identity token is not the one dev wrote</Message></Error></ErrorResponse>",
      );
    state.assumedRoles.push(role);
    const accessKeyId = `ASIA${randomBytes(8).toString("hex").toUpperCase()}`;
    issuedKeyIds.add(accessKeyId);
    const roleName = role.split("/").at(-1) ?? "role";
    const session = form.get("RoleSessionName") ?? "session";
    answer(
      res,
      200,
      "text/xml",
      `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>${accessKeyId}</AccessKeyId>
      <SecretAccessKey>${randomBytes(20).toString("base64url")}</SecretAccessKey>
      <SessionToken>${randomBytes(32).toString("base64url")}</SessionToken>
      <Expiration>${new Date(Date.now() + 3_600_000).toISOString()}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>${xml(`arn:aws:sts::${options.accountId}:assumed-role/${roleName}/${session}`)}</Arn>
      <AssumedRoleId>AROADEVSTANDIN:${xml(session)}</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>`,
    );
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) req.destroy();
      else chunks.push(c);
    });
    req.on("end", () => {
      handle(req, res, Buffer.concat(chunks).toString("utf8"));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  });
}

/**
 * The environment that makes the AWS SDK's default chain use the stand-in's web identity and
 * nothing else: `undefined` removes a variable (keys, profiles and a global endpoint override
 * would win over the web identity or the stand-in; config files are pointed at nothing).
 */
export function awsOverrides(
  standIn: { url: string },
  files: {
    readonly webIdentityTokenFile: string;
    readonly absentFile: string;
  },
  roleArn: string,
): Record<string, string | undefined> {
  return {
    AWS_ROLE_ARN: roleArn,
    AWS_WEB_IDENTITY_TOKEN_FILE: files.webIdentityTokenFile,
    AWS_ROLE_SESSION_NAME: "oci-cred-agent-dev",
    AWS_ENDPOINT_URL_STS: standIn.url,
    AWS_ENDPOINT_URL_ECR: standIn.url,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: files.absentFile,
    AWS_SHARED_CREDENTIALS_FILE: files.absentFile,
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_DEFAULT_PROFILE: undefined,
    AWS_ENDPOINT_URL: undefined,
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: undefined,
    AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
  };
}
