// Protocol paths through a running proxy: hostile upstreams, identity-separated pools, HTTP/2 prior knowledge,
// rapid reset, WebSocket upgrades, opaque TCP, fail-closed connection handling, graceful drain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { ProxyConfig } from './config.ts';
import { rawExchange, request, SERVICE_IP, SERVICE_PORT, simpleConfig, startEcho, startRawServer, startTestProxy } from './testing/harness.ts';

const OK = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok';
const HOSTILE_RESPONSES: [string, string][] = [
  ['CL+TE', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['duplicate CL', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok'],
  ['conflicting CL', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok'],
  ['invalid header char', 'HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 2\r\n\r\nok'],
  ['CR in value', 'HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\nok'],
  ['obs-fold', 'HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok'],
  ['TE gzip', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok'],
  ['unrequested 101', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n'],
];

for (const [name, response] of HOSTILE_RESPONSES) {
  test(`hostile upstream (${name}) → 502, upstream connection discarded, client connection still usable`, async () => {
    const up = await startRawServer(response);
    const p = await startTestProxy(simpleConfig([up.port]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = await request(p.port, { agent });
      assert.equal(r.status, 502, `${name}: ${r.status} ${r.body}`);
      for (let i = 0; i < 50 && up.closed() < 1; i++) await new Promise((res) => setTimeout(res, 10));
      assert.equal(up.closed(), up.accepted(), 'every upstream connection that carried a bad response was closed');
      const again = await request(p.port, { agent });
      assert.equal(again.status, 502, 'the client connection stays in sync');
      assert.equal(p.proxy.stats.upstream.protocolErrors, 2);
    } finally { agent.destroy(); await p.close(); await up.close(); }
  });
}

test('a well-behaved raw upstream is relayed (control for the hostile cases)', async () => {
  const up = await startRawServer(OK);
  const p = await startTestProxy(simpleConfig([up.port]));
  try {
    const r = await request(p.port);
    assert.deepEqual([r.status, r.body], [200, 'ok']);
  } finally { await p.close(); await up.close(); }
});

test('upstream pools are keyed by source identity: two workloads never share a connection', async () => {
  const echo = await startEcho();
  const ids: Record<string, { spiffeId: string; namespace: string; serviceAccount: string }> = {
    '127.0.0.2': { spiffeId: 'spiffe://cluster.local/ns/web/sa/frontend', namespace: 'web', serviceAccount: 'frontend' },
    '127.0.0.3': { spiffeId: 'spiffe://cluster.local/ns/web/sa/batch', namespace: 'web', serviceAccount: 'batch' },
  };
  const p = await startTestProxy(simpleConfig([echo.port]), { identify: (a) => ids[a] });
  try {
    const from = (localAddress: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: p.port, path: '/', localAddress, headers: { host: 'echo.default', 'x-nodemesh-source-identity': 'spiffe://evil/ns/x/sa/y' }, agent: false }, (res) => {
        let body = ''; res.on('data', (d: Buffer) => { body += d; }); res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject); req.end();
    });
    for (let i = 0; i < 3; i++) { await from('127.0.0.2'); await from('127.0.0.3'); }
    const byIdentity = new Map<string, Set<number>>();
    for (const r of echo.requests) {
      const id = r.rawHeaders[r.rawHeaders.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === 'x-nodemesh-source-identity') + 1]!;
      if (!byIdentity.has(id)) byIdentity.set(id, new Set());
      byIdentity.get(id)!.add(r.remotePort);
    }
    assert.deepEqual([...byIdentity.keys()].sort(), [ids['127.0.0.3']!.spiffeId, ids['127.0.0.2']!.spiffeId].sort(), 'client-sent identity headers are replaced');
    const [a, b] = [...byIdentity.values()];
    assert.ok([...a!].every((port) => !b!.has(port)), 'no upstream connection carried both identities');
    assert.equal(p.proxy.upstreamPoolKeys.length, 2);
    assert.equal(echo.connections.length, 2, 'one reused connection per identity');
  } finally { await p.close(); await echo.close(); }
});

test('HTTP/2 with prior knowledge: each stream is routed on its own', async () => {
  const stable = await startEcho('stable');
  const canary = await startEcho('canary');
  const cfg: ProxyConfig = {
    version: 'h2',
    services: [{ name: 'default/echo', addresses: [{ ip: SERVICE_IP, port: SERVICE_PORT }], protocol: 'auto', defaultBackend: 'default/stable:80', routes: [{ name: 'default/r', createdAtMs: 1, rules: [
      { backendRefs: [{ backend: 'default/stable:80' }] },
      { matches: [{ headers: [{ name: 'x-canary', value: 'yes' }] }], backendRefs: [{ backend: 'default/canary:80' }] },
    ] }] }],
    backends: [
      { name: 'default/stable:80', endpoints: [{ ip: '127.0.0.1', port: stable.port, ready: true }] },
      { name: 'default/canary:80', endpoints: [{ ip: '127.0.0.1', port: canary.port, ready: true }] },
    ],
    authorization: [{ name: 'default/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] }],
  };
  const p = await startTestProxy(cfg);
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const get = (path: string, headers: Record<string, string> = {}) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const s = session.request({ ':path': path, ':authority': 'echo.default', ...headers });
      let status = 0; let body = '';
      s.on('response', (h) => { status = Number(h[':status']); });
      s.on('data', (d: Buffer) => { body += d; });
      s.on('end', () => resolve({ status, body }));
      s.on('error', reject);
    });
    const [a, b, c, d] = await Promise.all([get('/x'), get('/y', { 'x-canary': 'yes' }), get('//admin'), get('/z', { 'x-forwarded-for': '6.6.6.6' })]);
    assert.equal(JSON.parse(a.body).name, 'stable');
    assert.equal(JSON.parse(b.body).name, 'canary');
    assert.equal(c.status, 403);
    assert.equal(JSON.parse(d.body).headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(p.proxy.stats.connections.http2, 1);
  } finally { session.destroy(); await p.close(); await stable.close(); await canary.close(); }
});

test('HTTP/2 rapid reset: a client resetting streams in bulk gets GOAWAY', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], { protocol: 'auto' }, { limits: { http2MaxResetsPerWindow: 20, http2MaxConcurrentStreams: 1000 } }));
  const session = http2.connect(`http://127.0.0.1:${p.port}`, { settings: { enablePush: false } });
  session.on('error', () => {});
  try {
    const goaway = new Promise<number>((resolve) => session.on('goaway', (code: number) => resolve(code)));
    await new Promise<void>((r) => session.on('connect', () => r()));
    for (let i = 0; i < 60 && !session.destroyed && !session.closed; i++) {
      try {
        const s = session.request({ ':path': '/', ':authority': 'echo.default', 'x-echo-delay': '1000' });
        s.on('error', () => {});
        setImmediate(() => s.close(http2.constants.NGHTTP2_CANCEL));
      } catch { break; }
    }
    const code = await Promise.race([goaway, new Promise<number>((r) => setTimeout(() => r(-1), 3000))]);
    assert.equal(code, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(p.proxy.stats.http2.rapidResetGoaways, 1);
  } finally { session.destroy(); await p.close(); await echo.close(); }
});

test('WebSocket upgrade passes both ways; an Upgrade the client did not ask for is refused', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port]));
  try {
    const s = net.connect(p.port, '127.0.0.1');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.write('GET /ws HTTP/1.1\r\nHost: echo.default\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    for (let i = 0; i < 100 && !Buffer.concat(got).toString().includes('\r\n\r\n'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.match(Buffer.concat(got).toString(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    got.length = 0;
    s.write('hello');
    for (let i = 0; i < 100 && !Buffer.concat(got).toString().includes('echo:hello'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(Buffer.concat(got).toString(), 'echo:hello');
    s.destroy();
    assert.equal(echo.requests.at(-1)!.url, '/ws');
    assert.equal(p.proxy.stats.upgrades, 1);
    // h2c (or any non-WebSocket token) is served as a plain request with Upgrade stripped: no protocol switch.
    const h2c = await rawExchange(p.port, 'GET /plain HTTP/1.1\r\nHost: echo.default\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n', 500);
    assert.match(h2c.text, /^HTTP\/1\.1 200 /);
    const last = echo.requests.at(-1)!;
    assert.equal(last.url, '/plain');
    assert.ok(!last.rawHeaders.some((h) => /^(upgrade|http2-settings)$/i.test(h)));
  } finally { await p.close(); await echo.close(); }
});

test('a backend that declines the upgrade is relayed and the connection closed (never a tunnel on non-101)', async () => {
  const up = await startRawServer('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno');
  const p = await startTestProxy(simpleConfig([up.port]));
  try {
    const r = await rawExchange(p.port, 'GET /ws HTTP/1.1\r\nHost: echo.default\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\nSMUGGLED', 1000);
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    assert.ok(r.closed);
  } finally { await p.close(); await up.close(); }
});

test('opaque TCP: protocol tcp pipes bytes (server-first works); auto falls back to TCP for non-HTTP bytes', async () => {
  const banner = await startRawServer((d, s) => s.write(Buffer.concat([Buffer.from('re:'), d])));
  const serverFirst = net.createServer((s) => { s.write('220 hello\r\n'); s.on('data', (d: Buffer) => s.write(d)); s.on('error', () => {}); });
  await new Promise<void>((r) => serverFirst.listen(0, '127.0.0.1', r));
  const sfPort = (serverFirst.address() as net.AddressInfo).port;
  const p = await startTestProxy(simpleConfig([banner.port], { protocol: 'auto' }));
  const p2 = await startTestProxy(simpleConfig([sfPort], { protocol: 'tcp' }));
  try {
    const a = await rawExchange(p.port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), 500);
    assert.equal(a.text, 're:' + Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).toString('latin1'));
    const greeting = await new Promise<string>((resolve) => {
      const s = net.connect(p2.port, '127.0.0.1');
      s.once('data', (d: Buffer) => { resolve(d.toString()); s.destroy(); });
      s.on('error', () => {});
    });
    assert.equal(greeting, '220 hello\r\n');
    assert.equal(p.proxy.stats.connections.tcp + p2.proxy.stats.connections.tcp, 2);
  } finally {
    await p.close(); await p2.close(); await banner.close();
    await new Promise<void>((r) => serverFirst.close(() => r()));
  }
});

test('L4 policy on opaque TCP: an ALLOW that needs HTTP fields cannot match, so the connection is refused', async () => {
  const up = await startRawServer('x');
  const p = await startTestProxy(simpleConfig([up.port], { protocol: 'tcp' }, { authorization: [{ name: 'default/allow-get', action: 'ALLOW', rules: [{ to: [{ methods: ['GET'] }] }] }] }));
  try {
    const r = await rawExchange(p.port, 'anything', 500);
    assert.equal(r.text, '');
    assert.ok(r.closed);
    assert.equal(up.accepted(), 0);
    assert.equal(p.proxy.stats.connections.tcpDenied, 1);
  } finally { await p.close(); await up.close(); }
});

test('fail closed: no original destination or an unknown one → connection reset, nothing forwarded', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port]));
  try {
    p.setDestination(undefined);
    const a = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: echo.default\r\n\r\n', 500);
    p.setDestination({ ip: '10.96.0.99', port: 80 });
    const b = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: echo.default\r\n\r\n', 500);
    assert.deepEqual([a.text, b.text], ['', '']);
    assert.equal(echo.requests.length, 0);
    assert.deepEqual([p.proxy.stats.connections.noOriginalDst, p.proxy.stats.connections.unknownDestination], [1, 1]);
  } finally { await p.close(); await echo.close(); }
});

test('graceful drain: stop({drain}) lets in-flight requests finish and refuses new connections', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port]));
  const inflight = request(p.port, { headers: { 'x-echo-delay': '300' } });
  await new Promise((r) => setTimeout(r, 50));
  const stopping = p.proxy.stop({ drain: true, timeoutMs: 3000 });
  const r = await inflight;
  assert.equal(r.status, 200);
  assert.equal(r.headers.connection, 'close', 'the connection is not kept for another request');
  await stopping;
  await assert.rejects(request(p.port));
  await echo.close();
});

test('slowloris: a request head that does not arrive in time gets 408 and the connection is closed', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], {}, { limits: { requestHeadersTimeoutMs: 400 } }));
  try {
    const t0 = performance.now();
    const r = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: echo.default\r\nX-Slow: 1\r\n', 3000);
    assert.match(r.text, /^HTTP\/1\.1 408 /);
    assert.ok(r.closed && performance.now() - t0 < 2000);
    assert.equal(echo.requests.length, 0);
  } finally { await p.close(); await echo.close(); }
});

test('HTTP/2 header limits: more header fields than allowed are refused before routing', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], { protocol: 'auto' }, { limits: { maxHeaderCount: 20 } }));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  session.on('error', () => {});
  try {
    const headers: Record<string, string> = { ':path': '/', ':authority': 'echo.default' };
    for (let i = 0; i < 40; i++) headers[`x-h${i}`] = 'v';
    const status = await new Promise<number | string>((resolve) => {
      const s = session.request(headers);
      s.on('response', (h) => resolve(Number(h[':status'])));
      s.on('error', (e: Error & { code?: string }) => resolve(e.code ?? 'error'));
      s.on('close', () => resolve(`closed ${s.rstCode}`));
      s.end();
    });
    assert.notEqual(status, 200, `got ${status}`);
    assert.equal(echo.requests.length, 0);
  } finally { session.destroy(); await p.close(); await echo.close(); }
});
