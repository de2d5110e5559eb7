/**
 * Batches a run's events: they reach the control plane within 250 ms, in order, in one request
 * per batch (a short run's events all travel in one request before completion). Batches the
 * control plane refused are counted, never hidden (`close()` says how many events were lost).
 */
import type { RunEvent } from "../protocol/agent-api.js";

const FLUSH_AFTER_MS = 250;

export class EventBatcher {
  private pending: RunEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending: Promise<void> = Promise.resolve();
  private lost = 0;

  constructor(private readonly send: (events: RunEvent[]) => Promise<void>) {}

  push(event: RunEvent): void {
    this.pending.push(event);
    this.timer ??= setTimeout(() => {
      this.flush();
    }, FLUSH_AFTER_MS);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.sending = this.sending.then(() =>
      this.send(batch).catch(() => {
        this.lost += batch.length;
      }),
    );
  }

  /** Sends what is pending; resolves with the number of events whose delivery failed. */
  async close(): Promise<{ readonly lostEvents: number }> {
    this.flush();
    await this.sending;
    return { lostEvents: this.lost };
  }
}
