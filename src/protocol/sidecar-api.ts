/**
 * The sidecar's hook protocol, version 1 (docs/sidecar.md): what `oci-cred-agent hook NAME` (in
 * the foreign runner, around each phase) and `oci-cred-agent sidecar` (beside it, holding the key
 * and the control-plane credential) say to each other over a Unix stream socket. One connection
 * per request: the hook sends one line of JSON ending in "\n", the sidecar answers one line and
 * closes. Lines are at most MAX_SIDECAR_LINE_BYTES long, newline included; each side validates
 * what it reads against these schemas.
 *
 *   request  {v:1, hook, run_id, run_token, phase, outcome}
 *   answer   pre hooks:  {ok:true, run_dir, env:{TF_CLI_CONFIG_FILE, DOCKER_CONFIG, REGISTRY_AUTH_FILE}, docker_config_file}
 *            post hooks: {ok:true, wiped}
 *            refusal:    {ok:false, code, message}
 *
 * The answer never carries a credential: only paths, which the runner's group may read. Pure:
 * schemas and framing only.
 */
import { z } from "zod";
import { parseJsonLine } from "./json-line.js";
import { AgentError } from "../core/errors.js";
import { PHASES, RUN_ID_PATTERN, type Phase } from "./agent-api.js";

export const SIDECAR_PROTOCOL_VERSION = 1;

/** The longest line either side accepts, newline included. */
export const MAX_SIDECAR_LINE_BYTES = 16 * 1024;

/** Where `oci-cred-agent sidecar` listens, and `oci-cred-agent hook` connects, unless told. */
export const DEFAULT_SIDECAR_SOCKET = "/run/oci-cred-agent/sidecar.sock";

export const HOOKS = ["pre-init", "pre-plan", "pre-apply", "post-plan", "post-apply", "post-run"] as const;
export type Hook = (typeof HOOKS)[number];

/** Pre hooks write the run's files; post hooks wipe them (`post-run` also ends the run's lease). */
export function isPreHook(hook: Hook): boolean {
  return hook.startsWith("pre-");
}

const hookRequestSchema = z.strictObject({
  v: z.literal(SIDECAR_PROTOCOL_VERSION),
  hook: z.enum(HOOKS),
  run_id: z.string().regex(RUN_ID_PATTERN, "a run id"),
  /** `ocrt_...`, as the control plane issued it; checked with the control plane before anything is written; never logged. */
  run_token: z.string().min(1).max(256),
  phase: z.enum(PHASES).nullable(),
  /** What the runner says of the phase or run that ended (post hooks); `post-run` reports it. */
  outcome: z.enum(["succeeded", "failed"]).nullable(),
});
export type HookRequest = z.infer<typeof hookRequestSchema>;

const absolutePath = z
  .string()
  .min(1)
  .max(4096)
  .regex(/^\/[^\0]*$/, "an absolute path");

const preHookAnswerSchema = z.strictObject({
  ok: z.literal(true),
  run_dir: absolutePath,
  env: z.strictObject({
    TF_CLI_CONFIG_FILE: absolutePath,
    DOCKER_CONFIG: absolutePath,
    REGISTRY_AUTH_FILE: absolutePath,
  }),
  /** The Docker config file itself, for runners that give the run a HOME of its own (`$HOME/.docker/config.json`). */
  docker_config_file: absolutePath,
});
export type PreHookAnswer = z.infer<typeof preHookAnswerSchema>;

const postHookAnswerSchema = z.strictObject({
  ok: z.literal(true),
  /** Files removed; 0 when nothing was there (a wipe of what is gone is not a failure). */
  wiped: z.number().int().nonnegative(),
});
export type PostHookAnswer = z.infer<typeof postHookAnswerSchema>;

const hookRefusalSchema = z.strictObject({
  ok: z.literal(false),
  /** A stable code of docs/errors.md (RUN_TOKEN_INVALID, RUN_NOT_LEASED, REQUEST_INVALID, ...). */
  code: z.string().regex(/^[A-Z][A-Z0-9_]{1,63}$/),
  /** What was wrong and what to do; never a secret. */
  message: z.string().max(2048),
});

const hookAnswerSchema = z.union([preHookAnswerSchema, postHookAnswerSchema, hookRefusalSchema]);
export type HookAnswer = z.infer<typeof hookAnswerSchema>;

/** A hook request line, or undefined when it is not a valid request. */
export function parseHookRequest(line: string): HookRequest | undefined {
  return parseJsonLine(hookRequestSchema, line);
}

/** A sidecar answer line, or undefined when it is not a valid answer. */
export function parseHookAnswer(line: string): HookAnswer | undefined {
  return parseJsonLine(hookAnswerSchema, line);
}

/** One message as its line; refuses (INTERNAL) a line over the limit rather than send it. */
export function encodeHookLine(message: HookRequest | HookAnswer): string {
  const line = `${JSON.stringify(message)}\n`;
  if (Buffer.byteLength(line, "utf8") > MAX_SIDECAR_LINE_BYTES)
    throw new AgentError("INTERNAL", `a sidecar protocol line would exceed ${MAX_SIDECAR_LINE_BYTES} bytes`);
  return line;
}

/**
 * Reads the first line of a stream, at most MAX_SIDECAR_LINE_BYTES with its newline: returns
 * the line once whole, undefined while it is not, and throws REQUEST_INVALID past the limit.
 */
export class FirstLineReader {
  private pending: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): string | undefined {
    const nl = chunk.indexOf(0x0a);
    const piece = nl >= 0 ? chunk.subarray(0, nl + 1) : chunk;
    this.bytes += piece.length;
    if (this.bytes > MAX_SIDECAR_LINE_BYTES)
      throw new AgentError(
        "REQUEST_INVALID",
        `a sidecar protocol line is longer than ${MAX_SIDECAR_LINE_BYTES} bytes; run the same oci-cred-agent version as hook and sidecar`,
      );
    this.pending.push(piece);
    if (nl < 0) return undefined;
    return Buffer.concat(this.pending).toString("utf8", 0, this.bytes - 1);
  }
}

/**
 * Whether a post hook ends the run: `post-run`, or the post hook of the run's last phase (the
 * lease names the phases), since many runners call no hook after the last phase's.
 */
export function hookEndsRun(hook: Hook, phases: readonly Phase[]): boolean {
  const last = phases.at(-1);
  return hook === "post-run" || (last !== undefined && last !== "init" && hook === `post-${last}`);
}
