/**
 * Which environment variables carry a cloud identity (the pool's, when the agent holds one), and
 * which paths they name: what runs do not inherit and what the sandbox masks by default.
 */
import { describe, expect, it } from "vitest";
import {
  CLOUD_IDENTITY_PATH_VARIABLES,
  cloudIdentityPaths,
  isCloudIdentityVariable,
} from "../../src/core/cloud-identity-env.js";

describe("isCloudIdentityVariable", () => {
  it.each([
    // AWS: static keys, profiles, web identity (IRSA), ECS and EKS Pod Identity, bearer tokens, IMDS override
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    // Azure: secret, certificate, user, workload identity, managed identity endpoints, az's token cache
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CONFIG_DIR",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    // Google Cloud: the credential file, the metadata server's address, gcloud's properties
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_API_CERTIFICATE_CONFIG",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "CLOUDSDK_CONFIG",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT",
    "CLOUDSDK_CORE_ACCOUNT",
    "CLOUDSDK_ACTIVE_CONFIG_NAME",
  ])("%s is an identity variable", (name) => {
    expect(isCloudIdentityVariable(name)).toBe(true);
  });

  it.each([
    // Settings that grant nothing (region, endpoint, project, trust), and a provider's own variables (not the pool's identity)
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_EC2_METADATA_DISABLED",
    "AZURE_AUTHORITY_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "AWS_CA_BUNDLE",
    "ARM_CLIENT_SECRET",
    "GOOGLE_CREDENTIALS",
    "PATH",
    "HOME",
    "HTTPS_PROXY",
    // Not a prefix match by accident
    "MY_AWS_ACCESS_KEY_ID",
    "aws_access_key_id",
  ])("%s is not", (name) => {
    expect(isCloudIdentityVariable(name)).toBe(false);
  });

  it("every variable that names an identity path is itself an identity variable", () => {
    for (const name of CLOUD_IDENTITY_PATH_VARIABLES) expect(isCloudIdentityVariable(name), name).toBe(true);
  });
});

describe("cloudIdentityPaths", () => {
  it("gives the absolute paths the variables name and the tools' defaults under HOME, once each", () => {
    expect(
      cloudIdentityPaths({
        HOME: "/var/lib/oci-cred-agent/",
        GOOGLE_APPLICATION_CREDENTIALS: "/etc/gcp/pool.json",
        AWS_WEB_IDENTITY_TOKEN_FILE: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        AZURE_FEDERATED_TOKEN_FILE: "/var/run/secrets/azure/tokens/azure-identity-token",
        AWS_CONFIG_FILE: "/etc/gcp/pool.json",
        CLOUDSDK_CONFIG: "/etc/gcloud",
        AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/pool",
      }).sort(),
    ).toEqual(
      [
        "/etc/gcp/pool.json",
        "/etc/gcloud",
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "/var/run/secrets/azure/tokens/azure-identity-token",
        "/var/lib/oci-cred-agent/.aws",
        "/var/lib/oci-cred-agent/.azure",
        "/var/lib/oci-cred-agent/.config/gcloud",
      ].sort(),
    );
  });

  it("ignores relative paths, empty values and a missing HOME (nothing to mask where the sandbox shows nothing)", () => {
    expect(cloudIdentityPaths({ GOOGLE_APPLICATION_CREDENTIALS: "key.json", AWS_CONFIG_FILE: "" })).toEqual([]);
    expect(cloudIdentityPaths({ HOME: "relative" })).toEqual([]);
  });
});
