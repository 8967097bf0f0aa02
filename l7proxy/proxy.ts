/** The node proxy: listeners, per-connection original destination and source identity, protocol hand-off, drain. */
// Accepted connection → originalDst (datapath) → service by ip:port → identifySource (agent) → protocol:
//   HTTP/1 → strict http.Server → forward.ts;  HTTP/2 preface → http2 server → forward.ts per stream;
//   anything else (or protocol: tcp) → L4 policy → tunnel.ts to an endpoint.
import type http from 'node:http';
import type { Http2Server, Http2ServerRequest, Http2ServerResponse, ServerHttp2Session } from 'node:http2';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { authorize } from './authz.ts';
import { endpointKey, pickEndpoint, recordOutcome } from './balance.ts';
import type { ProxyConfig } from './config.ts';
import { ProxyConfigError, ProxyError, describeError } from './errors.ts';
import { detectProtocol } from './detect.ts';
import { DEFAULT_DRAIN_TIMEOUT_MS, computeDrainSettings, planDrainStep, type DrainCensus } from './drain.ts';
import { handleHttp1Request, handleHttp2Request, handleUpgrade, type ConnContext, type ForwardDeps, type SourceIdentity } from './forward.ts';
import { createHttp1Server, writeRawErrorAndClose } from './http1.ts';
import { createHttp2Server } from './http2.ts';
import { OverloadMonitor } from './overload.ts';
import { computeAdmission } from './resilience.ts';
import { listenOptionsFor } from './shared-listeners.ts';
import { compileSnapshot, reconcileBackendStates, type BackendState, type CompiledService, type ProxySnapshot } from './snapshot.ts';
import { createStats, silentLogger, type AccessLogEntry, type ProxyLogger, type ProxyStats } from './stats.ts';
import type { RequestTelemetry } from './telemetry/request-telemetry.ts';
import { connectTcp, pipeBoth } from './tunnel.ts';
import { UpstreamPools, type UpstreamConnector } from './upstream.ts';

/** Re-exported so the agent needs only this module to plug in `identifySource`. */
export type { SourceIdentity } from './forward.ts';

/** Where a redirected connection was going before the kernel sent it here. */
export type OriginalDestination = { ip: string; port: number };

/** What the host (the agent) plugs in. */
export type ProxyOptions = {
  /** The datapath's record of the connection's original destination; undefined → the connection is refused. */
  originalDst(socket: Socket): OriginalDestination | undefined;
  /** The local workload behind a pod address; undefined → the peer is unauthenticated. */
  identifySource(remoteAddress: string): SourceIdentity | undefined;
  /** The config to start with; without one every connection is refused until `applyConfig`. */
  config?: ProxyConfig;
  logger?: ProxyLogger;
  /** Called once per request with what was received and forwarded. */
  accessLog?: (entry: AccessLogEntry) => void;
  /** Randomness and clock, injectable for tests. */
  rand?: () => number;
  now?: () => number;
  /**
   * Opens upstream connections (HTTP pools and opaque TCP): the mesh tunnel to other nodes, the same-node hand-off,
   * plain TCP with the proxy's socket mark. Absent → plain TCP from this process.
   */
  connectUpstream?: UpstreamConnector;
  /** Spans and per-request/connection records (l7proxy/telemetry/request-telemetry.ts); absent = off. */
  telemetry?: RequestTelemetry;
};

/** What the caller already knows about a stream handed in with `acceptStream` (an HBONE stream, a same-node hand-off). */
export type StreamMeta = {
  dst: OriginalDestination;
  /** Verified source identity (from the mTLS certificate, or the node's record of a local pod); undefined = unauthenticated. */
  source: SourceIdentity | undefined;
  /** Address logged and sent as x-forwarded-for. */
  remoteAddress: string;
  /** Trace context the tunnel request carried (parent of an opaque TCP connection's span). */
  traceHeaders?: Record<string, string>;
};

/**
 * Addresses to listen on; port 0 picks a free one (the bound ports are returned). In a pool worker an address the
 * primary opened a socket for is served from that socket (shared-listeners.ts).
 */
export type ListenOptions = { outboundPort: number; inboundPort?: number; host: string };

/** What an accepted connection turned out to carry (a draining proxy treats each kind its own way: drain.ts). */
type ConnKind = 'pending' | 'http1' | 'http2' | 'tunnel';

const EMPTY_CONFIG: ProxyConfig = { version: '', services: [], backends: [] };
const TCP_CONNECT_ATTEMPTS = 3;

/** The shared per-node L7 proxy. */
export class NodeProxy {
  #opts: ProxyOptions;
  #log: ProxyLogger;
  #snapshot: ProxySnapshot;
  #backends = new Map<string, BackendState>();
  #pools: UpstreamPools;
  #stats: ProxyStats = createStats();
  #listeners: net.Server[] = [];
  #h1: http.Server | undefined;
  #h2: Http2Server | undefined;
  #h1Ctx = new WeakMap<object, ConnContext>();
  #h2Ctx = new WeakMap<ServerHttp2Session, ConnContext>();
  #handingOver: ConnContext | undefined;
  /** Open connections (accepted sockets and handed-in streams) and what each carries. */
  #sockets = new Map<Duplex, ConnKind>();
  #sessions = new Set<ServerHttp2Session>();
  #goawaySent = new WeakSet<ServerHttp2Session>();
  #nextId = 1;
  /** Stopping: no new listener connections; responses say `Connection: close`; connections already open are served. */
  #draining = false;
  /** Stopped (or the drain deadline passed): anything still arriving is refused. */
  #closed = false;
  #deps: ForwardDeps;
  /** This worker's own admission control: sheds requests when its event loop or in-flight count is over the limits. */
  #overload = new OverloadMonitor(() => this.#snapshot.limits);

  constructor(opts: ProxyOptions) {
    this.#opts = opts;
    this.#log = opts.logger ?? silentLogger;
    this.#pools = new UpstreamPools(opts.connectUpstream);
    this.#snapshot = compileSnapshot(opts.config ?? EMPTY_CONFIG);
    this.#backends = reconcileBackendStates(new Map(), this.#snapshot);
    this.#deps = {
      snapshot: () => this.#snapshot,
      backend: (name) => this.#backends.get(name),
      pools: this.#pools,
      stats: this.#stats,
      log: this.#log,
      accessLog: opts.accessLog,
      telemetry: opts.telemetry,
      rand: opts.rand ?? Math.random,
      now: opts.now ?? Date.now,
      draining: () => this.#draining,
      overload: this.#overload,
    };
  }

  /** Counters since start (live object; read, do not write). */
  get stats(): ProxyStats { return this.#stats; }

  /** Turns telemetry on (or off with undefined) for requests and connections that start from now on. */
  setTelemetry(t: RequestTelemetry | undefined): void { this.#deps.telemetry = t; }

  /** Version of the config in force. */
  get configVersion(): string { return this.#snapshot.version; }

  /**
   * File descriptors of the listening sockets (outbound first), e.g. to register the outbound one in the datapath's
   * proxy sockmap so the kernel refuses redirected connects once it closes. -1 where unknown.
   */
  listenerFds(): number[] {
    return this.#listeners.map((s) => (s as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1);
  }

  /**
   * Serve a stream whose destination and source are known already: an HBONE CONNECT stream from another node's
   * proxy (source = the verified certificate) or a same-node hand-off (source = the local pod's identity). It takes
   * the same path as an accepted connection: service by destination, protocol detection, policy, forwarding.
   */
  acceptStream(stream: Duplex, meta: StreamMeta): void {
    this.#track(stream);
    // While draining, a stream the HBONE server admitted (opened before its GOAWAY) is served like any other.
    if (this.#closed) { stream.destroy(); return; }
    this.#serve(stream, meta.dst, normalizeRemote(meta.remoteAddress), () => meta.source, meta.traceHeaders).catch((err: unknown) => {
      this.#log.error('stream handling failed', { err: describeError(err) });
      stream.destroy();
    });
  }

  /** Keys of the upstream pools (`identity|origin|...`), for inspection. */
  get upstreamPoolKeys(): string[] { return this.#pools.keys(); }

  /**
   * Validate and swap in a new config atomically: requests already running finish on the snapshot they started
   * with, new ones see the new one. An invalid config throws ProxyConfigError and the previous one stays.
   */
  applyConfig(config: ProxyConfig): void {
    let next: ProxySnapshot;
    try {
      next = compileSnapshot(config);
    } catch (err) {
      this.#stats.config.rejected++;
      if (err instanceof ProxyConfigError) throw err;
      throw new ProxyConfigError([{ path: '', message: describeError(err) }]);
    }
    const prevLimits = this.#snapshot.limits;
    this.#backends = reconcileBackendStates(this.#backends, next);
    this.#snapshot = next;
    this.#stats.config.applied++;
    const live = new Set<string>();
    for (const b of this.#backends.values()) for (const e of b.endpoints) live.add(e.key);
    this.#pools.prune(live);
    if (this.#h1 && (prevLimits.maxHeaderBytes !== next.limits.maxHeaderBytes || prevLimits.http2MaxConcurrentStreams !== next.limits.http2MaxConcurrentStreams)) {
      this.#log.warn('limits.maxHeaderBytes / http2MaxConcurrentStreams apply at the next start', { version: next.version });
    }
  }

  /**
   * Serve only streams handed in with `acceptStream`, without listening (the destination side of the mesh tunnel:
   * HBONE streams and same-node hand-offs arrive that way). `stop` ends it like a listening proxy.
   */
  serveStreams(): void {
    if (this.#h1) throw new ProxyError('NM_ERR_PROXY_ALREADY_STARTED', 'proxy already started; stop it first');
    this.#startServers();
  }

  #startServers(): void {
    this.#draining = false;
    this.#closed = false;
    this.#overload.start();
    const limits = this.#snapshot.limits;
    this.#h1 = createHttp1Server(limits, {
      request: (req, res) => {
        const ctx = this.#h1Ctx.get(req.socket);
        if (!ctx) { req.socket.destroy(); return; }
        handleHttp1Request(this.#deps, ctx, req, res);
      },
      upgrade: (req, socket, head) => {
        const ctx = this.#h1Ctx.get(socket);
        if (!ctx || ctx.poisoned) { socket.destroy(); return; }
        handleUpgrade(this.#deps, ctx, req, socket, head);
      },
      parseError: (code) => {
        this.#stats.rejected.parseErrors[code] = (this.#stats.rejected.parseErrors[code] ?? 0) + 1;
        if (code === 'HPE_HEADER_OVERFLOW') this.#stats.rejected.headersTooLarge++; else this.#stats.rejected.malformed++;
      },
    });
    // An http.Server only sweeps slow heads (headersTimeout) once it has emitted 'listening'; ours never listens.
    this.#h1.emit('listening');
    this.#h2 = createHttp2Server(limits, {
      session: (session) => {
        if (this.#handingOver) this.#h2Ctx.set(session, this.#handingOver);
        this.#sessions.add(session);
        session.on('close', () => this.#sessions.delete(session));
      },
      request: (req: Http2ServerRequest, res: Http2ServerResponse) => {
        const ctx = this.#h2Ctx.get(req.stream.session as ServerHttp2Session);
        if (!ctx) { res.stream.close(); return; }
        handleHttp2Request(this.#deps, ctx, req, res);
      },
      rapidReset: () => { this.#stats.http2.rapidResetGoaways++; this.#log.warn('HTTP/2 rapid reset: GOAWAY sent'); },
    });
  }

  /** Start listening; resolves with the bound ports. */
  async start(opts: ListenOptions): Promise<{ outboundPort: number; inboundPort: number | undefined }> {
    if (this.#listeners.length > 0) throw new ProxyError('NM_ERR_PROXY_ALREADY_STARTED', 'proxy already started; stop it first');
    this.#startServers();
    const listen = async (port: number): Promise<number> => {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.#onConnection(socket));
      await new Promise<void>((resolve, reject) => {
        const how = listenOptionsFor(opts.host, port);
        const where = 'fd' in how ? `the primary's listening socket (fd ${how.fd}) for ${opts.host}:${port}` : `${opts.host}:${port}`;
        server.once('error', (err) => reject(new ProxyError('NM_ERR_PROXY_LISTEN_FAILED', `cannot listen on ${where} (${describeError(err)}); is another proxy running?`, { cause: err })));
        server.listen(how, () => resolve());
      });
      this.#listeners.push(server);
      return (server.address() as net.AddressInfo).port;
    };
    try {
      const outboundPort = await listen(opts.outboundPort);
      const inboundPort = opts.inboundPort !== undefined ? await listen(opts.inboundPort) : undefined;
      return { outboundPort, inboundPort };
    } catch (err) {
      await this.stop({ drain: false });
      throw err;
    }
  }

  /**
   * Stop accepting, then (with `drain`) let what is open finish, as drain.ts plans it: HTTP/2 sessions get GOAWAY,
   * HTTP/1 responses carry `Connection: close`, idle HTTP/1 connections close after a grace, tunnels run on; at
   * `timeoutMs` (default 15 s) everything left is cut. Without `drain` everything is cut at once.
   */
  async stop(opts: { drain?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const drain = opts.drain ?? true;
    const settings = computeDrainSettings(drain ? opts.timeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS : 0);
    this.#draining = true;
    const closing = this.#listeners.map((s) => new Promise<void>((r) => s.close(() => r())));
    this.#listeners = [];
    const started = Date.now();
    for (;;) {
      const step = planDrainStep(this.#census(), Date.now() - started, settings);
      if (step.done || step.cutAll) break;
      if (step.goawayHttp2) {
        for (const s of this.#sessions) if (!this.#goawaySent.has(s)) { this.#goawaySent.add(s); s.close(); }
      }
      if (step.closeIdleHttp1) this.#h1?.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 20));
    }
    this.#closed = true;
    this.#overload.stop();
    for (const s of this.#sessions) s.destroy();
    for (const s of this.#sockets.keys()) s.destroy();
    this.#h1?.closeAllConnections();
    // close() on the never-listening server only stops its head-timeout sweep; there is no socket to close.
    this.#h1?.close();
    this.#h1 = undefined;
    this.#h2 = undefined;
    await this.#pools.close(drain);
    await Promise.all(closing);
  }

  /** Open connections by kind, for the drain planner. */
  #census(): DrainCensus {
    const c: DrainCensus = { http1: 0, http2: 0, http2WithoutGoaway: 0, tunnels: 0, pending: 0 };
    for (const kind of this.#sockets.values()) {
      if (kind === 'http1') c.http1++;
      else if (kind === 'tunnel') c.tunnels++;
      else if (kind === 'pending') c.pending++;
    }
    // An HTTP/2 connection counts once, as its session (its socket is the session's until the session closes).
    for (const s of this.#sessions) { c.http2++; if (!this.#goawaySent.has(s)) c.http2WithoutGoaway++; }
    return c;
  }

  #track(socket: Duplex): void {
    this.#stats.connections.accepted++;
    this.#stats.connections.active++;
    this.#sockets.set(socket, 'pending');
    socket.on('close', () => { this.#stats.connections.active--; this.#sockets.delete(socket); });
    socket.on('error', () => {});
  }

  #onConnection(socket: Socket): void {
    this.#track(socket);
    if (this.#closed) { socket.destroy(); return; }
    // Far over the overload limits even a new connection's sniffing and parsing costs CPU the worker lacks: refuse fast.
    if (this.#overload.action === 'stop-accepting') { this.#stats.connections.overloadRefused++; socket.resetAndDestroy(); return; }
    this.#routeConnection(socket).catch((err) => {
      this.#log.error('connection handling failed', { err: describeError(err) });
      socket.destroy();
    });
  }

  async #routeConnection(socket: Socket): Promise<void> {
    let dst: OriginalDestination | undefined;
    try { dst = this.#opts.originalDst(socket); } catch (err) { this.#log.warn('originalDst lookup failed', { err: describeError(err) }); }
    if (!dst) {
      // Fail closed: without the original destination there is nothing to police, so nothing is forwarded.
      this.#stats.connections.noOriginalDst++;
      socket.resetAndDestroy();
      return;
    }
    const remoteAddress = normalizeRemote(socket.remoteAddress ?? '');
    await this.#serve(socket, dst, remoteAddress, () => this.#opts.identifySource(remoteAddress));
  }

  async #serve(socket: Duplex, dst: OriginalDestination, remoteAddress: string, identify: () => SourceIdentity | undefined, traceHeaders?: Record<string, string>): Promise<void> {
    const dstKey = endpointKey(dst.ip, dst.port);
    const service = this.#snapshot.services.get(dstKey);
    if (!service) {
      this.#stats.connections.unknownDestination++;
      this.#log.debug('connection to an unconfigured destination refused', { dst: dstKey });
      resetStream(socket);
      return;
    }
    let source: SourceIdentity | undefined;
    try { source = identify(); } catch (err) { this.#log.warn('identifySource failed', { err: describeError(err) }); }
    const ctx: ConnContext = { id: this.#nextId++, dstKey, dstPort: dst.port, remoteAddress, source, poisoned: false, peer: undefined, pools: undefined };
    const proto = service.config.protocol === 'tcp' ? 'tcp' : await detectProtocol(socket as Socket, this.#snapshot.limits.sniffTimeoutMs);
    if (socket.destroyed) return;
    if (this.#closed) { socket.destroy(); return; }
    if (this.#sockets.has(socket)) this.#sockets.set(socket, proto === 'http1' ? 'http1' : proto === 'http2' ? 'http2' : 'tunnel');
    if (proto === 'http1') {
      this.#stats.connections.http1++;
      this.#h1Ctx.set(socket, ctx);
      this.#h1!.emit('connection', socket);
    } else if (proto === 'http2') {
      this.#stats.connections.http2++;
      this.#handingOver = ctx;
      try { this.#h2!.emit('connection', socket); } finally { this.#handingOver = undefined; }
    } else if (service.config.protocol === 'http') {
      this.#stats.rejected.malformed++;
      writeRawErrorAndClose(socket, 400, 'this destination speaks HTTP only');
    } else {
      await this.#tunnelTcp(socket, ctx, service, traceHeaders);
    }
  }

  async #tunnelTcp(socket: Duplex, ctx: ConnContext, service: CompiledService, traceHeaders?: Record<string, string>): Promise<void> {
    this.#stats.connections.tcp++;
    const peer = ctx.source ? { ...ctx.source, authenticated: true } : { authenticated: false };
    const verdict = authorize({ port: ctx.dstPort }, peer, service.policies);
    const obs = this.#deps.telemetry?.connection(ctx, service.config.name, verdict, traceHeaders);
    if (verdict.verdict === 'deny') {
      this.#stats.authz.deny++;
      this.#stats.connections.tcpDenied++;
      this.#log.info('tcp connection denied', { dst: ctx.dstKey, source: ctx.source?.spiffeId, reason: verdict.reason });
      obs?.end({ outcome: 'denied', bytesSent: 0, bytesReceived: 0 });
      resetStream(socket);
      return;
    }
    this.#stats.authz.allow++;
    const state = this.#backends.get(service.config.defaultBackend);
    const tp = state?.config.trafficPolicy;
    if (!state || computeAdmission(state.inflight, tp?.circuitBreaker)) { obs?.end({ outcome: 'reset', bytesSent: 0, bytesReceived: 0 }); resetStream(socket); return; }
    state.inflight++;
    try {
      const tried = new Set<string>();
      let upstream: Duplex | undefined;
      for (let i = 0; i < TCP_CONNECT_ATTEMPTS && !upstream && !socket.destroyed; i++) {
        const ep = pickEndpoint(state.endpoints, tp?.loadBalancer, { cursor: state.cursor++, hashKey: ctx.remoteAddress, rand: this.#deps.rand, nowMs: Date.now(), avoid: tried });
        if (!ep) break;
        tried.add(ep.key);
        try {
          const timeoutMs = tp?.connectTimeoutMs ?? 5000;
          upstream = this.#opts.connectUpstream
            ? await this.#opts.connectUpstream({ identity: ctx.source?.spiffeId ?? `anon:${ctx.remoteAddress}`, ip: ep.ip, port: ep.port, timeoutMs, ...(obs ? { traceHeaders: obs.headers() } : {}) })
            : await connectTcp(ep.ip, ep.port, timeoutMs);
          recordOutcome(ep, false, state.endpoints, tp?.outlierDetection, Date.now());
        } catch {
          this.#stats.upstream.connectFailures++;
          if (recordOutcome(ep, true, state.endpoints, tp?.outlierDetection, Date.now())) this.#stats.upstream.ejections++;
        }
      }
      if (!upstream) { obs?.end({ outcome: 'connect_failed', bytesSent: 0, bytesReceived: 0 }); if (!socket.destroyed) resetStream(socket); return; }
      if (socket.destroyed) { obs?.end({ outcome: 'reset', bytesSent: 0, bytesReceived: 0 }); upstream.destroy(); return; }
      const moved = await pipeBoth(socket, upstream, tp?.idleTimeoutMs ?? 3600_000);
      obs?.end({ outcome: 'closed', bytesSent: moved.bToA, bytesReceived: moved.aToB });
    } finally {
      state.inflight--;
    }
  }
}

/** Abort a connection loudly: RST for a TCP socket, RST_STREAM for an HTTP/2 (HBONE) stream. */
function resetStream(s: Duplex): void {
  const sock = s as Partial<Socket>;
  if (typeof sock.resetAndDestroy === 'function' && s instanceof net.Socket) sock.resetAndDestroy();
  else s.destroy();
}

/** `::ffff:10.0.0.1` → `10.0.0.1`, so identities and keys use one spelling. */
function normalizeRemote(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}
