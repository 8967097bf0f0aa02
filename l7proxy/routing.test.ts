// Routing and resilience through a running proxy against loopback backends: splits, matches, timeouts, retries,
// circuit breaking, rate limits, faults, filters, mirroring, outlier ejection, live config swap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { ProxyConfig, RouteRuleConfig, TrafficPolicyConfig } from './config.ts';
import { request, SERVICE_IP, SERVICE_PORT, startEcho, startTestProxy, type EchoServer } from './testing/harness.ts';

/** A config with backends named after echo servers and one route with `rules`. */
function routed(backends: Record<string, { ports: number[]; policy?: TrafficPolicyConfig }>, rules: RouteRuleConfig[]): ProxyConfig {
  return {
    version: 'routed',
    services: [{ name: 'default/echo', addresses: [{ ip: SERVICE_IP, port: SERVICE_PORT }], protocol: 'http', defaultBackend: Object.keys(backends)[0]!, routes: [{ name: 'default/echo', createdAtMs: 1, rules }] }],
    backends: Object.entries(backends).map(([name, b]) => ({ name, endpoints: b.ports.map((port) => ({ ip: '127.0.0.1', port, ready: true })), trafficPolicy: b.policy })),
  };
}
const servedBy = (r: { body: string }): string => (JSON.parse(r.body) as { name: string }).name;

async function withEchoes(names: string[], fn: (e: EchoServer[]) => Promise<void>): Promise<void> {
  const echoes = await Promise.all(names.map((n) => startEcho(n)));
  try { await fn(echoes); } finally { await Promise.all(echoes.map((e) => e.close())); }
}

test('90/10 weighted split within ±3% over 2,000 requests', async () => {
  await withEchoes(['stable', 'canary'], async ([stable, canary]) => {
    const p = await startTestProxy(routed({ 'default/stable:80': { ports: [stable!.port] }, 'default/canary:80': { ports: [canary!.port] } }, [
      { backendRefs: [{ backend: 'default/stable:80', weight: 90 }, { backend: 'default/canary:80', weight: 10 }] },
    ]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const counts: Record<string, number> = {};
      for (let batch = 0; batch < 100; batch++) {
        const rs = await Promise.all(Array.from({ length: 20 }, () => request(p.port, { agent })));
        for (const r of rs) { assert.equal(r.status, 200); counts[servedBy(r)] = (counts[servedBy(r)] ?? 0) + 1; }
      }
      const share = (counts.canary ?? 0) / 2000;
      assert.ok(Math.abs(share - 0.1) <= 0.03, `canary share ${share}`);
      assert.equal(stable!.requests.length + canary!.requests.length, 2000);
    } finally { agent.destroy(); await p.close(); }
  });
});

test('header, method and path matches pick their rule; no match → 404', async () => {
  await withEchoes(['main', 'canary', 'writer'], async ([main, canary, writer]) => {
    const p = await startTestProxy(routed({ 'default/main:80': { ports: [main!.port] }, 'default/canary:80': { ports: [canary!.port] }, 'default/writer:80': { ports: [writer!.port] } }, [
      { matches: [{ path: { type: 'PathPrefix', value: '/api' } }], backendRefs: [{ backend: 'default/main:80' }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-canary', value: 'yes' }] }], backendRefs: [{ backend: 'default/canary:80' }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }], backendRefs: [{ backend: 'default/writer:80' }] },
    ]));
    try {
      assert.equal(servedBy(await request(p.port, { path: '/api/x' })), 'main');
      assert.equal(servedBy(await request(p.port, { path: '/api/x', headers: { 'x-canary': 'yes' } })), 'canary');
      assert.equal(servedBy(await request(p.port, { path: '/api/x', method: 'POST', body: 'b' })), 'writer');
      assert.equal((await request(p.port, { path: '/other' })).status, 404);
    } finally { await p.close(); }
  });
});

test('request timeout: 504 at the deadline ±10%, including retries; backendRequest per attempt', async () => {
  await withEchoes(['slow'], async ([slow]) => {
    const p = await startTestProxy(routed({ 'default/slow:80': { ports: [slow!.port] } }, [
      { matches: [{ path: { type: 'Exact', value: '/whole' } }], timeouts: { requestMs: 400 }, retry: { attempts: 3, codes: [504], backoffMs: 1 }, backendRefs: [{ backend: 'default/slow:80' }] },
      { matches: [{ path: { type: 'Exact', value: '/per-try' } }], timeouts: { requestMs: 2000, backendRequestMs: 150 }, retry: { attempts: 2, codes: [504], backoffMs: 1 }, backendRefs: [{ backend: 'default/slow:80' }] },
    ]));
    try {
      await request(p.port, { path: '/whole' }); // warm up: first-use compilation is not the proxy's timer
      let t0 = performance.now();
      const r = await request(p.port, { path: '/whole', headers: { 'x-echo-delay': '2000' } });
      let took = performance.now() - t0;
      assert.equal(r.status, 504);
      assert.ok(took >= 360 && took <= 440, `504 after ${took} ms, want 400 ±10%`);
      t0 = performance.now();
      const r2 = await request(p.port, { path: '/per-try', headers: { 'x-echo-delay': '1000' } });
      took = performance.now() - t0;
      assert.equal(r2.status, 504);
      assert.ok(took >= 400 && took < 1000, `three attempts of 150 ms each: ${took} ms`);
      assert.equal(slow!.requests.filter((q) => q.url === '/per-try').length, 3);
      assert.ok(p.proxy.stats.timeouts.request >= 1 && p.proxy.stats.timeouts.backendRequest >= 3);
    } finally { await p.close(); }
  });
});

test('retries on 503 are counted at the backend and stay within the budget', async () => {
  let failuresLeft = 0;
  const flaky = await startEcho('flaky', {
    handler: (_req, res) => {
      if (failuresLeft <= 0) return false;
      failuresLeft--;
      res.writeHead(503, { 'content-length': 0 }); res.end();
      return true;
    },
  });
  const p = await startTestProxy(routed({ 'default/flaky:80': { ports: [flaky.port], policy: { retryBudget: { percent: 0, minRetriesPerSecond: 0.3 } } } }, [
    { retry: { attempts: 3, codes: [503], backoffMs: 5 }, backendRefs: [{ backend: 'default/flaky:80' }] },
  ])).catch(async (e: unknown) => { await flaky.close(); throw e; });
  try {
    // A body larger than the replay buffer is streamed, so it is never retried (the budget is still full here).
    failuresLeft = 1;
    const big = await request(p.port, { method: 'PUT', path: '/big', body: 'x'.repeat(100 * 1024) });
    assert.equal(big.status, 503);
    assert.equal(flaky.requests.length, 1, 'streamed body: no retry');
    assert.equal(flaky.requests[0]!.body.length, 100 * 1024);
    flaky.requests.length = 0;
    failuresLeft = 2;
    const r = await request(p.port, { method: 'POST', path: '/r', body: 'payload' });
    assert.equal(r.status, 200);
    assert.equal(flaky.requests.length, 3, 'two failures and the success reached the backend');
    assert.ok(flaky.requests.every((q) => q.body === 'payload'), 'the buffered body is replayed');
    assert.equal(p.proxy.stats.retries, 2);
    // Budget: 0.3/s × 10 s = 3 retries in the window; two are spent, one is left.
    failuresLeft = 10;
    const before = flaky.requests.length;
    const r2 = await request(p.port, { path: '/r2' });
    assert.equal(r2.status, 503);
    assert.equal(flaky.requests.length - before, 2, 'one retry left in the budget');
    assert.ok(p.proxy.stats.retryBudgetExhausted >= 1);
  } finally { await p.close(); await flaky.close(); }
});

test('circuit breaker opens with x-nodemesh-overloaded and closes again', async () => {
  await withEchoes(['slow'], async ([slow]) => {
    const p = await startTestProxy(routed({ 'default/slow:80': { ports: [slow!.port], policy: { circuitBreaker: { maxRequests: 2 } } } }, [{ backendRefs: [{ backend: 'default/slow:80' }] }]));
    try {
      const rs = await Promise.all(Array.from({ length: 5 }, () => request(p.port, { headers: { 'x-echo-delay': '300' } })));
      const codes = rs.map((r) => r.status).sort();
      assert.deepEqual(codes, [200, 200, 503, 503, 503]);
      assert.ok(rs.filter((r) => r.status === 503).every((r) => r.headers['x-nodemesh-overloaded'] === 'max-requests'));
      assert.equal(slow!.requests.length, 2);
      assert.equal((await request(p.port)).status, 200, 'closed again once the load is gone');
      assert.equal(p.proxy.stats.circuitBreaker['max-requests'], 3);
    } finally { await p.close(); }
  });
});

test('local rate limit → 429 with retry-after, per source identity when asked', async () => {
  await withEchoes(['e'], async ([e]) => {
    const p = await startTestProxy(routed({ 'default/e:80': { ports: [e!.port], policy: { rateLimit: { requestsPerSecond: 1, burst: 2 } } } }, [{ backendRefs: [{ backend: 'default/e:80' }] }]));
    try {
      const codes = [];
      for (let i = 0; i < 3; i++) codes.push(await request(p.port));
      assert.deepEqual(codes.map((r) => r.status), [200, 200, 429]);
      assert.equal(codes[2]!.headers['retry-after'], '1');
      assert.equal(e!.requests.length, 2);
    } finally { await p.close(); }
  });
});

test('fault injection, redirect, rewrite, header modifiers and mirroring', async () => {
  await withEchoes(['main', 'shadow'], async ([main, shadow]) => {
    const p = await startTestProxy({
      ...routed({ 'default/main:80': { ports: [main!.port] }, 'default/shadow:80': { ports: [shadow!.port] }, 'default/broken:80': { ports: [main!.port], policy: { faultInjection: { abort: { percent: 100, httpStatus: 418 } } } } }, [
        { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'new.default', statusCode: 301 } }] },
        { matches: [{ path: { type: 'PathPrefix', value: '/v1' } }], filters: [
          { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' }, hostname: 'rewritten.default' } },
          { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-set', value: 'yes' }], remove: ['x-drop'] } },
          { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'x-resp', value: 'added' }] } },
          { type: 'RequestMirror', requestMirror: { backend: 'default/shadow:80' } },
        ], backendRefs: [{ backend: 'default/main:80' }] },
        { matches: [{ path: { type: 'PathPrefix', value: '/fault' } }], backendRefs: [{ backend: 'default/broken:80' }] },
      ]),
    });
    try {
      const red = await request(p.port, { path: '/old/page?q=1' });
      assert.equal(red.status, 301);
      assert.equal(red.headers.location, 'http://new.default/old/page?q=1');
      const r = await request(p.port, { path: '/v1/items?x=1', headers: { 'x-drop': '1', 'x-keep': '1' } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-resp'], 'added');
      const got = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
      assert.equal(got.url, '/v2/items?x=1');
      assert.equal(got.headers.host, 'rewritten.default');
      assert.equal(got.headers['x-set'], 'yes');
      assert.equal(got.headers['x-drop'], undefined);
      assert.equal(got.headers['x-keep'], '1');
      for (let i = 0; i < 50 && shadow!.requests.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
      assert.equal(shadow!.requests[0]?.url, '/v2/items?x=1', 'the mirror got a copy');
      assert.equal((await request(p.port, { path: '/fault' })).status, 418);
      assert.equal(main!.requests.filter((q) => q.url.startsWith('/fault')).length, 0);
    } finally { await p.close(); }
  });
});

test('a mirror that hangs or is down never affects the response', async () => {
  await withEchoes(['main'], async ([main]) => {
    const p = await startTestProxy(routed({ 'default/main:80': { ports: [main!.port] }, 'default/dead:80': { ports: [1] } }, [
      { filters: [{ type: 'RequestMirror', requestMirror: { backend: 'default/dead:80' } }], backendRefs: [{ backend: 'default/main:80' }] },
    ]));
    try {
      const t0 = performance.now();
      assert.equal((await request(p.port, { path: '/m' })).status, 200);
      assert.ok(performance.now() - t0 < 500);
    } finally { await p.close(); }
  });
});

test('outlier detection ejects a failing endpoint; retries move to another endpoint', async () => {
  const bad = await startEcho('bad', { handler: (_q, res) => { res.writeHead(500, { 'content-length': 0 }); res.end(); return true; } });
  const good = await startEcho('good');
  const p = await startTestProxy(routed({ 'default/pool:80': { ports: [bad.port, good.port], policy: { outlierDetection: { consecutive5xx: 2, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50 } } } }, [
    { backendRefs: [{ backend: 'default/pool:80' }] },
  ]));
  try {
    const statuses = [];
    for (let i = 0; i < 12; i++) statuses.push((await request(p.port)).status);
    assert.equal(bad.requests.length, 2, 'ejected after two consecutive 5xx');
    assert.equal(p.proxy.stats.upstream.ejections, 1);
    assert.deepEqual(statuses.slice(4), Array(8).fill(200));
  } finally { await p.close(); await bad.close(); await good.close(); }
});

test('no ready endpoint → 503; connect failure is retried on another endpoint', async () => {
  await withEchoes(['ok'], async ([ok]) => {
    const p = await startTestProxy(routed({ 'default/mixed:80': { ports: [1, ok!.port], policy: { connectTimeoutMs: 500 } }, 'default/none:80': { ports: [] } }, [
      { matches: [{ path: { type: 'PathPrefix', value: '/none' } }], backendRefs: [{ backend: 'default/none:80' }] },
      { retry: { attempts: 1 }, backendRefs: [{ backend: 'default/mixed:80' }] },
    ]));
    try {
      assert.equal((await request(p.port, { path: '/none' })).status, 503);
      for (let i = 0; i < 4; i++) assert.equal((await request(p.port, { path: '/x' })).status, 200);
      assert.ok(p.proxy.stats.upstream.connectFailures >= 1);
    } finally { await p.close(); }
  });
});

test('applyConfig swaps routes live; a rejected config leaves traffic untouched', async () => {
  await withEchoes(['a', 'b'], async ([a, b]) => {
    const cfgA = routed({ 'default/a:80': { ports: [a!.port] }, 'default/b:80': { ports: [b!.port] } }, [{ backendRefs: [{ backend: 'default/a:80' }] }]);
    const p = await startTestProxy(cfgA);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal(servedBy(await request(p.port, { agent })), 'a');
      const bad = structuredClone(cfgA); bad.services[0]!.routes![0]!.rules[0]!.backendRefs = [{ backend: 'default/missing:80' }];
      assert.throws(() => p.proxy.applyConfig(bad), /dangling reference/);
      assert.equal(servedBy(await request(p.port, { agent })), 'a');
      const cfgB = structuredClone(cfgA); cfgB.version = 'b'; cfgB.services[0]!.routes![0]!.rules[0]!.backendRefs = [{ backend: 'default/b:80' }];
      p.proxy.applyConfig(cfgB);
      assert.equal(servedBy(await request(p.port, { agent })), 'b', 'same keep-alive connection, new config');
    } finally { agent.destroy(); await p.close(); }
  });
});
