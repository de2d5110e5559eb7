/**
 * cloud_auth with aws, end to end in the agent's own code: the SDK's default chain finds the web
 * identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), assumes the role at STS, asks ECR for a
 * token in the entry's region, and RunCredentials writes it as an ordinary `auth` entry that a
 * real registry accepts, for skopeo and for OpenTofu's lookup (src/core/opentofu-resolver.ts).
 *
 * AWS cannot run here: STS and ECR are local stand-ins (test/support/aws-standins.ts) that speak
 * the documented wire formats, reached through the SDK's endpoint overrides
 * (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL_ECR). The registry is real: Debian's docker-registry
 * with htpasswd, whose user `AWS` gets each password the ECR stand-in issues (the old one stops
 * working). Tokens expire on the test's clock, which the token cache reads: no sleeps.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCloudMinter } from "../../src/cloud/cloud-minter.js";
import { isAgentError } from "../../src/core/errors.js";
import type { AgentPrivateKey } from "../../src/crypto/agent-key.js";
import type { RunCredentials } from "../../src/credentials/run-credentials.js";
import { startAwsStandIns, type AwsStandIns } from "../support/aws-standins.js";
import {
  awsWebIdentityEnv,
  cloudAuthFailure,
  expectNothingWritten,
  newAgentKey,
  openCloudRun,
  expectPreflightOk,
  pullChecks,
  startModuleRegistry,
  writeRun,
} from "../support/cloud-test-kit.js";
import type { LocalRegistry } from "../support/registry-fixture.js";
import type { RegistryPair } from "../support/registry-pair.js";

const ROLE_ARN = "arn:aws:iam::123456789012:role/oca-pool";
const ASSUMED_ARN = "arn:aws:sts::123456789012:assumed-role/oca-pool/oci-cred-agent";
const OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.signature";
const TOKEN_LIFETIME_MS = 12 * 3_600_000;

let work: string;
let pair: RegistryPair;
let registry: LocalRegistry;
let aws: AwsStandIns;
let key: AgentPrivateKey;
let nowMs = Date.now();
let ecrExpiry = (): number => nowMs + TOKEN_LIFETIME_MS;
const issuedPasswords: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-aws-ecr-"));
  pair = await startModuleRegistry();
  registry = pair.registry;
  aws = await startAwsStandIns({
    assumedRoleArn: ASSUMED_ARN,
    ecrExpiresAtMs: () => ecrExpiry(),
    onEcrPassword: async (password) => {
      issuedPasswords.push(password);
      await registry.setPassword("AWS", password);
    },
  });
  const tokenFile = join(work, "web-identity-token");
  await writeFile(tokenFile, OIDC_TOKEN, { mode: 0o600 });
  // The pool's identity, as IRSA gives it to a pod; nothing else of the chain is here.
  process.env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        !["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"].includes(
          name,
        ),
    ),
  );
  Object.assign(process.env, awsWebIdentityEnv(ROLE_ARN, tokenFile, aws.url, work));
  key = await newAgentKey();
}, 120_000);

afterAll(async () => {
  await aws.close();
  await pair.stop();
  await rm(work, { recursive: true, force: true });
});

function openRun(runId: string, cloudAuth: Record<string, unknown>): Promise<RunCredentials> {
  return openCloudRun(key, "agent-aws", runId, { id: "int-ecr", url: registry.url, cloud_auth: cloudAuth });
}

/** skopeo and OpenTofu's lookup, reading exactly the run's files. */
const { expectWrittenAndPulled, skopeoInspect, tofuResolves } = pullChecks(
  () => registry.host,
  () => registry.certDir,
  () => work,
);

describe("cloud_auth aws: web identity, STS, ECR, a real registry", () => {
  it("mints through the web identity and ECR stand-ins, passes pre-flight, and is read by skopeo and OpenTofu's lookup; renewed before the next phase once it nears expiry", async () => {
    // The registry is a local stand-in, not *.dkr.ecr.eu-west-1.amazonaws.com: the operator names it.
    const minter = createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] });
    const credentials = await openRun("run-aws-1", { provider: "aws", region: "eu-west-1" });
    const signal = new AbortController().signal;

    const minted = await credentials.mintCloud(minter, signal);
    expect(minted).toEqual([
      {
        host: registry.host,
        integration_id: "int-ecr",
        provider: "aws",
        identity: ROLE_ARN,
        expires_at: new Date(nowMs + TOKEN_LIFETIME_MS).toISOString(),
      },
    ]);

    // What the agent sent: the token file's content and the role to STS; to ECR, a SigV4
    // signature with the key STS issued, for eu-west-1 and the ecr service, with its session token.
    const sts = aws.requests.filter((r) => r.api === "sts");
    expect(sts).toHaveLength(1);
    const form = new URLSearchParams(sts[0]?.body);
    expect(form.get("Action")).toBe("AssumeRoleWithWebIdentity");
    expect(form.get("RoleArn")).toBe(ROLE_ARN);
    expect(form.get("WebIdentityToken")).toBe(OIDC_TOKEN);
    const ecr = aws.requests.filter((r) => r.api === "ecr");
    expect(ecr).toHaveLength(1);
    const authorization = String(ecr[0]?.headers["authorization"]);
    expect(authorization).toMatch(
      new RegExp(
        `^AWS4-HMAC-SHA256 Credential=${aws.issued?.accessKeyId ?? "?"}/\\d{8}/eu-west-1/ecr/aws4_request, SignedHeaders=[^,]*x-amz-security-token[^,]*, Signature=[0-9a-f]{64}$`,
      ),
    );
    expect(ecr[0]?.headers["x-amz-security-token"]).toBe(aws.issued?.sessionToken);
    expect(JSON.parse(ecr[0]?.body ?? "null")).toEqual({});

    // Pre-flight checks it like any other credential.
    await expectPreflightOk(credentials, registry.dispatcher(), registry.host, signal);

    const written = await writeRun(credentials, join(work, "run-aws-1"));
    try {
      const first = issuedPasswords.at(-1);
      // An ordinary auth entry (user AWS), never identitytoken.
      await expectWrittenAndPulled(written, "AWS", first);

      // Before the next phase, still far from expiry: the cached token, no call to AWS, no rewrite.
      expect(await credentials.refresh(minter, signal)).toEqual([]);
      expect(aws.requests.filter((r) => r.api === "ecr")).toHaveLength(1);

      // The phase outlived the token: the next refresh mints a new one and replaces the files.
      nowMs += TOKEN_LIFETIME_MS;
      const renewed = await credentials.refresh(minter, signal);
      expect(renewed.map((m) => m.integration_id)).toEqual(["int-ecr"]);
      const second = issuedPasswords.at(-1);
      expect(second).not.toBe(first);
      expect(await registry.probe("AWS", first ?? "")).toBe(401);
      expect(tofuResolves(written.env)).toEqual({ username: "AWS", password: second });
      expect((await skopeoInspect(written.env)).ok).toBe(true);
      // The STS session was still good: only ECR was asked again.
      expect(aws.requests.filter((r) => r.api === "sts")).toHaveLength(1);
      expect(aws.requests.filter((r) => r.api === "ecr")).toHaveLength(2);
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("a registry the agent does not trust with the pool's identity (not ECR of the entry's region, not in cloud_auth_host) is refused before AWS is asked", async () => {
    const asked = aws.requests.length;
    // The local registry stands for any host an integration names; another region's ECR host too.
    for (const [host, allowed] of [
      [registry.host, []],
      [registry.host, ["127.0.0.1"]],
      ["123456789012.dkr.ecr.us-east-1.amazonaws.com", []],
      ["123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example", []],
    ] as const) {
      const error: unknown = await createCloudMinter({ now: () => nowMs, allowedHosts: allowed })
        .mint({ provider: "aws", region: "eu-west-1", account: undefined }, host, new AbortController().signal)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      if (!isAgentError(error, "CLOUD_AUTH_FAILED")) throw new Error(`expected CLOUD_AUTH_FAILED for ${host}`);
      expect(error.details).toMatchObject({ provider: "aws", registry: host, identity: ROLE_ARN });
      expect(error.message).toContain(`${host} is none of them`);
      expect(error.message).toContain("*.dkr.ecr.eu-west-1.amazonaws.com");
      expect(error.message).toContain(`--cloud-auth-host ${host}`);
    }
    expect(aws.requests).toHaveLength(asked);
    // ECR of the entry's region is trusted without any setting (the ECR stand-in answers for it).
    const minted = await createCloudMinter({ now: () => nowMs }).mint(
      { provider: "aws", region: "eu-west-1", account: undefined },
      "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
      new AbortController().signal,
    );
    expect(minted.username).toBe("AWS");
  });

  it.each(["sts", "ecr"] as const)(
    "a refusal that echoes what the agent sent (%s) reaches the run's error without any secret",
    async (echo) => {
      aws.echo = echo;
      try {
        const error = await cloudAuthFailure(
          createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] }).mint(
            { provider: "aws", region: "eu-west-1", account: undefined },
            registry.host,
            new AbortController().signal,
          ),
        );
        const text = JSON.stringify({ m: error.message, d: error.details });
        expect(text).toContain(echo === "sts" ? "InvalidIdentityToken" : "AccessDeniedException");
        const last = aws.requests.at(-1);
        const signature = /Signature=([0-9a-f]+)/.exec(String(last?.headers["authorization"]))?.[1];
        for (const secret of [OIDC_TOKEN, aws.issued?.secretAccessKey, aws.issued?.sessionToken, signature])
          if (secret !== undefined) expect(text).not.toContain(secret);
        // Nothing else carries the SDK's error (and its request's headers) along.
        expect(error.cause).toBeUndefined();
        // No static keys are recommended: they would sit in the agent's environment.
        expect(error.message).not.toContain("AWS_SECRET_ACCESS_KEY");
      } finally {
        aws.echo = undefined;
      }
    },
  );

  it("a phase that starts with less than 15 minutes left on the token gets a new one (refresh before the phase)", async () => {
    const minter = createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] });
    const credentials = await openRun("run-aws-margin", { provider: "aws", region: "eu-west-1" });
    const signal = new AbortController().signal;
    await credentials.mintCloud(minter, signal);
    const written = await writeRun(credentials, join(work, "run-aws-margin"));
    try {
      const first = issuedPasswords.at(-1);
      nowMs += TOKEN_LIFETIME_MS - 16 * 60_000;
      expect(await credentials.refresh(minter, signal)).toEqual([]);
      // 14 minutes left: a phase of 15 minutes would outlive it.
      nowMs += 2 * 60_000;
      const renewed = await credentials.refresh(minter, signal);
      expect(renewed.map((m) => m.integration_id)).toEqual(["int-ecr"]);
      expect(tofuResolves(written.env).password).not.toBe(first);
      expect(tofuResolves(written.env).password).toBe(issuedPasswords.at(-1));
    } finally {
      expect((await credentials.wipe()).ok).toBe(true);
    }
  });

  it("an expiry far beyond ECR's 12 hours is not believed: the token is renewed after 12 hours", async () => {
    ecrExpiry = () => 99_999_999_999_000;
    try {
      const minter = createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] });
      const auth = { provider: "aws", region: "eu-west-1", account: undefined } as const;
      const signal = new AbortController().signal;
      const first = await minter.mint(auth, registry.host, signal);
      expect(first.expiresAtMs).toBe(nowMs + TOKEN_LIFETIME_MS);
      const asked = aws.requests.filter((r) => r.api === "ecr").length;
      nowMs += TOKEN_LIFETIME_MS;
      const second = await minter.mint(auth, registry.host, signal);
      expect(second.password).not.toBe(first.password);
      expect(aws.requests.filter((r) => r.api === "ecr")).toHaveLength(asked + 1);
    } finally {
      ecrExpiry = () => nowMs + TOKEN_LIFETIME_MS;
    }
  });

  it("a refused identity fails with CLOUD_AUTH_FAILED naming aws, the role and ecr:GetAuthorizationToken, before anything is written", async () => {
    aws.denyEcr = ASSUMED_ARN;
    try {
      const credentials = await openRun("run-aws-2", { provider: "aws", region: "us-east-1" });
      const error = await cloudAuthFailure(
        credentials.mintCloud(
          createCloudMinter({ now: () => nowMs, allowedHosts: [registry.host] }),
          new AbortController().signal,
        ),
      );
      expect(error.details).toEqual({
        provider: "aws",
        identity: ASSUMED_ARN,
        registry: registry.host,
        permission: "ecr:GetAuthorizationToken",
      });
      expect(error.message).toContain(
        `aws gave no registry credential for ${registry.host} to identity ${ASSUMED_ARN}`,
      );
      expect(error.message).toContain("allow ecr:GetAuthorizationToken to");
      const last = aws.requests.at(-1);
      expect(last?.api).toBe("ecr");
      expect(String(last?.headers["authorization"])).toContain("/us-east-1/ecr/aws4_request");
      await expectNothingWritten(credentials, join(work, "run-aws-2"));
    } finally {
      aws.denyEcr = undefined;
    }
  });
});
