/** The outbound side of HBONE: one multiplexed mTLS connection per (source identity, destination node), CONNECT streams on it. */
// Why one connection per source identity: the certificate presented is the source workload's own, so the
// destination can authorize on it; two workloads never share a connection (ref. B7, confused deputy). Why per
// destination node: every pod behind that node proxy is one CONNECT stream away, so a busy client pays one TLS
// handshake per node, not per request. A rotated certificate opens a new connection; the old one drains.
import { createHash } from 'node:crypto';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { PeerRejectedError, tlsOptionsFor, type MeshTlsIdentity } from '../identity/mesh-tls.ts';
import type { TrustBundle } from '../identity/trust-bundle.ts';
import type { VerifyCounters } from '../identity/verify-reasons.ts';
import { silentLogger, type ProxyLogger } from '../stats.ts';
import { HboneError } from './errors.ts';
import { adaptTunnelStream } from './stream-adapter.ts';
import { formatAuthority, HBONE_PORT, type HboneTarget } from './hbone-server.ts';

/** A workload certificate the connector presents, with the SPIFFE ID it carries. */
export type HboneIdentity = MeshTlsIdentity & { spiffeId: string };

/** Settings of the connector. */
export type HboneConnectorOptions = {
  trustDomain: string;
  /** Current trust bundle, read for each new connection. */
  bundle: () => TrustBundle;
  /** SPIFFE ID destination node proxies must present; undefined accepts any SVID of the trust domain. */
  serverSpiffeId?: string;
  /** Refusals of destination certificates, by reason. */
  counters?: VerifyCounters;
  logger?: ProxyLogger;
  /** TCP + TLS + HTTP/2 setup budget; default 5000 ms. */
  connectTimeoutMs?: number;
  /** Makes the TCP socket to a destination proxy (to set a mark or a source address); default net.connect. */
  createSocket?: (ip: string, port: number) => net.Socket;
};

/** One stream to open. */
export type HboneOpenRequest = {
  /** The source workload, whose certificate the connection presents. */
  identity: HboneIdentity;
  /** The destination node proxy's inbound address (port defaults to 15008). */
  node: { ip: string; port?: number };
  /** The destination pod address, carried as the CONNECT authority. */
  target: HboneTarget;
  /** Budget for connection setup plus the CONNECT answer; default the connector's. */
  timeoutMs?: number;
  /** Extra CONNECT request headers: the trace context (`traceparent`...) of the connection it carries. */
  headers?: Record<string, string>;
};

type Entry = { key: string; certFingerprint: string; session: ClientHttp2Session; ready: Promise<ClientHttp2Session>; streams: number };

const STREAM_WINDOW = 1024 * 1024;
const SESSION_WINDOW = 16 * 1024 * 1024;

/** Opens HBONE streams, reusing one connection per (source identity, destination node). */
export class HboneConnector {
  readonly #opts: HboneConnectorOptions;
  readonly #log: ProxyLogger;
  readonly #entries = new Map<string, Entry>();
  #closed = false;
  /** Connections made and CONNECT answers, for metrics and tests. */
  readonly stats = { connections: 0, connectFailures: 0, streams: 0, refused: 0 };

  constructor(opts: HboneConnectorOptions) {
    this.#opts = opts;
    this.#log = opts.logger ?? silentLogger;
  }

  /** Keys (`<spiffe id>|<node ip:port>`) of the open connections. */
  sessionKeys(): string[] { return [...this.#entries.keys()]; }

  /** A byte stream to `target` through its node proxy; rejects with an HboneError saying which step failed. */
  async open(req: HboneOpenRequest): Promise<Duplex> {
    if (this.#closed) throw new HboneError('NM_ERR_HBONE_CLOSED', 'HBONE connector is closed');
    const timeoutMs = req.timeoutMs ?? this.#opts.connectTimeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    const entry = this.#entryFor(req);
    const session = await withTimeout(entry.ready, timeoutMs, () => new HboneError('NM_ERR_HBONE_CONNECT', `HBONE connection to ${nodeLabel(req)} not ready after ${timeoutMs} ms; is port ${req.node.port ?? HBONE_PORT} reachable (a firewall or NetworkPolicy blocking it)?`));
    const authority = formatAuthority(req.target);
    let stream: ClientHttp2Stream;
    try {
      stream = session.request({ ...safeExtraHeaders(req.headers), ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    } catch (err) {
      this.#drop(entry);
      throw new HboneError('NM_ERR_HBONE_CONNECT', `HBONE CONNECT ${authority} via ${nodeLabel(req)}: ${(err as Error).message}`, { cause: err });
    }
    entry.streams++;
    stream.once('close', () => { entry.streams--; });
    return await new Promise<Duplex>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new HboneError('NM_ERR_HBONE_CONNECT', `HBONE CONNECT ${authority} via ${nodeLabel(req)} failed: ${err.message}`, { cause: err }));
      };
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        fail(new Error(`no answer within ${timeoutMs} ms`));
      }, Math.max(1, deadline - Date.now()));
      // Errors after the answer belong to whoever reads the stream; this keeps an unread one from crashing us.
      stream.on('error', (err: Error) => fail(err));
      stream.once('close', () => fail(new Error(`stream closed before an answer (code ${stream.rstCode})`)));
      stream.once('response', (headers) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const status = Number(headers[':status']);
        if (status !== 200) {
          this.stats.refused++;
          stream.close();
          reject(new HboneError('NM_ERR_HBONE_CONNECT_REFUSED', `destination proxy ${nodeLabel(req)} refused CONNECT ${authority} with ${status}${status === 404 ? ' (not a workload of that node: stale endpoints?)' : ''}`));
          return;
        }
        this.stats.streams++;
        resolve(adaptTunnelStream(stream));
      });
    });
  }

  /** Closes every connection (gracefully: open streams finish, up to `graceMs`). */
  async close(graceMs = 2000): Promise<void> {
    this.#closed = true;
    const all = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of all) e.session.close();
    const until = Date.now() + graceMs;
    while (all.some((e) => !e.session.destroyed) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    for (const e of all) e.session.destroy();
  }

  /** Drops connections of identities no longer on this node (their pods left). */
  retainIdentities(spiffeIds: ReadonlySet<string>): void {
    for (const e of [...this.#entries.values()]) {
      if (!spiffeIds.has(e.key.slice(0, e.key.indexOf('|')))) { this.#entries.delete(e.key); e.session.close(); }
    }
  }

  #entryFor(req: HboneOpenRequest): Entry {
    const port = req.node.port ?? HBONE_PORT;
    const key = `${req.identity.spiffeId}|${formatAuthority({ ip: req.node.ip, port })}`;
    const fp = createHash('sha256').update(req.identity.certChainPem).digest('hex').slice(0, 16);
    const cur = this.#entries.get(key);
    if (cur && cur.certFingerprint === fp && !cur.session.closed && !cur.session.destroyed) return cur;
    // A rotated certificate: new handshakes present the new one; the old connection finishes its streams.
    if (cur) { this.#entries.delete(key); cur.session.close(); }
    const entry = this.#connect(key, fp, req, port);
    this.#entries.set(key, entry);
    return entry;
  }

  #connect(key: string, fp: string, req: HboneOpenRequest, port: number): Entry {
    const o = this.#opts;
    const tlsOpts: tls.ConnectionOptions = {
      ...tlsOptionsFor(req.identity, o.bundle(), {
        role: 'client',
        trustDomain: o.trustDomain,
        ...(o.serverSpiffeId !== undefined ? { expectedSpiffeId: o.serverSpiffeId } : {}),
        ...(o.counters ? { counters: o.counters } : {}),
      }),
      ALPNProtocols: ['h2'],
    };
    this.stats.connections++;
    const session = http2.connect(`https://${formatAuthority({ ip: req.node.ip, port })}`, {
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW },
      maxSessionMemory: 64,
      createConnection: () => (o.createSocket
        ? tls.connect({ ...tlsOpts, socket: o.createSocket(req.node.ip, port) })
        : tls.connect({ ...tlsOpts, host: req.node.ip, port })),
    });
    const entry: Entry = { key, certFingerprint: fp, session, streams: 0, ready: undefined as unknown as Promise<ClientHttp2Session> };
    entry.ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      session.once('connect', () => {
        try { session.setLocalWindowSize(SESSION_WINDOW); } catch { /* closed meanwhile */ }
        resolve(session);
      });
      session.once('error', (err: Error) => {
        this.stats.connectFailures++;
        const rejected = err instanceof PeerRejectedError;
        reject(new HboneError(rejected ? 'NM_ERR_HBONE_PEER_REJECTED' : 'NM_ERR_HBONE_CONNECT',
          rejected ? `destination proxy ${nodeLabel(req)} presented a certificate we refuse: ${err.message}` : `HBONE connection to ${nodeLabel(req)} failed: ${err.message}`, { cause: err }));
      });
      session.once('close', () => reject(new HboneError('NM_ERR_HBONE_CONNECT', `HBONE connection to ${nodeLabel(req)} closed during setup`)));
    });
    entry.ready.catch(() => {});
    session.on('error', (err: Error) => this.#log.debug('hbone session error', { key, err: err.message }));
    session.on('goaway', () => this.#drop(entry));
    session.on('close', () => this.#drop(entry));
    // An idle tunnel connection holds nothing worth a file descriptor for long.
    session.setTimeout(5 * 60_000, () => { if (entry.streams <= 0) session.close(); });
    return entry;
  }

  #drop(entry: Entry): void {
    if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key);
  }
}

function nodeLabel(req: HboneOpenRequest): string {
  return formatAuthority({ ip: req.node.ip, port: req.node.port ?? HBONE_PORT });
}

function withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(err()), ms);
    p.then((v) => { clearTimeout(timer); resolve(v); }, (e: unknown) => { clearTimeout(timer); reject(e as Error); });
  });
}

/** Extra CONNECT headers, minus pseudo-headers and names HTTP/2 forbids (the CONNECT itself is ours to shape). */
function safeExtraHeaders(h: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const [k, v] of Object.entries(h)) {
    const name = k.toLowerCase();
    if (name.startsWith(':') || !/^[a-z0-9-]+$/.test(name) || /[\r\n\0]/.test(v)) continue;
    out[name] = v;
  }
  return out;
}
