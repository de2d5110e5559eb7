/**
 * Amazon ECR: a registry credential from the pool's own AWS identity. Loaded only when an entry
 * asks for aws (src/cloud/cloud-minter.ts imports this module dynamically), with the SDK.
 *
 * Credentials come from the SDK's default chain (`fromNodeProviderChain`: the environment, web
 * identity through `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, EKS Pod Identity and other
 * container credentials, the instance role through IMDSv2), then ECR's GetAuthorizationToken in
 * the entry's region gives `base64("AWS:<password>")`, valid 12 hours. The SDK honours its
 * documented endpoint overrides (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`,
 * `AWS_EC2_METADATA_SERVICE_ENDPOINT`), which is how private endpoints, and the tests' local
 * stand-ins, are reached. The SDK is given no logger: no token reaches a log.
 *
 * The entry's `account` is not sent as `registryIds`: ECR deprecated that field, and its token
 * serves every registry the identity may reach whatever it names. The account stays in the
 * token cache's key and in messages.
 */
import { ECRClient, GetAuthorizationTokenCommand } from "@aws-sdk/client-ecr";
import { fromNodeProviderChain } from "@aws-sdk/credential-providers";
import { cloudAuthFailed, type CloudAuth, type CloudMinter, type MintedCredential } from "../core/cloud-auth.js";
import { AgentError } from "../core/errors.js";
import { awsIdentity } from "./aws-identity.js";
import { readTokenFile } from "./token-files.js";

/** ECR's documented token lifetime, used when an answer carries no expiry. */
const ECR_TOKEN_LIFETIME_MS = 12 * 3_600_000;

const REQUEST_HANDLER = { connectionTimeout: 5_000, requestTimeout: 10_000 };

/**
 * The secrets AWS's default chain may send, from the environment and the token files it names:
 * a refusal is scrubbed of them (AWS may echo a web identity token or a request's headers).
 */
function chainSecrets(env: NodeJS.ProcessEnv): (string | undefined)[] {
  return [
    readTokenFile(env["AWS_WEB_IDENTITY_TOKEN_FILE"]),
    readTokenFile(env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]),
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
    env["AWS_SECRET_ACCESS_KEY"],
    env["AWS_SESSION_TOKEN"],
  ];
}

/** The permission AWS names in an AccessDenied message ("is not authorized to perform: ecr:GetAuthorizationToken"). */
function namedPermission(message: string): string | undefined {
  return /\bperform:? ([a-z0-9-]+:[A-Za-z0-9]+)/.exec(message)?.[1];
}

/** The principal AWS names in an AccessDenied message ("User: arn:aws:sts::...:assumed-role/... is not authorized"). */
function namedPrincipal(message: string): string | undefined {
  return /\bUser: (arn:[^\s]+)/.exec(message)?.[1];
}

export class AwsEcrMinter implements CloudMinter {
  /** One client per region; each keeps its credentials (the SDK refreshes them before they expire). */
  private readonly clients = new Map<string, ECRClient>();
  /** The secret parts of the session credentials the chain gave last (per region), to scrub refusals of. */
  private readonly sessionSecrets = new Map<string, readonly (string | undefined)[]>();

  private client(region: string): ECRClient {
    let client = this.clients.get(region);
    if (client === undefined) {
      const chain = fromNodeProviderChain({ clientConfig: { region, requestHandler: REQUEST_HANDLER } });
      client = new ECRClient({
        region,
        credentials: async (properties) => {
          const credentials = await chain(properties);
          this.sessionSecrets.set(region, [credentials.secretAccessKey, credentials.sessionToken]);
          return credentials;
        },
        requestHandler: REQUEST_HANDLER,
      });
      this.clients.set(region, client);
    }
    return client;
  }

  async mint(auth: CloudAuth, registryHost: string, signal: AbortSignal): Promise<MintedCredential> {
    if (auth.provider !== "aws") throw new AgentError("INTERNAL", `the aws minter was given a ${auth.provider} entry`);
    const identity = awsIdentity(process.env);
    const minted: string[] = [];
    const refusal = (error: unknown): AgentError => {
      const e = error instanceof Error ? error : new Error("unexpected failure");
      const permission = namedPermission(e.message);
      const principal = namedPrincipal(e.message) ?? identity;
      const noCredentials = e.name === "CredentialsProviderError";
      // No cause: the SDK's error holds the request, whose headers carry the session token.
      return cloudAuthFailed({
        provider: "aws",
        identity: noCredentials
          ? `none found (looked for ${identity} and the rest of the SDK's default chain)`
          : principal,
        registry: registryHost,
        permission,
        reason: signal.aborted ? "AWS did not answer within 30 s" : `${e.name}: ${e.message}`,
        // Static keys (AWS_ACCESS_KEY_ID) are not suggested: the agent's environment may reach runs.
        fix: noCredentials
          ? "give the agent a short-lived AWS identity: IRSA (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity or an instance role"
          : permission !== undefined
            ? `allow ${permission} to ${principal} (for ECR pulls also ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repositories), or turn export off for this integration`
            : `check the identity's trust policy and permissions and the entry's region ${auth.region}, or turn export off for this integration`,
        secrets: [...chainSecrets(process.env), ...(this.sessionSecrets.get(auth.region) ?? []), ...minted],
      });
    };
    let answer;
    try {
      answer = await this.client(auth.region).send(new GetAuthorizationTokenCommand({}), { abortSignal: signal });
    } catch (error) {
      throw refusal(error);
    }
    const data = answer.authorizationData?.[0];
    const decoded =
      data?.authorizationToken === undefined ? "" : Buffer.from(data.authorizationToken, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    minted.push(decoded, data?.authorizationToken ?? "");
    if (colon <= 0 || colon === decoded.length - 1)
      throw refusal(new Error("ECR answered GetAuthorizationToken without a usable authorizationToken"));
    return {
      username: decoded.slice(0, colon),
      password: decoded.slice(colon + 1),
      expiresAtMs: data?.expiresAt?.getTime() ?? Date.now() + ECR_TOKEN_LIFETIME_MS,
      identity,
    };
  }
}
