/**
 * What one run may store from its agent: events (count and bytes) and log entries (count and
 * bytes; an empty chunk is an entry too). Pure bookkeeping by run id; the agent API refuses what
 * does not fit (422 EVENT_LIMIT_REACHED, LOG_LIMIT_REACHED) and forgets a run once it ended. A run
 * first seen after a restart of the control plane starts from what it already holds.
 */

export interface RunQuotaLimits {
  readonly maxEventsPerRun: number;
  readonly maxEventBytesPerRun: number;
  readonly maxLogEntriesPerRun: number;
  readonly maxLogBytesPerRun: number;
}

export const DEFAULT_RUN_QUOTA: RunQuotaLimits = {
  maxEventsPerRun: 2000,
  maxEventBytesPerRun: 2 * 1024 * 1024,
  maxLogEntriesPerRun: 10_000,
  maxLogBytesPerRun: 8 * 1024 * 1024,
};

export interface QuotaRefusal {
  readonly code: "EVENT_LIMIT_REACHED" | "LOG_LIMIT_REACHED";
  readonly message: string;
  /** Which limit: "count" or "bytes". */
  readonly limit: "count" | "bytes";
}

/** What a run has stored from its agent. */
export interface RunUsage {
  events: number;
  eventBytes: number;
  logEntries: number;
  logBytes: number;
}

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`;
}

export class RunQuotas {
  private readonly usage = new Map<string, RunUsage>();

  constructor(private readonly limits: RunQuotaLimits = DEFAULT_RUN_QUOTA) {}

  /** The run's usage; a run seen for the first time starts from `stored` (what it already holds). */
  private of(runId: string, stored?: () => RunUsage): RunUsage {
    let u = this.usage.get(runId);
    if (u === undefined) {
      u = stored?.() ?? { events: 0, eventBytes: 0, logEntries: 0, logBytes: 0 };
      this.usage.set(runId, u);
    }
    return u;
  }

  /** Charges a batch of `count` events of `bytes` in all; nothing is charged when it is refused. */
  chargeEvents(runId: string, count: number, bytes: number, stored?: () => RunUsage): QuotaRefusal | undefined {
    const u = this.of(runId, stored);
    const { maxEventsPerRun: maxCount, maxEventBytesPerRun: maxBytes } = this.limits;
    const over = u.events + count > maxCount ? "count" : u.eventBytes + bytes > maxBytes ? "bytes" : undefined;
    if (over !== undefined)
      return {
        code: "EVENT_LIMIT_REACHED",
        limit: over,
        message: `run ${runId} holds ${u.events} events (${u.eventBytes} bytes) and a run keeps at most ${maxCount} events or ${mib(maxBytes)}; this batch of ${count} is refused: send no more events for this run (its completion is still accepted)`,
      };
    u.events += count;
    u.eventBytes += bytes;
    return undefined;
  }

  /** Charges one log entry of `bytes` (an empty one counts as an entry); nothing is charged when refused. */
  chargeLog(runId: string, bytes: number, stored?: () => RunUsage): QuotaRefusal | undefined {
    const u = this.of(runId, stored);
    const { maxLogEntriesPerRun: maxCount, maxLogBytesPerRun: maxBytes } = this.limits;
    const over = u.logEntries + 1 > maxCount ? "count" : u.logBytes + bytes > maxBytes ? "bytes" : undefined;
    if (over !== undefined)
      return {
        code: "LOG_LIMIT_REACHED",
        limit: over,
        message: `run ${runId}'s log holds ${u.logEntries} entries (${u.logBytes} bytes) and a run keeps at most ${maxCount} entries or ${mib(maxBytes)}; this chunk is refused: send no more log chunks for this run (its completion is still accepted; the agent's own log keeps the output)`,
      };
    u.logEntries += 1;
    u.logBytes += bytes;
    return undefined;
  }

  forget(runId: string): void {
    this.usage.delete(runId);
  }

  /** Runs being counted (for tests: ended runs are forgotten). */
  get runs(): number {
    return this.usage.size;
  }
}
