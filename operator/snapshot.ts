/** The operator's view of the cluster: every object the compile step reads, as plain data. */
import type {
  V1EndpointSlice,
  V1Namespace,
  V1Node,
  V1Pod,
  V1Service,
  V1ServiceAccount,
} from '@kubernetes/client-node';
import {
  DEFAULT_MESH_NAMESPACE,
  type AuthorizationPolicy,
  type HTTPRoute,
  type MeshTLSPolicy,
  type TrafficPolicy,
} from '../crds/index.ts';
import { OperatorError } from './errors.ts';

/**
 * Everything computeNodeState and computeStatuses read. Built-ins use @kubernetes/client-node's types; objects
 * read as raw JSON (YAML, custom objects) carry timestamps as strings, which the compile step accepts too.
 */
export interface Snapshot {
  /** SPIFFE trust domain, e.g. "cluster.local". */
  readonly trustDomain: string;
  /** The mesh's own namespace; policies there without selector are mesh-wide. */
  readonly meshNamespace: string;
  readonly services: readonly V1Service[];
  readonly endpointSlices: readonly V1EndpointSlice[];
  readonly pods: readonly V1Pod[];
  readonly nodes: readonly V1Node[];
  readonly serviceAccounts: readonly V1ServiceAccount[];
  readonly namespaces: readonly V1Namespace[];
  readonly httpRoutes: readonly HTTPRoute[];
  readonly meshTLSPolicies: readonly MeshTLSPolicy[];
  readonly trafficPolicies: readonly TrafficPolicy[];
  readonly authorizationPolicies: readonly AuthorizationPolicy[];
}

/** Options of buildSnapshot. */
export interface SnapshotOptions {
  trustDomain?: string;
  meshNamespace?: string;
}

/** Any Kubernetes object as far as sorting it into a snapshot needs. */
interface KubeObject {
  apiVersion?: string;
  kind?: string;
}

/**
 * Sorts a flat list of objects (from YAML, a list call, a test) into a Snapshot. Unknown kinds are refused
 * so a typo in a fixture does not silently drop an object.
 */
export function buildSnapshot(objects: readonly unknown[], options: SnapshotOptions = {}): Snapshot {
  const s = {
    trustDomain: options.trustDomain ?? 'cluster.local',
    meshNamespace: options.meshNamespace ?? DEFAULT_MESH_NAMESPACE,
    services: [] as V1Service[],
    endpointSlices: [] as V1EndpointSlice[],
    pods: [] as V1Pod[],
    nodes: [] as V1Node[],
    serviceAccounts: [] as V1ServiceAccount[],
    namespaces: [] as V1Namespace[],
    httpRoutes: [] as HTTPRoute[],
    meshTLSPolicies: [] as MeshTLSPolicy[],
    trafficPolicies: [] as TrafficPolicy[],
    authorizationPolicies: [] as AuthorizationPolicy[],
  };
  for (const raw of objects) {
    const o = raw as KubeObject;
    switch (o?.kind) {
      case 'Service': s.services.push(raw as V1Service); break;
      case 'EndpointSlice': s.endpointSlices.push(raw as V1EndpointSlice); break;
      case 'Pod': s.pods.push(raw as V1Pod); break;
      case 'Node': s.nodes.push(raw as V1Node); break;
      case 'ServiceAccount': s.serviceAccounts.push(raw as V1ServiceAccount); break;
      case 'Namespace': s.namespaces.push(raw as V1Namespace); break;
      case 'HTTPRoute': s.httpRoutes.push(raw as HTTPRoute); break;
      case 'MeshTLSPolicy': s.meshTLSPolicies.push(raw as MeshTLSPolicy); break;
      case 'TrafficPolicy': s.trafficPolicies.push(raw as TrafficPolicy); break;
      case 'AuthorizationPolicy': s.authorizationPolicies.push(raw as AuthorizationPolicy); break;
      default:
        throw new OperatorError(
          'NM_ERR_OPERATOR_SNAPSHOT_INVALID',
          `snapshot: object of kind ${JSON.stringify(o?.kind)} (apiVersion ${JSON.stringify(o?.apiVersion)}) is not one the operator reads`,
        );
    }
  }
  return s;
}

/** "namespace/name" of a namespaced object. */
export function keyOf(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

/** Milliseconds since the epoch of a creationTimestamp given as Date or RFC 3339 string; 0 when absent. */
export function creationMillis(o: { metadata?: { creationTimestamp?: Date | string } }): number {
  const t = o.metadata?.creationTimestamp;
  if (t === undefined) return 0;
  const ms = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isFinite(ms) ? ms : 0;
}

/** Orders objects oldest first, then by namespace/name: the rule for every conflict. */
export function compareAge(
  a: { metadata?: { creationTimestamp?: Date | string; namespace?: string; name?: string } },
  b: { metadata?: { creationTimestamp?: Date | string; namespace?: string; name?: string } },
): number {
  const d = creationMillis(a) - creationMillis(b);
  if (d !== 0) return d;
  const ka = keyOf(a);
  const kb = keyOf(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
