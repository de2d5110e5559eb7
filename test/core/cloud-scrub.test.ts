/**
 * A cloud's refusal text on its way into a run's error (src/core/cloud-auth.ts, scrubCloudText):
 * known secrets, their fragments and anything token-like go; the identifiers that make a refusal
 * useful stay.
 */
import { describe, expect, it } from "vitest";
import { cloudAuthFailed, scrubCloudText } from "../../src/core/cloud-auth.js";

const SESSION = "IQoJb3JpZ2luX2VjEJr//////////wEaCWV1LXdlc3QtMSJHMEUCIQD";
const KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

describe("scrubCloudText", () => {
  it("removes known secrets, with or without their newline, and runs that are part of one", () => {
    expect(scrubCloudText(`token ${SESSION} and key ${KEY}`, [SESSION, `${KEY}\n`])).toBe(
      "token [redacted] and key [redacted]",
    );
    expect(scrubCloudText(`bad ${SESSION.slice(0, 12)}`, [SESSION])).toBe("bad [redacted]");
  });

  it("masks what looks like a token without knowing it: a Google token, a JWT, a long key or signature", () => {
    for (const token of [
      "ya29.a0AfB_byC",
      "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
      "eyJFEDERATEDSECRET.sa-token.sig",
      "Signature=5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978",
      KEY,
    ])
      expect(scrubCloudText(`seen ${token} here`), token).toBe("seen [redacted] here");
  });

  it("keeps GUIDs, ARNs, permission names, error codes and host names", () => {
    const text =
      "AADSTS700016: Application with identifier '5d1e3c7a-0f4b-4a4e-9f6b-2b7d8e6a1c01' was not found; User: arn:aws:sts::123456789012:assumed-role/oca-pool/oci-cred-agent is not authorized to perform: ecr:GetAuthorizationToken; Permission 'iam.serviceAccounts.getAccessToken' denied; HTTP 400 invalid_grant at europe-docker.pkg.dev";
    expect(scrubCloudText(text)).toBe(text);
  });

  it("every refusal goes through it: the reason, the permission, and known secrets in the identity", () => {
    const error = cloudAuthFailed({
      provider: "aws",
      identity: `role ${SESSION}`,
      registry: "r.example",
      permission: undefined,
      reason: `denied for ${SESSION.slice(0, 20)} signed ${KEY}\nsecond line ${SESSION}`,
      fix: "allow it",
      secrets: [SESSION],
    });
    expect(error.message).toBe(
      "aws gave no registry credential for r.example to identity role [redacted]: denied for [redacted] signed [redacted]; allow it",
    );
    expect(JSON.stringify(error.details)).not.toContain(SESSION);
  });
});
