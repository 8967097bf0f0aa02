/** Test helper: a golden scenario (multi-document YAML: a `node:` header, then Kubernetes objects) as a ClusterState. */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { ClusterState } from '../plan-datapath.ts';

/** Parses scenario YAML text into a ClusterState. */
export function parseScenario(text: string): ClusterState {
  const state = { nodeName: 'node-1', services: [] as V1Service[], endpointSlices: [] as V1EndpointSlice[], nodes: [] as V1Node[], localPods: [] as V1Pod[] };
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`scenario YAML: ${doc.errors[0]?.message}`);
    const o = doc.toJSON() as { kind?: string; node?: string; spec?: { nodeName?: string } } | null;
    if (!o) continue;
    if (o.node && !o.kind) state.nodeName = o.node;
    else if (o.kind === 'Service') state.services.push(o as V1Service);
    else if (o.kind === 'EndpointSlice') state.endpointSlices.push(o as V1EndpointSlice);
    else if (o.kind === 'Node') state.nodes.push(o as V1Node);
    else if (o.kind === 'Pod') {
      if (o.spec?.nodeName === state.nodeName) state.localPods.push(o as V1Pod);
    } else throw new Error(`scenario YAML: unexpected kind ${String(o.kind)}`);
  }
  return state;
}

/** Reads a scenario file. */
export function loadScenario(path: string): ClusterState {
  return parseScenario(readFileSync(path, 'utf8'));
}

/** A ClusterIP Service with one TCP port, for tests that build state in code. */
export function makeService(ns: string, name: string, clusterIP: string, port: number, extra: Partial<NonNullable<V1Service['spec']>> = {}): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { namespace: ns, name }, spec: { clusterIP, clusterIPs: [clusterIP], ports: [{ port, targetPort: port, protocol: 'TCP' }], ...extra } };
}

/** An EndpointSlice of a Service with ready endpoints (optionally with conditions per address). */
export function makeSlice(ns: string, service: string, port: number, endpoints: Array<string | { ip: string; ready?: boolean; serving?: boolean; terminating?: boolean; node?: string }>, sliceName = `${service}-1`, proto: 'TCP' | 'UDP' = 'TCP'): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { namespace: ns, name: sliceName, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ port, protocol: proto }],
    endpoints: endpoints.map((e) => {
      const x = typeof e === 'string' ? { ip: e } : e;
      return { addresses: [x.ip], conditions: { ready: x.ready ?? true, serving: x.serving ?? x.ready ?? true, terminating: x.terminating ?? false }, ...(x.node ? { nodeName: x.node } : {}) };
    }),
  };
}
