/**
 * The operator's cache of the cluster: one informer per kind it reads (the mesh kinds, NodeStates, and the
 * Services, EndpointSlices, Pods, Nodes, ServiceAccounts and Namespaces they refer to), and the Snapshot
 * built from it for each reconcile. Every change is passed on (the reconciler coalesces them).
 */
import {
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Namespace,
  type V1Node,
  type V1Pod,
  type V1Service,
  type V1ServiceAccount,
} from '@kubernetes/client-node';
import {
  AuthorizationPolicyResource,
  HTTPRouteResource,
  MeshTLSPolicyResource,
  NodeStateResource,
  TrafficPolicyResource,
  type AuthorizationPolicy,
  type HTTPRoute,
  type MeshTLSPolicy,
  type NodeState,
  type TrafficPolicy,
} from '../crds/index.ts';
import type { BackoffOptions } from './backoff.ts';
import type { RuntimeClock } from './clock.ts';
import type { UserKind } from './compile-mesh.ts';
import type { KubeRest } from './kube-rest.ts';
import { InformerGroup, ResilientInformer, type ChangeType, type InformerState } from './informers.ts';
import type { OperatorLogger } from './logger.ts';
import type { Snapshot } from './snapshot.ts';

/** API coordinates of a custom kind. */
interface CustomResource {
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

/** The informers, by the snapshot field they fill. */
export interface CacheInformers {
  services: ResilientInformer<V1Service>;
  endpointSlices: ResilientInformer<V1EndpointSlice>;
  pods: ResilientInformer<V1Pod>;
  nodes: ResilientInformer<V1Node>;
  serviceAccounts: ResilientInformer<V1ServiceAccount>;
  namespaces: ResilientInformer<V1Namespace>;
  httpRoutes: ResilientInformer<HTTPRoute & KubernetesObject>;
  meshTLSPolicies: ResilientInformer<MeshTLSPolicy & KubernetesObject>;
  trafficPolicies: ResilientInformer<TrafficPolicy & KubernetesObject>;
  authorizationPolicies: ResilientInformer<AuthorizationPolicy & KubernetesObject>;
  nodeStates: ResilientInformer<NodeState & KubernetesObject>;
}

/** Options of ClusterCache. */
export interface ClusterCacheOptions {
  rest: KubeRest;
  log: OperatorLogger;
  trustDomain: string;
  meshNamespace: string;
  /** Called on every add/update/delete, with the informer's name and the object. */
  onChange: (informer: keyof CacheInformers, type: ChangeType, obj: unknown) => void;
  /** Called when an informer turns healthy or unhealthy. */
  onHealth?: () => void;
  clock?: RuntimeClock;
  backoff?: BackoffOptions;
  probeIntervalMs?: number;
  watchTimeoutSeconds?: number;
}

/** Informers and snapshots. */
export class ClusterCache {
  readonly informers: CacheInformers;
  readonly group: InformerGroup;
  readonly #trustDomain: string;
  readonly #meshNamespace: string;

  constructor(o: ClusterCacheOptions) {
    this.#trustDomain = o.trustDomain;
    this.#meshNamespace = o.meshNamespace;
    this.group = new InformerGroup(o.rest, { log: o.log, clock: o.clock, probeIntervalMs: o.probeIntervalMs });
    const make = <T extends KubernetesObject>(name: keyof CacheInformers, path: string, labelSelector?: string): ResilientInformer<T> =>
      this.group.add(new ResilientInformer<T>(o.rest, { name, path, list: () => o.rest.list<T>(path), labelSelector }, {
        log: o.log,
        clock: o.clock,
        backoff: o.backoff,
        watchTimeoutSeconds: o.watchTimeoutSeconds,
        onChange: (type, obj) => o.onChange(name, type, obj),
        onState: o.onHealth,
      }));
    const customPath = (r: CustomResource): string => `/apis/${r.group}/${r.version}/${r.plural}`;
    // Objects stay raw JSON (timestamps as strings), which the snapshot and compile accept.
    this.informers = {
      services: make('services', '/api/v1/services'),
      endpointSlices: make('endpointSlices', '/apis/discovery.k8s.io/v1/endpointslices'),
      pods: make('pods', '/api/v1/pods'),
      nodes: make('nodes', '/api/v1/nodes'),
      serviceAccounts: make('serviceAccounts', '/api/v1/serviceaccounts'),
      namespaces: make('namespaces', '/api/v1/namespaces'),
      httpRoutes: make('httpRoutes', customPath(HTTPRouteResource)),
      meshTLSPolicies: make('meshTLSPolicies', customPath(MeshTLSPolicyResource)),
      trafficPolicies: make('trafficPolicies', customPath(TrafficPolicyResource)),
      authorizationPolicies: make('authorizationPolicies', customPath(AuthorizationPolicyResource)),
      nodeStates: make('nodeStates', customPath(NodeStateResource)),
    };
  }

  /** Starts every informer. */
  start(): void {
    this.group.start();
  }

  /** Stops every informer. */
  stop(): Promise<void> {
    return this.group.stop();
  }

  /** Every initial list has completed. */
  allSynced(): boolean {
    return this.group.allSynced();
  }

  /** Informers not healthy now. */
  unhealthy(): string[] {
    return this.group.unhealthy();
  }

  /** Informer states for /status. */
  states(): InformerState[] {
    return this.group.states();
  }

  /** The snapshot computeNodeState and computeStatuses read, from the caches as they are now. */
  snapshot(): Snapshot {
    const i = this.informers;
    return {
      trustDomain: this.#trustDomain,
      meshNamespace: this.#meshNamespace,
      services: i.services.list(),
      endpointSlices: i.endpointSlices.list(),
      pods: i.pods.list(),
      nodes: i.nodes.list(),
      serviceAccounts: i.serviceAccounts.list(),
      namespaces: i.namespaces.list(),
      httpRoutes: i.httpRoutes.list(),
      meshTLSPolicies: i.meshTLSPolicies.list(),
      trafficPolicies: i.trafficPolicies.list(),
      authorizationPolicies: i.authorizationPolicies.list(),
    };
  }

  /** Stored NodeStates. */
  nodeStates(): readonly NodeState[] {
    return this.informers.nodeStates.list();
  }

  /** A user object as cached. */
  userObject(kind: UserKind, namespace: string, name: string): (HTTPRoute | MeshTLSPolicy | TrafficPolicy | AuthorizationPolicy) | undefined {
    switch (kind) {
      case 'HTTPRoute': return this.informers.httpRoutes.get(name, namespace);
      case 'MeshTLSPolicy': return this.informers.meshTLSPolicies.get(name, namespace);
      case 'TrafficPolicy': return this.informers.trafficPolicies.get(name, namespace);
      case 'AuthorizationPolicy': return this.informers.authorizationPolicies.get(name, namespace);
    }
  }

  /** Names of the informers holding user kinds, by kind. */
  static readonly USER_INFORMERS: Record<UserKind, keyof CacheInformers> = {
    HTTPRoute: 'httpRoutes',
    MeshTLSPolicy: 'meshTLSPolicies',
    TrafficPolicy: 'trafficPolicies',
    AuthorizationPolicy: 'authorizationPolicies',
  };
}

/** API coordinates of each user kind (for status writes). */
export const USER_RESOURCES: Record<UserKind, CustomResource> = {
  HTTPRoute: HTTPRouteResource,
  MeshTLSPolicy: MeshTLSPolicyResource,
  TrafficPolicy: TrafficPolicyResource,
  AuthorizationPolicy: AuthorizationPolicyResource,
};
