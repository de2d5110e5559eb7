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
      "AGENT_KEY_PEM",
    );
    expect(env).toEqual({ PATH: "/usr/bin", HOME: "/var/lib/oci-cred-agent" });
  });

  it("drops MALLOC_ARENA_MAX only when the launcher set it for the agent, not when the operator did", () => {
    expect(runBaseEnv({ MALLOC_ARENA_MAX: "1", OCI_CRED_AGENT_LAUNCHER_SET_MALLOC_ARENA_MAX: "1" })).toEqual({});
    expect(runBaseEnv({ MALLOC_ARENA_MAX: "4" })).toEqual({ MALLOC_ARENA_MAX: "4" });
  });
});
