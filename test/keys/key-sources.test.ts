/**
 * Key sources and rotation through the real CLI: a real Secret Service (gnome-keyring under
 * dbus-run-session), systemd credentials (the directory systemd hands a service through
 * $CREDENTIALS_DIRECTORY: systemd itself does not run in this container, so the test provides
 * that directory exactly as LoadCredential= lays it out), env:, and key directories whose old
 * keys keep opening bundles until they are removed.
 */
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, unlink, writeFile, copyFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN } from "../support/agent-process.js";

const execFileAsync = promisify(execFile);
let dir: string;
const CANARY = `CANARY-${randomBytes(6).toString("hex")}`;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await execFileAsync(AGENT_BIN, args, {
      env: { ...process.env, HOME: dir, TF_CLI_CONFIG_FILE: "", ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

async function exportFile(): Promise<string> {
  const path = join(dir, `export-${randomBytes(4).toString("hex")}.json`);
  await writeFile(
    path,
    JSON.stringify({
      version: 1,
      registries: [{ id: "int-1", name: "ghcr", url: "https://ghcr.io", username: "octocat", password: CANARY }],
    }),
  );
  return path;
}

async function sealTo(publicKeyJson: string, runId: string): Promise<string> {
  const pub = join(dir, `pub-${randomBytes(4).toString("hex")}.json`);
  await writeFile(pub, publicKeyJson);
  const bundle = join(dir, `bundle-${randomBytes(4).toString("hex")}.json`);
  const r = await cli([
    "seal",
    "--public-key",
    pub,
    "--agent-id",
    "agent-1",
    "--run-id",
    runId,
    "--in",
    await exportFile(),
    "--out",
    bundle,
  ]);
  expect(r.code, r.stderr).toBe(0);
  return bundle;
}

function materializeArgs(keyArgs: string[], bundle: string, runId: string, runDir: string): string[] {
  return [
    "materialize",
    ...keyArgs,
    "--agent-id",
    "agent-1",
    "--run-id",
    runId,
    "--bundle",
    bundle,
    "--run-dir",
    runDir,
    "--format",
    "json",
  ];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "oca-keys-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("keyring: (a real Secret Service)", () => {
  it("keygen stores a key in the keyring, refuses to overwrite it, rotates, and materialize opens bundles with old and new keys", async () => {
    const home = join(dir, "keyring-home");
    await mkdir(home);
    const script = [
      "set -e",
      `export HOME=${home}`,
      // gnome-keyring creates and unlocks the login keyring with the password on stdin.
      `eval "$(printf 'test-password\\n' | gnome-keyring-daemon --unlock --components=secrets --daemonize)"`,
      `A=${AGENT_BIN}`,
      "K=keyring:oci-cred-agent-test/agent",
      "$A keygen --key $K > first.json",
      "if $A keygen --key $K 2> refused.txt; then echo 'second keygen should have been refused'; exit 1; fi",
      "$A keygen --rotate --key $K > second.json",
      "if $A pubkey --key keyring:oci-cred-agent-test/absent 2> absent.txt; then echo 'pubkey of an absent entry should have been refused'; exit 1; fi",
      "$A pubkey --all --key $K > all.json",
      `printf '%s' '{"version":1,"registries":[{"id":"int-1","url":"https://ghcr.io","username":"octocat","password":"${CANARY}"}]}' > export.json`,
      "$A seal --public-key first.json --agent-id agent-1 --run-id r1 --in export.json --out old.bundle",
      "$A seal --public-key second.json --agent-id agent-1 --run-id r2 --in export.json --out new.bundle",
      "$A materialize --key $K --agent-id agent-1 --run-id r1 --bundle old.bundle --run-dir run-old --format json > old.out",
      "$A materialize --key $K --agent-id agent-1 --run-id r2 --bundle new.bundle --run-dir run-new --format json > new.out",
    ].join("\n");
    const work = join(dir, "keyring-work");
    await mkdir(work);
    await writeFile(join(work, "t.sh"), script);
    const r = spawnSync("dbus-run-session", ["--", "bash", "t.sh"], { cwd: work, encoding: "utf8", timeout: 60_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(await readFile(join(work, "refused.txt"), "utf8")).toContain("KEY_FILE_EXISTS");
    const absent = await readFile(join(work, "absent.txt"), "utf8");
    expect(absent).toContain("error KEY_KEYRING_ENTRY_NOT_FOUND");
    expect(absent).toContain('service "oci-cred-agent-test", account "absent"');
    expect(absent).toContain("keygen --key keyring:oci-cred-agent-test/absent");
    const first = JSON.parse(await readFile(join(work, "first.json"), "utf8")) as { kid: string };
    const second = JSON.parse(await readFile(join(work, "second.json"), "utf8")) as { kid: string };
    const all = JSON.parse(await readFile(join(work, "all.json"), "utf8")) as { kid: string }[];
    expect(all.map((k) => k.kid)).toEqual([first.kid, second.kid]);
    for (const out of ["old.out", "new.out"]) {
      const result = JSON.parse(await readFile(join(work, out), "utf8")) as { registries: { host: string }[] };
      expect(result.registries.map((x) => x.host)).toEqual(["ghcr.io"]);
    }
    expect(r.stdout + r.stderr).not.toContain(CANARY);
  });
});

describe("systemd-credential: and env:", () => {
  it("reads the key from $CREDENTIALS_DIRECTORY/NAME and opens a bundle", async () => {
    const keyFile = join(dir, "sd.key");
    const gen = await cli(["keygen", "--key-file", keyFile]);
    const creds = join(dir, "credentials");
    await mkdir(creds, { mode: 0o700 });
    await copyFile(keyFile, join(creds, "agent.key"));
    await chmod(join(creds, "agent.key"), 0o400);
    const bundle = await sealTo(gen.stdout, "run-sd");
    const r = await cli(
      materializeArgs(["--key", "systemd-credential:agent.key"], bundle, "run-sd", join(dir, "run-sd")),
      { CREDENTIALS_DIRECTORY: creds },
    );
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { registries: unknown[] }).registries).toHaveLength(1);
    const missing = await cli(
      materializeArgs(["--key", "systemd-credential:agent.key"], bundle, "run-sd", join(dir, "run-sd2")),
      { CREDENTIALS_DIRECTORY: "" },
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("KEY_SOURCE_UNAVAILABLE");
    expect(missing.stderr).toContain("LoadCredential");
  });

  it("accepts env:NAME with a warning, and never prints the key", async () => {
    const keyFile = join(dir, "env.key");
    const gen = await cli(["keygen", "--key-file", keyFile]);
    const pem = await readFile(keyFile, "utf8");
    const bundle = await sealTo(gen.stdout, "run-env");
    const r = await cli(materializeArgs(["--key", "env:AGENT_PRIVATE_KEY"], bundle, "run-env", join(dir, "run-env")), {
      AGENT_PRIVATE_KEY: pem,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*environment variable AGENT_PRIVATE_KEY/);
    // It does not promise more than the agent does: runs that are not sandboxed can read /proc.
    expect(r.stderr).toContain("leaves AGENT_PRIVATE_KEY out of the environment it gives runs");
    expect(r.stderr).toContain("/proc/<agent pid>/environ");
    const body = pem.split("\n")[1] ?? "";
    expect(body.length).toBeGreaterThan(10);
    expect(r.stdout + r.stderr).not.toContain(body);
  });

  it("refuses env:NAME when the variable is unset or empty with KEY_ENV_NOT_SET, naming it and the fix", async () => {
    const unset = await cli(["pubkey", "--key", "env:OCA_TEST_NO_SUCH_KEY"], { OCA_TEST_NO_SUCH_KEY: undefined });
    expect(unset.code).toBe(1);
    expect(unset.stderr).toContain(
      "error KEY_ENV_NOT_SET: the environment variable OCA_TEST_NO_SUCH_KEY (--key env:OCA_TEST_NO_SUCH_KEY) is not set",
    );
    expect(unset.stderr).toContain("--key file:PATH");
    const empty = await cli(["pubkey", "--key", "env:OCA_TEST_EMPTY_KEY"], { OCA_TEST_EMPTY_KEY: "" });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain(
      "error KEY_ENV_NOT_SET: the environment variable OCA_TEST_EMPTY_KEY (--key env:OCA_TEST_EMPTY_KEY) is empty",
    );
  });
});

describe("rotation with a key directory", () => {
  it("opens bundles sealed to an older key while it is present, and refuses them with BUNDLE_UNKNOWN_KEY once it is removed", async () => {
    const keyDir = join(dir, "keys");
    await mkdir(keyDir, { mode: 0o700 });
    const first = await cli(["keygen", "--key", `file:${keyDir}`]);
    expect(first.code, first.stderr).toBe(0);
    const refused = await cli(["keygen", "--key", `file:${keyDir}`]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("--rotate");
    const second = await cli(["keygen", "--rotate", "--key", `file:${keyDir}`]);
    expect(second.code, second.stderr).toBe(0);
    const files = (await readdir(keyDir)).sort();
    expect(files).toHaveLength(2);
    const all = JSON.parse((await cli(["pubkey", "--all", "--key", `file:${keyDir}`])).stdout) as { kid: string }[];
    expect(all.map((k) => k.kid)).toEqual([
      (JSON.parse(first.stdout) as { kid: string }).kid,
      (JSON.parse(second.stdout) as { kid: string }).kid,
    ]);
    const newest = JSON.parse((await cli(["pubkey", "--key", `file:${keyDir}`])).stdout) as { kid: string };
    expect(newest.kid).toBe((JSON.parse(second.stdout) as { kid: string }).kid);

    const oldBundle = await sealTo(first.stdout, "run-rot");
    const ok = await cli(materializeArgs(["--key", `file:${keyDir}`], oldBundle, "run-rot", join(dir, "run-rot")));
    expect(ok.code, ok.stderr).toBe(0);

    // Retire the old key by removing its file (the older file name sorts first).
    const oldFile = files.find((f) => f !== files[files.length - 1]);
    const oldKeyPem = await readFile(join(keyDir, oldFile ?? ""), "utf8");
    const pubOfOld = await cli(["pubkey", "--key", "env:OLD_KEY"], { OLD_KEY: oldKeyPem });
    expect((JSON.parse(pubOfOld.stdout) as { kid: string }).kid).toBe(
      (JSON.parse(first.stdout) as { kid: string }).kid,
    );
    await unlink(join(keyDir, oldFile ?? ""));
    const gone = await cli(
      materializeArgs(
        ["--key", `file:${keyDir}`],
        await sealTo(first.stdout, "run-rot2"),
        "run-rot2",
        join(dir, "run-rot2"),
      ),
    );
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("BUNDLE_UNKNOWN_KEY");
  });

  it("refuses a group- or world-readable key file in a key directory and says how to fix it", async () => {
    const keyDir = join(dir, "loose-keys");
    await mkdir(keyDir, { mode: 0o700 });
    await cli(["keygen", "--key", `file:${keyDir}`]);
    const [name] = await readdir(keyDir);
    await chmod(join(keyDir, name ?? ""), 0o644);
    const r = await cli(["pubkey", "--key", `file:${keyDir}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("KEY_FILE_PERMISSIONS");
    expect(r.stderr).toContain("chmod 600");
  });
});
