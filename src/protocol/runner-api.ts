/**
 * The runner protocol, version 1: what the agent (`run --executor runner:PATH`) and the runner
 * (`oci-cred-agent runner --socket PATH`) say to each other over a Unix stream socket. Each
 * message is one line of JSON ending in "\n", at most MAX_RUNNER_LINE_BYTES long; each side
 * validates every line it reads against these schemas and drops the connection on anything
 * else. One connection per request:
 *
 *   hello    agent: {type:"hello", protocol}   runner: {type:"hello", protocol, pid_namespace, busy}
 *   start    agent: {type:"start", ...}, later maybe {type:"cancel"}
 *            runner: {type:"output", stream, text}*, then {type:"result", ...} or {type:"error", code}
 *   end_run  agent: {type:"end_run", run_id}   runner: {type:"run_ended", run_id} or {type:"error", code}
 *
 * The runner never sees a key, a token or a secret value: it gets paths, an environment that
 * points at the run's credential files, and sends back raw output; the agent masks secrets in
 * it (the runner cannot: it does not know them). Pure: schemas and framing only.
 */
import { z } from "zod";
import { parseJsonLine } from "./json-line.js";
import { AgentError } from "../core/errors.js";
import { PHASES, RUN_ID_PATTERN } from "./agent-api.js";

export const RUNNER_PROTOCOL_VERSION = 1;

/** The longest line either side accepts, newline included. */
export const MAX_RUNNER_LINE_BYTES = 1024 * 1024;

/**
 * The runner sends a line longer than this in pieces of this many characters (a JSON-escaped
 * piece stays well below MAX_RUNNER_LINE_BYTES: at most 6 bytes a character). The agent rejoins
 * the pieces of each stream before it masks secrets and cuts lines to its own limit.
 */
export const RUNNER_OUTPUT_PIECE_CHARS = 64 * 1024;

/** The codes a runner may answer a request with; the agent writes the message itself. */
const RUNNER_REFUSALS = [
  "RUNNER_BUSY",
  "RUNNER_PATH_REFUSED",
  "RUNNER_PROTOCOL_ERROR",
  "TOFU_NOT_FOUND",
  "INTERNAL",
] as const;
export type RunnerRefusal = (typeof RUNNER_REFUSALS)[number];

const path = z
  .string()
  .min(1)
  .max(4096)
  .regex(/^\/[^\0]*$/, "an absolute path");
const runId = z.string().regex(RUN_ID_PATTERN);
const protocol = z.literal(RUNNER_PROTOCOL_VERSION);

const helloRequestSchema = z.strictObject({ type: z.literal("hello"), protocol });

const startRequestSchema = z.strictObject({
  type: z.literal("start"),
  protocol,
  run_id: runId,
  phase: z.enum(PHASES),
  planned: z.boolean(),
  /** The configuration's directory (the phase's working directory); under the runner's --work-dir. */
  workspace: path,
  /** The run's credential directory; under the runner's --credentials-dir. */
  credentials: path,
  /** The phase's environment; the runner replaces HOME and TMPDIR with the run's private ones. */
  env: z
    .record(
      z
        .string()
        .min(1)
        .max(1024)
        .regex(/^[^=\0]+$/, "a variable name"),
      z
        .string()
        .max(128 * 1024)
        .regex(/^[^\0]*$/, "no NUL"),
    )
    .refine((env) => Object.keys(env).length <= 4096, "at most 4096 variables"),
  /** How long tofu gets between SIGTERM and SIGKILL when the phase is canceled. */
  grace_ms: z
    .number()
    .int()
    .min(0)
    .max(60 * 60 * 1000),
});
export type StartRequest = z.infer<typeof startRequestSchema>;

const cancelRequestSchema = z.strictObject({ type: z.literal("cancel") });
const endRunRequestSchema = z.strictObject({ type: z.literal("end_run"), run_id: runId });

const agentMessageSchema = z.discriminatedUnion("type", [
  helloRequestSchema,
  startRequestSchema,
  cancelRequestSchema,
  endRunRequestSchema,
]);
export type AgentMessage = z.infer<typeof agentMessageSchema>;

const runnerHelloSchema = z.strictObject({
  type: z.literal("hello"),
  protocol,
  /** Whether the runner kills every other process of its PID namespace after each phase. */
  pid_namespace: z.boolean(),
  /** Whether a phase is running right now. */
  busy: z.boolean(),
});
export type RunnerHello = z.infer<typeof runnerHelloSchema>;

const outputSchema = z.strictObject({
  type: z.literal("output"),
  stream: z.enum(["stdout", "stderr"]),
  text: z.string().max(RUNNER_OUTPUT_PIECE_CHARS),
});

const resultSchema = z.strictObject({
  type: z.literal("result"),
  exit_code: z.number().int().min(0).max(255).nullable(),
  signal: z
    .string()
    .regex(/^SIG[A-Z0-9]{1,12}$/)
    .nullable(),
  duration_ms: z.number().min(0),
  canceled: z.boolean(),
  /** Processes the phase left behind that the runner killed after it. */
  leftovers_killed: z.number().int().min(0),
});

const runEndedSchema = z.strictObject({ type: z.literal("run_ended"), run_id: runId });
const errorSchema = z.strictObject({ type: z.literal("error"), code: z.enum(RUNNER_REFUSALS) });

const runnerMessageSchema = z.discriminatedUnion("type", [
  runnerHelloSchema,
  outputSchema,
  resultSchema,
  runEndedSchema,
  errorSchema,
]);
export type RunnerMessage = z.infer<typeof runnerMessageSchema>;

/** A line the agent sent, or undefined when it is not a valid message. */
export function parseAgentMessage(line: string): AgentMessage | undefined {
  return parseJsonLine(agentMessageSchema, line);
}

/** A line the runner sent, or undefined when it is not a valid message. */
export function parseRunnerMessage(line: string): RunnerMessage | undefined {
  return parseJsonLine(runnerMessageSchema, line);
}

/** One message as its line. */
export function encodeMessage(message: AgentMessage | RunnerMessage): string {
  return `${JSON.stringify(message)}\n`;
}

/**
 * Cuts a byte stream into lines (without their "\n"), decoded as UTF-8 only once whole. Throws
 * RUNNER_PROTOCOL_ERROR when a line grows past the limit: the peer is broken or hostile.
 */
export class MessageLineReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes = MAX_RUNNER_LINE_BYTES) {}

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      this.take(chunk.subarray(start, nl + 1));
      lines.push(Buffer.concat(this.pending).toString("utf8", 0, this.pendingBytes - 1));
      this.pending = [];
      this.pendingBytes = 0;
      start = nl + 1;
    }
    if (start < chunk.length) this.take(chunk.subarray(start));
    return lines;
  }

  private take(piece: Buffer): void {
    this.pendingBytes += piece.length;
    if (this.pendingBytes > this.maxLineBytes) {
      throw new AgentError(
        "RUNNER_PROTOCOL_ERROR",
        `a runner protocol line is longer than ${this.maxLineBytes} bytes; run the same oci-cred-agent version as agent and runner`,
      );
    }
    this.pending.push(piece);
  }
}
