// Reliability anchors L4 and L3 (shared/reference/reliability-anchors.md §3.1), scaled for CI, against the real
// proxy: a ProxyWorkerPool (one worker process, round-robin hand-off from this process) on loopback.
// L4: h2load (Debian nghttp2-client; the test fails when it is missing) opens 32 HTTP/2 connections with prior
// knowledge and keeps 100 streams in flight on each, to an h2c and to an HTTP/1 upstream: every stream must succeed
// with 200, the upstream must see every request, and the proxy must still serve afterwards (same worker).
// L3: 1,000 idle keep-alive connections plus a 200 req/s canary: 0 canary errors, every idle connection still
// answers afterwards, and the file descriptors of the worker and of this process return to their baseline once
// the clients have closed. The full-scale figures (5,000 connections, memory per connection, nginx/HAProxy) are
// `npm run bench:l7-load` (docs/bench-l7-load.md).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import { Pool } from 'undici';
import { ProxyWorkerPool } from '../../l7proxy/workers.ts';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import { SERVICE_IP, SERVICE_PORT, simpleConfig } from '../../l7proxy/testing/harness.ts';
import { runH2load } from '../../bench/lib/h2load.ts';
import { openIdleConnections } from '../../bench/lib/idle-connections.ts';
import { readFdCount } from '../../bench/lib/system.ts';

const BODY = 'x'.repeat(128);
const CONNECTIONS = 32;
const STREAMS = 100;
/** Requests per h2load run: every connection fills its 100 streams five times over. */
const REQUESTS = CONNECTIONS * STREAMS * 5;
const IDLE = 1000;

type Upstream = { port: number; requests: () => number; open: () => number; close(): Promise<void> };

/** HTTP/1.1 upstream answering every request with BODY; counts requests and open connections. */
async function startHttp1Upstream(): Promise<Upstream> {
  let requests = 0;
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => { requests++; req.resume(); req.on('end', () => res.end(BODY)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  let open = 0;
  server.on('connection', (s: net.Socket) => { open++; s.once('close', () => { open--; }); });
  return { port: (server.address() as net.AddressInfo).port, requests: () => requests, open: () => open, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

/** h2c (prior knowledge) upstream answering every stream with BODY; stream errors are counted, never thrown. */
async function startH2cUpstream(): Promise<Upstream & { streamErrors: () => string[] }> {
  let requests = 0;
  const errors: string[] = [];
  // 100 streams per proxy session with their buffers: above Node's default 10 MB session budget nghttp2 would
  // answer ENHANCE_YOUR_CALM, which is this test server's limit, not the proxy's behaviour under test.
  const server = http2.createServer({ maxSessionMemory: 64, settings: { maxConcurrentStreams: 1000 } });
  server.on('stream', (stream) => {
    requests++;
    stream.on('error', (err) => errors.push(err.message));
    stream.resume();
    stream.on('end', () => { if (!stream.destroyed) { stream.respond({ ':status': 200, 'content-type': 'text/plain' }); stream.end(BODY); } });
  });
  server.on('sessionError', (err) => errors.push(err.message));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => { sessions.add(s); s.once('close', () => sessions.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port, requests: () => requests, open: () => sessions.size, streamErrors: () => errors,
    close: () => new Promise((r) => { for (const s of sessions) s.destroy(); server.close(() => r()); }),
  };
}

async function startPool(config: ProxyConfig): Promise<{ pool: ProxyWorkerPool; port: number; workerPid: number }> {
  const pool = new ProxyWorkerPool({ workers: 1, originalDst: { kind: 'fixed', ip: SERVICE_IP, port: SERVICE_PORT }, config, scheduling: 'round-robin' });
  const { outboundPort } = await pool.start({ outboundPort: 0, host: '127.0.0.1' });
  const pid = pool.status()[0]?.pid;
  assert.ok(pid, 'the pool has a serving worker');
  return { pool, port: outboundPort, workerPid: pid };
}

/** One HTTP/1.1 and one HTTP/2 request on fresh connections: the proxy still serves. */
async function assertServes(port: number, what: string): Promise<void> {
  const r1 = await fetch(`http://127.0.0.1:${port}/after`, { headers: { connection: 'close' } });
  assert.equal(r1.status, 200, `${what}: HTTP/1.1 request after the load`);
  assert.equal(await r1.text(), BODY);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = session.request({ ':path': '/after' });
      let body = ''; let status = 0;
      req.on('response', (h) => { status = Number(h[':status']); });
      req.setEncoding('utf8');
      req.on('data', (d: string) => { body += d; });
      req.on('end', () => resolve({ status, body }));
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200, `${what}: HTTP/2 request after the load`);
    assert.equal(body, BODY);
  } finally { session.close(); }
}

/** Poll `read` until `ok` holds or `ms` passes; returns the last value read. */
async function waitUntil<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const until = Date.now() + ms;
  let v = await read();
  while (!ok(v) && Date.now() < until) { await new Promise((r) => setTimeout(r, 100)); v = await read(); }
  return v;
}

describe('L4: h2load, 32 HTTP/2 connections × 100 streams through the proxy', () => {
  const cases: { name: string; start: () => Promise<Upstream & { streamErrors?: () => string[] }>; protocol: 'http1' | 'h2c' }[] = [
    { name: 'h2c upstream', start: startH2cUpstream, protocol: 'h2c' },
    { name: 'HTTP/1.1 upstream', start: startHttp1Upstream, protocol: 'http1' },
  ];
  for (const c of cases) {
    it(`${c.name}: every stream succeeds with 200, the upstream sees each, the proxy serves afterwards`, async (t) => {
      const up = await c.start();
      const config = simpleConfig([up.port]);
      config.backends[0]!.protocol = c.protocol;
      const { pool, port, workerPid } = await startPool(config);
      try {
        const r = await runH2load(['-c', String(CONNECTIONS), '-m', String(STREAMS), '-n', String(REQUESTS), `http://127.0.0.1:${port}/l4`], { timeoutMs: 40_000 });
        t.diagnostic(`${c.name}: ${r.reqPerSec} req/s, request time max ${r.requestMs?.max} ms`);
        assert.equal(r.protocol, 'h2c', `h2load spoke ${r.protocol}, expected HTTP/2 with prior knowledge`);
        assert.deepEqual({ succeeded: r.succeeded, failed: r.failed, errored: r.errored, timeout: r.timeout, '2xx': r.status['2xx'] }, { succeeded: REQUESTS, failed: 0, errored: 0, timeout: 0, '2xx': REQUESTS }, r.output);
        assert.equal(up.requests(), REQUESTS, 'the upstream received exactly one request per stream');
        assert.deepEqual(up.streamErrors?.() ?? [], []);
        const stats = (await pool.stats()).total!;
        assert.equal(stats.connections.http2, CONNECTIONS);
        assert.equal(stats.requests.byCode['200'], REQUESTS);
        await assertServes(port, c.name);
        const st = pool.status()[0]!;
        assert.deepEqual({ pid: st.pid, restarts: st.restarts, state: st.state }, { pid: workerPid, restarts: 0, state: 'serving' }, 'the worker survived the load');
      } finally {
        await pool.stop({ drain: false });
        await up.close();
      }
    });
  }
});

describe('L3 (scaled): 1,000 idle keep-alive connections and a 200 req/s canary', () => {
  let up: Upstream;
  let pool: ProxyWorkerPool;
  let port = 0;
  let workerPid = 0;

  before(async () => {
    up = await startHttp1Upstream();
    // Idle upstream connections close after 1 s, so the file-descriptor baseline does not depend on how many the
    // 1,000 first requests made the pool open.
    const config = simpleConfig([up.port]);
    config.backends[0]!.trafficPolicy = { idleTimeoutMs: 1000 };
    ({ pool, port, workerPid } = await startPool(config));
  });
  after(async () => {
    await pool?.stop({ drain: false });
    await up?.close();
  });

  it('canary 0 errors; idle connections stay usable; fds back to baseline after the clients close', async (t) => {
    const self = [process.pid];
    // Warm the request path, then let the upstream pool go idle: the baseline is the proxy at rest.
    assert.equal((await fetch(`http://127.0.0.1:${port}/warm`, { headers: { connection: 'close' } })).status, 200);
    await waitUntil(() => up.open(), (n) => n === 0, 5000);
    const base = { worker: readFdCount([workerPid]), self: readFdCount(self) };

    const canary = new Pool(`http://127.0.0.1:${port}`, { connections: 4, keepAliveTimeout: 60_000 });
    const canaryResult = { ok: 0, bad: [] as string[] };
    let canaryOn = true;
    const canaryLoop = (async () => {
      const t0 = performance.now(); let sent = 0; const inflight: Promise<void>[] = [];
      while (canaryOn) {
        const due = Math.floor(((performance.now() - t0) / 1000) * 200);
        for (; sent < due; sent++) {
          inflight.push(canary.request({ path: '/canary', method: 'GET', headers: { host: 'echo.default' } }).then(async (res) => {
            const body = await res.body.text();
            if (res.statusCode === 200 && body === BODY) canaryResult.ok++; else canaryResult.bad.push(`status ${res.statusCode}`);
          }, (err: Error) => { canaryResult.bad.push(err.message); }));
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      await Promise.all(inflight);
    })();

    let idle: Awaited<ReturnType<typeof openIdleConnections>> | undefined;
    try {
      idle = await openIdleConnections({ port, count: IDLE, parallel: 50 });
      assert.deepEqual({ ok: idle.opened.ok, non2xx: idle.opened.non2xx, failed: idle.opened.failed }, { ok: IDLE, non2xx: 0, failed: 0 }, idle.opened.firstError);
      // Hold them idle while the canary keeps going.
      await new Promise((r) => setTimeout(r, 3000));
      const held = { worker: readFdCount([workerPid]), active: (await pool.stats()).total!.connections.active };
      t.diagnostic(`worker fds ${base.worker} → ${held.worker} with ${IDLE} idle connections (upstream connections open: ${up.open()}); proxy active connections ${held.active}`);
      assert.ok(held.worker - base.worker >= IDLE, `the worker holds the ${IDLE} connections (fds ${base.worker} → ${held.worker})`);
      assert.ok(held.active >= IDLE, `the proxy counts ${held.active} active connections, expected ≥ ${IDLE}`);
      assert.equal(idle.closedByPeer(), 0, 'no idle connection was closed by the proxy');
      const probe = await idle.probe();
      assert.deepEqual({ ok: probe.ok, non2xx: probe.non2xx, failed: probe.failed }, { ok: IDLE, non2xx: 0, failed: 0 }, `every idle connection answers again: ${probe.firstError ?? ''}`);
    } finally {
      canaryOn = false;
      await canaryLoop;
      await canary.close();
      await idle?.close();
    }
    assert.deepEqual(canaryResult.bad, [], 'canary errors');
    assert.ok(canaryResult.ok >= 600, `the canary ran at 200 req/s during the hold (${canaryResult.ok} answers)`);

    // Clients gone: the worker's and this process's descriptors return to the baseline once the upstream pool's
    // idle connections (1 s) have closed too.
    const settled = await waitUntil(() => ({ worker: readFdCount([workerPid]), self: readFdCount(self), upstream: up.open() }), (v) => v.worker <= base.worker && v.self <= base.self && v.upstream === 0, 10_000);
    t.diagnostic(`after close: worker fds ${settled.worker} (baseline ${base.worker}), this process ${settled.self} (baseline ${base.self})`);
    assert.ok(settled.worker <= base.worker, `worker fds back to baseline: ${settled.worker} vs ${base.worker}`);
    assert.ok(settled.self <= base.self, `primary/test process fds back to baseline: ${settled.self} vs ${base.self}`);
    assert.equal((await pool.stats()).total!.connections.active, 0, 'the proxy counts no active connection');
    await assertServes(port, 'after the idle connections');
  });
});
