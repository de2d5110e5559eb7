/**
 * What the sidecar tests share: the built `oci-cred-agent sidecar` as a logged process beside a
 * reference control plane, one hook request over its socket as `oci-cred-agent hook` sends it,
 * an external run queued with its run token, and waiting for the sidecar's lease of a run.
 */
import { mkdirSync } from "node:fs";
import { stat } from "node:fs/promises";
import { createConnection } from "node:net";
import { join } from "node:path";
import { expect } from "vitest";
import { parseHookAnswer, SIDECAR_PROTOCOL_VERSION, type HookAnswer } from "../../src/protocol/sidecar-api.js";
import { AGENT_BIN, startLogged, type AgentProcess } from "./agent-process.js";
import type { Harness } from "./control-plane-harness.js";

export interface Sidecar {
  readonly proc: AgentProcess;
  readonly socket: string;
  readonly credentialsDir: string;
}

/** Where a test file's sidecars live and whom they answer to; `started` collects them for cleanup. */
export interface SidecarContext {
  readonly dir: string;
  readonly controlPlaneUrl: string;
  readonly files: { readonly keyFile: string; readonly tokenFile: string };
  /** The runner's group, given to --socket-group. */
  readonly gid: number;
  readonly started: AgentProcess[];
}

export interface SidecarOptions {
  readonly extra?: readonly string[];
  readonly workDir?: string;
  readonly socket?: string;
  /** --concurrency (8 unless said); "unset" gives none, for the sidecar's own default. */
  readonly concurrency?: number | "unset";
  /** The mode the work directory is made with (0700 unless a test lets the group pass). */
  readonly workMode?: number;
}

export function startSidecar(ctx: SidecarContext, name: string, opts: SidecarOptions = {}): Sidecar {
  const work = opts.workDir ?? join(ctx.dir, name);
  mkdirSync(work, { recursive: true, mode: opts.workMode ?? 0o700 });
  const socket = opts.socket ?? join(ctx.dir, `${name}.sock`);
  const proc = startLogged(AGENT_BIN, [
    "sidecar",
    "--log-format",
    "json",
    "--control-plane-url",
    ctx.controlPlaneUrl,
    "--token-file",
    ctx.files.tokenFile,
    "--key-file",
    ctx.files.keyFile,
    "--work-dir",
    work,
    "--listen",
    "off",
    ...(opts.concurrency === "unset" ? [] : ["--concurrency", String(opts.concurrency ?? 8)]),
    "--socket",
    socket,
    "--socket-group",
    String(ctx.gid),
    "--lease-wait",
    "2s",
    ...(opts.extra ?? []),
  ]);
  ctx.started.push(proc);
  return { proc, socket, credentialsDir: join(work, "credentials") };
}

/** One request line, with the fields a hook sends when it has nothing to say for them. */
export function hookRequestLine(fields: Record<string, unknown>): string {
  return `${JSON.stringify({ v: SIDECAR_PROTOCOL_VERSION, phase: null, outcome: null, ...fields })}\n`;
}

/** One hook request over the socket, as `oci-cred-agent hook` sends it. */
export function hook(socket: string, fields: Record<string, unknown>): Promise<HookAnswer> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let text = "";
    conn.on("data", (chunk: Buffer) => {
      text += chunk.toString("utf8");
    });
    conn.on("end", () => {
      const answer = parseHookAnswer(text.replace(/\n$/, ""));
      if (answer === undefined) reject(new Error(`not a sidecar answer: ${text}`));
      else resolve(answer);
    });
    conn.on("error", reject);
    conn.write(hookRequestLine(fields));
  });
}

/** Queues a run for an external runner; its token goes to `tokens` (none may appear in any output). */
export async function externalRun(
  h: Harness,
  tokens: string[],
  phases = ["init", "plan", "apply"],
): Promise<{ id: string; run_token: string }> {
  const res = await h.admin("POST", "/runs", { executor: "external", phases });
  expect(res.status).toBe(201);
  const run = res.json as { id: string; run_token: string };
  tokens.push(run.run_token);
  return run;
}

export async function waitLeased(s: Sidecar, runId: string): Promise<void> {
  await s.proc.waitForLog((l) => l["event"] === "leased" && l["run_id"] === runId);
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
