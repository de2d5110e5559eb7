/**
 * A StoreClock that tests move by hand: `now()` stands still until `advance(ms)`, which fires,
 * in order, every timer that falls due on the way (lease expiry, the agent expiry sweep). No
 * test waits for real time to pass.
 */
import type { StoreClock } from "../../src/control-plane/store.js";

interface Timer {
  readonly at: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export class TestClock implements StoreClock {
  private current = Date.now();
  private readonly timers: Timer[] = [];

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): { cancel(): void } {
    const timer: Timer = { at: this.current + ms, fn, cancelled: false };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Moves the clock forward, firing each timer due on the way at its own time. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      const due = this.timers.filter((t) => !t.cancelled && t.at <= target).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.current = Math.max(this.current, due.at);
      due.fn();
    }
    this.current = target;
  }
}
