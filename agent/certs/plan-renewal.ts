/** Pure timing of renewals and retries: half-life with jitter, exponential backoff bounded by expiry. */

/** Retry settings (ms). */
export interface RetryPolicy {
  /** First retry delay (default 1 s). */
  initialMs: number;
  /** Longest delay between attempts (default 20 s, so a CA that comes back is used within ~20 s: F9 asks ≤ 30 s). */
  maxMs: number;
  /** Growth per failed attempt (default 2). */
  factor: number;
  /** Shortest delay ever used, even right before expiry (default 250 ms), so a dead CA is not hammered. */
  floorMs: number;
}

/** Defaults for `RetryPolicy`. */
export const DEFAULT_RETRY: RetryPolicy = { initialMs: 1_000, maxMs: 20_000, factor: 2, floorMs: 250 };

/** Renewal jitter: ±10 % of the half-life, so the pods of a node (and nodes of a cluster) spread out. */
export const DEFAULT_JITTER = 0.1;

/**
 * When to renew a certificate received at `receivedAtMs` that ends at `notAfterMs`: half of the remaining
 * lifetime, times (1 ± jitter). `random` is in [0, 1). The start is the later of receipt and notBefore, since a
 * backdated notBefore is not time the certificate was ours.
 */
export function computeRenewAt(receivedAtMs: number, notBeforeMs: number, notAfterMs: number, random: number, jitter = DEFAULT_JITTER): number {
  const start = Math.max(receivedAtMs, notBeforeMs);
  const life = Math.max(0, notAfterMs - start);
  return start + life * 0.5 * (1 + jitter * (2 * random - 1));
}

/**
 * Delay before retry number `attempt` (1 = first retry): exponential with ±jitter, capped at `maxMs`. While a
 * valid certificate is held it is also capped at half the time left, so attempts keep coming before expiry
 * (never sleeping past it), but never below `floorMs`.
 */
export function computeRetryDelay(attempt: number, nowMs: number, notAfterMs: number | undefined, random: number, policy: RetryPolicy = DEFAULT_RETRY, jitter = DEFAULT_JITTER): number {
  const base = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, attempt - 1));
  let delay = base * (1 + jitter * (2 * random - 1));
  if (notAfterMs !== undefined && notAfterMs > nowMs) delay = Math.min(delay, (notAfterMs - nowMs) / 2);
  return Math.max(policy.floorMs, delay);
}
