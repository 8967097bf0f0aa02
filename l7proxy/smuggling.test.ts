// Raw-socket framing tests: each hostile request is answered 400/431 and the connection closed, and the echo
// backend (which records the raw bytes it receives and parses them with strict llhttp) sees exactly the requests
// the proxy logged as forwarded — zero bytes for every rejected one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { countRequestsInRaw, rawExchange, simpleConfig, startEcho, startTestProxy, type EchoServer, type TestProxy } from './testing/harness.ts';

const H = 'Host: echo.default\r\n';
const many = (n: number): string => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');

/** [name, raw request, expected status]. */
const HOSTILE: [string, string, number][] = [
  ['CL+TE', `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE+CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`, 400],
  ['TE(tab)+CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`, 400],
  ['duplicate CL, same value', `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx`, 400],
  ['duplicate CL, different', `POST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx`, 400],
  ['CL list', `POST / HTTP/1.1\r\n${H}Content-Length: 1, 1\r\n\r\nx`, 400],
  ['CL +1', `POST / HTTP/1.1\r\n${H}Content-Length: +1\r\n\r\nx`, 400],
  ['CL leading zeros', `POST / HTTP/1.1\r\n${H}Content-Length: 001\r\n\r\nx`, 400],
  ['CL 0x', `POST / HTTP/1.1\r\n${H}Content-Length: 0x1\r\n\r\nx`, 400],
  ['CL negative', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nx`, 400],
  ['TE chunked, identity', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`, 400],
  ['TE identity, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE gzip, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE twice', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE space before colon', `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE on HTTP/1.0', `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
  ['chunk size 0x', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x1\r\nx\r\n0\r\n\r\n`, 400],
  ['chunk size with space', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n`, 400],
  ['chunk-extension flood', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`, 400],
  ['bare LF line ends', `GET / HTTP/1.1\n${H.replace('\r\n', '\n')}\n`, 400],
  ['bare LF in a header', `GET / HTTP/1.1\r\n${H}X: a\nY: b\r\n\r\n`, 400],
  ['bare CR in a header', `GET / HTTP/1.1\r\n${H}X: a\rY: b\r\n\r\n`, 400],
  ['obs-fold', `GET / HTTP/1.1\r\n${H}X: a\r\n b\r\n\r\n`, 400],
  ['NUL in a value', `GET / HTTP/1.1\r\n${H}X: a\x00b\r\n\r\n`, 400],
  ['control char in a value', `GET / HTTP/1.1\r\n${H}X: a\x01b\r\n\r\n`, 400],
  ['space before colon', `GET / HTTP/1.1\r\n${H}X : a\r\n\r\n`, 400],
  ['underscore header', `GET / HTTP/1.1\r\n${H}X_User: admin\r\n\r\n`, 400],
  ['101 headers', `GET / HTTP/1.1\r\n${H}${many(100)}\r\n`, 431],
  ['64 KiB header', `GET / HTTP/1.1\r\n${H}X: ${'a'.repeat(64 * 1024)}\r\n\r\n`, 431],
  ['invalid target byte', `GET /a\x01b HTTP/1.1\r\n${H}\r\n`, 400],
  ['space in target', `GET /a b HTTP/1.1\r\n${H}\r\n`, 400],
  ['HTTP/0.9', 'GET /\r\n\r\n', 400],
  ['HTTP/2.0 request line', `GET / HTTP/2.0\r\n${H}\r\n`, 400],
  ['missing Host', 'GET / HTTP/1.1\r\n\r\n', 400],
  ['duplicate Host', `GET / HTTP/1.1\r\n${H}Host: other\r\n\r\n`, 400],
  ['lower-case method', `get / HTTP/1.1\r\n${H}\r\n`, 400],
  // TE.TE and CL variants: spellings one parser might take for chunked (or a length) and another not.
  ['TE vertical tab', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE chunked, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`, 400],
  ['TE " chunked" + CL', `POST / HTTP/1.1\r\n${H}Transfer-Encoding:  chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`, 400],
  ['TE chunked-false', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked-false\r\n\r\n0\r\n\r\n`, 400],
  ['TE quoted', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`, 400],
  ['CL 05', `POST / HTTP/1.1\r\n${H}Content-Length: 05\r\n\r\nhello`, 400],
  ['CL +5', `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`, 400],
  ['CL 0x5', `POST / HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`, 400],
  ['CL trailing garbage', `POST / HTTP/1.1\r\n${H}Content-Length: 5x\r\n\r\nhello`, 400],
  ['CL with inner space', `POST / HTTP/1.1\r\n${H}Content-Length: 1 0\r\n\r\nhello`, 400],
  ['CL overflow', `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999999\r\n\r\nhello`, 400],
  // Chunk framing tricks.
  ['chunk size overflow', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n`, 400],
  ['chunk size 0x5', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`, 400],
  ['chunk data longer than its size', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n`, 400],
  ['many tiny chunk extensions', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1${';a'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`, 400],
  ['Content-Length in a request trailer section', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n`, 400],
  ['chunk extension with bare LF', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;a\nx\r\n0\r\n\r\n`, 400],
  ['chunk with bare LF terminator', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\nx\n0\n\n`, 400],
  // Bytes that must never appear where they do.
  ['NUL in the target', `GET /\x00 HTTP/1.1\r\n${H}\r\n`, 400],
  ['NUL in a header name', `GET / HTTP/1.1\r\n${H}X\x00Y: a\r\n\r\n`, 400],
  ['bare CR line ends', `GET / HTTP/1.1\r${H.replace('\r\n', '\r')}\r`, 400],
  ['header line without colon', `GET / HTTP/1.1\r\n${H}NoColonHere\r\n\r\n`, 400],
  ['tab before colon', `GET / HTTP/1.1\r\n${H}Content-Length\t: 0\r\n\r\n`, 400],
];

/** [name, raw request (ending in Connection: close), body the backend must receive]: forwarded exactly once. */
const ACCEPTED: [string, string, string][] = [
  ['TE with surrounding whitespace', `POST /ows HTTP/1.1\r\n${H}Transfer-Encoding:   chunked  \r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, 'abc'],
  ['TE in upper case', `POST /upper HTTP/1.1\r\n${H}TRANSFER-ENCODING: CHUNKED\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, 'abc'],
  ['chunked with a trailer section', `POST /trailers HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n`, 'abc'],
  ['Expect: 100-continue', `POST /expect HTTP/1.1\r\n${H}Content-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nabc`, 'abc'],
  ['a chunk extension of reasonable size', `POST /ext HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;name=value\r\nabc\r\n0\r\n\r\n`, 'abc'],
];

describe('request smuggling and framing', () => {
  let echo: EchoServer;
  let p: TestProxy;
  before(async () => {
    echo = await startEcho();
    p = await startTestProxy(simpleConfig([echo.port]));
  });
  after(async () => { await p?.close(); await echo?.close(); });

  for (const [name, raw, status] of HOSTILE) {
    test(`${name} → ${status} and close, nothing forwarded`, async () => {
      const bytesBefore = echo.raw().length;
      const { text, closed } = await rawExchange(p.port, raw);
      assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), `${name}: got ${JSON.stringify(text.slice(0, 80))}`);
      assert.equal(text.indexOf('HTTP/1.1', 1), -1, 'exactly one response');
      assert.ok(closed, `${name}: the connection must be closed`);
      assert.equal(echo.raw().length, bytesBefore, `${name}: bytes reached the backend`);
    });
  }

  for (const [name, raw, body] of ACCEPTED) {
    test(`${name} → forwarded exactly once, body intact, framing rebuilt`, async () => {
      const before = echo.requests.length;
      const { text } = await rawExchange(p.port, raw);
      assert.match(text.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ''), /^HTTP\/1\.1 200 /, `${name}: ${JSON.stringify(text.slice(0, 80))}`);
      const got = echo.requests.slice(before);
      assert.equal(got.length, 1);
      assert.equal(got[0]!.body, body);
      const names = got[0]!.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase());
      assert.ok(!names.includes('expect'), 'Expect is answered by the proxy, not passed on');
      assert.ok(!names.includes('x-t'), 'request trailers are not merged into the head');
      assert.equal(names.filter((h) => h === 'content-length' || h === 'transfer-encoding').length, 1, 'exactly one framing header');
    });
  }

  test('CONNECT is refused', async () => {
    const { text, closed } = await rawExchange(p.port, 'CONNECT echo.default:80 HTTP/1.1\r\nHost: echo.default:80\r\n\r\n');
    assert.match(text, /^HTTP\/1\.1 405 /);
    assert.ok(closed);
  });

  test('pipelined requests are answered in order; a request smuggled in a body stays a body', async () => {
    const inner = `GET /admin HTTP/1.1\r\n${H}\r\n`;
    const raw = `GET /one HTTP/1.1\r\n${H}\r\nPOST /two HTTP/1.1\r\n${H}Content-Length: ${inner.length}\r\n\r\n${inner}GET /three HTTP/1.1\r\n${H}Connection: close\r\n\r\n`;
    const { text } = await rawExchange(p.port, raw);
    const urls = [...text.matchAll(/"url":"([^"]*)"/g)].map((m) => m[1]);
    assert.deepEqual(urls, ['/one', '/two', '/three']);
    assert.ok(!echo.requests.some((r) => r.url === '/admin'));
  });

  test('a valid request followed by a smuggled one: the first is forwarded, nothing after it', async () => {
    const before = echo.requests.length;
    await rawExchange(p.port, `GET /first HTTP/1.1\r\n${H}\r\nPOST /x HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n\r\n`);
    const seen = echo.requests.slice(before).map((r) => r.url);
    assert.deepEqual(seen, ['/first']);
  });

  test('a refused request poisons its connection: later pipelined requests are not forwarded', async () => {
    const before = echo.requests.length;
    const { text } = await rawExchange(p.port, `GET /a HTTP/1.1\r\n${H}Content-Length: 01\r\n\r\nxGET /after HTTP/1.1\r\n${H}\r\n`);
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.equal(echo.requests.length, before);
  });

  test('the backend received exactly the requests the proxy logged as forwarded', async () => {
    const forwarded = p.log.filter((e) => e.forwarded).map((e) => `${e.method} ${e.target}`);
    const received = echo.requests.map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(received, forwarded);
    // And the raw bytes, re-parsed by strict llhttp, are exactly those requests.
    assert.deepEqual(await countRequestsInRaw(echo.raw()), forwarded);
    assert.ok(p.proxy.stats.rejected.malformed + p.proxy.stats.rejected.headersTooLarge >= HOSTILE.length);
  });
});
