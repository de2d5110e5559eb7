/** The pure rules behind PATCH /integrations/{id}: when the password is needed again, and what the audit records. */
import { describe, expect, it } from "vitest";
import { changeFacts, fieldsNeedingPassword } from "../../src/control-plane/integration-audit.js";
import type { Integration } from "../../src/control-plane/store.js";

const withPassword: Integration = {
  id: "int-1",
  name: "ghcr",
  registry_url: "https://ghcr.io",
  username: "alice",
  password: "SECRET-PW",
  credential_helper: null,
  export_credentials: true,
  created_at: "2026-01-01T00:00:00.000Z",
  updated_at: "2026-01-01T00:00:00.000Z",
};
const withHelper: Integration = { ...withPassword, username: "", password: "", credential_helper: "ecr-login" };

describe("fieldsNeedingPassword", () => {
  it("names a changed URL or username of a password integration", () => {
    expect(fieldsNeedingPassword(withPassword, { registry_url: "https://evil.example" })).toEqual(["registry_url"]);
    expect(fieldsNeedingPassword(withPassword, { username: "mallory" })).toEqual(["username"]);
    expect(fieldsNeedingPassword(withPassword, { registry_url: "https://evil.example", username: "m" })).toEqual([
      "registry_url",
      "username",
    ]);
  });

  it("needs nothing when the password comes along, when nothing moves, or for a helper", () => {
    expect(fieldsNeedingPassword(withPassword, { registry_url: "https://evil.example", password: "p" })).toEqual([]);
    expect(fieldsNeedingPassword(withPassword, { registry_url: "https://ghcr.io", username: "alice" })).toEqual([]);
    expect(fieldsNeedingPassword(withPassword, { name: "renamed", export_credentials: false })).toEqual([]);
    expect(fieldsNeedingPassword(withHelper, { registry_url: "https://other.example" })).toEqual([]);
    expect(fieldsNeedingPassword(withPassword, { credential_helper: "gcr" })).toEqual([]);
  });
});

describe("changeFacts", () => {
  it("records each kind of change with old and new values, the password only as a fact", () => {
    const facts = changeFacts(withPassword, {
      registry_url: "https://ghcr.io/org",
      password: "NEW-SECRET",
      export_credentials: false,
      name: "renamed",
    });
    expect(facts).toEqual([
      { type: "integration_url_changed", from: "https://ghcr.io", to: "https://ghcr.io/org" },
      { type: "integration_password_changed" },
      { type: "integration_export_changed", from: true, to: false },
      { type: "integration_renamed", from: "ghcr", to: "renamed" },
    ]);
    expect(JSON.stringify(facts)).not.toMatch(/SECRET/);
  });

  it("records nothing for values that stay the same, and a helper switch both ways", () => {
    expect(changeFacts(withPassword, { name: "ghcr", password: "SECRET-PW", export_credentials: true })).toEqual([]);
    expect(changeFacts(withHelper, { credential_helper: null, username: "bob", password: "x" })).toEqual([
      { type: "integration_username_changed", from: null, to: "bob" },
      { type: "integration_password_changed" },
      { type: "integration_helper_changed", from: "ecr-login", to: null },
    ]);
  });
});
