// Overload shedding: the decision (thresholds, escalation, hysteresis) and a running proxy over its in-flight limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { computeLimits, validateConfig } from './config.ts';
import { computeOverloadAction, INITIAL_OVERLOAD_STATE, OverloadMonitor, RECOVERY_HOLD_MS, type OverloadLimits, type OverloadState } from './overload.ts';
import { request, simpleConfig, startEcho, startTestProxy } from './testing/harness.ts';

const LIMITS: OverloadLimits = { maxEventLoopLagMs: 500, maxInFlightRequests: 100 };
const decide = (lagMs: number, inFlight: number, nowMs: number, previous: OverloadState = INITIAL_OVERLOAD_STATE): OverloadState =>
  computeOverloadAction({ lagMs, inFlight, nowMs, limits: LIMITS, previous });

test('admits under both limits; sheds over either; stops accepting far over', () => {
  assert.equal(decide(0, 0, 0).action, 'admit');
  assert.equal(decide(500, 99, 0).action, 'admit');
  assert.equal(decide(501, 0, 0).action, 'shed');
  assert.equal(decide(0, 100, 0).action, 'shed', 'the request that would be the 101st in flight is shed');
  assert.equal(decide(1001, 0, 0).action, 'stop-accepting');
  assert.equal(decide(0, 200, 0).action, 'stop-accepting');
  assert.equal(decide(1000, 199, 0).action, 'shed');
});

test('defaults never trigger in normal operation and are configurable', () => {
  const d = computeLimits({});
  assert.equal(d.maxEventLoopLagMs, 500);
  assert.equal(d.maxInFlightRequests, 10_000);
  assert.equal(computeOverloadAction({ lagMs: 50, inFlight: 2000, nowMs: 0, limits: d, previous: INITIAL_OVERLOAD_STATE }).action, 'admit');
  assert.equal(computeLimits({ limits: { maxInFlightRequests: 3 } }).maxInFlightRequests, 3);
  const issues = validateConfig({ ...simpleConfig([1]), limits: { maxInFlightRequests: 0, maxEventLoopLagMs: 1 } });
  assert.deepEqual(issues.map((i) => i.path).sort(), ['limits.maxEventLoopLagMs', 'limits.maxInFlightRequests']);
});

test('hysteresis: stays shedding until calm (≤ half the limits) for the hold time', () => {
  let s = decide(600, 0, 1000);
  assert.equal(s.action, 'shed');
  // Just under the limit again: not calm, keeps shedding (no flapping at the threshold).
  s = decide(400, 0, 1100, s);
  assert.equal(s.action, 'shed');
  s = decide(0, 60, 1000 + RECOVERY_HOLD_MS + 1, s);
  assert.equal(s.action, 'shed', 'in-flight above half the limit is not calm');
  // Calm, but not yet for the hold time since the last overload.
  s = decide(10, 10, 1000 + RECOVERY_HOLD_MS - 1, s);
  assert.equal(s.action, 'shed');
  s = decide(10, 10, 1000 + RECOVERY_HOLD_MS, s);
  assert.equal(s.action, 'admit');
  // A new overload restarts the hold.
  s = decide(0, 100, 5000, s);
  assert.equal(s.action, 'shed');
  assert.equal(decide(0, 0, 5000 + RECOVERY_HOLD_MS - 1, s).action, 'shed');
});

test('stop-accepting steps down to shed (not straight to admit) once under the limits', () => {
  let s = decide(2000, 0, 0);
  assert.equal(s.action, 'stop-accepting');
  s = decide(300, 0, 100, s);
  assert.equal(s.action, 'shed');
  s = decide(0, 0, RECOVERY_HOLD_MS, s);
  assert.equal(s.action, 'admit');
});

test('the monitor measures a blocked event loop as lag and sheds, then recovers', async () => {
  const m = new OverloadMonitor(() => ({ maxEventLoopLagMs: 50, maxInFlightRequests: 100 }));
  m.start();
  try {
    await new Promise((r) => setTimeout(r, 150));
    const until = performance.now() + 300;
    while (performance.now() < until) { /* block the loop */ }
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 1));
    assert.ok(m.lagMs >= 150, `lag ${m.lagMs}`);
    assert.equal(m.action, 'stop-accepting');
    // Recovery needs a calm second; allow for a busy shared machine.
    const deadline = performance.now() + RECOVERY_HOLD_MS + 3000;
    while (m.decide() !== 'admit' && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(m.decide(), 'admit');
  } finally { m.stop(); }
});

test('over its in-flight limit the proxy answers 503 + x-nodemesh-overloaded: proxy at once, counts it, recovers', async () => {
  const echo = await startEcho('e');
  const p = await startTestProxy(simpleConfig([echo.port], {}, { limits: { maxInFlightRequests: 2 } }));
  try {
    const slow = [request(p.port, { headers: { 'x-echo-delay': '600' } }), request(p.port, { headers: { 'x-echo-delay': '600' } })];
    await new Promise((r) => setTimeout(r, 150));
    const t0 = performance.now();
    const shed = await request(p.port);
    assert.ok(performance.now() - t0 < 300, 'answered without waiting for the slow requests');
    assert.equal(shed.status, 503);
    assert.equal(shed.headers['x-nodemesh-overloaded'], 'proxy');
    assert.equal(shed.headers['retry-after'], '1');
    assert.equal(shed.headers['connection'], 'close');
    assert.equal(p.proxy.stats.rejected.overloaded, 1);
    assert.equal(p.log.at(-1)?.reason, 'proxy overloaded');

    // gRPC over HTTP/2 gets UNAVAILABLE as a trailers-only answer.
    const client = http2.connect(`http://127.0.0.1:${p.port}`);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const s = client.request({ ':method': 'POST', ':path': '/pkg.Svc/Call', 'content-type': 'application/grpc', te: 'trailers' });
        s.on('response', resolve);
        s.on('error', reject);
        s.end();
      });
      assert.equal(headers[':status'], 200);
      assert.equal(headers['grpc-status'], '14');
      assert.equal(headers['x-nodemesh-overloaded'], 'proxy');
    } finally { client.close(); }
    assert.equal(p.proxy.stats.rejected.overloaded, 2);

    assert.deepEqual((await Promise.all(slow)).map((r) => r.status), [200, 200]);
    // After the hold time with nothing in flight, normal service.
    await new Promise((r) => setTimeout(r, RECOVERY_HOLD_MS + 100));
    const ok = await request(p.port);
    assert.equal(ok.status, 200);
    assert.equal(echo.requests.length, 3, 'shed requests never reached the backend');
  } finally { await p.close(); await echo.close(); }
});
