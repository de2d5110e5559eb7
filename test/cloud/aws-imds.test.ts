/**
 * cloud_auth with aws from the instance role: with no web identity, keys or container
 * credentials, the SDK's default chain ends at the instance metadata service. The agent's own
 * code (src/cloud/aws-ecr.ts) must then speak IMDSv2 (a session token from
 * `PUT /latest/api/token` with its TTL header, sent back on every GET), take the role's
 * credentials, and sign ECR GetAuthorizationToken with them (SigV4, the IMDS-issued key and
 * session token); the token then pulls from a real registry for skopeo and OpenTofu's lookup.
 *
 * EC2 cannot run here: IMDS and ECR are local stand-ins (test/support/aws-standins.ts) that speak
 * the documented wire formats, reached through AWS_EC2_METADATA_SERVICE_ENDPOINT and
 * AWS_ENDPOINT_URL_ECR. The IMDS stand-in is IMDSv2 only (a GET without the session token gets
 * 401, as with `HttpTokens: required`). The registry is real: Debian's docker-registry with
 * htpasswd, whose user `AWS` gets each password the ECR stand-in issues.
 */
import { createHash, createHmac } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCloudMinter } from "../../src/cloud/cloud-minter.js";
import type { AgentPrivateKey } from "../../src/crypto/agent-key.js";
import type { RunCredentials } from "../../src/credentials/run-credentials.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { startAwsStandIns, startImdsStandIn, type AwsStandIns, type ImdsStandIn } from "../support/aws-standins.js";
import {
  cloudAuthFailure,
  newAgentKey,
  openCloudRun,
  pullChecks,
  startModuleRegistry,
  writeRun,
} from "../support/cloud-test-kit.js";
import type { LocalRegistry } from "../support/registry-fixture.js";
import type { RegistryPair } from "../support/registry-pair.js";

const ROLE_NAME = "oca-instance-role";
const CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/";

let work: string;
let pair: RegistryPair;
let registry: LocalRegistry;
let aws: AwsStandIns;
let imds: ImdsStandIn;
let key: AgentPrivateKey;
const issuedPasswords: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-aws-imds-"));
  pair = await startModuleRegistry();
  registry = pair.registry;
  aws = await startAwsStandIns({
    assumedRoleArn: "arn:aws:sts::123456789012:assumed-role/unused/unused",
    ecrExpiresAtMs: () => Date.now() + 12 * 3_600_000,
    onEcrPassword: async (password) => {
      issuedPasswords.push(password);
      await registry.setPassword("AWS", password);
    },
  });
  imds = await startImdsStandIn({ roleName: ROLE_NAME });
  // An EC2 instance with a role: no keys, no profile, no web identity, no container credentials.
  for (const name of Object.keys(process.env)) if (name.startsWith("AWS_")) Reflect.deleteProperty(process.env, name);
  Object.assign(process.env, {
    AWS_EC2_METADATA_SERVICE_ENDPOINT: imds.url,
    // IMDSv2 or nothing: the SDK must not fall back to tokenless GETs.
    AWS_EC2_METADATA_V1_DISABLED: "true",
    AWS_ENDPOINT_URL_ECR: aws.url,
    AWS_CONFIG_FILE: join(work, "no-aws-config"),
    AWS_SHARED_CREDENTIALS_FILE: join(work, "no-aws-credentials"),
  });
  key = await newAgentKey();
}, 120_000);

afterAll(async () => {
  await imds.close();
  await aws.close();
  await pair.stop();
  await rm(work, { recursive: true, force: true });
});

function openRun(runId: string): Promise<RunCredentials> {
  return openCloudRun(key, "agent-aws", runId, {
    id: "int-ecr",
    url: registry.url,
    cloud_auth: { provider: "aws", region: "eu-west-1" },
  });
}

/** skopeo and OpenTofu's lookup, reading exactly the run's files. */
const { skopeoInspect, tofuResolves } = pullChecks(
  () => registry.host,
  () => registry.certDir,
  () => work,
);

const sha256 = (data: string): string => createHash("sha256").update(data).digest("hex");
const hmac = (k: Buffer | string, data: string): Buffer => createHmac("sha256", k).update(data).digest();

/**
 * Recomputes a request's SigV4 signature (AWS's documented algorithm) with a secret key: true
 * only when the request was signed with that key, for the headers it names.
 */
function signedWith(
  request: { headers: Record<string, string | string[] | undefined>; body: string },
  secretAccessKey: string,
): boolean {
  const auth =
    /^AWS4-HMAC-SHA256 Credential=[^/]+\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(
      String(request.headers["authorization"]),
    );
  if (auth === null) return false;
  const [, date = "", region = "", service = "", signedHeaders = "", signature] = auth;
  const canonicalHeaders = signedHeaders
    .split(";")
    .map((h) => `${h}:${String(request.headers[h]).trim().replace(/\s+/g, " ")}\n`)
    .join("");
  const canonicalRequest = ["POST", "/", "", canonicalHeaders, signedHeaders, sha256(request.body)].join("\n");
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", String(request.headers["x-amz-date"]), scope, sha256(canonicalRequest)].join(
    "\n",
  );
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), "aws4_request");
  return hmac(signingKey, toSign).toString("hex") === signature;
}

describe("cloud_auth aws: the instance role through IMDSv2, then ECR, then a real registry", () => {
  it("takes a session token, sends it on every metadata GET, signs ECR with the role's key, and the token pulls for skopeo and OpenTofu's lookup", async () => {
    const credentials = await openRun("run-imds-1");
    const minted = await credentials.mintCloud(
      createCloudMinter({ allowedHosts: [registry.host] }),
      new AbortController().signal,
    );
    expect(minted.map(({ host, provider, identity }) => ({ host, provider, identity }))).toEqual([
      { host: registry.host, provider: "aws", identity: "the instance role (IMDSv2)" },
    ]);

    // IMDSv2: first the session token (PUT with its TTL), then the role and its credentials, each
    // GET carrying that token.
    expect(imds.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      "PUT /latest/api/token",
      `GET ${CREDENTIALS_PATH}`,
      `GET ${CREDENTIALS_PATH}${ROLE_NAME}`,
    ]);
    expect(imds.requests[0]?.headers["x-aws-ec2-metadata-token-ttl-seconds"]).toMatch(/^\d+$/);
    expect(imds.sessionTokens).toHaveLength(1);
    for (const r of imds.requests.slice(1)) expect(r.headers["x-aws-ec2-metadata-token"]).toBe(imds.sessionTokens[0]);

    // ECR: signed with the key IMDS issued (the signature recomputed with its secret), with its
    // session token, for eu-west-1 and the ecr service; STS was never asked.
    const issued = imds.issued;
    if (issued === undefined) throw new Error("IMDS issued no credentials");
    expect(aws.requests.map((r) => r.api)).toEqual(["ecr"]);
    const ecr = aws.requests[0];
    if (ecr === undefined) throw new Error("no ECR request");
    expect(String(ecr.headers["authorization"])).toMatch(
      new RegExp(`^AWS4-HMAC-SHA256 Credential=${issued.accessKeyId}/\\d{8}/eu-west-1/ecr/aws4_request, `),
    );
    expect(ecr.headers["x-amz-security-token"]).toBe(issued.sessionToken);
    expect(signedWith(ecr, issued.secretAccessKey)).toBe(true);
    expect(signedWith(ecr, "not-the-secret")).toBe(false);

    const written = await writeRun(credentials, join(work, "run-imds-1"));
    try {
      const password = issuedPasswords.at(-1);
      // OpenTofu's lookup finds a static credential.
      expect(tofuResolves(written.env)).toEqual({ username: "AWS", password });
      expect((await skopeoInspect(written.env)).text).toContain("application/vnd.opentofu.modulepkg");
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("an instance without a role fails with CLOUD_AUTH_FAILED naming aws and the instance role, before anything is written", async () => {
    imds.hasRole = false;
    const ecrBefore = aws.requests.length;
    try {
      const credentials = await openRun("run-imds-2");
      const error = await cloudAuthFailure(
        credentials.mintCloud(createCloudMinter({ allowedHosts: [registry.host] }), new AbortController().signal),
      );
      expect(error.details).toMatchObject({ provider: "aws", registry: registry.host });
      expect(error.message).toContain("the instance role (IMDSv2)");
      expect(error.message).toContain("give the agent a short-lived AWS identity");
      expect(aws.requests.length).toBe(ecrBefore);
      await expect(realFs.lstat(join(work, "run-imds-2"))).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      imds.hasRole = true;
    }
  });
});
