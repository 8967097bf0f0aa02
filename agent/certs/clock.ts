/** The clock the certificate manager runs on: real time in production, a fake one in tests. */

/** Time source and timers. Handles are opaque. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a timer from `setTimeout`. */
  clearTimeout(handle: unknown): void;
}

/** Node's longest timer; longer waits are split (a 30-day wait would otherwise fire at once). */
export const MAX_TIMER_MS = 2_147_483_647;

/** Real time. Timers are unref'd: pending renewals never keep a process alive that is shutting down. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};
