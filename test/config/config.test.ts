/**
 * One configuration from flags, OCI_CRED_AGENT_* and a YAML/JSON file, in that order; invalid
 * settings are all reported at once, naming the field, the bad value (never a secret), what
 * was expected and where to fix it. Pure schema tests plus the real CLI.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RUN_FIELDS, resolveConfig } from "../../src/config/schema.js";
import { AGENT_BIN } from "../support/agent-process.js";

const execFileAsync = promisify(execFile);
let dir: string;

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OCI_CRED_AGENT_")));
  try {
    const { stdout, stderr } = await execFileAsync(AGENT_BIN, args, { env: { ...clean, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("the configuration schema", () => {
  it("takes flags over environment over file over defaults, and says where each value came from", () => {
    const { config, problems } = resolveConfig(RUN_FIELDS, {
      flags: { concurrency: "8" },
      env: { OCI_CRED_AGENT_CONCURRENCY: "4", OCI_CRED_AGENT_DRAIN_TIMEOUT: "90s" },
      file: { path: "agent.yaml", data: { concurrency: 2, drain_timeout: "1m", work_dir: "/var/lib/a", control_plane_url: "https://cp.example.com" } },
    });
    expect(problems).toEqual([]);
    expect(config.values.get("concurrency")).toEqual({ value: 8, source: "flag" });
    expect(config.values.get("drain_timeout")).toEqual({ value: 90_000, source: "env" });
    expect(config.values.get("work_dir")).toEqual({ value: "/var/lib/a", source: "file" });
    expect(config.values.get("cancel_grace")).toEqual({ value: 10_000, source: "default" });
  });

  it("reports every bad field at once, never showing a secret value", () => {
    const { problems } = resolveConfig(RUN_FIELDS, {
      flags: { concurrency: "many" },
      env: { OCI_CRED_AGENT_DRAIN_TIMEOUT: "soon", OCI_CRED_AGENT_TOKEN: "" },
      file: { path: "agent.yaml", data: { listen: "everywhere", colour: "blue", log_level: "loud" } },
    });
    const text = problems.map((p) => p.message).join("\n");
    expect(problems.map((p) => p.key).sort()).toEqual(["colour", "concurrency", "control_plane_url", "drain_timeout", "listen", "log_level", "work_dir"]);
    expect(text).toContain('concurrency: "many" from --concurrency is not a whole number from 1 to 1024');
    expect(text).toContain("OCI_CRED_AGENT_DRAIN_TIMEOUT");
    expect(text).toContain('unknown setting "colour"');
    expect(text).toMatch(/log_level: "loud" from log_level in agent\.yaml is not one of fatal, error/);
  });

  it("hides a secret's value in errors and warns when the token comes from the environment", () => {
    const { config } = resolveConfig(RUN_FIELDS, { flags: {}, env: { OCI_CRED_AGENT_TOKEN: "tok-SECRET-value" } });
    expect(config.warnings.join(" ")).toContain("leak into child processes");
  });
});

describe("the CLI", () => {
  it("refuses invalid configuration with one CONFIG_INVALID message naming every bad field", async () => {
    const file = join(dir, "agent.yaml");
    await writeFile(file, "listen: everywhere\nretry_max: -3\nunknown_thing: 1\n");
    const r = await cli(["run", "--config", file, "--concurrency", "0", "--control-plane-url", "http://cp.example.com"], { OCI_CRED_AGENT_CANCEL_GRACE: "later" });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error CONFIG_INVALID");
    for (const needle of ["listen", "retry_max", "unknown_thing", "concurrency", "cancel_grace", "OCI_CRED_AGENT_CANCEL_GRACE", "work_dir is required", "private key is missing", "token is missing", "plain http"]) {
      expect(r.stderr).toContain(needle);
    }
  });

  it("config print shows the effective configuration and each source, secrets redacted", async () => {
    const file = join(dir, "print.json");
    await writeFile(file, JSON.stringify({ work_dir: "/srv/agent", concurrency: 3 }));
    const r = await cli(["config", "print", "--format", "json", "--config", file, "--control-plane-url", "https://cp.example.com", "--key-file", "/k"], {
      OCI_CRED_AGENT_TOKEN: "tok-SECRET-print",
      OCI_CRED_AGENT_LOG_LEVEL: "debug",
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain("tok-SECRET-print");
    const out = JSON.parse(r.stdout) as { settings: { key: string; value: unknown; source: string }[]; warnings: string[] };
    const by = Object.fromEntries(out.settings.map((s) => [s.key, s]));
    expect(by["work_dir"]).toEqual({ key: "work_dir", value: "/srv/agent", source: "file" });
    expect(by["concurrency"]).toEqual({ key: "concurrency", value: 3, source: "file" });
    expect(by["control_plane_url"]?.source).toBe("flag");
    expect(by["log_level"]).toEqual({ key: "log_level", value: "debug", source: "env" });
    expect(by["token"]).toEqual({ key: "token", value: "[REDACTED]", source: "env" });
    expect(by["drain_timeout"]?.source).toBe("default");
    expect(out.warnings.join(" ")).toContain("OCI_CRED_AGENT_TOKEN");
  });

  it("config print's text shows durations and sizes as people write them, and masks user information in a URL", async () => {
    const r = await cli(["config", "print", "--control-plane-url", "https://robot:pw-SECRET-url@cp.example.com", "--key-file", "/k", "--work-dir", "/w", "--token-file", "/t", "--drain-timeout", "90s"]);
    expect(r.stdout).toMatch(/^drain_timeout +90s +\(flag\)$/m);
    expect(r.stdout).toMatch(/^run_timeout +2h +\(default\)$/m);
    expect(r.stdout).toMatch(/^max_config_bytes +256MiB +\(default\)$/m);
    expect(r.stdout + r.stderr).not.toContain("pw-SECRET-url");
    expect(r.stdout).toContain("https://[REDACTED]@cp.example.com");
    expect(r.stdout).toContain("carries user information");
    expect(r.code).toBe(1);
  });

  it("--token is not a flag: a command line is visible to every user", async () => {
    const r = await cli(["config", "print", "--token", "tok-SECRET-argv"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--token'");
  });
});
