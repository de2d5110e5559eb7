import { doctorFailed, renderDoctorReport, runDoctor } from "../../app/doctor.js";
import { loadSettings } from "../../config/load-run-config.js";
import { AgentError } from "../../core/errors.js";
import { readInput, writeOutput } from "../io.js";
import { nonEmptyId } from "../options.js";

export interface DoctorOptions {
  readonly bundle?: string;
  readonly agentId?: string;
  readonly runId?: string;
  readonly configuration?: string;
  readonly format: string;
}

/** `doctor`: exit 0 when no check failed (warnings allowed), 1 otherwise. */
export async function doctor(
  flags: Record<string, string | boolean | undefined>,
  opts: DoctorOptions,
): Promise<number> {
  if (opts.bundle !== undefined && (opts.agentId === undefined || opts.runId === undefined)) {
    throw new AgentError(
      "INVALID_ARGUMENT",
      "--bundle needs --agent-id and --run-id (the ids the bundle was sealed for)",
      { flag: "--bundle" },
    );
  }
  const loaded = await loadSettings(flags, process.env);
  const bundle =
    opts.bundle === undefined
      ? undefined
      : {
          bytes: await readInput(opts.bundle, "bundle"),
          agentId: nonEmptyId("--agent-id", opts.agentId ?? ""),
          runId: nonEmptyId("--run-id", opts.runId ?? ""),
        };
  const checks = await runDoctor({
    loaded,
    env: process.env,
    nowMs: () => Date.now(),
    ...(bundle === undefined ? {} : { bundle }),
    ...(opts.configuration === undefined ? {} : { configurationDir: opts.configuration }),
  });
  await writeOutput(
    "-",
    opts.format === "json"
      ? `${JSON.stringify({ ok: !doctorFailed(checks), checks }, null, 2)}\n`
      : renderDoctorReport(checks),
  );
  return doctorFailed(checks) ? 1 : 0;
}
