/**
 * Exponential back-off with jitter, the way client-go's reflector does it (tools/cache/reflector.go:
 * 800 ms doubling to a 30 s cap, jitter factor 1, reset once 2 min pass without a failure), and a
 * retry-on-conflict helper like client-go's retry.RetryOnConflict (re-read before each try).
 */

/** Settings of an ExponentialBackoff. */
export interface BackoffOptions {
  /** First delay (ms). Default 800. */
  initialMs?: number;
  /** Largest delay (ms), jitter included. Default 30 000. */
  maxMs?: number;
  /** Growth per failure. Default 2. */
  factor?: number;
  /** The delay d becomes d + random·jitter·d (client-go's wait.Jitter). Default 1. */
  jitter?: number;
  /** A failure more than this long after the previous one starts again from initialMs. Default 120 000. */
  resetAfterMs?: number;
  /** Random source in [0, 1); injected by tests. */
  random?: () => number;
}

/** The reflector's settings. */
export const CLIENT_GO_BACKOFF: Required<Omit<BackoffOptions, 'random'>> = {
  initialMs: 800,
  maxMs: 30_000,
  factor: 2,
  jitter: 1,
  resetAfterMs: 120_000,
};

/**
 * Delays between retries of one thing (one informer, one writer). `next(now)` is called on each failure and
 * answers how long to wait; a long healthy period (no failure for resetAfterMs) starts over.
 */
export class ExponentialBackoff {
  readonly #o: Required<BackoffOptions>;
  #step = 0;
  #lastFailureAt: number | undefined;

  constructor(options: BackoffOptions = {}) {
    this.#o = { ...CLIENT_GO_BACKOFF, random: Math.random, ...options };
  }

  /** The delay before the next attempt after a failure at `now` (ms since epoch). */
  next(now: number): number {
    if (this.#lastFailureAt !== undefined && now - this.#lastFailureAt > this.#o.resetAfterMs) this.#step = 0;
    this.#lastFailureAt = now;
    const base = Math.min(this.#o.maxMs, this.#o.initialMs * this.#o.factor ** this.#step);
    if (base < this.#o.maxMs) this.#step++;
    const jittered = base + this.#o.random() * this.#o.jitter * base;
    return Math.round(Math.min(this.#o.maxMs, jittered));
  }

  /** Forgets past failures (after an explicit success where waiting resetAfterMs is not wanted). */
  reset(): void {
    this.#step = 0;
    this.#lastFailureAt = undefined;
  }

  /** Failures counted in the current series. */
  get step(): number {
    return this.#step;
  }
}

/** HTTP status of a client-node ApiException (or a thrown object with statusCode); undefined for network errors. */
export function httpStatusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | null | undefined;
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** True for a 409 Conflict (optimistic concurrency lost, or AlreadyExists on create). */
export function isConflict(err: unknown): boolean {
  return httpStatusOf(err) === 409;
}

/** True for a 404 Not Found. */
export function isNotFound(err: unknown): boolean {
  return httpStatusOf(err) === 404;
}

/** client-go's retry.DefaultRetry: 5 tries, 10 ms apart, jitter 0.1. */
export const DEFAULT_CONFLICT_RETRY = { attempts: 5, delayMs: 10, jitter: 0.1 } as const;

/**
 * Runs `attempt` until it does not throw a 409, at most `attempts` times; `attempt` must re-read the object
 * itself on every call after the first (its argument is the 0-based try number). Other errors are thrown at once.
 */
export async function retryOnConflict<T>(
  attempt: (tryNumber: number) => Promise<T>,
  opts: { attempts?: number; delayMs?: number; jitter?: number; sleep?: (ms: number) => Promise<void> } = {},
): Promise<T> {
  const attempts = opts.attempts ?? DEFAULT_CONFLICT_RETRY.attempts;
  const delay = opts.delayMs ?? DEFAULT_CONFLICT_RETRY.delayMs;
  const jitter = opts.jitter ?? DEFAULT_CONFLICT_RETRY.jitter;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (let i = 0; ; i++) {
    try {
      return await attempt(i);
    } catch (err) {
      if (!isConflict(err) || i + 1 >= attempts) throw err;
      await sleep(delay + Math.random() * jitter * delay);
    }
  }
}

/** Rejects with a clear message when `p` takes longer than `ms`; the underlying request is left to fail on its own. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: no answer from the API server within ${ms} ms`)), ms);
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
