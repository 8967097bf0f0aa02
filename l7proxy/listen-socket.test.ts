import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { boundPort, closeListenSocket, encodeSockaddr, openListenSocket } from './listen-socket.ts';

test('encodeSockaddr: IPv4 and IPv6 in the kernel layout (family host order, port network order)', () => {
  assert.deepEqual([...encodeSockaddr('10.1.2.3', 15001).subarray(0, 8)], [2, 0, 0x3a, 0x99, 10, 1, 2, 3]);
  const v6 = encodeSockaddr('fd00::1', 80);
  assert.equal(v6.length, 28);
  assert.equal(v6.readUInt16BE(2), 80);
  assert.equal(v6.readUInt16BE(8), 0xfd00);
  assert.equal(v6.readUInt16BE(22), 1);
  assert.throws(() => encodeSockaddr('localhost', 1), /not a numeric/);
});

test('two sockets bind one port (SO_REUSEPORT); a plain bind is refused; nothing is accepted before a listen', async () => {
  const a = openListenSocket('127.0.0.1', 0);
  const b = openListenSocket('127.0.0.1', a.port);
  assert.equal(b.port, a.port);
  assert.equal(boundPort(a.fd), a.port);
  // A socket without SO_REUSEPORT cannot join the group: that is how an old proxy shows up.
  const plain = net.createServer();
  await assert.rejects(new Promise((resolve, reject) => { plain.once('error', reject); plain.listen({ host: '127.0.0.1', port: a.port }, () => resolve(undefined)); }), /EADDRINUSE/);
  // Bound but not listening: a starting proxy collects no connections it cannot serve yet.
  await assert.rejects(new Promise<void>((resolve, reject) => { const s = net.connect(a.port, '127.0.0.1', () => { s.destroy(); resolve(); }); s.once('error', reject); }), /ECONNREFUSED/);
  closeListenSocket(a);
  closeListenSocket(b);
  assert.equal(boundPort(a.fd), -1);
  // Closing again is a no-op: the descriptor is no longer that socket.
  closeListenSocket(a);
});

test('a worker-style listen({ fd }) serves on the socket', async () => {
  const s = openListenSocket('127.0.0.1', 0);
  const server = net.createServer((c) => c.end('hi'));
  await new Promise<void>((r) => server.listen({ fd: s.fd }, () => r()));
  assert.equal((server.address() as net.AddressInfo).port, s.port);
  const got = await new Promise<string>((resolve, reject) => {
    let d = '';
    const c = net.connect(s.port, '127.0.0.1');
    c.on('data', (x) => { d += x; }).on('end', () => resolve(d)).on('error', reject);
  });
  assert.equal(got, 'hi');
  await new Promise((r) => server.close(r));
  assert.equal(boundPort(s.fd), -1, 'the server owned and closed the descriptor');
});
