/** The shared informer caches every controller reads: one list+watch per resource, started once. */
import type { V1Deployment, V1EndpointSlice, V1Node, V1Pod, V1ReplicaSet, V1Service } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import { endpointSliceControllerName, managedByLabel, serviceNameLabel } from './compute-endpoint-slices.ts';
import { InformerCache } from './informer-cache.ts';
import type { KubeClients } from './kube-api.ts';
import { matchLabelMap } from './label-selector.ts';
import { controllerRefOf } from './object-meta.ts';

/** Index of objects by each of their labels: value `ns<NUL>key=value`. */
export const byLabel = 'label';
/** Index of objects by their controller's uid. */
export const byOwner = 'owner';
/** Index of Services by each pair of their selector: value `ns<NUL>key=value`. */
export const bySelector = 'selector';
/** Index of EndpointSlices by their Service: value `ns/name`. */
export const byService = 'service';
/** Index of pods by node name. */
export const byNode = 'node';

/** The index value of one label pair in a namespace. */
export function labelPairKey(namespace: string | undefined, key: string, value: string): string {
  return `${namespace ?? ''}\0${key}=${value}`;
}

function labelPairs(obj: KubernetesObject): string[] {
  return Object.entries(obj.metadata?.labels ?? {}).map(([k, v]) => labelPairKey(obj.metadata?.namespace, k, v));
}

function ownerUid(obj: KubernetesObject): string[] {
  const uid = controllerRefOf(obj)?.uid;
  return uid ? [uid] : [];
}

/**
 * Objects of `namespace` whose labels carry every pair of `selector`, looked up through the label
 * index by the rarest pair rather than by scanning the namespace. An empty selector matches all.
 */
export function selectByLabels<T extends KubernetesObject>(cache: InformerCache<T>, namespace: string | undefined, selector: Readonly<Record<string, string>>): T[] {
  const pairs = Object.entries(selector);
  if (pairs.length === 0) return [...cache.list(namespace)];
  let best = labelPairKey(namespace, pairs[0]?.[0] ?? '', pairs[0]?.[1] ?? '');
  for (const [k, v] of pairs) {
    const key = labelPairKey(namespace, k, v);
    if (cache.indexSize(byLabel, key) < cache.indexSize(byLabel, best)) best = key;
  }
  return cache.byIndex(byLabel, best).filter((o) => matchLabelMap(selector, o.metadata?.labels));
}

/** The caches, by resource. */
export interface Informers {
  pods: InformerCache<V1Pod>;
  nodes: InformerCache<V1Node>;
  services: InformerCache<V1Service>;
  /** Only the slices this controller manages (label selector), so a cluster's others cost nothing. */
  endpointSlices: InformerCache<V1EndpointSlice>;
  replicaSets: InformerCache<V1ReplicaSet>;
  deployments: InformerCache<V1Deployment>;
}

/** Creates (does not start) the informers. */
export function makeInformers(clients: KubeClients, log: (line: string) => void): Informers {
  const { kc, core, apps, discovery } = clients;
  const sliceSelector = `${managedByLabel}=${endpointSliceControllerName}`;
  const informers: Informers = {
    pods: new InformerCache<V1Pod>({ kc, path: '/api/v1/pods', list: () => core.listPodForAllNamespaces(), log }),
    nodes: new InformerCache<V1Node>({ kc, path: '/api/v1/nodes', list: () => core.listNode(), log }),
    services: new InformerCache<V1Service>({ kc, path: '/api/v1/services', list: () => core.listServiceForAllNamespaces(), log }),
    endpointSlices: new InformerCache<V1EndpointSlice>({
      kc,
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      list: () => discovery.listEndpointSliceForAllNamespaces({ labelSelector: sliceSelector }),
      labelSelector: sliceSelector,
      log,
    }),
    replicaSets: new InformerCache<V1ReplicaSet>({ kc, path: '/apis/apps/v1/replicasets', list: () => apps.listReplicaSetForAllNamespaces(), log }),
    deployments: new InformerCache<V1Deployment>({ kc, path: '/apis/apps/v1/deployments', list: () => apps.listDeploymentForAllNamespaces(), log }),
  };
  informers.pods.addIndex(byLabel, labelPairs);
  informers.pods.addIndex(byOwner, ownerUid);
  informers.pods.addIndex(byNode, (p) => (p.spec?.nodeName ? [p.spec.nodeName] : []));
  informers.replicaSets.addIndex(byLabel, labelPairs);
  informers.replicaSets.addIndex(byOwner, ownerUid);
  informers.services.addIndex(bySelector, (svc) => Object.entries(svc.spec?.selector ?? {}).map(([k, v]) => labelPairKey(svc.metadata?.namespace, k, v)));
  informers.endpointSlices.addIndex(byService, (s) => {
    const svc = s.metadata?.labels?.[serviceNameLabel];
    return svc ? [`${s.metadata?.namespace ?? ''}/${svc}`] : [];
  });
  return informers;
}

/** Every informer as a list, for starting, waiting and stopping together. */
export function allInformers(i: Informers): Array<{ name: string; cache: InformerCache<never> }> {
  return Object.entries(i).map(([name, cache]) => ({ name, cache: cache as InformerCache<never> }));
}
