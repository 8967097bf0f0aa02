/** The inbound HBONE listener: mTLS (TLS 1.3) from other node proxies, HTTP/2 CONNECT streams to local pods. */
// Istio's HBONE, reduced to what we need: a TLS 1.3 connection whose client certificate names the source workload
// (verified structurally by guardMeshServer before a byte is read), HTTP/2 on it, and one CONNECT stream per
// proxied connection with `:authority = <pod ip>:<port>`. Each accepted stream is a plain byte pipe to the caller,
// which runs the destination's policy on it; the peer identity comes only from the verified certificate.
import http2, { type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls, { type TLSSocket } from 'node:tls';
import { guardMeshServer, tlsOptionsFor, type MeshTlsIdentity } from '../identity/mesh-tls.ts';
import type { TrustBundle } from '../identity/trust-bundle.ts';
import type { VerifiedPeer } from '../identity/verify-peer-chain.ts';
import type { VerifyCounters } from '../identity/verify-reasons.ts';
import { silentLogger, type ProxyLogger } from '../stats.ts';
import { HboneError } from './errors.ts';
import { adaptTunnelStream } from './stream-adapter.ts';
// A proxy worker listens on its primary's SO_REUSEPORT socket when it has one (graceful restarts).
import { listenOptionsFor } from '../shared-listeners.ts';

/** Istio's HBONE port; we use it for the same role. */
export const HBONE_PORT = 15008;

/** Where a CONNECT stream asks to go. */
export type HboneTarget = { ip: string; port: number };

/** What the caller learns about one accepted stream. */
export type HboneStreamInfo = {
  target: HboneTarget;
  /** The verified source workload (from its certificate, nothing else). */
  peer: VerifiedPeer;
  /** Address of the source node proxy. */
  remoteAddress: string;
  /** Trace context the CONNECT request carried (`traceparent`, `tracestate`, `b3`), for the connection's span. */
  traceHeaders?: Record<string, string>;
};

/** Settings of the inbound listener. */
export type HboneServerOptions = {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  trustDomain: string;
  /** The certificate this node proxy presents. */
  identity: MeshTlsIdentity;
  /** Current trust bundle; read per connection so a rotation applies to the next handshake. */
  bundle: () => TrustBundle;
  /** Verification outcomes by reason (B6's distinct counters). */
  counters?: VerifyCounters;
  logger?: ProxyLogger;
  /**
   * Whether this node serves `target` for `peer`: 200 to accept, else the status to answer (404: not a workload of
   * this node, 503: not ready). Refusing here lets the source try another endpoint, as nothing reached a pod.
   */
  admit(target: HboneTarget, peer: VerifiedPeer): number;
  /** An accepted stream (a plain Duplex over the CONNECT stream); the caller owns it from now on. */
  onStream(stream: Duplex, info: HboneStreamInfo): void;
  /** Concurrent CONNECT streams per connection; default 1000. */
  maxConcurrentStreams?: number;
};

/** Counters of the listener (connections are also counted by verification reason in `counters`). */
export type HboneServerStats = { sessions: number; activeSessions: number; streams: number; refused: Record<string, number> };

/** Largest window we open per stream and per connection: tunnels carry bulk data. */
const STREAM_WINDOW = 1024 * 1024;
const SESSION_WINDOW = 16 * 1024 * 1024;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Parses `ip:port` / `[ip6]:port` strictly; undefined when it is anything else (host names included). */
export function parseAuthority(authority: string | undefined): HboneTarget | undefined {
  if (!authority) return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(authority);
  if (!m) return undefined;
  const ip = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port < 1 || port > 65535 || String(port) !== m[3]) return undefined;
  if (m[1] !== undefined ? !net.isIPv6(ip) : !net.isIPv4(ip)) return undefined;
  return { ip, port };
}

/** Formats a target as a CONNECT authority. */
export function formatAuthority(t: HboneTarget): string {
  return net.isIPv6(t.ip) ? `[${t.ip}]:${t.port}` : `${t.ip}:${t.port}`;
}

/** The inbound mTLS listener of a node proxy. */
export class HboneServer {
  readonly #opts: HboneServerOptions;
  readonly #log: ProxyLogger;
  readonly #tls: tls.Server;
  readonly #h2: Http2Server;
  readonly #peers = new WeakMap<ServerHttp2Session, { peer: VerifiedPeer; remoteAddress: string }>();
  readonly #sessions = new Set<ServerHttp2Session>();
  #handingOver: { peer: VerifiedPeer; remoteAddress: string } | undefined;
  #port = 0;
  readonly stats: HboneServerStats = { sessions: 0, activeSessions: 0, streams: 0, refused: {} };

  private constructor(opts: HboneServerOptions) {
    this.#opts = opts;
    this.#log = opts.logger ?? silentLogger;
    this.#tls = tls.createServer({ ...tlsOptionsFor(opts.identity, opts.bundle(), { role: 'server' }), ALPNProtocols: ['h2'] });
    this.#h2 = http2.createServer({
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams ?? 1000, initialWindowSize: STREAM_WINDOW, enablePush: false },
      maxSessionMemory: 64,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => this.#onSession(session));
    this.#h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.#onStream(stream, headers));
    guardMeshServer(this.#tls, {
      trustDomain: opts.trustDomain,
      bundle: opts.bundle,
      ...(opts.counters ? { counters: opts.counters } : {}),
      onReject: (r, socket) => this.#log.info('hbone peer refused', { reason: r.reason, detail: r.detail, remote: socket?.remoteAddress }),
    }, (socket, peer) => this.#onPeer(socket, peer));
  }

  /** Starts listening; rejects with NM_ERR_HBONE_LISTEN when the address is taken. */
  static async start(opts: HboneServerOptions): Promise<HboneServer> {
    const s = new HboneServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.#tls.once('error', (err) => reject(new HboneError('NM_ERR_HBONE_LISTEN', `cannot listen on ${opts.host}:${opts.port} for HBONE (${err.message}); is another node proxy running?`, { cause: err })));
      s.#tls.listen(listenOptionsFor(opts.host, opts.port), () => resolve());
    });
    s.#port = (s.#tls.address() as net.AddressInfo).port;
    return s;
  }

  /** The bound port. */
  get port(): number { return this.#port; }

  /** New handshakes present `identity` (certificate rotation) and trust the current bundle. */
  setIdentity(identity: MeshTlsIdentity): void {
    this.#tls.setSecureContext(tlsOptionsFor(identity, this.#opts.bundle(), { role: 'server' }));
  }

  /** Stops accepting; open sessions get GOAWAY and are cut after `graceMs`. */
  async close(graceMs = 2000): Promise<void> {
    const closed = new Promise<void>((r) => this.#tls.close(() => r()));
    for (const s of this.#sessions) s.close();
    const until = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    for (const s of this.#sessions) s.destroy();
    await closed;
  }

  #onPeer(socket: TLSSocket, peer: VerifiedPeer): void {
    if (socket.alpnProtocol !== 'h2') {
      // Only our own proxies connect here, and they always negotiate h2: anything else is not HBONE.
      this.#refuse('alpn');
      socket.destroy();
      return;
    }
    this.#handingOver = { peer, remoteAddress: normalizeAddress(socket.remoteAddress ?? '') };
    try {
      this.#h2.emit('connection', socket);
    } finally {
      this.#handingOver = undefined;
    }
  }

  #onSession(session: ServerHttp2Session): void {
    const who = this.#handingOver;
    if (!who) { session.destroy(); return; }
    this.#peers.set(session, who);
    this.#sessions.add(session);
    this.stats.sessions++;
    this.stats.activeSessions++;
    session.on('error', () => session.destroy());
    session.on('close', () => { this.#sessions.delete(session); this.stats.activeSessions--; });
    session.once('connect', () => { try { session.setLocalWindowSize(SESSION_WINDOW); } catch { /* closed meanwhile */ } });
    // A connection must not outlive the certificate that authenticated it.
    const left = who.peer.notAfter.getTime() - Date.now();
    const timer = setTimeout(() => session.close(), Math.max(0, Math.min(left, MAX_TIMER_MS)));
    timer.unref();
    session.on('close', () => clearTimeout(timer));
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => {});
    const who = this.#peers.get(stream.session as ServerHttp2Session);
    if (!who) { stream.close(http2.constants.NGHTTP2_REFUSED_STREAM); return; }
    if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== undefined) {
      this.#answer(stream, 405, 'method');
      return;
    }
    const target = parseAuthority(headers[':authority']);
    if (!target) { this.#answer(stream, 400, 'authority'); return; }
    let status: number;
    try {
      status = this.#opts.admit(target, who.peer);
    } catch (err) {
      this.#log.warn('hbone admit failed', { err: (err as Error).message });
      status = 503;
    }
    if (status !== 200) { this.#answer(stream, status, `status_${status}`); return; }
    this.stats.streams++;
    stream.respond({ ':status': 200 });
    const traceHeaders = pickTraceHeaders(headers);
    this.#opts.onStream(adaptTunnelStream(stream), { target, peer: who.peer, remoteAddress: who.remoteAddress, ...(traceHeaders ? { traceHeaders } : {}) });
  }

  #answer(stream: ServerHttp2Stream, status: number, reason: string): void {
    this.#refuse(reason);
    if (stream.destroyed || stream.headersSent) { stream.close(); return; }
    stream.respond({ ':status': status }, { endStream: true });
  }

  #refuse(reason: string): void {
    this.stats.refused[reason] = (this.stats.refused[reason] ?? 0) + 1;
  }
}

function normalizeAddress(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

/** The W3C/B3 trace headers of a CONNECT request, or undefined when it carried none. */
function pickTraceHeaders(headers: IncomingHttpHeaders): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const name of ['traceparent', 'tracestate', 'b3']) {
    const v = headers[name];
    if (typeof v === 'string') (out ??= {})[name] = v;
  }
  return out;
}
