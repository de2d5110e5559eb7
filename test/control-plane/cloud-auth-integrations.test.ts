/**
 * The reference control plane's integrations with `cloud_auth` (issue 17): accepted without a
 * password and validated by the agent's own rule (problems name fields, never values), shown in
 * GET, switched to and from a password or a credential helper by PATCH, and audited. The sealed
 * bundle's wire form is proven by a real agent in test/cloud/aws-run.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";

let h: Harness;
const URL_ECR = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com";

beforeAll(async () => {
  h = await startControlPlane();
});
afterAll(async () => {
  await h.close();
});

const errorOf = (a: { json: unknown }): { code: string; message: string } =>
  (a.json as { error: { code: string; message: string } }).error;

describe("admin API: cloud_auth integrations", () => {
  it("accepts cloud_auth without username and password, keeps only the known fields, and shows it in GET", async () => {
    const made = await h.admin("POST", "/integrations", {
      name: "ecr",
      registry_url: URL_ECR,
      cloud_auth: { provider: "aws", region: "eu-west-1", account: "123456789012", extra: "ignored" },
      export_credentials: true,
    });
    expect(made.status).toBe(201);
    const id = (made.json as { id: string }).id;
    const shown = (await h.admin("GET", `/integrations/${id}`)).json;
    expect(shown).toMatchObject({
      cloud_auth: { provider: "aws", region: "eu-west-1", account: "123456789012" },
      credential_helper: null,
      username: "",
      has_password: false,
    });
    expect((shown as { cloud_auth: object }).cloud_auth).not.toHaveProperty("extra");
    await h.admin("DELETE", `/integrations/${id}`);
  });

  it.each([
    [{ provider: "aws" }, "cloud_auth.region: required for aws"],
    [
      { provider: "aws", region: "eu-west-1", account: "SECRET-LOOKING" },
      "cloud_auth.account: expected a 12-digit AWS account id",
    ],
    [{ provider: "oci" }, "cloud_auth.provider: expected one of aws, azure, gcp"],
  ])("refuses %j with 422 naming the field, never the value", async (cloud_auth, problem) => {
    const a = await h.admin("POST", "/integrations", { name: "bad", registry_url: URL_ECR, cloud_auth });
    expect(a.status).toBe(422);
    expect(errorOf(a).code).toBe("BODY_INVALID");
    expect(errorOf(a).message).toContain(problem);
    expect(errorOf(a).message).not.toContain("SECRET-LOOKING");
  });

  it("refuses cloud_auth together with a password or a credential helper", async () => {
    for (const extra of [{ username: "u", password: "p" }, { credential_helper: "ecr-login" }]) {
      const a = await h.admin("POST", "/integrations", {
        name: "both",
        registry_url: URL_ECR,
        cloud_auth: { provider: "gcp" },
        ...extra,
      });
      expect(a.status).toBe(422);
      expect(errorOf(a).code).toBe("BODY_INVALID");
    }
  });

  it("PATCH: to cloud_auth from a password (which is dropped), moves without a password, back to a password with both fields; audited", async () => {
    const made = await h.admin("POST", "/integrations", {
      name: "switching",
      registry_url: URL_ECR,
      username: "robot",
      password: "robot-password",
      export_credentials: true,
    });
    const id = (made.json as { id: string }).id;
    const toCloud = await h.admin("PATCH", `/integrations/${id}`, {
      cloud_auth: { provider: "aws", region: "eu-west-1" },
    });
    expect(toCloud.status).toBe(200);
    expect(toCloud.json).toMatchObject({
      cloud_auth: { provider: "aws", region: "eu-west-1" },
      username: "",
      has_password: false,
    });
    // It holds no password: a new URL needs none.
    const moved = await h.admin("PATCH", `/integrations/${id}`, {
      registry_url: "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
    });
    expect(moved.status).toBe(200);
    const mixed = await h.admin("PATCH", `/integrations/${id}`, { cloud_auth: { provider: "gcp" }, password: "p" });
    expect(mixed.status).toBe(422);
    const halfBack = await h.admin("PATCH", `/integrations/${id}`, { password: "p" });
    expect(halfBack.status).toBe(422);
    const back = await h.admin("PATCH", `/integrations/${id}`, { username: "robot", password: "robot-password-2" });
    expect(back.status).toBe(200);
    expect(back.json).toMatchObject({ cloud_auth: null, username: "robot", has_password: true });
    const toHelper = await h.admin("PATCH", `/integrations/${id}`, { cloud_auth: { provider: "gcp" } });
    expect(toHelper.status).toBe(200);
    const audit = (await h.admin("GET", `/audit?integration_id=${id}`)).json as {
      entries: { type: string; to?: unknown }[];
    };
    const types = audit.entries.map((e) => e.type);
    expect(types.filter((t) => t === "integration_cloud_auth_changed")).toHaveLength(3);
    expect(audit.entries.find((e) => e.type === "integration_cloud_auth_changed")?.to).toBe(
      JSON.stringify({ provider: "aws", region: "eu-west-1" }),
    );
    await h.admin("DELETE", `/integrations/${id}`);
  });
});
