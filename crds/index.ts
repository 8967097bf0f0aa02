/** The nodemesh CRDs: API coordinates, generated types and where the YAML manifests live. */
import { fileURLToPath } from 'node:url';
import {
  AuthorizationPolicyResource,
  HTTPRouteResource,
  MeshTLSPolicyResource,
  NodeStateResource,
  TrafficPolicyResource,
} from './types.generated.ts';

export * from './types.generated.ts';

/** Directory of the CRD YAML files (the sandbox registers them; deploy/ installs them). */
export const CRD_DIRECTORY = fileURLToPath(new URL('.', import.meta.url));

/** The CRD manifest files, one per kind. */
export const CRD_FILES = [
  'httproutes.gateway.networking.k8s.io.yaml',
  'meshtlspolicies.nodemesh.io.yaml',
  'trafficpolicies.nodemesh.io.yaml',
  'authorizationpolicies.nodemesh.io.yaml',
  'nodestates.nodemesh.io.yaml',
] as const;

/** Every kind's API coordinates, for informers and clients. */
export const MESH_RESOURCES = [
  HTTPRouteResource,
  MeshTLSPolicyResource,
  TrafficPolicyResource,
  AuthorizationPolicyResource,
  NodeStateResource,
] as const;

/** The controllerName nodemesh writes into HTTPRoute status.parents. */
export const CONTROLLER_NAME = 'nodemesh.io/operator';

/** The namespace the mesh runs in; a MeshTLSPolicy or AuthorizationPolicy here without selector is mesh-wide. */
export const DEFAULT_MESH_NAMESPACE = 'nodemesh-system';

/** Largest serialized NodeState object the operator writes (bytes of JSON). */
export const NODESTATE_MAX_BYTES = 512 * 1024;

/** Label carrying the node name (or, when too long for a label, a hash of it) on every NodeState. */
export const NODESTATE_NODE_LABEL = 'nodemesh.io/node';
