/**
 * `npm run bench` (`-- --quick` for smaller counts): pickup latency, throughput, floor and
 * overhead, scaling, memory, start-up, the `skopeo login` hook users write today, and the three
 * ways phases run (sandbox, runner, `--isolation none`) side by side, all in one run on this
 * machine against the reference control plane over loopback HTTP. The agents run as shipped:
 * phases in the sandbox unless a section says otherwise. Prints a table and writes
 * bench/results/latest.json (or `--out FILE`). Benchmarks report figures; they assert nothing.
 */
import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { ControlPlane } from "../src/control-plane/server.js";
import type { RunRecord } from "../src/control-plane/store.js";
import type { AgentPrivateKey } from "../src/crypto/agent-key.js";
import {
  createControlPlane,
  generatePrivateKeyPem,
  materializeRun,
  openChallenge,
  parsePrivateKeyPem,
  publicKeyDoc,
  realFs,
  sealBundle,
  SqliteStorage,
  wipeRunDir,
} from "./support/shipped.js";
import { runsCreatedPerSecond } from "./support/storage-bench.js";
import { startLocalRegistry } from "./support/local-registry.js";

const quick = process.argv.includes("--quick");
const outIndex = process.argv.indexOf("--out");
const outArg = outIndex > 0 ? process.argv[outIndex + 1] : undefined;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const AGENT_BIN = join(ROOT, "bin", "oci-cred-agent");
const TMPFS = "/dev/shm";
const SIZES = quick
  ? {
      pickup: 200,
      pickupDisk: 100,
      polled: 8,
      c1: 100,
      c8: 300,
      c64: 600,
      floor: 300,
      scaleReps: 2,
      memoryRuns: 1000,
      versionReps: 5,
      firstLeaseReps: 3,
      loginReps: 2,
      isoWarm: 5,
      isoRuns: 60,
      isoRounds: 2,
      isoC64: 300,
      storageRuns: 500,
    }
  : {
      pickup: 1000,
      pickupDisk: 300,
      polled: 20,
      c1: 300,
      c8: 1500,
      c64: 4000,
      floor: 2000,
      scaleReps: 5,
      memoryRuns: 10_000,
      versionReps: 15,
      firstLeaseReps: 5,
      loginReps: 5,
      isoWarm: 20,
      isoRuns: 300,
      isoRounds: 6,
      isoC64: 2000,
      storageRuns: 2000,
    };

// ---------- small helpers ----------

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}
const median = (v: readonly number[]): number => percentile(v, 50);
const mean = (v: readonly number[]): number => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
const round = (n: number, d = 2): number => Number(n.toFixed(d));

function rssMb(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, "utf8").then((s) => Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? "0") / 1024);
}

interface AgentProc {
  child: ChildProcessWithoutNullStreams;
  lines: Record<string, unknown>[];
  waitFor(pred: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

function startAgent(cpUrl: string, dir: string, extra: string[]): AgentProc {
  const child = spawn(
    AGENT_BIN,
    [
      "run",
      "--control-plane-url",
      cpUrl,
      "--token-file",
      join(dir, "token"),
      "--key-file",
      join(dir, "agent.key"),
      "--log-format",
      "json",
      "--listen",
      "off",
      "--tofu-bin",
      "/bin/true",
      "--no-preflight",
      ...extra,
    ],
    { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, HOME: dir } },
  );
  const lines: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] =
    [];
  createInterface({ input: child.stdout }).on("line", (text) => {
    let l: Record<string, unknown>;
    try {
      l = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    const e = l["event"];
    if (
      e === "credentials_ready" ||
      e === "credentials_wiped" ||
      e === "registered" ||
      e === "phase_finished" ||
      e === "run_finished"
    )
      lines.push(l);
    for (const w of [...waiters])
      if (w.pred(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
  });
  child.stderr.resume();
  return {
    child,
    lines,
    waitFor: (pred) => new Promise((resolve) => waiters.push({ pred, resolve })),
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

function waitForRuns(cp: ControlPlane, ids: Set<string>): Promise<number> {
  return new Promise((resolve) => {
    let left = ids.size;
    const onChange = (run: RunRecord): void => {
      if (ids.has(run.id) && (run.status === "succeeded" || run.status === "failed" || run.status === "canceled")) {
        ids.delete(run.id);
        if (--left === 0) {
          cp.store.off("run-changed", onChange);
          resolve(performance.now());
        }
      }
    };
    cp.store.on("run-changed", onChange);
  });
}

interface RunnerProc {
  stop(): Promise<void>;
}

/**
 * An `oci-cred-agent runner` on `socket`, as the benchmark's own user (the pod runs it as another
 * user; the cost is the same). `--allow-ptrace`: the ptrace check is a start-up check that costs
 * nothing per phase, and hosts without Yama would refuse to start it. Outside a PID namespace of
 * its own the runner finds what a phase left running through /proc after each phase, as it does
 * on a host; in the pod (`--pid-namespace`) it kills its namespace instead.
 */
async function startRunner(socket: string, workDir: string, stateDir: string, home: string): Promise<RunnerProc> {
  const child = spawn(
    AGENT_BIN,
    [
      "runner",
      "--socket",
      socket,
      "--work-dir",
      workDir,
      "--credentials-dir",
      join(workDir, "credentials"),
      "--state-dir",
      stateDir,
      "--tofu-bin",
      "/bin/true",
      "--allow-ptrace",
      "--log-format",
      "json",
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HOME: home } },
  );
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-2000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (text) => {
      if (text.includes('"runner_listening"')) resolve();
    });
    void exited.then(() => {
      reject(new Error(`the runner exited before it listened: ${stderr}`));
    });
  });
  return {
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = {};
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), "oca-bench-"));
  const shmDir = await mkdtemp(join(TMPFS, "oca-bench-"));
  await writeFile(join(dir, "agent.key"), generatePrivateKeyPem(), { mode: 0o600 });
  const agentKey = await parsePrivateKeyPem(await readFile(join(dir, "agent.key"), "utf8"), "bench key");
  const adminToken = randomBytes(24).toString("base64url");
  const agentToken = randomBytes(24).toString("base64url");
  await writeFile(join(dir, "token"), agentToken, { mode: 0o600 });
  /** A reference control plane on loopback with the benchmark's integration. */
  async function startControlPlane(): Promise<{ cp: ControlPlane; url: string }> {
    const plane = await createControlPlane({
      adminToken,
      agentToken,
      leaseTtlSeconds: 120,
      agentApi: { heartbeatIntervalSeconds: 30, pollWaitSeconds: 30 },
      probe: () => Promise.resolve({ warnings: [] }),
    });
    const listening = await plane.listen("127.0.0.1", 0);
    plane.store.integrations.set("int-bench", {
      id: "int-bench",
      name: "bench",
      registry_url: "https://registry.bench.test",
      username: "bench",
      password: `bench-${randomBytes(8).toString("hex")}`,
      credential_helper: null,
      export_credentials: true,
      created_at: new Date().toISOString(),
      updated_at: new Date().toISOString(),
    });
    return { cp: plane, url: listening.url };
  }
  const { cp, url } = await startControlPlane();
  const cfg = join(dir, "cfg");
  await mkdir(cfg);
  await writeFile(join(cfg, "main.tf"), 'module "m" {\n  source = "oci://registry.bench.test/team/mod?tag=1"\n}\n');
  const archive = execFileSync("tar", ["czf", "-", "-C", cfg, "."]);
  const queue = (): string => cp.store.createRun(archive, ["init", "plan", "apply"]).id;

  // ---------- 6. start-up: --version, and process start to first lease request ----------
  const versionMs: number[] = [];
  for (let i = 0; i < SIZES.versionReps; i++) {
    const t0 = performance.now();
    spawnSync(AGENT_BIN, ["--version"]);
    versionMs.push(performance.now() - t0);
  }
  const firstLeaseMs: number[] = [];
  for (let i = 0; i < SIZES.firstLeaseReps; i++) {
    const seen = new Promise<number>((resolve) => {
      const onRequest = (req: { url?: string }): void => {
        if (req.url?.endsWith("/leases")) {
          cp.server.off("request", onRequest);
          resolve(performance.now());
        }
      };
      cp.server.on("request", onRequest);
    });
    const t0 = performance.now();
    const a = startAgent(url, dir, ["--work-dir", join(shmDir, `startup-${i}`)]);
    firstLeaseMs.push((await seen) - t0);
    await a.stop();
  }
  results["startup_ms"] = { version: round(median(versionMs)), first_lease: round(median(firstLeaseMs)) };

  // ---------- 1. pickup latency (tmpfs, then disk) and 5. memory ----------
  async function pickupSeries(
    workDir: string,
    n: number,
  ): Promise<{ pickups: number[]; materialize: number[]; wipe: number[]; agent: AgentProc }> {
    const agent = startAgent(url, dir, ["--work-dir", workDir, "--concurrency", "1"]);
    await agent.waitFor((l) => l["event"] === "registered");
    for (let i = 0; i < n; i++) {
      const ids = new Set([queue()]);
      await waitForRuns(cp, ids);
    }
    const ready = agent.lines.filter((l) => l["event"] === "credentials_ready");
    const wiped = agent.lines.filter((l) => l["event"] === "credentials_wiped");
    return {
      pickups: ready.map((l) => Number(l["pickup_ms"])),
      materialize: ready.map((l) => Number(l["duration_ms"])),
      wipe: wiped.map((l) => Number(l["duration_ms"])),
      agent,
    };
  }
  const tmpfsSeries = await pickupSeries(join(shmDir, "pickup"), SIZES.pickup);
  await tmpfsSeries.agent.stop();
  results["pickup_ms"] = {
    p50: percentile(tmpfsSeries.pickups, 50),
    p99: percentile(tmpfsSeries.pickups, 99),
    max: Math.max(...tmpfsSeries.pickups),
    runs: tmpfsSeries.pickups.length,
    resolution_ms: 1,
  };
  const diskSeries = await pickupSeries(join(dir, "pickup-disk"), SIZES.pickupDisk);
  await diskSeries.agent.stop();
  results["pickup_disk_ms"] = {
    p50: percentile(diskSeries.pickups, 50),
    p99: percentile(diskSeries.pickups, 99),
    max: Math.max(...diskSeries.pickups),
    runs: diskSeries.pickups.length,
  };
  results["materialize_in_daemon_ms"] = {
    tmpfs_mean: round(mean(tmpfsSeries.materialize), 3),
    disk_mean: round(mean(diskSeries.materialize), 3),
  };

  // The alternative: a client that polls every 3 s (GitLab Runner's check_interval default). It
  // enrolls as an agent does: the pool token, then the answer to the challenge for a credential.
  const pollerKey = await parsePrivateKeyPem(generatePrivateKeyPem(), "poller");
  const reg = await fetch(`${url}/api/agent/v1/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${agentToken}`, "content-type": "application/json" },
    body: JSON.stringify({
      name: "interval-poller",
      version: "bench",
      concurrency: 64,
      public_keys: [publicKeyDoc(pollerKey.publicKey)],
    }),
  });
  const enrolled = (await reg.json()) as { agent_id: string; challenge_id: string; challenge: string };
  const pollerId = enrolled.agent_id;
  const answer = await openChallenge(enrolled.challenge, {
    keys: new Map([[pollerKey.kid, pollerKey]]),
    agentId: pollerId,
    challengeId: enrolled.challenge_id,
    nowMs: Date.now(),
    clockSkewSeconds: 120,
  });
  const granted = await fetch(`${url}/api/agent/v1/agents/${pollerId}/credential`, {
    method: "POST",
    headers: { authorization: `Bearer ${agentToken}`, "content-type": "application/json" },
    body: JSON.stringify({ challenge_id: enrolled.challenge_id, answer }),
  });
  const pollerCredential = ((await granted.json()) as { credential: string }).credential;
  const polled: number[] = [];
  const queuedAt = new Map<string, number>();
  const pollerStop = { stop: false };
  const poller = (async () => {
    while (!pollerStop.stop) {
      await new Promise((r) => setTimeout(r, 3000));
      const res = await fetch(`${url}/api/agent/v1/agents/${pollerId}/leases`, {
        method: "POST",
        headers: { authorization: `Bearer ${pollerCredential}`, "content-type": "application/json" },
        body: JSON.stringify({ max: 1000, wait_seconds: 0 }),
      });
      const now = performance.now();
      for (const lease of ((await res.json()) as { leases: { lease_id: string; run: { id: string } }[] }).leases) {
        const q = queuedAt.get(lease.run.id);
        if (q !== undefined) polled.push(now - q);
        await fetch(`${url}/api/agent/v1/leases/${lease.lease_id}/complete`, {
          method: "POST",
          headers: { authorization: `Bearer ${pollerCredential}`, "content-type": "application/json" },
          body: JSON.stringify({ outcome: "succeeded", phases: [], credentials_wiped: true }),
        });
      }
    }
  })();
  for (let i = 0; i < SIZES.polled; i++) {
    await new Promise((r) => setTimeout(r, Math.random() * 1500 + 300));
    queuedAt.set(queue(), performance.now());
  }
  while (polled.length < SIZES.polled) await new Promise((r) => setTimeout(r, 200));
  pollerStop.stop = true;
  await poller;
  results["interval_poll_pickup_ms"] = { p50: round(median(polled)), runs: polled.length, interval_ms: 3000 };
  const p50 = (results["pickup_ms"] as { p50: number }).p50;
  results["pickup_speedup_vs_interval_poll"] = round(median(polled) / Math.max(p50, 1), 1);

  // ---------- 2. throughput at concurrency 1, 8, 64 (and memory after many runs) ----------
  const throughput: Record<string, number> = {};
  const daemonStepMs: number[] = [];
  for (const [label, c, n] of [
    ["c1", 1, SIZES.c1],
    ["c8", 8, SIZES.c8],
    ["c64", 64, SIZES.c64],
  ] as const) {
    const agent = startAgent(url, dir, ["--work-dir", join(shmDir, `tp-${label}`), "--concurrency", String(c)]);
    await agent.waitFor((l) => l["event"] === "registered");
    const ids = new Set<string>();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) ids.add(queue());
    const t1 = await waitForRuns(cp, ids);
    throughput[label] = round(n / ((t1 - t0) / 1000), 1);
    if (label === "c1") {
      const ready = agent.lines.filter((l) => l["event"] === "credentials_ready").map((l) => Number(l["duration_ms"]));
      const wiped = agent.lines.filter((l) => l["event"] === "credentials_wiped").map((l) => Number(l["duration_ms"]));
      daemonStepMs.push(mean(ready) + mean(wiped));
    }
    await agent.stop();
  }
  results["throughput_runs_per_s"] = throughput;

  // ---------- 8. isolation: the sandbox, the runner and none, side by side ----------
  // Each way has its own control plane and agent (at concurrency 1: a runner runs one phase at a
  // time), /bin/true as tofu. The ways take turns, in rounds, the order rotated each round, so
  // that the machine's drift falls on all of them alike. In each turn:
  //   - three-phase runs queued at once: wall time per run (lease to completion);
  //   - one-phase and three-phase runs queued alternately: what a phase adds to a run is half
  //     the difference of their mean durations in the agent (run_finished: everything a phase
  //     costs, starting it, the sandbox or the socket exchange and the runner's sweep for
  //     leftovers, shipping its empty output);
  // and the phase's process alone, as its executor measures it (start to exit: phase_finished).
  // Then 64 at once for the sandbox and none, taking turns the same way.
  type Mode = "sandbox" | "runner" | "none";
  type Phases = ("init" | "plan" | "apply")[];
  const ONE: Phases = ["init"];
  const THREE: Phases = ["init", "plan", "apply"];
  interface Way {
    mode: Mode;
    cp: ControlPlane;
    url: string;
    base: string;
    agent?: AgentProc | undefined;
    runner?: RunnerProc | undefined;
    threeWallMs: number;
    threeRuns: number;
    threeIds: string[];
    oneIds: string[];
    mixedThreeIds: string[];
    c64WallMs: number;
    c64Runs: number;
    /** The concurrency-1 agent's log lines (its c64 successor replaces `agent`). */
    c1Lines: Record<string, unknown>[];
  }
  const modeArgs = (way: Way): string[] =>
    way.mode === "none"
      ? ["--isolation", "none"]
      : way.mode === "runner"
        ? ["--executor", `runner:${join(way.base, "runner.sock")}`]
        : [];
  async function batch(way: Way, shapes: readonly Phases[]): Promise<{ wallMs: number; ids: string[] }> {
    const ids = new Set<string>();
    const t0 = performance.now();
    for (const phases of shapes) ids.add(way.cp.store.createRun(archive, phases).id);
    const all = [...ids];
    const t1 = await waitForRuns(way.cp, ids);
    return { wallMs: t1 - t0, ids: all };
  }
  const durations = (lines: readonly Record<string, unknown>[], event: string, ids: readonly string[]): number[] => {
    const wanted = new Set(ids);
    return lines
      .filter((l) => l["event"] === event && wanted.has(String(l["run_id"])))
      .map((l) => Number(l["duration_ms"]));
  };
  const turns = <T>(items: readonly T[], round: number): T[] =>
    items.map((_, i) => items[(i + round) % items.length] as T);
  const ways: Way[] = [];
  for (const mode of ["sandbox", "runner", "none"] as const) {
    const plane = await startControlPlane();
    ways.push({
      mode,
      ...plane,
      base: await mkdtemp(join(shmDir, `iso-${mode}-`)),
      threeWallMs: 0,
      threeRuns: 0,
      threeIds: [],
      oneIds: [],
      mixedThreeIds: [],
      c64WallMs: 0,
      c64Runs: 0,
      c1Lines: [],
    });
  }
  try {
    for (const way of ways) {
      const workDir = join(way.base, "work");
      if (way.mode === "runner")
        way.runner = await startRunner(join(way.base, "runner.sock"), workDir, join(way.base, "runner-state"), dir);
      way.agent = startAgent(way.url, dir, ["--work-dir", workDir, "--concurrency", "1", ...modeArgs(way)]);
      await way.agent.waitFor((l) => l["event"] === "registered");
      await batch(
        way,
        Array.from({ length: SIZES.isoWarm }, () => THREE),
      );
    }
    const perTurn = Math.max(1, Math.round(SIZES.isoRuns / SIZES.isoRounds));
    for (let round = 0; round < SIZES.isoRounds; round++) {
      for (const way of turns(ways, round)) {
        const three = await batch(
          way,
          Array.from({ length: perTurn }, () => THREE),
        );
        way.threeWallMs += three.wallMs;
        way.threeRuns += perTurn;
        way.threeIds.push(...three.ids);
        const mixed = await batch(
          way,
          Array.from({ length: 2 * perTurn }, (_, i) => (i % 2 === 0 ? ONE : THREE)),
        );
        way.oneIds.push(...mixed.ids.filter((_, i) => i % 2 === 0));
        way.mixedThreeIds.push(...mixed.ids.filter((_, i) => i % 2 === 1));
      }
    }
    for (const way of ways) {
      await way.agent?.stop();
      await way.runner?.stop();
      way.c1Lines = way.agent?.lines ?? [];
      way.agent = undefined;
      way.runner = undefined;
    }
    // 64 at once: the sandbox and none (a runner runs one phase at a time).
    const wide = ways.filter((w) => w.mode !== "runner");
    for (const way of wide) {
      way.agent = startAgent(way.url, dir, [
        "--work-dir",
        join(way.base, "work-c64"),
        "--concurrency",
        "64",
        ...modeArgs(way),
      ]);
      await way.agent.waitFor((l) => l["event"] === "registered");
    }
    const perWideTurn = Math.max(64, Math.round(SIZES.isoC64 / SIZES.isoRounds));
    for (let round = 0; round < SIZES.isoRounds; round++) {
      for (const way of turns(wide, round)) {
        const { wallMs } = await batch(
          way,
          Array.from({ length: perWideTurn }, () => THREE),
        );
        way.c64WallMs += wallMs;
        way.c64Runs += perWideTurn;
      }
    }
  } finally {
    for (const way of ways) {
      await way.agent?.stop();
      await way.runner?.stop();
      await way.cp.close();
    }
  }
  const isolation: Record<string, unknown> = {};
  const perRun: Partial<Record<Mode, number>> = {};
  const perPhase: Partial<Record<Mode, number>> = {};
  const c64: Partial<Record<Mode, number>> = {};
  for (const way of ways) {
    const lines = way.c1Lines;
    const inAgentOne = mean(durations(lines, "run_finished", way.oneIds));
    const inAgentThree = mean(durations(lines, "run_finished", way.mixedThreeIds));
    perRun[way.mode] = way.threeWallMs / way.threeRuns;
    perPhase[way.mode] = (inAgentThree - inAgentOne) / 2;
    const figures: Record<string, number> = {
      ms_per_run: round(way.threeWallMs / way.threeRuns),
      c1_runs_per_s: round((1000 * way.threeRuns) / way.threeWallMs, 1),
      in_agent_ms_per_run: round(inAgentThree),
      in_agent_ms_per_one_phase_run: round(inAgentOne),
      ms_added_per_phase: round((inAgentThree - inAgentOne) / 2),
      phase_process_ms: round(mean(durations(lines, "phase_finished", way.threeIds))),
    };
    if (way.c64Runs > 0) {
      c64[way.mode] = (1000 * way.c64Runs) / way.c64WallMs;
      figures["c64_runs_per_s"] = round(c64[way.mode] ?? Number.NaN, 1);
    }
    isolation[way.mode] = figures;
  }
  const ratio = (a: number | undefined, b: number | undefined): number => round((a ?? Number.NaN) / (b ?? Number.NaN));
  isolation["ratios"] = {
    sandbox_over_none_per_run: ratio(perRun.sandbox, perRun.none),
    runner_over_none_per_run: ratio(perRun.runner, perRun.none),
    sandbox_over_none_per_phase: ratio(perPhase.sandbox, perPhase.none),
    runner_over_none_per_phase: ratio(perPhase.runner, perPhase.none),
    sandbox_over_none_c64_throughput: ratio(c64.sandbox, c64.none),
  };
  isolation["runs_per_shape"] = SIZES.isoRuns;
  isolation["rounds"] = SIZES.isoRounds;
  isolation["c64_runs"] = SIZES.isoC64;
  isolation["runner_c64"] =
    "not measured: a runner runs one phase at a time (RUNNER_BUSY otherwise), so an agent with a runner runs at concurrency 1 and a pool scales with pods, each an agent and its runner; 64 at once would be 64 agent-and-runner pairs (two Node processes each), which measures this machine, not the runner";
  results["isolation"] = isolation;

  // ---------- 5. memory: idle after start, and after many runs ----------
  {
    const agent = startAgent(url, dir, ["--work-dir", join(shmDir, "memory"), "--concurrency", "64"]);
    await agent.waitFor((l) => l["event"] === "registered");
    await new Promise((r) => setTimeout(r, 500));
    const idle = await rssMb(agent.child.pid ?? 0);
    // Ten batches, each settled for a second before RSS is read: growth that continues batch after
    // batch is a leak; growth that stops after the first batch is the heap and malloc arenas
    // sizing themselves for 64 runs at once.
    const curve: number[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const ids = new Set<string>();
      for (let i = 0; i < SIZES.memoryRuns / 10; i++) ids.add(queue());
      await waitForRuns(cp, ids);
      await new Promise((r) => setTimeout(r, 1000));
      curve.push(round(await rssMb(agent.child.pid ?? 0), 1));
    }
    const after = curve.at(-1) ?? Number.NaN;
    const warm = curve[0] ?? Number.NaN;
    results["rss_mb"] = {
      idle: round(idle, 1),
      after_10k_runs: after,
      runs: SIZES.memoryRuns,
      growth: round(after - idle, 1),
      after_first_tenth: warm,
      growth_after_first_tenth: round(after - warm, 1),
      curve,
    };
    await agent.stop();
  }

  // ---------- 3. floor: open, write and wipe in a tight loop in one process ----------
  const ring = new Map<string, AgentPrivateKey>([[agentKey.kid, agentKey]]);
  const bundles: Buffer[] = [];
  const plaintext = Buffer.from(
    JSON.stringify({
      version: 1,
      registries: [
        {
          id: "int-bench",
          name: "bench",
          url: "https://registry.bench.test",
          username: "bench",
          password: "floor-password",
        },
      ],
    }),
  );
  for (let i = 0; i < SIZES.floor; i++) {
    bundles.push(
      Buffer.from(
        await sealBundle({
          recipient: { kid: agentKey.kid, publicKey: agentKey.publicKey },
          agentId: "a",
          runId: `floor-${i}`,
          plaintext,
          issuedAtMs: Date.now(),
          ttlSeconds: 600,
        }),
      ),
    );
  }
  const floorRoot = await mkdtemp(join(shmDir, "floor-"));
  const tf0 = performance.now();
  for (let i = 0; i < SIZES.floor; i++) {
    const runDir = join(floorRoot, `floor-${i}`);
    await materializeRun({
      bundle: bundles[i] ?? Buffer.alloc(0),
      keys: ring,
      agentId: "a",
      runId: `floor-${i}`,
      runDir,
      nowMs: Date.now(),
      maxLifetimeSeconds: 3600,
      clockSkewSeconds: 120,
      tofuCliConfigSources: [],
      fs: realFs,
    });
    await wipeRunDir(realFs, runDir);
  }
  const floorMsPerRun = (performance.now() - tf0) / SIZES.floor;
  results["floor_runs_per_s"] = round(1000 / floorMsPerRun, 1);
  results["floor_ms_per_run"] = round(floorMsPerRun, 3);
  results["overhead_ratio"] = round((daemonStepMs[0] ?? Number.NaN) / floorMsPerRun, 2);

  // ---------- 4. scaling: materialize bundles of 1 .. 10,000 registries ----------
  const materializeMs: Record<string, number> = {};
  const materializeBytes: Record<string, number> = {};
  for (const n of [1, 10, 100, 1000, 10_000]) {
    const registries = Array.from({ length: n }, (_, i) => ({
      id: `int-${i}`,
      name: `r${i}`,
      url: `https://reg-${i}.bench.test`,
      username: `user${i}`,
      password: `pw-${i}-${randomBytes(6).toString("hex")}`,
    }));
    const pt = Buffer.from(JSON.stringify({ version: 1, registries }));
    const times: number[] = [];
    for (let rep = 0; rep < SIZES.scaleReps; rep++) {
      const runId = `scale-${n}-${rep}`;
      const bundle = Buffer.from(
        await sealBundle({
          recipient: { kid: agentKey.kid, publicKey: agentKey.publicKey },
          agentId: "a",
          runId,
          plaintext: pt,
          issuedAtMs: Date.now(),
          ttlSeconds: 600,
        }),
      );
      const runDir = join(floorRoot, runId);
      const t0 = performance.now();
      await materializeRun({
        bundle,
        keys: ring,
        agentId: "a",
        runId,
        runDir,
        nowMs: Date.now(),
        maxLifetimeSeconds: 3600,
        clockSkewSeconds: 120,
        tofuCliConfigSources: [],
        fs: realFs,
      });
      times.push(performance.now() - t0);
      let bytes = 0;
      for (const e of await readdir(runDir, { recursive: true, withFileTypes: true }))
        if (e.isFile()) bytes += (await stat(join(e.parentPath, e.name))).size;
      materializeBytes[String(n)] = bytes;
      await wipeRunDir(realFs, runDir);
    }
    materializeMs[String(n)] = round(median(times), 3);
  }
  results["materialize_ms"] = materializeMs;
  results["materialize_bytes"] = materializeBytes;
  results["materialize_10000_over_1000"] = round((materializeMs["10000"] ?? 0) / (materializeMs["1000"] ?? 1), 2);

  // ---------- 7. the alternative users write today: a pre-init hook running skopeo login ----------
  const registries = await Promise.all([0, 1, 2].map((i) => startLocalRegistry(`robot${i}`, `hook-pw-${i}`)));
  try {
    const certDir = join(dir, "certs");
    await mkdir(certDir);
    await writeFile(join(certDir, "ca.crt"), registries.map((r) => r.caPem).join("\n"));
    const loginMs: number[] = [];
    for (let rep = 0; rep < SIZES.loginReps; rep++) {
      const authfile = join(shmDir, `hook-${rep}.json`);
      const t0 = performance.now();
      for (const [i, r] of registries.entries()) {
        const res = spawnSync(
          "skopeo",
          [
            "login",
            "--authfile",
            authfile,
            "--cert-dir",
            certDir,
            "--username",
            `robot${i}`,
            "--password-stdin",
            r.host,
          ],
          { input: `hook-pw-${i}` },
        );
        if (res.status !== 0) throw new Error(`skopeo login failed: ${res.stderr.toString()}`);
      }
      loginMs.push(performance.now() - t0);
      await rm(authfile, { force: true });
    }
    const pubFile = join(dir, "pub.json");
    await writeFile(pubFile, JSON.stringify(publicKeyDoc(agentKey.publicKey)));
    const sameExport = join(dir, "same.json");
    await writeFile(
      sameExport,
      JSON.stringify({
        version: 1,
        registries: registries.map((r, i) => ({
          id: `int-${i}`,
          url: `https://${r.host}`,
          username: `robot${i}`,
          password: `hook-pw-${i}`,
        })),
      }),
    );
    const cliMs: number[] = [];
    for (let rep = 0; rep < SIZES.loginReps; rep++) {
      const bundleFile = join(dir, `same-${rep}.bundle`);
      execFileSync(AGENT_BIN, [
        "seal",
        "--public-key",
        pubFile,
        "--agent-id",
        "a",
        "--run-id",
        `same-${rep}`,
        "--in",
        sameExport,
        "--out",
        bundleFile,
      ]);
      const runDir = join(shmDir, `same-${rep}`);
      const t0 = performance.now();
      execFileSync(
        AGENT_BIN,
        [
          "materialize",
          "--key-file",
          join(dir, "agent.key"),
          "--agent-id",
          "a",
          "--run-id",
          `same-${rep}`,
          "--bundle",
          bundleFile,
          "--run-dir",
          runDir,
        ],
        { env: { ...process.env, HOME: dir } },
      );
      cliMs.push(performance.now() - t0);
      execFileSync(AGENT_BIN, ["wipe", "--run-dir", runDir]);
    }
    results["login_hook_ms"] = round(median(loginMs), 1);
    results["materialize_same_registries_ms"] = round(median(cliMs), 1);
    results["login_hook_registries"] = registries.length;
  } finally {
    await Promise.all(registries.map((r) => r.stop()));
  }

  // ---------- the control plane's data file: runs created per second, 8 admin clients ----------
  results["control_plane_runs_created"] = {
    memory: await runsCreatedPerSecond({ createControlPlane, SqliteStorage }, "memory", SIZES.storageRuns, 8),
    data_file: await runsCreatedPerSecond({ createControlPlane, SqliteStorage }, "FULL", SIZES.storageRuns, 8),
  };

  results["machine"] = {
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model ?? "unknown",
    memory_gb: round(totalmem() / 1024 ** 3, 1),
    kernel: release(),
    node: process.version,
    tmpfs: TMPFS,
    disk: tmpdir(),
    quick,
    date: new Date().toISOString(),
  };
  results["notes"] = notes;
  await cp.close();
  await rm(dir, { recursive: true, force: true });
  await rm(shmDir, { recursive: true, force: true });

  const out = outArg ?? join(ROOT, "bench", "results", "latest.json");
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(results, null, 2)}\n`);
  printTable(results);
  console.log(`\nwrote ${out}`);
}

function printTable(r: Record<string, unknown>): void {
  const g = (path: string): string => {
    let v: unknown = r;
    for (const k of path.split(".")) v = (v as Record<string, unknown> | undefined)?.[k];
    return typeof v === "number" || typeof v === "string" || typeof v === "boolean" ? String(v) : "-";
  };
  const rows: [string, string, string][] = [
    [
      "pickup latency, tmpfs (ms)",
      `p50 ${g("pickup_ms.p50")}  p99 ${g("pickup_ms.p99")}  max ${g("pickup_ms.max")}`,
      `${g("pickup_ms.runs")} runs`,
    ],
    [
      "pickup latency, disk (ms)",
      `p50 ${g("pickup_disk_ms.p50")}  p99 ${g("pickup_disk_ms.p99")}  max ${g("pickup_disk_ms.max")}`,
      `${g("pickup_disk_ms.runs")} runs`,
    ],
    [
      "3 s interval poller pickup (ms)",
      `p50 ${g("interval_poll_pickup_ms.p50")}`,
      `x${g("pickup_speedup_vs_interval_poll")} slower than long-poll p50`,
    ],
    [
      "throughput (runs/s)",
      `c1 ${g("throughput_runs_per_s.c1")}  c8 ${g("throughput_runs_per_s.c8")}  c64 ${g("throughput_runs_per_s.c64")}`,
      "lease, open, write, 3 phases (/bin/true) in the sandbox, wipe, complete",
    ],
    [
      "isolation, per run at c1 (ms)",
      `sandbox ${g("isolation.sandbox.ms_per_run")}  runner ${g("isolation.runner.ms_per_run")}  none ${g("isolation.none.ms_per_run")}`,
      `x${g("isolation.ratios.sandbox_over_none_per_run")} / x${g("isolation.ratios.runner_over_none_per_run")} of none; 3 phases (/bin/true)`,
    ],
    [
      "isolation, added per phase (ms)",
      `sandbox ${g("isolation.sandbox.ms_added_per_phase")}  runner ${g("isolation.runner.ms_added_per_phase")}  none ${g("isolation.none.ms_added_per_phase")}`,
      `process alone: ${g("isolation.sandbox.phase_process_ms")} / ${g("isolation.runner.phase_process_ms")} / ${g("isolation.none.phase_process_ms")}`,
    ],
    [
      "isolation, c64 (runs/s)",
      `sandbox ${g("isolation.sandbox.c64_runs_per_s")}  none ${g("isolation.none.c64_runs_per_s")}`,
      `x${g("isolation.ratios.sandbox_over_none_c64_throughput")}; runner: one phase at a time, c1 only`,
    ],
    [
      "floor: open+write+wipe in-process",
      `${g("floor_runs_per_s")} runs/s (${g("floor_ms_per_run")} ms)`,
      `daemon/floor ratio ${g("overhead_ratio")}`,
    ],
    [
      "materialize 1/10/100/1k/10k registries (ms)",
      `${g("materialize_ms.1")} / ${g("materialize_ms.10")} / ${g("materialize_ms.100")} / ${g("materialize_ms.1000")} / ${g("materialize_ms.10000")}`,
      `10k/1k ratio ${g("materialize_10000_over_1000")}`,
    ],
    [
      "RSS (MB)",
      `idle ${g("rss_mb.idle")}  after ${g("rss_mb.runs")} runs ${g("rss_mb.after_10k_runs")}`,
      `growth ${g("rss_mb.growth")}, of which after the first tenth ${g("rss_mb.growth_after_first_tenth")}`,
    ],
    [
      "control plane, runs created (runs/s)",
      `memory ${g("control_plane_runs_created.memory.runs_per_s")}  data file ${g("control_plane_runs_created.data_file.runs_per_s")}`,
      `POST /runs, 8 clients; p50 ${g("control_plane_runs_created.memory.p50_ms")} / ${g("control_plane_runs_created.data_file.p50_ms")} ms (SQLite, synchronous=FULL)`,
    ],
    ["start-up (ms)", `--version ${g("startup_ms.version")}  first lease ${g("startup_ms.first_lease")}`, ""],
    [
      "skopeo login hook vs materialize (ms)",
      `${g("login_hook_ms")} vs ${g("materialize_same_registries_ms")}`,
      `${g("login_hook_registries")} local TLS registries, whole commands`,
    ],
  ];
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  for (const [a, b, c] of rows) console.log(`${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`);
}

await main();
