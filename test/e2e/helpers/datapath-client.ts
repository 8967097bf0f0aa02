/**
 * Client of the datapath e2e test, run inside a sandbox pod (its netns and cgroup, so the node's
 * socket programs govern it). One command per run; it prints one JSON line at the end (and `hold`
 * prints HOLDING once its connections are up).
 *   many URL N                 N sequential GETs, each on a new connection: counts by pod, errors, client addresses seen
 *   peer IP PORT               connect; what getpeername says, and the echo's idea of the client
 *   refused IP PORT N          N connects timed from connect() to the error
 *   loop URL CONCURRENCY MS    CONCURRENCY loops of new-connection GETs for MS milliseconds
 *   hold URL N MS              N keep-alive connections, one GET every 100 ms on each, for MS milliseconds
 *   first IP PORT MS           connect every 10 ms until one succeeds; wall-clock time of the first success
 */
import { Agent, request } from 'node:http';
import { connect } from 'node:net';

const [cmd = '', ...args] = process.argv.slice(2);

interface Reply {
  pod: string;
  client: string;
  peer: string;
}

function get(url: string, agent: Agent | false, timeoutMs = 2000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as { pod: string; client: string };
          resolve({ pod: j.pod, client: j.client, peer: `${req.socket?.remoteAddress}:${req.socket?.remotePort}` });
        } catch {
          reject(new Error(`status ${res.statusCode}, body not JSON: ${body.slice(0, 80)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', reject);
    req.end();
  });
}

const codeOf = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message;
const inc = (m: Record<string, number>, k: string): void => {
  m[k] = (m[k] ?? 0) + 1;
};

async function many(url: string, n: number): Promise<unknown> {
  const pods: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const clients = new Set<string>();
  const peers = new Set<string>();
  for (let i = 0; i < n; i++) {
    try {
      const r = await get(url, false);
      inc(pods, r.pod);
      clients.add(r.client.replace(/:\d+$/, ''));
      peers.add(r.peer);
    } catch (err) {
      inc(errors, codeOf(err));
    }
  }
  return { pods, errors, clients: [...clients], peers: [...peers].slice(0, 5) };
}

function peer(host: string, port: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port }, () => {
      const out = { remote: `${s.remoteAddress}:${s.remotePort}`, local: `${s.localAddress}:${s.localPort}` };
      s.write(`GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
      let body = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (body += d));
      s.on('end', () => {
        const json = body.slice(body.indexOf('{'));
        resolve({ ...out, echo: JSON.parse(json) as unknown });
      });
    });
    s.on('error', reject);
  });
}

async function refused(host: string, port: number, n: number): Promise<unknown> {
  const results: Array<{ code: string; ms: number }> = [];
  for (let i = 0; i < n; i++) {
    results.push(
      await new Promise((resolve) => {
        const t0 = process.hrtime.bigint();
        const s = connect({ host, port });
        const done = (code: string): void => {
          s.destroy();
          resolve({ code, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
        };
        s.on('connect', () => done('CONNECTED'));
        s.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? 'ERROR'));
        setTimeout(() => done('TIMEOUT'), 3000).unref();
      }),
    );
  }
  return { results };
}

async function loop(url: string, concurrency: number, ms: number): Promise<unknown> {
  const end = Date.now() + ms;
  const pods: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let total = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        total++;
        try {
          inc(pods, (await get(url, false)).pod);
        } catch (err) {
          inc(errors, codeOf(err));
        }
      }
    }),
  );
  return { total, pods, errors };
}

async function hold(url: string, n: number, ms: number): Promise<unknown> {
  const agents = Array.from({ length: n }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
  const firstPeer: string[] = [];
  const failures: string[] = [];
  let requests = 0;
  const localPorts = new Map<number, Set<string>>();
  // First request on each connection; remember which local port it uses, so a reconnect shows.
  await Promise.all(agents.map(async (a, i) => {
    const r = await get(url, a);
    firstPeer[i] = r.pod;
    localPorts.set(i, new Set([r.client]));
  }));
  process.stdout.write('HOLDING\n');
  const end = Date.now() + ms;
  await Promise.all(agents.map(async (a, i) => {
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      try {
        const r = await get(url, a);
        requests++;
        localPorts.get(i)?.add(r.client);
        if (r.pod !== firstPeer[i]) failures.push(`connection ${i} moved from ${firstPeer[i]} to ${r.pod}`);
      } catch (err) {
        failures.push(`connection ${i}: ${codeOf(err)}`);
      }
    }
  }));
  const reconnected = [...localPorts.values()].filter((s) => s.size > 1).length;
  for (const a of agents) a.destroy();
  return { connections: n, requests, failures, reconnected };
}

async function first(host: string, port: number, ms: number): Promise<unknown> {
  const end = Date.now() + ms;
  let attempts = 0;
  while (Date.now() < end) {
    attempts++;
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
      setTimeout(() => {
        s.destroy();
        resolve(false);
      }, 200).unref();
    });
    if (ok) return { at: Date.now(), attempts };
    await new Promise((r) => setTimeout(r, 10));
  }
  return { at: null, attempts };
}

async function main(): Promise<unknown> {
  const [a = '', b = '', c = '', d = ''] = args;
  switch (cmd) {
    case 'many': return many(a, Number(b));
    case 'peer': return peer(a, Number(b));
    case 'refused': return refused(a, Number(b), Number(c));
    case 'loop': return loop(a, Number(b), Number(c));
    case 'hold': return hold(a, Number(b), Number(c));
    case 'first': return first(a, Number(b), Number(c));
    default: throw new Error(`unknown command ${cmd}`);
  }
  void d;
}

main().then(
  (r) => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(0);
  },
  (err: unknown) => {
    process.stdout.write(`${JSON.stringify({ error: (err as Error).message })}\n`);
    process.exit(1);
  },
);
