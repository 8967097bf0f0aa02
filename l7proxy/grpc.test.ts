// HTTP/2 to the backend (h2c) and trailers: gRPC-shaped calls through a running proxy against loopback node:http2
// servers. Streams are balanced one by one, bodies stream both ways, trailers are relayed (forbidden ones dropped),
// resets travel both ways, and the proxy's own answers to a gRPC call are grpc-statuses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2, { type ClientHttp2Session, type Http2Server, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import type { BackendConfig, ProxyConfig, RouteRuleConfig } from './config.ts';
import { rawExchange, SERVICE_IP, SERVICE_PORT, startRawServer, startTestProxy } from './testing/harness.ts';

type H2Backend = { port: number; streams: { headers: IncomingHttpHeaders; rstCode?: number }[]; sessions: number; close(): Promise<void> };

/** An h2c backend: `handler` answers each stream (default: a gRPC-shaped echo with grpc-status 0 in trailers). */
async function startH2Backend(name: string, handler?: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void): Promise<H2Backend> {
  const streams: H2Backend['streams'] = [];
  let sessions = 0;
  const open = new Set<http2.ServerHttp2Session>();
  const server: Http2Server = http2.createServer();
  server.on('session', (s) => { sessions++; open.add(s); s.on('close', () => open.delete(s)); s.on('error', () => {}); });
  server.on('stream', (stream, headers) => {
    const rec: H2Backend['streams'][number] = { headers };
    streams.push(rec);
    stream.on('error', () => {});
    stream.on('close', () => { rec.rstCode = stream.rstCode; });
    if (handler) { handler(stream, headers); return; }
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-served-by': name }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok', 'x-backend': name }));
    stream.on('data', (d: Buffer) => stream.write(Buffer.concat([Buffer.from(`${name}:`), d])));
    stream.on('end', () => stream.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port, streams, get sessions() { return sessions; },
    close: () => new Promise<void>((r) => { server.close(() => r()); for (const s of open) s.destroy(); }),
  } as H2Backend;
}

function grpcConfig(ports: number[], rule: RouteRuleConfig = {}, backend: Partial<BackendConfig> = {}): ProxyConfig {
  return {
    version: 'grpc',
    services: [{ name: 'default/grpc', addresses: [{ ip: SERVICE_IP, port: SERVICE_PORT }], protocol: 'http', defaultBackend: 'default/grpc:80',
      routes: [{ name: 'default/r', createdAtMs: 1, rules: [{ backendRefs: [{ backend: 'default/grpc:80' }], ...rule }] }] }],
    backends: [{ name: 'default/grpc:80', protocol: 'h2c', endpoints: ports.map((p) => ({ ip: '127.0.0.1', port: p, ready: true })), ...backend }],
  };
}

const GRPC_HEADERS = { ':method': 'POST', ':path': '/echo.Echo/Say', ':authority': 'grpc.default', 'content-type': 'application/grpc', te: 'trailers' };

/** One call: writes `messages` (waiting for each echo when `interactive`), collects head, data and trailers. */
function call(session: ClientHttp2Session, messages: string[], opts: { headers?: Record<string, string>; interactive?: boolean } = {}): Promise<{ headers: IncomingHttpHeaders; body: string; trailers: IncomingHttpHeaders | undefined; rstCode: number | undefined }> {
  return new Promise((resolve) => {
    const s = session.request({ ...GRPC_HEADERS, ...opts.headers });
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    let body = '';
    let next = 0;
    s.on('response', (h) => { headers = h; });
    s.on('trailers', (t) => { trailers = t; });
    s.on('error', () => {});
    const send = (): void => { if (next < messages.length) s.write(messages[next++]); if (next >= messages.length) s.end(); };
    s.on('data', (d: Buffer) => { body += d; if (opts.interactive) send(); });
    s.on('close', () => resolve({ headers, body, trailers, rstCode: s.rstCode }));
    if (opts.interactive) send(); else { for (const m of messages) s.write(m); s.end(); }
  });
}

test('h2c backend: HTTP/2 from end to end, trailers relayed, te: trailers passed on', async () => {
  const be = await startH2Backend('a');
  const p = await startTestProxy(grpcConfig([be.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const r = await call(session, ['hello']);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.body, 'a:hello');
    assert.equal(r.trailers?.['grpc-status'], '0');
    assert.equal(r.trailers?.['x-backend'], 'a');
    assert.equal(be.streams.length, 1);
    assert.equal(be.streams[0]!.headers['te'], 'trailers');
    assert.equal(be.streams[0]!.headers[':authority'], 'grpc.default');
    assert.ok(be.streams[0]!.headers['x-request-id']);
  } finally { session.destroy(); await p.close(); await be.close(); }
});

test('bidirectional streaming: each message is forwarded before the client ends its stream', async () => {
  const be = await startH2Backend('a');
  const p = await startTestProxy(grpcConfig([be.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    // The client sends message n+1 only after the echo of message n came back through the proxy: a proxy that
    // waited for the end of the request body would deadlock here.
    const r = await call(session, ['one', 'two', 'three'], { interactive: true });
    assert.equal(r.body, 'a:onea:twoa:three');
    assert.equal(r.trailers?.['grpc-status'], '0');
  } finally { session.destroy(); await p.close(); await be.close(); }
});

test('streams of one downstream connection are balanced one by one across h2c endpoints, multiplexed upstream', async () => {
  const a = await startH2Backend('a');
  const b = await startH2Backend('b');
  const p = await startTestProxy(grpcConfig([a.port, b.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => call(session, [`m${i}`])));
    assert.ok(results.every((r) => r.trailers?.['grpc-status'] === '0'));
    assert.equal(a.streams.length, 5);
    assert.equal(b.streams.length, 5);
    assert.equal(a.sessions + b.sessions, 2, 'one upstream HTTP/2 connection per endpoint carries all its streams');
  } finally { session.destroy(); await p.close(); await a.close(); await b.close(); }
});

test('HTTP/1.1 client to an h2c backend: converted, trailers relayed in the chunked trailer section, forbidden ones dropped', async () => {
  const be = await startH2Backend('a', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc', 'set-cookie': 'evil=1', 'x-nodemesh-source-identity': 'spiffe://evil/x', authorization: 'Bearer x' }));
    stream.end('body');
  });
  const p = await startTestProxy(grpcConfig([be.port]));
  try {
    const { text } = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: grpc.default\r\nTE: trailers\r\nConnection: close\r\n\r\n', 2000);
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /transfer-encoding: chunked/i);
    const trailerSection = text.slice(text.indexOf('\r\n0\r\n') + 5);
    assert.match(trailerSection, /^x-checksum: abc\r\n\r\n$/i, JSON.stringify(trailerSection));
    assert.equal(be.streams[0]!.headers[':method'], 'GET');
  } finally { await p.close(); await be.close(); }
});

test('HTTP/1.1 chunked trailers from an HTTP/1 backend are relayed; hop-by-hop and forbidden ones are dropped', async () => {
  const up = await startRawServer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 42\r\nSet-Cookie: a=b\r\nKeep-Alive: timeout=5\r\n\r\n');
  const cfg = grpcConfig([up.port]);
  delete cfg.backends[0]!.protocol;
  const p = await startTestProxy(cfg);
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const { text } = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: grpc.default\r\nConnection: close\r\n\r\n', 2000);
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /\r\n0\r\nx-sum: 42\r\n\r\n$/i, JSON.stringify(text));
    // And to an HTTP/2 client as a trailing HEADERS frame.
    const r = await new Promise<{ body: string; trailers: IncomingHttpHeaders | undefined }>((resolve) => {
      const s = session.request({ ':path': '/', ':authority': 'grpc.default' });
      let body = ''; let trailers: IncomingHttpHeaders | undefined;
      s.on('data', (d: Buffer) => { body += d; });
      s.on('trailers', (t) => { trailers = t; });
      s.on('close', () => resolve({ body, trailers }));
      s.end();
    });
    assert.equal(r.body, 'ok');
    assert.equal(r.trailers?.['x-sum'], '42');
    assert.equal(r.trailers?.['set-cookie'], undefined);
  } finally { session.destroy(); await p.close(); await up.close(); }
});

test('a client reset (CANCEL) mid-stream reaches the backend as a reset stream', async () => {
  let started!: () => void;
  const begun = new Promise<void>((r) => { started = r; });
  const be = await startH2Backend('a', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    stream.write('first');
    started();
  });
  const p = await startTestProxy(grpcConfig([be.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const s = session.request(GRPC_HEADERS);
    s.on('error', () => {});
    s.write('x');
    await begun;
    await new Promise<void>((r) => s.once('data', () => r()));
    s.close(http2.constants.NGHTTP2_CANCEL);
    for (let i = 0; i < 100 && be.streams[0]!.rstCode === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(be.streams[0]!.rstCode, http2.constants.NGHTTP2_CANCEL);
  } finally { session.destroy(); await p.close(); await be.close(); }
});

test('a backend reset mid-response reaches the client as a reset stream, never a clean end', async () => {
  const be = await startH2Backend('a', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    stream.write('partial');
    // destroy(err) sends RST_STREAM(INTERNAL_ERROR) (close(code) on a half-closed stream may end it cleanly instead).
    setTimeout(() => stream.destroy(new Error('backend failed mid-response')), 50);
  });
  const p = await startTestProxy(grpcConfig([be.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const r = await call(session, ['x']);
    assert.equal(r.body, 'partial');
    assert.equal(r.trailers, undefined);
    assert.notEqual(r.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  } finally { session.destroy(); await p.close(); await be.close(); }
});

test('gRPC: a route timeout is HTTP 200 + grpc-status 4 (trailers-only); an overloaded backend is grpc-status 14', async () => {
  const be = await startH2Backend('a', (stream) => { stream.respond({ ':status': 200, 'content-type': 'application/grpc' }); /* never ends */ });
  const p = await startTestProxy(grpcConfig([be.port], { timeouts: { requestMs: 200 } }, { trafficPolicy: { circuitBreaker: { maxRequests: 1 } } }));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const slow = call(session, ['x']);
    await new Promise((r) => setTimeout(r, 50));
    const refused = await call(session, ['y']);
    assert.equal(refused.headers[':status'], 200);
    assert.equal(refused.headers['grpc-status'], '14');
    assert.equal(refused.headers['x-nodemesh-overloaded'], 'max-requests');
    assert.equal(refused.body, '');
    const timedOut = await slow;
    // The response had started (headers went out): the stream is cut, as Envoy does once the head is sent.
    assert.notEqual(timedOut.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  } finally { session.destroy(); await p.close(); await be.close(); }
  const never = await startH2Backend('b', () => { /* no head at all */ });
  const p2 = await startTestProxy(grpcConfig([never.port], { timeouts: { requestMs: 200 } }));
  const s2 = http2.connect(`http://127.0.0.1:${p2.port}`);
  try {
    const r = await call(s2, ['x']);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['grpc-status'], '4');
    assert.match(String(r.headers['grpc-message']), /timeout/);
    assert.equal(r.trailers, undefined, 'trailers-only: everything in the one HEADERS frame');
  } finally { s2.destroy(); await p2.close(); await never.close(); }
});

test('retries: a streamed HTTP/2 body that ended within the buffer limit is replayed on the next endpoint', async () => {
  const failing = await startH2Backend('bad', (stream) => { stream.resume(); stream.on('end', () => { stream.respond({ ':status': 503 }); stream.end(); }); });
  const good = await startH2Backend('good');
  const p = await startTestProxy(grpcConfig([failing.port, good.port], { retry: { attempts: 1, codes: [503], backoffMs: 1 } }));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const results = [await call(session, ['payload']), await call(session, ['payload'])];
    for (const r of results) assert.equal(r.body, 'good:payload');
    assert.ok(failing.streams.length >= 1);
    assert.ok(p.proxy.stats.retries >= 1);
  } finally { session.destroy(); await p.close(); await failing.close(); await good.close(); }
});

test('request trailers from an HTTP/2 client reach an h2c backend, forbidden ones dropped', async () => {
  let got: IncomingHttpHeaders | undefined;
  const be = await startH2Backend('a', (stream) => {
    stream.on('trailers', (t) => { got = t; });
    stream.resume();
    stream.on('end', () => { stream.respond({ ':status': 200 }); stream.end('ok'); });
  });
  const p = await startTestProxy(grpcConfig([be.port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    await new Promise<void>((resolve) => {
      const s = session.request({ ...GRPC_HEADERS }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'x-digest': 'sha=1', 'x-nodemesh-source-identity': 'spiffe://evil/x', authorization: 'Bearer y' }));
      s.resume();
      s.on('close', () => resolve());
      s.end('payload');
    });
    assert.equal(got?.['x-digest'], 'sha=1');
    assert.equal(got?.['authorization'], undefined);
    assert.equal(got?.['x-nodemesh-source-identity'], undefined);
  } finally { session.destroy(); await p.close(); await be.close(); }
});

test('gRPC: no listening endpoint → grpc-status 14 (UNAVAILABLE), trailers-only', async () => {
  const gone = await startH2Backend('x');
  const port = gone.port;
  await gone.close();
  const p = await startTestProxy(grpcConfig([port]));
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const r = await call(session, ['x']);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['grpc-status'], '14');
    assert.equal(r.headers['content-type'], 'application/grpc');
  } finally { session.destroy(); await p.close(); }
});

test('h2c over a connector stream (the mesh tunnel plugs in there): any Duplex carries the session', async () => {
  const be = await startH2Backend('a');
  let dialled = 0;
  const connectUpstream = async (t: { ip: string; port: number }): Promise<Duplex> => {
    dialled++;
    // A plain Duplex, not a net.Socket: what an HBONE CONNECT stream looks like to the pool.
    const [ours, theirs] = duplexPair();
    const tcp = net.connect(t.port, t.ip);
    await new Promise<void>((r, j) => { tcp.once('connect', () => r()); tcp.once('error', j); });
    theirs.pipe(tcp).pipe(theirs);
    tcp.on('close', () => theirs.destroy());
    return ours;
  };
  const p = await startTestProxy(grpcConfig([be.port]), { extra: { connectUpstream } });
  const session = http2.connect(`http://127.0.0.1:${p.port}`);
  try {
    const rs = await Promise.all([call(session, ['one']), call(session, ['two'])]);
    assert.deepEqual(rs.map((r) => [r.body, r.trailers?.['grpc-status']]), [['a:one', '0'], ['a:two', '0']]);
    assert.equal(dialled, 1, 'both streams share one tunnelled session');
  } finally { session.destroy(); await p.close(); await be.close(); }
});
