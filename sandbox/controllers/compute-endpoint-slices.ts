/**
 * The EndpointSlice controller's decision as one pure function, after kube-controller-manager's
 * endpointslice reconciler: the endpoints a Service should have (pods matching its selector that have an
 * address), grouped by resolved port set, packed at most 100 to a slice, diffed against the existing
 * slices so that unchanged slices stay untouched, changed ones are updated in place, and a slice that
 * would be deleted is reused for one that would be created.
 */
import type { V1Endpoint, DiscoveryV1EndpointPort, V1EndpointSlice, V1Node, V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { matchLabelMap } from './label-selector.ts';
import { isPodReady, isPodTerminal, isTerminating } from './object-meta.ts';
import { canonicalJson } from './pod-template-hash.ts';

/** Label naming the Service a slice belongs to. */
export const serviceNameLabel = 'kubernetes.io/service-name';
/** Label naming the controller that manages a slice; slices managed by anything else are left alone. */
export const managedByLabel = 'endpointslice.kubernetes.io/managed-by';
/** This controller's value of the managed-by label (the same as kube-controller-manager's). */
export const endpointSliceControllerName = 'endpointslice-controller.k8s.io';
/** Label marking slices of headless Services. */
export const headlessLabel = 'service.kubernetes.io/headless';
/** The node label whose value becomes an endpoint's zone. */
export const zoneLabel = 'topology.kubernetes.io/zone';
/** kube-controller-manager's default --max-endpoints-per-slice. */
export const defaultMaxEndpointsPerSlice = 100;

/** The writes that bring a Service's slices to the desired state. */
export interface EndpointSliceChanges {
  create: V1EndpointSlice[];
  update: V1EndpointSlice[];
  delete: V1EndpointSlice[];
}

/** Options of computeEndpointSlices. */
export interface EndpointSliceOptions {
  /** Nodes by name, for endpoint zones; without them endpoints carry no zone. */
  nodes?: ReadonlyMap<string, V1Node>;
  /** Endpoints per slice (1..1000); 100 unless a test wants less. */
  maxEndpointsPerSlice?: number;
}

/** True when the controller should maintain slices for this Service (it has a selector and is not ExternalName). */
export function serviceWantsEndpointSlices(service: V1Service): boolean {
  return service.spec?.type !== 'ExternalName' && Object.keys(service.spec?.selector ?? {}).length > 0;
}

/** True when this controller manages `slice` for `service` (by its labels, whatever its owner). */
export function isManagedSliceOf(slice: V1EndpointSlice, service: V1Service): boolean {
  return (
    slice.metadata?.namespace === service.metadata?.namespace &&
    slice.metadata?.labels?.[serviceNameLabel] === service.metadata?.name &&
    slice.metadata?.labels?.[managedByLabel] === endpointSliceControllerName
  );
}

/** The port number a pod serves a Service port on (podutil.FindPort); undefined when a named port is missing. */
export function findPodPort(pod: V1Pod, servicePort: V1ServicePort): number | undefined {
  const target = servicePort.targetPort as number | string | undefined;
  if (target === undefined || target === null || target === '' || target === 0) return servicePort.port;
  if (typeof target === 'number') return target;
  const protocol = servicePort.protocol ?? 'TCP';
  const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  for (const container of containers) {
    for (const port of container.ports ?? []) {
      if (port.name === target && (port.protocol ?? 'TCP') === protocol) return port.containerPort;
    }
  }
  return undefined;
}

/** The pod's IPv4 address (status.podIPs first, then status.podIP). */
export function podIPv4(pod: V1Pod): string | undefined {
  for (const entry of pod.status?.podIPs ?? []) if (entry.ip && !entry.ip.includes(':')) return entry.ip;
  const ip = pod.status?.podIP;
  return ip && !ip.includes(':') ? ip : undefined;
}

/** The labels every slice of `service` carries: the Service's own, plus the controller's. */
export function desiredSliceLabels(service: V1Service): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(service.metadata?.labels ?? {})) {
    if (k !== serviceNameLabel && k !== managedByLabel && k !== headlessLabel) labels[k] = v;
  }
  if (service.spec?.clusterIP === 'None') labels[headlessLabel] = '';
  labels[serviceNameLabel] = service.metadata?.name ?? '';
  labels[managedByLabel] = endpointSliceControllerName;
  return labels;
}

function ownerRefFor(service: V1Service): NonNullable<NonNullable<V1EndpointSlice['metadata']>['ownerReferences']>[number] {
  return { apiVersion: 'v1', kind: 'Service', name: service.metadata?.name ?? '', uid: service.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true };
}

function isOwnedBy(slice: V1EndpointSlice, service: V1Service): boolean {
  return (slice.metadata?.ownerReferences ?? []).some((r) => r.kind === 'Service' && r.uid === service.metadata?.uid);
}

function normalisePorts(ports: readonly DiscoveryV1EndpointPort[] | undefined): DiscoveryV1EndpointPort[] {
  return (ports ?? []).map((p) => {
    const out: DiscoveryV1EndpointPort = { name: p.name ?? '', port: p.port, protocol: p.protocol ?? 'TCP' };
    if (p.appProtocol) out.appProtocol = p.appProtocol;
    return out;
  });
}

function portsKey(ports: readonly DiscoveryV1EndpointPort[] | undefined): string {
  return canonicalJson(normalisePorts(ports));
}

/** An endpoint's identity inside a port group: its addresses (as EndpointSet hashes them). */
function endpointKey(ep: V1Endpoint): string {
  return [...(ep.addresses ?? [])].sort().join(',');
}

function isAbsent(v: unknown): boolean {
  return v === undefined || v === null;
}

/** Field by field (endpointsEqualBeyondHash): this runs for every endpoint of every sync. */
function sameEndpoint(a: V1Endpoint, b: V1Endpoint): boolean {
  const ac = a.conditions ?? {};
  const bc = b.conditions ?? {};
  const at = a.targetRef ?? {};
  const bt = b.targetRef ?? {};
  return (
    (a.addresses ?? []).join(',') === (b.addresses ?? []).join(',') &&
    ac.ready === bc.ready &&
    ac.serving === bc.serving &&
    ac.terminating === bc.terminating &&
    (a.nodeName ?? '') === (b.nodeName ?? '') &&
    (a.zone ?? '') === (b.zone ?? '') &&
    (a.hostname ?? '') === (b.hostname ?? '') &&
    at.kind === bt.kind &&
    at.namespace === bt.namespace &&
    at.name === bt.name &&
    at.uid === bt.uid &&
    isAbsent(a.hints) === isAbsent(b.hints) &&
    isAbsent(a.deprecatedTopology) === isAbsent(b.deprecatedTopology)
  );
}

/** The endpoint for one pod of the Service (podToEndpoint). */
export function podToEndpoint(pod: V1Pod, service: V1Service, ip: string, nodes?: ReadonlyMap<string, V1Node>): V1Endpoint {
  const publishNotReady = service.spec?.publishNotReadyAddresses === true;
  const terminating = isTerminating(pod);
  const serving = publishNotReady || isPodReady(pod);
  // "ready" stays false for a terminating pod, so old consumers that only read it stop sending there.
  const ready = publishNotReady || (serving && !terminating);
  const ep: V1Endpoint = {
    addresses: [ip],
    conditions: { ready, serving, terminating },
    targetRef: { kind: 'Pod', namespace: pod.metadata?.namespace, name: pod.metadata?.name, uid: pod.metadata?.uid },
  };
  const nodeName = pod.spec?.nodeName;
  if (nodeName) {
    ep.nodeName = nodeName;
    const zone = nodes?.get(nodeName)?.metadata?.labels?.[zoneLabel];
    if (zone) ep.zone = zone;
  }
  if (pod.spec?.hostname && pod.spec.subdomain === service.metadata?.name) ep.hostname = pod.spec.hostname;
  return ep;
}

/** The desired endpoints of `service`, grouped by port set (key: canonical ports). */
export function computeDesiredEndpoints(service: V1Service, pods: readonly V1Pod[], nodes?: ReadonlyMap<string, V1Node>): Map<string, { ports: DiscoveryV1EndpointPort[]; endpoints: Map<string, V1Endpoint> }> {
  const groups = new Map<string, { ports: DiscoveryV1EndpointPort[]; endpoints: Map<string, V1Endpoint> }>();
  const selector = service.spec?.selector ?? {};
  const sorted = [...pods].sort((a, b) => ((a.metadata?.name ?? '') < (b.metadata?.name ?? '') ? -1 : 1));
  for (const pod of sorted) {
    if (pod.metadata?.namespace !== service.metadata?.namespace) continue;
    if (!matchLabelMap(selector, pod.metadata?.labels)) continue;
    const ip = podIPv4(pod);
    if (!ip || isPodTerminal(pod)) continue;
    const ports: DiscoveryV1EndpointPort[] = [];
    for (const sp of service.spec?.ports ?? []) {
      const port = findPodPort(pod, sp);
      // A pod without the named port serves the others: it lands in a slice with fewer ports.
      if (port === undefined) continue;
      const ep: DiscoveryV1EndpointPort = { name: sp.name ?? '', port, protocol: sp.protocol ?? 'TCP' };
      if (sp.appProtocol) ep.appProtocol = sp.appProtocol;
      ports.push(ep);
    }
    const key = portsKey(ports);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { ports, endpoints: new Map() }));
    const endpoint = podToEndpoint(pod, service, ip, nodes);
    group.endpoints.set(endpointKey(endpoint), endpoint);
  }
  return groups;
}

function newSlice(service: V1Service, ports: DiscoveryV1EndpointPort[]): V1EndpointSlice {
  let prefix = `${service.metadata?.name ?? 'service'}-`;
  // generateName appends 5 characters; object names stop at 253.
  if (prefix.length > 248) prefix = prefix.slice(0, 248);
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      generateName: prefix,
      namespace: service.metadata?.namespace,
      labels: desiredSliceLabels(service),
      ownerReferences: [ownerRefFor(service)],
    },
    addressType: 'IPv4',
    ports,
    endpoints: [],
  };
}

/**
 * Computes the slice writes for one Service. `existing` are the slices labelled for it (any owner);
 * slices managed by another controller are ignored. A Service that wants no slices gets all of its
 * managed slices deleted.
 */
export function computeEndpointSlices(service: V1Service, pods: readonly V1Pod[], existing: readonly V1EndpointSlice[], opts: EndpointSliceOptions = {}): EndpointSliceChanges {
  const max = opts.maxEndpointsPerSlice ?? defaultMaxEndpointsPerSlice;
  const managed = existing.filter((s) => isManagedSliceOf(s, service));
  const out: EndpointSliceChanges = { create: [], update: [], delete: [] };
  if (!serviceWantsEndpointSlices(service)) {
    out.delete = managed;
    return out;
  }

  const labels = desiredSliceLabels(service);
  const labelsKey = canonicalJson(labels);
  const mine: V1EndpointSlice[] = [];
  for (const slice of managed) {
    // A slice of an earlier Service of the same name, or of an address family we do not serve, goes.
    if (slice.addressType === 'IPv4' && isOwnedBy(slice, service)) mine.push(slice);
    else out.delete.push(slice);
  }

  const desired = computeDesiredEndpoints(service, pods, opts.nodes);
  const byPorts = new Map<string, V1EndpointSlice[]>();
  for (const slice of mine) {
    const key = portsKey(slice.ports);
    const list = byPorts.get(key) ?? [];
    list.push(slice);
    byPorts.set(key, list);
  }
  for (const [key, slices] of byPorts) if (!desired.has(key)) out.delete.push(...slices);

  for (const [key, group] of desired) {
    const want = group.endpoints;
    const toUpdate: V1EndpointSlice[] = [];
    const unchanged: V1EndpointSlice[] = [];
    for (const slice of byPorts.get(key) ?? []) {
      const kept: V1Endpoint[] = [];
      let changed = false;
      for (const ep of slice.endpoints ?? []) {
        const k = endpointKey(ep);
        const got = want.get(k);
        if (got === undefined) {
          changed = true;
          continue;
        }
        if (!sameEndpoint(got, ep)) changed = true;
        kept.push(got);
        want.delete(k);
      }
      const labelsChanged = canonicalJson(slice.metadata?.labels ?? {}) !== labelsKey;
      if (changed && kept.length === 0) {
        out.delete.push(slice);
      } else if (changed || labelsChanged) {
        const copy = structuredClone(slice);
        copy.endpoints = kept;
        copy.metadata = { ...copy.metadata, labels: { ...labels } };
        toUpdate.push(copy);
      } else {
        unchanged.push(slice);
      }
    }

    // Fill the slices being written anyway before touching any other (fullest first, as upstream).
    const pending = [...want.values()];
    toUpdate.sort((a, b) => (b.endpoints?.length ?? 0) - (a.endpoints?.length ?? 0));
    for (const slice of toUpdate) {
      while (pending.length > 0 && (slice.endpoints?.length ?? 0) < max) slice.endpoints?.push(pending.shift() as V1Endpoint);
    }
    // Whatever is left goes to new slices; a last partial batch may fit an unchanged slice instead.
    const fillable = [...unchanged].sort((a, b) => (b.endpoints?.length ?? 0) - (a.endpoints?.length ?? 0));
    while (pending.length > 0) {
      let target: V1EndpointSlice | undefined;
      if (pending.length < max) {
        const idx = fillable.findIndex((s) => max - (s.endpoints?.length ?? 0) >= pending.length);
        if (idx >= 0) {
          target = structuredClone(fillable[idx] as V1EndpointSlice);
          fillable.splice(idx, 1);
          toUpdate.push(target);
        }
      }
      if (!target) {
        target = newSlice(service, group.ports);
        out.create.push(target);
      }
      target.endpoints = target.endpoints ?? [];
      while (pending.length > 0 && target.endpoints.length < max) target.endpoints.push(pending.shift() as V1Endpoint);
    }
    out.update.push(...toUpdate);
  }

  // A Service with no endpoints keeps one empty placeholder slice, so consumers can tell "no
  // endpoints" from "not processed yet".
  if (out.create.length === 0 && mine.every((s) => out.delete.includes(s))) {
    const placeholder = newSlice(service, []);
    const reusable = out.delete.length === 1 ? out.delete[0] : undefined;
    if (reusable && mine.includes(reusable) && (reusable.endpoints?.length ?? 0) === 0 && (reusable.ports?.length ?? 0) === 0 && canonicalJson(reusable.metadata?.labels ?? {}) === labelsKey) {
      out.delete = [];
    } else {
      out.create.push(placeholder);
    }
  }

  // Turn create+delete pairs into updates: one write instead of two, and consumers see no gap.
  for (let i = 0; i < out.delete.length && out.create.length > 0; ) {
    const victim = out.delete[i] as V1EndpointSlice;
    if (victim.addressType === 'IPv4' && isOwnedBy(victim, service)) {
      const fresh = out.create.pop() as V1EndpointSlice;
      const reused = structuredClone(victim);
      reused.metadata = { ...reused.metadata, labels: fresh.metadata?.labels, ownerReferences: fresh.metadata?.ownerReferences };
      reused.ports = fresh.ports;
      reused.endpoints = fresh.endpoints;
      out.update.push(reused);
      out.delete.splice(i, 1);
    } else {
      i++;
    }
  }
  return out;
}
