// NodeProxy lifecycle and backend deaths over loopback (issue 5, F4/F11): what a draining proxy does to open
// connections, and which failed attempts are retried without a route retry policy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { PROXY_ERROR_HEADER } from './resilience.ts';
import { request, simpleConfig, startEcho, startTestProxy } from './testing/harness.ts';

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('drain: listener closes at once, an in-flight request finishes with Connection: close, an idle keep-alive connection closes only after the idle grace', async () => {
  const echo = await startEcho('a');
  const tp = await startTestProxy(simpleConfig([echo.port]));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  try {
    // Two keep-alive connections: one will be idle, one busy when the drain starts.
    const warm = await Promise.all([request(tp.port, { agent, headers: { 'x-echo-delay': '50' } }), request(tp.port, { agent, headers: { 'x-echo-delay': '50' } })]);
    assert.deepEqual(warm.map((r) => r.status), [200, 200]);
    let idleClosedAt: number | undefined;
    const idle = (agent.freeSockets[Object.keys(agent.freeSockets)[0]!] ?? [])[0]!;
    idle.once('close', () => { idleClosedAt = Date.now(); });
    const inflight = request(tp.port, { agent, headers: { 'x-echo-delay': '400' } });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const stopped = tp.proxy.stop({ drain: true, timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(request(tp.port), /ECONNREFUSED/, 'new connections are refused once draining');
    const r = await inflight;
    assert.equal(r.status, 200);
    assert.equal(r.headers.connection, 'close');
    await stopped;
    assert.ok(idleClosedAt !== undefined, 'the idle keep-alive connection was never closed');
    // computeDrainSettings(2000).idleCloseAfterMs = 500: not closed under a client that may still send.
    assert.ok(idleClosedAt - t0 >= 450, `idle connection closed ${idleClosedAt - t0} ms into the drain`);
  } finally {
    agent.destroy();
    await echo.close();
  }
});

test('a backend that resets a request (killed, or the keep-alive race): GET is retried on another endpoint; POST is not', async () => {
  const reset = (req: http.IncomingMessage): boolean => { req.socket.destroy(); return true; };
  const dying = await startEcho('dying', { handler: (req) => reset(req) });
  const healthy = await startEcho('healthy');
  const tp = await startTestProxy(simpleConfig([dying.port, healthy.port]));
  try {
    for (let i = 0; i < 4; i++) {
      const r = await request(tp.port, { path: `/get-${i}` });
      assert.equal(r.status, 200, r.body);
      assert.equal(r.headers['x-served-by'], 'healthy');
    }
    // A POST may have been processed before the reset: never replayed without a route policy asking for it.
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(tp.port, { method: 'POST', path: `/post-${i}`, body: 'x' })).status);
    assert.ok(statuses.includes(503), `POSTs: ${statuses.join(',')}`);
    assert.ok(dying.requests.some((q) => q.method === 'POST'));
  } finally {
    await tp.close(); await dying.close(); await healthy.close();
  }
});

test('connect refused: any method is retried elsewhere; with nowhere left the 503 carries the proxy-error marker', async () => {
  const healthy = await startEcho('healthy');
  const dead = await closedPort();
  const tp = await startTestProxy(simpleConfig([dead, healthy.port]));
  try {
    for (let i = 0; i < 4; i++) {
      assert.equal((await request(tp.port, { method: 'POST', body: 'x' })).status, 200);
      assert.equal((await request(tp.port)).status, 200);
    }
    assert.ok(tp.proxy.stats.upstream.ejections >= 1, 'an endpoint refusing connects is ejected by default');
  } finally {
    await tp.close(); await healthy.close();
  }
  const only = await startTestProxy(simpleConfig([dead]));
  try {
    const r = await request(only.port);
    assert.equal(r.status, 503);
    assert.equal(r.headers[PROXY_ERROR_HEADER], 'upstream-connect');
  } finally {
    await only.close();
  }
});

test('a peer proxy\'s connect-failure answer is retried on another endpoint; an application 503 is not', async () => {
  const peer = await startEcho('peer', { handler: (_req, res) => { res.writeHead(503, { [PROXY_ERROR_HEADER]: 'upstream-connect' }); res.end('no pod\n'); return true; } });
  const app503 = await startEcho('app', { handler: (_req, res) => { res.writeHead(503); res.end('busy\n'); return true; } });
  const healthy = await startEcho('healthy');
  const tp = await startTestProxy(simpleConfig([peer.port, healthy.port]));
  const tp2 = await startTestProxy(simpleConfig([app503.port, healthy.port]));
  try {
    for (let i = 0; i < 4; i++) assert.equal((await request(tp.port, { method: 'POST', body: 'x' })).status, 200);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(tp2.port)).status);
    assert.ok(statuses.includes(503), `an application's 503 was retried: ${statuses.join(',')}`);
  } finally {
    await tp.close(); await tp2.close(); await peer.close(); await app503.close(); await healthy.close();
  }
});
