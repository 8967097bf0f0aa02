// B1 differential: requests built from a grammar with framing mutations go through the real proxy on loopback to an
// echo backend that keeps every raw byte; the same bytes go to a strict reference (Node's llhttp,
// insecureHTTPParser off). The proxy may refuse more than the reference, never less: each request the backend
// receives must be, in order, a request the reference parsed with the same method, target and body, and the
// backend's raw bytes re-parsed must be exactly the requests the proxy logged as forwarded. A refusal is a 400/431
// followed by a close. Seeded (the seed is printed; replay with NODEMESH_PROPERTY_SEED=<seed>).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { formatTarget, normalizeTarget } from './normalize.ts';
import { simpleConfig, startEcho, startTestProxy, type EchoServer, type TestProxy } from './testing/harness.ts';

const SEED = Number(process.env['NODEMESH_PROPERTY_SEED'] ?? Date.now() % 2 ** 31);
const RUNS = Number(process.env['NODEMESH_PROPERTY_RUNS'] ?? 150);
console.log(`http1.differential: seed ${SEED}, ${RUNS} cases (replay with NODEMESH_PROPERTY_SEED=${SEED})`);

type Parsed = { method: string; target: string; body: string };

/** Write `data`, collect the answer until the peer closes or stays silent for `idleMs` (then cut). */
function exchange(port: number, data: Buffer, idleMs: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => { clearTimeout(timer); resolve({ text: Buffer.concat(got).toString('latin1'), closed }); };
    const arm = (): void => { clearTimeout(timer); timer = setTimeout(() => { s.destroy(); finish(); }, idleMs); };
    s.on('data', (d: Buffer) => { got.push(d); arm(); });
    s.on('error', () => {});
    s.on('close', () => { closed = true; finish(); });
    s.write(data, arm);
  });
}

/**
 * The strict reference: a plain Node server (llhttp, insecureHTTPParser off, the proxy's head-size limit) fed the
 * bytes over an in-memory stream that then ends, so the parse is complete when the server closes its side.
 */
function referenceParse(raw: Buffer): Promise<Parsed[]> {
  const seen: { req: http.IncomingMessage; body: Buffer[] }[] = [];
  const server = http.createServer({ insecureHTTPParser: false, maxHeaderSize: 60 * 1024, requireHostHeader: false }, (req, res) => {
    const entry = { req, body: [] as Buffer[] };
    seen.push(entry);
    req.on('data', (c: Buffer) => entry.body.push(c));
    req.on('end', () => res.end());
  });
  server.on('clientError', (_err, socket: Duplex) => socket.destroy());
  return new Promise((resolve) => {
    let sent = false;
    const socket = new Duplex({
      read() { if (!sent) { sent = true; this.push(raw); this.push(null); } },
      write(_chunk, _enc, cb) { cb(); },
    });
    // llhttp marks a message complete while it parses, so a request followed by garbage still counts; one cut
    // short by a framing error or by the end of the bytes does not.
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      setImmediate(() => resolve(seen.filter((e) => e.req.complete).map((e) => ({ method: e.req.method ?? '', target: e.req.url ?? '', body: Buffer.concat(e.body).toString('latin1') }))));
    };
    const timer = setTimeout(done, 30);
    socket.on('close', () => setImmediate(done));
    socket.on('error', () => {});
    server.emit('connection', socket);
  });
}

// ---------------------------------------------------------------------------------------------- the grammar

/** Mostly `valid`, sometimes one of the mutations: with several fields per request, most cases stay parseable. */
function mostly<T>(valid: T, ...mutations: T[]): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: fc.constant(valid), weight: 10 }, { arbitrary: fc.constantFrom(...mutations), weight: 1 });
}

const EOL = mostly('\r\n', '\n', '\r');
const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: echo.default\r\n\r\n';

/** Framing of one request: which length headers it carries, how they are spelled, and the body that follows. */
const framing = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({
    kind: fc.constant('cl' as const),
    spelling: mostly('N', '+N', '0N', ' N', 'N ', 'N, N', 'N,N', '0xN', 'N\x0b', '\tN', '-N', 'N\x00', '9999999999999999999N'),
    duplicate: mostly('no', 'same', 'other'),
    delta: mostly(0, -1, 1),
    withTe: mostly(false, true),
  }),
  fc.record({
    kind: fc.constant('te' as const),
    value: mostly('chunked', 'Chunked', ' chunked ', '\tchunked', 'chunked, identity', 'identity, chunked', 'gzip, chunked', 'chunked, chunked', 'xchunked', 'chunked\x0b', '"chunked"', 'chunk', 'identity', 'chunked;q=1'),
    twice: mostly(false, true),
    withCl: mostly(false, true),
    chunks: fc.array(fc.record({
      size: fc.integer({ min: 0, max: 70 }),
      sizeSpelling: mostly('hex', 'HEX', '0x', 'lead0', 'space', 'tabext', 'ext', 'quotedext', 'badext', 'huge', 'neg', 'bareext'),
      delta: mostly(0, -1, 1),
      eol: EOL,
    }), { maxLength: 3 }),
    trailer: mostly('', 'X-T: 1\r\n', 'Content-Length: 5\r\n', 'Transfer-Encoding: chunked\r\n', 'X-T: 1\n', 'X-T\r\n', 'X-T: 1\r\n folded\r\n'),
    lastEol: EOL,
  }),
);

const request = fc.record({
  method: mostly('POST', 'GET', 'PUT', 'get', 'G ET', 'POST ', 'GET\t'),
  target: mostly('/a', '/b/c', '/d?e=1', '/a b', '/a\x00', '/a#f', '*', '/%zz', 'http://echo.default/abs', '/\x7f', '/é', '/a\tb', '//admin'),
  version: mostly('HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'http/1.1', 'HTTP/1.1 ', 'HTTP/01.1', 'HTTP/1.10'),
  host: mostly('Host: echo.default', 'host:echo.default', 'Host : echo.default', 'Host: echo.default\r\nHost: other', '', 'Host: echo.default\r\n foo', 'Host:\techo.default\t', 'Host: echo.default\x00'),
  extra: fc.array(mostly('X-A: 1', 'X-B: a\x00b', 'X-C: a\rb', 'X-D: a\nb', 'X-E:  spaced  ', 'X_F: 1', 'X-G : 1', 'X-H: 1\r\n folded', 'X-I:', ': novalue', 'X-J: \x80\xff', 'Expect: 100-continue', 'Connection: keep-alive', 'Upgrade: h2c', 'X-K\t: 1', 'Connection: Transfer-Encoding', 'Connection: Content-Length'), { maxLength: 3 }),
  framing,
  body: fc.constantFrom('abc', 'hello world', SMUGGLED, `0\r\n\r\n${SMUGGLED}`, ''),
  eol: EOL,
});

type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;

function spellCl(spelling: string, n: number): string { return spelling.replaceAll('N', String(n)); }

function spellSize(spelling: string, n: number): string {
  const hex = n.toString(16);
  switch (spelling) {
    case 'HEX': return hex.toUpperCase();
    case '0x': return `0x${hex}`;
    case 'lead0': return `00${hex}`;
    case 'space': return `${hex} `;
    case 'tabext': return `${hex}\t;a=b`;
    case 'ext': return `${hex};name=value`;
    case 'quotedext': return `${hex};name="a;b"`;
    case 'badext': return `${hex};=`;
    case 'huge': return `FFFFFFFFFFFFFFFFF${hex}`;
    case 'neg': return `-${hex}`;
    case 'bareext': return `${hex};`;
    default: return hex;
  }
}

/** One request as bytes; `last` adds `Connection: close` so the exchange ends when both sides agree. */
function render(r: Req, last: boolean): string {
  const lines = [`${r.method} ${r.target} ${r.version}`];
  if (r.host) lines.push(r.host);
  lines.push(...r.extra);
  let body = '';
  const f = r.framing;
  if (f.kind === 'cl') {
    const len = Math.max(0, r.body.length + f.delta);
    lines.push(`Content-Length: ${spellCl(f.spelling, len)}`);
    if (f.duplicate === 'same') lines.push(`Content-Length: ${spellCl(f.spelling, len)}`);
    if (f.duplicate === 'other') lines.push(`Content-Length: ${len + 1}`);
    if (f.withTe) lines.push('Transfer-Encoding: chunked');
    body = r.body;
  } else if (f.kind === 'te') {
    lines.push(`Transfer-Encoding: ${f.value}`);
    if (f.twice) lines.push('Transfer-Encoding: chunked');
    if (f.withCl) lines.push(`Content-Length: ${r.body.length}`);
    for (const c of f.chunks) {
      const data = (r.body + 'x'.repeat(c.size)).slice(0, Math.max(0, c.size + c.delta));
      body += `${spellSize(c.sizeSpelling, c.size)}${c.eol}${data}\r\n`;
    }
    body += `0${f.lastEol}${f.trailer}\r\n`;
  }
  if (last) lines.push('Connection: close');
  return lines.join(r.eol) + r.eol + r.eol + body;
}

/** The target as the proxy forwards it (normalized), or undefined when the proxy cannot accept it. */
function forwardedForm(target: string): string | undefined {
  const n = normalizeTarget(target, ['echo.default']);
  return n.ok ? formatTarget(n.value.path, n.value.query) : undefined;
}

describe('HTTP/1 framing: proxy vs strict reference', () => {
  let echo: EchoServer;
  let p: TestProxy;
  before(async () => {
    echo = await startEcho();
    p = await startTestProxy(simpleConfig([echo.port]));
  });
  after(async () => {
    console.log(`http1.differential: ${tally.cases} cases, ${tally.referenceParsed} with requests the reference parsed, ${tally.forwarded} with requests forwarded`);
    await p?.close(); await echo?.close();
  });
  const tally = { cases: 0, referenceParsed: 0, forwarded: 0 };

  /** Sends one case to both sides and checks the oracle; returns what happened for the corpus. */
  async function runCase(raw: Buffer): Promise<{ status: string; forwarded: string[] }> {
    const reference = await referenceParse(raw);
    const reqBefore = echo.requests.length;
    const rawBefore = echo.raw().length;
    const logBefore = p.log.length;
    const { text, closed } = await exchange(p.port, raw, 150);
    // The backend and the access log settle a moment after the client's answer.
    await new Promise((r) => setTimeout(r, 15));
    for (let i = 0; i < 50; i++) {
      const sent = p.log.slice(logBefore).filter((e) => e.forwarded && e.status !== 499).length;
      if (echo.requests.length - reqBefore >= sent) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const got = echo.requests.slice(reqBefore);
    const label = JSON.stringify(raw.toString('latin1'));
    assert.ok(got.length <= reference.length, `${label}: backend got ${got.length} requests, the strict reference parsed ${reference.length}`);
    // Pipelined requests are served concurrently, so the backend may see them in another order: match each
    // received request to a distinct one the reference parsed, with the same method, target and body.
    const unmatched = reference.map((r) => ({ ...r, target: forwardedForm(r.target) }));
    for (const g of got) {
      assert.notEqual(g.url, '/smuggled', `${label}: a request hidden in a body reached the backend`);
      const i = unmatched.findIndex((r) => r.method === g.method && r.target === g.url && r.body === g.body);
      assert.ok(i >= 0, `${label}: the backend got ${g.method} ${g.url} with body ${JSON.stringify(g.body)}, which the strict reference did not parse (it parsed ${JSON.stringify(reference)})`);
      unmatched.splice(i, 1);
    }
    // What the proxy logged as forwarded reached the backend, except a request whose client left before it was
    // sent (499): the access log marks it forwarded, the backend never sees it.
    const logged = p.log.slice(logBefore).filter((e) => e.forwarded);
    const received = got.map((g) => `${g.method} ${g.url}`).sort();
    const notReceived = logged.map((e) => ({ key: `${e.method} ${e.target}`, status: e.status }));
    for (const r of received) {
      const i = notReceived.findIndex((e) => e.key === r);
      assert.ok(i >= 0, `${label}: the backend got ${r}, which the access log does not show as forwarded`);
      notReceived.splice(i, 1);
    }
    assert.deepEqual(notReceived.filter((e) => e.status !== 499), [], `${label}: logged as forwarded but never reached the backend`);
    const reparsed = (await referenceParse(echo.raw().subarray(rawBefore))).map((r) => `${r.method} ${r.target}`).sort();
    assert.deepEqual(reparsed, received, `${label}: the backend's raw bytes re-parse to other requests`);
    const forwardedLog = received;
    tally.cases++; if (reference.length > 0) tally.referenceParsed++; if (forwardedLog.length > 0) tally.forwarded++;
    const status = /^HTTP\/1\.1 ([0-9]{3}) /.exec(text)?.[1] ?? 'none';
    const statuses = [...text.matchAll(/^HTTP\/1\.1 ([0-9]{3}) /gm)].map((m) => m[1]!);
    if (statuses.some((s) => s === '400' || s === '431')) {
      assert.ok(closed, `${label}: a framing refusal must close the connection`);
      assert.ok(['400', '431'].includes(statuses.at(-1)!), `${label}: nothing may be answered after the refusal`);
    }
    return { status, forwarded: forwardedLog };
  }

  test('property: the proxy never forwards a request the strict reference did not parse the same way', async () => {
    await fc.assert(fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 3 }), async (reqs) => {
      const raw = Buffer.from(reqs.map((r, i) => render(r, i === reqs.length - 1)).join(''), 'latin1');
      await runCase(raw);
    }), { seed: SEED, numRuns: RUNS, endOnFailure: true });
  });

  // Seed corpus: cases worth keeping whatever the generator draws, with the outcome the proxy must give.
  const H = 'Host: echo.default\r\n';
  /**
   * [name, raw bytes, requests the backend must get, first status the client must read ('none': no answer)];
   * null leaves it to the oracle (a request ahead of a framing error may or may not be sent before the close).
   */
  const CORPUS: [string, string, string[] | null, string | null][] = [
    ['CL.TE smuggle', `POST /a HTTP/1.1\r\n${H}Content-Length: ${6 + SMUGGLED.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, [], '400'],
    ['TE.CL smuggle', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n${SMUGGLED}\r\n0\r\n\r\n`, [], '400'],
    ['TE tab-chunked + CL', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n\r\nabc`, [], '400'],
    ['chunk size 0x', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n`, [], '400'],
    ['chunk size with leading zeros is one chunk', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n003\r\nabc\r\n0\r\n\r\n`, ['POST /a'], '200'],
    ['quoted chunk extension with ";"', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;n="a;b"\r\nabc\r\n0\r\n\r\n`, ['POST /a'], '200'],
    ['body shorter than CL, then a pipelined request', `POST /a HTTP/1.1\r\n${H}Content-Length: 50\r\n\r\nabc${SMUGGLED}`, [], 'none'],
    ['pipelined valid then CL+TE', `GET /a HTTP/1.1\r\n${H}\r\nPOST /b HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, null, null],
    ['obs-fold in Host', `GET /a HTTP/1.1\r\nHost: echo.default\r\n foo\r\nConnection: close\r\n\r\n`, [], '400'],
    ['bare LF in chunk data terminator', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\n0\r\n\r\n`, [], '400'],
    ['trailer with Content-Length', `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n`, [], '400'],
    ['parameters-only segment before another (Tomcat reads /admin)', `GET /;x/admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, [], '400'],
    ['HTTP/1.0 with a body by CL', `POST /a HTTP/1.0\r\n${H}Content-Length: 3\r\n\r\nabc`, ['POST /a'], '200'],
  ];
  for (const [name, raw, want, status] of CORPUS) {
    test(`corpus: ${name}`, async () => {
      const r = await runCase(Buffer.from(raw, 'latin1'));
      if (want) assert.deepEqual(r.forwarded, want, name);
      if (status) assert.equal(r.status, status, name);
    });
  }
});
