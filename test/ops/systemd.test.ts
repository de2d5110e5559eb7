/**
 * The systemd unit (systemd/oci-cred-agent.service) checked by systemd's own tools and against
 * the agent's configuration schema:
 *   - `systemd-analyze verify` in a throw-away root (--root) that holds the unit, the host's
 *     system units (for the default dependencies) and, at the paths ExecStart= and ExecReload=
 *     name, the project's launcher and the host's kill: verify checks that those exist and are
 *     executable inside that root. It exits 0 even for unknown keys and bad values (it only
 *     prints them), so "clean" means exit 0 and no output at all;
 *   - `systemd-analyze security --offline=yes --threshold=20`: exit 0 and an exposure of 2.0 or
 *     lower, read from its output;
 *   - the wiring: every ExecStart= flag is a flag of `run`, the resulting configuration is
 *     complete, the stop timeout exceeds drain + cancel grace, the credentials live under
 *     RuntimeDirectory= (tmpfs), the token comes through LoadCredential=.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadSettings, requireSettings, type AgentSettings } from "../../src/config/load-run-config.js";
import { RUN_FIELDS } from "../../src/config/schema.js";
import { AGENT_BIN } from "../support/agent-process.js";
import { runFlags } from "../support/run-flags.js";

const REPO = realpathSync(new URL("../../", import.meta.url));
const UNIT_NAME = "oci-cred-agent.service";
const UNIT_PATH = join(REPO, "systemd", UNIT_NAME);
const UNIT_TEXT = readFileSync(UNIT_PATH, "utf8");
const ENV_EXAMPLE = readFileSync(join(REPO, "systemd/oci-cred-agent.env.example"), "utf8");
const SYSUSERS = readFileSync(join(REPO, "systemd/oci-cred-agent.sysusers.conf"), "utf8");
const INSTALL_DOC = readFileSync(join(REPO, "docs/install-systemd.md"), "utf8");
/** What systemd sets $CREDENTIALS_DIRECTORY (and %d) to for a system service. */
const CREDENTIALS_DIRECTORY = `/run/credentials/${UNIT_NAME}`;

const tempDirs: string[] = [];
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// A small reader for unit files: sections, repeated keys, backslash continuations, comments.

type Unit = Map<string, { key: string; value: string }[]>;

function parseUnit(...texts: string[]): Unit {
  const unit: Unit = new Map();
  for (const text of texts) {
    let section = "";
    let pending = "";
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (pending === "" && (line === "" || line.startsWith("#") || line.startsWith(";"))) continue;
      if (line.endsWith("\\")) {
        pending += `${line.slice(0, -1).trim()} `;
        continue;
      }
      const full = (pending + line).trim();
      pending = "";
      const header = /^\[(.+)\]$/.exec(full);
      if (header?.[1] !== undefined) {
        section = header[1];
        if (!unit.has(section)) unit.set(section, []);
        continue;
      }
      const eq = full.indexOf("=");
      if (eq <= 0) throw new Error(`not a unit file line: ${full}`);
      unit.get(section)?.push({ key: full.slice(0, eq).trim(), value: full.slice(eq + 1).trim() });
    }
  }
  return unit;
}

/** Every value of a list setting, in order; an empty assignment resets the list (as systemd does). */
function all(unit: Unit, section: string, key: string): string[] {
  let out: string[] = [];
  for (const e of unit.get(section) ?? []) {
    if (e.key !== key) continue;
    out = e.value === "" ? [] : [...out, e.value];
  }
  return out;
}

function last(unit: Unit, section: string, key: string): string | undefined {
  return all(unit, section, key).at(-1);
}

/** systemd specifiers used in the unit, for a system service. */
function expandSpecifiers(text: string): string {
  const map: Record<string, string> = {
    d: CREDENTIALS_DIRECTORY,
    t: "/run",
    S: "/var/lib",
    C: "/var/cache",
    L: "/var/log",
    "%": "%",
  };
  return text.replace(/%(.)/g, (whole, c: string) => {
    const v = map[c];
    if (v === undefined) throw new Error(`unexpected specifier ${whole} in the unit`);
    return v;
  });
}

/** A command line of ExecStart=/ExecReload=: the executable (prefixes like - @ + ! removed) and its arguments. */
function commandLine(value: string): { exe: string; args: string[] } {
  const words = value.split(/\s+/).filter((w) => w !== "");
  const exe = (words[0] ?? "").replace(/^[-@+!:]+/, "");
  return { exe, args: words.slice(1) };
}

/** Environment= assignments (one or more per line, no quoting used in our unit). */
function environment(unit: Unit): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of all(unit, "Service", "Environment")) {
    for (const word of line.split(/\s+/)) {
      const eq = word.indexOf("=");
      if (eq > 0) env[word.slice(0, eq)] = word.slice(eq + 1);
    }
  }
  return env;
}

/** The uncommented VAR=value lines of an environment file. */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`not VAR=value: ${line}`);
    env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

function run(cmd: string, args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, {
    encoding: "utf8",
    env: { ...process.env, SYSTEMD_COLORS: "0", SYSTEMD_LOG_COLOR: "0", LANG: "C.UTF-8" },
  });
  if (r.error)
    throw new Error(`${cmd} could not run (${r.error.message}); scripts/ensure-test-deps.sh installs systemd`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Converts a systemd time span with systemd's own parser. */
function timespanMs(text: string): number {
  const r = run("systemd-analyze", ["timespan", text]);
  expect(r.status, `systemd-analyze timespan ${text}: ${r.stderr}`).toBe(0);
  const us = /μs:\s*(\d+)/.exec(r.stdout)?.[1];
  expect(us, r.stdout).toBeDefined();
  return Number(us) / 1000;
}

const HOST_UNIT_DIR = ["/usr/lib/systemd/system", "/lib/systemd/system"].find((d) =>
  existsSync(join(d, "sysinit.target")),
);

/**
 * A root for `systemd-analyze verify --root`: the unit (and drop-ins) under /etc, the host's
 * units under /usr/lib (the default dependencies: sysinit.target, basic.target, ...), and the
 * executables the unit names: the project's launcher for ExecStart=, the host's for the rest.
 */
function verifyRoot(unitText: string, dropIns: Record<string, string> = {}): string {
  const root = mkdtempSync(join(tmpdir(), "oci-cred-agent-unit-"));
  tempDirs.push(root);
  if (HOST_UNIT_DIR === undefined)
    throw new Error("no systemd unit directory on this host; scripts/ensure-test-deps.sh installs systemd");
  cpSync(HOST_UNIT_DIR, join(root, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  for (const dir of ["bin", "sbin", "lib"]) symlinkSync(`usr/${dir}`, join(root, dir));
  const unitDir = join(root, "etc/systemd/system");
  mkdirSync(unitDir, { recursive: true });
  writeFileSync(join(unitDir, UNIT_NAME), unitText);
  if (Object.keys(dropIns).length > 0) {
    mkdirSync(join(unitDir, `${UNIT_NAME}.d`));
    for (const [name, text] of Object.entries(dropIns)) writeFileSync(join(unitDir, `${UNIT_NAME}.d`, name), text);
  }
  const unit = parseUnit(unitText);
  const start = commandLine(last(unit, "Service", "ExecStart") ?? "");
  const others = ["ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost"].flatMap((k) =>
    all(unit, "Service", k).map((v) => commandLine(v).exe),
  );
  for (const exe of [start.exe, ...others]) {
    const source = exe === start.exe ? join(REPO, "bin/oci-cred-agent") : exe;
    if (!existsSync(source)) throw new Error(`${exe} (named by the unit) does not exist on this host`);
    const target = join(root, exe.replace(/^\/(bin|sbin|lib)\//, "/usr/$1/"));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(realpathSync(source), target);
    chmodSync(target, 0o755);
  }
  return root;
}

function verify(root: string): { status: number | null; output: string } {
  const r = run("systemd-analyze", ["verify", `--root=${root}`, "--man=no", "--generators=no", UNIT_NAME]);
  return { status: r.status, output: (r.stdout + r.stderr).trim() };
}

function security(path: string): { status: number | null; exposure: number; output: string } {
  const r = run("systemd-analyze", ["security", "--offline=yes", "--threshold=20", path]);
  const m = new RegExp(`Overall exposure level for ${UNIT_NAME.replace(".", "\\.")}: (\\d+(?:\\.\\d+)?)`).exec(
    r.stdout,
  );
  if (m?.[1] === undefined) throw new Error(`no exposure figure in:\n${r.stdout}\n${r.stderr}`);
  return { status: r.status, exposure: Number(m[1]), output: r.stdout + r.stderr };
}

/** The drop-in docs/install-systemd.md gives for LoadCredentialEncrypted= (a ```ini block naming its path). */
function documentedCredentialDropIn(): { name: string; text: string } {
  const m = /```ini\n# \/etc\/systemd\/system\/oci-cred-agent\.service\.d\/([\w.-]+\.conf)\n([\s\S]*?)```/.exec(
    INSTALL_DOC,
  );
  if (m?.[1] === undefined || m[2] === undefined)
    throw new Error(
      "docs/install-systemd.md has no ```ini block starting with # /etc/systemd/system/oci-cred-agent.service.d/NAME.conf",
    );
  return { name: m[1], text: m[2] };
}

const UNIT = parseUnit(UNIT_TEXT);

describe("systemd unit: systemd's own checks", () => {
  it("systemd-analyze verify accepts the unit without a single warning", () => {
    const r = verify(verifyRoot(UNIT_TEXT));
    expect(r.output).toBe("");
    expect(r.status).toBe(0);
  });

  it("verify's silence means something: a misspelt key and a missing ExecStart= binary are reported", () => {
    const typo = verify(verifyRoot(UNIT_TEXT.replace(/^TimeoutStopSec=/m, "TimeoutStopSecs=")));
    expect(typo.output).toMatch(/Unknown key .*TimeoutStopSecs/);
    const root = verifyRoot(UNIT_TEXT);
    rmSync(join(root, commandLine(last(UNIT, "Service", "ExecStart") ?? "").exe));
    const missing = verify(root);
    expect(missing.status).not.toBe(0);
    expect(missing.output).toMatch(/is not executable/);
  });

  it("systemd-analyze verify accepts the unit with the LoadCredentialEncrypted= drop-in of docs/install-systemd.md", () => {
    const dropIn = documentedCredentialDropIn();
    const r = verify(verifyRoot(UNIT_TEXT, { [dropIn.name]: dropIn.text }));
    expect(r.output).toBe("");
    expect(r.status).toBe(0);
  });

  it("systemd-analyze security --offline=yes --threshold=20 passes with an exposure of 2.0 or lower", () => {
    const r = security(UNIT_PATH);
    console.log(`systemd-analyze security: exposure ${r.exposure} for ${UNIT_NAME}`);
    expect(r.exposure).toBeLessThanOrEqual(2.0);
    expect(r.status).toBe(0);
    // Node's JIT needs writable+executable memory: the check must see it allowed.
    expect(r.output).toMatch(/✗ MemoryDenyWriteExecute=/);
  });

  it("the same check fails the unit without its hardening block (the threshold bites)", () => {
    const start = UNIT_TEXT.indexOf("NoNewPrivileges=");
    const end = UNIT_TEXT.indexOf("[Install]");
    expect(start).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), "oci-cred-agent-unhardened-"));
    tempDirs.push(dir);
    const path = join(dir, UNIT_NAME);
    writeFileSync(path, UNIT_TEXT.slice(0, start) + UNIT_TEXT.slice(end));
    const r = security(path);
    expect(r.exposure).toBeGreaterThan(2.0);
    expect(r.status).not.toBe(0);
  });

  it("systemd-sysusers creates the unit's User= from systemd/oci-cred-agent.sysusers.conf, with the state directory as home", () => {
    const root = mkdtempSync(join(tmpdir(), "oci-cred-agent-sysusers-"));
    tempDirs.push(root);
    mkdirSync(join(root, "etc"));
    mkdirSync(join(root, "usr/lib/sysusers.d"), { recursive: true });
    writeFileSync(join(root, "usr/lib/sysusers.d/oci-cred-agent.conf"), SYSUSERS);
    const r = run("systemd-sysusers", [`--root=${root}`, "--dry-run", "oci-cred-agent.conf"]);
    const user = last(UNIT, "Service", "User");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toContain(`Creating user '${user ?? "?"}'`);
    expect(last(UNIT, "Service", "DynamicUser") ?? "no").toMatch(/^(no|false|0)$/);
    const entry = SYSUSERS.split("\n").find((l) => l.startsWith("u "));
    const home = /\s(\/\S+)\s+\S+\s*$/.exec(entry ?? "")?.[1];
    expect(home).toBe(`/var/lib/${last(UNIT, "Service", "StateDirectory") ?? "?"}`);
  });
});

describe("systemd unit: wiring to the agent's configuration", () => {
  const start = commandLine(expandSpecifiers(last(UNIT, "Service", "ExecStart") ?? ""));
  const unitEnv = environment(UNIT);
  const fileEnv = envFile(ENV_EXAMPLE);

  async function settings(extraEnv: Record<string, string> = {}): Promise<AgentSettings> {
    const loaded = await loadSettings(runFlags(start.args, "ExecStart="), { ...unitEnv, ...fileEnv, ...extraEnv });
    expect(loaded.problems).toEqual([]);
    return requireSettings(loaded);
  }

  it("every ExecStart= flag is a flag of `run` with a valid value, and with the example environment file the configuration is complete", async () => {
    expect(start.exe).toBe("/opt/oci-cred-agent/bin/oci-cred-agent");
    const flags = runFlags(start.args, "ExecStart=");
    expect(Object.keys(flags).length).toBeGreaterThan(3);
    await settings();
  });

  it("the real CLI takes the ExecStart= command line: `config print` with it and the unit's environment reports every flag and no problem", () => {
    const r = spawnSync(AGENT_BIN, ["config", "print", "--format", "json", ...start.args.slice(1)], {
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...unitEnv, ...fileEnv },
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { settings: { key: string; source: string }[]; problems: string[] };
    expect(out.problems).toEqual([]);
    for (const key of Object.keys(runFlags(start.args, "ExecStart=")))
      expect(out.settings.find((x) => x.key === key)?.source, key).toBe("flag");
    expect(out.settings.find((x) => x.key === "control_plane_url")?.source).toBe("env");
  });

  it("TimeoutStopSec= exceeds the drain timeout plus the cancel grace, and stopping sends SIGTERM to the agent only", async () => {
    const s = await settings();
    const stopMs = timespanMs(last(UNIT, "Service", "TimeoutStopSec") ?? "90s");
    expect(stopMs).toBeGreaterThan(s.drainTimeoutMs + s.cancelGraceMs);
    expect(last(UNIT, "Service", "KillSignal") ?? "SIGTERM").toBe("SIGTERM");
    // mixed: the first SIGTERM reaches the agent, not tofu (the agent drains, then stops tofu).
    expect(last(UNIT, "Service", "KillMode")).toBe("mixed");
    expect(last(UNIT, "Service", "Restart")).toBe("on-failure");
  });

  it("the credentials directory is under RuntimeDirectory= (tmpfs /run), private, and the work and key directories under StateDirectory=", async () => {
    const s = await settings();
    const runtime = last(UNIT, "Service", "RuntimeDirectory");
    const state = last(UNIT, "Service", "StateDirectory");
    expect(s.credentialsDir.startsWith(`/run/${runtime ?? "?"}/`)).toBe(true);
    expect(last(UNIT, "Service", "RuntimeDirectoryMode")).toBe("0700");
    expect(s.workDir.startsWith(`/var/lib/${state ?? "?"}/`)).toBe(true);
    expect(last(UNIT, "Service", "StateDirectoryMode")).toBe("0700");
    expect(s.keySource).toEqual({ kind: "file", path: `/var/lib/${state ?? "?"}/keys` });
    expect(last(UNIT, "Service", "ProtectSystem")).toBe("strict");
    expect(last(UNIT, "Service", "UMask")).toBe("0077");
  });

  it("the token comes from LoadCredential= through %d, never from the environment", async () => {
    const s = await settings();
    expect("file" in s.token ? s.token.file : undefined).toMatch(
      new RegExp(`^${CREDENTIALS_DIRECTORY.replace(/\./g, "\\.")}/`),
    );
    const tokenName = "file" in s.token ? s.token.file.slice(CREDENTIALS_DIRECTORY.length + 1) : "";
    const loaded = all(UNIT, "Service", "LoadCredential").map((v) => v.split(":")[0]);
    expect(loaded).toContain(tokenName);
    expect(unitEnv["OCI_CRED_AGENT_TOKEN"]).toBeUndefined();
    expect(ENV_EXAMPLE).not.toMatch(/^#?\s*OCI_CRED_AGENT_TOKEN=/m);
  });

  it("the LoadCredentialEncrypted= drop-in of the docs switches the key source to the same credential", async () => {
    const dropIn = documentedCredentialDropIn();
    const withDropIn = parseUnit(UNIT_TEXT, dropIn.text);
    const id = all(withDropIn, "Service", "LoadCredentialEncrypted")
      .map((v) => v.split(":")[0])
      .at(-1);
    expect(id).toBeDefined();
    const s = await settings({ ...environment(withDropIn), ...fileEnv });
    expect(s.keySource).toEqual({ kind: "systemd-credential", name: id });
  });

  it("health answers on loopback 127.0.0.1:9480; reload sends SIGHUP; the environment file is optional and names only real settings", async () => {
    const s = await settings();
    expect(s.listen).toEqual({ host: "127.0.0.1", port: 9480 });
    expect(last(UNIT, "Service", "ExecReload")).toMatch(/kill -HUP \$MAINPID$/);
    expect(all(UNIT, "Service", "EnvironmentFile")).toContain("-/etc/oci-cred-agent/env");
    const known = new Set(RUN_FIELDS.map((f) => f.env));
    const mentioned = [...ENV_EXAMPLE.matchAll(/^#?(OCI_CRED_AGENT_[A-Z_]+)=/gm)].map((m) => m[1] ?? "");
    expect(mentioned.length).toBeGreaterThan(3);
    for (const name of [...mentioned, ...Object.keys(unitEnv).filter((k) => k.startsWith("OCI_CRED_AGENT_"))])
      expect(known, name).toContain(name);
    // A setting that ExecStart= gives as a flag would be silently shadowed in the file.
    const flagged = new Set(
      Object.keys(runFlags(start.args, "ExecStart=")).map((k) => RUN_FIELDS.find((f) => f.key === k)?.env),
    );
    for (const name of Object.keys(fileEnv))
      expect(flagged.has(name), `${name} is set by ExecStart= already`).toBe(false);
  });

  it("tofu keeps what it needs: Internet sockets, the host network, writable work directory; JIT allowed", () => {
    const families = all(UNIT, "Service", "RestrictAddressFamilies").join(" ").split(/\s+/);
    expect(families).toEqual(expect.arrayContaining(["AF_INET", "AF_INET6"]));
    expect(families.some((f) => f.startsWith("~"))).toBe(false);
    expect(last(UNIT, "Service", "PrivateNetwork") ?? "no").toBe("no");
    expect(last(UNIT, "Service", "IPAddressDeny")).toBeUndefined();
    expect(last(UNIT, "Service", "MemoryDenyWriteExecute")).toBeUndefined();
    expect(last(UNIT, "Service", "SystemCallErrorNumber")).toBe("EPERM");
  });
});
