/**
 * Ships one phase's output to the control plane in bounded chunks, in order. What waits to be
 * sent is bounded too: a tofu that prints faster than the control plane takes its output (a
 * provider in a loop, a slow control plane) must not grow the agent's memory with everything it
 * prints. Output that does not fit is counted, not kept, and one line says how much was left out.
 * Chunks the control plane refused are counted, never hidden (`close()` says how many).
 */
import { MAX_LOG_CHUNK_BYTES, type Phase } from "../protocol/agent-api.js";

/** At most this much of a phase's output waits to be sent to the control plane. */
const MAX_QUEUED_LOG_BYTES = 4 * 1024 * 1024;

/** How long output waits to fill a chunk before it is sent anyway. */
const FLUSH_AFTER_MS = 250;

export interface LogShipmentReport {
  readonly chunks: number;
  /** Chunks whose delivery failed (after the client's own retries). */
  readonly failedChunks: number;
}

export class LogShipper {
  private buffer = "";
  private seq = 0;
  private sending: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** Characters buffered or handed to send() and not yet done. */
  private queued = 0;
  private dropped = 0;
  private failedChunks = 0;

  constructor(
    private readonly send: (phase: Phase, seq: number, text: string) => Promise<void>,
    private readonly phase: Phase,
    private readonly maxQueued: number = MAX_QUEUED_LOG_BYTES,
  ) {}

  push(text: string): void {
    if (this.queued + text.length > this.maxQueued) {
      this.dropped += text.length;
      return;
    }
    if (this.dropped > 0) this.noteDropped();
    this.append(text);
  }

  private noteDropped(): void {
    this.append(
      `[oci-cred-agent: ${this.dropped} characters of ${this.phase} output were not sent: the control plane took them more slowly than tofu printed them]\n`,
    );
    this.dropped = 0;
  }

  private append(text: string): void {
    this.buffer += text;
    this.queued += text.length;
    if (this.buffer.length >= MAX_LOG_CHUNK_BYTES / 2) this.flush();
    else
      this.timer ??= setTimeout(() => {
        this.flush();
      }, FLUSH_AFTER_MS);
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.buffer.length > 0) {
      const text = this.buffer.slice(0, MAX_LOG_CHUNK_BYTES / 2);
      this.buffer = this.buffer.slice(text.length);
      const seq = this.seq++;
      this.sending = this.sending
        .then(() => this.send(this.phase, seq, text))
        .then(
          () => undefined,
          () => {
            this.failedChunks++;
          },
        )
        .then(() => {
          this.queued -= text.length;
        });
    }
  }

  /** Sends what is left and waits for every chunk's delivery. */
  async close(): Promise<LogShipmentReport> {
    if (this.dropped > 0) this.noteDropped();
    this.flush();
    await this.sending;
    return { chunks: this.seq, failedChunks: this.failedChunks };
  }
}
