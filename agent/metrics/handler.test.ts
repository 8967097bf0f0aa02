/** The metrics-only listener (open to pods, unlike the status port) and the /metrics handler's rendering reuse. */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, it } from 'node:test';
import { createMetricsHandler, startMetricsServer } from './handler.ts';
import { Registry } from './registry.ts';

describe('metrics-only listener', () => {
  it('serves GET/HEAD /metrics and nothing else: no status, no explain, no writes', async () => {
    const registry = new Registry();
    registry.counter({ name: 'nodemesh_test_total', help: 'test' }).inc(undefined, 3);
    const server = await startMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    try {
      const base = server.url.replace(/\/metrics$/, '');
      const ok = await fetch(`${base}/metrics`);
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /^nodemesh_test_total 3$/m);
      assert.equal((await fetch(`${base}/metrics`, { method: 'HEAD' })).status, 200);
      for (const path of ['/statusz', '/explain?from=shop/web&to=shop/echo:80', '/healthz', '/readyz', '/', '/metrics/../statusz']) {
        const r = await fetch(`${base}${path}`);
        assert.equal(r.status, 404, path);
        assert.doesNotMatch(await r.text(), /"node"|nodemesh_test_total/, `${path} leaks nothing`);
      }
      const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get('allow'), 'GET, HEAD');
    } finally {
      await server.close();
    }
  });

  it('names the port and the flag when it is taken', async () => {
    const registry = new Registry();
    const first = await startMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    try {
      await assert.rejects(startMetricsServer({ registry, host: '127.0.0.1', port: first.port }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'NM_ERR_METRICS_LISTEN');
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${first.port}: .*EADDRINUSE.*--metrics-port`));
        return true;
      });
    } finally {
      await first.close();
    }
  });
});

describe('createMetricsHandler', () => {
  /** Calls the handler with a fake request; returns the body (undefined when the handler passed). */
  function call(handle: ReturnType<typeof createMetricsHandler>, url = '/metrics'): string | undefined {
    let body: string | undefined;
    const res = { writeHead: () => res, end: (b?: Buffer) => { body = b?.toString() ?? ''; } } as unknown as ServerResponse;
    return handle({ url, method: 'GET', headers: {} } as IncomingMessage, res) ? body : undefined;
  }

  it('renders per request by default; with reuseRenderingMs, one rendering per interval whatever the request rate', () => {
    const registry = new Registry();
    const c = registry.counter({ name: 'nodemesh_test_total', help: 'test' });
    let renders = 0;
    registry.addCollector(() => { renders++; });
    let t = 1_000;
    const every = createMetricsHandler(registry);
    c.inc(undefined, 1);
    assert.match(call(every)!, /nodemesh_test_total 1/);
    c.inc(undefined, 1);
    assert.match(call(every)!, /nodemesh_test_total 2/);
    assert.equal(renders, 2);
    const reused = createMetricsHandler(registry, { reuseRenderingMs: 1000, now: () => t });
    renders = 0;
    for (let i = 0; i < 50; i++) assert.match(call(reused)!, /nodemesh_test_total 2/);
    assert.equal(renders, 1, 'fifty requests within the interval: one rendering');
    c.inc(undefined, 1);
    t += 999;
    assert.match(call(reused)!, /nodemesh_test_total 2/);
    t += 1;
    assert.match(call(reused)!, /nodemesh_test_total 3/, 'a new rendering once the interval has passed');
    assert.equal(call(reused, '/statusz'), undefined, 'other paths fall through to the caller');
  });
});
