/**
 * The operator's OpenTofu CLI configuration, which every run's generated one reproduces, is read
 * from an explicit path only (readOperatorTofuCliConfig): --tofu-cli-config, else the default
 * file when it exists. Real files in a temp dir; the default path is passed in so that the test
 * does not touch /etc. What an unprivileged agent can reach is checked as uid 10001 (setpriv,
 * through the built dist/), since root reads everything. (Files planted where OpenTofu itself looks, HOME and the rest, are
 * covered through the real CLI: test/cli/one-shot.test.ts and test/config/config.test.ts.)
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isAgentError } from "../../src/core/errors.js";
import { realFs } from "../../src/fs/secure-fs.js";
import { DEFAULT_TOFU_CLI_CONFIG, readOperatorTofuCliConfig } from "../../src/fs/tofu-cli-config-sources.js";

let base: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "tofu-cli-sources-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

async function refusal(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isAgentError(error, "TOFU_CLI_CONFIG_INVALID")).toBe(true);
  return error as Error;
}

describe("the operator's CLI configuration", () => {
  it("defaults to /etc/oci-cred-agent/tofu.tfrc", () => {
    expect(DEFAULT_TOFU_CLI_CONFIG).toBe("/etc/oci-cred-agent/tofu.tfrc");
  });

  it("is the file --tofu-cli-config names, not the default", async () => {
    const explicit = join(base, "operator.tfrc");
    const dflt = join(base, "default.tfrc");
    writeFileSync(explicit, 'plugin_cache_dir = "/explicit"\n');
    writeFileSync(dflt, 'plugin_cache_dir = "/default"\n');
    expect(await readOperatorTofuCliConfig(realFs, explicit, dflt)).toEqual([
      { path: explicit, text: 'plugin_cache_dir = "/explicit"\n' },
    ]);
  });

  it("is the default file when --tofu-cli-config is unset and the file exists, and nothing when it does not", async () => {
    const dflt = join(base, "default.tfrc");
    expect(await readOperatorTofuCliConfig(realFs, undefined, dflt)).toEqual([]);
    writeFileSync(dflt, 'plugin_cache_dir = "/default"\n');
    expect(await readOperatorTofuCliConfig(realFs, undefined, dflt)).toEqual([
      { path: dflt, text: 'plugin_cache_dir = "/default"\n' },
    ]);
  });

  it("refuses a --tofu-cli-config that does not exist, naming the setting", async () => {
    const missing = join(base, "missing.tfrc");
    const error = await refusal(readOperatorTofuCliConfig(realFs, missing, join(base, "default.tfrc")));
    expect(error.message).toContain(`${missing} cannot be read (ENOENT)`);
    expect(error.message).toContain("--tofu-cli-config (OCI_CRED_AGENT_TOFU_CLI_CONFIG, tofu_cli_config)");
  });

  it("refuses a default file that exists but cannot be read, naming it as the default", async () => {
    const dflt = join(base, "default.tfrc");
    mkdirSync(dflt);
    const error = await refusal(readOperatorTofuCliConfig(realFs, undefined, dflt));
    expect(error.message).toContain(`${dflt} (the default of --tofu-cli-config) cannot be read (EISDIR)`);
  });
});

/** readOperatorTofuCliConfig(realFs, undefined, defaultPath) as an unprivileged user: the paths read, or the refusal. */
function readAsAgentUser(defaultPath: string): { ok?: string[]; code?: string; message?: string } {
  const dist = (m: string): string => fileURLToPath(new URL(`../../dist/${m}`, import.meta.url));
  const script = `
    const { readOperatorTofuCliConfig } = await import(${JSON.stringify(dist("fs/tofu-cli-config-sources.js"))});
    const { realFs } = await import(${JSON.stringify(dist("fs/secure-fs.js"))});
    try {
      const sources = await readOperatorTofuCliConfig(realFs, undefined, process.argv[1]);
      console.log(JSON.stringify({ ok: sources.map((s) => s.path) }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }));
    }`;
  const out = execFileSync(
    "setpriv",
    [
      "--reuid=10001",
      "--regid=10001",
      "--clear-groups",
      "--",
      process.execPath,
      "--input-type=module",
      "-e",
      script,
      defaultPath,
    ],
    { encoding: "utf8" },
  );
  return JSON.parse(out) as { ok?: string[]; code?: string; message?: string };
}

describe("the default file, for an agent that does not run as root", () => {
  it("is absent when its directory is closed to the agent (the systemd install's 0700 /etc/oci-cred-agent)", () => {
    chmodSync(base, 0o755);
    const closed = join(base, "closed");
    mkdirSync(closed, { mode: 0o700 });
    writeFileSync(join(closed, "tofu.tfrc"), 'plugin_cache_dir = "/x"\n', { mode: 0o644 });
    expect(readAsAgentUser(join(closed, "tofu.tfrc"))).toEqual({ ok: [] });
  });

  it("is read when the agent can reach and read it (a 0711 directory, a 0644 file)", () => {
    chmodSync(base, 0o755);
    const dir = join(base, "searchable");
    mkdirSync(dir, { mode: 0o711 });
    chmodSync(dir, 0o711);
    writeFileSync(join(dir, "tofu.tfrc"), 'plugin_cache_dir = "/x"\n', { mode: 0o644 });
    expect(readAsAgentUser(join(dir, "tofu.tfrc"))).toEqual({ ok: [join(dir, "tofu.tfrc")] });
  });

  it("is refused when the agent can see it but not read it", () => {
    chmodSync(base, 0o755);
    const dir = join(base, "open");
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, "tofu.tfrc"), 'plugin_cache_dir = "/x"\n', { mode: 0o600 });
    const r = readAsAgentUser(join(dir, "tofu.tfrc"));
    expect(r.code).toBe("TOFU_CLI_CONFIG_INVALID");
    expect(r.message).toContain("(the default of --tofu-cli-config) cannot be read (EACCES)");
  });
});
