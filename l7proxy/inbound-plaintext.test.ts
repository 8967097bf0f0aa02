// The plaintext inbound listener: steered connections are served (police), reset at once (STRICT), or reset because
// they cannot be placed (fail closed); the original destination comes from netfilter's SO_ORIGINAL_DST.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { PlaintextInboundListener, parseSockaddrIn, readNatOriginalDst, type PlaintextHandling } from './inbound-plaintext.ts';
import { createStats } from './stats.ts';
import type { OriginalDestination } from './proxy.ts';

/** Connects, sends a line, and reports what came back and how the connection ended. */
function exchange(port: number): Promise<{ data: string; error: string | undefined; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ host: '127.0.0.1', port });
    let data = '';
    let error: string | undefined;
    s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
    s.on('data', (d) => { data += d.toString(); });
    s.on('error', (e: NodeJS.ErrnoException) => { error = e.code; });
    s.on('close', () => resolve({ data, error, ms: Date.now() - t0 }));
  });
}

test('police → served as unauthenticated with the original destination; STRICT and unplaceable → reset and counted', { timeout: 10_000 }, async (t) => {
  const stats = createStats().plaintextInbound;
  const dsts: OriginalDestination[] = [
    { ip: '10.244.1.11', port: 8080 }, // policed
    { ip: '10.244.1.10', port: 8080 }, // STRICT
    { ip: '10.244.1.99', port: 8080 }, // not steered (stale table)
  ];
  const table: Record<string, PlaintextHandling> = { '10.244.1.11:8080': 'police', '10.244.1.10:8080': 'refuse' };
  let next: OriginalDestination | undefined;
  const served: Array<{ dst: OriginalDestination; remote: string }> = [];
  const l = await PlaintextInboundListener.start({
    host: '127.0.0.1', port: 0, stats,
    originalDst: () => next,
    handling: (d) => table[`${d.ip}:${d.port}`],
    serve: (socket, dst, remote) => { served.push({ dst, remote }); socket.resume(); socket.end('served\n'); },
  });
  t.after(() => l.close());

  next = dsts[0];
  const ok = await exchange(l.port);
  assert.equal(ok.data, 'served\n');
  assert.deepEqual(served, [{ dst: dsts[0], remote: '127.0.0.1' }]);

  next = dsts[1];
  const strict = await exchange(l.port);
  assert.equal(strict.error, 'ECONNRESET', 'STRICT plaintext is reset, not left hanging');
  assert.equal(strict.data, '');
  assert.ok(strict.ms < 1000, `reset took ${strict.ms} ms`);

  next = dsts[2];
  assert.equal((await exchange(l.port)).error, 'ECONNRESET');
  next = undefined;
  assert.equal((await exchange(l.port)).error, 'ECONNRESET', 'no original destination: nothing to police, nothing forwarded');

  assert.equal(served.length, 1);
  assert.deepEqual(stats, { policed: 1, strictRefused: 1, refused: 2 });
});

test('SO_ORIGINAL_DST: a connection that was not NATed has none (so the listener resets it)', { timeout: 10_000 }, async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const s = await accepted;
  assert.equal(readNatOriginalDst(s), undefined);
  c.destroy();
  s.destroy();
});

test('sockaddr_in parsing: family, network-order port, address', () => {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(2, 0);
  b.writeUInt16BE(8080, 2);
  Buffer.from([10, 244, 1, 11]).copy(b, 4);
  assert.deepEqual(parseSockaddrIn(b), { ip: '10.244.1.11', port: 8080 });
  b.writeUInt16LE(10, 0); // AF_INET6
  assert.equal(parseSockaddrIn(b), undefined);
});
