/**
 * An agent composed in this test process, through the same pipeline as `run`: settings from
 * flags (keyed as in the config file), the preparation at start, the composition root. For tests
 * that look inside the running agent (its redactor, its daemon's signals).
 */
import { composeAgent, type ComposedAgent } from "../../src/app/compose-agent.js";
import { prepareAgent } from "../../src/app/prepare-agent.js";
import { loadSettings, requireSettings } from "../../src/config/load-run-config.js";
import { realFs } from "../../src/fs/secure-fs.js";

export async function composeInProcess(
  flags: Record<string, string | boolean>,
  env: NodeJS.ProcessEnv,
  sink: { write(text: string): void },
): Promise<ComposedAgent> {
  // The sandbox shows the checkout (the tests' node stand-in tofu) unless the test says otherwise.
  const withSandboxBind: NodeJS.ProcessEnv = {
    OCI_CRED_AGENT_SANDBOX_RO_BIND: process.env["OCI_CRED_AGENT_SANDBOX_RO_BIND"],
    ...env,
  };
  const loaded = await loadSettings({ log_format: "json", listen: "off", ...flags }, withSandboxBind);
  return composeAgent(await prepareAgent(requireSettings(loaded), realFs, withSandboxBind), {
    version: "test",
    sink,
    env: withSandboxBind,
  });
}
