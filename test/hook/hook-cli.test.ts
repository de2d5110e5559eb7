/**
 * `oci-cred-agent hook NAME` against a stand-in sidecar (a Unix socket that records requests and
 * answers what each test says): what it sends, what it prints, what it writes in HOME and in
 * $TFC_AGENT_ENV, and that every failure is one line on stderr, nothing on stdout, and a
 * non-zero exit before anything is written. The real sidecar is in test/hook/foreign-runners.test.ts.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createHash } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runHook, startStubSidecar, type StubSidecar } from "../support/hook-cli.js";

const TOKEN = "ocrt_" + "A".repeat(43);
let work: string;
let socket: string;
let stub: StubSidecar;
let runDir: string;
let home: string;
const DOCKER_CONFIG_TEXT = `${JSON.stringify({ auths: { "127.0.0.1:5000": { auth: "dTpw" } } })}\n`;

function preAnswer(): Record<string, unknown> {
  return {
    ok: true,
    run_dir: runDir,
    env: {
      TF_CLI_CONFIG_FILE: join(runDir, "tofu/cli.tfrc"),
      DOCKER_CONFIG: join(runDir, "docker"),
      REGISTRY_AUTH_FILE: join(runDir, "containers/auth.json"),
    },
    docker_config_file: join(runDir, "docker/config.json"),
  };
}

function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    HOME: home,
    OCI_CRED_AGENT_SOCKET: socket,
    OCI_CRED_AGENT_RUN_TOKEN: TOKEN,
    SCALR_RUN_ID: "run-1",
    ...extra,
  };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "oca-hook-cli-"));
  socket = join(work, "sidecar.sock");
  stub = await startStubSidecar(socket);
  runDir = join(work, "runs", "run-1");
  await mkdir(join(runDir, "docker"), { recursive: true });
  await writeFile(join(runDir, "docker/config.json"), DOCKER_CONFIG_TEXT, { mode: 0o600 });
});

afterAll(async () => {
  await stub.close();
  await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
  stub.requests.length = 0;
  stub.answer = (r) => (String(r["hook"]).startsWith("pre-") ? preAnswer() : { ok: true, wiped: 3 });
  home = await mkdtemp(join(work, "home-"));
});

describe("pre hooks", () => {
  it("send the run id, token and phase, and print KEY='value' lines that sh evals into the run's variables", async () => {
    const run = await runHook(["pre-init"], baseEnv({ SCALR_TERRAFORM_OPERATION: "apply" }));
    expect([run.code, run.stderr]).toEqual([0, ""]);
    expect(stub.requests).toEqual([
      { v: 1, hook: "pre-init", run_id: "run-1", run_token: TOKEN, phase: "apply", outcome: null },
    ]);
    expect(run.stdout.split("\n").filter(Boolean)).toEqual([
      `TF_CLI_CONFIG_FILE='${runDir}/tofu/cli.tfrc'`,
      `DOCKER_CONFIG='${runDir}/docker'`,
      `REGISTRY_AUTH_FILE='${runDir}/containers/auth.json'`,
    ]);
    const evaluated = execFileSync("sh", ["-c", 'set -a; eval "$1"; set +a; env', "sh", run.stdout], {
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "" },
    });
    expect(evaluated).toContain(`TF_CLI_CONFIG_FILE=${runDir}/tofu/cli.tfrc\n`);
    // No HOME copy unless asked for.
    expect(existsSync(join(home, ".docker"))).toBe(false);
  });

  it("read the token from --run-token-file, the run id from --run-id before any variable", async () => {
    const tokenFile = join(work, "token");
    await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const env = baseEnv({ TFC_RUN_ID: "run-tfc" });
    delete env["OCI_CRED_AGENT_RUN_TOKEN"];
    const run = await runHook(["pre-plan", "--run-token-file", tokenFile, "--run-id", "run-flag"], env);
    expect([run.code, run.stderr]).toEqual([0, ""]);
    expect(stub.requests[0]).toMatchObject({ run_id: "run-flag", run_token: TOKEN, phase: "plan" });
  });

  it("append plain KEY=value lines to $TFC_AGENT_ENV (HCP agents), after what is there", async () => {
    const envFile = join(work, "tfc-agent-env");
    await writeFile(envFile, "FOO=bar\n");
    const env = baseEnv({ TFC_RUN_ID: "run-1", TFC_AGENT_ENV: envFile });
    delete env["SCALR_RUN_ID"];
    const run = await runHook(["pre-apply"], env);
    expect([run.code, run.stderr]).toEqual([0, ""]);
    expect(await readFile(envFile, "utf8")).toBe(
      `FOO=bar\nTF_CLI_CONFIG_FILE=${runDir}/tofu/cli.tfrc\nDOCKER_CONFIG=${runDir}/docker\nREGISTRY_AUTH_FILE=${runDir}/containers/auth.json\n`,
    );
  });

  it("link $HOME/.docker/config.json to the sidecar's Docker config with OCI_CRED_AGENT_WRITE_HOME=1, and the post hook removes the link", async () => {
    // A .docker the user made readable by others is made 0700: the link names the sidecar's file.
    await mkdir(join(home, ".docker"));
    await chmod(join(home, ".docker"), 0o755);
    const pre = await runHook(["pre-plan"], baseEnv({ OCI_CRED_AGENT_WRITE_HOME: "1" }));
    expect([pre.code, pre.stderr]).toEqual([0, ""]);
    const link = join(home, ".docker/config.json");
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(join(runDir, "docker/config.json"));
    expect(await readFile(link, "utf8")).toBe(DOCKER_CONFIG_TEXT);
    expect((await stat(join(home, ".docker"))).mode & 0o777).toBe(0o700);
    expect((await readdir(join(home, ".docker"))).sort()).toEqual([".oci-cred-agent-hook.json", "config.json"]);
    // Again (pre-init then pre-plan): it replaces its own link.
    expect((await runHook(["pre-plan"], baseEnv({ OCI_CRED_AGENT_WRITE_HOME: "1" }))).code).toBe(0);

    const post = await runHook(["post-plan"], baseEnv({ OCI_CRED_AGENT_WRITE_HOME: "1" }));
    expect([post.code, post.stderr, post.stdout]).toEqual([0, "", ""]);
    expect(await readdir(join(home, ".docker"))).toEqual([]);
    expect(stub.requests.at(-1)).toMatchObject({ hook: "post-plan", phase: "plan" });
    // Idempotent: nothing left, exit 0.
    const again = await runHook(["post-plan", "--home", home], baseEnv());
    expect([again.code, again.stderr]).toEqual([0, ""]);
  });

  it("never overwrite a config.json the hook did not write, and write nothing then", async () => {
    await mkdir(join(home, ".docker"), { mode: 0o700 });
    const mine = '{"auths":{"ghcr.io":{"auth":"bWU6bWluZQ=="}}}';
    await writeFile(join(home, ".docker/config.json"), mine, { mode: 0o600 });
    const envFile = join(work, "tfc-env-foreign");
    await writeFile(envFile, "");
    const run = await runHook(["pre-plan", "--home", home], baseEnv({ TFC_AGENT_ENV: envFile }));
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(
      /^oci-cred-agent hook: HOOK_HOME_CONFIG_FOREIGN: .*config\.json exists and the hook did not write it/,
    );
    expect(run.stderr.split("\n").filter(Boolean)).toHaveLength(1);
    expect(await readFile(join(home, ".docker/config.json"), "utf8")).toBe(mine);
    expect(await readdir(join(home, ".docker"))).toEqual(["config.json"]);
    expect(await readFile(envFile, "utf8")).toBe("");
    // A post hook leaves the user's file alone, silently.
    const post = await runHook(["post-plan", "--home", home], baseEnv());
    expect([post.code, post.stderr]).toEqual([0, ""]);
    expect(await readFile(join(home, ".docker/config.json"), "utf8")).toBe(mine);
  });

  it("refuse a .docker that is a symbolic link", async () => {
    const elsewhere = join(work, "elsewhere");
    await mkdir(elsewhere, { recursive: true });
    await symlink(elsewhere, join(home, ".docker"));
    const run = await runHook(["pre-plan", "--home", home], baseEnv());
    expect([run.code, run.stdout]).toEqual([1, ""]);
    expect(run.stderr).toMatch(/^oci-cred-agent hook: HOOK_HOME_UNSAFE: .*symbolic link/);
    expect(await readdir(elsewhere)).toEqual([]);
  });

  it("replace, and remove, a copy that a hook before the link left (a marker with its digest)", async () => {
    await mkdir(join(home, ".docker"), { mode: 0o700 });
    const old = '{"auths":{"127.0.0.1:5000":{"auth":"b2xkOmNvcHk="}}}';
    await writeFile(join(home, ".docker/config.json"), old, { mode: 0o600 });
    const digest = createHash("sha256").update(old).digest("hex");
    await writeFile(
      join(home, ".docker/.oci-cred-agent-hook.json"),
      `${JSON.stringify({ v: 1, run_id: "run-0", sha256: [digest] })}\n`,
    );
    expect((await runHook(["pre-plan", "--home", home], baseEnv())).code).toBe(0);
    expect(await readlink(join(home, ".docker/config.json"))).toBe(join(runDir, "docker/config.json"));
    await rm(join(home, ".docker/config.json"));
    await writeFile(join(home, ".docker/config.json"), old, { mode: 0o600 });
    await writeFile(
      join(home, ".docker/.oci-cred-agent-hook.json"),
      `${JSON.stringify({ v: 1, run_id: "run-0", sha256: [digest] })}\n`,
    );
    const post = await runHook(["post-plan", "--home", home], baseEnv());
    expect([post.code, post.stderr]).toEqual([0, ""]);
    expect(await readdir(join(home, ".docker"))).toEqual([]);
  });

  it("leave a link replaced during the phase in place, with a warning", async () => {
    expect((await runHook(["pre-plan", "--home", home], baseEnv())).code).toBe(0);
    // A tool that saves its config by renaming a new file over config.json.
    await writeFile(join(home, ".docker/new.json"), '{"auths":{}}');
    await rename(join(home, ".docker/new.json"), join(home, ".docker/config.json"));
    // The sidecar's file was not written through the link.
    expect(await readFile(join(runDir, "docker/config.json"), "utf8")).toBe(DOCKER_CONFIG_TEXT);
    const post = await runHook(["post-plan", "--home", home], baseEnv());
    expect(post.code).toBe(0);
    expect(post.stderr).toMatch(/^oci-cred-agent hook: warning: HOOK_HOME_CONFIG_CHANGED: /);
    expect(existsSync(join(home, ".docker/config.json"))).toBe(true);
    // The next pre hook refuses until someone looks.
    expect((await runHook(["pre-apply", "--home", home], baseEnv())).stderr).toMatch(/HOOK_HOME_CONFIG_FOREIGN/);
  });

  it("on a refusal: the sidecar's code and message on one stderr line, exit 1, nothing on stdout, nothing written", async () => {
    stub.answer = () => ({
      ok: false,
      code: "RUN_TOKEN_INVALID",
      message: "the run token is not the run's\nsecond line",
    });
    const envFile = join(work, "tfc-env-refused");
    await writeFile(envFile, "");
    const run = await runHook(["pre-plan", "--home", home], baseEnv({ TFC_AGENT_ENV: envFile }));
    expect([run.code, run.stdout]).toEqual([1, ""]);
    expect(run.stderr).toBe("oci-cred-agent hook: RUN_TOKEN_INVALID: the run token is not the run's second line\n");
    expect(existsSync(join(home, ".docker"))).toBe(false);
    expect(await readFile(envFile, "utf8")).toBe("");
  });

  it("refuse a value that cannot be one line before writing anything", async () => {
    stub.answer = () => ({ ...preAnswer(), env: { ...(preAnswer()["env"] as object), DOCKER_CONFIG: "/x\ny" } });
    const run = await runHook(["pre-plan", "--home", home], baseEnv());
    expect([run.code, run.stdout]).toEqual([1, ""]);
    expect(run.stderr).toMatch(/^oci-cred-agent hook: HOOK_ENV_VALUE_REFUSED: the value of DOCKER_CONFIG/);
    expect(existsSync(join(home, ".docker"))).toBe(false);
  });

  it("fail before asking anything without a run id or a token; never take the token on the command line", async () => {
    const noId = baseEnv();
    delete noId["SCALR_RUN_ID"];
    const a = await runHook(["pre-plan"], noId);
    expect([a.code, a.stdout]).toEqual([1, ""]);
    expect(a.stderr).toMatch(
      /^oci-cred-agent hook: HOOK_RUN_ID_MISSING: no run id: pass --run-id, or .*SCALR_RUN_ID, TFC_RUN_ID/,
    );
    const noToken = baseEnv();
    delete noToken["OCI_CRED_AGENT_RUN_TOKEN"];
    const b = await runHook(["pre-plan"], noToken);
    expect(b.stderr).toMatch(/^oci-cred-agent hook: HOOK_RUN_TOKEN_MISSING: /);
    const c = await runHook(["pre-plan", "--run-token", TOKEN], noToken);
    expect(c.code).toBe(2);
    expect(c.stdout).toBe("");
    expect(c.stderr).not.toContain(TOKEN);
    const d = await runHook(["pre-plan", "--run-id", "../etc"], baseEnv());
    expect([d.code, d.stderr]).toEqual([
      2,
      expect.stringMatching(/^oci-cred-agent hook: INVALID_ARGUMENT: the run id from --run-id/),
    ]);
    const e = await runHook(["pre-destroy"], baseEnv());
    expect(e.stderr).toMatch(/^oci-cred-agent hook: INVALID_ARGUMENT: unknown hook "pre-destroy"/);
    expect(stub.requests).toEqual([]);
  });
});

describe("an unreachable or broken sidecar", () => {
  it("fails a pre hook; a post hook warns and exits 0, or 1 with --fail-if-unreachable", async () => {
    const env = baseEnv({ OCI_CRED_AGENT_SOCKET: join(work, "nothing.sock") });
    const pre = await runHook(["pre-plan"], env);
    expect([pre.code, pre.stdout]).toEqual([1, ""]);
    expect(pre.stderr).toMatch(
      /^oci-cred-agent hook: HOOK_SIDECAR_UNREACHABLE: no socket at .*nothing\.sock: start oci-cred-agent sidecar/,
    );
    const post = await runHook(["post-plan"], env);
    expect(post.code).toBe(0);
    expect(post.stderr).toMatch(/^oci-cred-agent hook: warning: HOOK_SIDECAR_UNREACHABLE: /);
    expect((await runHook(["post-plan", "--fail-if-unreachable"], env)).code).toBe(1);
  });

  it("gives up at --timeout when the sidecar does not answer, and refuses an answer that is not one", async () => {
    stub.answer = () => "hang";
    const slow = await runHook(["pre-plan", "--timeout", "300ms"], baseEnv());
    expect([slow.code, slow.stdout]).toEqual([1, ""]);
    expect(slow.stderr).toMatch(/HOOK_SIDECAR_UNREACHABLE: the sidecar on .* did not answer within/);
    stub.answer = () => ({ ok: true, wiped: 1 });
    const wrong = await runHook(["pre-plan"], baseEnv());
    expect(wrong.stderr).toMatch(/^oci-cred-agent hook: HOOK_SIDECAR_PROTOCOL_ERROR: /);
    stub.answer = () => `${"x".repeat(20000)}\n`;
    const long = await runHook(["pre-plan"], baseEnv());
    expect(long.stderr).toMatch(
      /HOOK_SIDECAR_PROTOCOL_ERROR: the sidecar on .* answered a line longer than 16384 bytes/,
    );
  });
});

describe("start-up", () => {
  it("loads no daemon, control plane, crypto, logger or HTTP client", async () => {
    const record = join(work, "modules.txt");
    const node = fileURLToPath(new URL("../../node_modules/node/bin/node", import.meta.url));
    const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
    const hookImport = fileURLToPath(new URL("../fixtures/record-modules.mjs", import.meta.url));
    // Asynchronously: the stand-in sidecar answers from this process.
    const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        node,
        ["--import", hookImport, main, "hook", "pre-plan"],
        { env: { PATH: process.env["PATH"] ?? "", ...baseEnv(), RECORD_MODULES_FILE: record }, encoding: "utf8" },
        (error, _stdout, stderr) => resolve({ code: error === null ? 0 : Number(error.code), stderr }),
      );
    });
    expect([result.code, result.stderr]).toEqual([0, ""]);
    const modules = (await readFile(record, "utf8")).split("\n").filter(Boolean);
    expect(modules.some((m) => m.endsWith("/dist/hook/sidecar-client.js"))).toBe(true);
    const forbidden = modules.filter((m) =>
      /\/dist\/(daemon|control-plane|crypto|credentials|app|keys|registry|runner|execution|ops)\/|\/node_modules\/(pino|pino-pretty|@hpke|undici|prom-client|chokidar|@napi-rs|yaml)\//.test(
        m,
      ),
    );
    expect(forbidden).toEqual([]);
  });
});

beforeAll(async () => {
  // The stand-in's socket must be reachable by the hook only; the directory is the test's.
  await chmod(work, 0o700);
});
