/** Resilience primitives with an injected clock: retry budget, token-bucket rate limit, circuit-breaker check, backoff, faults. */
import type { TrafficPolicyConfig } from './config.ts';

/** Linkerd's defaults: retries may add 20% to the load, and 10 per second are always allowed. */
export const DEFAULT_RETRY_BUDGET = { percent: 20, minRetriesPerSecond: 10 } as const;
/** Budget window: requests and retries older than this no longer count. */
const BUDGET_WINDOW_S = 10;

/**
 * A retry budget over a sliding 10-second window kept in one-second buckets: a retry is allowed while
 * retries < minRetriesPerSecond × window + percent% of requests in the window. It stops retry storms.
 */
export class RetryBudget {
  #percent: number;
  #floor: number;
  #requests = new Float64Array(BUDGET_WINDOW_S);
  #retries = new Float64Array(BUDGET_WINDOW_S);
  #second = -1;
  constructor(budget: { percent: number; minRetriesPerSecond: number }) {
    this.#percent = budget.percent;
    this.#floor = budget.minRetriesPerSecond * BUDGET_WINDOW_S;
  }
  #roll(nowMs: number): number {
    const s = Math.floor(nowMs / 1000);
    if (this.#second < 0) this.#second = s;
    for (let t = this.#second + 1; t <= s && t - this.#second <= BUDGET_WINDOW_S; t++) {
      this.#requests[t % BUDGET_WINDOW_S] = 0;
      this.#retries[t % BUDGET_WINDOW_S] = 0;
    }
    if (s - this.#second > BUDGET_WINDOW_S) { this.#requests.fill(0); this.#retries.fill(0); }
    this.#second = Math.max(this.#second, s);
    return s % BUDGET_WINDOW_S;
  }
  /** Count one original request. */
  recordRequest(nowMs: number): void { this.#requests[this.#roll(nowMs)]! += 1; }
  /** Take one retry from the budget; false when it is spent. */
  tryRetry(nowMs: number): boolean {
    const i = this.#roll(nowMs);
    let req = 0; let ret = 0;
    for (let k = 0; k < BUDGET_WINDOW_S; k++) { req += this.#requests[k]!; ret += this.#retries[k]!; }
    if (ret >= this.#floor + (this.#percent / 100) * req) return false;
    this.#retries[i]! += 1;
    return true;
  }
}

/** A token bucket: `rate` tokens per second up to `burst`. */
export class TokenBucket {
  #rate: number;
  #burst: number;
  #tokens: number;
  #last: number;
  constructor(rate: number, burst: number, nowMs: number) {
    this.#rate = rate; this.#burst = burst; this.#tokens = burst; this.#last = nowMs;
  }
  /** Take a token; when none is left, say in how many ms one will be. */
  take(nowMs: number): { ok: true } | { ok: false; retryAfterMs: number } {
    this.#tokens = Math.min(this.#burst, this.#tokens + ((nowMs - this.#last) / 1000) * this.#rate);
    this.#last = nowMs;
    if (this.#tokens >= 1) { this.#tokens -= 1; return { ok: true }; }
    return { ok: false, retryAfterMs: Math.ceil(((1 - this.#tokens) / this.#rate) * 1000) };
  }
}

/** Most per-identity buckets kept; the oldest is dropped first, so a flood of identities cannot grow memory. */
const MAX_BUCKETS = 10_000;

/** Local rate limit for one backend: one bucket, or one per source identity. */
export class LocalRateLimiter {
  #cfg: NonNullable<TrafficPolicyConfig['rateLimit']>;
  #buckets = new Map<string, TokenBucket>();
  constructor(cfg: NonNullable<TrafficPolicyConfig['rateLimit']>) { this.#cfg = cfg; }
  /** Admit a request from `source` (identity or address) at `nowMs`. */
  take(source: string, nowMs: number): { ok: true } | { ok: false; retryAfterMs: number } {
    const key = this.#cfg.perSourceIdentity ? source : '';
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= MAX_BUCKETS) this.#buckets.delete(this.#buckets.keys().next().value!);
      b = new TokenBucket(this.#cfg.requestsPerSecond, this.#cfg.burst, nowMs);
      this.#buckets.set(key, b);
    }
    return b.take(nowMs);
  }
}

/** Which circuit-breaker limit refused a request (sent in `x-nodemesh-overloaded`). */
export type OverloadReason = 'max-requests' | 'max-pending-requests' | 'max-connections';

/**
 * Circuit-breaker admission for a backend with `inflight` requests already admitted. Requests beyond
 * `maxConnections` wait for a connection (they are "pending"); beyond `maxPendingRequests` of those, or beyond
 * `maxRequests` in total, the request is refused. Unset limits do not apply.
 */
export function computeAdmission(inflight: number, cb: TrafficPolicyConfig['circuitBreaker']): OverloadReason | undefined {
  if (!cb) return undefined;
  if (cb.maxRequests !== undefined && inflight >= cb.maxRequests) return 'max-requests';
  if (cb.maxConnections !== undefined) {
    const pendingLimit = cb.maxPendingRequests ?? Infinity;
    if (inflight >= cb.maxConnections + pendingLimit) return pendingLimit === 0 ? 'max-connections' : 'max-pending-requests';
  }
  return undefined;
}

/** Delay before retry number `retry` (1-based): full jitter over base × 2^(retry-1), capped at 10 × base. */
export function computeBackoff(baseMs: number, retry: number, rand: number): number {
  return Math.floor(rand * Math.min(baseMs * 2 ** (retry - 1), baseMs * 10));
}

/** The fault to inject on one request, drawn with two random numbers in [0,1). */
export function computeFault(
  fault: TrafficPolicyConfig['faultInjection'],
  randDelay: number,
  randAbort: number,
): { delayMs: number; abortStatus: number | undefined } {
  const delayMs = fault?.delay && randDelay * 100 < fault.delay.percent ? fault.delay.durationMs : 0;
  const abortStatus = fault?.abort && randAbort * 100 < fault.abort.percent ? fault.abort.httpStatus : undefined;
  return { delayMs, abortStatus };
}

/**
 * Retries when the route sets none. Without a route policy the retry codes are empty, so only the safe cases are
 * retried (forward.ts): connect failures and requests never sent (any method), and resets of idempotent requests
 * with a replayable body — a pooled keep-alive connection the backend closed just as the request went out (the
 * keep-alive race of a backend shutting down), or a backend killed mid-request. Istio's default is also 2.
 */
export const DEFAULT_SAFE_RETRIES = 2;

/** Retries in force for a route that asks for `routeAttempts` (undefined: no retry policy on the route). */
export function computeMaxRetries(routeAttempts: number | undefined): number {
  return routeAttempts ?? DEFAULT_SAFE_RETRIES;
}

/**
 * Set by a proxy on an error it answers itself because nothing reached a workload (its connect to the endpoint
 * failed, or it has none): the calling node proxy may then retry on another endpoint as if its own connect had
 * failed, whatever the method. Linkerd's `l5d-proxy-error` plays the same part.
 */
export const PROXY_ERROR_HEADER = 'x-nodemesh-proxy-error';
const CONNECT_FAILURE = 'upstream-connect';

/** Headers for an error the proxy answers itself with code `code` (NM_ERR_PROXY_*). */
export function computeProxyErrorHeaders(code: string): [string, string][] {
  return code === 'NM_ERR_PROXY_UPSTREAM_CONNECT' || code === 'NM_ERR_PROXY_NO_ENDPOINT' ? [[PROXY_ERROR_HEADER, CONNECT_FAILURE]] : [];
}

/** True for a peer proxy's answer saying its connect to the workload failed (nothing reached it). */
export function isPeerConnectFailure(statusCode: number, headers: Record<string, string | string[] | undefined>): boolean {
  return statusCode === 503 && headers[PROXY_ERROR_HEADER] === CONNECT_FAILURE;
}

/**
 * Outlier detection without a configured policy: an endpoint that cannot be connected to (a killed pod whose
 * EndpointSlice has not caught up yet) is ejected after 3 consecutive failures ending in a connect failure, for
 * 5 s × ejections, at most half the endpoints. 5xx answers alone never eject by default.
 */
export const CONNECT_FAILURE_EJECTION = { consecutive5xx: 3, baseEjectionTimeMs: 5000, maxEjectionPercent: 50 } as const;

/** The outlier policy for one attempt's outcome: the configured one, else CONNECT_FAILURE_EJECTION for connect failures. */
export function computeOutlierPolicy(configured: TrafficPolicyConfig['outlierDetection'], connectFailed: boolean): TrafficPolicyConfig['outlierDetection'] {
  return configured ?? (connectFailed ? CONNECT_FAILURE_EJECTION : undefined);
}
