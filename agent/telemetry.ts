/**
 * The agent's telemetry module: the Prometheus registry behind /metrics, fed by the proxy workers' record batches
 * (requests, TCP connections, proxy and span counters), the BPF datapath (counters and map fill, read every
 * `datapathEveryMs`; the pods' anti-spoofing counters among them), the admin guard's resets (nft, on its own timer),
 * NodeState applies and certificate expiry; and the JSON access log for opted-in namespaces.
 */
import type { Writable } from 'node:stream';
import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Namespace } from '@kubernetes/client-node';
import { readDatapathCounters, readServiceCounters, type MapSet, nmCount, nmPodCount, nmPodegCount } from '../bpf/index.ts';
import type { MapName } from '../bpf/codecs.generated.ts';
import { mapSpecs } from '../bpf/codecs.generated.ts';
import type { ProxyStats } from '../l7proxy/stats.ts';
import type { SpanPipelineStats } from '../l7proxy/telemetry/counting-batch-processor.ts';
import { computeStatsSum } from '../l7proxy/workers.ts';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';
import { AccessLogWriter, computeAccessLogNamespaces } from './metrics/access-log.ts';
import { createMetricsHandler } from './metrics/handler.ts';
import {
  createMeshMetrics, mirrorProxyStats, mirrorSpanStats, recordNodeStateApply, setAdminGuardRejected, setCertificateExpiries, setDatapathCounters, setMapFill, setPodEgressCounters, setPodIngressCounters,
  type MapFill, type MeshMetrics, type ServiceDatapathCounters,
} from './metrics/mesh-metrics.ts';
import { Registry } from './metrics/registry.ts';
import { createTelemetrySink } from './metrics/telemetry-sink.ts';
import type { TelemetryBatch } from './proxy/telemetry-relay.ts';

/** Options of the module. */
export type AgentTelemetryOptions = {
  nodeName: string;
  /** The node's pinned maps (counters, fill). */
  maps: MapSet;
  /** Service id → service-port key (`ns/name:port/TCP/v4`), the sync loop's table. */
  serviceNames: () => ReadonlyMap<number, string>;
  log: Logger;
  /** Where access-log lines go; default stdout (the container log). */
  accessLogStream?: NodeJS.WritableStream;
  /** How often BPF counters and map fill are read; default 5 s. */
  datapathEveryMs?: number;
  /** The admin guard's reset counters (agent/admin-guard.ts readAdminGuardRejected: one `nft list`), read every `adminGuardEveryMs`. */
  adminGuardRejected?: () => Promise<readonly { port: number; packets: number }[] | undefined>;
  /** Default 15 s: a process spawn each time, and the guard's counts change slowly. */
  adminGuardEveryMs?: number;
};

/** Proxy worker counters kept this long after a worker's last batch (a restarted worker starts from zero). */
const WORKER_STATS_TTL_MS = 60_000;

/** Maps whose fill is worth reporting: the hash tables (arrays are always full; sockmaps hold sockets). */
export const FILL_MAPS: readonly MapName[] = (Object.keys(mapSpecs) as MapName[]).filter((n) => /hash/.test(mapSpecs[n].type) && !/^sock/.test(mapSpecs[n].type));

/** `ns/name:port/TCP/v4` → namespace and service name. */
export function parseServicePortKey(key: string): { namespace: string; service: string } | undefined {
  const m = /^([^/]+)\/([^:]+):/.exec(key);
  return m ? { namespace: m[1]!, service: m[2]! } : undefined;
}

/** The registry and its feeds. */
export class AgentTelemetry {
  readonly registry = new Registry();
  readonly metrics: MeshMetrics;
  readonly accessLog: AccessLogWriter;
  readonly #o: AgentTelemetryOptions;
  readonly #sink: ReturnType<typeof createTelemetrySink>;
  readonly #workers = new Map<number, { at: number; proxy?: ProxyStats; spans?: SpanPipelineStats }>();
  #fill: MapFill[] = [];
  #timer: NodeJS.Timeout | undefined;
  #adminTimer: NodeJS.Timeout | undefined;
  #adminReading = false;
  #lastDatapathError = 0;
  #lastAdminError = 0;
  /** Requests recorded since start, by reporter (tests and `status`). */
  readonly counts = { requests: 0, connections: 0, droppedInWorkers: 0 };

  constructor(o: AgentTelemetryOptions) {
    this.#o = o;
    this.metrics = createMeshMetrics(this.registry);
    this.accessLog = new AccessLogWriter({
      stream: (o.accessLogStream ?? process.stdout) as unknown as Writable,
      node: o.nodeName,
      onDrop: () => this.metrics.accessLogDropped.inc(),
      onError: (e) => o.log.warn('access log stream failed; access log off until restart', { error: e.message }),
    });
    this.#sink = createTelemetrySink(this.metrics, this.accessLog, (e) => o.log.debug('telemetry record failed', { error: describeError(e) }));
    this.registry.addCollector(() => this.#collect());
  }

  /** Starts the periodic datapath read. */
  start(): void {
    this.refreshDatapath();
    this.#timer = setInterval(() => this.refreshDatapath(), this.#o.datapathEveryMs ?? 5_000);
    this.#timer.unref();
    if (this.#o.adminGuardRejected) {
      void this.refreshAdminGuard();
      this.#adminTimer = setInterval(() => void this.refreshAdminGuard(), this.#o.adminGuardEveryMs ?? 15_000);
      this.#adminTimer.unref();
    }
  }

  /** Reads the admin guard's reset counters (one at a time; failures logged once a minute, the series kept). */
  async refreshAdminGuard(): Promise<void> {
    const read = this.#o.adminGuardRejected;
    if (!read || this.#adminReading) return;
    this.#adminReading = true;
    try {
      setAdminGuardRejected(this.metrics, (await read()) ?? []);
    } catch (err) {
      if (Date.now() - this.#lastAdminError > 60_000) {
        this.#lastAdminError = Date.now();
        this.#o.log.warn('reading the admin guard counters failed; their metrics stay stale', { error: describeError(err) });
      }
    } finally {
      this.#adminReading = false;
    }
  }

  /** Stops timers and flushes the access log. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#adminTimer) clearInterval(this.#adminTimer);
    await this.accessLog.close().catch(() => {});
  }

  /** The /metrics request handler (mount it on the health server). */
  handler(): ReturnType<typeof createMetricsHandler> {
    return createMetricsHandler(this.registry, { onCollectorError: (e) => this.#o.log.debug('metrics collector failed', { error: describeError(e) }) });
  }

  /** One worker's batch: every record into the metrics and the access log; its counters kept for the next scrape. */
  onBatch(b: TelemetryBatch): void {
    for (const r of b.requests) this.#sink.requestFinished(r);
    for (const r of b.opened) this.#sink.connectionOpened(r);
    for (const r of b.closed) this.#sink.connectionClosed(r);
    this.counts.requests += b.requests.length;
    this.counts.connections += b.closed.length;
    this.counts.droppedInWorkers += b.dropped;
    this.#workers.set(b.pid, { at: Date.now(), ...(b.proxyStats ? { proxy: b.proxyStats } : {}), ...(b.spanStats ? { spans: b.spanStats } : {}) });
  }

  /**
   * Watches Namespaces (list + watch, restarted 5 s after an error): the access log follows their
   * `nodemesh.io/access-log` annotation as soon as it changes. Returns the stop function.
   */
  watchNamespaces(kc: KubeConfig): () => Promise<void> {
    const core = kc.makeApiClient(CoreV1Api);
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const lw = new ListWatch<V1Namespace>('/api/v1/namespaces', new Watch(kc), () => core.listNamespace(), false);
    const changed = (): void => this.setNamespaces(lw.list());
    lw.on('add', changed);
    lw.on('update', changed);
    lw.on('delete', changed);
    const restart = (err: unknown): void => {
      if (stopped || timer) return;
      this.#o.log.debug('namespace watch failed; restarting in 5 s', { error: describeError(err) });
      timer = setTimeout(() => { timer = undefined; if (!stopped) lw.start().then(changed, restart); }, 5000);
      timer.unref();
    };
    lw.on('error', restart);
    lw.start().then(changed, restart);
    return async () => { stopped = true; if (timer) clearTimeout(timer); await lw.stop(); };
  }

  /** Namespaces changed: the access log follows their `nodemesh.io/access-log` annotation. */
  setNamespaces(namespaces: readonly { metadata?: { name?: string; annotations?: Record<string, string> } }[]): void {
    this.accessLog.setNamespaces(computeAccessLogNamespaces(namespaces));
  }

  /** A NodeState set was applied (or failed to). */
  recordApply(a: { version: number; shards: number; seconds: number; ok: boolean }): void {
    recordNodeStateApply(this.metrics, a);
  }

  /** The certificates held now. */
  setCertificates(certs: readonly { identity: string; notAfter: Date }[]): void {
    setCertificateExpiries(this.metrics, certs);
  }

  /** Map fill as last read. */
  mapFill(): readonly MapFill[] {
    return this.#fill;
  }

  /** Reads BPF counters and map fill (a walk of each hash map's keys: done on a timer, never per scrape). */
  refreshDatapath(): void {
    try {
      const counts = readDatapathCounters(this.#o.maps);
      const nodeCounts: bigint[] = [];
      for (const [name, idx] of Object.entries(nmCount)) if (name !== 'NM_CNT_MAX') nodeCounts[idx] = counts[name as keyof typeof counts] ?? 0n;
      const bySvc = new Map<string, ServiceDatapathCounters>();
      for (const [id, key] of this.#o.serviceNames()) {
        const svc = parseServicePortKey(key);
        const c = svc ? readServiceCounters(this.#o.maps, id) : undefined;
        if (!svc || !c) continue;
        const k = `${svc.namespace}/${svc.service}`;
        const cur = bySvc.get(k) ?? { ...svc, translations: 0, noBackend: 0, affinityHits: 0, proxied: 0 };
        cur.translations += Number(c.translations);
        cur.noBackend += Number(c.noBackend);
        cur.affinityHits += Number(c.affinityHits);
        cur.proxied += Number(c.proxied);
        bySvc.set(k, cur);
      }
      setDatapathCounters(this.metrics, { nodeCounts: Array.from(nodeCounts, (v) => v ?? 0n), services: [...bySvc.values()] });
      const podeg = this.#o.maps.map('nm_podeg_count');
      const podegCounts: bigint[] = [];
      for (let i = 0; i < nmPodegCount.NM_PODEG_CNT_MAX; i++) podegCounts.push((podeg.get(i) ?? []).reduce((a, b) => a + b, 0n));
      setPodEgressCounters(this.metrics, podegCounts);
      const podIn = this.#o.maps.map('nm_pod_count');
      const podInCounts: bigint[] = [];
      for (let i = 0; i < nmPodCount.NM_POD_CNT_MAX; i++) podInCounts.push((podIn.get(i) ?? []).reduce((a, b) => a + b, 0n));
      setPodIngressCounters(this.metrics, podInCounts);
      const fill: MapFill[] = [];
      for (const name of FILL_MAPS) {
        let entries = 0;
        for (const _ of this.#o.maps.map(name).keys()) entries++;
        fill.push({ map: name, entries, capacity: mapSpecs[name].maxEntries });
      }
      this.#fill = fill;
      setMapFill(this.metrics, fill);
    } catch (err) {
      // Rate-limited: a datapath that cannot be read stays stale in the metrics, and says so once a minute.
      if (Date.now() - this.#lastDatapathError > 60_000) {
        this.#lastDatapathError = Date.now();
        this.#o.log.warn('reading datapath counters failed; their metrics stay stale', { error: describeError(err) });
      }
    }
  }

  #collect(): void {
    const now = Date.now();
    for (const [pid, w] of this.#workers) if (now - w.at > WORKER_STATS_TTL_MS) this.#workers.delete(pid);
    const proxy = computeStatsSum([...this.#workers.values()].flatMap((w) => (w.proxy ? [w.proxy] : [])));
    if (proxy) mirrorProxyStats(this.metrics, proxy);
    const spans = computeStatsSum([...this.#workers.values()].flatMap((w) => (w.spans ? [w.spans] : [])));
    if (spans) mirrorSpanStats(this.metrics, spans);
  }
}
