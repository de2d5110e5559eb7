import { describe, expect, it } from "vitest";
import { runBaseEnv } from "../../src/app/compose-agent.js";

describe("the environment a run's tofu starts from", () => {
  it("drops what belongs to the agent: its settings, its systemd credentials directory (token, key), registry file variables", () => {
    const env = runBaseEnv(
      {
        PATH: "/usr/bin",
        HOME: "/var/lib/oci-cred-agent",
        OCI_CRED_AGENT_TOKEN: "t",
        CREDENTIALS_DIRECTORY: "/run/credentials/oci-cred-agent.service",
        DOCKER_CONFIG: "/x",
        REGISTRY_AUTH_FILE: "/y",
        TF_CLI_CONFIG_FILE: "/z",
        AGENT_KEY_PEM: "k",
      },
      { alsoRemove: "AGENT_KEY_PEM" },
    );
    expect(env).toEqual({ PATH: "/usr/bin", HOME: "/var/lib/oci-cred-agent" });
  });

  it("drops MALLOC_ARENA_MAX only when the launcher set it for the agent, not when the operator did", () => {
    expect(runBaseEnv({ MALLOC_ARENA_MAX: "1", OCI_CRED_AGENT_LAUNCHER_SET_MALLOC_ARENA_MAX: "1" })).toEqual({});
    expect(runBaseEnv({ MALLOC_ARENA_MAX: "4" })).toEqual({ MALLOC_ARENA_MAX: "4" });
  });

  const pool = {
    AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/pool",
    AWS_WEB_IDENTITY_TOKEN_FILE: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
    AWS_CONTAINER_CREDENTIALS_FULL_URI: "http://169.254.170.23/v1/credentials",
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE:
      "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
    AWS_SECRET_ACCESS_KEY: "s",
    AZURE_CLIENT_ID: "c",
    AZURE_TENANT_ID: "t",
    AZURE_FEDERATED_TOKEN_FILE: "/var/run/secrets/azure/tokens/azure-identity-token",
    IDENTITY_ENDPOINT: "http://localhost:40342/metadata/identity/oauth2/token",
    IDENTITY_HEADER: "h",
    GOOGLE_APPLICATION_CREDENTIALS: "/etc/gcp/pool.json",
    CLOUDSDK_CONFIG: "/etc/gcloud",
  };
  const kept = {
    PATH: "/usr/bin",
    AWS_REGION: "eu-west-1",
    AZURE_AUTHORITY_HOST: "https://login.microsoftonline.com/",
  };

  it("drops the pool's cloud identity by default (run_cloud_env drop)", () => {
    expect(runBaseEnv({ ...kept, ...pool })).toEqual(kept);
    expect(runBaseEnv({ ...kept, ...pool }, { cloudEnv: "drop" })).toEqual(kept);
  });

  it("passes it with run_cloud_env pass, still without the agent's own variables", () => {
    expect(runBaseEnv({ ...kept, ...pool, OCI_CRED_AGENT_TOKEN: "t" }, { cloudEnv: "pass" })).toEqual({
      ...kept,
      ...pool,
    });
  });
});
