/**
 * A real agent process runs with a Google Artifact Registry integration of the reference control
 * plane (`cloud_auth: {provider: "gcp"}`): the agent finds the metadata server (GKE workload
 * identity, GCE) and mints a cloud-platform access token before pre-flight, the stand-in tofu's
 * OpenTofu lookup reads it as an ordinary `auth` entry (user `oauth2accesstoken`), a token that
 * expires is renewed before the next phase (which pulls with the new one after the old one was
 * revoked), a refused identity fails the run before init with CLOUD_AUTH_FAILED, and no token
 * appears in any log line or output.
 *
 * Google Cloud cannot run here: the metadata server is a local stand-in
 * (test/support/gcp-standins.ts) reached through GCE_METADATA_HOST in the agent's environment. It
 * issues tokens that have already expired (`expires_in: -1`), so every phase after the first needs
 * a new one (no clock, no sleep). The registry is real (Debian's docker-registry, htpasswd user
 * `oauth2accesstoken`).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  expectMintedAndRenewed,
  refusedBeforeInit,
  startCloudAgentBed,
  type CloudAgentBed,
} from "../support/cloud-test-kit.js";
import { startGcpStandIns, type GcpStandIns } from "../support/gcp-standins.js";

const USER = "oauth2accesstoken";
const IDENTITY = "the metadata server's default service account";

let bed: CloudAgentBed;
let gcp: GcpStandIns;
const issued: string[] = [];

beforeAll(async () => {
  bed = await startCloudAgentBed("oca-gcp-run-", { name: "gar", cloud_auth: { provider: "gcp" } });
  const { registry } = bed;
  gcp = await startGcpStandIns({
    expiresInSeconds: () => -1,
    onAccessToken: async (token) => {
      issued.push(token);
      await registry.setPassword(USER, token);
    },
  });
  bed.env = { GOOGLE_APPLICATION_CREDENTIALS: "", GOOGLE_SDK_NODE_LOGGING: "", GCE_METADATA_HOST: gcp.host };
}, 120_000);

afterAll(async () => {
  await gcp.close();
  await bed.close();
});

describe("an agent with a cloud_auth gcp integration", () => {
  it("mints before pre-flight, renews the expired token before the next phase, pulls with it; no token in any log", async () => {
    await expectMintedAndRenewed(bed, { provider: "gcp", identity: IDENTITY, user: USER, issued });
  });

  it("a refused identity fails the run before init with CLOUD_AUTH_FAILED naming gcp and the metadata server's service account", async () => {
    gcp.denyMetadata = 404;
    try {
      const message = await refusedBeforeInit(bed, issued, USER);
      expect(message).toContain(
        `gcp gave no registry credential for ${bed.registry.host} to identity ${IDENTITY}: HTTP 404`,
      );
    } finally {
      gcp.denyMetadata = undefined;
    }
  });
});
