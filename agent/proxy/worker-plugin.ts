/**
 * The mesh plumbing every proxy worker loads (a ProxyWorkerPool plugin): the outbound side's upstream connector
 * (HBONE to other nodes, the same-node hand-off, plain TCP), the inbound side (HBONE listener → a stream-only
 * NodeProxy running this node's pods' policy → plain TCP to the pod from the node proxy address), certificates,
 * and the registration of the outbound listener in the datapath's proxy sockmap (fail closed).
 */
// Per endpoint, as plan-proxy decided:
//   hbone → CONNECT <pod ip:port> over mTLS to <node ip>:15008, presenting the source workload's certificate;
//   local → an in-process stream pair handed to the inbound side with the source's identity (no TLS, same policy);
//   plain → TCP (not a mesh destination).
import net from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import { HboneError } from '../../l7proxy/hbone/errors.ts';
import { HboneConnector } from '../../l7proxy/hbone/hbone-client.ts';
import { HboneServer } from '../../l7proxy/hbone/hbone-server.ts';
import { PlaintextInboundListener, type PlaintextHandling } from '../../l7proxy/inbound-plaintext.ts';
import type { MeshTlsIdentity } from '../../l7proxy/identity/mesh-tls.ts';
import { parseTrustBundle, type TrustBundle } from '../../l7proxy/identity/trust-bundle.ts';
import { createVerifyCounters } from '../../l7proxy/identity/verify-reasons.ts';
import { NodeProxy, type SourceIdentity } from '../../l7proxy/proxy.ts';
import { createStats, type ProxyLogger } from '../../l7proxy/stats.ts';
import type { TracingSettings } from '../../l7proxy/telemetry/config.ts';
import type { TelemetrySink } from '../../l7proxy/telemetry/records.ts';
import { createRequestTelemetry } from '../../l7proxy/telemetry/request-telemetry.ts';
import { createTracer, createTracerFromSettings, type MeshTracer } from '../../l7proxy/telemetry/tracer.ts';
import type { UpstreamTarget } from '../../l7proxy/upstream.ts';
import { computeStatsSum, type ProxyWorkerPlugin } from '../../l7proxy/workers.ts';
import type { EndpointRoute } from './plan-proxy.ts';
import { connectMarked } from './socket-mark.ts';
import { BatchingSink, type TelemetryBatch } from './telemetry-relay.ts';

/** Fixed settings of the plugin, given once by the proxy process. */
export type MeshPluginInit = {
  nodeName: string;
  /** The node proxy's address: HBONE listens here, and connections to local pods leave from it (STRICT pods admit only it). */
  host: string;
  /** HBONE port (15008). */
  inboundPort: number;
  trustDomain: string;
  /**
   * SPIFFE ID every node proxy presents on its HBONE listener. Absent: any SVID of the trust domain (a node proxy
   * presents one of its pods' SVIDs; only node agents get certificates, for their own pods, so holding one
   * proves a node of this mesh).
   */
  proxySpiffeId?: string;
  /** This node's bpffs directory: the outbound listener goes into its nm_pxy_sock. Absent → no registration (tests). */
  pinDir?: string;
  /** SO_MARK of the proxy's plain connects (nm_dp_cfg.proxy_mark: connect4 never redirects them); absent → none. */
  mark?: number;
  connectTimeoutMs?: number;
  /** Port of the plaintext inbound listener (15006) on `host`: where the node's steering table sends plaintext to pod ports. Absent → none. */
  plaintextPort?: number;
};

/** PEM material of one identity. */
export type PemIdentity = { certChainPem: string; keyPem: string };

/** What travels with every config push. */
export type MeshPluginData = {
  version: string;
  inbound: ProxyConfig;
  endpoints: Record<string, EndpointRoute>;
  /** Local pod address → workload (also gives the SourceIdentity of a SPIFFE ID for the same-node hand-off). */
  identities: Record<string, SourceIdentity>;
  certs: {
    /** Roots + intermediates (MeshCa bundle); absent → no mTLS yet (HBONE refused both ways). */
    bundlePem?: string;
    /** The node proxy's own certificate (HBONE listener). */
    proxy?: PemIdentity;
    /** Workload certificates by SPIFFE ID (presented by the outbound side). */
    workloads: Record<string, PemIdentity>;
  };
  /** Tracing settings of the mesh (ConfigMap nodemesh-config); absent = tracing off (records still flow). */
  tracing?: TracingSettings;
  /** `ip:port` of local pod ports → what plaintext from outside the mesh meets (plan-plaintext.ts); absent = none steered. */
  plaintext?: Record<string, PlaintextHandling>;
};

/** How often a worker sends its telemetry records to the agent. */
const TELEMETRY_FLUSH_MS = 250;

/** Counters of the plugin, for logs and tests. */
export type MeshPluginStats = { hboneOpened: number; hboneFailed: number; local: number; plain: number; noIdentity: number };

const key = (ip: string, port: number): string => (net.isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`);


/** The plugin, as a class so tests can drive one in-process (the worker uses `createProxyPlugin`). */
export class MeshPlugin implements ProxyWorkerPlugin {
  readonly #init: MeshPluginInit;
  readonly #log: ProxyLogger;
  readonly #inbound: NodeProxy;
  readonly #connector: HboneConnector;
  #data: MeshPluginData | undefined;
  #bundle: TrustBundle | undefined;
  #bundlePem: string | undefined;
  #server: HboneServer | undefined;
  #serverCert: string | undefined;
  #serverBundle: TrustBundle | undefined;
  #bySpiffe = new Map<string, SourceIdentity>();
  #inboundAddrs = new Set<string>();
  #closed = false;
  readonly counters = createVerifyCounters();
  #tracer: MeshTracer;
  #tracing = '';
  #outbound: NodeProxy | undefined;
  #plaintext: PlaintextInboundListener | undefined;
  /** Plaintext outcomes (the listener's and refused same-node hand-offs), summed into the stats sent to the agent. */
  readonly plaintextStats = createStats();
  readonly #sink: TelemetrySink;
  #relay: { sink: BatchingSink; timer: NodeJS.Timeout } | undefined;
  readonly stats: MeshPluginStats = { hboneOpened: 0, hboneFailed: 0, local: 0, plain: 0, noIdentity: 0 };

  /** `sink`: where request/connection records go; default a batch sent to the agent over IPC every 250 ms (none without IPC). */
  constructor(init: MeshPluginInit, logger: ProxyLogger, sink?: TelemetrySink) {
    this.#init = init;
    this.#log = logger;
    this.#tracer = createTracer({ nodeName: init.nodeName, enabled: false });
    this.#sink = sink ?? this.#startRelay();
    // The destination side: policy of this node's pods, then plain TCP from the node proxy address.
    this.#inbound = new NodeProxy({
      originalDst: () => undefined,
      identifySource: () => undefined,
      logger,
      connectUpstream: (t) => connectMarked(t.ip, t.port, { timeoutMs: t.timeoutMs, localAddress: init.host, ...(init.mark ? { mark: init.mark } : {}) }),
    });
    this.#inbound.serveStreams();
    this.#inbound.setTelemetry(createRequestTelemetry({ direction: 'inbound', tracer: () => this.#tracer, sink: this.#sink }));
    this.#connector = new HboneConnector({
      trustDomain: init.trustDomain,
      bundle: () => this.#requireBundle(),
      ...(init.proxySpiffeId ? { serverSpiffeId: init.proxySpiffeId } : {}),
      counters: this.counters,
      logger,
      connectTimeoutMs: init.connectTimeoutMs ?? 5000,
    });
  }

  /** The inbound side (tests read its stats). */
  get inbound(): NodeProxy { return this.#inbound; }

  /** Bound HBONE port once listening. */
  get hbonePort(): number | undefined { return this.#server?.port; }

  /** Opens the upstream connection of the outbound side for `t`. */
  readonly connectUpstream = async (t: UpstreamTarget): Promise<Duplex> => {
    const route = this.#data?.endpoints[key(t.ip, t.port)] ?? { via: 'plain' as const };
    if (route.via === 'local') {
      if (!this.#inboundAddrs.has(key(t.ip, t.port))) {
        throw Object.assign(new Error(`local endpoint ${key(t.ip, t.port)} is not an inbound destination of this node`), { code: 'ECONNREFUSED' });
      }
      // A source that is no workload of this node has no identity: under STRICT that is plaintext, refused.
      if (t.identity.startsWith('anon:') && this.#data?.plaintext?.[key(t.ip, t.port)] === 'refuse') {
        this.plaintextStats.plaintextInbound.strictRefused++;
        throw Object.assign(new Error(`${t.identity.slice(5)} is not a mesh workload and ${key(t.ip, t.port)} runs mTLS STRICT: refused`), { code: 'ECONNREFUSED' });
      }
      this.stats.local++;
      const [mine, theirs] = duplexPair();
      const source = t.identity.startsWith('anon:') ? undefined : this.#bySpiffe.get(t.identity);
      const remoteAddress = t.identity.startsWith('anon:') ? t.identity.slice(5) : this.#init.host;
      this.#inbound.acceptStream(theirs, { dst: { ip: t.ip, port: t.port }, source, remoteAddress, ...(t.traceHeaders ? { traceHeaders: t.traceHeaders } : {}) });
      return mine;
    }
    if (route.via === 'hbone') {
      const spiffeId = t.identity.startsWith('anon:') ? undefined : t.identity;
      const cert = spiffeId ? this.#data?.certs.workloads[spiffeId] : undefined;
      if (!spiffeId || !cert) {
        this.stats.noIdentity++;
        throw new HboneError('NM_ERR_HBONE_NO_IDENTITY', spiffeId
          ? `no certificate for ${spiffeId} yet (CA unreachable, or the pod just started): mTLS to ${key(t.ip, t.port)} refused rather than sent in plaintext`
          : `source ${t.identity.slice(5)} is not a workload of this node: no identity to present to ${key(t.ip, t.port)}`);
      }
      try {
        const s = await this.#connector.open({ identity: { ...cert, spiffeId }, node: { ip: route.nodeIp, port: this.#init.inboundPort }, target: { ip: t.ip, port: t.port }, timeoutMs: t.timeoutMs, ...(t.traceHeaders ? { headers: t.traceHeaders } : {}) });
        this.stats.hboneOpened++;
        return s;
      } catch (err) {
        this.stats.hboneFailed++;
        throw err;
      }
    }
    this.stats.plain++;
    return connectMarked(t.ip, t.port, { timeoutMs: t.timeoutMs, ...(this.#init.mark ? { mark: this.#init.mark } : {}) });
  };

  /** New plan and certificates: inbound config first (so a destination is never half-known), then the rest. */
  async update(raw: unknown): Promise<void> {
    const data = raw as MeshPluginData;
    if (data.certs.bundlePem && data.certs.bundlePem !== this.#bundlePem) {
      this.#bundle = parseTrustBundle(data.certs.bundlePem);
      this.#bundlePem = data.certs.bundlePem;
    }
    this.#inbound.applyConfig(data.inbound);
    this.#inboundAddrs = new Set(data.inbound.services.flatMap((s) => s.addresses.map((a) => key(a.ip, a.port))));
    this.#bySpiffe = new Map(Object.values(data.identities).map((id) => [id.spiffeId, id]));
    this.#data = data;
    this.#connector.retainIdentities(new Set(Object.keys(data.certs.workloads)));
    this.#applyTracing(data.tracing);
    await this.#ensureServer();
  }

  /** Registers the outbound listener in the datapath (fail closed) once this worker listens. */
  async started(proxy: NodeProxy): Promise<void> {
    this.#outbound = proxy;
    proxy.setTelemetry(createRequestTelemetry({ direction: 'outbound', tracer: () => this.#tracer, sink: this.#sink }));
    if (this.#init.plaintextPort !== undefined && !this.#plaintext) {
      // Opens after the first config is in force (started() follows it): steered plaintext is never served blind.
      this.#plaintext = await PlaintextInboundListener.start({
        host: this.#init.host,
        port: this.#init.plaintextPort,
        handling: (dst) => (this.#inboundAddrs.has(key(dst.ip, dst.port)) ? this.#data?.plaintext?.[key(dst.ip, dst.port)] : undefined),
        // Unauthenticated: no principal, no namespace, whatever address it comes from.
        serve: (socket, dst, remoteAddress) => this.#inbound.acceptStream(socket, { dst, source: undefined, remoteAddress }),
        stats: this.plaintextStats.plaintextInbound,
        logger: this.#log,
      });
      this.#log.info('plaintext inbound listener up', { addr: `${this.#init.host}:${this.#plaintext.port}` });
    }
    if (!this.#init.pinDir) return;
    const fd = proxy.listenerFds()[0] ?? -1;
    if (fd < 0) throw new Error('the outbound listener has no file descriptor in this worker to register in nm_pxy_sock: run the pool with scheduling \'kernel\' (round-robin keeps the socket in the primary)');
    const bpf = await import('../../bpf/index.ts');
    const maps = new bpf.PinnedMaps(this.#init.pinDir, ['nm_pxy_sock']);
    try {
      // Every worker shares one listening socket: registering it again is the same socket, so this is idempotent.
      bpf.registerProxyListener(maps, 4, fd);
    } finally {
      maps.close();
    }
    this.#log.info('outbound listener registered in nm_pxy_sock', { pinDir: this.#init.pinDir });
  }

  /**
   * Drains together with the outbound proxy: the listeners close, HBONE sessions get GOAWAY, and the inbound side
   * finishes what is open, up to the pool's deadline. The connector stays: outbound requests still draining need it.
   */
  async drain(opts: { drain: boolean; timeoutMs: number }): Promise<void> {
    this.#closed = true;
    const graceMs = opts.drain ? opts.timeoutMs : 0;
    await Promise.all([this.#server?.close(graceMs), this.#plaintext?.close(), this.#inbound.stop({ drain: opts.drain, timeoutMs: opts.timeoutMs })]);
  }

  async stop(): Promise<void> {
    if (!this.#closed) await this.drain({ drain: true, timeoutMs: 1000 });
    await this.#connector.close(1000);
    if (this.#relay) { clearInterval(this.#relay.timer); this.#flushRelay(); }
    await this.#tracer.shutdown().catch(() => {});
  }

  /** Replaces the tracer when the mesh's tracing settings change (the old one flushes what it holds). */
  #applyTracing(settings: TracingSettings | undefined): void {
    const key = settings ? JSON.stringify(settings) : '';
    if (key === this.#tracing) return;
    this.#tracing = key;
    const old = this.#tracer;
    try {
      this.#tracer = settings
        ? createTracerFromSettings(settings, { nodeName: this.#init.nodeName, onExportError: (m) => this.#log.warn(m) })
        : createTracer({ nodeName: this.#init.nodeName, enabled: false });
      this.#log.info('tracing settings applied', { enabled: this.#tracer.enabled, ...(settings?.enabled ? { endpoint: settings.endpoint, samplingRatio: settings.samplingRatio } : {}) });
    } catch (err) {
      this.#log.warn('tracing settings refused; spans stay as they were', { err: (err as Error).message });
      return;
    }
    void old.shutdown().catch(() => {});
  }

  /** The default sink: batches for the agent, sent over the worker's IPC channel (none in-process: records are dropped). */
  #startRelay(): TelemetrySink {
    if (typeof process.send !== 'function') return { connectionOpened: () => {}, connectionClosed: () => {}, requestFinished: () => {} };
    const sink = new BatchingSink();
    const timer = setInterval(() => this.#flushRelay(), TELEMETRY_FLUSH_MS);
    timer.unref();
    this.#relay = { sink, timer };
    return sink;
  }

  #flushRelay(): void {
    if (!this.#relay || !process.connected) return;
    const batch: TelemetryBatch = {
      t: 'nm-telemetry', pid: process.pid, ...this.#relay.sink.drain(),
      proxyStats: computeStatsSum([this.#inbound.stats, this.plaintextStats, ...(this.#outbound ? [this.#outbound.stats] : [])]),
      spanStats: this.#tracer.stats(),
    };
    try { process.send?.(batch); } catch { /* the channel is closing: the worker is going away */ }
  }

  #requireBundle(): TrustBundle {
    if (!this.#bundle) throw new HboneError('NM_ERR_HBONE_NO_IDENTITY', 'no trust bundle yet: mTLS not possible');
    return this.#bundle;
  }

  async #ensureServer(): Promise<void> {
    const proxyCert = this.#data?.certs.proxy;
    if (this.#closed || !proxyCert || !this.#bundle) return;
    const identity: MeshTlsIdentity = proxyCert;
    if (this.#server) {
      // A new bundle needs a new context too: OpenSSL's trust store (and the session-ticket keys bound to the
      // bundle, l7proxy/identity/session-binding.ts) live in it, not only our per-connection check.
      if (this.#serverCert !== proxyCert.certChainPem || this.#serverBundle !== this.#bundle) { this.#server.setIdentity(identity); this.#serverCert = proxyCert.certChainPem; this.#serverBundle = this.#bundle; }
      return;
    }
    this.#serverCert = proxyCert.certChainPem;
    this.#serverBundle = this.#bundle;
    this.#server = await HboneServer.start({
      host: this.#init.host,
      port: this.#init.inboundPort,
      trustDomain: this.#init.trustDomain,
      identity,
      bundle: () => this.#requireBundle(),
      counters: this.counters,
      logger: this.#log,
      admit: (t) => (this.#inboundAddrs.has(key(t.ip, t.port)) ? 200 : 404),
      onStream: (stream, info) => {
        this.#inbound.acceptStream(stream, {
          dst: info.target,
          source: { spiffeId: info.peer.spiffeId, namespace: info.peer.namespace, serviceAccount: info.peer.serviceAccount },
          remoteAddress: info.remoteAddress,
          ...(info.traceHeaders ? { traceHeaders: info.traceHeaders } : {}),
        });
      },
    });
    this.#log.info('HBONE listener up', { addr: `${this.#init.host}:${this.#server.port}` });
  }
}

/** The ProxyWorkerPool plugin factory (`plugin: { path: this file, init }`). */
export function createProxyPlugin(init: unknown, logger: ProxyLogger): ProxyWorkerPlugin {
  return new MeshPlugin(init as MeshPluginInit, logger);
}
