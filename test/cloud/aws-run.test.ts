/**
 * A real agent process runs with an ECR integration of the reference control plane
 * (`cloud_auth: {provider: "aws"}`): the sealed export carries cloud_auth, the agent mints the
 * credential from its web identity before pre-flight, the stand-in tofu's OpenTofu lookup reads
 * it as an ordinary `auth` entry, a token that expires is renewed before the next phase (and the
 * next phase pulls with the new one after the old one was revoked), a refused identity fails the
 * run before init with CLOUD_AUTH_FAILED, and no token appears in any log line or output.
 *
 * AWS cannot run here: STS and ECR are local stand-ins (test/support/aws-standins.ts) reached
 * through AWS_ENDPOINT_URL_STS and AWS_ENDPOINT_URL_ECR in the agent's environment. They issue
 * ECR tokens that expire at once, so every phase after the first needs a new one (no clock, no
 * sleep). The registry is real (Debian's docker-registry, htpasswd user `AWS`).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAwsStandIns, type AwsStandIns } from "../support/aws-standins.js";
import {
  awsWebIdentityEnv,
  expectMintedAndRenewed,
  refusedBeforeInit,
  startCloudAgentBed,
  type CloudAgentBed,
} from "../support/cloud-test-kit.js";

const ROLE_ARN = "arn:aws:iam::123456789012:role/oca-pool";
const ASSUMED_ARN = "arn:aws:sts::123456789012:assumed-role/oca-pool/oci-cred-agent";

let bed: CloudAgentBed;
let aws: AwsStandIns;
const issued: string[] = [];

beforeAll(async () => {
  bed = await startCloudAgentBed("oca-aws-run-", { name: "ecr", cloud_auth: { provider: "aws", region: "eu-west-1" } });
  const { dir, registry } = bed;
  aws = await startAwsStandIns({
    assumedRoleArn: ASSUMED_ARN,
    ecrExpiresAtMs: () => Date.now(),
    onEcrPassword: async (password) => {
      issued.push(password);
      await registry.setPassword("AWS", password);
    },
  });
  const tokenFile = join(dir, "web-identity-token");
  await writeFile(tokenFile, "eyJ.projected-token.sig", { mode: 0o600 });
  bed.env = {
    AWS_ACCESS_KEY_ID: "",
    AWS_PROFILE: "",
    ...awsWebIdentityEnv(ROLE_ARN, tokenFile, aws.url, dir),
  };
}, 120_000);

afterAll(async () => {
  await aws.close();
  await bed.close();
});

describe("an agent with a cloud_auth aws integration", () => {
  it("mints before pre-flight, renews the expired token before the next phase, pulls with it; no token in any log", async () => {
    await expectMintedAndRenewed(bed, { provider: "aws", identity: ROLE_ARN, user: "AWS", issued });
  });

  it("a refused identity fails the run before init with CLOUD_AUTH_FAILED naming aws, the role and ecr:GetAuthorizationToken", async () => {
    aws.denyEcr = ASSUMED_ARN;
    try {
      const message = await refusedBeforeInit(bed, issued, "AWS");
      expect(message).toContain(`aws gave no registry credential for ${bed.registry.host} to identity ${ASSUMED_ARN}`);
      expect(message).toContain("missing permission ecr:GetAuthorizationToken");
    } finally {
      aws.denyEcr = undefined;
    }
  });
});
