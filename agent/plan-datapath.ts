/**
 * The pure planner: from Services, EndpointSlices, Nodes and this node's Pods to the ServiceSpecs
 * the BPF tables are written from (one per service port and IP family). It holds the Kubernetes
 * rules — which frontends a service has, which endpoints are usable, affinity, traffic policy —
 * and nothing about maps; bpf/lb-tables.ts turns each ServiceSpec into entries.
 */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { isIP } from 'node:net';
import { type BackendSpec, type FrontendSpec, type L4Proto, type ServiceSpec, addressToBytes, bytesToAddress } from '../bpf/index.ts';
import { ServiceIds, backendKey, frontendKey } from './service-ids.ts';

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Kubernetes' default sessionAffinity ClientIP timeout: 3 hours. */
export const DEFAULT_AFFINITY_TIMEOUT_SEC = 10800;

/** Everything the planner reads: the informers' caches. */
export interface ClusterState {
  /** The node this agent programs. */
  nodeName: string;
  services: readonly V1Service[];
  endpointSlices: readonly V1EndpointSlice[];
  nodes: readonly V1Node[];
  /** Pods bound to this node (spec.nodeName), to place endpoints whose slice lacks nodeName. */
  localPods: readonly V1Pod[];
  /** Mesh flows (issue 5, from the NodeState): `<ns>/<service>:<port>` of the TCP ports sent to the node proxy. */
  meshPorts?: ReadonlySet<string>;
}

/** What planning one service needs besides the service and its slices. */
export interface PlanContext {
  nodeName: string;
  /** Addresses a NodePort listens on: every node's InternalIP and ExternalIP (sorted). */
  nodeAddresses: readonly string[];
  /** Addresses of the pods on this node. */
  localPodIps: ReadonlySet<string>;
  /** Mesh flows (issue 5): `<ns>/<service>:<port>` of the TCP ports sent to the node proxy. */
  meshPorts?: ReadonlySet<string>;
}

/** One planned service port of one IP family. */
export interface PlannedServicePort {
  /** `<ns>/<name>:<port>/<proto>/v4`: the stable key service ids hang off. */
  key: string;
  /** `<ns>/<name>` of the Service. */
  service: string;
  spec: ServiceSpec;
}

/** The planner's answer. */
export interface DatapathPlan {
  services: PlannedServicePort[];
  /** Things the planner skipped, each naming the object and why (logged, never fatal). */
  problems: string[];
}

type Family = 4 | 6;
const PROTO_NUM: Record<L4Proto, number> = { TCP: 6, UDP: 17 };

/** `<ns>/<name>` of any namespaced object. */
export function objectKey(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? ''}`;
}

/** `<ns>/<service>` an EndpointSlice belongs to, or undefined when it carries no service-name label. */
export function sliceServiceKey(s: V1EndpointSlice): string | undefined {
  const name = s.metadata?.labels?.[SERVICE_NAME_LABEL];
  return name ? `${s.metadata?.namespace ?? 'default'}/${name}` : undefined;
}

function familyOf(addr: string): Family | undefined {
  const f = isIP(addr);
  return f === 4 || f === 6 ? f : undefined;
}

/** Canonical text of an address, as the maps' codecs print it back (so diffs compare equal). */
export function canonicalAddress(addr: string): string {
  return addr.includes(':') && isIP(addr) === 6 ? bytesToAddress(addressToBytes(addr), 0) : addr;
}

/** Addresses NodePorts listen on: every node's InternalIP and ExternalIP, deduplicated and sorted. */
export function computeNodeAddresses(nodes: readonly V1Node[]): string[] {
  const out = new Set<string>();
  for (const n of nodes) {
    for (const a of n.status?.addresses ?? []) {
      if ((a.type === 'InternalIP' || a.type === 'ExternalIP') && familyOf(a.address)) out.add(canonicalAddress(a.address));
    }
  }
  return [...out].sort();
}

/** The context of a whole state. */
export function computePlanContext(state: ClusterState): PlanContext {
  const localPodIps = new Set<string>();
  for (const p of state.localPods) {
    for (const ip of p.status?.podIPs ?? (p.status?.podIP ? [{ ip: p.status.podIP }] : [])) if (ip.ip) localPodIps.add(canonicalAddress(ip.ip));
  }
  return { nodeName: state.nodeName, nodeAddresses: computeNodeAddresses(state.nodes), localPodIps, ...(state.meshPorts ? { meshPorts: state.meshPorts } : {}) };
}

interface Endpoint {
  addr: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  local: boolean;
}

/**
 * Endpoints of one service port and family from its slices. Rules as kube-proxy's: the first
 * address of an endpoint; ready and serving default to true and to ready when absent; the same
 * address:port in two slices (a slice being split) counts once, its best conditions winning.
 */
export function computeEndpoints(slices: readonly V1EndpointSlice[], port: V1ServicePort, family: Family, ctx: PlanContext): Endpoint[] {
  const proto = port.protocol ?? 'TCP';
  const byAddr = new Map<string, Endpoint>();
  for (const s of slices) {
    if (s.addressType !== (family === 4 ? 'IPv4' : 'IPv6')) continue;
    const sp = (s.ports ?? []).find((p) => (p.name ?? '') === (port.name ?? '') && (p.protocol ?? 'TCP') === proto);
    if (!sp || sp.port === undefined || sp.port === null) continue;
    for (const e of s.endpoints ?? []) {
      const raw = e.addresses?.[0];
      if (!raw || familyOf(raw) !== family) continue;
      const addr = family === 6 ? canonicalAddress(raw) : raw;
      const ready = e.conditions?.ready ?? true;
      const ep: Endpoint = {
        addr,
        port: sp.port,
        ready,
        serving: e.conditions?.serving ?? ready,
        terminating: e.conditions?.terminating ?? false,
        local: e.nodeName ? e.nodeName === ctx.nodeName : ctx.localPodIps.has(addr),
      };
      const id = `${addr}|${sp.port}`;
      const prev = byAddr.get(id);
      if (!prev) byAddr.set(id, ep);
      else byAddr.set(id, { ...prev, ready: prev.ready || ep.ready, serving: prev.serving || ep.serving, terminating: prev.terminating && ep.terminating, local: prev.local || ep.local });
    }
  }
  return [...byAddr.values()];
}

/** Frontends of one service port and family. */
export function computeFrontends(svc: V1Service, port: V1ServicePort, family: Family, ctx: PlanContext): FrontendSpec[] {
  const spec = svc.spec ?? {};
  const out: FrontendSpec[] = [];
  const seen = new Set<string>();
  const add = (addr: string, p: number, kind: FrontendSpec['kind'], hostNetnsOnly = false): void => {
    if (familyOf(addr) !== family) return;
    const a = canonicalAddress(addr);
    const id = `${a}|${p}`;
    if (seen.has(id)) return;
    seen.add(id);
    out.push(hostNetnsOnly ? { addr: a, port: p, kind, hostNetnsOnly } : { addr: a, port: p, kind });
  };
  const clusterIPs = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
  for (const ip of clusterIPs) if (ip !== 'None') add(ip, port.port, 'ClusterIP');
  if (port.nodePort && (spec.type === 'NodePort' || spec.type === 'LoadBalancer')) {
    for (const a of ctx.nodeAddresses) add(a, port.nodePort, 'NodePort');
    // kube-proxy also serves NodePorts on loopback, for the node's own processes only.
    add(family === 4 ? '127.0.0.1' : '::1', port.nodePort, 'NodePort', true);
  }
  for (const ip of spec.externalIPs ?? []) add(ip, port.port, 'ExternalIP');
  if (spec.type === 'LoadBalancer') for (const ing of svc.status?.loadBalancer?.ingress ?? []) if (ing.ip) add(ing.ip, port.port, 'LoadBalancer');
  return out;
}

/** Key of one service port and family. */
export function servicePortKey(svc: V1Service, port: V1ServicePort, family: Family): string {
  return `${objectKey(svc)}:${port.port}/${port.protocol ?? 'TCP'}/v${family}`;
}

/**
 * Plans every port and family of one Service; allocates ids in `ids` (the caller's table).
 * Headless and ExternalName services have nothing to balance and plan to nothing.
 */
export function planServicePorts(svc: V1Service, slices: readonly V1EndpointSlice[], ctx: PlanContext, ids: ServiceIds, problems: string[] = []): PlannedServicePort[] {
  const spec = svc.spec;
  const name = objectKey(svc);
  if (!spec || spec.type === 'ExternalName') return [];
  if (!spec.clusterIP || spec.clusterIP === 'None') return [];
  const families = new Set<Family>();
  for (const ip of spec.clusterIPs?.length ? spec.clusterIPs : [spec.clusterIP]) {
    const f = familyOf(ip);
    if (f) families.add(f);
  }
  const affinity = spec.sessionAffinity === 'ClientIP' ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SEC) : 0;
  const local = spec.internalTrafficPolicy === 'Local';
  const out: PlannedServicePort[] = [];
  for (const port of spec.ports ?? []) {
    const proto = (port.protocol ?? 'TCP') as string;
    if (proto !== 'TCP' && proto !== 'UDP') {
      problems.push(`service ${name} port ${port.port}/${proto}: only TCP and UDP are balanced by the socket datapath; port skipped`);
      continue;
    }
    for (const family of [...families].sort()) {
      const frontends = computeFrontends(svc, port, family, ctx);
      if (frontends.length === 0) continue;
      const key = servicePortKey(svc, port, family);
      const id = ids.peekService(key) ?? ids.serviceId(key, frontends.map((f) => frontendKey(f.addr, f.port, PROTO_NUM[proto])));
      const endpoints = computeEndpoints(slices, port, family, ctx).filter((e) => (e.ready || (e.terminating && e.serving)) && (!local || e.local));
      const keep = new Set<string>();
      const backends: BackendSpec[] = endpoints.map((e) => {
        keep.add(backendKey(e.addr, e.port));
        const b: BackendSpec = { id: ids.backendId(id, e.addr, e.port), addr: e.addr, port: e.port, ready: e.ready, serving: e.serving, terminating: e.terminating };
        if (e.local) b.local = true;
        return b;
      });
      ids.retainBackends(id, keep);
      const s: ServiceSpec = { id, proto, frontends, backends };
      if (affinity > 0) s.affinityTimeoutSec = affinity;
      if (local) s.trafficPolicyLocal = true;
      out.push({ key, service: name, spec: s });
      // --- mesh flows (issue 5; owner: agent/proxy/) ---
      if (proto === 'TCP' && ctx.meshPorts?.has(`${name}:${port.port}`)) {
        s.l7 = true;
        out.push(...planMeshPodFrontends(key, name, endpoints, ids));
      }
      // --- end mesh flows ---
    }
  }
  return out;
}

// --- mesh flows (issue 5; owner: agent/proxy/) ---
/**
 * A meshed pod dialled directly is a mesh flow too: each endpoint address of a mesh service port becomes a
 * frontend of its own (the pod's ip:port) sent to the node proxy, with the pod itself as its only backend (used
 * only by the proxy's own connects, which the datapath never redirects).
 */
function planMeshPodFrontends(key: string, name: string, endpoints: readonly Endpoint[], ids: ServiceIds): PlannedServicePort[] {
  const out: PlannedServicePort[] = [];
  for (const e of endpoints) {
    const podKey = `${key}/pod/${e.addr}:${e.port}`;
    const id = ids.serviceId(podKey, [frontendKey(e.addr, e.port, PROTO_NUM.TCP)]);
    ids.retainBackends(id, new Set([backendKey(e.addr, e.port)]));
    out.push({ key: podKey, service: name, spec: { id, proto: 'TCP', l7: true, frontends: [{ addr: e.addr, port: e.port, kind: 'ClusterIP' }], backends: [{ id: ids.backendId(id, e.addr, e.port), addr: e.addr, port: e.port, ready: true, ...(e.local ? { local: true } : {}) }] } });
  }
  return out;
}
// --- end mesh flows ---

/** EndpointSlices grouped by the `<ns>/<service>` they belong to. */
export function groupSlices(slices: readonly V1EndpointSlice[]): Map<string, V1EndpointSlice[]> {
  const out = new Map<string, V1EndpointSlice[]>();
  for (const s of slices) {
    const k = sliceServiceKey(s);
    if (!k) continue;
    const list = out.get(k);
    if (list) list.push(s);
    else out.set(k, [s]);
  }
  return out;
}

/**
 * Plans the whole node. Pure: `ids` is not touched; the returned table holds the ids of exactly the
 * planned service ports (released ones are gone), to be passed to the next call.
 */
export function planDatapath(state: ClusterState, ids: ServiceIds = new ServiceIds()): DatapathPlan & { ids: ServiceIds } {
  const next = ids.clone();
  const ctx = computePlanContext(state);
  const slices = groupSlices(state.endpointSlices);
  const problems: string[] = [];
  const services: PlannedServicePort[] = [];
  // Sorted, so a fresh table allocates ids in the same order every time (golden dumps stay stable).
  const sorted = state.services.map((s) => [objectKey(s), s] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, svc] of sorted) for (const p of planServicePorts(svc, slices.get(key) ?? [], ctx, next, problems)) services.push(p);
  next.retainServices(new Set(services.map((s) => s.key)));
  return { services, problems, ids: next };
}
