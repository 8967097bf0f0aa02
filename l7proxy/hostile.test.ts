// Hostile inputs beyond request framing (smuggling.test.ts): hostile upstream responses (B2), oversized and slow
// requests (B3) and HTTP/2 protocol attacks written as raw frames (B4). Each ends in a 4xx, a 502, a GOAWAY or a
// reset, never a crash or a 5xx for the client's own fault, and the proxy keeps serving afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { rawExchange, request, simpleConfig, startEcho, startRawServer, startTestProxy, type TestProxy } from './testing/harness.ts';
import { FLAG, flood, FRAME, frame, h2Exchange, indexed, literal, literalIndexed, requestBlock, settings } from './testing/h2-frames.ts';

const H = 'Host: echo.default\r\n';

async function stillServes(p: TestProxy): Promise<void> {
  const r = await request(p.port);
  assert.equal(r.status, 200, 'the proxy still serves a fresh connection');
}

// --- B2: hostile upstream responses ---

const HOSTILE_RESPONSES: [string, string, string][] = [
  ['Content-Length on a 204', 'GET', 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello'],
  ['Transfer-Encoding on a 304', 'GET', 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
  ['101 with another protocol, not asked for', 'GET', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n'],
  ['bare LF in a value', 'GET', 'HTTP/1.1 200 OK\r\nX: a\nContent-Length: 2\r\n\r\nok'],
  ['CRLF smuggled response head', 'GET', 'HTTP/1.1 200 OK\r\nX: a\r\r\nContent-Length: 2\r\n\r\nok'],
  ['TE chunked, identity', 'GET', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
];

for (const [name, method, response] of HOSTILE_RESPONSES) {
  test(`B2 hostile upstream (${name}) → 502, upstream connection closed, client connection in sync`, async () => {
    const up = await startRawServer(response);
    const p = await startTestProxy(simpleConfig([up.port]));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = await request(p.port, { agent, method });
      assert.equal(r.status, 502, `${name}: ${r.status} ${r.body}`);
      for (let i = 0; i < 50 && up.closed() < up.accepted(); i++) await new Promise((res) => setTimeout(res, 10));
      assert.equal(up.closed(), up.accepted(), 'the upstream connection that carried it was closed');
      const again = await request(p.port, { agent, method });
      assert.equal(again.status, 502, 'the same client connection gets its next answer');
    } finally { agent.destroy(); await p.close(); await up.close(); }
  });
}

test('B2 a body after a HEAD response never reaches the next request: that upstream connection is not reused', async () => {
  let n = 0;
  const up = await startRawServer((_d, s) => {
    n++;
    // Answer HEAD with a length and (wrongly) the body too; answer anything else normally.
    s.write(n === 1 ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const p = await startTestProxy(simpleConfig([up.port]));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const head = await request(p.port, { agent, method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    await new Promise((r) => setTimeout(r, 50));
    const next = await request(p.port, { agent });
    // The stray "hello" must never be read as the next response: either a fresh upstream connection answers "ok",
    // or the poisoned one fails the request (never a response made of the stray bytes).
    assert.ok((next.status === 200 && next.body === 'ok') || next.status === 502 || next.status === 503, `${next.status} ${next.body}`);
    assert.ok(!next.body.includes('hello'));
  } finally { agent.destroy(); await p.close(); await up.close(); }
});

test('B2 framing fields in an upstream trailer section: relayed without them, and that upstream connection is retired', async () => {
  const up = await startRawServer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nTransfer-Encoding: gzip\r\nX-Sum: 1\r\n\r\n');
  const p = await startTestProxy(simpleConfig([up.port]));
  try {
    const { text } = await rawExchange(p.port, `GET / HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /\r\n0\r\nx-sum: 1\r\n\r\n$/i);
    assert.doesNotMatch(text.slice(text.indexOf('\r\n0\r\n')), /gzip/i);
    for (let i = 0; i < 50 && up.closed() < up.accepted(); i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(up.closed(), up.accepted());
  } finally { await p.close(); await up.close(); }
});

// --- B3: big and slow requests ---

test('B3 big heads: a 15 KiB header passes; 64 KiB, 1 MiB, 10,000 tiny headers and a 100 KiB request line are refused with 431', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port]));
  try {
    // 15 KiB: under the proxy's 60 KiB limit and under the echo backend's own (Node's default, 16 KiB).
    const ok = await rawExchange(p.port, `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(15 * 1024)}\r\nConnection: close\r\n\r\n`);
    assert.match(ok.text, /^HTTP\/1\.1 200 /);
    const cases: [string, string][] = [
      ['64 KiB header', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`],
      ['1 MiB header', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(1024 * 1024)}\r\n\r\n`],
      ['10,000 tiny headers', `GET / HTTP/1.1\r\n${H}${'a:b\r\n'.repeat(10_000)}\r\n`],
      ['100 KiB request line', `GET /${'a'.repeat(100 * 1024)} HTTP/1.1\r\n${H}\r\n`],
    ];
    for (const [name, raw] of cases) {
      const before = echo.requests.length;
      const r = await rawExchange(p.port, raw);
      assert.match(r.text, /^HTTP\/1\.1 431 /, `${name}: ${r.text.slice(0, 60)}`);
      assert.ok(r.closed, `${name}: closed`);
      assert.equal(echo.requests.length, before, `${name}: nothing forwarded`);
    }
    await stillServes(p);
  } finally { await p.close(); await echo.close(); }
});

test('B3 slow body: a request body that stalls is answered 408 and nothing is forwarded', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], {}, { limits: { requestBodyIdleTimeoutMs: 300 } }));
  try {
    const t0 = performance.now();
    const r = await rawExchange(p.port, `POST / HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\nonly part of it`, 3000);
    assert.match(r.text, /^HTTP\/1\.1 408 /);
    assert.ok(r.closed);
    assert.ok(performance.now() - t0 < 2500);
    assert.equal(echo.requests.length, 0);
    await stillServes(p);
  } finally { await p.close(); await echo.close(); }
});

test('B3 slow read: a client that never reads a large response holds the backend back (bounded memory)', async () => {
  let written = 0;
  let stop = false;
  const big = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const pump = (): void => {
      while (!stop && written < 256 * 1024 * 1024) {
        written += chunk.length;
        if (!res.write(chunk)) { res.once('drain', pump); return; }
      }
      res.end();
    };
    pump();
  });
  await new Promise<void>((r) => big.listen(0, '127.0.0.1', r));
  const p = await startTestProxy(simpleConfig([(big.address() as AddressInfo).port]));
  try {
    // A client that sends its request and never reads: after a while the backend must be stuck on backpressure.
    const s = net.connect(p.port, '127.0.0.1');
    s.on('error', () => {});
    s.pause();
    s.write(`GET / HTTP/1.1\r\n${H}\r\n`);
    await new Promise((res) => setTimeout(res, 1500));
    assert.ok(written < 32 * 1024 * 1024, `backend wrote ${(written / 1048576).toFixed(1)} MiB to a client that reads nothing`);
    s.destroy();
    stop = true;
    await stillServes(p).catch(() => {});
  } finally { stop = true; await p.close(); big.closeAllConnections(); await new Promise<void>((r) => big.close(() => r())); }
});

// --- B4: HTTP/2 attacks (raw frames) ---

async function h2Proxy(): Promise<{ p: TestProxy; echo: Awaited<ReturnType<typeof startEcho>>; close(): Promise<void> }> {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], { protocol: 'auto' }));
  return { p, echo, close: async () => { await p.close(); await echo.close(); } };
}

test('B4 control: a raw-frame request is served (the helpers speak valid HTTP/2)', async () => {
  const t = await h2Proxy();
  try {
    const r = await h2Exchange(t.p.port, [frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock())], { waitMs: 800 });
    assert.ok(r.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 1), 'a response HEADERS frame');
    assert.equal(t.echo.requests.length, 1);
  } finally { await t.close(); }
});

test('B4 CONTINUATION flood: endless header fragments end in GOAWAY and a closed connection, nothing forwarded', async () => {
  const t = await h2Proxy();
  try {
    const r = await h2Exchange(t.p.port, async (s) => {
      s.write(frame(FRAME.HEADERS, 0, 1, requestBlock()));
      await flood(s, 20_000, () => frame(FRAME.CONTINUATION, 0, 1, literal('x-flood', 'a'.repeat(64))));
    }, { waitMs: 10_000 });
    assert.ok(r.closed, 'the proxy closed the connection');
    assert.equal(t.echo.requests.length, 0);
    await stillServes(t.p);
  } finally { await t.close(); }
});

test('B4 SETTINGS and PING floods from a client that never reads: the connection is cut, memory stays bounded', async () => {
  const t = await h2Proxy();
  try {
    const rss0 = process.memoryUsage().rss;
    for (const [name, make] of [['SETTINGS', () => settings([[4, 65535]])], ['PING', () => frame(FRAME.PING, 0, 0, Buffer.alloc(8))]] as const) {
      const r = await h2Exchange(t.p.port, (s) => flood(s, 200_000, make), { waitMs: 10_000, read: false });
      assert.ok(r.closed, `${name} flood: the proxy closed the connection`);
      // ENHANCE_YOUR_CALM when our limits trip first; INTERNAL_ERROR when nghttp2's own flood detection does (Node then
      // destroys the session itself, with that code, before any handler of ours runs). Either way the peer is cut off.
      if (r.goawayCode !== undefined) assert.ok([11, 2].includes(r.goawayCode), `${name} flood: GOAWAY(ENHANCE_YOUR_CALM or INTERNAL_ERROR), got ${r.goawayCode}`);
    }
    assert.ok(process.memoryUsage().rss - rss0 < 200 * 1024 * 1024, 'RSS grew by less than 200 MiB');
    await stillServes(t.p);
  } finally { await t.close(); }
});

test('B4 HPACK bomb: one 4 KiB table entry referenced 2,000 times is refused, not decoded into 8 MiB of headers', async () => {
  const t = await h2Proxy();
  try {
    const block = Buffer.concat([requestBlock(), literalIndexed('x-bomb', 'b'.repeat(4000)), ...Array.from({ length: 2000 }, () => indexed(62))]);
    // Split over CONTINUATION frames (max frame size 16 KiB).
    const frames: Buffer[] = [];
    for (let off = 0, first = true; off < block.length; off += 16_000, first = false) {
      const last = off + 16_000 >= block.length;
      frames.push(frame(first ? FRAME.HEADERS : FRAME.CONTINUATION, (last ? FLAG.END_HEADERS : 0) | (first ? FLAG.END_STREAM : 0), 1, block.subarray(off, off + 16_000)));
    }
    const r = await h2Exchange(t.p.port, frames, { waitMs: 1500 });
    const refused = r.closed || r.frames.some((f) => (f.type === FRAME.RST_STREAM && f.streamId === 1) || f.type === FRAME.GOAWAY)
      || r.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 1 && f.payload.includes(Buffer.from('431')));
    assert.ok(refused, `frames: ${r.frames.map((f) => f.type).join(',')}`);
    assert.equal(t.echo.requests.length, 0);
    await stillServes(t.p);
  } finally { await t.close(); }
});

test('B4 streams over the limit: streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused, the rest served', async () => {
  const echo = await startEcho();
  const p = await startTestProxy(simpleConfig([echo.port], { protocol: 'auto' }, { limits: { http2MaxConcurrentStreams: 10 } }));
  try {
    // 30 streams opened at once, none of them finished by the client (no END_STREAM): only 10 may be open.
    const frames = Array.from({ length: 30 }, (_, i) => frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, requestBlock('/', 'echo.default', 'POST')));
    const r = await h2Exchange(p.port, frames, { waitMs: 1500 });
    const resets = r.frames.filter((f) => f.type === FRAME.RST_STREAM);
    assert.ok(resets.length >= 20 || r.goawayCode !== undefined, `resets ${resets.length}, goaway ${r.goawayCode}`);
    assert.ok(echo.requests.length <= 10);
    await stillServes(p);
  } finally { await p.close(); await echo.close(); }
});
