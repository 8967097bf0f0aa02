/** Client for the BPF datapath e2e test; runs inside the test cgroup and netns, prints one JSON line. */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';

const [mode = '', host = '', portText = '0', countText = '1'] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);

interface Connected {
  body: string;
  peer: string;
}

function connectOnce(): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let body = '';
    let peer = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      peer = `${sock.remoteAddress}:${sock.remotePort}`; // getpeername(2)
    });
    sock.on('data', (d: string) => (body += d));
    sock.on('end', () => resolve({ body: body.trim(), peer }));
    sock.on('error', reject);
  });
}

function refusedOnce(): Promise<{ code: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const sock = connect({ host, port });
    const done = (code: string) => {
      sock.destroy();
      resolve({ code, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    };
    sock.on('connect', () => done('CONNECTED'));
    sock.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? 'UNKNOWN'));
    setTimeout(() => done('TIMEOUT'), 3000).unref();
  });
}

function udpOnce(connected: boolean): Promise<{ reply: string; from: string; peer?: string }> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    let peer: string | undefined;
    const timer = setTimeout(() => reject(new Error('no UDP reply within 2 s')), 2000);
    sock.on('message', (msg, rinfo) => {
      clearTimeout(timer);
      sock.close();
      resolve({ reply: msg.toString(), from: `${rinfo.address}:${rinfo.port}`, ...(peer ? { peer } : {}) });
    });
    sock.on('error', reject);
    if (connected) {
      sock.connect(port, host, () => {
        const r = sock.remoteAddress(); // getpeername(2) on a connected UDP socket
        peer = `${r.address}:${r.port}`;
        sock.send('ping', (err) => err && reject(err));
      });
    } else {
      sock.send('ping', port, host, (err) => err && reject(err));
    }
  });
}

async function main(): Promise<unknown> {
  switch (mode) {
    case 'connect-many': {
      const counts: Record<string, number> = {};
      const peers: Record<string, number> = {};
      for (let i = 0; i < count; i++) {
        const r = await connectOnce();
        counts[r.body] = (counts[r.body] ?? 0) + 1;
        peers[r.peer] = (peers[r.peer] ?? 0) + 1;
      }
      return { counts, peers };
    }
    case 'refused': {
      const out = [];
      for (let i = 0; i < count; i++) out.push(await refusedOnce());
      return { results: out };
    }
    case 'udp':
      return { unconnected: await udpOnce(false), connected: await udpOnce(true) };
    case 'echo': {
      // Many small writes on one connection: data must arrive intact and in order, whichever path it takes.
      return await new Promise((resolve, reject) => {
        const sock = connect({ host, port });
        const expected = Array.from({ length: count }, (_, i) => `msg-${i};`).join('');
        let got = '';
        sock.setEncoding('utf8');
        sock.on('connect', () => {
          for (let i = 0; i < count; i++) sock.write(`msg-${i};`);
        });
        sock.on('data', (d: string) => {
          got += d;
          if (got.length >= expected.length) {
            sock.end();
            resolve({ ok: got === expected, bytes: got.length, peer: `${sock.remoteAddress}:${sock.remotePort}` });
          }
        });
        sock.on('error', reject);
      });
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main().then(
  (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
  (err: unknown) => {
    process.stdout.write(`${JSON.stringify({ error: String(err) })}\n`);
    process.exitCode = 1;
  },
);
