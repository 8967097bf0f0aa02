// Relaying whole response bodies (forward.ts Http1Exchange.end): a small body goes out as one latin1 string with
// the head, a large one as a Buffer; either way the client must get exactly the bytes the upstream sent (byte
// counts for telemetry: request-telemetry.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startTestProxy, simpleConfig } from './testing/harness.ts';

/** An upstream answering every request with `body` (Content-Length, or chunked when `chunked`). */
async function startBodyServer(body: Buffer, chunked = false): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    if (chunked) { res.writeHead(200, { 'content-type': 'application/octet-stream' }); res.end(body); return; }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

function fetchBytes(port: number, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', method, headers: { host: 'echo.default' }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Every byte value, repeated to `size` bytes. */
function allBytes(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = i % 256;
  return b;
}

for (const [name, body, chunked] of [
  ['every byte value, small (one string with the head)', allBytes(256), false],
  ['at the merge limit', allBytes(16 * 1024), false],
  ['above the merge limit (a Buffer)', allBytes(16 * 1024 + 1), false],
  ['empty', Buffer.alloc(0), false],
  ['chunked from upstream', allBytes(1000), true],
] as const) {
  test(`a whole response body is relayed byte for byte: ${name}`, async () => {
    const up = await startBodyServer(body, chunked);
    const p = await startTestProxy(simpleConfig([up.port]));
    try {
      for (let i = 0; i < 3; i++) {
        const r = await fetchBytes(p.port);
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(body), `${name}: ${r.body.length} bytes back for ${body.length}, first difference at ${r.body.findIndex((v, j) => v !== body[j])}`);
        if (!chunked) assert.equal(r.headers['content-length'], String(body.length));
      }
      const head = await fetchBytes(p.port, 'HEAD');
      assert.deepEqual([head.status, head.body.length], [200, 0], 'a HEAD answer carries no body');
    } finally { await p.close(); await up.close(); }
  });
}
