/**
 * The agent's metric families (`nodemesh_*`) and the functions that feed them: per-request and per-connection
 * records from the proxy, the proxy's own counters, BPF datapath counters and map fill, NodeState version and
 * apply latency, certificate expiry, and the span pipeline's counters.
 */
// Label rule: names of things (workload, service, namespace, route, policy, reason), never addresses or paths.
// `reporter` says which proxy counted (source node or destination node), as Istio does: every mesh request
// passes through two proxies, and summing without it would count each request twice.
import { nmCount, nmPodCount, nmPodegCount } from '../../bpf/codecs.generated.ts';
import type { ProxyStats } from '../../l7proxy/stats.ts';
import type { SpanPipelineStats } from '../../l7proxy/telemetry/counting-batch-processor.ts';
import type { ConnectionRecord, RequestRecord } from '../../l7proxy/telemetry/records.ts';
import type { Counter, Gauge, Histogram, Registry } from './registry.ts';

/** Request latency buckets (seconds): sub-millisecond proxy hops up to long polls. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Body size buckets (bytes): 64 B to 16 MiB, ×4. */
export const SIZE_BUCKETS = [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216];
/** NodeState apply latency buckets (seconds). */
export const APPLY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const PEERS = ['reporter', 'source_workload', 'source_namespace', 'destination_service', 'destination_namespace'] as const;
const REQUEST = [...PEERS, 'route'] as const;
const DEST = ['destination_service', 'destination_namespace'] as const;

/** BPF per-service counters, summed over CPUs, with the service they belong to. */
export type ServiceDatapathCounters = { namespace: string; service: string; translations: number; noBackend: number; affinityHits: number; proxied: number };

/** A map's fill: entries now and max_entries. */
export type MapFill = { map: string; entries: number; capacity: number };

/** The metric handles, for callers that need one directly. */
export type MeshMetrics = {
  requests: Counter;
  requestDuration: Histogram;
  requestSize: Histogram;
  responseSize: Histogram;
  tcpOpened: Counter;
  tcpClosed: Counter;
  tcpBytes: Counter;
  retries: Counter;
  timeouts: Counter;
  circuitBreakerRejections: Counter;
  rateLimitRejections: Counter;
  authzVerdicts: Counter;
  datapathTranslations: Counter;
  datapathNoBackend: Counter;
  datapathProxied: Counter;
  datapathAffinityHits: Counter;
  datapathDrops: Counter;
  datapathEvents: Counter;
  podEgressDrops: Counter;
  podEgressPassed: Counter;
  podIngressDrops: Counter;
  adminGuardRejected: Counter;
  bpfMapEntries: Gauge;
  bpfMapCapacity: Gauge;
  nodeStateVersion: Gauge;
  nodeStateShards: Gauge;
  nodeStateApply: Histogram;
  nodeStateApplyFailures: Counter;
  certificateExpiry: Gauge;
  proxyRejected: Counter;
  proxyUpstreamFailures: Counter;
  proxyConnectionsActive: Gauge;
  proxyRestarts: Counter;
  proxyOomKills: Counter;
  proxyMemoryLimit: Gauge;
  proxyMemoryUsage: Gauge;
  plaintextInbound: Counter;
  spans: Counter;
  accessLogDropped: Counter;
};

/** Defines every nodemesh_* family on `registry`. */
export function createMeshMetrics(registry: Registry): MeshMetrics {
  const c = (name: string, help: string, labelNames: readonly string[] = []): Counter => registry.counter({ name, help, labelNames });
  const g = (name: string, help: string, labelNames: readonly string[] = []): Gauge => registry.gauge({ name, help, labelNames });
  return {
    requests: c('nodemesh_requests_total', 'HTTP requests handled by the node proxy, by source workload, destination service, route and response code (0 = no response).', [...REQUEST, 'code']),
    requestDuration: registry.histogram({ name: 'nodemesh_request_duration_seconds', help: 'Time from the request head arriving to the response end, retries included.', labelNames: REQUEST, buckets: DURATION_BUCKETS }),
    requestSize: registry.histogram({ name: 'nodemesh_request_size_bytes', help: 'Request body size.', labelNames: REQUEST, buckets: SIZE_BUCKETS }),
    responseSize: registry.histogram({ name: 'nodemesh_response_size_bytes', help: 'Response body size.', labelNames: REQUEST, buckets: SIZE_BUCKETS }),
    tcpOpened: c('nodemesh_tcp_connections_opened_total', 'Opaque TCP connections accepted by the node proxy.', PEERS),
    tcpClosed: c('nodemesh_tcp_connections_closed_total', 'Opaque TCP connections closed, by how they ended.', [...PEERS, 'outcome']),
    tcpBytes: c('nodemesh_tcp_bytes_total', 'Bytes of opaque TCP connections; direction sent = to the client side, received = from it.', [...PEERS, 'direction']),
    retries: c('nodemesh_retries_total', 'Retried attempts (attempts beyond the first).', [...DEST, 'route']),
    timeouts: c('nodemesh_timeouts_total', 'Requests ended by a timeout; kind request (whole request) or backend_request (one attempt).', [...DEST, 'route', 'kind']),
    circuitBreakerRejections: c('nodemesh_circuit_breaker_rejections_total', 'Requests refused with 503 because a circuit-breaker limit was reached.', DEST),
    rateLimitRejections: c('nodemesh_rate_limit_rejections_total', 'Requests refused with 429 by the local rate limit.', DEST),
    authzVerdicts: c('nodemesh_authz_verdicts_total', 'Authorization decisions on the destination node, by verdict (allow, deny, audit) and deciding policy.', ['verdict', 'policy']),
    datapathTranslations: c('nodemesh_datapath_translations_total', 'Connects and datagrams the kernel rewrote to a backend or to the proxy (BPF nm_lb_stats).', DEST),
    datapathNoBackend: c('nodemesh_datapath_no_backend_total', 'Connects the kernel refused because the service had no usable backend (BPF nm_lb_stats).', DEST),
    datapathProxied: c('nodemesh_datapath_proxied_total', 'Connects the kernel redirected to the node proxy (mesh flows).', DEST),
    datapathAffinityHits: c('nodemesh_datapath_affinity_hits_total', 'Backends chosen from a live sessionAffinity entry.', DEST),
    datapathDrops: c('nodemesh_datapath_drops_total', 'Flows the kernel refused, by reason (BPF nm_dp_count).', ['reason']),
    datapathEvents: c('nodemesh_datapath_events_total', 'Other datapath events and failed map updates (BPF nm_dp_count).', ['event']),
    podEgressDrops: c('nodemesh_pod_egress_drops_total', 'Packets a pod sent that its veth dropped (anti-spoofing, BPF nm_podeg_count): spoofed_source (not the pod\'s own IPv4 address), no_entry (veth guarded but not vouched for), ipv6 (pod without an IPv6 address).', ['reason']),
    podEgressPassed: c('nodemesh_pod_egress_passed_total', 'IPv4 packets pods sent from their own address through the anti-spoofing check (BPF nm_podeg_count).'),
    podIngressDrops: c('nodemesh_pod_ingress_drops_total', 'Packets to an mTLS STRICT pod port that the pod\'s veth dropped (BPF nm_pod_count), by reason: not_from_proxy (the source was not the node proxy: a connection around the mesh).', ['reason']),
    adminGuardRejected: c('nodemesh_admin_guard_rejected_total', 'TCP packets from pods to a node control port (agent status, CA) answered with a reset by the nft table nodemesh_admin, by port.', ['port']),
    bpfMapEntries: g('nodemesh_bpf_map_entries', 'Entries in a pinned BPF map.', ['map']),
    bpfMapCapacity: g('nodemesh_bpf_map_capacity', 'max_entries of a pinned BPF map.', ['map']),
    nodeStateVersion: g('nodemesh_nodestate_version', 'Highest spec.version among the NodeState shards applied on this node.'),
    nodeStateShards: g('nodemesh_nodestate_shards', 'NodeState shards in the set applied on this node.'),
    nodeStateApply: registry.histogram({ name: 'nodemesh_nodestate_apply_seconds', help: 'Time to apply a NodeState set (plan, BPF maps, proxy config swap).', buckets: APPLY_BUCKETS }),
    nodeStateApplyFailures: c('nodemesh_nodestate_apply_failures_total', 'NodeState applies that failed and kept the previous state.'),
    certificateExpiry: g('nodemesh_certificate_expiry_timestamp_seconds', 'notAfter of the workload certificate held for an identity (Unix seconds).', ['identity']),
    proxyRejected: c('nodemesh_proxy_rejected_requests_total', 'Requests the proxy refused before routing (malformed, headers_too_large, bad_target; overloaded: shed with 503 because the proxy worker itself was overloaded).', ['reason']),
    proxyUpstreamFailures: c('nodemesh_proxy_upstream_failures_total', 'Upstream failures seen by the proxy, by kind.', ['kind']),
    proxyConnectionsActive: g('nodemesh_proxy_connections_active', 'Downstream connections open on the proxy now.'),
    proxyRestarts: c('nodemesh_proxy_restarts_total', 'Times the agent restarted the node proxy after it died (crash, kill, OOM kill); graceful handovers are not counted.'),
    proxyOomKills: c('nodemesh_proxy_oom_kills_total', 'OOM kills in the node proxy\'s memory cgroup (its memory limit reached); each one restarts the proxy.'),
    proxyMemoryLimit: g('nodemesh_proxy_memory_limit_bytes', 'Memory limit of the node proxy\'s cgroup (absent without one).'),
    proxyMemoryUsage: g('nodemesh_proxy_memory_bytes', 'Memory the node proxy\'s cgroup uses now (absent without one).'),
    plaintextInbound: c('nodemesh_plaintext_inbound_connections_total', 'Plaintext to steered pod ports, by outcome: policed (served unauthenticated under policy), strict_refused (mTLS STRICT: reset), refused (not placeable: reset).', ['outcome']),
    spans: c('nodemesh_trace_spans_total', 'Spans by outcome: queued, dropped (queue full), exported, export_failed.', ['outcome']),
    accessLogDropped: c('nodemesh_access_log_dropped_total', 'Access-log lines dropped because the buffer was full.'),
  };
}

function codeLabel(code: number): string {
  return code >= 100 && code <= 999 ? String(code) : '0';
}

/** Feeds one finished request into the metrics. Cheap: a few map lookups, no allocation beyond the label keys. */
export function recordRequest(m: MeshMetrics, r: RequestRecord): void {
  const reporter = r.direction === 'outbound' ? 'source' : 'destination';
  const labels = {
    reporter,
    source_workload: r.source.workload,
    source_namespace: r.source.namespace,
    destination_service: r.destination.service,
    destination_namespace: r.destination.namespace,
    route: r.route,
  };
  m.requests.inc({ ...labels, code: codeLabel(r.code) });
  m.requestDuration.observe(labels, r.durationSeconds);
  m.requestSize.observe(labels, r.requestBytes);
  m.responseSize.observe(labels, r.responseBytes);
  const dest = { destination_service: r.destination.service, destination_namespace: r.destination.namespace };
  if (r.attempts > 1) m.retries.inc({ ...dest, route: r.route }, r.attempts - 1);
  if (r.refusal === 'timeout_request') m.timeouts.inc({ ...dest, route: r.route, kind: 'request' });
  else if (r.refusal === 'timeout_backend_request') m.timeouts.inc({ ...dest, route: r.route, kind: 'backend_request' });
  else if (r.refusal === 'circuit_breaker') m.circuitBreakerRejections.inc(dest);
  else if (r.refusal === 'rate_limit') m.rateLimitRejections.inc(dest);
  if (r.authz) m.authzVerdicts.inc({ verdict: r.authz.verdict, policy: r.authz.policy });
}

function peerLabels(r: Pick<ConnectionRecord, 'direction' | 'source' | 'destination'>): Record<(typeof PEERS)[number], string> {
  return {
    reporter: r.direction === 'outbound' ? 'source' : 'destination',
    source_workload: r.source.workload,
    source_namespace: r.source.namespace,
    destination_service: r.destination.service,
    destination_namespace: r.destination.namespace,
  };
}

/** Counts an accepted opaque TCP connection. */
export function recordConnectionOpened(m: MeshMetrics, r: Pick<ConnectionRecord, 'direction' | 'source' | 'destination'>): void {
  m.tcpOpened.inc(peerLabels(r));
}

/** Counts a closed opaque TCP connection and its bytes. */
export function recordConnectionClosed(m: MeshMetrics, r: ConnectionRecord): void {
  const p = peerLabels(r);
  m.tcpClosed.inc({ ...p, outcome: r.outcome });
  m.tcpBytes.inc({ ...p, direction: 'sent' }, r.bytesSent);
  m.tcpBytes.inc({ ...p, direction: 'received' }, r.bytesReceived);
  if (r.authz) m.authzVerdicts.inc({ verdict: r.authz.verdict, policy: r.authz.policy });
}

/** The metric label of an nm_count index: `NM_CNT_DROP_NO_BACKEND` → drop reason `no_backend`. */
export function describeDatapathCount(index: number): { kind: 'drop' | 'event'; name: string } | undefined {
  for (const [k, v] of Object.entries(nmCount)) {
    if (v !== index || k === 'NM_CNT_MAX') continue;
    const bare = k.replace(/^NM_CNT_/, '').toLowerCase();
    return bare.startsWith('drop_') ? { kind: 'drop', name: bare.slice(5) } : { kind: 'event', name: bare };
  }
  return undefined;
}

/**
 * Mirrors BPF counters (already summed over CPUs by the reader). `nodeCounts[i]` is nm_dp_count index i;
 * services missing from `services` lose their series (the agent deleted their stats entry with the service).
 */
export function setDatapathCounters(m: MeshMetrics, snap: { nodeCounts: readonly (number | bigint)[]; services: readonly ServiceDatapathCounters[] }): void {
  for (const [i, raw] of snap.nodeCounts.entries()) {
    const d = describeDatapathCount(i);
    if (!d) continue;
    const v = Number(raw);
    if (d.kind === 'drop') m.datapathDrops.setTo({ reason: d.name }, v);
    else m.datapathEvents.setTo({ event: d.name }, v);
  }
  for (const f of [m.datapathTranslations, m.datapathNoBackend, m.datapathProxied, m.datapathAffinityHits]) f.clear();
  for (const s of snap.services) {
    const l = { destination_service: s.service, destination_namespace: s.namespace };
    m.datapathTranslations.setTo(l, s.translations);
    m.datapathNoBackend.setTo(l, s.noBackend);
    m.datapathProxied.setTo(l, s.proxied);
    m.datapathAffinityHits.setTo(l, s.affinityHits);
  }
}

/** The metric label of an nm_podeg_count index: a drop reason, `passed`, or undefined (the array size). */
export function describePodEgressCount(index: number): string | undefined {
  switch (index) {
    case nmPodegCount.NM_PODEG_CNT_PASSED: return 'passed';
    case nmPodegCount.NM_PODEG_CNT_SPOOFED: return 'spoofed_source';
    case nmPodegCount.NM_PODEG_CNT_NO_ENTRY: return 'no_entry';
    case nmPodegCount.NM_PODEG_CNT_IPV6: return 'ipv6';
    default: return undefined;
  }
}

/** Mirrors the anti-spoofing counters (nm_podeg_count, summed over CPUs; index = enum nm_podeg_count). */
export function setPodEgressCounters(m: MeshMetrics, counts: readonly (number | bigint)[]): void {
  for (const [i, raw] of counts.entries()) {
    const what = describePodEgressCount(i);
    if (what === 'passed') m.podEgressPassed.setTo(undefined, Number(raw));
    else if (what) m.podEgressDrops.setTo({ reason: what }, Number(raw));
  }
}

/** The metric label of an nm_pod_count index that counts drops; undefined for the others (allowed, the array size). */
export function describePodIngressDrop(index: number): string | undefined {
  return index === nmPodCount.NM_POD_CNT_DROPPED ? 'not_from_proxy' : undefined;
}

/** Mirrors the STRICT pod-ingress guard's drop counters (nm_pod_count, summed over CPUs; index = enum nm_pod_count). */
export function setPodIngressCounters(m: MeshMetrics, counts: readonly (number | bigint)[]): void {
  for (const [i, raw] of counts.entries()) {
    const reason = describePodIngressDrop(i);
    if (reason) m.podIngressDrops.setTo({ reason }, Number(raw));
  }
}

/** Mirrors the admin guard's reset counters (ports no longer guarded lose their series). */
export function setAdminGuardRejected(m: MeshMetrics, byPort: readonly { port: number; packets: number }[]): void {
  m.adminGuardRejected.clear();
  for (const r of byPort) m.adminGuardRejected.setTo({ port: String(r.port) }, r.packets);
}

/** Sets the fill of every pinned map (maps not listed lose their series). */
export function setMapFill(m: MeshMetrics, maps: readonly MapFill[]): void {
  m.bpfMapEntries.clear();
  m.bpfMapCapacity.clear();
  for (const f of maps) {
    m.bpfMapEntries.set({ map: f.map }, f.entries);
    m.bpfMapCapacity.set({ map: f.map }, f.capacity);
  }
}

/** Records a NodeState apply: the version now in effect, its shard count, how long it took, and whether it failed. */
export function recordNodeStateApply(m: MeshMetrics, a: { version: number; shards: number; seconds: number; ok: boolean }): void {
  m.nodeStateApply.observe(undefined, a.seconds);
  if (!a.ok) {
    m.nodeStateApplyFailures.inc();
    return;
  }
  m.nodeStateVersion.set(undefined, a.version);
  m.nodeStateShards.set(undefined, a.shards);
}

/** Replaces the certificate expiry series with the certificates held now (SPIFFE ID → notAfter). */
export function setCertificateExpiries(m: MeshMetrics, certs: readonly { identity: string; notAfter: Date }[]): void {
  m.certificateExpiry.clear();
  for (const c of certs) m.certificateExpiry.set({ identity: c.identity }, Math.floor(c.notAfter.getTime() / 1000));
}

/** Mirrors the proxy supervisor's view: restarts, and with a memory limit the cgroup's limit, use and OOM kills. */
export function setProxyProcessMetrics(m: MeshMetrics, s: { restarts: number; memory?: { limitBytes: number; usageBytes?: number; oomKills: number; problem?: string } } | undefined): void {
  if (!s) return;
  m.proxyRestarts.setTo(undefined, s.restarts);
  m.proxyMemoryLimit.clear();
  m.proxyMemoryUsage.clear();
  if (!s.memory) return;
  m.proxyOomKills.setTo(undefined, s.memory.oomKills);
  if (s.memory.problem !== undefined) return;
  m.proxyMemoryLimit.set(undefined, s.memory.limitBytes);
  if (s.memory.usageBytes !== undefined) m.proxyMemoryUsage.set(undefined, s.memory.usageBytes);
}

/** Mirrors the proxy's node-wide counters (those with no per-request record). */
export function mirrorProxyStats(m: MeshMetrics, s: ProxyStats): void {
  m.proxyRejected.setTo({ reason: 'malformed' }, s.rejected.malformed);
  m.proxyRejected.setTo({ reason: 'headers_too_large' }, s.rejected.headersTooLarge);
  m.proxyRejected.setTo({ reason: 'bad_target' }, s.rejected.badTarget);
  m.proxyRejected.setTo({ reason: 'overloaded' }, s.rejected.overloaded ?? 0); // absent from a worker of an older build during a handover
  m.proxyUpstreamFailures.setTo({ kind: 'connect' }, s.upstream.connectFailures);
  m.proxyUpstreamFailures.setTo({ kind: 'reset' }, s.upstream.resets);
  m.proxyUpstreamFailures.setTo({ kind: 'protocol' }, s.upstream.protocolErrors);
  m.proxyUpstreamFailures.setTo({ kind: 'no_endpoint' }, s.upstream.noEndpoint);
  m.proxyUpstreamFailures.setTo({ kind: 'ejection' }, s.upstream.ejections);
  m.proxyConnectionsActive.set(undefined, s.connections.active);
  if (s.plaintextInbound) {
    m.plaintextInbound.setTo({ outcome: 'policed' }, s.plaintextInbound.policed);
    m.plaintextInbound.setTo({ outcome: 'strict_refused' }, s.plaintextInbound.strictRefused);
    m.plaintextInbound.setTo({ outcome: 'refused' }, s.plaintextInbound.refused);
  }
}

/** Mirrors the tracer's span pipeline counters. */
export function mirrorSpanStats(m: MeshMetrics, s: SpanPipelineStats): void {
  m.spans.setTo({ outcome: 'queued' }, s.queued);
  m.spans.setTo({ outcome: 'dropped' }, s.dropped);
  m.spans.setTo({ outcome: 'exported' }, s.exported);
  m.spans.setTo({ outcome: 'export_failed' }, s.exportFailed);
}
