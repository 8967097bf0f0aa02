/**
 * Many idle HTTP/1.1 keep-alive connections to one proxy (reliability anchor L3): each connection sends one request,
 * reads the whole answer and then stays open, silent, as a pooled client connection does between requests.
 * `probe()` sends one more request on every connection (were they really kept alive?); `close()` ends them all.
 * Run as a script (`node bench/lib/idle-connections.ts --port P --count N`) it prints one JSON line when the
 * connections are open, then obeys `probe` / `close` lines on stdin, printing one JSON line for each.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

/** What opening or probing the connections found. */
export type IdleProbeResult = { connections: number; ok: number; non2xx: number; failed: number; firstError?: string; ms: number };

/** The open connections. */
export type IdleConnections = {
  readonly count: number;
  /** Connections the server (or anything else) closed since they were opened. */
  closedByPeer(): number;
  /** One more request on every connection still open; the connections stay open. */
  probe(timeoutMs?: number): Promise<IdleProbeResult>;
  /** Close every connection (FIN) and wait until each socket is gone. */
  close(): Promise<void>;
};

type Conn = { socket: net.Socket; closed: boolean; buf: Buffer; waiter: ((r: { status: number } | Error) => void) | undefined };

/** Status of the first complete HTTP/1.1 response in `buf` (Content-Length framed) and its length, or undefined. */
export function parseResponse(buf: Buffer): { status: number; length: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.subarray(0, end).toString('latin1');
  const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
  if (!m) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify(head.slice(0, 60))}`);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (!cl) throw new Error('response without Content-Length (the load helpers expect fixed-size bodies)');
  const length = end + 4 + Number(cl[1]);
  return buf.length >= length ? { status: Number(m[1]), length } : undefined;
}

function exchange(c: Conn, request: Buffer, timeoutMs: number): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    if (c.closed) { reject(new Error('connection closed by peer before the request')); return; }
    const timer = setTimeout(() => { c.waiter = undefined; reject(new Error(`no answer within ${timeoutMs} ms`)); }, timeoutMs);
    c.waiter = (r) => { clearTimeout(timer); c.waiter = undefined; if (r instanceof Error) reject(r); else resolve(r); };
    c.socket.write(request);
  });
}

/** Open `count` connections to host:port, `parallel` at a time, one request each; rejects if any fails. */
export async function openIdleConnections(opts: { host?: string; port: number; count: number; hostHeader?: string; parallel?: number; timeoutMs?: number }): Promise<IdleConnections & { opened: IdleProbeResult }> {
  const host = opts.host ?? '127.0.0.1';
  const request = Buffer.from(`GET /idle HTTP/1.1\r\nhost: ${opts.hostHeader ?? 'echo.default'}\r\n\r\n`, 'latin1');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const conns: Conn[] = [];
  let closedByPeer = 0;
  let closing = false;
  const connectOne = (): Promise<Conn> => new Promise((resolve, reject) => {
    const socket = net.connect({ host, port: opts.port });
    const c: Conn = { socket, closed: false, buf: Buffer.alloc(0), waiter: undefined };
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      try {
        const r = parseResponse(c.buf);
        if (!r) return;
        c.buf = c.buf.subarray(r.length);
        c.waiter?.({ status: r.status });
      } catch (err) { c.waiter?.(err as Error); socket.destroy(); }
    });
    socket.on('error', (err) => { c.waiter?.(err); });
    socket.on('close', () => {
      if (!c.closed && !closing) closedByPeer++;
      c.closed = true;
      c.waiter?.(new Error('connection closed'));
    });
    socket.once('connect', () => resolve(c));
    socket.once('error', reject);
  });
  const t0 = performance.now();
  const opened: IdleProbeResult = { connections: 0, ok: 0, non2xx: 0, failed: 0, ms: 0 };
  const parallel = opts.parallel ?? 100;
  for (let i = 0; i < opts.count; i += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, opts.count - i) }, async () => {
      try {
        const c = await connectOne();
        conns.push(c);
        const r = await exchange(c, request, timeoutMs);
        if (r.status >= 200 && r.status < 300) opened.ok++; else opened.non2xx++;
      } catch (err) {
        opened.failed++;
        opened.firstError ??= (err as Error).message;
      }
    }));
  }
  opened.connections = conns.length;
  opened.ms = Math.round(performance.now() - t0);
  return {
    count: conns.length,
    opened,
    closedByPeer: () => closedByPeer,
    async probe(probeTimeoutMs = timeoutMs) {
      const p0 = performance.now();
      const res: IdleProbeResult = { connections: conns.length, ok: 0, non2xx: 0, failed: 0, ms: 0 };
      for (let i = 0; i < conns.length; i += parallel) {
        await Promise.all(conns.slice(i, i + parallel).map(async (c) => {
          try {
            const r = await exchange(c, request, probeTimeoutMs);
            if (r.status >= 200 && r.status < 300) res.ok++; else res.non2xx++;
          } catch (err) { res.failed++; res.firstError ??= (err as Error).message; }
        }));
      }
      res.ms = Math.round(performance.now() - p0);
      return res;
    },
    async close() {
      closing = true;
      await Promise.all(conns.map((c) => new Promise<void>((resolve) => {
        if (c.closed || c.socket.destroyed) { resolve(); return; }
        c.socket.once('close', () => resolve());
        c.socket.end();
        // A peer that never answers our FIN must not hold the caller: cut it after a while.
        setTimeout(() => c.socket.destroy(), 5000).unref();
      })));
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, count: { type: 'string', default: '5000' }, 'host-header': { type: 'string', default: 'echo.default' }, parallel: { type: 'string', default: '100' } } });
  if (!values.port) { console.error('usage: node bench/lib/idle-connections.ts --port P [--count 5000] [--host 127.0.0.1] [--host-header H] [--parallel 100]; then "probe" / "close" on stdin'); process.exit(2); }
  const idle = await openIdleConnections({ host: values.host, port: Number(values.port), count: Number(values.count), hostHeader: values['host-header'], parallel: Number(values.parallel) });
  console.log(JSON.stringify({ opened: idle.opened }));
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === 'probe') console.log(JSON.stringify({ probe: await idle.probe(), closedByPeer: idle.closedByPeer() }));
    else if (line.trim() === 'close') {
      const closedByPeer = idle.closedByPeer();
      await idle.close();
      console.log(JSON.stringify({ closed: true, closedByPeer }));
      break;
    }
  }
  process.exit(0);
}
