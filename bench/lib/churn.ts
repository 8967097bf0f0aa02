/**
 * Connection churn at a fixed rate (reliability anchor L2): every request on a new connection, opened on schedule
 * whatever the previous ones are doing (open loop), each with its own deadline.
 * - `tcp`: a new HTTP/1.1 connection to the source proxy per request (`connection: close`), as a client without a
 *   pool does; the proxy's own mTLS tunnel to the destination is what it decides to reuse.
 * - `hbone`: a new mTLS connection to the destination proxy's HBONE listener per request, as a source proxy with no
 *   connection to reuse does: TLS 1.3 full handshake presenting the source workload's SVID (chain verified
 *   against the bundle), HTTP/2, one CONNECT to the pod, one HTTP/1.1 GET inside, then close.
 * Run as a script it prints one JSON line (ChurnResult).
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { parseResponse } from './idle-connections.ts';
import { computePercentile } from './stats.ts';

/** What one churn run measured; latencies in microseconds (connect + handshake + request + response). */
export type ChurnResult = {
  mode: 'tcp' | 'hbone'; rate: number; seconds: number; sent: number; ok: number; non2xx: number;
  /** Failures before the connection could carry the request: TCP connect, TLS handshake (refused, alert, timeout). */
  connectFailures: number; handshakeFailures: number;
  /** Failures after: CONNECT refused, reset, no or bad answer, deadline. */
  requestFailures: number;
  errors: Record<string, number>;
  latencyUs: { p50: number; p99: number; max: number };
};

export type ChurnOptions = {
  mode: 'tcp' | 'hbone'; host: string; port: number; rate: number; seconds: number; timeoutMs?: number;
  /** tcp: the Host header. hbone: the pod `ip:port` the CONNECT asks for. */
  target: string;
  /** hbone: the bundle and the SVID the client presents. */
  tls?: { ca: string; cert: string; key: string };
};

type Outcome = { kind: 'ok' | 'non2xx' | 'connect' | 'handshake' | 'request'; detail?: string };

function oneTcp(o: ChurnOptions, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = net.connect({ host: o.host, port: o.port });
    let connected = false; let buf = Buffer.alloc(0); let done = false;
    const finish = (r: Outcome): void => { if (done) return; done = true; clearTimeout(timer); s.destroy(); resolve(r); };
    const timer = setTimeout(() => finish({ kind: connected ? 'request' : 'connect', detail: 'deadline' }), timeoutMs);
    s.once('connect', () => { connected = true; s.write(`GET /churn HTTP/1.1\r\nhost: ${o.target}\r\nconnection: close\r\n\r\n`); });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = parseResponse(buf);
        if (r) finish({ kind: r.status >= 200 && r.status < 300 ? 'ok' : 'non2xx', detail: String(r.status) });
      } catch (err) { finish({ kind: 'request', detail: (err as Error).message }); }
    });
    s.on('error', (err: NodeJS.ErrnoException) => finish({ kind: connected ? 'request' : 'connect', detail: err.code ?? err.message }));
    s.on('close', () => finish({ kind: connected ? 'request' : 'connect', detail: 'closed before an answer' }));
  });
}

function oneHbone(o: ChurnOptions, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    let secure = false; let done = false;
    let session: http2.ClientHttp2Session | undefined;
    const socket = tls.connect({
      host: o.host, port: o.port, ca: o.tls!.ca, cert: o.tls!.cert, key: o.tls!.key, ALPNProtocols: ['h2'],
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', rejectUnauthorized: true,
      // SVIDs carry a URI SAN only: the chain is verified, the SPIFFE ID is the destination proxy's business here.
      checkServerIdentity: () => undefined,
    });
    const finish = (r: Outcome): void => {
      if (done) return; done = true; clearTimeout(timer);
      session?.destroy(); socket.destroy(); resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: secure ? 'request' : 'handshake', detail: 'deadline' }), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ kind: secure ? 'request' : err.code === 'ECONNREFUSED' ? 'connect' : 'handshake', detail: err.code ?? err.message }));
    socket.once('secureConnect', () => {
      secure = true;
      if (socket.alpnProtocol !== 'h2') { finish({ kind: 'handshake', detail: `ALPN ${String(socket.alpnProtocol)}` }); return; }
      session = http2.connect(`https://${o.host}:${o.port}`, { createConnection: () => socket });
      session.on('error', (err: Error) => finish({ kind: 'request', detail: err.message }));
      const stream = session.request({ ':method': 'CONNECT', ':authority': o.target }, { endStream: false });
      let buf = Buffer.alloc(0);
      stream.on('response', (h) => {
        const status = Number(h[':status']);
        if (status !== 200) { finish({ kind: 'request', detail: `CONNECT ${status}` }); return; }
        stream.write(`GET /churn HTTP/1.1\r\nhost: echo.shop\r\nconnection: close\r\n\r\n`);
      });
      stream.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        try {
          const r = parseResponse(buf);
          if (r) finish({ kind: r.status >= 200 && r.status < 300 ? 'ok' : 'non2xx', detail: String(r.status) });
        } catch (err) { finish({ kind: 'request', detail: (err as Error).message }); }
      });
      stream.on('error', (err: Error) => finish({ kind: 'request', detail: err.message }));
      stream.on('close', () => finish({ kind: 'request', detail: `stream closed before an answer (code ${stream.rstCode})` }));
    });
  });
}

/** Opens `rate` connections per second for `seconds`, one request each; resolves when every one has finished. */
export async function runChurn(o: ChurnOptions): Promise<ChurnResult> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const total = Math.round(o.rate * o.seconds);
  const lat: number[] = [];
  const res: ChurnResult = { mode: o.mode, rate: o.rate, seconds: o.seconds, sent: 0, ok: 0, non2xx: 0, connectFailures: 0, handshakeFailures: 0, requestFailures: 0, errors: {}, latencyUs: { p50: NaN, p99: NaN, max: NaN } };
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  while (res.sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * o.rate));
    for (; res.sent < due; res.sent++) {
      const start = performance.now();
      pending.push((o.mode === 'tcp' ? oneTcp(o, timeoutMs) : oneHbone(o, timeoutMs)).then((r) => {
        lat.push((performance.now() - start) * 1000);
        if (r.kind === 'ok') res.ok++;
        else {
          if (r.kind === 'non2xx') res.non2xx++;
          else if (r.kind === 'connect') res.connectFailures++;
          else if (r.kind === 'handshake') res.handshakeFailures++;
          else res.requestFailures++;
          const key = `${r.kind}: ${r.detail ?? ''}`;
          res.errors[key] = (res.errors[key] ?? 0) + 1;
        }
      }));
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.all(pending);
  lat.sort((a, b) => a - b);
  res.latencyUs = { p50: Math.round(computePercentile(lat, 50)), p99: Math.round(computePercentile(lat, 99)), max: Math.round(lat.at(-1) ?? NaN) };
  return res;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { mode: { type: 'string', default: 'tcp' }, host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string' }, rate: { type: 'string', default: '200' }, seconds: { type: 'string', default: '10' }, target: { type: 'string' }, certs: { type: 'string' }, 'timeout-ms': { type: 'string', default: '5000' } } });
  if (!values.port || !values.target || (values.mode !== 'tcp' && values.mode !== 'hbone') || (values.mode === 'hbone' && !values.certs)) {
    console.error('usage: node bench/lib/churn.ts --mode tcp|hbone --port P --target HOST|IP:PORT [--host H] [--rate 200] [--seconds 10] [--certs certs.json (hbone)] [--timeout-ms 5000]');
    process.exit(2);
  }
  const c = values.certs ? JSON.parse(readFileSync(values.certs, 'utf8')) as { bundlePem: string; web: { certChainPem: string; keyPem: string } } : undefined;
  const r = await runChurn({ mode: values.mode, host: values.host, port: Number(values.port), rate: Number(values.rate), seconds: Number(values.seconds), target: values.target, timeoutMs: Number(values['timeout-ms']), ...(c ? { tls: { ca: c.bundlePem, cert: c.web.certChainPem, key: c.web.keyPem } } : {}) });
  console.log(JSON.stringify(r));
}
