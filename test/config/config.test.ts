/**
 * One configuration from flags, OCI_CRED_AGENT_* and a YAML/JSON file, in that order; invalid
 * settings are all reported at once, naming the field, the bad value (never a secret), what
 * was expected and where to fix it. Pure schema tests plus the real CLI.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSettings } from "../../src/config/load-run-config.js";
import { describeConfig, RUN_FIELDS, resolveConfig, type FieldSpec } from "../../src/config/schema.js";
import { AGENT_BIN, startAgent } from "../support/agent-process.js";
import { leakForms } from "../support/leak-forms.js";

const execFileAsync = promisify(execFile);
let dir: string;

async function cli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
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
      file: {
        path: "agent.yaml",
        data: {
          concurrency: 2,
          drain_timeout: "1m",
          work_dir: "/var/lib/a",
          control_plane_url: "https://cp.example.com",
        },
      },
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
    expect(problems.map((p) => p.key).sort()).toEqual([
      "colour",
      "concurrency",
      "control_plane_url",
      "drain_timeout",
      "listen",
      "log_level",
      "work_dir",
    ]);
    expect(text).toContain('concurrency: "many" from --concurrency is not a whole number from 1 to 1024');
    expect(text).toContain("OCI_CRED_AGENT_DRAIN_TIMEOUT");
    expect(text).toContain('unknown setting "colour"');
    expect(text).toMatch(/log_level: "loud" from log_level in agent\.yaml is not one of fatal, error/);
    // A secret's bad value is reported by its name and source, never shown: the token made only
    // of blanks is refused as "(value hidden)", not quoted.
    const secret = resolveConfig(RUN_FIELDS, { flags: {}, env: { OCI_CRED_AGENT_TOKEN: " \t " } }).problems.find(
      (p) => p.key === "token",
    );
    expect(secret?.message).toBe(
      "token: (value hidden) from OCI_CRED_AGENT_TOKEN is not a non-empty value; set OCI_CRED_AGENT_TOKEN",
    );
  });

  it("hides a secret's value in errors and warns when the token comes from the environment", () => {
    const { config } = resolveConfig(RUN_FIELDS, { flags: {}, env: { OCI_CRED_AGENT_TOKEN: "tok-SECRET-value" } });
    expect(config.warnings.join(" ")).toContain("leak into child processes");
    expect(config.warnings.join(" ")).not.toContain("tok-SECRET-value");
    expect(describeConfig(RUN_FIELDS, config).find((r) => r.key === "token")).toEqual({
      key: "token",
      value: "[REDACTED]",
      source: "env",
    });
    // The schema hides any secret field's invalid value, whatever its kind and source: a secret
    // setting that must be a number, given a real-looking secret by mistake, from each source.
    const pin: FieldSpec = {
      key: "unlock_pin",
      flag: "--unlock-pin",
      env: "OCI_CRED_AGENT_UNLOCK_PIN",
      kind: "int",
      description: "a secret number",
      secret: true,
    };
    for (const inputs of [
      { flags: { unlock_pin: "pin-SECRET-flag" }, env: {} },
      { flags: {}, env: { OCI_CRED_AGENT_UNLOCK_PIN: "pin-SECRET-env" } },
      { flags: {}, env: {}, file: { path: "agent.yaml", data: { unlock_pin: "pin-SECRET-file" } } },
    ]) {
      const { problems } = resolveConfig([pin], inputs);
      expect(problems).toHaveLength(1);
      expect(problems[0]?.message).toMatch(
        /^unlock_pin: \(value hidden\) from (--unlock-pin|OCI_CRED_AGENT_UNLOCK_PIN|unlock_pin in agent\.yaml) is not a whole number/,
      );
      expect(JSON.stringify(problems)).not.toContain("SECRET");
    }
  });
});

describe("the CLI", () => {
  it("refuses invalid configuration with one CONFIG_INVALID message naming every bad field", async () => {
    const file = join(dir, "agent.yaml");
    await writeFile(file, "listen: everywhere\nretry_max: -3\nunknown_thing: 1\n");
    const r = await cli(
      ["run", "--config", file, "--concurrency", "0", "--control-plane-url", "http://cp.example.com"],
      { OCI_CRED_AGENT_CANCEL_GRACE: "later" },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error CONFIG_INVALID");
    for (const needle of [
      "listen",
      "retry_max",
      "unknown_thing",
      "concurrency",
      "cancel_grace",
      "OCI_CRED_AGENT_CANCEL_GRACE",
      "work_dir is required",
      "private key is missing",
      "token is missing",
      "plain http",
    ]) {
      expect(r.stderr).toContain(needle);
    }
  });

  it("config print shows the effective configuration and each source, secrets redacted", async () => {
    const file = join(dir, "print.json");
    await writeFile(file, JSON.stringify({ work_dir: "/srv/agent", concurrency: 3 }));
    const r = await cli(
      [
        "config",
        "print",
        "--format",
        "json",
        "--config",
        file,
        "--control-plane-url",
        "https://cp.example.com",
        "--key-file",
        "/k",
      ],
      {
        OCI_CRED_AGENT_TOKEN: "tok-SECRET-print",
        OCI_CRED_AGENT_LOG_LEVEL: "debug",
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain("tok-SECRET-print");
    const out = JSON.parse(r.stdout) as {
      settings: { key: string; value: unknown; source: string }[];
      warnings: string[];
    };
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
    const r = await cli([
      "config",
      "print",
      "--control-plane-url",
      "https://robot:pw-SECRET-url@cp.example.com",
      "--key-file",
      "/k",
      "--work-dir",
      "/w",
      "--token-file",
      "/t",
      "--drain-timeout",
      "90s",
    ]);
    expect(r.stdout).toMatch(/^drain_timeout +90s +\(flag\)$/m);
    expect(r.stdout).toMatch(/^run_timeout +2h +\(default\)$/m);
    expect(r.stdout).toMatch(/^max_config_bytes +256MiB +\(default\)$/m);
    expect(r.stdout + r.stderr).not.toContain("pw-SECRET-url");
    expect(r.stdout).toContain("https://[REDACTED]@cp.example.com");
    expect(r.stdout).toContain("carries user information");
    expect(r.code).toBe(1);
  });

  it("never shows a control_plane_url's user:password@, neither in run's CONFIG_INVALID nor in config print (text or JSON)", async () => {
    const password = `pw-SECRET-${randomBytes(6).toString("hex")}`;
    const url = `https://robot:${password}@cp.example.com`;
    const file = join(dir, "userinfo.yaml");
    await writeFile(file, `control_plane_url: ${url}\nwork_dir: /w\nkey_file: /k\ntoken_file: /t\n`);
    const runs = [
      await cli(["run", "--work-dir", "/w", "--key-file", "/k", "--token-file", "/t"], {
        OCI_CRED_AGENT_CONTROL_PLANE_URL: url,
      }),
      await cli(["run", "--config", file]),
      await cli(["run", "--control-plane-url", url, "--work-dir", "/w", "--key-file", "/k", "--token-file", "/t"]),
    ];
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("error CONFIG_INVALID");
      expect(r.stderr).toContain("control_plane_url carries user information (user:password@)");
    }
    const printed = [
      await cli(["config", "print", "--format", "json", "--config", file]),
      await cli(["config", "print", "--config", file]),
    ];
    const json = JSON.parse(printed[0]?.stdout ?? "") as {
      settings: { key: string; value: unknown }[];
      problems: string[];
    };
    expect(json.settings.find((x) => x.key === "control_plane_url")?.value).toBe("https://[REDACTED]@cp.example.com");
    expect(json.problems.join(" ")).toContain("carries user information");
    expect(printed[1]?.stdout).toMatch(/^control_plane_url +https:\/\/\[REDACTED\]@cp\.example\.com +\(file\)$/m);
    for (const r of [...runs, ...printed]) {
      for (const form of leakForms(password, "robot")) expect(r.stdout + r.stderr).not.toContain(form);
      expect(r.stdout + r.stderr).not.toContain("robot:");
    }
  });

  it.each([
    ["a scheme that is not http(s)", (pw: string) => `ftp://robot:${pw}@cp.example.com`],
    ["a host that is not a host", (pw: string) => `https://robot:${pw}@cp example.com`],
    ["no scheme at all", (pw: string) => `robot:${pw}@cp.example.com`],
  ])(
    "never shows the user information of an invalid control_plane_url (%s) in CONFIG_INVALID or config print",
    async (_what, make) => {
      const password = `pw-SECRET-${randomBytes(6).toString("hex")}`;
      const url = make(password);
      const results = [
        await cli(["run", "--work-dir", "/w", "--key-file", "/k", "--token-file", "/t"], {
          OCI_CRED_AGENT_CONTROL_PLANE_URL: url,
        }),
        await cli(["config", "print"], { OCI_CRED_AGENT_CONTROL_PLANE_URL: url }),
        await cli(["config", "print", "--format", "json", "--control-plane-url", url]),
      ];
      expect(results[0]?.stderr).toContain("error CONFIG_INVALID");
      expect(results[0]?.stderr).toContain("control_plane_url:");
      for (const r of results) {
        for (const form of leakForms(password, "robot")) expect(r.stdout + r.stderr).not.toContain(form);
      }
    },
  );

  it("refuses token: in the config file with CONFIG_INVALID naming the key (the token is env-only), never quoting its value", async () => {
    const token = `tok-SECRET-${randomBytes(6).toString("hex")}`;
    const file = join(dir, "token.yaml");
    // Everything else is valid: if token: were ignored, run would go on to read the key file.
    await writeFile(
      file,
      `control_plane_url: https://cp.example.com\nwork_dir: ${join(dir, "w")}\nkey_file: ${join(dir, "absent.key")}\ntoken_file: ${join(dir, "t")}\ntoken: ${token}\n`,
    );
    const r = await cli(["run", "--config", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error CONFIG_INVALID: the configuration has 1 problem:");
    expect(r.stderr).toContain(
      `token in ${file} is not read from a config file (its value is not shown): remove it there and set OCI_CRED_AGENT_TOKEN`,
    );
    const printed = await cli(["config", "print", "--format", "json", "--config", file]);
    expect(printed.code).toBe(1);
    const json = JSON.parse(printed.stdout) as {
      settings: { key: string; value: unknown; source: string }[];
      problems: string[];
    };
    expect(json.problems).toEqual([
      `token in ${file} is not read from a config file (its value is not shown): remove it there and set OCI_CRED_AGENT_TOKEN`,
    ]);
    expect(json.settings.find((x) => x.key === "token")).toEqual({ key: "token", value: null, source: "unset" });
    for (const out of [r, printed])
      for (const form of leakForms(token, "")) expect(out.stdout + out.stderr).not.toContain(form);
  });

  it("--token is not a flag: a command line is visible to every user", async () => {
    const r = await cli(["config", "print", "--token", "tok-SECRET-argv"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--token'");
  });
});

describe("preparation at start", () => {
  it("a --base-docker-config that does not exist is INPUT_UNREADABLE naming the flag, not INTERNAL, before anything connects", async () => {
    const keyFile = join(dir, "prep.key");
    const tokenFile = join(dir, "prep.token");
    await cli(["keygen", "--key-file", keyFile]);
    await writeFile(tokenFile, "prep-token-value", { mode: 0o600 });
    const missing = join(dir, "no-such-base.json");
    // Nothing listens on the control plane URL: the refusal must come first.
    const r = await cli([
      "run",
      "--control-plane-url",
      "http://127.0.0.1:9",
      "--token-file",
      tokenFile,
      "--key-file",
      keyFile,
      "--work-dir",
      join(dir, "prep-work"),
      "--base-docker-config",
      missing,
      "--listen",
      "off",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error INPUT_UNREADABLE: cannot read the base Docker config ${missing} (ENOENT)`);
    expect(r.stderr).toContain("--base-docker-config");
    expect(r.stderr).not.toContain("INTERNAL");
  });

  it("the operator CLI configuration comes from --tofu-cli-config / OCI_CRED_AGENT_TOFU_CLI_CONFIG only: with oci_default_credentials it is refused at start (TOFU_CLI_CONFIG_CONFLICT); planted in HOME, XDG_CONFIG_HOME or TF_CLI_CONFIG_FILE it is not read", async () => {
    const keyFile = join(dir, "prep2.key");
    const tokenFile = join(dir, "prep2.token");
    await cli(["keygen", "--key-file", keyFile]);
    await writeFile(tokenFile, "prep-token-value", { mode: 0o600 });
    const conflicting = 'oci_default_credentials {\n  docker_style_config_files = ["/x"]\n}\n';
    const tofurc = join(dir, "operator.tfrc");
    await writeFile(tofurc, conflicting);
    const args = [
      "--control-plane-url",
      "http://127.0.0.1:9",
      "--token-file",
      tokenFile,
      "--key-file",
      keyFile,
      "--work-dir",
      join(dir, "prep2-work"),
      "--listen",
      "off",
    ];
    const refusal = `error TOFU_CLI_CONFIG_CONFLICT: the OpenTofu CLI configuration ${tofurc}:1 has an oci_default_credentials block`;
    const byFlag = await cli(["run", ...args, "--tofu-cli-config", tofurc]);
    expect(byFlag.code).toBe(1);
    expect(byFlag.stderr).toContain(refusal);
    const byEnv = await cli(["run", ...args], { OCI_CRED_AGENT_TOFU_CLI_CONFIG: tofurc });
    expect(byEnv.code).toBe(1);
    expect(byEnv.stderr).toContain(refusal);

    // Everywhere OpenTofu itself would look: the agent does not, so it starts and goes on to register.
    const home = join(dir, "prep2-home");
    for (const f of [".tofurc", ".terraformrc", ".terraform.d/planted.tfrc", "xdg/opentofu/tofurc"]) {
      await mkdir(join(home, f, ".."), { recursive: true });
      await writeFile(join(home, f), conflicting);
    }
    const agent = startAgent(args, {
      HOME: home,
      XDG_CONFIG_HOME: join(home, "xdg"),
      TF_CLI_CONFIG_FILE: tofurc,
      OCI_CRED_AGENT_TOFU_CLI_CONFIG: undefined,
    });
    try {
      await agent.waitForLog((l) => l["event"] === "control_plane_error");
    } finally {
      agent.kill("SIGKILL");
      await agent.exited;
    }
    expect(agent.output()).not.toContain("TOFU_CLI_CONFIG");
  });

  it("doctor checks the same operator CLI configuration as run: the --tofu-cli-config file, never one planted in HOME", async () => {
    const conflicting = join(dir, "doctor-operator.tfrc");
    await writeFile(conflicting, 'oci_default_credentials {\n  docker_style_config_files = ["/x"]\n}\n');
    const home = join(dir, "doctor-home");
    await mkdir(home);
    await writeFile(join(home, ".tofurc"), 'oci_default_credentials {\n  docker_style_config_files = ["/x"]\n}\n');
    const cliCheck = async (extra: string[]): Promise<{ status: string; detail: string; code?: string }> => {
      const r = await cli(["doctor", "--format", "json", ...extra], { HOME: home, TF_CLI_CONFIG_FILE: conflicting });
      const checks = (JSON.parse(r.stdout) as { checks: { check: string; status: string; detail: string }[] }).checks;
      const found = checks.find((c) => c.check === "tofu CLI config");
      expect(found, r.stdout).toBeDefined();
      return found as { status: string; detail: string; code?: string };
    };
    expect(await cliCheck([])).toMatchObject({ status: "ok", detail: "none (OpenTofu's defaults)" });
    expect(await cliCheck(["--tofu-cli-config", conflicting])).toMatchObject({
      status: "fail",
      code: "TOFU_CLI_CONFIG_CONFLICT",
    });
  });
});

describe("executor and isolation settings", () => {
  const base = { control_plane_url: "https://cp.example.com", token_file: "/t", key_file: "/k", work_dir: "/w" };
  const load = async (flags: Record<string, string>) => loadSettings({ ...base, ...flags }, {});

  it("local by default; runner:PATH with an absolute socket; paths of the sandbox from a repeated flag", async () => {
    expect((await load({})).settings?.executor).toEqual({ kind: "local" });
    expect((await load({})).settings?.isolation).toBe("sandbox");
    const runner = await load({ executor: "runner:/run/r/runner.sock" });
    expect(runner.settings?.executor).toEqual({ kind: "runner", socket: "/run/r/runner.sock" });
    const binds = await load({ sandbox_ro_bind: "/opt/a\n/opt/b" });
    expect(binds.settings?.sandboxReadOnly).toEqual(["/opt/a", "/opt/b"]);
  });

  it("cloud_auth_host: none by default; hosts from a repeated flag, a comma-separated variable or a YAML list, :443 dropped; a URL or a path is refused naming the setting", async () => {
    expect((await load({})).settings?.cloudAuthHosts).toEqual([]);
    expect((await load({ cloud_auth_host: "127.0.0.1:5000\n*.Corp.Example" })).settings?.cloudAuthHosts).toEqual([
      "127.0.0.1:5000",
      "*.corp.example",
    ]);
    const fromEnv = await loadSettings(base, {
      OCI_CRED_AGENT_CLOUD_AUTH_HOST: "acr.corp.example:443,gar.corp.example:8443",
    });
    expect(fromEnv.settings?.cloudAuthHosts).toEqual(["acr.corp.example", "gar.corp.example:8443"]);
    const file = join(dir, "cloud-hosts.yaml");
    await writeFile(file, "cloud_auth_host:\n  - proxy.corp.example\n  - '*.internal.example'\n");
    const fromFile = await loadSettings({ ...base, config: file }, {});
    expect(fromFile.settings?.cloudAuthHosts).toEqual(["proxy.corp.example", "*.internal.example"]);
    for (const bad of ["https://r.example", "r.example/v2", "*"]) {
      const loaded = await load({ cloud_auth_host: bad });
      expect(loaded.settings, bad).toBeUndefined();
      expect(loaded.problems.find((p) => p.key === "cloud_auth_host")?.message, bad).toContain("--cloud-auth-host");
    }
  });

  it("refuses an executor that is neither local nor runner:/absolute, and runner with isolation none or concurrency above 1, naming the field and the fix", async () => {
    for (const [flags, key, fix] of [
      [{ executor: "runner:relative.sock" }, "executor", "--executor runner:/"],
      [{ executor: "docker" }, "executor", "--executor local"],
      [{ executor: "runner:/r.sock", isolation: "none" }, "isolation", "remove --isolation none"],
      [{ executor: "runner:/r.sock", concurrency: "2" }, "concurrency", "--concurrency 1"],
    ] as const) {
      const loaded = await load(flags);
      expect(loaded.settings, JSON.stringify(flags)).toBeUndefined();
      const problem = loaded.problems.find((p) => p.key === key);
      expect(problem?.message, JSON.stringify(flags)).toContain(fix);
    }
  });
});
