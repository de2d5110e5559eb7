/**
 * The one-shot commands of issue 2, run as real processes through bin/oci-cred-agent (which
 * runs dist/: build first). A canary password is sealed into every bundle; it must never reach
 * stdout or stderr, in any form.
 */
import { execFile } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN } from "../support/agent-process.js";
import { parsePublicKeyDoc } from "../../src/crypto/agent-key.js";
import { sealBundle } from "../../src/crypto/sealed-bundle.js";

const CANARY = "CANARY-7f3a:pw-'\"$`é";
const CANARY_FORMS = [
  CANARY,
  JSON.stringify(CANARY).slice(1, -1),
  Buffer.from(`octocat:${CANARY}`, "utf8").toString("base64"),
  Buffer.from(CANARY, "utf8").toString("base64"),
  "CANARY-7f3a",
];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

let dir: string;
let home: string;
let keyFile: string;
let pubFile: string;
let exportFile: string;
let bundleFile: string;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home, LANG: "C.UTF-8", ...extra };
  return e;
}

function run(args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(
      AGENT_BIN,
      args,
      { env: env(options.env), encoding: "utf8", timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(options.input ?? "");
  });
}

function expectNoSecret(r: Result): void {
  for (const form of CANARY_FORMS) {
    expect(r.stdout).not.toContain(form);
    expect(r.stderr).not.toContain(form);
  }
}

const EXPORT = {
  version: 1,
  registries: [
    {
      id: "int-ghcr",
      name: "GHCR prod",
      url: "https://ghcr.io",
      username: "octocat",
      password: CANARY,
      updated_at: "2026-11-20T10:00:00Z",
    },
    {
      id: "int-ghcr-old",
      name: "GHCR old",
      url: "https://GHCR.io/",
      username: "octocat",
      password: CANARY,
      updated_at: "2026-01-01T00:00:00Z",
    },
    { id: "int-hub", name: "Docker Hub", url: "https://index.docker.io/v1/", username: "hubuser", password: CANARY },
    { id: "int-http", name: "Plain HTTP", url: "http://insecure.example.com", username: "u", password: CANARY },
  ],
};

async function seal(
  opts: { agentId?: string; runId?: string; ttl?: string; issuedAt?: string; plaintext?: string; out?: string } = {},
): Promise<string> {
  const out = opts.out ?? join(dir, `bundle-${Math.random().toString(16).slice(2)}.json`);
  const inFile = join(dir, `in-${Math.random().toString(16).slice(2)}.json`);
  writeFileSync(inFile, opts.plaintext ?? JSON.stringify(EXPORT), { mode: 0o600 });
  const args = [
    "seal",
    "--public-key",
    pubFile,
    "--agent-id",
    opts.agentId ?? "agent-1",
    "--run-id",
    opts.runId ?? "run-42",
    "--in",
    inFile,
    "--out",
    out,
  ];
  if (opts.ttl !== undefined) args.push("--ttl", opts.ttl);
  if (opts.issuedAt !== undefined) args.push("--issued-at", opts.issuedAt);
  const r = await run(args);
  expect(r).toMatchObject({ code: 0, stderr: "" });
  expectNoSecret(r);
  return out;
}

/** Seals any plaintext with the library, as a control plane that does not check its export would. */
async function sealUnchecked(plaintext: string): Promise<string> {
  const out = join(dir, `unchecked-${Math.random().toString(16).slice(2)}.json`);
  const bundle = await sealBundle({
    recipient: parsePublicKeyDoc(readFileSync(pubFile, "utf8"), pubFile),
    agentId: "agent-1",
    runId: "run-42",
    plaintext: Buffer.from(plaintext, "utf8"),
    issuedAtMs: Date.now(),
    ttlSeconds: 600,
  });
  writeFileSync(out, bundle);
  return out;
}

function materializeArgs(runDir: string, bundle: string, extra: string[] = []): string[] {
  return [
    "materialize",
    "--key-file",
    keyFile,
    "--agent-id",
    "agent-1",
    "--run-id",
    "run-42",
    "--bundle",
    bundle,
    "--run-dir",
    runDir,
    ...extra,
  ];
}

beforeAll(async () => {
  expect(existsSync(join(AGENT_BIN, "..", "..", "dist", "cli", "main.js"))).toBe(true);
  dir = mkdtempSync(join(tmpdir(), "one-shot-"));
  home = join(dir, "home");
  mkdirSync(home);
  keyFile = join(dir, "agent.key");
  pubFile = join(dir, "agent.pub.json");
  const r = await run(["keygen", "--key-file", keyFile]);
  expect(r.code).toBe(0);
  writeFileSync(pubFile, r.stdout);
  exportFile = join(dir, "export.json");
  writeFileSync(exportFile, JSON.stringify(EXPORT), { mode: 0o600 });
  bundleFile = await seal();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The commands (and subcommands) a --help lists, from its "Commands:" section. */
function commandsIn(help: string): string[] {
  const section = help.split(/^Commands:$/m)[1] ?? "";
  return [...section.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1] ?? "").filter((c) => c !== "help");
}

describe("--help", () => {
  it("every command and subcommand listed by --help has a --help that exits 0", async () => {
    const top = await run(["--help"]);
    expect(top.code).toBe(0);
    const commands = commandsIn(top.stdout);
    // The one-shot commands of issue 2 are all there.
    expect(commands).toEqual(
      expect.arrayContaining(["keygen", "pubkey", "seal", "materialize", "wipe", "run", "config"]),
    );
    const queue = commands.map((c) => [c]);
    const seen: string[] = [];
    while (queue.length > 0) {
      const batch = queue.splice(0);
      const results = await Promise.all(batch.map((cmd) => run([...cmd, "--help"])));
      results.forEach((r, i) => {
        const cmd = batch[i] ?? [];
        seen.push(cmd.join(" "));
        expect(r.code, cmd.join(" ")).toBe(0);
        expect(r.stdout, cmd.join(" ")).toMatch(new RegExp(`^Usage: oci-cred-agent ${cmd.join(" ")} `));
        expect(r.stderr, cmd.join(" ")).toBe("");
        for (const sub of commandsIn(r.stdout)) queue.push([...cmd, sub]);
      });
    }
    expect(seen).toContain("config print");
  });
});

describe("keygen and pubkey", () => {
  it("keygen prints exactly {kid, public_key}, writes a 0600 PEM key, and pubkey prints the same", async () => {
    const doc = JSON.parse(readFileSync(pubFile, "utf8")) as Record<string, unknown>;
    expect(Object.keys(doc).sort()).toEqual(["kid", "public_key"]);
    expect(doc["kid"]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(doc["public_key"]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(lstatSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyFile, "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const r = await run(["pubkey", "--key-file", keyFile]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(doc);
    // The private key never reaches stdout.
    expect(r.stdout).not.toContain("PRIVATE KEY");
    expect(readFileSync(pubFile, "utf8")).not.toContain("PRIVATE KEY");
  });

  it("keygen refuses to overwrite a key (KEY_FILE_EXISTS) and leaves it unchanged", async () => {
    const before = readFileSync(keyFile, "utf8");
    const r = await run(["keygen", "--key-file", keyFile]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^oci-cred-agent: error KEY_FILE_EXISTS: /);
    expect(readFileSync(keyFile, "utf8")).toBe(before);
  });

  it("pubkey refuses a key file readable by others (KEY_FILE_PERMISSIONS) with the fix", async () => {
    const loose = join(dir, "loose.key");
    writeFileSync(loose, readFileSync(keyFile));
    chmodSync(loose, 0o644);
    const r = await run(["pubkey", "--key-file", loose]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error KEY_FILE_PERMISSIONS");
    expect(r.stderr).toContain(`chmod 600 ${loose}`);
    expect(r.stdout).toBe("");
  });
});

describe("seal → materialize → wipe", () => {
  it("--format env prints only the environment, and the files are where it says", async () => {
    const runDir = join(dir, "run-env");
    const r = await run(materializeArgs(runDir, bundleFile));
    expect(r.code).toBe(0);
    expectNoSecret(r);
    expect(r.stdout).toBe(
      [
        `export DOCKER_CONFIG='${runDir}/docker'`,
        `export REGISTRY_AUTH_FILE='${runDir}/containers/auth.json'`,
        `export TF_CLI_CONFIG_FILE='${runDir}/tofu/cli.tfrc'`,
        "",
      ].join("\n"),
    );
    // stderr explains the ignored entries by id and code, never by secret.
    expect(r.stderr).toContain("ignored integration int-ghcr-old [DUPLICATE_REGISTRY]");
    expect(r.stderr).toContain("ignored integration int-http [ENTRY_NOT_HTTPS]");

    expect(lstatSync(runDir).mode & 0o777).toBe(0o700);
    for (const f of ["docker/config.json", "containers/auth.json", "tofu/cli.tfrc", ".oci-cred-agent-run.json"]) {
      expect(lstatSync(join(runDir, f)).mode & 0o777).toBe(0o600);
    }
    const docker = JSON.parse(readFileSync(join(runDir, "docker/config.json"), "utf8")) as {
      auths: Record<string, { auth: string }>;
    };
    const ghcr = Buffer.from(`octocat:${CANARY}`, "utf8").toString("base64");
    expect(docker.auths).toEqual({
      "ghcr.io": { auth: ghcr },
      "https://index.docker.io/v1/": { auth: Buffer.from(`hubuser:${CANARY}`, "utf8").toString("base64") },
      "registry-1.docker.io": { auth: Buffer.from(`hubuser:${CANARY}`, "utf8").toString("base64") },
    });
    const containers = JSON.parse(readFileSync(join(runDir, "containers/auth.json"), "utf8")) as {
      auths: Record<string, unknown>;
    };
    expect(Object.keys(containers.auths).sort()).toEqual(["docker.io", "ghcr.io"]);
    expect(readFileSync(join(runDir, "tofu/cli.tfrc"), "utf8")).toContain(
      `docker_style_config_files    = ["${runDir}/docker/config.json"]`,
    );

    const w = await run(["wipe", "--run-dir", runDir]);
    expect(w.code).toBe(0);
    expect(w.stdout).toBe("");
    expect(existsSync(runDir)).toBe(false);
    const again = await run(["wipe", "--run-dir", runDir, "--format", "json"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ run_dir: runDir, removed: [], absent: true });
  });

  it("--format json has the shape of issue 2: env, registries, ignored (and warnings)", async () => {
    const runDir = join(dir, "run-json");
    mkdirSync(runDir, { mode: 0o700 });
    const r = await run(materializeArgs(runDir, await seal(), ["--format", "json"]));
    expect(r.code).toBe(0);
    expectNoSecret(r);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(out).sort()).toEqual(["env", "ignored", "registries", "warnings"]);
    expect(out["env"]).toEqual({
      DOCKER_CONFIG: `${runDir}/docker`,
      REGISTRY_AUTH_FILE: `${runDir}/containers/auth.json`,
      TF_CLI_CONFIG_FILE: `${runDir}/tofu/cli.tfrc`,
    });
    expect(out["registries"]).toEqual([
      { host: "registry-1.docker.io", integration_id: "int-hub", integration_name: "Docker Hub" },
      { host: "ghcr.io", integration_id: "int-ghcr", integration_name: "GHCR prod" },
    ]);
    const ignored = out["ignored"] as Record<string, unknown>[];
    expect(ignored.map((i) => Object.keys(i).sort())).toEqual([
      ["code", "integration_id", "integration_name", "reason"],
      ["code", "integration_id", "integration_name", "reason"],
    ]);
    expect(ignored).toEqual(
      expect.arrayContaining([
        {
          integration_id: "int-http",
          integration_name: "Plain HTTP",
          code: "ENTRY_NOT_HTTPS",
          reason: expect.stringContaining("https://") as unknown,
        },
        {
          integration_id: "int-ghcr-old",
          integration_name: "GHCR old",
          code: "DUPLICATE_REGISTRY",
          reason: expect.stringContaining("int-ghcr") as unknown,
        },
      ]),
    );
    expect(out["warnings"]).toEqual([]);
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
    expect(existsSync(runDir)).toBe(false);
  });

  it("the env output is safe to eval in sh, even for a run directory with quotes and spaces", async () => {
    const runDir = join(dir, 'it\'s a "run" $dir');
    const r = await run(materializeArgs(runDir, bundleFile));
    expect(r.code).toBe(0);
    const shell = await new Promise<string>((resolve, reject) => {
      const child = execFile(
        "sh",
        ["-c", 'eval "$(cat)"; printf "%s\\n%s\\n%s" "$DOCKER_CONFIG" "$REGISTRY_AUTH_FILE" "$TF_CLI_CONFIG_FILE"'],
        (error, stdout) => {
          if (error) reject(new Error(error.message));
          else resolve(stdout);
        },
      );
      child.stdin?.end(r.stdout);
    });
    expect(shell.split("\n")).toEqual([
      join(runDir, "docker"),
      join(runDir, "containers/auth.json"),
      join(runDir, "tofu/cli.tfrc"),
    ]);
    expect(existsSync(join(runDir, "docker", "config.json"))).toBe(true);
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
    expect(existsSync(runDir)).toBe(false);
  });

  it("an entry without a name is reported with integration_name null", async () => {
    const runDir = join(dir, "run-no-name");
    const b = await seal({
      plaintext: JSON.stringify({
        version: 1,
        registries: [{ id: "anon", url: "https://quay.io", username: "u", password: CANARY }],
      }),
    });
    const r = await run(materializeArgs(runDir, b, ["--format", "json"]));
    expect(r.code).toBe(0);
    expectNoSecret(r);
    expect((JSON.parse(r.stdout) as { registries: unknown }).registries).toEqual([
      { host: "quay.io", integration_id: "anon", integration_name: null },
    ]);
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
  });

  it("seal reads the plaintext from stdin with --in -, and the bundle holds no plaintext", async () => {
    const out = join(dir, "stdin-bundle.json");
    const r = await run(
      ["seal", "--public-key", pubFile, "--agent-id", "agent-1", "--run-id", "run-42", "--in", "-", "--out", out],
      { input: JSON.stringify(EXPORT) },
    );
    expect(r).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const bundle = readFileSync(out, "utf8");
    for (const form of CANARY_FORMS) expect(bundle).not.toContain(form);
    expect(bundle).not.toContain("octocat");
    const runDir = join(dir, "run-stdin");
    expect((await run(materializeArgs(runDir, out))).code).toBe(0);
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
  });

  it("materialize reads the bundle from stdin with --bundle -", async () => {
    const runDir = join(dir, "run-stdin-bundle");
    const r = await run(materializeArgs(runDir, "-"), { input: readFileSync(bundleFile, "utf8") });
    expect(r.code).toBe(0);
    expectNoSecret(r);
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
  });
});

describe("the operator's OpenTofu CLI configuration", () => {
  /** A CLI configuration that sends provider installation to `url`. */
  const mirror = (url: string): string => `provider_installation {\n  network_mirror {\n    url = "${url}"\n  }\n}\n`;

  it("comes only from --tofu-cli-config: files planted in HOME, XDG_CONFIG_HOME or TF_CLI_CONFIG_FILE are never copied into the run's", async () => {
    const planted = mirror("https://attacker.invalid/providers/");
    const plantedHome = join(dir, "planted-home");
    for (const f of [".tofurc", ".terraformrc", ".terraform.d/mirror.tfrc", "xdg/opentofu/tofurc", "elsewhere.tfrc"]) {
      mkdirSync(join(plantedHome, f, ".."), { recursive: true });
      writeFileSync(join(plantedHome, f), planted);
    }
    const ambient = {
      HOME: plantedHome,
      XDG_CONFIG_HOME: join(plantedHome, "xdg"),
      TF_CLI_CONFIG_FILE: join(plantedHome, "elsewhere.tfrc"),
    };

    const bare = join(dir, "run-cli-planted");
    const r = await run(materializeArgs(bare, bundleFile), { env: ambient });
    expect(r.code, r.stderr).toBe(0);
    const generated = readFileSync(join(bare, "tofu/cli.tfrc"), "utf8");
    expect(generated).toContain("oci_default_credentials");
    expect(generated).not.toContain("attacker.invalid");

    const operatorFile = join(dir, "operator-mirror.tfrc");
    writeFileSync(operatorFile, mirror("https://mirror.example.com/providers/"));
    const explicit = join(dir, "run-cli-explicit");
    const e = await run(materializeArgs(explicit, bundleFile, ["--tofu-cli-config", operatorFile]), { env: ambient });
    expect(e.code, e.stderr).toBe(0);
    const withOperator = readFileSync(join(explicit, "tofu/cli.tfrc"), "utf8");
    expect(withOperator).toContain('url = "https://mirror.example.com/providers/"');
    expect(withOperator).not.toContain("attacker.invalid");
  });

  it("a --tofu-cli-config that does not exist is refused (TOFU_CLI_CONFIG_INVALID), naming the flag", async () => {
    const missing = join(dir, "no-such.tfrc");
    const r = await run(materializeArgs(join(dir, "run-cli-missing"), bundleFile, ["--tofu-cli-config", missing]));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `error TOFU_CLI_CONFIG_INVALID: the operator's OpenTofu CLI configuration ${missing} cannot be read (ENOENT)`,
    );
    expect(r.stderr).toContain("--tofu-cli-config");
    expect(existsSync(join(dir, "run-cli-missing"))).toBe(false);
  });
});

describe("seal checks what it seals, and never overwrites", () => {
  it.each([
    ["not JSON", `not json ${CANARY}`, "PAYLOAD_INVALID"],
    ["version 2", '{"version":2,"registries":[]}', "PAYLOAD_VERSION_UNSUPPORTED"],
  ])("refuses a plaintext that is %s, with nothing written and no secret printed", async (_what, plaintext, code) => {
    const out = join(dir, `refused-${code}.json`);
    const inFile = join(dir, `refused-${code}.in`);
    writeFileSync(inFile, plaintext, { mode: 0o600 });
    const r = await run([
      "seal",
      "--public-key",
      pubFile,
      "--agent-id",
      "agent-1",
      "--run-id",
      "run-42",
      "--in",
      inFile,
      "--out",
      out,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(code);
    expect(existsSync(out)).toBe(false);
    expectNoSecret(r);
  });

  it("refuses an --out that exists or is a symlink (OUTPUT_EXISTS), and writes a new one 0600", async () => {
    const out = join(dir, "sealed-once.json");
    expect(
      (
        await run([
          "seal",
          "--public-key",
          pubFile,
          "--agent-id",
          "agent-1",
          "--run-id",
          "run-42",
          "--in",
          exportFile,
          "--out",
          out,
        ])
      ).code,
    ).toBe(0);
    expect(lstatSync(out).mode & 0o777).toBe(0o600);
    const before = readFileSync(out, "utf8");
    const again = await run([
      "seal",
      "--public-key",
      pubFile,
      "--agent-id",
      "agent-1",
      "--run-id",
      "run-42",
      "--in",
      exportFile,
      "--out",
      out,
    ]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("OUTPUT_EXISTS");
    expect(readFileSync(out, "utf8")).toBe(before);
    const target = join(dir, "link-target.txt");
    writeFileSync(target, "untouched");
    const link = join(dir, "out-link.json");
    symlinkSync(target, link);
    const viaLink = await run([
      "seal",
      "--public-key",
      pubFile,
      "--agent-id",
      "agent-1",
      "--run-id",
      "run-42",
      "--in",
      exportFile,
      "--out",
      link,
    ]);
    expect(viaLink.stderr).toContain("OUTPUT_EXISTS");
    expect(readFileSync(target, "utf8")).toBe("untouched");
  });
});

describe("repository-scoped entries", () => {
  it("warns that the Docker CLI family ignores a scoped key, naming the tools of that family the run's PATH has", async () => {
    const bin = join(dir, "scoped-bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "oras"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const scoped = await seal({
      runId: "run-scoped",
      plaintext: JSON.stringify({
        version: 1,
        registries: [{ id: "int-a", url: "https://ghcr.io/org-a", username: "a", password: CANARY }],
      }),
    });
    const args = (runDir: string): string[] => [
      "materialize",
      "--key-file",
      keyFile,
      "--agent-id",
      "agent-1",
      "--run-id",
      "run-scoped",
      "--bundle",
      scoped,
      "--run-dir",
      runDir,
    ];
    // Only the fake oras and the system's directories (no docker, crane, helm or regctl there).
    const withOras = await run(args(join(dir, "run-scoped-1")), { env: { PATH: `${bin}:/usr/bin:/bin` } });
    expect(withOras.code).toBe(0);
    expect(withOras.stderr).toContain("ghcr.io/org-a is repository-scoped");
    expect(withOras.stderr).toContain("(on PATH here: oras)");
    expectNoSecret(withOras);
    const without = await run(args(join(dir, "run-scoped-2")), { env: { PATH: "/usr/bin:/bin" } });
    expect(without.stderr).toContain("(none of docker, oras, crane, helm, regctl is on PATH here)");
    for (const d of ["run-scoped-1", "run-scoped-2"])
      expect((await run(["wipe", "--run-dir", join(dir, d)])).code).toBe(0);
  });
});

describe("operator helpers in the base Docker config", () => {
  it("warns when a helper the base config keeps (credHelpers, credsStore) is not on PATH, and names what it serves", async () => {
    const bin = join(dir, "helper-bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "docker-credential-present"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const base = join(dir, "base-helpers.json");
    writeFileSync(
      base,
      JSON.stringify({
        credHelpers: { "quay.io": "present", "gcr.io": "gcloud-absent", "ghcr.io": "overridden-absent" },
        credsStore: "store-absent",
      }),
    );
    const runDir = join(dir, "run-base-helpers");
    const r = await run(materializeArgs(runDir, bundleFile, ["--base-docker-config", base]), {
      env: { PATH: `${bin}:${process.env["PATH"] ?? ""}` },
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("docker-credential-gcloud-absent for gcr.io, but it is not on PATH");
    expect(r.stderr).toContain("docker-credential-store-absent for credsStore");
    expect(r.stderr).not.toContain("docker-credential-present");
    // ghcr.io is exported: its base helper is replaced, so its absence does not matter.
    expect(r.stderr).not.toContain("overridden-absent for");
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
  });
});

describe("materialize refusals: exit 1, the code on stderr, nothing in the run directory, no secret", () => {
  type Case = { args: (runDir: string) => string[]; env?: Record<string, string> };
  const cases: [string, () => Case | Promise<Case>, string][] = [
    [
      "a bundle for another agent",
      async () => {
        const b = await seal({ agentId: "agent-2" });
        return { args: (d) => materializeArgs(d, b) };
      },
      "BUNDLE_WRONG_AGENT",
    ],
    [
      "a bundle for another run",
      async () => {
        const b = await seal({ runId: "run-43" });
        return { args: (d) => materializeArgs(d, b) };
      },
      "BUNDLE_WRONG_RUN",
    ],
    [
      "an expired bundle",
      async () => {
        const b = await seal({ issuedAt: "2020-01-01T00:00:00Z", ttl: "10m" });
        return { args: (d) => materializeArgs(d, b) };
      },
      "BUNDLE_EXPIRED",
    ],
    [
      "a bundle valid for too long",
      async () => {
        const b = await seal({ ttl: "2h" });
        return { args: (d) => materializeArgs(d, b) };
      },
      "BUNDLE_LIFETIME_TOO_LONG",
    ],
    [
      "a bundle issued in the future",
      async () => {
        const b = await seal({ issuedAt: new Date(Date.now() + 3_600_000).toISOString(), ttl: "10m" });
        return { args: (d) => materializeArgs(d, b) };
      },
      "BUNDLE_NOT_YET_VALID",
    ],
    [
      "a tampered bundle",
      () => {
        const b = readFileSync(bundleFile, "utf8");
        const env = JSON.parse(b) as { protected: string; enc: string; ciphertext: string };
        const ct = Buffer.from(env.ciphertext, "base64url");
        ct[5] = (ct[5] ?? 0) ^ 1;
        const t = join(dir, "tampered.json");
        writeFileSync(t, JSON.stringify({ ...env, ciphertext: ct.toString("base64url") }));
        return { args: (d) => materializeArgs(d, t) };
      },
      "BUNDLE_DECRYPT_FAILED",
    ],
    [
      "a bundle that is not a bundle",
      () => {
        const t = join(dir, "junk.json");
        writeFileSync(t, "junk");
        return { args: (d) => materializeArgs(d, t) };
      },
      "BUNDLE_MALFORMED",
    ],
    [
      "a bundle over --max-bundle-bytes",
      () => ({ args: (d) => materializeArgs(d, bundleFile, ["--max-bundle-bytes", "100"]) }),
      "BUNDLE_TOO_LARGE",
    ],
    [
      "a bundle sealed to another key",
      async () => {
        const otherKey = join(dir, `other-${Math.random().toString(16).slice(2)}.key`);
        const k = await run(["keygen", "--key-file", otherKey]);
        const otherPub = join(dir, "other.pub.json");
        writeFileSync(otherPub, k.stdout);
        const inFile = join(dir, "other-in.json");
        writeFileSync(inFile, JSON.stringify(EXPORT));
        const out = join(dir, "other-bundle.json");
        await run([
          "seal",
          "--public-key",
          otherPub,
          "--agent-id",
          "agent-1",
          "--run-id",
          "run-42",
          "--in",
          inFile,
          "--out",
          out,
        ]);
        return { args: (d) => materializeArgs(d, out) };
      },
      "BUNDLE_UNKNOWN_KEY",
    ],
    // `seal` refuses these itself (see below), so a control plane that does not check is stood in for by the library.
    [
      "an export of version 2",
      async () => {
        const b = await sealUnchecked('{"version":2,"registries":[]}');
        return { args: (d) => materializeArgs(d, b) };
      },
      "PAYLOAD_VERSION_UNSUPPORTED",
    ],
    [
      "an export that is not JSON",
      async () => {
        const b = await sealUnchecked(`not json ${CANARY}`);
        return { args: (d) => materializeArgs(d, b) };
      },
      "PAYLOAD_INVALID",
    ],
    [
      "an invalid base Docker config",
      () => {
        const f = join(dir, "base-bad.json");
        writeFileSync(f, '{"auths": []}');
        return { args: (d) => materializeArgs(d, bundleFile, ["--base-docker-config", f]) };
      },
      "BASE_DOCKER_CONFIG_INVALID",
    ],
    [
      "an operator CLI configuration with oci_default_credentials",
      () => {
        const f = join(dir, "operator.tfrc");
        writeFileSync(f, 'oci_default_credentials {\n  docker_credentials_helper = "desktop"\n}\n');
        return { args: (d) => materializeArgs(d, bundleFile, ["--tofu-cli-config", f]) };
      },
      "TOFU_CLI_CONFIG_CONFLICT",
    ],
    [
      "an operator CLI configuration that does not parse",
      () => {
        const f = join(dir, "broken.tfrc");
        writeFileSync(f, "provider_installation {\n  direct {}\n");
        return { args: (d) => materializeArgs(d, bundleFile, ["--tofu-cli-config", f]) };
      },
      "TOFU_CLI_CONFIG_INVALID",
    ],
    [
      "a credential helper that is not on PATH",
      async () => {
        const b = await seal({
          plaintext: JSON.stringify({
            version: 1,
            registries: [
              {
                id: "ecr",
                url: "https://123.dkr.ecr.eu-west-1.amazonaws.com",
                credential_helper: "oci-cred-agent-test-missing",
              },
              EXPORT.registries[0],
            ],
          }),
        });
        return { args: (d) => materializeArgs(d, b) };
      },
      "CREDENTIAL_HELPER_NOT_FOUND",
    ],
    [
      "a key file readable by group",
      () => {
        const loose = join(dir, "group.key");
        writeFileSync(loose, readFileSync(keyFile));
        chmodSync(loose, 0o640);
        return {
          args: (d) => [
            ...materializeArgs(d, bundleFile).filter((a) => a !== keyFile && a !== "--key-file"),
            "--key-file",
            loose,
          ],
        };
      },
      "KEY_FILE_PERMISSIONS",
    ],
    [
      "a missing key file",
      () => ({
        args: (d) => [
          ...materializeArgs(d, bundleFile).filter((a) => a !== keyFile && a !== "--key-file"),
          "--key-file",
          join(dir, "nope.key"),
        ],
      }),
      "KEY_FILE_NOT_FOUND",
    ],
    [
      "a missing parent directory",
      () => ({ args: (d) => materializeArgs(join(d, "deeper", "run"), bundleFile) }),
      "RUN_DIR_PARENT_MISSING",
    ],
  ];

  it.each(cases.map(([name, make, code]) => [`${name} → ${code}`, make, code] as const))(
    "%s",
    async (_title, make, code) => {
      const { args, env: extraEnv } = await make();
      const runDir = join(dir, `refused-${code}-${Math.random().toString(16).slice(2)}`);
      const r = await run(args(runDir), extraEnv === undefined ? {} : { env: extraEnv });
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(new RegExp(`^oci-cred-agent: error ${code}: .+`, "m"));
      expectNoSecret(r);
      expect(existsSync(runDir)).toBe(false);
    },
  );

  it("a refusal leaves a pre-created empty run directory empty", async () => {
    const runDir = join(dir, "pre-created");
    mkdirSync(runDir, { mode: 0o700 });
    const r = await run(materializeArgs(runDir, await seal({ agentId: "agent-9" })));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error BUNDLE_WRONG_AGENT");
    expect(readdirSync(runDir)).toEqual([]);
  });

  it("a run directory that is not empty is refused and left as it was", async () => {
    const runDir = join(dir, "not-empty");
    mkdirSync(runDir);
    writeFileSync(join(runDir, "keep.txt"), "keep");
    const r = await run(materializeArgs(runDir, bundleFile));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error RUN_DIR_UNSAFE");
    expectNoSecret(r);
    expect(readdirSync(runDir)).toEqual(["keep.txt"]);
  });

  it("an unknown --format is a usage error (exit 2) and writes nothing", async () => {
    const runDir = join(dir, "bad-format");
    const r = await run(materializeArgs(runDir, bundleFile, ["--format", "yaml"]));
    expect(r.code).toBe(2);
    expect(existsSync(runDir)).toBe(false);
  });
});

describe("wipe refusals", () => {
  it("refuses a directory without the agent's marker and leaves it", async () => {
    const d = join(dir, "not-ours");
    mkdirSync(d);
    writeFileSync(join(d, "data.txt"), "keep");
    const r = await run(["wipe", "--run-dir", d]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^oci-cred-agent: error WIPE_NOT_AGENT_DIR: /);
    expect(readFileSync(join(d, "data.txt"), "utf8")).toBe("keep");
  });

  it("removes the agent's files but leaves and reports a foreign one", async () => {
    const runDir = join(dir, "foreign-inside");
    expect((await run(materializeArgs(runDir, bundleFile))).code).toBe(0);
    writeFileSync(join(runDir, "docker", "extra.txt"), "foreign");
    const r = await run(["wipe", "--run-dir", runDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error WIPE_FOREIGN_ENTRIES");
    expect(r.stderr).toContain("docker/extra.txt");
    expect(existsSync(join(runDir, "docker", "config.json"))).toBe(false);
    expect(existsSync(join(runDir, "docker", "extra.txt"))).toBe(true);
    rmSync(join(runDir, "docker", "extra.txt"));
    expect((await run(["wipe", "--run-dir", runDir])).code).toBe(0);
    expect(existsSync(runDir)).toBe(false);
  });
});
