/**
 * The bridge between the proxy's request path and telemetry: per request a span (CLIENT on the source node's
 * outbound side, SERVER on the destination node's inbound side) parented on the incoming trace context and
 * injected into what is forwarded, and per request or opaque TCP connection one record for the agent's metrics
 * and access log. The request path calls it through two small hooks (forward.ts, proxy.ts) and never waits on it.
 */
// Label rule (records become metric labels): the source workload is the peer's service account (the identity the
// mesh verified), the destination is the Service the client dialled on the source side and the local workload on
// the destination side; never an address or a path.
import type { AccessLogEntry } from '../stats.ts';
import type { HeaderBag } from './propagation.ts';
import type { ConnectionRecord, PeerName, RequestRecord, TelemetrySink } from './records.ts';
import type { MeshTracer } from './tracer.ts';

/** A source as the proxy knows it (forward.ts SourceIdentity). */
type Source = { spiffeId: string; namespace: string; serviceAccount: string } | undefined;

/** Per-connection facts the hooks read (forward.ts ConnContext has them). */
export type ConnFacts = { remoteAddress: string; source: Source; dstKey: string; dstPort: number };

/** Per-request facts the hooks read (forward.ts Exchange has them). */
export type RequestFacts = { protocol: 'http1' | 'http2'; method: string; target: string; rawHeaders: string[] };

/** What routing decided (forward.ts Prepared), or why the proxy refused (forward.ts Refusal). */
export type RouteFacts =
  | { service: { config: { name: string }; policies: readonly unknown[] }; path: string; authority: string; candidate: { routeName: string } | undefined }
  | { status: number; reason: string; kind: string };

/** Services of the snapshot in force (to name the destination of a refused request). */
export type SnapshotFacts = { services: ReadonlyMap<string, { config: { name: string } }> };

/** One upstream attempt of a request whose route allows retries: a CLIENT span under the request's span. */
export type AttemptObserver = {
  /** The attempt ended: the upstream's status, or none (connect failure, reset, per-try timeout) and why. */
  end(statusCode: number | undefined, errorReason?: string): void;
};

/** The tunnelled part of an upgraded request (WebSocket): an L4-style span from the 101 to the close. */
export type TunnelObserver = {
  end(r: { bytesSent: number; bytesReceived: number }): void;
};

/** One request in flight: inject the span into the forwarded headers, end it with what the access log sees. */
export type RequestObserver = {
  /**
   * Body bytes counted by the request path as they pass (never buffered for this): from the client, and to it.
   * Plain fields so the relay adds with one `+=` per chunk.
   */
  requestBytes: number;
  responseBytes: number;
  /** Replaces the trace headers in `headers` (a flat `[name, value, ...]` list about to be sent upstream). */
  inject(headers: string[]): void;
  /**
   * Attempt `n` (1-based) is about to be sent to `endpoint`: starts its CLIENT span under this request's span and
   * writes the attempt's context into `headers` (so the next hop parents on the attempt that reached it).
   */
  attempt(n: number, endpoint: string, headers: string[]): AttemptObserver;
  /** The upstream switched protocols: the tunnel that follows gets its own span, a child of this request's. */
  tunnel(): TunnelObserver;
  /** The request ended (once; later calls are ignored). */
  end(entry: AccessLogEntry): void;
};

/** One opaque TCP connection through the proxy. */
export type ConnectionObserver = {
  /** Trace headers for the tunnel request that carries the connection to the other node (HBONE CONNECT). */
  headers(): Record<string, string>;
  end(r: { outcome: ConnectionRecord['outcome']; bytesSent: number; bytesReceived: number }): void;
};

/** The hooks a NodeProxy calls (ForwardDeps.telemetry); undefined results mean "not observed". */
export type RequestTelemetry = {
  request(conn: ConnFacts, req: RequestFacts, route: RouteFacts, snap: SnapshotFacts): RequestObserver | undefined;
  connection(conn: ConnFacts, service: string, verdict: { verdict: 'allow' | 'deny'; policy?: string }, traceHeaders: Record<string, string> | undefined): ConnectionObserver | undefined;
};

/** Options of createRequestTelemetry. */
export type RequestTelemetryOptions = {
  /** outbound: this proxy sends for local clients (CLIENT spans, reporter=source); inbound: receives for local pods. */
  direction: 'outbound' | 'inbound';
  /** The tracer in force now (it may be replaced when the mesh settings change). */
  tracer: () => MeshTracer;
  sink: TelemetrySink;
  /** Local workload behind a pod address (inbound: the destination workload). */
  localWorkload?: (ip: string) => { workload: string; namespace: string } | undefined;
  now?: () => number;
};

const TRACE_HEADER_NAMES = new Set(['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags']);

/** The trace headers of a flat raw header list (only those: a request may carry a hundred others). */
export function pickTraceHeaders(raw: readonly string[]): HeaderBag {
  const bag: HeaderBag = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const c = name.charCodeAt(0) | 0x20;
    // traceparent/tracestate, b3, x-b3-*: a first-letter test keeps the scan cheap.
    if (c !== 0x74 && c !== 0x62 && c !== 0x78) continue;
    const lower = name.toLowerCase();
    if (!TRACE_HEADER_NAMES.has(lower)) continue;
    const prev = bag[lower];
    bag[lower] = prev === undefined ? raw[i + 1]! : Array.isArray(prev) ? [...prev, raw[i + 1]!] : [String(prev), raw[i + 1]!];
  }
  return bag;
}

/** Replaces the trace headers of a flat list with those of `bag` (names as the propagator wrote them). */
export function replaceTraceHeaders(headers: string[], bag: HeaderBag): void {
  const names = Object.keys(bag);
  if (names.length === 0) return;
  const drop = new Set(names);
  if (drop.has('traceparent')) drop.add('tracestate');
  let w = 0;
  for (let r = 0; r < headers.length; r += 2) {
    if (drop.has(headers[r]!.toLowerCase())) continue;
    headers[w] = headers[r]!;
    headers[w + 1] = headers[r + 1]!;
    w += 2;
  }
  headers.length = w;
  for (const n of names) {
    const v = bag[n];
    if (v === undefined) continue;
    headers.push(n, Array.isArray(v) ? v.join(',') : String(v));
  }
}

/** `namespace/name:port` (the proxy's service names) → namespace and name. */
export function splitServiceName(name: string): { namespace: string; name: string } {
  const slash = name.indexOf('/');
  const colon = name.lastIndexOf(':');
  const ns = slash > 0 ? name.slice(0, slash) : '';
  const bare = name.slice(slash + 1, colon > slash ? colon : undefined);
  return { namespace: ns, name: bare };
}

/**
 * The workload of a pod name: the Deployment's name without the ReplicaSet hash and pod suffix
 * (`echo-v1-5d8f7b9c4-x2kqp` → `echo-v1`), a ReplicaSet/Job pod without its suffix; other names as they are.
 * Pod names must never become labels (one series per pod); this bounds them by owner.
 */
export function computeWorkloadName(pod: string): string {
  const dep = DEPLOYMENT_POD.exec(pod);
  if (dep) return dep[1]!;
  return pod;
}

/** A Deployment's pod name: owner, ReplicaSet hash, pod suffix (both drawn from Kubernetes' safe alphabet). */
const DEPLOYMENT_POD = /^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$/;

/** The peer name of an unauthenticated source (shared: records are read, never written, by their consumers). */
const UNAUTHENTICATED_PEER: PeerName = { workload: '', namespace: '' };
/** Peer names by source (one per connection, often one per pod): every record of a connection shares one. */
const peerNames = new WeakMap<NonNullable<Source>, PeerName>();

function peerOf(source: Source): PeerName {
  if (!source) return UNAUTHENTICATED_PEER;
  let p = peerNames.get(source);
  if (p === undefined || p.workload !== source.serviceAccount || p.namespace !== source.namespace || p.spiffeId !== source.spiffeId) {
    p = { workload: source.serviceAccount, namespace: source.namespace, spiffeId: source.spiffeId };
    peerNames.set(source, p);
  }
  return p;
}

/** Why the proxy answered itself, from the access-log entry (bounded values for the metrics). */
export function classifyRefusal(entry: Pick<AccessLogEntry, 'status' | 'reason' | 'forwarded'>, kind?: string): RequestRecord['refusal'] {
  const r = entry.reason ?? '';
  if (kind === 'policy') return 'authz_denied';
  if (kind === 'malformed' || kind === 'tooLarge' || kind === 'target') return 'malformed';
  if (kind === 'route' && entry.status === 404) return 'no_route';
  if (r === 'request timeout') return 'timeout_request';
  if (r.startsWith('backend request timeout')) return 'timeout_backend_request';
  if (r.startsWith('upstream overloaded')) return 'circuit_breaker';
  if (entry.status === 429 && r.startsWith('local rate limit')) return 'rate_limit';
  if (r === 'fault filter abort') return 'fault_abort';
  if (r.includes('has no ready endpoint')) return 'no_endpoint';
  if (!entry.forwarded && entry.status >= 400 && r !== '') return 'other';
  return undefined;
}

/** The deciding policy's name in an authorize() reason (`denied by shop/deny-admin rule 0`). */
function policyOfReason(reason: string): string {
  const m = /^(?:denied|allowed) by (\S+) rule/.exec(reason);
  return m ? m[1]! : 'default-deny';
}

/** Start facts of a request's span (tracer.ts HttpSpanStart). */
type SpanInfo = Parameters<MeshTracer['startClientSpan']>[0] & { peerAddress: string; protocolVersion: string };

/** What a disabled tracer is handed instead of start facts it would ignore. */
const UNUSED_SPAN_INFO: SpanInfo = Object.freeze({ method: '', path: '', scheme: 'http', peerAddress: '', protocolVersion: '1.1' }) as SpanInfo;

/** Distinct service names remembered per hook set before the memo starts afresh. */
const NAME_CACHE_LIMIT = 4096;

/** Makes the hooks of one NodeProxy (outbound or inbound side). */
export function createRequestTelemetry(o: RequestTelemetryOptions): RequestTelemetry {
  const now = o.now ?? Date.now;
  const outbound = o.direction === 'outbound';
  // Service names repeat on every request: their split (and on the inbound side the owner derived from the pod
  // name) is worked out once per name. Bounded: a config churning through names starts the cache afresh.
  // The destination object is shared by the records of one name (consumers read records, never write them).
  const names = new Map<string, { namespace: string; destination: RequestRecord['destination'] }>();
  const nameFacts = (serviceName: string): { namespace: string; destination: RequestRecord['destination'] } => {
    let f = names.get(serviceName);
    if (f === undefined) {
      if (names.size >= NAME_CACHE_LIMIT) names.clear();
      const s = splitServiceName(serviceName);
      // Inbound services are named after the local pod: its owner names the destination.
      const owner = outbound ? '' : computeWorkloadName(s.name);
      f = { namespace: s.namespace, destination: outbound ? { service: s.name, namespace: s.namespace } : { service: owner, namespace: s.namespace, workload: owner } };
      names.set(serviceName, f);
    }
    return f;
  };
  const destinationOf = (serviceName: string, dstKey: string): RequestRecord['destination'] => {
    const f = nameFacts(serviceName);
    if (outbound || !o.localWorkload) return f.destination;
    // The agent's record of the local pod, when it has one, names the destination workload.
    const local = o.localWorkload(dstKey.slice(0, dstKey.lastIndexOf(':')));
    if (!local) return f.destination;
    return { service: local.workload, namespace: local.namespace, workload: local.workload };
  };

  return {
    request(conn, req, route, snap) {
      const startMs = now();
      const tracer = o.tracer();
      const refused = 'status' in route;
      const serviceName = refused ? (snap.services.get(conn.dstKey)?.config.name ?? '') : route.service.config.name;
      const destination = destinationOf(serviceName, conn.dstKey);
      const source = peerOf(conn.source);
      const routeName = refused ? '' : (route.candidate?.routeName ?? '');
      const path = refused ? req.target.split('?')[0]! : route.path;
      const authz: RequestRecord['authz'] | undefined = refused
        ? (route.kind === 'policy' ? { verdict: 'deny', policy: policyOfReason(route.reason) } : undefined)
        : (!outbound && route.service.policies.length > 0 ? { verdict: 'allow', policy: '' } : undefined);
      const parent = tracer.extract(pickTraceHeaders(req.rawHeaders));
      // The span's start facts, built only for a tracer that records them (a disabled one ignores them; attempts and
      // tunnels build them on first use).
      let info: SpanInfo | undefined;
      const infoOf = (): SpanInfo => {
        if (info !== undefined) return info;
        const colon = conn.dstKey.lastIndexOf(':');
        info = {
          method: req.method, path, scheme: 'http' as const,
          serverAddress: refused ? undefined : route.authority.replace(/:\d+$/, ''),
          serverPort: conn.dstPort,
          peerAddress: outbound ? conn.dstKey.slice(0, colon) : conn.remoteAddress,
          ...(outbound ? {} : { clientAddress: conn.remoteAddress }),
          protocolVersion: req.protocol === 'http2' ? '2' : '1.1',
          mesh: {
            ...(source.workload ? { sourceWorkload: source.workload, sourceNamespace: source.namespace, sourceSpiffeId: source.spiffeId } : {}),
            destinationService: destination.service, destinationNamespace: destination.namespace,
            ...(destination.workload ? { destinationWorkload: destination.workload } : {}),
            ...(routeName ? { route: routeName } : {}),
            ...(authz ? { authzVerdict: authz.verdict, ...(authz.policy ? { authzPolicy: authz.policy } : {}) } : {}),
          },
        };
        return info;
      };
      const startInfo = tracer.enabled ? infoOf() : UNUSED_SPAN_INFO;
      const span = outbound ? tracer.startClientSpan(startInfo, parent) : tracer.startServerSpan(startInfo, parent);
      let ended = false;
      const observer: RequestObserver = {
        requestBytes: 0,
        responseBytes: 0,
        inject(headers) {
          const bag: HeaderBag = {};
          span.inject(bag);
          replaceTraceHeaders(headers, bag);
        },
        attempt(n, endpoint, headers) {
          const ep = splitHostPort(endpoint);
          const info = infoOf();
          const child = tracer.startClientSpan({
            method: req.method, path, scheme: 'http', ...(info.serverAddress ? { serverAddress: info.serverAddress } : {}), serverPort: conn.dstPort,
            peerAddress: ep.host, ...(ep.port !== undefined ? { peerPort: ep.port } : {}), protocolVersion: info.protocolVersion,
            mesh: { ...info.mesh, retryAttempt: n },
          }, span.context);
          const bag: HeaderBag = {};
          child.inject(bag);
          replaceTraceHeaders(headers, bag);
          return { end: (statusCode, errorReason) => child.end(statusCode !== undefined ? { statusCode } : { errorType: 'attempt_failed', reason: errorReason ?? 'no response' }) };
        },
        tunnel() {
          const info = infoOf();
          const t = tracer.startConnectionSpan({ direction: o.direction, ...(outbound ? { serverAddress: info.peerAddress, serverPort: conn.dstPort } : { peerAddress: conn.remoteAddress }), mesh: info.mesh }, span.context);
          // The tunnel is a connection through the proxy: it counts as one in the TCP metrics (bytes included).
          const tunnelStart = now();
          o.sink.connectionOpened({ direction: o.direction, source, destination });
          let done = false;
          return {
            end: (r) => {
              if (done) return;
              done = true;
              t.end(r);
              o.sink.connectionClosed({
                direction: o.direction, startMs: tunnelStart, durationSeconds: Math.max(0, now() - tunnelStart) / 1000, source, destination,
                bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, outcome: 'closed', peerAddress: conn.remoteAddress, ...(t.sampled ? { traceId: t.traceId } : {}),
              });
            },
          };
        },
        end(entry) {
          if (ended) return;
          ended = true;
          const refusal = classifyRefusal(entry, refused ? route.kind : undefined);
          if (entry.attempts > 0) span.setMesh({ retryAttempt: entry.attempts });
          span.setBodySizes(observer.requestBytes, observer.responseBytes);
          span.end(entry.status > 0 ? { statusCode: entry.status, ...(refusal ? { reason: refusal } : {}) } : { errorType: 'reset', reason: entry.reason ?? 'no response' });
          // Optional fields are set only when present (absent, not undefined: records are compared and serialized).
          const record: RequestRecord = {
            direction: o.direction, startMs, durationSeconds: Math.max(0, entry.durationMs) / 1000,
            protocol: entry.protocol, method: req.method, code: entry.status, source, destination, route: routeName,
            requestBytes: observer.requestBytes, responseBytes: observer.responseBytes, attempts: entry.attempts,
            path, peerAddress: conn.remoteAddress,
          };
          if (refusal) record.refusal = refusal;
          if (authz) record.authz = authz;
          if (entry.authority) record.authority = entry.authority;
          if (span.sampled) { record.traceId = span.traceId; record.spanId = span.spanId; }
          o.sink.requestFinished(record);
        },
      };
      return observer;
    },

    connection(conn, service, verdict, traceHeaders) {
      const startMs = now();
      const tracer = o.tracer();
      const destination = destinationOf(service, conn.dstKey);
      const source = peerOf(conn.source);
      const colon = conn.dstKey.lastIndexOf(':');
      const authz: ConnectionRecord['authz'] | undefined = verdict.verdict === 'deny' ? { verdict: 'deny', policy: verdict.policy ?? 'default-deny' } : undefined;
      const span = tracer.startConnectionSpan({
        direction: o.direction,
        ...(outbound ? { serverAddress: conn.dstKey.slice(0, colon), serverPort: conn.dstPort } : { peerAddress: conn.remoteAddress }),
        mesh: {
          ...(source.workload ? { sourceWorkload: source.workload, sourceNamespace: source.namespace, sourceSpiffeId: source.spiffeId } : {}),
          destinationService: destination.service, destinationNamespace: destination.namespace,
          ...(authz ? { authzVerdict: authz.verdict, authzPolicy: authz.policy } : {}),
        },
      }, traceHeaders ? tracer.extract(traceHeaders) : undefined);
      if (verdict.verdict === 'allow') o.sink.connectionOpened({ direction: o.direction, source, destination });
      let ended = false;
      return {
        headers() {
          const bag: HeaderBag = {};
          span.inject(bag);
          const out: Record<string, string> = {};
          for (const [k, v] of Object.entries(bag)) if (v !== undefined) out[k] = String(v);
          return out;
        },
        end(r) {
          if (ended) return;
          ended = true;
          const errorType = r.outcome === 'closed' ? undefined : r.outcome;
          span.end({ bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, ...(errorType ? { errorType, reason: errorType } : {}) });
          o.sink.connectionClosed({
            direction: o.direction, startMs, durationSeconds: Math.max(0, now() - startMs) / 1000, source, destination,
            bytesSent: r.bytesSent, bytesReceived: r.bytesReceived, outcome: r.outcome, ...(authz ? { authz } : {}),
            peerAddress: conn.remoteAddress, ...(span.sampled ? { traceId: span.traceId } : {}),
          });
        },
      };
    },
  };
}

/** `10.0.0.1:8080` or `[fd00::1]:8080` → host and port. */
function splitHostPort(key: string): { host: string; port: number | undefined } {
  const colon = key.lastIndexOf(':');
  if (colon <= 0) return { host: key, port: undefined };
  const port = Number(key.slice(colon + 1));
  return { host: key.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number.isInteger(port) ? port : undefined };
}
