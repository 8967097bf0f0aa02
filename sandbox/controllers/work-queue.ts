/**
 * A work queue of object keys as client-go's: a key waiting is queued once however often it is added, a
 * key is never handed to two workers at once, and failures come back with per-key exponential backoff.
 */

/** Backoff settings for failed keys; times in milliseconds. */
export interface BackoffOptions {
  /** Delay after the first failure (ms). */
  baseDelayMs: number;
  /** Ceiling of the delay however many failures (ms). */
  maxDelayMs: number;
  /** Fraction of the delay added or removed at random (0..1), so many failing keys do not retry in step. */
  jitter: number;
}

/** Defaults: 50 ms doubling to 60 s, ±20 %; a conflict retries almost at once, a dead server is not hammered. */
export const defaultBackoff: BackoffOptions = { baseDelayMs: 50, maxDelayMs: 60_000, jitter: 0.2 };

/** Delay before retry number `failures` (0-based): base·2^failures, capped, then jittered. */
export function computeBackoffMs(failures: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = opts.baseDelayMs * 2 ** Math.min(failures, 40);
  const capped = Math.min(exp, opts.maxDelayMs);
  const spread = capped * opts.jitter * (2 * random() - 1);
  return Math.max(0, Math.round(capped + spread));
}

/** A deduplicating, rate-limited queue of keys (`ns/name`). */
export class WorkQueue {
  private readonly queue: string[] = [];
  /** Keys that need processing (queued, or to be re-queued when their worker finishes). */
  private readonly dirty = new Set<string>();
  /** Keys a worker holds right now. */
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  /** Pending delayed adds: key -> [fire time, timer]; only the earliest is kept. */
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly waiters: Array<(key: string | undefined) => void> = [];
  private readonly backoff: BackoffOptions;
  private readonly random: () => number;
  private closed = false;

  constructor(opts: { backoff?: Partial<BackoffOptions>; random?: () => number } = {}) {
    this.backoff = { ...defaultBackoff, ...opts.backoff };
    this.random = opts.random ?? Math.random;
  }

  /** Queues `key` unless it is already waiting; a key being processed is queued again when done. */
  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
    } else {
      this.queue.push(key);
    }
  }

  /** Queues `key` after `delayMs`; an earlier pending delay for the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.closed) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + delayMs;
    const existing = this.delayed.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    // A pending retry alone must not keep the process alive: the informers' watches do while running.
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Queues `key` after its backoff delay and counts one more failure for it. */
  addRateLimited(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    const delay = computeBackoffMs(failures, this.backoff, this.random);
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the failure count of `key` after a successful sync. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** How many times in a row `key` has failed. */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Waits for the next key; undefined once the queue is shut down. Call done(key) after processing. */
  get(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Releases `key`; if it was added while processing, it is queued again now. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  /** Keys waiting (not counting delayed or processing ones). */
  len(): number {
    return this.queue.length;
  }

  /** Stops handing out keys: waiting workers get undefined, delayed adds are dropped. */
  shutDown(): void {
    this.closed = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.queue.length = 0;
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
  }
}
