/**
 * What the proxy reports once per finished request and per closed opaque TCP connection. One record feeds the
 * agent's metrics and the access log; the proxy builds it from facts it already has, after the response.
 */

/** A workload as the mesh names it (never an address: these become metric labels). */
export type PeerName = {
  /** Workload name (the pod's owner, e.g. Deployment name), or '' when unknown (unauthenticated). */
  workload: string;
  namespace: string;
  /** SPIFFE ID when the peer is authenticated. */
  spiffeId?: string;
};

/** One HTTP request (all attempts together), as seen by one proxy. */
export type RequestRecord = {
  /** outbound: this proxy sent it for a local client (source node); inbound: received for a local pod (destination node). */
  direction: 'outbound' | 'inbound';
  /** Epoch milliseconds when the request head arrived. */
  startMs: number;
  durationSeconds: number;
  protocol: 'http1' | 'http2' | 'websocket';
  method: string;
  /** Status sent to the client; 0 when the connection broke before any response. */
  code: number;
  source: PeerName;
  destination: { service: string; namespace: string; workload?: string };
  /** `namespace/name` of the HTTPRoute that matched, '' when none (default backend). */
  route: string;
  /** Request and response body bytes (not headers). */
  requestBytes: number;
  responseBytes: number;
  /** Attempts made upstream (1 = no retry; 0 = refused before any attempt). */
  attempts: number;
  /** Set when the proxy answered itself. */
  refusal?: 'timeout_request' | 'timeout_backend_request' | 'circuit_breaker' | 'rate_limit' | 'authz_denied' | 'no_route' | 'no_endpoint' | 'fault_abort' | 'malformed' | 'other';
  /** Authorization decision on the destination node (absent when no policy applies). */
  authz?: { verdict: 'allow' | 'deny' | 'audit'; policy: string };
  /** Access-log-only facts: never metric labels (unbounded values). */
  path: string;
  authority?: string;
  peerAddress?: string;
  userAgent?: string;
  traceId?: string;
  spanId?: string;
};

/** One opaque TCP connection through the proxy, reported when it closes. */
export type ConnectionRecord = {
  direction: 'outbound' | 'inbound';
  startMs: number;
  durationSeconds: number;
  source: PeerName;
  destination: { service: string; namespace: string; workload?: string };
  /** Bytes the proxy sent to the client side and received from it. */
  bytesSent: number;
  bytesReceived: number;
  /** How it ended. */
  outcome: 'closed' | 'denied' | 'connect_failed' | 'reset';
  authz?: { verdict: 'allow' | 'deny' | 'audit'; policy: string };
  peerAddress?: string;
  traceId?: string;
};

/** Where the proxy hands its records; the agent plugs in metrics and the access log. Must not throw or block. */
export type TelemetrySink = {
  /** A TCP connection was accepted and attributed (for the opened counter). */
  connectionOpened(r: Pick<ConnectionRecord, 'direction' | 'source' | 'destination'>): void;
  connectionClosed(r: ConnectionRecord): void;
  requestFinished(r: RequestRecord): void;
};
