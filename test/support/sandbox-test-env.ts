/**
 * Every agent a test starts runs its phases in the sandbox, as in production. The tests' tofu
 * stand-ins are this checkout's node scripts (test/fixtures/fake-tofu.mjs, run by the pinned node
 * in node_modules, reading dist/), so the sandbox shows the checkout read-only, as an operator
 * shows a tool directory (--sandbox-ro-bind; agents inherit this environment). A test that
 * sets its own value replaces this one.
 */
import { realpathSync } from "node:fs";
import { dirname } from "node:path";

const checkout = realpathSync(new URL("../../", import.meta.url));
process.env["OCI_CRED_AGENT_SANDBOX_RO_BIND"] ??= checkout;

/**
 * The environment that makes the fake tofu record each phase in `file`, outside the run's
 * workspace: the sandbox shows that file's directory read-write (--sandbox-bind).
 */
export function fakeTofuRecord(file: string): Record<string, string> {
  return { FAKE_TOFU_RECORD: file, OCI_CRED_AGENT_SANDBOX_BIND: dirname(file) };
}
