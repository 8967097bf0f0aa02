import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import test from 'node:test';
import { adaptTunnelStream } from './stream-adapter.ts';

/** A stand-in for the HTTP/2 stream: records each write it is given (one write = one DATA frame there). */
function fakeH2(): Duplex & { writes: Buffer[] } {
  const writes: Buffer[] = [];
  const d = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) { writes.push(chunk); cb(); },
  });
  return Object.assign(d, { writes });
}

test('a corked head and body reach the tunnel stream as one write, copied from the writer\'s buffers', async () => {
  const h2 = fakeH2();
  const a = adaptTunnelStream(h2);
  const head = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n');
  const body = Buffer.from('ok');
  a.cork();
  a.write(head);
  a.write(body);
  await new Promise<void>((resolve) => { a.write(Buffer.alloc(0), () => resolve()); a.uncork(); });
  const sent = Buffer.concat(h2.writes).toString();
  assert.equal(sent, 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  assert.equal(h2.writes.filter((w) => w.length > 0).length, 1, 'one write for the corked batch');
  // The writer reuses its buffers once called back: what the tunnel holds must not change.
  head.fill(0); body.fill(0);
  assert.equal(Buffer.concat(h2.writes).toString(), sent);
});

test('single writes stay in order and are copies', async () => {
  const h2 = fakeH2();
  const a = adaptTunnelStream(h2);
  const parts = ['GET / HTTP/1.1\r\n', 'host: a\r\n', '\r\n'].map((p) => Buffer.from(p));
  for (const p of parts) await new Promise<void>((resolve) => a.write(p, () => resolve()));
  for (const p of parts) p.fill(0);
  assert.equal(Buffer.concat(h2.writes).toString(), 'GET / HTTP/1.1\r\nhost: a\r\n\r\n');
});
