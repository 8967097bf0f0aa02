/**
 * The pure planner of the node proxy: this node's NodeState (all shards merged) plus the cluster's Services,
 * EndpointSlices and Nodes in, everything the proxy and the mesh datapath need out:
 *   - `outbound`: the config of the proxy's outbound side (service addresses the kernel redirects here, routes,
 *     backends with endpoints and traffic policies; meshed pods dialled directly);
 *   - `inbound`: the config the destination side runs for this node's pods (one destination per pod port, with the
 *     pod's AuthorizationPolicies), reached through HBONE or the same-node hand-off; a pod address the NodeState
 *     and the Pod watch disagree on is held back (deny-all destination, STRICT, plaintext refused: source-identity.ts);
 *   - `endpoints`: how each endpoint is reached (HBONE to its node, same-node hand-off, plain TCP);
 *   - `identities` (pod address → workload identity) and the workload identities that need certificates;
 *   - `meshPorts` (service ports connect4 sends to the proxy) and `podIngress` (STRICT pod ports the kernel guards).
 * Everything is plain JSON: it crosses a process boundary to the proxy workers.
 */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { isIPv4, isIPv6 } from 'node:net';
import type { CompiledRoute, CompiledTrafficPolicy, NodeService, NodeServicePort, NodeWorkload, WorkloadAuthorization } from '../../crds/index.ts';
import type {
  AuthorizationPolicyConfig,
  BackendConfig,
  EndpointConfig,
  FilterConfig,
  ProxyConfig,
  RouteConfig,
  RouteRuleConfig,
  ServiceConfig,
  TrafficPolicyConfig,
} from '../../l7proxy/config.ts';
import { computeUpstreamProtocol, validateConfig } from '../../l7proxy/config.ts';
import type { SourceIdentity } from '../../l7proxy/proxy.ts';
import { groupSlices, objectKey } from '../plan-datapath.ts';
import { computePlaintextHandling, type PlaintextInboundEntry } from './plan-plaintext.ts';
import { computeAddressOwners, computeSourceIdentities } from './source-identity.ts';

/** Namespace part of the names of held-back destinations: the mesh's own (a workload's destination is named `<ns>/<pod owner>:<port>`, never `held-back:<ip>-<port>`). */
const HELD_BACK_NAMESPACE = 'nodemesh-system';
/** The deny-all policy of held-back destinations (what the proxy's verdict and the authz metric name). */
export const HELD_BACK_POLICY = 'nodemesh-system/held-back-destination';

/** This node's NodeState, all shards merged (see nodestate-watch.ts). */
export interface MergedNodeState {
  nodeName: string;
  trustDomain: string;
  workloads: NodeWorkload[];
  services: NodeService[];
  /** Content hashes of the shards, joined: changes whenever any shard does. */
  version: string;
  /** Highest spec.version among the shards (informational: what `kubectl mesh status` compares with the latest). */
  specVersion?: number;
}

/** What the planner reads besides the NodeState: the agent's own watches. */
export interface PlanProxyInput {
  nodeName: string;
  state: MergedNodeState;
  services: readonly V1Service[];
  endpointSlices: readonly V1EndpointSlice[];
  nodes: readonly V1Node[];
  /**
   * This node's Pod watch: a local address gets a source identity only when it and the NodeState name the same
   * pod (source-identity.ts). Absent only where no watch exists (plan tests); the agent always passes it.
   */
  localPods?: readonly V1Pod[];
}

/** How the outbound side reaches one endpoint. */
export type EndpointRoute =
  /** mTLS (HBONE) to the proxy of the node hosting it. */
  | { via: 'hbone'; node: string; nodeIp: string }
  /** A pod of this node: handed to the inbound side in-process (no TLS, same policy). */
  | { via: 'local' }
  /** Plain TCP (no proxy on the other side knows it: unknown node, or not a meshed pod). */
  | { via: 'plain' };

/** One pod port under STRICT: the kernel lets only the node proxy connect to it. */
export interface PodIngressEntry {
  ip: string;
  port: number;
}

/** Everything the proxy and the mesh datapath need, from one NodeState. */
export interface ProxyPlan {
  version: string;
  trustDomain: string;
  outbound: ProxyConfig;
  inbound: ProxyConfig;
  /** `ip:port` → how to reach it. Endpoints missing here are reached by plain TCP. */
  endpoints: Record<string, EndpointRoute>;
  /** Local pod address → its workload (the outbound side's `identifySource`). */
  identities: Record<string, SourceIdentity>;
  /** Distinct identities of this node's pods: the certificates the node needs. */
  workloadIdentities: { namespace: string; serviceAccount: string }[];
  /** `<ns>/<service>:<port>` of every service port connect4 must send to the proxy. */
  meshPorts: string[];
  /** Pod ports whose workload runs STRICT: only the node proxy may connect. */
  podIngress: PodIngressEntry[];
  /** Pod ports whose plaintext (from outside the mesh) is steered through the proxy: STRICT refused, policed PERMISSIVE served unauthenticated (plan-plaintext.ts). */
  plaintextInbound?: PlaintextInboundEntry[];
  /** Entries left out, each naming the object and why (logged, never fatal). */
  problems: string[];
}

type Endpoint = { ip: string; port: number; ready: boolean; nodeName: string | undefined };

const ipKey = (ip: string, port: number): string => (isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`);

/** InternalIP of every node (the HBONE target), by node name. */
export function computeNodeIps(nodes: readonly V1Node[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of nodes) {
    const addrs = n.status?.addresses ?? [];
    const ip = addrs.find((a) => a.type === 'InternalIP' && isIPv4(a.address))?.address ?? addrs.find((a) => a.type === 'InternalIP')?.address;
    if (n.metadata?.name && ip) out.set(n.metadata.name, ip);
  }
  return out;
}

/**
 * Endpoints of one Service port (by service port number), from its EndpointSlices: the first address of each
 * endpoint, the slice port whose name equals the Service port's name, ready defaulting to true.
 */
export function computeServicePortEndpoints(svc: V1Service | undefined, slices: readonly V1EndpointSlice[], port: number): Endpoint[] {
  const sp = svc?.spec?.ports?.find((p) => p.port === port && (p.protocol ?? 'TCP') === 'TCP');
  if (!sp) return [];
  const byKey = new Map<string, Endpoint>();
  for (const s of slices) {
    const slicePort = (s.ports ?? []).find((p) => (p.name ?? '') === (sp.name ?? '') && (p.protocol ?? 'TCP') === 'TCP');
    if (!slicePort?.port) continue;
    for (const e of s.endpoints ?? []) {
      const ip = e.addresses?.[0];
      if (!ip || (!isIPv4(ip) && !isIPv6(ip))) continue;
      const ready = e.conditions?.ready ?? true;
      const k = ipKey(ip, slicePort.port);
      const prev = byKey.get(k);
      byKey.set(k, { ip, port: slicePort.port, ready: ready || (prev?.ready ?? false), nodeName: e.nodeName ?? prev?.nodeName });
    }
  }
  return [...byKey.values()].sort((a, b) => (ipKey(a.ip, a.port) < ipKey(b.ip, b.port) ? -1 : 1));
}

/** The proxy's traffic policy from the compiled one (durations already in ms). */
export function computeTrafficPolicy(tp: CompiledTrafficPolicy | undefined): TrafficPolicyConfig | undefined {
  if (!tp) return undefined;
  const out: TrafficPolicyConfig = {};
  if (tp.timeouts?.connectMs) out.connectTimeoutMs = tp.timeouts.connectMs;
  if (tp.timeouts?.idleMs) out.idleTimeoutMs = tp.timeouts.idleMs;
  if (tp.retryBudget) out.retryBudget = { percent: tp.retryBudget.percent, minRetriesPerSecond: tp.retryBudget.minRetriesPerSecond };
  if (tp.circuitBreaker) out.circuitBreaker = { ...tp.circuitBreaker };
  const od = tp.outlierDetection;
  if (od) {
    out.outlierDetection = {
      consecutive5xx: od.consecutive5xx ?? od.consecutiveGatewayErrors ?? 5,
      baseEjectionTimeMs: od.baseEjectionTimeMs ?? 30_000,
      maxEjectionPercent: od.maxEjectionPercent ?? 10,
    };
  }
  const lb = tp.loadBalancer;
  if (lb) {
    if (lb.algorithm === 'ConsistentHash') {
      const h = lb.hash ?? {};
      out.loadBalancer = { type: 'ConsistentHash', hashOn: h.header ? { header: h.header } : h.cookie ? { cookie: h.cookie.name } : { sourceIP: true } };
    } else {
      out.loadBalancer = { type: lb.algorithm };
    }
  }
  if (tp.rateLimit) out.rateLimit = { ...tp.rateLimit };
  const fi = tp.faultInjection;
  if (fi?.delay || fi?.abort) {
    out.faultInjection = {};
    if (fi.delay) out.faultInjection.delay = { percent: fi.delay.percent, durationMs: fi.delay.fixedDelayMs };
    if (fi.abort) out.faultInjection.abort = { percent: fi.abort.percent, httpStatus: fi.abort.httpStatus };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The proxy's filters of one route entry; mirrors to unresolved backends are left out. */
function computeFilters(route: CompiledRoute, backendName: (ns: string, name: string, port: number) => string): FilterConfig[] {
  const out: FilterConfig[] = [];
  for (const f of route.filters) {
    switch (f.type) {
      case 'RequestHeaderModifier':
        if (f.headers) out.push({ type: 'RequestHeaderModifier', requestHeaderModifier: { set: f.headers.set, add: f.headers.add, remove: f.headers.remove } });
        break;
      case 'ResponseHeaderModifier':
        if (f.headers) out.push({ type: 'ResponseHeaderModifier', responseHeaderModifier: { set: f.headers.set, add: f.headers.add, remove: f.headers.remove } });
        break;
      case 'RequestRedirect': {
        const r = f.redirect;
        if (!r) break;
        const rr: Extract<FilterConfig, { type: 'RequestRedirect' }>['requestRedirect'] = { statusCode: r.statusCode };
        if (r.scheme) rr.scheme = r.scheme;
        if (r.hostname) rr.hostname = r.hostname;
        if (r.port) rr.port = r.port;
        if (r.replaceFullPath !== undefined) rr.path = { type: 'ReplaceFullPath', replaceFullPath: r.replaceFullPath };
        else if (r.replacePrefixMatch !== undefined) rr.path = { type: 'ReplacePrefixMatch', replacePrefixMatch: r.replacePrefixMatch };
        out.push({ type: 'RequestRedirect', requestRedirect: rr });
        break;
      }
      case 'URLRewrite': {
        const r = f.rewrite;
        if (!r) break;
        const uw: Extract<FilterConfig, { type: 'URLRewrite' }>['urlRewrite'] = {};
        if (r.hostname) uw.hostname = r.hostname;
        if (r.replaceFullPath !== undefined) uw.path = { type: 'ReplaceFullPath', replaceFullPath: r.replaceFullPath };
        else if (r.replacePrefixMatch !== undefined) uw.path = { type: 'ReplacePrefixMatch', replacePrefixMatch: r.replacePrefixMatch };
        out.push({ type: 'URLRewrite', urlRewrite: uw });
        break;
      }
      case 'RequestMirror':
        if (f.mirror?.backend.resolved) out.push({ type: 'RequestMirror', requestMirror: { backend: backendName(f.mirror.backend.namespace, f.mirror.backend.name, f.mirror.backend.port), percent: f.mirror.percent } });
        break;
    }
  }
  return out;
}

/** The proxy's authorization policies of one workload, targeted at its inbound destinations. */
export function computeWorkloadAuthorization(authz: WorkloadAuthorization | undefined, targets: string[]): AuthorizationPolicyConfig[] {
  if (!authz) return [];
  const out: AuthorizationPolicyConfig[] = authz.policies.map((p) => ({
    name: p.name,
    action: p.action,
    targetServices: targets,
    rules: p.rules.map((r) => {
      const rule: AuthorizationPolicyConfig['rules'][number] = {};
      if (r.from) rule.from = r.from.map((f) => ({ ...(f.spiffeIds ? { spiffeIds: f.spiffeIds } : {}), ...(f.namespaces ? { namespaces: f.namespaces } : {}) }));
      if (r.to) {
        rule.to = r.to.map((t) => ({
          ...(t.ports ? { ports: t.ports } : {}),
          ...(t.methods ? { methods: t.methods } : {}),
          ...(t.paths ? { paths: t.paths.map((pm) => (pm.exact !== undefined ? { exact: pm.exact } : { prefix: pm.prefix ?? '/' })) } : {}),
        }));
      }
      return rule;
    }),
  }));
  // defaultAction Deny without an ALLOW policy left (all of them failed to compile): deny everything explicitly,
  // since the proxy's own default is "allow when no ALLOW policy applies".
  if (authz.defaultAction === 'Deny' && !authz.policies.some((p) => p.action === 'ALLOW')) {
    out.push({ name: 'nodemesh-system/default-deny', action: 'DENY', targetServices: targets, rules: [{}] });
  }
  return out;
}

/** A name for a backend or destination in the proxy's `namespace/name:suffix` syntax. */
function portName(ns: string, name: string, suffix: string): string {
  return `${ns}/${name}:${suffix.toLowerCase().replace(/[^0-9a-z-]/g, '-')}`;
}

/** Plans the proxy of `input.nodeName` (pure, deterministic). */
export function planProxy(input: PlanProxyInput): ProxyPlan {
  const { state, nodeName } = input;
  const problems: string[] = [];
  const svcByKey = new Map(input.services.map((s) => [objectKey(s), s]));
  const slicesByKey = groupSlices(input.endpointSlices);
  const nodeIps = computeNodeIps(input.nodes);
  const endpointsOf = (ns: string, name: string, port: number): Endpoint[] => computeServicePortEndpoints(svcByKey.get(`${ns}/${name}`), slicesByKey.get(`${ns}/${name}`) ?? [], port);

  const idSet = new Map<string, { namespace: string; serviceAccount: string }>();
  for (const w of state.workloads) idSet.set(`${w.namespace}/${w.serviceAccount}`, { namespace: w.namespace, serviceAccount: w.serviceAccount });
  // Destination side: which workload (policies, mTLS mode) a local pod address stands for, by the same rule as the
  // source side: only when the NodeState and this node's Pod watch name the same pod. An address they disagree on
  // (reused, a delete not compiled out yet, two workloads claiming it) is held back: it gets a destination that
  // denies everything, STRICT in the kernel and its plaintext refused, never the policy of whichever claim came last.
  const destinationOwners = computeAddressOwners(state.workloads, input.localPods, 'same-workload');
  const localByIp = destinationOwners.owners;
  const heldBack = new Map(destinationOwners.withheld.map((w) => [w.ip, w.reason]));
  for (const [ip, reason] of heldBack) problems.push(`destination address ${ip}: held back: ${reason}; connections to it are denied until both views agree`);
  // Source identities: only addresses the NodeState and this node's Pod watch agree on (a reused address never
  // inherits the old pod's identity).
  const sourceIds = computeSourceIdentities(state.workloads, input.localPods);
  const identities: Record<string, SourceIdentity> = sourceIds.identities;
  for (const w of sourceIds.withheld) problems.push(`source address ${w.ip}: no identity: ${w.reason}; its mesh calls are refused until both views agree`);

  // Backends: one per (service port, traffic policy); the same endpoints under each policy variant.
  const backends = new Map<string, BackendConfig>();
  const policyVariants = new Map<string, string>();
  const endpointRoutes: Record<string, EndpointRoute> = {};
  // `w` undefined: an address held back (no workload both views agree on).
  const localInbound = new Map<string, { w: NodeWorkload | undefined; ip: string; port: number; modes: Set<'HTTP' | 'TCP'>; h2c?: boolean }>();
  const noteEndpoint = (e: Endpoint, svc: NodeService, mode: 'HTTP' | 'TCP', appProtocol?: string): void => {
    const key = ipKey(e.ip, e.port);
    const local = localByIp.get(e.ip);
    const held = heldBack.has(e.ip);
    if (local || held || e.nodeName === nodeName) {
      if (!local && !held) { problems.push(`endpoint ${key} of ${svc.namespace}/${svc.name} is on this node but no workload of the NodeState has that address (NodeState behind the EndpointSlice?); plain TCP`); endpointRoutes[key] ??= { via: 'plain' }; return; }
      const li = localInbound.get(key) ?? { w: local, ip: e.ip, port: e.port, modes: new Set() };
      li.modes.add(mode);
      if (computeUpstreamProtocol(appProtocol) === 'h2c') li.h2c = true;
      localInbound.set(key, li);
      endpointRoutes[key] = { via: 'local' };
      return;
    }
    const nodeIp = e.nodeName ? nodeIps.get(e.nodeName) : undefined;
    if (!e.nodeName || !nodeIp) {
      problems.push(`endpoint ${key} of ${svc.namespace}/${svc.name}: ${e.nodeName ? `node ${e.nodeName} has no InternalIP` : 'EndpointSlice gives no nodeName'}; reached by plain TCP (a STRICT destination refuses it)`);
      endpointRoutes[key] ??= { via: 'plain' };
      return;
    }
    endpointRoutes[key] = { via: 'hbone', node: e.nodeName, nodeIp };
  };
  const serviceMode = new Map<string, { svc: NodeService; port: NodeServicePort }>();
  for (const svc of state.services) for (const p of svc.ports) serviceMode.set(`${svc.namespace}/${svc.name}:${p.port}`, { svc, port: p });

  const backendFor = (ns: string, name: string, port: number, tp: CompiledTrafficPolicy | undefined): string => {
    const base = portName(ns, name, String(port));
    const policy = computeTrafficPolicy(tp);
    let bname = base;
    if (policy) {
      const pk = `${base}|${JSON.stringify(policy)}`;
      bname = policyVariants.get(pk) ?? `${base}-p${policyVariants.size + 1}`;
      policyVariants.set(pk, bname);
    }
    if (backends.has(bname)) return bname;
    const eps = endpointsOf(ns, name, port);
    const known = serviceMode.get(`${ns}/${name}:${port}`);
    for (const e of eps) if (known) noteEndpoint(e, known.svc, known.port.mode, known.port.appProtocol);
    const endpoints: EndpointConfig[] = eps.map((e) => ({ ip: e.ip, port: e.port, ready: e.ready, ...(e.nodeName ? { nodeName: e.nodeName } : {}) }));
    // HTTP/2 (gRPC) to the pods when the Service port says so in appProtocol.
    const h2c = computeUpstreamProtocol(known?.port.appProtocol) === 'h2c';
    backends.set(bname, { name: bname, endpoints, ...(policy ? { trafficPolicy: policy } : {}), ...(h2c ? { protocol: 'h2c' as const } : {}) });
    return bname;
  };
  const unresolvedBackend = (ns: string, name: string): string => {
    const bname = portName(ns, name, 'unresolved');
    if (!backends.has(bname)) backends.set(bname, { name: bname, endpoints: [] });
    return bname;
  };

  const outboundServices: ServiceConfig[] = [];
  const usedAddresses = new Set<string>();
  const meshPorts: string[] = [];
  for (const svc of state.services) {
    for (const p of svc.ports) {
      const sname = portName(svc.namespace, svc.name, String(p.port));
      meshPorts.push(`${svc.namespace}/${svc.name}:${p.port}`);
      const addresses = svc.clusterIPs.filter((ip) => isIPv4(ip) || isIPv6(ip)).map((ip) => ({ ip, port: p.port })).filter((a) => {
        const k = ipKey(a.ip, a.port);
        if (usedAddresses.has(k)) { problems.push(`${sname}: address ${k} already belongs to another service; left out`); return false; }
        usedAddresses.add(k);
        return true;
      });
      const defaultBackend = backendFor(svc.namespace, svc.name, p.port, p.trafficPolicy);
      const producer = p.routes.filter((r) => r.consumerNamespace === undefined);
      if (producer.length < p.routes.length) problems.push(`${sname}: ${p.routes.length - producer.length} consumer-namespace route entries not applied (one route table per service in the proxy); producer routes apply to every source`);
      const routes: RouteConfig[] = producer.map((r, i) => {
        if (r.hostnames?.length) problems.push(`${sname}: route ${r.route} rule ${r.ruleIndex} hostnames ${r.hostnames.join(',')} not matched by the proxy (mesh routes match on the Service)`);
        const rule: RouteRuleConfig = {
          matches: [{
            path: { type: r.match.path.type, value: r.match.path.value },
            ...(r.match.method ? { method: r.match.method } : {}),
            ...(r.match.headers?.length ? { headers: r.match.headers.map((h) => ({ type: h.type, name: h.name, value: h.value })) } : {}),
            ...(r.match.queryParams?.length ? { queryParams: r.match.queryParams.map((q) => ({ type: q.type, name: q.name, value: q.value })) } : {}),
          }],
        };
        const tp = r.trafficPolicy ?? p.trafficPolicy;
        const filters = computeFilters(r, (ns, name, port) => backendFor(ns, name, port, tp));
        if (filters.length) rule.filters = filters;
        if (!filters.some((f) => f.type === 'RequestRedirect')) {
          rule.backendRefs = r.backends.map((b) => ({ backend: b.resolved && b.port > 0 ? backendFor(b.namespace, b.name, b.port, tp) : unresolvedBackend(b.namespace, b.name), weight: b.weight }));
        }
        const timeouts: NonNullable<RouteRuleConfig['timeouts']> = {};
        if (r.timeouts?.requestMs) timeouts.requestMs = r.timeouts.requestMs;
        if (r.timeouts?.backendRequestMs) timeouts.backendRequestMs = r.timeouts.backendRequestMs;
        if (Object.keys(timeouts).length) rule.timeouts = timeouts;
        if (r.retry && r.retry.attempts > 0) rule.retry = { attempts: r.retry.attempts, codes: r.retry.codes, backoffMs: r.retry.backoffMs };
        // NodeState lists entries in evaluation order; the proxy breaks precedence ties by age, so the index is the age.
        return { name: r.route, createdAtMs: i, rules: [rule] };
      });
      outboundServices.push({ name: sname, addresses, protocol: p.mode === 'HTTP' ? 'http' : 'tcp', defaultBackend, ...(routes.length ? { routes } : {}) });
    }
  }

  // Meshed pods dialled directly: each endpoint address of a mesh service port is a destination of its own,
  // forwarded to exactly that pod (no routes: routes belong to the Service).
  for (const svc of state.services) {
    for (const p of svc.ports) {
      for (const e of endpointsOf(svc.namespace, svc.name, p.port)) {
        const k = ipKey(e.ip, e.port);
        if (usedAddresses.has(k)) continue;
        usedAddresses.add(k);
        const name = portName(svc.namespace, svc.name, `d-${p.port}-${e.ip}-${e.port}`);
        backends.set(name, { name, endpoints: [{ ip: e.ip, port: e.port, ready: true, ...(e.nodeName ? { nodeName: e.nodeName } : {}) }], ...(computeUpstreamProtocol(p.appProtocol) === 'h2c' ? { protocol: 'h2c' as const } : {}) });
        noteEndpoint(e, svc, p.mode, p.appProtocol);
        outboundServices.push({ name, addresses: [{ ip: e.ip, port: e.port }], protocol: p.mode === 'HTTP' ? 'http' : 'tcp', defaultBackend: name });
      }
    }
  }

  // Inbound: every local pod port some mesh service sends to, with the pod's AuthorizationPolicies.
  const inboundServices: ServiceConfig[] = [];
  const inboundBackends: BackendConfig[] = [];
  const podIngress: PodIngressEntry[] = [];
  const plaintextInbound: PlaintextInboundEntry[] = [];
  const targetsByWorkload = new Map<NodeWorkload, string[]>();
  const heldTargets: string[] = [];
  for (const li of [...localInbound.values()].sort((a, b) => (ipKey(a.ip, a.port) < ipKey(b.ip, b.port) ? -1 : 1))) {
    if (!li.w) {
      // Held back: a destination of its own that admits nothing (opaque: the connection is denied before any byte),
      // the kernel's STRICT guard (only the proxy may connect) and plaintext steered to a reset.
      const name = portName(HELD_BACK_NAMESPACE, 'held-back', `${li.ip}-${li.port}`);
      inboundServices.push({ name, addresses: [{ ip: li.ip, port: li.port }], protocol: 'tcp', defaultBackend: name });
      inboundBackends.push({ name, endpoints: [{ ip: li.ip, port: li.port, ready: true, nodeName }] });
      heldTargets.push(name);
      podIngress.push({ ip: li.ip, port: li.port });
      plaintextInbound.push({ ip: li.ip, port: li.port, handling: 'refuse' });
      continue;
    }
    const name = portName(li.w.namespace, li.w.name, String(li.port));
    const needsHttp = li.modes.has('HTTP') || (li.w.authorization?.policies.some((pol) => pol.rules.some((r) => r.requiresHttp)) ?? false);
    // Opaque only when nothing on this port needs HTTP; else sniff, so path rules see HTTP even behind a TCP-mode port.
    const protocol: ServiceConfig['protocol'] = needsHttp ? 'auto' : 'tcp';
    inboundServices.push({ name, addresses: [{ ip: li.ip, port: li.port }], protocol, defaultBackend: name });
    inboundBackends.push({ name, endpoints: [{ ip: li.ip, port: li.port, ready: true, nodeName }], ...(li.h2c ? { protocol: 'h2c' as const } : {}) });
    const t = targetsByWorkload.get(li.w) ?? [];
    t.push(name);
    targetsByWorkload.set(li.w, t);
    if (li.w.mtls.mode === 'STRICT') podIngress.push({ ip: li.ip, port: li.port });
    const handling = computePlaintextHandling(li.w);
    if (handling) plaintextInbound.push({ ip: li.ip, port: li.port, handling });
  }
  const inboundAuthz: AuthorizationPolicyConfig[] = [];
  for (const [w, targets] of targetsByWorkload) inboundAuthz.push(...computeWorkloadAuthorization(w.authorization, targets));
  if (heldTargets.length) inboundAuthz.push({ name: HELD_BACK_POLICY, action: 'DENY', targetServices: heldTargets, rules: [{}] });

  let outbound: ProxyConfig = { version: state.version, services: outboundServices, backends: [...backends.values()] };
  let inbound: ProxyConfig = { version: state.version, services: inboundServices, backends: inboundBackends, ...(inboundAuthz.length ? { authorization: inboundAuthz } : {}) };
  outbound = dropInvalid(outbound, 'outbound', problems);
  inbound = dropInvalid(inbound, 'inbound', problems);
  return {
    version: state.version,
    trustDomain: state.trustDomain,
    outbound,
    inbound,
    endpoints: endpointRoutes,
    identities,
    workloadIdentities: [...idSet.values()].sort((a, b) => (`${a.namespace}/${a.serviceAccount}` < `${b.namespace}/${b.serviceAccount}` ? -1 : 1)),
    meshPorts: [...new Set(meshPorts)].sort(),
    podIngress,
    plaintextInbound,
    problems,
  };
}

/**
 * One bad entry must not cost every other one its config: drop the routes (then services, then policies) the
 * proxy's validation names, and say so. A policy that cannot be applied becomes deny-all for its targets, never
 * nothing (a broken policy never widens access).
 */
function dropInvalid(config: ProxyConfig, side: string, problems: string[]): ProxyConfig {
  let c = config;
  for (let round = 0; round < 5; round++) {
    const issues = validateConfig(c);
    if (issues.length === 0) return c;
    const badRoutes = new Set<string>();
    const badServices = new Set<number>();
    const badPolicies = new Set<number>();
    for (const i of issues) {
      let m = /^services\[(\d+)\]\.routes\[(\d+)\]/.exec(i.path);
      if (m) { badRoutes.add(`${m[1]}/${m[2]}`); problems.push(`${side} ${c.services[Number(m[1])]?.name} route ${c.services[Number(m[1])]?.routes?.[Number(m[2])]?.name}: ${i.path}: ${i.message}; route left out`); continue; }
      m = /^services\[(\d+)\]/.exec(i.path);
      if (m) { badServices.add(Number(m[1])); problems.push(`${side} ${c.services[Number(m[1])]?.name}: ${i.path}: ${i.message}; service left out`); continue; }
      m = /^authorization\[(\d+)\]/.exec(i.path);
      if (m) { badPolicies.add(Number(m[1])); problems.push(`${side} policy ${c.authorization?.[Number(m[1])]?.name}: ${i.path}: ${i.message}; replaced by deny-all for its targets`); continue; }
      problems.push(`${side}: ${i.path}: ${i.message}`);
    }
    c = {
      ...c,
      services: c.services.flatMap((s, si) => (badServices.has(si) ? [] : [s.routes ? { ...s, routes: s.routes.filter((_, ri) => !badRoutes.has(`${si}/${ri}`)) } : s])),
      ...(c.authorization ? {
        authorization: c.authorization.map((p, pi) => (badPolicies.has(pi) ? { name: p.name, action: 'DENY' as const, ...(p.targetServices ? { targetServices: p.targetServices } : {}), rules: [{}] } : p)),
      } : {}),
    };
    const names = new Set(c.services.map((s) => s.name));
    if (c.authorization) c = { ...c, authorization: c.authorization.map((p) => (p.targetServices ? { ...p, targetServices: p.targetServices.filter((t) => names.has(t)) } : p)).filter((p) => !p.targetServices || p.targetServices.length > 0) };
  }
  problems.push(`${side}: config still invalid after dropping bad entries; nothing applied`);
  return { version: config.version, services: [], backends: [] };
}
