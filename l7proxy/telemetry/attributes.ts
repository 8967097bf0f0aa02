/** Span attribute names and builders: OpenTelemetry HTTP/network semantic conventions plus the mesh's own `nodemesh.*`. */
import type { Attributes } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_NETWORK_TRANSPORT,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';

/** The mesh's attribute names (stable: dashboards and `kubectl mesh` read them). */
export const MESH_ATTR = {
  sourceWorkload: 'nodemesh.source.workload',
  sourceNamespace: 'nodemesh.source.namespace',
  sourceSpiffeId: 'nodemesh.source.spiffe_id',
  destinationWorkload: 'nodemesh.destination.workload',
  destinationService: 'nodemesh.destination.service',
  destinationNamespace: 'nodemesh.destination.namespace',
  destinationSpiffeId: 'nodemesh.destination.spiffe_id',
  route: 'nodemesh.route',
  retryAttempt: 'nodemesh.retry.attempt',
  authzVerdict: 'nodemesh.authz.verdict',
  authzPolicy: 'nodemesh.authz.policy',
  /** Why the proxy answered itself (timeout, circuit breaker, rate limit, no route...). */
  proxyReason: 'nodemesh.proxy.reason',
  tcpBytesSent: 'nodemesh.tcp.bytes_sent',
  tcpBytesReceived: 'nodemesh.tcp.bytes_received',
  /** The node whose proxy made the span (also on the resource; here for backends that drop resources). */
  node: 'nodemesh.node',
} as const;

/** Methods the HTTP conventions know; anything else is recorded as `_OTHER` plus the original. */
const KNOWN_METHODS = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE', 'QUERY']);

/** The request facts every HTTP span carries. Paths are `url.path` only: the query may hold secrets. */
export type HttpRequestInfo = {
  method: string;
  /** Path as forwarded (normalized), without the query. */
  path: string;
  scheme?: 'http' | 'https';
  /** Host the client addressed (authority/Host without port), and the port. */
  serverAddress?: string;
  serverPort?: number;
  /** The other end of this hop's connection. */
  peerAddress?: string;
  peerPort?: number;
  /** Original client address (server spans). */
  clientAddress?: string;
  /** '1.1' or '2'. */
  protocolVersion?: string;
  userAgent?: string;
};

/** Who talks to whom, as the mesh knows it. Values are names, never addresses. */
export type MeshSpanInfo = {
  sourceWorkload?: string;
  sourceNamespace?: string;
  sourceSpiffeId?: string;
  destinationWorkload?: string;
  destinationService?: string;
  destinationNamespace?: string;
  destinationSpiffeId?: string;
  /** `namespace/name` of the HTTPRoute that matched. */
  route?: string;
  /** 1 for the first attempt, 2 for the first retry... */
  retryAttempt?: number;
  authzVerdict?: 'allow' | 'deny' | 'audit';
  authzPolicy?: string;
};

/** Semantic-convention attributes of an HTTP request. */
export function computeHttpAttributes(req: HttpRequestInfo): Attributes {
  const a: Attributes = {};
  // Case-sensitive, as the conventions say: `get` is not GET, and the set stays bounded for backends.
  if (KNOWN_METHODS.has(req.method)) a[ATTR_HTTP_REQUEST_METHOD] = req.method;
  else {
    a[ATTR_HTTP_REQUEST_METHOD] = '_OTHER';
    a[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = req.method;
  }
  a[ATTR_URL_PATH] = req.path;
  if (req.scheme) a[ATTR_URL_SCHEME] = req.scheme;
  if (req.serverAddress) a[ATTR_SERVER_ADDRESS] = req.serverAddress;
  if (req.serverPort !== undefined) a[ATTR_SERVER_PORT] = req.serverPort;
  if (req.peerAddress) a[ATTR_NETWORK_PEER_ADDRESS] = req.peerAddress;
  if (req.peerPort !== undefined) a[ATTR_NETWORK_PEER_PORT] = req.peerPort;
  if (req.clientAddress) a[ATTR_CLIENT_ADDRESS] = req.clientAddress;
  if (req.protocolVersion) a[ATTR_NETWORK_PROTOCOL_VERSION] = req.protocolVersion;
  if (req.userAgent) a[ATTR_USER_AGENT_ORIGINAL] = req.userAgent;
  return a;
}

/** The `nodemesh.*` attributes (and `http.request.resend_count` for a retry). */
export function computeMeshAttributes(m: MeshSpanInfo): Attributes {
  const a: Attributes = {};
  if (m.sourceWorkload) a[MESH_ATTR.sourceWorkload] = m.sourceWorkload;
  if (m.sourceNamespace) a[MESH_ATTR.sourceNamespace] = m.sourceNamespace;
  if (m.sourceSpiffeId) a[MESH_ATTR.sourceSpiffeId] = m.sourceSpiffeId;
  if (m.destinationWorkload) a[MESH_ATTR.destinationWorkload] = m.destinationWorkload;
  if (m.destinationService) a[MESH_ATTR.destinationService] = m.destinationService;
  if (m.destinationNamespace) a[MESH_ATTR.destinationNamespace] = m.destinationNamespace;
  if (m.destinationSpiffeId) a[MESH_ATTR.destinationSpiffeId] = m.destinationSpiffeId;
  if (m.route) a[MESH_ATTR.route] = m.route;
  if (m.retryAttempt !== undefined) {
    a[MESH_ATTR.retryAttempt] = m.retryAttempt;
    // The HTTP conventions count resends: the first attempt has none.
    if (m.retryAttempt > 1) a[ATTR_HTTP_REQUEST_RESEND_COUNT] = m.retryAttempt - 1;
  }
  if (m.authzVerdict) a[MESH_ATTR.authzVerdict] = m.authzVerdict;
  if (m.authzPolicy) a[MESH_ATTR.authzPolicy] = m.authzPolicy;
  return a;
}

/** Attributes of an opaque TCP connection span. */
export function computeConnectionAttributes(c: { peerAddress?: string; peerPort?: number; serverAddress?: string; serverPort?: number }): Attributes {
  const a: Attributes = { [ATTR_NETWORK_TRANSPORT]: 'tcp' };
  if (c.serverAddress) a[ATTR_SERVER_ADDRESS] = c.serverAddress;
  if (c.serverPort !== undefined) a[ATTR_SERVER_PORT] = c.serverPort;
  if (c.peerAddress) a[ATTR_NETWORK_PEER_ADDRESS] = c.peerAddress;
  if (c.peerPort !== undefined) a[ATTR_NETWORK_PEER_PORT] = c.peerPort;
  return a;
}

export { ATTR_HTTP_RESPONSE_STATUS_CODE };
