/**
 * Full vs resumed TLS handshakes per second against one mTLS listener: back-to-back connections (a few in parallel)
 * that present a client certificate, verify the server chain against the bundle, and close once the handshake is
 * done. `resume`: every connection offers the session (TLS 1.3 ticket) of an earlier one. Run as a script
 * (`node bench/lib/tls-handshakes.ts --host H --port P --certs certs.json --seconds S [--resume]`) it prints one JSON line.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

/** What one run measured. */
export type HandshakeResult = { handshakes: number; perSecond: number; resumed: number; errors: number; firstError?: string; seconds: number };

/** Handshake back-to-back for `seconds` over `parallel` loops. */
export async function runHandshakes(opts: { host: string; port: number; ca: string; cert: string; key: string; alpn: string[]; seconds: number; resume: boolean; parallel: number }): Promise<HandshakeResult> {
  let session: Buffer | undefined;
  let handshakes = 0; let resumed = 0; let errors = 0; let firstError: string | undefined;
  const one = (offer: Buffer | undefined): Promise<void> => new Promise((resolve) => {
    const s = tls.connect({
      host: opts.host, port: opts.port, ca: opts.ca, cert: opts.cert, key: opts.key, ALPNProtocols: opts.alpn,
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', rejectUnauthorized: true,
      // SPIFFE SVIDs carry a URI SAN only: the chain is verified, the name is not (the same for every target).
      checkServerIdentity: () => undefined, ...(offer ? { session: offer } : {}),
    });
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return; done = true;
      if (err) { errors++; firstError ??= err.message; } else { handshakes++; if (s.isSessionReused()) resumed++; }
      s.destroy(); resolve();
    };
    // TLS 1.3 tickets arrive after the handshake: wait for one when we need a session to reuse.
    s.once('session', (sess: Buffer) => { session = sess; if (!opts.resume || offer) return; finish(); });
    s.once('secureConnect', () => { if (opts.resume && !offer && !session) return; finish(); });
    s.once('error', (e) => finish(e));
    setTimeout(() => finish(new Error('handshake timeout')), 3000).unref();
  });
  if (opts.resume) { await one(undefined); handshakes = 0; resumed = 0; if (!session) return { handshakes: 0, perSecond: 0, resumed: 0, errors: errors + 1, firstError: firstError ?? 'no session ticket', seconds: 0 }; }
  const t0 = performance.now();
  const until = t0 + opts.seconds * 1000;
  await Promise.all(Array.from({ length: opts.parallel }, async () => { while (performance.now() < until) await one(opts.resume ? session : undefined); }));
  const seconds = (performance.now() - t0) / 1000;
  return { handshakes, perSecond: handshakes / seconds, resumed, errors, ...(firstError ? { firstError } : {}), seconds };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string' }, certs: { type: 'string' }, seconds: { type: 'string', default: '2' }, resume: { type: 'boolean', default: false }, parallel: { type: 'string', default: '4' }, alpn: { type: 'string', default: 'http/1.1' } } });
  if (!values.port || !values.certs) { console.error('usage: node bench/lib/tls-handshakes.ts --port P --certs certs.json [--host H] [--seconds 2] [--resume] [--parallel 4] [--alpn h2]'); process.exit(2); }
  const c = JSON.parse(readFileSync(values.certs, 'utf8')) as { bundlePem: string; web: { certChainPem: string; keyPem: string } };
  const r = await runHandshakes({ host: values.host, port: Number(values.port), ca: c.bundlePem, cert: c.web.certChainPem, key: c.web.keyPem, alpn: values.alpn.split(','), seconds: Number(values.seconds), resume: values.resume, parallel: Number(values.parallel) });
  console.log(JSON.stringify(r));
}
