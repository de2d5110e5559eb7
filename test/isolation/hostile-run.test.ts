/**
 * Issue 14's acceptance on this host: the attack of the issue, tried from a run's code on an
 * agent that runs as an unprivileged user (uid 10081, through util-linux's setpriv) with default
 * settings, against a real reference control plane and a real registry (Debian's docker-registry
 * with TLS and htpasswd, test/support/registry-fixture.ts).
 *
 * At --concurrency 2 two runs are live at once: a victim that holds in plan (on a FIFO in its
 * workspace, until the test writes to it) and a hostile run whose stand-in tofu
 * (test/fixtures/hostile-tofu.sh) tries, in init, what a red-team pass did: the agent's key
 * directory, key file and token file; the agent's process (/proc/<pid>/cmdline, environ, maps,
 * mem, a signal); the other run's credentials, workspace, tfvars and private HOME, and a .tf file
 * written into its workspace; a key file dated 2035 planted in the key directory; files outside
 * its run; a provider mirror in $HOME/.tofurc; and a double-forked, setsid'ed escapee with an
 * empty environment. Meanwhile every phase of both runs finds its own credentials where OpenTofu
 * looks (TF_CLI_CONFIG_FILE and the Docker-style file it names) and init pulls the module package
 * with them through skopeo. The same attack under --isolation none REACHES what the sandbox
 * denies: the probes are real.
 *
 * The same with the agent's key in the kernel keyring (`--key keyring:` where no Secret Service
 * runs), which a run may reach through the keyrings it inherits. Then the runner split
 * (`run --executor runner:PATH` and `oci-cred-agent runner`) on this host, agent and runner as two
 * users sharing the runner's group, the runner in a container-like view (bubblewrap as root stands
 * in for the runtime), two pairs for two runs at once. Last, failing closed: without bubblewrap,
 * and with user namespaces unavailable (a user namespace of the test's whose
 * user.max_user_namespaces is 0), the agent refuses to start (SANDBOX_UNAVAILABLE) and leases
 * nothing; with --isolation none it starts there and says so.
 *
 * Needs root (setpriv, unshare, chown, bwrap as the runner's runtime), bubblewrap, tini, skopeo
 * and perl; the CI runs as root. Run `npm run build` first.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_BIN, startLogged, type AgentProcess, type LogLine } from "../support/agent-process.js";
import { startControlPlane, type Harness } from "../support/control-plane-harness.js";
import { buildModulePackage, pushModulePackage, type ModulePackage } from "../support/oci-module-package.js";
import { startHtpasswdRegistry, type LocalRegistry } from "../support/registry-fixture.js";
import { liveProcessesWhere } from "../support/proc-scan.js";

const execFileAsync = promisify(execFile);

/** The agent's user, and the runner's (whose group the agent shares in the runner split). */
const AGENT_UID = 10081;
const RUNNER_UID = 10082;
/** The victim's pair in the runner split: users of its own. */
const VICTIM_AGENT_UID = 10083;
const VICTIM_RUNNER_UID = 10084;
/** A spare user that makes the user namespace the agent is refused in (ns root maps to it). */
const SPARE_UID = 10089;
const USERNS_LIMIT = fileURLToPath(new URL("../fixtures/userns-limit.sh", import.meta.url));
const SESSION_KEYRING = fileURLToPath(new URL("../fixtures/session-keyring.pl", import.meta.url));
/** The keyring service of the agents whose key is in the kernel keyring. */
const KEYRING_SERVICE = "oci-cred-agent-hostile-test";
const PATH = process.env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin";
const STANDIN = fileURLToPath(new URL("../fixtures/hostile-tofu.sh", import.meta.url));
const PUSHER_PASSWORD = `pusher-${randomBytes(12).toString("hex")}`;
const TENANT_PASSWORD = `tenant-${randomBytes(12).toString("hex")}`;
const REPO = "tenants/network";
const TAG = "1.0.0";

/** Every probe the hostile stand-in tries (each must print exactly one verdict). */
const PROBES = [
  "read-key-dir",
  "read-key-file",
  "read-token-file",
  "plant-future-key",
  "write-agent-home",
  "find-agent",
  "agent-cmdline",
  "agent-environ",
  "agent-maps",
  "agent-mem",
  "signal-agent",
  "list-other-workspaces",
  "read-other-credentials",
  "list-other-credentials",
  "read-other-workspace",
  "read-other-tfvars",
  "write-other-workspace",
  "read-other-home",
  "write-outside",
  "write-var-tmp",
] as const;

let base: string;
let registry: LocalRegistry;
let pkg: ModulePackage;
/** A world-readable copy of the registry's CA, shown to phases with --sandbox-ro-bind. */
let caDir: string;
const started: AgentProcess[] = [];
const harnesses: Harness[] = [];
const markers: string[] = [];
/** Keyring accounts made for the agent's user, forgotten after the tests. */
const keyringAccounts: string[] = [];

const asUser = (uid: number, groups: readonly number[]): string[] => [
  `--reuid=${uid}`,
  `--regid=${uid}`,
  `--groups=${groups.join(",")}`,
  "--",
];

/** Live processes (not zombies) with an argument containing `marker`, seen from here. */
function processesWith(marker: string): Promise<number[]> {
  return liveProcessesWhere((argv) => argv.some((a) => a.includes(marker)));
}

function newMarker(): string {
  const m = randomBytes(6).toString("hex");
  markers.push(m);
  return m;
}

interface AgentLayout {
  readonly dir: string;
  readonly home: string;
  readonly tmp: string;
  readonly keys: string;
  readonly keyFile: string;
  readonly tokenFile: string;
  readonly work: string;
  readonly creds: string;
  /** A world-writable directory (like /tmp) that nothing of a run should write to. */
  readonly outside: string;
  readonly tofu: string;
}

/** An unprivileged agent's files, as an operator lays them out: all its own, 0700 / 0600. */
async function agentLayout(name: string, h: Harness, uid: number, gid: number): Promise<AgentLayout> {
  const dir = join(base, name);
  await mkdir(dir, { mode: 0o755 });
  const own = async (path: string, mode: number): Promise<void> => {
    await chmod(path, mode);
    await chown(path, uid, gid);
  };
  const l = {
    dir,
    home: join(dir, "home"),
    tmp: join(dir, "tmp"),
    keys: join(dir, "keys"),
    tokenFile: join(dir, "agent.token"),
    work: join(dir, "work"),
    creds: join(dir, "work", "credentials"),
    outside: join(dir, "outside"),
    tofu: join(dir, "tofu"),
  };
  for (const d of [l.home, l.tmp, l.keys, l.work]) {
    await mkdir(d);
    await own(d, 0o700);
  }
  await mkdir(l.outside);
  await chmod(l.outside, 0o1777);
  execFileSync(AGENT_BIN, ["keygen", "--key", `file:${l.keys}`, "--rotate"], { env: { PATH }, stdio: "ignore" });
  const [keyName] = await readdir(l.keys);
  const keyFile = join(l.keys, keyName ?? "");
  await own(keyFile, 0o600);
  await writeFile(l.tokenFile, `${h.agentToken}\n`);
  await own(l.tokenFile, 0o600);
  await copyFile(STANDIN, l.tofu);
  await chmod(l.tofu, 0o755);
  return { ...l, keyFile };
}

/**
 * `oci-cred-agent run`'s arguments and environment with default settings but for what the test
 * needs: the stand-in tofu, two runs at once (unless `extra` says otherwise), a health listener on a free port, and the registry's
 * CA (for the agent's preflight, and shown to phases read-only). The key directory is given
 * through the environment, the token file on the command line.
 */
function agentCommand(
  l: AgentLayout,
  h: Harness,
  extra: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): { args: string[]; env: NodeJS.ProcessEnv } {
  return {
    args: [
      AGENT_BIN,
      "run",
      "--log-format",
      "json",
      "--control-plane-url",
      h.url,
      "--token-file",
      l.tokenFile,
      "--work-dir",
      l.work,
      "--tofu-bin",
      l.tofu,
      "--cancel-grace",
      "1s",
      "--listen",
      "127.0.0.1:0",
      "--sandbox-ro-bind",
      caDir,
      ...(extra.includes("--concurrency") ? [] : ["--concurrency", "2"]),
      ...extra,
    ],
    env: {
      PATH,
      HOME: l.home,
      TMPDIR: l.tmp,
      OCI_CRED_AGENT_KEY: `file:${l.keys}`,
      NODE_EXTRA_CA_CERTS: join(caDir, "ca.crt"),
      ...env,
    },
  };
}

/** The agent as `uid` (in `groups`, its own group by default). */
function launch(
  l: AgentLayout,
  h: Harness,
  options: {
    uid?: number;
    groups?: readonly number[];
    extra?: readonly string[];
    env?: NodeJS.ProcessEnv;
    /** A command the agent runs under (as its user). */
    wrapper?: readonly string[];
  } = {},
): AgentProcess {
  const uid = options.uid ?? AGENT_UID;
  const command = agentCommand(l, h, options.extra, options.env);
  const agent = startLogged(
    "/usr/bin/setpriv",
    [...asUser(uid, options.groups ?? [uid]), ...(options.wrapper ?? []), ...command.args],
    command.env,
  );
  started.push(agent);
  return agent;
}

/** The agent's exit, or a failure with its output when it still runs after `ms`. */
function exitedWithin(agent: AgentProcess, ms: number): Promise<{ code: number | null }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`still running after ${ms} ms:\n${agent.output().slice(-3000)}`));
    }, ms);
    void agent.exited.then((exit) => {
      clearTimeout(timer);
      resolve(exit);
    });
  });
}

async function stop(agent: AgentProcess): Promise<void> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.kill("SIGTERM");
    await agent.exited;
  }
}

async function controlPlane(): Promise<Harness> {
  const h = await startControlPlane();
  harnesses.push(h);
  await h.createIntegration({
    name: "tenant",
    registry_url: registry.url,
    username: "tenant",
    password: TENANT_PASSWORD,
    export_credentials: true,
  });
  return h;
}

/** standin.env: what the stand-in is told (values without quotes). */
function standinEnv(vars: Readonly<Record<string, string | number>>): string {
  const all = { REGISTRY: registry.host, REPO, TAG, CERT_DIR: caDir, ...vars };
  return Object.entries(all)
    .map(([k, v]) => `${k}='${v}'\n`)
    .join("");
}

function mainTf(): string {
  return `module "net" {\n  source = "oci://${registry.host}/${REPO}?tag=${TAG}"\n}\n`;
}

/** The stand-in's lines of one run, from the agent's phase_output log events (already redacted). */
function standinLines(agent: AgentProcess, runId: string): string[] {
  return agent.lines
    .filter((l) => l["run_id"] === runId && l["event"] === "phase_output")
    .map((l) => String(l["msg"]))
    .filter((m) => m.startsWith("standin: "))
    .map((m) => m.slice("standin: ".length));
}

/** `probe NAME VERDICT` lines, as NAME -> VERDICT (a probe printed twice or never is caught by the callers). */
function verdicts(lines: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of lines) {
    const m = /^probe (\S+) (\S+)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
  }
  return out;
}

const isEvent = (runId: string, event: string, extra: (l: LogLine) => boolean = () => true) => {
  return (l: LogLine): boolean => l["run_id"] === runId && l["event"] === event && extra(l);
};

/** Writes to the FIFO a holding victim reads (bounded: the write blocks until it reads). */
async function release(gate: string): Promise<void> {
  await execFileAsync("sh", ["-c", 'echo go >"$1"', "sh", gate], { timeout: 30_000 });
}

/** An agent that runs a tenant's runs, and where it keeps a run's private HOME. */
interface Side {
  readonly agent: AgentProcess;
  readonly h: Harness;
  readonly l: AgentLayout;
  readonly home: (runId: string) => string;
}

/** A sandboxed agent's side: the private HOMEs are under its work directory. */
function side(agent: AgentProcess, h: Harness, l: AgentLayout): Side {
  return { agent, h, l, home: (runId) => join(l.work, "homes", runId) };
}

interface Attack {
  readonly victimSide: Side;
  readonly hostileSide: Side;
  readonly marker: string;
  readonly victim: string;
  readonly hostile: string;
  /** A run after both, on the hostile run's side. */
  readonly report: string;
  /** The hostile side's key directory before the attack. */
  readonly keysBefore: string[];
  /** Escapees alive right after the hostile init phase ended. */
  readonly escapeesAfterPhase: number[];
  /** When (log time, ms) the victim held, the hostile run started and ended, and the victim went on. */
  readonly times: { held: number; hostileStarted: number; hostileFinished: number; released: number };
}

const logTime = (l: LogLine): number => Date.parse(String(l["time"]));

/**
 * The run's first log line that `predicate` matches; fails at once, with what the run's tofu
 * said, when the run finishes first.
 */
async function waitForRun(
  s: Side,
  runId: string,
  predicate: (l: LogLine) => boolean,
  timeoutMs = 60_000,
): Promise<LogLine> {
  const line = await s.agent.waitForLog(
    (l) => l["run_id"] === runId && (predicate(l) || l["event"] === "run_finished"),
    timeoutMs,
  );
  if (!predicate(line))
    throw new Error(
      `run ${runId} finished (${String(line["code"] ?? line["outcome"])}: ${String(line["msg"])}) first; its tofu said:\n${standinLines(s.agent, runId).join("\n")}`,
    );
  return line;
}

/**
 * The attack: a victim that holds in plan, a hostile run while it holds (on the same agent, or on
 * another one), then a report run where the hostile run ran. The hostile stand-in is told the
 * paths and pid of the agent it runs under (what its /proc/<pid>/cmdline and environ show) and
 * the victim's paths.
 */
async function attack(
  victimSide: Side,
  hostileSide: Side = victimSide,
  options: { keyring?: boolean; userns?: boolean } = {},
): Promise<Attack> {
  const marker = newMarker();
  const { l } = hostileSide;
  const keysBefore = (await readdir(l.keys)).sort();
  for (const s of [victimSide, hostileSide]) await s.agent.waitForLog((x) => x["event"] === "registered");
  const victim = await victimSide.h.createRun({
    "main.tf": mainTf(),
    "terraform.tfvars": `secret_note = "victim-${marker}"\n`,
    "standin.env": standinEnv({ ROLE: "victim" }),
  });
  const held = await waitForRun(victimSide, victim, (x) => x["msg"] === "standin: holding");
  const hostile = await hostileSide.h.createRun({
    "main.tf": mainTf(),
    "standin.env": standinEnv({
      ROLE: "hostile",
      TOKEN: marker,
      KEY_DIR: l.keys,
      KEY_FILE: l.keyFile,
      TOKEN_FILE: l.tokenFile,
      AGENT_HOME: l.home,
      AGENT_PID: hostileSide.agent.child.pid ?? 0,
      WORK_DIR: l.work,
      CREDS_DIR: l.creds,
      VICTIM_CREDS: join(victimSide.l.creds, victim),
      VICTIM_WORKSPACE: join(victimSide.l.work, "workspaces", victim),
      VICTIM_HOME: victimSide.home(victim),
      OUTSIDE_DIR: l.outside,
      ...(options.keyring === true ? { KEYRING_KEY: 1 } : {}),
      ...(options.userns === true ? { USERNS_PROBE: 1 } : {}),
    }),
  });
  const hostileStarted = await waitForRun(hostileSide, hostile, (x) => x["event"] === "phase_started");
  await hostileSide.agent.waitForLog(
    isEvent(hostile, "phase_finished", (x) => x["phase"] === "init"),
    60_000,
  );
  const escapeesAfterPhase = await processesWith(`escapee-${marker}`);
  const hostileFinished = await hostileSide.agent.waitForLog(isEvent(hostile, "run_finished"), 60_000);
  await release(join(victimSide.l.work, "workspaces", victim, "gate")).catch((error: unknown) => {
    throw new Error(
      `the victim was not holding any more (${String(error)}); its agent said:\n${victimSide.agent.output().slice(-4000)}`,
    );
  });
  const released = await waitForRun(victimSide, victim, (x) => x["msg"] === "standin: released");
  await victimSide.h.waitForStatus(victim, ["succeeded", "failed", "canceled"], 60_000);
  await hostileSide.h.waitForStatus(hostile, ["succeeded", "failed", "canceled"], 60_000);
  const report = await hostileSide.h.createRun({
    "main.tf": mainTf(),
    "standin.env": standinEnv({ ROLE: "report" }),
  });
  await hostileSide.h.waitForStatus(report, ["succeeded", "failed", "canceled"], 60_000);
  return {
    victimSide,
    hostileSide,
    marker,
    victim,
    hostile,
    report,
    keysBefore,
    escapeesAfterPhase,
    times: {
      held: logTime(held),
      hostileStarted: logTime(hostileStarted),
      hostileFinished: logTime(hostileFinished),
      released: logTime(released),
    },
  };
}

/** The status of a run at its side's control plane. */
const statusOf = (s: Side, runId: string): string | undefined => s.h.cp.store.runs.get(runId)?.status;

/** Files named after the marker in every place a run could plant one, seen from the host. */
function plantedOnHost(a: Attack): string[] {
  const places = [
    ...new Set(
      [a.victimSide.l, a.hostileSide.l].flatMap((l) => [
        l.outside,
        l.home,
        l.work,
        join(l.work, "workspaces"),
        l.creds,
        l.keys,
        l.dir,
      ]),
    ),
    "/tmp",
    "/var/tmp",
    "/dev/shm",
  ];
  return places.map((p) => join(p, `planted-${a.marker}`)).filter((p) => existsSync(p));
}

/** The checks every isolated deployment must pass, on an attack's outcome. */
function expectContained(a: Attack, probes: readonly string[] = PROBES): void {
  const hostileLines = standinLines(a.hostileSide.agent, a.hostile);
  const text = (side: Side, id: string): string => standinLines(side.agent, id).join("\n");
  // Both runs were live at once, and every run succeeded.
  expect(a.times.held).toBeLessThanOrEqual(a.times.hostileStarted);
  expect(a.times.hostileFinished).toBeLessThanOrEqual(a.times.released);
  expect(statusOf(a.victimSide, a.victim), text(a.victimSide, a.victim)).toBe("succeeded");
  expect(statusOf(a.hostileSide, a.hostile), text(a.hostileSide, a.hostile)).toBe("succeeded");
  expect(statusOf(a.hostileSide, a.report), text(a.hostileSide, a.report)).toBe("succeeded");
  // Every phase found its own credentials where OpenTofu looks, and init pulled with them.
  for (const [s, id] of [
    [a.victimSide, a.victim],
    [a.hostileSide, a.hostile],
    [a.hostileSide, a.report],
  ] as const) {
    const lines = standinLines(s.agent, id);
    const own = lines.filter((x) => x.startsWith("own-credentials "));
    expect(own, lines.join("\n")).toHaveLength(3);
    for (const line of own) {
      expect(line).toMatch(/^own-credentials ok /);
      // The run's own credential directory, nobody else's.
      expect(line).toContain(`cli-config=${join(s.l.creds, id)}/`);
      expect(line).toContain(`docker-config=${join(s.l.creds, id)}/`);
    }
    const pulls = lines.filter((x) => x.startsWith("pull "));
    expect(pulls, lines.join("\n")).toHaveLength(1);
    expect(pulls[0]).toMatch(/^pull ok /);
    expect(pulls[0]).toContain(pkg.zipDigest.replace("sha256:", ""));
  }
  // Every probe was tried once, and denied.
  const found = verdicts(hostileLines);
  expect([...found.keys()].sort(), hostileLines.join("\n")).toEqual([...probes].sort());
  const reached = [...found]
    .filter(([, v]) => v.length !== 1 || v[0] !== "denied")
    .map(([k, v]) => `${k} ${v.join(",")}`);
  expect(reached, hostileLines.join("\n")).toEqual([]);
  // Nothing it wrote arrived anywhere beyond its run.
  expect(plantedOnHost(a)).toEqual([]);
  expect(hostileLines).toContain("plant home-tofurc written");
  for (const l of [a.victimSide.l, a.hostileSide.l]) expect(existsSync(join(l.home, ".tofurc"))).toBe(false);
  expect(standinLines(a.victimSide.agent, a.victim)).toContain("tf-files main.tf ");
  // Its escapee died with its phase.
  expect(hostileLines).toContain("escapee started");
  expect(a.escapeesAfterPhase).toEqual([]);
  // A later run uses nothing of the hostile run's $HOME/.tofurc.
  const report = standinLines(a.hostileSide.agent, a.report);
  expect(
    report.filter((x) => x.startsWith("home has ")),
    report.join("\n"),
  ).toEqual(Array(3).fill("home has no .tofurc"));
  expect(report).toContain("cli-config names no mirror");
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), "oca-hostile-"));
  await chmod(base, 0o755);
  registry = await startHtpasswdRegistry({ pusher: PUSHER_PASSWORD, tenant: TENANT_PASSWORD });
  pkg = await buildModulePackage({ layoutDir: join(base, "module-package"), tag: TAG });
  await pushModulePackage(pkg, {
    host: registry.host,
    repository: REPO,
    certDir: registry.certDir,
    username: "pusher",
    password: PUSHER_PASSWORD,
  });
  caDir = join(base, "ca");
  await mkdir(caDir, { mode: 0o755 });
  await copyFile(registry.caFile, join(caDir, "ca.crt"));
  await chmod(join(caDir, "ca.crt"), 0o644);
}, 120_000);

/** The users this file runs processes as. */
const TEST_UIDS = () => new Set([AGENT_UID, RUNNER_UID, VICTIM_AGENT_UID, VICTIM_RUNNER_UID, SPARE_UID]);

/** Live processes of the test's users (whatever a failed test left: agents, runners, stand-ins). */
async function testUserProcesses(): Promise<number[]> {
  const uids = TEST_UIDS();
  const found: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const status = await readFile(`/proc/${name}/status`, "utf8").catch(() => "");
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    if (uids.has(uid) && !/^State:\s+Z/m.test(status)) found.push(Number(name));
  }
  return found;
}

afterAll(async () => {
  // SIGKILL: a holding victim would make SIGTERM wait for the drain. A sandbox dies with its agent.
  for (const p of started) if (p.child.exitCode === null && p.child.signalCode === null) p.kill("SIGKILL");
  await Promise.all(started.map((p) => p.exited));
  for (const pid of await testUserProcesses()) process.kill(pid, "SIGKILL");
  for (const h of harnesses) await h.close();
  // Whatever a failed test (or --isolation none) left running or planted.
  for (const m of markers) {
    for (const pid of await processesWith(`escapee-${m}`)) process.kill(pid, "SIGKILL");
    for (const dir of ["/tmp", "/var/tmp", "/dev/shm"]) await rm(join(dir, `planted-${m}`), { force: true });
  }
  for (const account of keyringAccounts)
    execFileSync(
      "setpriv",
      [
        ...asUser(AGENT_UID, [AGENT_UID]),
        "perl",
        SESSION_KEYRING,
        "exec",
        "perl",
        SESSION_KEYRING,
        "forget",
        `keyring:${account}@${KEYRING_SERVICE}`,
      ],
      { env: { PATH }, stdio: "ignore" },
    );
  await registry.stop();
  await rm(base, { recursive: true, force: true });
}, 60_000);

describe("the sandbox (default settings): a hostile run at concurrency 2, agent as uid 10081", () => {
  it("every probe is denied, each phase reads its own credentials and pulls with them, the runs succeed, the escapee dies with its phase", async () => {
    const h = await controlPlane();
    const l = await agentLayout("sandbox", h, AGENT_UID, AGENT_UID);
    const agent = launch(l, h);
    const s = side(agent, h, l);
    const a = await attack(s, s, { userns: true });
    expect(agent.lines.find((x) => x["event"] === "isolation")).toMatchObject({ isolation: "sandbox", level: "info" });
    // The sandbox's system call filter also refuses a nested user namespace.
    expectContained(a, [...PROBES, "nested-user-namespace"]);
    expect((await readdir(l.keys)).sort()).toEqual(a.keysBefore);
    expect(await processesWith(`escapee-${a.marker}`)).toEqual([]);
    // Every run's private HOME and TMPDIR, workspace and credentials are gone.
    expect(await readdir(join(l.work, "homes"))).toEqual([]);
    expect(await readdir(join(l.work, "workspaces"))).toEqual([]);
    expect(await readdir(l.creds)).toEqual([]);
  }, 180_000);
});

describe("--isolation none: the same attack reaches what the sandbox denies (the probes are real)", () => {
  it("every probe reaches, files land on the host, and the escapee outlives its phase; the agent said so at start", async () => {
    const h = await controlPlane();
    const l = await agentLayout("none", h, AGENT_UID, AGENT_UID);
    const agent = launch(l, h, { extra: ["--isolation", "none"] });
    // Without a sandbox the phases' HOME is the agent's own.
    const s = { agent, h, l, home: () => l.home };
    const a = await attack(s, s, { userns: true });
    expect(agent.lines.find((x) => x["event"] === "isolation")).toMatchObject({ isolation: "none", level: "warn" });
    const lines = standinLines(agent, a.hostile);
    const found = verdicts(lines);
    expect([...found.keys()].sort(), lines.join("\n")).toEqual([...PROBES, "nested-user-namespace"].sort());
    const denied = [...found]
      .filter(([, v]) => v.length !== 1 || v[0] !== "REACHED")
      .map(([k, v]) => `${k} ${v.join(",")}`);
    expect(denied, lines.join("\n")).toEqual([]);
    expect(plantedOnHost(a).sort()).toEqual(
      [l.outside, l.home, l.work, join(l.work, "workspaces"), l.creds, "/tmp", "/var/tmp", "/dev/shm"]
        .map((p) => join(p, `planted-${a.marker}`))
        .sort(),
    );
    expect(existsSync(join(l.home, ".tofurc"))).toBe(true);
    expect(a.escapeesAfterPhase).toHaveLength(1);
    expect(standinLines(agent, a.victim)).toContain(`tf-files evil-${a.marker}.tf main.tf `);
    // The agent reads no OpenTofu CLI configuration from its HOME: even here, a later run's names no mirror.
    expect(standinLines(agent, a.report)).toContain("cli-config names no mirror");
  }, 180_000);
});

describe("an agent whose key is in the kernel keyring (--key keyring: where no Secret Service runs: the keyutils store)", () => {
  /**
   * The agent as uid 10081 with its key in the kernel keyring, in a session keyring of its own
   * (as systemd's KeyringMode=private gives a service); the hostile run also walks the keyrings
   * it inherits for the key.
   */
  async function keyringAttack(name: string, extra: readonly string[] = []): Promise<Attack> {
    const h = await controlPlane();
    const l = await agentLayout(name, h, AGENT_UID, AGENT_UID);
    const account = `agent-${randomBytes(6).toString("hex")}`;
    keyringAccounts.push(account);
    const key = `keyring:${KEYRING_SERVICE}/${account}`;
    const inOwnSession = ["perl", SESSION_KEYRING, "exec"];
    execFileSync("setpriv", [...asUser(AGENT_UID, [AGENT_UID]), ...inOwnSession, AGENT_BIN, "keygen", "--key", key], {
      env: { PATH, HOME: l.home },
      stdio: "ignore",
    });
    const agent = launch(l, h, {
      extra,
      wrapper: inOwnSession,
      // No Secret Service to reach: the keyring store falls back to the kernel's.
      env: { OCI_CRED_AGENT_KEY: key, DBUS_SESSION_BUS_ADDRESS: undefined },
    });
    const s = extra.includes("none") ? { agent, h, l, home: () => l.home } : side(agent, h, l);
    const a = await attack(s, s, { keyring: true });
    expect(agent.lines.find((x) => x["event"] === "keys_loaded")).toMatchObject({ source: key });
    return a;
  }

  it("under the sandbox a run cannot read the key through the keyrings it inherits, and the rest holds", async () => {
    const a = await keyringAttack("keyring-sandbox");
    expectContained(a, [...PROBES, "read-keyring-key"]);
  }, 180_000);

  it("under --isolation none the same probe reads it (the probe is real)", async () => {
    const a = await keyringAttack("keyring-none", ["--isolation", "none"]);
    expect(standinLines(a.hostileSide.agent, a.hostile)).toContain("probe read-keyring-key REACHED");
  }, 180_000);
});

describe("the runner split on this host: agent and runner as two users sharing the runner's group", () => {
  /**
   * One tenant's pair: an agent (uid `agentUid`, and in the runner's group) with --executor
   * runner:SOCKET, and its runner (uid and group `runnerUid`). The runner runs as in its container:
   * in PID, IPC and UTS namespaces of its own under tini (--pid-namespace), on a read-only view of
   * the system where only its volumes are writable (the work directory with the workspaces, its
   * socket's directory, its state directory) and the credentials read-only; bubblewrap, run as
   * root here, stands in for the container runtime. A runner runs one run at a time (the agent
   * refuses --concurrency above 1 with it), so two runs at once take two pairs, each with users of
   * its own.
   */
  async function pair(name: string, h: Harness, agentUid: number, runnerUid: number): Promise<Side> {
    const l = await agentLayout(name, h, agentUid, agentUid);
    // As the pod's volume: the work directory is the agent's, and the runner's group may enter it.
    await chown(l.work, agentUid, runnerUid);
    await chmod(l.work, 0o2750);
    const socketDir = join(l.dir, "socket");
    const state = join(l.dir, "runner-state");
    await mkdir(socketDir, { mode: 0o750 });
    await chown(socketDir, runnerUid, runnerUid);
    await mkdir(state, { mode: 0o700 });
    await chown(state, runnerUid, runnerUid);
    const socket = join(socketDir, "runner.sock");
    // The agent makes the credentials directory at its start; the runner's view needs it now.
    await mkdir(l.creds, { mode: 0o700 });
    await chown(l.creds, agentUid, runnerUid);
    const runner = startLogged(
      "bwrap",
      [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--as-pid-1",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        ...[l.work, socketDir, state].flatMap((d) => ["--bind", d, d]),
        "--ro-bind",
        l.creds,
        l.creds,
        "--",
        "tini",
        "--",
        "setpriv",
        ...asUser(runnerUid, [runnerUid]),
        AGENT_BIN,
        "runner",
        "--socket",
        socket,
        "--work-dir",
        l.work,
        "--credentials-dir",
        l.creds,
        "--state-dir",
        state,
        "--tofu-bin",
        l.tofu,
        "--pid-namespace",
        // This host has no Yama (the refusal itself is tested in test/runner/).
        "--allow-ptrace",
      ],
      { PATH },
    );
    started.push(runner);
    await runner.waitForLog((x) => x["event"] === "runner_listening");
    const agent = launch(l, h, {
      uid: agentUid,
      groups: [agentUid, runnerUid],
      extra: ["--executor", `runner:${socket}`, "--concurrency", "1"],
    });
    return { agent, h, l, home: (runId) => join(state, `run-${runId}`, "home") };
  }

  it("a victim on one pair, a hostile run on another at the same time: every probe is denied, each phase reads its own credentials and pulls with them, the runs succeed, the escapee dies with its phase", async () => {
    const victimSide = await pair("runner-victim", await controlPlane(), VICTIM_AGENT_UID, VICTIM_RUNNER_UID);
    const hostileSide = await pair("runner-hostile", await controlPlane(), AGENT_UID, RUNNER_UID);
    const a = await attack(victimSide, hostileSide);
    for (const s of [victimSide, hostileSide])
      expect(s.agent.lines.find((x) => x["event"] === "isolation")).toMatchObject({ isolation: "runner" });
    expectContained(a);
    // The agents removed every workspace and credential directory, the runners every private HOME.
    for (const s of [victimSide, hostileSide]) {
      expect(await readdir(join(s.l.work, "workspaces"))).toEqual([]);
      expect(await readdir(s.l.creds)).toEqual([]);
      expect(await readdir(join(s.l.dir, "runner-state"))).toEqual([]);
    }
  }, 180_000);
});

describe("fail closed: where the sandbox cannot be set up, the agent refuses to start and leases nothing", () => {
  /** Exit 1 with SANDBOX_UNAVAILABLE and `why`; the queued run stays queued and no agent registered. */
  async function expectRefused(agent: AgentProcess, h: Harness, queued: string, why: string): Promise<void> {
    expect((await exitedWithin(agent, 30_000)).code, agent.output()).toBe(1);
    expect(agent.output()).toContain("oci-cred-agent: error SANDBOX_UNAVAILABLE: runs cannot be isolated on this host");
    expect(agent.output()).toContain(why);
    // The message says how to fix it.
    expect(agent.output()).toContain("apt-get install bubblewrap");
    expect(agent.output()).toContain("--isolation none");
    expect(agent.lines.some((x) => x["event"] === "registered" || x["event"] === "run_leased")).toBe(false);
    expect(h.cp.store.runs.get(queued)?.status).toBe("queued");
    expect(h.cp.store.agents.size).toBe(0);
  }

  it("without bubblewrap on PATH: SANDBOX_UNAVAILABLE, exit 1", async () => {
    const h = await controlPlane();
    const l = await agentLayout("no-bwrap", h, AGENT_UID, AGENT_UID);
    // What the launcher needs (readlink, dirname) and nothing else.
    const bin = join(l.dir, "bin");
    await mkdir(bin, { mode: 0o755 });
    for (const tool of ["readlink", "dirname"]) await symlink(`/usr/bin/${tool}`, join(bin, tool));
    const queued = await h.createRun({ "main.tf": mainTf(), "standin.env": standinEnv({ ROLE: "report" }) });
    const agent = launch(l, h, { env: { PATH: bin } });
    await expectRefused(agent, h, queued, "bubblewrap (bwrap) is not on PATH");
  }, 60_000);

  /**
   * The agent as uid 10081 in a user namespace (made by a spare user, 10089) whose
   * user.max_user_namespaces is `max`: with 0, no user namespace can be created there, as on a
   * host where they are off (test/fixtures/userns-limit.sh).
   */
  async function inUserns(
    l: AgentLayout,
    h: Harness,
    max: number,
    extra: readonly string[] = [],
  ): Promise<AgentProcess> {
    const command = agentCommand(l, h, extra, { USERNS_MAX: String(max) });
    const agent = startLogged(
      "/usr/bin/setpriv",
      [...asUser(SPARE_UID, [SPARE_UID]), "unshare", "--user", "--", USERNS_LIMIT, String(AGENT_UID), ...command.args],
      command.env,
    );
    started.push(agent);
    await agent.waitForLog((x) => x["unparsed"] === "userns-ready");
    const map = `0 ${SPARE_UID} 1\n${AGENT_UID} ${AGENT_UID} 1\n`;
    await writeFile(`/proc/${agent.child.pid ?? 0}/uid_map`, map);
    await writeFile(`/proc/${agent.child.pid ?? 0}/gid_map`, map);
    agent.child.stdin.write("go\n");
    return agent;
  }

  it("with user namespaces unavailable: SANDBOX_UNAVAILABLE, exit 1; the same agent with the limit above 0 starts in the sandbox", async () => {
    const h = await controlPlane();
    const l = await agentLayout("no-userns", h, AGENT_UID, AGENT_UID);
    const queued = await h.createRun({ "main.tf": mainTf(), "standin.env": standinEnv({ ROLE: "report" }) });
    const refused = await inUserns(l, h, 0);
    await expectRefused(refused, h, queued, `bubblewrap said "bwrap: Creating new namespace failed`);
    // The wrapper itself is not what stops it.
    const agent = await inUserns(l, h, 16);
    expect(await agent.waitForLog((x) => x["event"] === "isolation")).toMatchObject({ isolation: "sandbox" });
    await agent.waitForLog((x) => x["event"] === "registered");
    await h.waitForStatus(queued, ["succeeded", "failed", "canceled"], 60_000);
    expect(h.cp.store.runs.get(queued)?.status, agent.output()).toBe("succeeded");
    await stop(agent);
  }, 120_000);

  it("--isolation none starts there all the same, and says so at warn", async () => {
    const h = await controlPlane();
    const l = await agentLayout("no-userns-none", h, AGENT_UID, AGENT_UID);
    const agent = await inUserns(l, h, 0, ["--isolation", "none"]);
    const said = await agent.waitForLog((x) => x["event"] === "isolation");
    expect(said).toMatchObject({ isolation: "none", level: "warn" });
    expect(String(said["msg"])).toContain("reach everything its user can");
    await agent.waitForLog((x) => x["event"] === "registered");
    await stop(agent);
  }, 60_000);
});
