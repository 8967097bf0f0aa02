/** A manual clock for tests: time moves only in `advance`, timers fire in order, async work settles between them. */
import type { Clock } from '../clock.ts';

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

/** Fake `Clock`. Set `settle` to a function that waits for the code under test (e.g. `() => manager.idle()`). */
export class FakeClock implements Clock {
  #now: number;
  #timers: Timer[] = [];
  #next = 1;
  /** Awaited after every timer callback, so async work it starts finishes (and arms its timers) in time order. */
  settle: () => Promise<void> = async () => {};

  constructor(startMs: number) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const t = { id: this.#next++, at: this.#now + Math.max(0, ms), fn };
    this.#timers.push(t);
    return t.id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }

  /** Moves time forward by `ms`, firing every timer due on the way, earliest first. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await this.settle();
    for (;;) {
      const due = this.#timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#now = Math.max(this.#now, due.at);
      due.fn();
      await this.settle();
    }
    this.#now = target;
  }

  /** Number of armed timers (to check nothing is left behind). */
  get pendingTimers(): number {
    return this.#timers.length;
  }
}
