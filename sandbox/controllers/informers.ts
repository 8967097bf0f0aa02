/** The shared informer caches every controller reads: one list+watch per resource, started once. */
import type { V1Deployment, V1EndpointSlice, V1Node, V1Pod, V1ReplicaSet, V1Service } from '@kubernetes/client-node';
import { endpointSliceControllerName, managedByLabel } from './compute-endpoint-slices.ts';
import { InformerCache } from './informer-cache.ts';
import type { KubeClients } from './kube-api.ts';

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
  return {
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
}

/** Every informer as a list, for starting, waiting and stopping together. */
export function allInformers(i: Informers): Array<{ name: string; cache: InformerCache<never> }> {
  return Object.entries(i).map(([name, cache]) => ({ name, cache: cache as InformerCache<never> }));
}
