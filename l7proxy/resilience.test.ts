import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pickEndpoint, recordOutcome, type EndpointState } from './balance.ts';
import { computeAdmission, computeBackoff, computeFault, LocalRateLimiter, RetryBudget, TokenBucket } from './resilience.ts';

const ep = (i: number): EndpointState => ({ key: `10.0.0.${i}:80`, ip: `10.0.0.${i}`, port: 80, ready: true, nodeName: undefined, inflight: 0, consecutive5xx: 0, ejectedUntilMs: 0, ejections: 0 });

test('retry budget: floor per second plus a percentage of requests, over a sliding window', () => {
  const b = new RetryBudget({ percent: 20, minRetriesPerSecond: 1 });
  let allowed = 0;
  for (let i = 0; i < 100; i++) { b.recordRequest(1000); if (b.tryRetry(1000)) allowed++; }
  assert.equal(allowed, 30, '10 (floor over 10 s) + 20% of 100');
  assert.equal(b.tryRetry(1000), false);
  assert.equal(b.tryRetry(12_500), true, 'the window has moved on');
});

test('token bucket and per-identity limiter', () => {
  const t = new TokenBucket(10, 2, 0);
  assert.ok(t.take(0).ok); assert.ok(t.take(0).ok);
  const no = t.take(0);
  assert.ok(!no.ok && no.retryAfterMs === 100);
  assert.ok(t.take(100).ok);
  const l = new LocalRateLimiter({ requestsPerSecond: 1, burst: 1, perSourceIdentity: true });
  assert.ok(l.take('a', 0).ok); assert.ok(!l.take('a', 0).ok); assert.ok(l.take('b', 0).ok);
});

test('circuit breaker admission', () => {
  assert.equal(computeAdmission(5, undefined), undefined);
  assert.equal(computeAdmission(2, { maxRequests: 2 }), 'max-requests');
  assert.equal(computeAdmission(1, { maxRequests: 2 }), undefined);
  assert.equal(computeAdmission(3, { maxConnections: 2, maxPendingRequests: 1 }), 'max-pending-requests');
  assert.equal(computeAdmission(2, { maxConnections: 2, maxPendingRequests: 1 }), undefined);
  assert.equal(computeAdmission(2, { maxConnections: 2, maxPendingRequests: 0 }), 'max-connections');
});

test('backoff and faults', () => {
  assert.equal(computeBackoff(100, 1, 0.5), 50);
  assert.equal(computeBackoff(100, 10, 0.999), 999);
  assert.deepEqual(computeFault({ delay: { percent: 50, durationMs: 7 }, abort: { percent: 10, httpStatus: 503 } }, 0.2, 0.05), { delayMs: 7, abortStatus: 503 });
  assert.deepEqual(computeFault({ delay: { percent: 50, durationMs: 7 } }, 0.7, 0), { delayMs: 0, abortStatus: undefined });
});

test('load balancers', () => {
  const eps = [ep(1), ep(2), ep(3)];
  const ctx = { hashKey: undefined, rand: Math.random, nowMs: 0 };
  assert.deepEqual([0, 1, 2, 3].map((c) => pickEndpoint(eps, undefined, { ...ctx, cursor: c })!.ip), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1']);
  eps[0]!.inflight = 5; eps[1]!.inflight = 5;
  let third = 0;
  for (let i = 0; i < 300; i++) if (pickEndpoint(eps, { type: 'LeastRequest' }, { ...ctx, cursor: 0 })!.ip === '10.0.0.3') third++;
  assert.ok(third > 150, `least request prefers the idle endpoint (${third}/300)`);
  const h = (k: string) => pickEndpoint(eps, { type: 'ConsistentHash', hashOn: { header: 'x-user' } }, { ...ctx, cursor: 0, hashKey: k })!.key;
  assert.equal(h('alice'), h('alice'));
  const spread = new Set(Array.from({ length: 50 }, (_, i) => h(`user-${i}`)));
  assert.equal(spread.size, 3);
  // Rendezvous: removing an endpoint only moves the keys that were on it.
  const before = Array.from({ length: 200 }, (_, i) => h(`k${i}`));
  const fewer = eps.slice(0, 2);
  const after = Array.from({ length: 200 }, (_, i) => pickEndpoint(fewer, { type: 'ConsistentHash', hashOn: { header: 'x' } }, { ...ctx, cursor: 0, hashKey: `k${i}` })!.key);
  assert.ok(before.every((b, i) => b === eps[2]!.key || b === after[i]));
  assert.equal(pickEndpoint([{ ...ep(1), ready: false }], undefined, { ...ctx, cursor: 0 }), undefined);
});

test('outlier ejection with a cap, and panic mode when all are ejected', () => {
  const eps = [ep(1), ep(2), ep(3), ep(4)];
  const od = { consecutive5xx: 2, baseEjectionTimeMs: 1000, maxEjectionPercent: 50 };
  assert.equal(recordOutcome(eps[0]!, true, eps, od, 0), false);
  assert.equal(recordOutcome(eps[0]!, true, eps, od, 0), true);
  assert.equal(eps[0]!.ejectedUntilMs, 1000);
  recordOutcome(eps[1]!, true, eps, od, 0); assert.equal(recordOutcome(eps[1]!, true, eps, od, 0), true);
  recordOutcome(eps[2]!, true, eps, od, 0); assert.equal(recordOutcome(eps[2]!, true, eps, od, 0), false, '50% cap reached');
  for (let i = 0; i < 20; i++) assert.notEqual(pickEndpoint(eps, { type: 'Random' }, { cursor: 0, hashKey: undefined, rand: Math.random, nowMs: 500 })!.key, eps[0]!.key);
  assert.ok(pickEndpoint(eps, undefined, { cursor: 0, hashKey: undefined, rand: Math.random, nowMs: 1000 }), 'back after the ejection time');
  const solo = [ep(9)];
  solo[0]!.ejectedUntilMs = 10_000;
  assert.equal(pickEndpoint(solo, undefined, { cursor: 0, hashKey: undefined, rand: Math.random, nowMs: 0 })!.key, solo[0]!.key, 'panic mode');
});

test('safe retries without a route policy; a route policy (even 0) wins', async () => {
  const { computeMaxRetries, DEFAULT_SAFE_RETRIES } = await import('./resilience.ts');
  assert.equal(computeMaxRetries(undefined), DEFAULT_SAFE_RETRIES);
  assert.equal(computeMaxRetries(0), 0);
  assert.equal(computeMaxRetries(5), 5);
});

test('proxy-error marker: only connect failures and missing endpoints are marked, and only a 503 with it counts', async () => {
  const { computeProxyErrorHeaders, isPeerConnectFailure, PROXY_ERROR_HEADER } = await import('./resilience.ts');
  assert.deepEqual(computeProxyErrorHeaders('NM_ERR_PROXY_UPSTREAM_CONNECT'), [[PROXY_ERROR_HEADER, 'upstream-connect']]);
  assert.deepEqual(computeProxyErrorHeaders('NM_ERR_PROXY_NO_ENDPOINT'), [[PROXY_ERROR_HEADER, 'upstream-connect']]);
  // A reset or a timeout may have reached the workload: never marked.
  assert.deepEqual(computeProxyErrorHeaders('NM_ERR_PROXY_UPSTREAM_RESET'), []);
  assert.deepEqual(computeProxyErrorHeaders('NM_ERR_PROXY_UPSTREAM_TIMEOUT'), []);
  assert.equal(isPeerConnectFailure(503, { [PROXY_ERROR_HEADER]: 'upstream-connect' }), true);
  assert.equal(isPeerConnectFailure(503, {}), false);
  assert.equal(isPeerConnectFailure(502, { [PROXY_ERROR_HEADER]: 'upstream-connect' }), false);
});

test('default ejection applies to connect failures only; a configured policy always wins', async () => {
  const { computeOutlierPolicy, CONNECT_FAILURE_EJECTION } = await import('./resilience.ts');
  assert.equal(computeOutlierPolicy(undefined, false), undefined);
  assert.deepEqual(computeOutlierPolicy(undefined, true), CONNECT_FAILURE_EJECTION);
  const mine = { consecutive5xx: 9, baseEjectionTimeMs: 1, maxEjectionPercent: 10 };
  assert.equal(computeOutlierPolicy(mine, true), mine);
  assert.equal(computeOutlierPolicy(mine, false), mine);
});
