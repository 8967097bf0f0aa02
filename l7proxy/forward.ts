/** The per-request path: check → normalize → route → filters → authorize → admit → forward with retries → relay. */
// Every step before the first `await` is synchronous on purpose: a refused HTTP/1 request marks its connection
// poisoned before Node hands us the next pipelined request, so nothing after a refused request is ever forwarded.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants as http2Constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { authorize, type AuthzPeer } from './authz.ts';
import { pickEndpoint, recordOutcome, type EndpointState } from './balance.ts';
import type { HeaderModifierConfig } from './config.ts';
import { ProxyError, RequestRejection, describeError } from './errors.ts';
import { computeGrpcStatus, computeProxyHeaderList, computeRequestHeaders, computeResponseHeaderList, computeResponseHeaders, computeTrailerList, encodeGrpcMessage, isGrpcContentType, OVERLOADED_HEADER, readHeader, toFlatHeaders, toHeaderObject, toHeaderPairs } from './headers.ts';
import { checkHttp1Request, writeRawErrorAndClose } from './http1.ts';
import { formatTarget, normalizeTarget } from './normalize.ts';
import { SHED_RETRY_AFTER_S, type OverloadMonitor } from './overload.ts';
import { computeAdmission, computeBackoff, computeFault, computeMaxRetries, computeOutlierPolicy, computeProxyErrorHeaders, isPeerConnectFailure } from './resilience.ts';
import { applyHeaderModifier, chooseWeighted, computeRedirect, computeRewrittenPath, matchRoute, type HeaderList, type RouteCandidate, type RouteRequest } from './route.ts';
import type { BackendState, CompiledService, ProxySnapshot } from './snapshot.ts';
import type { RequestObserver, RequestTelemetry } from './telemetry/request-telemetry.ts';
import { countResponse, type AccessLogEntry, type ProxyLogger, type ProxyStats } from './stats.ts';
import { pipeBoth } from './tunnel.ts';
import { sendUpstream, type UpstreamBody, type UpstreamCall, type UpstreamPools, type UpstreamResponse, type UpstreamPool, type UpstreamTrailers, type UpstreamUpgrade } from './upstream.ts';

/** The workload behind a source address, as the agent knows it. */
export type SourceIdentity = { spiffeId: string; namespace: string; serviceAccount: string };

/** Per-connection facts every request on it shares. */
export type ConnContext = {
  id: number;
  /** `ip:port` the client dialled (the original destination). */
  dstKey: string;
  dstPort: number;
  remoteAddress: string;
  source: SourceIdentity | undefined;
  /** A refused request closes its HTTP/1 connection; pipelined requests after it are dropped unanswered. */
  poisoned: boolean;
  /** Derived once per connection on first use (the source never changes on a connection): the authorization peer. */
  peer?: AuthzPeer | undefined;
  /** Upstream pools this connection used, by endpoint: its identity is fixed, so endpoint + pool options decide. */
  pools?: Map<EndpointState, CachedPool> | undefined;
};

/** A pool remembered on a connection, with the options it was made with. */
type CachedPool = { connectTimeoutMs: number; idleTimeoutMs: number; maxConnections: number | undefined; h2c: boolean; pool: UpstreamPool };

/** What the request path needs from the proxy that runs it. */
export type ForwardDeps = {
  snapshot(): ProxySnapshot;
  backend(name: string): BackendState | undefined;
  pools: UpstreamPools;
  stats: ProxyStats;
  log: ProxyLogger;
  accessLog: ((e: AccessLogEntry) => void) | undefined;
  /** Spans and per-request records (telemetry hook); undefined = off, nothing is built. */
  telemetry?: RequestTelemetry | undefined;
  rand(): number;
  now(): number;
  draining(): boolean;
  /** This worker's overload state and in-flight count; absent = no shedding. */
  overload?: OverloadMonitor | undefined;
};

/** Methods whose requests may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
const MIRROR_TIMEOUT_MS = 10_000;
/** Methods whose empty buffered body is sent without Content-Length. */
const NO_LENGTH_WHEN_EMPTY = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE']);
const EMPTY_BODY: { buffered: Buffer } = { buffered: Buffer.alloc(0) };
const UNAUTHENTICATED: AuthzPeer = Object.freeze({ authenticated: false });
/** Largest whole response body an HTTP/1 exchange sends as one string with its head (Http1Exchange.end). */
const HEAD_MERGE_LIMIT = 16 * 1024;

/** A downstream exchange, the same for HTTP/1 and HTTP/2 streams. */
type Exchange = {
  protocol: 'http1' | 'http2';
  method: string;
  target: string;
  hosts: string[];
  rawHeaders: string[];
  body: Readable;
  /** Known from the head to carry no body: HTTP/1 without Transfer-Encoding and with no or a zero Content-Length. */
  bodyless: boolean;
  /** The client's Content-Length (validated before it is used), kept for a streamed body. */
  contentLength: string | undefined;
  /** A gRPC call over HTTP/2: the proxy's own answers go out as gRPC statuses (HTTP 200, trailers-only). */
  grpc: boolean;
  headersSent(): boolean;
  /**
   * Send a complete response; `close` ends an HTTP/1 connection after it. For a gRPC call the status becomes a
   * grpc-status (`timeout`: the proxy's own deadline passed → DEADLINE_EXCEEDED) and the body its grpc-message.
   */
  respond(status: number, headers: HeaderList, body: string | undefined, close: boolean, timeout?: boolean): void;
  /** Trailers (flat, already filtered) to send after the body; dropped where the response cannot carry them. */
  addTrailers(trailers: string[]): void;
  /** Start relaying a response (headers as a flat `[name, value, ...]` list); returns the sink for its body. */
  start(status: number, headers: string[]): NodeJS.WritableStream;
  /** A body that arrived whole, written after `start` (counted for the trace): chunks, then the end. */
  write(chunk: Buffer): boolean;
  end(chunk?: Buffer): void;
  /** Abort: reset the stream or connection. */
  destroy(): void;
  onClose(cb: () => void): void;
  finished(): boolean;
  /** This request's span and record, when telemetry is on. */
  trace: RequestObserver | undefined;
};

/** An HTTP/1 request and its response (a class: one object per request instead of a set of closures). */
class Http1Exchange implements Exchange {
  readonly protocol = 'http1' as const;
  readonly method: string;
  readonly target: string;
  readonly hosts: string[] = [];
  readonly rawHeaders: string[];
  readonly body: IncomingMessage;
  readonly bodyless: boolean;
  readonly contentLength: string | undefined;
  readonly grpc = false;
  trace: RequestObserver | undefined = undefined;
  readonly #res: ServerResponse;
  readonly #deps: ForwardDeps;

  constructor(req: IncomingMessage, res: ServerResponse, deps: ForwardDeps) {
    this.method = req.method ?? '';
    this.target = req.url ?? '';
    this.rawHeaders = req.rawHeaders;
    this.body = req;
    this.#res = res;
    this.#deps = deps;
    const raw = req.rawHeaders;
    let cl: string | undefined;
    let te = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      // Only names as long as Host (4), Content-Length (14) or Transfer-Encoding (17) can be one of them.
      const len = name.length;
      if (len === 4) { if (name.toLowerCase() === 'host') this.hosts.push(raw[i + 1]!); }
      else if (len === 14) { if (cl === undefined && name.toLowerCase() === 'content-length') cl = raw[i + 1]!; }
      else if (len === 17 && name.toLowerCase() === 'transfer-encoding') te = true;
    }
    this.contentLength = cl;
    this.bodyless = !te && (cl === undefined || cl === '0');
  }

  headersSent(): boolean { return this.#res.headersSent; }

  respond(status: number, headers: HeaderList, body: string | undefined, close: boolean): void {
    const res = this.#res;
    if (res.headersSent) { res.destroy(); return; }
    const h = toHeaderObject(headers);
    if (body !== undefined) { h['content-type'] = 'text/plain'; h['content-length'] = String(Buffer.byteLength(body)); }
    if (close || this.#deps.draining()) h['connection'] = 'close';
    res.writeHead(status, h);
    res.end(body);
  }

  start(status: number, headers: string[]): NodeJS.WritableStream {
    if (this.#deps.draining()) headers.push('connection', 'close');
    this.#res.writeHead(status, headers);
    return this.#res;
  }

  write(chunk: Buffer): boolean {
    if (this.trace) this.trace.responseBytes += chunk.length;
    return this.#res.write(chunk);
  }

  end(chunk?: Buffer): void {
    if (chunk === undefined) { this.#res.end(); return; }
    if (this.trace) this.trace.responseBytes += chunk.length;
    // Node writes a string chunk together with the head it has not flushed yet as one string (one write(2)); a
    // Buffer goes out as a second vector of a writev, which costs more per response. latin1 maps each byte to one
    // char and back, so the bytes on the wire are the same. Only small bodies: the copy grows with the size.
    if (chunk.length <= HEAD_MERGE_LIMIT) this.#res.end(chunk.toString('latin1'), 'latin1');
    else this.#res.end(chunk);
  }

  addTrailers(trailers: string[]): void {
    // Only a chunked response has a trailer section; with a Content-Length (or to an HTTP/1.0 client) they are dropped.
    if (trailers.length === 0 || (this.#res as ServerResponse & { chunkedEncoding?: boolean }).chunkedEncoding !== true) return;
    this.#res.addTrailers(toHeaderPairs(trailers));
  }

  destroy(): void { this.#res.destroy(); this.body.socket.destroy(); }
  onClose(cb: () => void): void { this.#res.on('close', cb); }
  finished(): boolean { return this.#res.writableFinished; }
}

function http2Exchange(req: Http2ServerRequest, res: Http2ServerResponse): Exchange {
  const hosts: string[] = [];
  const authority = req.headers[':authority'];
  if (typeof authority === 'string') hosts.push(authority);
  let contentLength: string | undefined;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase();
    if (name === 'host') hosts.push(req.rawHeaders[i + 1]!);
    else if (name === 'content-length' && contentLength === undefined) contentLength = req.rawHeaders[i + 1]!;
  }
  const ct = req.headers['content-type'];
  const grpc = isGrpcContentType(typeof ct === 'string' ? ct : undefined);
  // Set when the proxy answered on the stream itself (a trailers-only gRPC status), bypassing the compat response.
  let answered = false;
  const stream = res.stream;
  const ex: Exchange = {
    protocol: 'http2', method: req.method, target: String(req.headers[':path'] ?? ''), hosts, rawHeaders: req.rawHeaders, body: req,
    // HEADERS with END_STREAM: there is no body to read or wait for.
    bodyless: req.stream.endAfterHeaders, contentLength, grpc, trace: undefined,
    headersSent: () => res.headersSent,
    respond(status, headers, body, _close, timeout) {
      if (res.headersSent) { res.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR); return; }
      if (grpc && status !== 200) {
        // gRPC clients read the outcome from grpc-status, not :status: a trailers-only response (one HEADERS frame
        // with END_STREAM) as Envoy sends for its local replies.
        const h = toHeaderObject(headers.filter(([k]) => k !== 'content-type' && k !== 'content-length'));
        h['content-type'] = 'application/grpc';
        h['grpc-status'] = String(computeGrpcStatus(status, timeout === true));
        h['grpc-message'] = encodeGrpcMessage((body ?? '').trim() || `HTTP ${status}`);
        answered = true;
        if (!res.stream.destroyed) res.stream.respond({ ...h, ':status': 200 }, { endStream: true });
        return;
      }
      const h = toHeaderObject(headers);
      if (body !== undefined) { h['content-type'] = 'text/plain'; h['content-length'] = String(Buffer.byteLength(body)); }
      res.writeHead(status, h);
      if (body === undefined) res.end(); else res.end(body);
    },
    start(status, headers) { res.writeHead(status, toHeaderObject(toHeaderPairs(headers))); return res; },
    write(chunk) { if (ex.trace) ex.trace.responseBytes += chunk.length; return res.write(chunk); },
    end(chunk) {
      if (chunk === undefined) { res.end(); return; }
      if (ex.trace) ex.trace.responseBytes += chunk.length;
      res.end(chunk);
    },
    addTrailers(trailers) { if (trailers.length > 0) res.addTrailers(toHeaderObject(toHeaderPairs(trailers))); },
    destroy: () => { res.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR); },
    onClose: (cb) => { res.on('close', cb); },
    // The compat response reports itself finished once its stream closed, however it closed: a stream the client
    // reset (rstCode other than NO_ERROR) did not finish, and the upstream call must be cancelled.
    finished: () => answered || (res.writableFinished && (stream.rstCode === undefined || stream.rstCode === http2Constants.NGHTTP2_NO_ERROR)),
  };
  return ex;
}

/** Handle one HTTP/1 request (the http server's 'request' event). */
export function handleHttp1Request(deps: ForwardDeps, ctx: ConnContext, req: IncomingMessage, res: ServerResponse): void {
  if (ctx.poisoned) { req.socket.destroy(); return; }
  runExchange(deps, ctx, new Http1Exchange(req, res, deps));
}

/** Handle one HTTP/2 stream (the compat 'request' event). */
export function handleHttp2Request(deps: ForwardDeps, ctx: ConnContext, req: Http2ServerRequest, res: Http2ServerResponse): void {
  runExchange(deps, ctx, http2Exchange(req, res));
}

/** The request after the synchronous steps: ready to forward, or already answered. */
type Prepared = {
  service: CompiledService;
  method: string;
  path: string;
  query: string | undefined;
  authority: string;
  headers: HeaderList;
  candidate: RouteCandidate | undefined;
  responseModifiers: HeaderModifierConfig[];
  mirrors: { backend: string; percent: number }[];
  backendName: string;
  /** The client sent `TE: trailers` (gRPC does): passed on, the only TE value that may be. */
  teTrailers: boolean;
};

type Refusal = { status: number; reason: string; close: boolean; headers?: HeaderList; body?: string; kind: 'malformed' | 'tooLarge' | 'target' | 'policy' | 'route' };

/** The synchronous steps: framing, header hygiene, normalization, routing, filters, authorization. */
function prepare(deps: ForwardDeps, ctx: ConnContext, ex: Exchange, snap: ProxySnapshot): Prepared | Refusal {
  const limits = snap.limits;
  if (ex.protocol === 'http1') {
    const bad = checkHttp1Request(ex.body as IncomingMessage, limits);
    if (bad) return { status: bad.status, reason: bad.message, close: true, kind: bad.status === 431 ? 'tooLarge' : 'malformed' };
  } else if (ex.rawHeaders.length / 2 > limits.maxHeaderCount + 4) {
    return { status: 431, reason: `more than ${limits.maxHeaderCount} header fields`, close: true, kind: 'tooLarge' };
  }
  const cleaned = computeRequestHeaders(ex.rawHeaders, limits.headersWithUnderscores);
  if (!cleaned.ok) return { status: 400, reason: cleaned.reason, close: true, kind: 'malformed' };
  const n = normalizeTarget(ex.target, ex.hosts);
  if (!n.ok) return { status: 400, reason: n.reason, close: true, kind: 'target' };
  const service = snap.services.get(ctx.dstKey);
  if (!service) return { status: 503, reason: 'destination is no longer configured', close: true, kind: 'route' };
  const method = ex.method;
  let headers = cleaned.headers;
  let path = n.value.path;
  let authority = n.value.authority;
  let host = n.value.host;
  let candidate: RouteCandidate | undefined;
  const responseModifiers: HeaderModifierConfig[] = [];
  const mirrors: { backend: string; percent: number }[] = [];
  let backendName = service.config.defaultBackend;
  if (service.routes.length > 0) {
    // Query parameters are decoded only when a match asks for them.
    let query: URLSearchParams | undefined;
    const rawQuery = n.value.query;
    const routeReq: RouteRequest = { method, path, header: (name) => readHeader(headers, name), get query() { return (query ??= new URLSearchParams(rawQuery ?? '')); } };
    candidate = matchRoute(service.routes, routeReq);
    if (!candidate) return { status: 404, reason: 'no route matched', close: false, kind: 'route' };
    for (const f of candidate.rule.filters ?? []) {
      switch (f.type) {
        case 'RequestHeaderModifier': headers = applyHeaderModifier(headers, f.requestHeaderModifier); break;
        case 'ResponseHeaderModifier': responseModifiers.push(f.responseHeaderModifier); break;
        case 'RequestMirror': mirrors.push({ backend: f.requestMirror.backend, percent: f.requestMirror.percent ?? 100 }); break;
        case 'URLRewrite':
          path = computeRewrittenPath(path, f.urlRewrite.path, candidate.prefix);
          if (f.urlRewrite.hostname) { host = f.urlRewrite.hostname; authority = n.value.port ? `${host}:${n.value.port}` : host; }
          break;
        case 'RequestRedirect': {
          const r = computeRedirect(f.requestRedirect, { scheme: 'http', host, port: n.value.port, path, query: n.value.query }, candidate.prefix);
          return { status: r.status, reason: 'redirect', close: false, headers: [['location', r.location]], body: '', kind: 'route' };
        }
      }
    }
    const chosen = chooseWeighted(candidate.rule.backendRefs, deps.rand());
    if (chosen === undefined) return { status: 500, reason: 'route rule has no backend with a positive weight', close: false, kind: 'route' };
    backendName = chosen;
  }
  // Authorization on exactly what will be forwarded: method, rewritten normalized path, rewritten host.
  const peer = connPeer(ctx);
  const verdict = authorize({ method, normalizedPath: path, host, port: ctx.dstPort }, peer, service.policies);
  if (verdict.audit.length > 0) {
    deps.stats.authz.audit++;
    deps.log.info('authz audit', { policies: verdict.audit, method, path, source: ctx.source?.spiffeId });
  }
  if (verdict.verdict === 'deny') {
    deps.stats.authz.deny++;
    return { status: 403, reason: verdict.reason, close: false, body: 'RBAC: access denied\n', kind: 'policy' };
  }
  deps.stats.authz.allow++;
  return { service, method, path, query: n.value.query, authority, headers, candidate, responseModifiers, mirrors, backendName, teTrailers: cleaned.teTrailers };
}

function isRefusal(p: Prepared | Refusal): p is Refusal { return 'status' in p; }

/** The authorization peer of a connection (its source is fixed for the connection's life). */
function connPeer(ctx: ConnContext): AuthzPeer {
  if (ctx.peer) return ctx.peer;
  const s = ctx.source;
  ctx.peer = s ? { spiffeId: s.spiffeId, namespace: s.namespace, serviceAccount: s.serviceAccount, authenticated: true } : UNAUTHENTICATED;
  return ctx.peer;
}

/** Who upstream connections of this connection are for: its SPIFFE ID, or `anon:<address>`. */
function upstreamIdentity(ctx: ConnContext): string {
  return ctx.source?.spiffeId ?? `anon:${ctx.remoteAddress}`;
}

/**
 * The upstream pool of this connection's identity to `ep`, remembered on the connection so a request does not
 * rebuild the pool key; a closed pool (pruned, proxy stopping) falls through to `UpstreamPools.get`.
 */
function poolFor(deps: ForwardDeps, ctx: ConnContext, ep: EndpointState, connectTimeoutMs: number, idleTimeoutMs: number, maxConnections: number | undefined, h2c = false): UpstreamPool {
  const cache = (ctx.pools ??= new Map());
  const hit = cache.get(ep);
  if (hit && hit.connectTimeoutMs === connectTimeoutMs && hit.idleTimeoutMs === idleTimeoutMs && hit.maxConnections === maxConnections && hit.h2c === h2c && !hit.pool.closed && !hit.pool.destroyed) return hit.pool;
  const pool = deps.pools.get(upstreamIdentity(ctx), ep.ip, ep.port, { connectTimeoutMs, idleTimeoutMs, maxConnections, h2c });
  cache.set(ep, { connectTimeoutMs, idleTimeoutMs, maxConnections, h2c, pool });
  return pool;
}

function countRefusal(stats: ProxyStats, r: Refusal): void {
  if (r.kind === 'malformed') stats.rejected.malformed++;
  else if (r.kind === 'tooLarge') stats.rejected.headersTooLarge++;
  else if (r.kind === 'target') stats.rejected.badTarget++;
}

/** The one place a request ends: counted, and handed to the access log when there is one. */
function logExchange(deps: ForwardDeps, ctx: ConnContext, ex: Exchange, started: number, status: number, fields: Partial<AccessLogEntry>): void {
  countResponse(deps.stats, status);
  if (!deps.accessLog && !ex.trace) return;
  const entry: AccessLogEntry = {
    connection: ctx.id, protocol: ex.protocol, method: ex.method, target: ex.target, authority: undefined, status,
    forwarded: false, backend: undefined, endpoint: undefined, attempts: 0, durationMs: deps.now() - started,
    source: ctx.source?.spiffeId, reason: undefined, ...fields,
  };
  deps.accessLog?.(entry);
  ex.trace?.end(entry);
}

/** Answer a prepared request from the proxy itself (fault, rate limit, overload, missing backend). */
function answerLocally(deps: ForwardDeps, ctx: ConnContext, ex: Exchange, started: number, p: Prepared, target: string, status: number, reason: string, headers: HeaderList = []): void {
  ex.respond(status, headers, `${reason}\n`, false);
  logExchange(deps, ctx, ex, started, status, { target, authority: p.authority, backend: p.backendName, reason });
}

/** The request deadline passed: 504, or a cut connection when the response had started. */
function finishTimeout(deps: ForwardDeps, ctx: ConnContext, ex: Exchange, started: number, p: Prepared, target: string): void {
  deps.stats.timeouts.request++;
  if (ex.headersSent()) ex.destroy();
  else ex.respond(504, [], 'upstream request timeout\n', false, true);
  logExchange(deps, ctx, ex, started, 504, { target, authority: p.authority, backend: p.backendName, reason: 'request timeout', forwarded: true });
}

/**
 * The synchronous steps (check, normalize, route, authorize) happen here before anything is awaited, so a refused
 * HTTP/1 request poisons its connection before the next pipelined request is parsed; then `forward` takes over.
 */
function runExchange(deps: ForwardDeps, ctx: ConnContext, ex: Exchange): void {
  try {
    const started = deps.now();
    const overload = deps.overload;
    if (overload) {
      if (overload.decide() !== 'admit') { shedOverloaded(deps, ctx, ex, started); return; }
      overload.inFlight++;
      ex.onClose(() => { overload.inFlight--; });
    }
    const snap = deps.snapshot();
    const prepared = prepare(deps, ctx, ex, snap);
    if (deps.telemetry) ex.trace = deps.telemetry.request(ctx, ex, prepared, snap);
    if (isRefusal(prepared)) {
      countRefusal(deps.stats, prepared);
      if (prepared.close && ex.protocol === 'http1') ctx.poisoned = true;
      ex.respond(prepared.status, prepared.headers ?? [], prepared.body ?? (prepared.status >= 400 ? `${prepared.reason}\n` : undefined), prepared.close);
      logExchange(deps, ctx, ex, started, prepared.status, { reason: prepared.reason });
      return;
    }
    const target = formatTarget(prepared.path, prepared.query);
    const state = deps.backend(prepared.backendName);
    if (!state) { answerLocally(deps, ctx, ex, started, prepared, target, 500, `backend ${prepared.backendName} is not configured`); return; }
    void forward(deps, ctx, ex, prepared, state, snap, target, started);
  } catch (err) {
    deps.log.error('request handler failed', { err: describeError(err) });
  }
}

/**
 * This worker is overloaded (overload.ts): answer before any parsing or routing, so a shed request costs next to
 * nothing, and close the HTTP/1 connection so the client retries elsewhere or later (gRPC: UNAVAILABLE).
 */
function shedOverloaded(deps: ForwardDeps, ctx: ConnContext, ex: Exchange, started: number): void {
  deps.stats.rejected.overloaded++;
  if (ex.protocol === 'http1') ctx.poisoned = true;
  ex.respond(503, [[OVERLOADED_HEADER, 'proxy'], ['retry-after', String(SHED_RETRY_AFTER_S)]], 'proxy overloaded\n', true);
  logExchange(deps, ctx, ex, started, 503, { reason: 'proxy overloaded' });
}

/**
 * Read the body into memory when it is at most `limit` bytes; otherwise hand back a stream that replays what was
 * read. A body that sends nothing for `idleMs` while being buffered (slow body) rejects with a 408 RequestRejection.
 */
function bufferBody(body: Readable, limit: number, idleMs: number): Promise<{ buffered: Buffer } | { stream: Readable }> {
  return new Promise((resolve, reject) => {
    if (body.readableEnded) { resolve({ buffered: Buffer.alloc(0) }); return; }
    const chunks: Buffer[] = [];
    let size = 0;
    let idle = setTimeout(onIdle, idleMs);
    function onIdle(): void { cleanup(); reject(new RequestRejection(408, `request body idle for ${idleMs} ms`)); }
    const onData = (c: Buffer): void => {
      chunks.push(c); size += c.length;
      idle.refresh();
      if (size > limit) {
        cleanup();
        body.pause();
        const pass = new PassThrough();
        for (const ch of chunks) pass.write(ch);
        body.pipe(pass);
        body.resume();
        resolve({ stream: pass });
      }
    };
    const onEnd = (): void => { cleanup(); resolve({ buffered: Buffer.concat(chunks) }); };
    const onError = (e: Error): void => { cleanup(); reject(e); };
    const onAborted = (): void => { cleanup(); reject(new Error('client aborted the request body')); };
    const cleanup = (): void => { clearTimeout(idle); body.off('data', onData); body.off('end', onEnd); body.off('error', onError); body.off('close', onClose); };
    const onClose = (): void => { if (!body.readableEnded) onAborted(); };
    idle = idle.unref();
    body.on('data', onData);
    body.on('end', onEnd);
    body.on('error', onError);
    body.on('close', onClose);
  });
}

/** The client's request trailers (HTTP/1 chunked or HTTP/2), filtered like response trailers; undefined when none. */
function requestTrailers(body: Readable): Record<string, string | string[]> | undefined {
  const t = (body as Readable & { trailers?: Record<string, string | string[] | undefined> }).trailers;
  if (t === undefined || Object.keys(t).length === 0) return undefined;
  const list = computeTrailerList(t);
  return list.length === 0 ? undefined : toHeaderObject(toHeaderPairs(list));
}

/** A body streamed upstream as it arrives, with a copy kept while it fits `limit` so a retry can replay it. */
type CapturedBody = { stream: Readable; capture: BodyCapture };

/** The copy of a streamed body: whole (the client ended it within the limit) or given up. */
class BodyCapture {
  #chunks: Buffer[] | undefined = [];
  #size = 0;
  #ended = false;

  constructor(body: Readable, limit: number) {
    body.on('data', (c: Buffer) => {
      if (this.#chunks === undefined) return;
      this.#size += c.length;
      if (this.#size > limit) this.#chunks = undefined;
      else this.#chunks.push(c);
    });
    body.once('end', () => { this.#ended = true; });
  }

  /** The whole body when it ended within the limit (then it may be sent again), else undefined. */
  replay(): Buffer | undefined {
    return this.#ended && this.#chunks !== undefined ? Buffer.concat(this.#chunks) : undefined;
  }
}

/**
 * Stream a body of unknown length upstream at once (gRPC and other HTTP/2 streams: a client-streaming call sends
 * its messages only as the server answers, so waiting for the end would never finish), keeping a replayable copy.
 */
function streamBody(body: Readable, limit: number): CapturedBody {
  const capture = new BodyCapture(body, limit);
  const pass = new PassThrough();
  body.pipe(pass);
  // A client that resets its stream mid-body must not look like a complete body upstream.
  body.once('close', () => { if (!body.readableEnded) pass.destroy(new Error('client aborted the request body')); });
  return { stream: pass, capture };
}

function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

/** Outcome of one attempt. */
type Attempt =
  | { kind: 'response'; res: UpstreamResponse; ep: EndpointState }
  | { kind: 'error'; err: ProxyError; status: number; ep: EndpointState | undefined; sent: boolean; timeout: 'backendRequest' | undefined };

/**
 * Admission (fault, rate limit, circuit breaker); then the body is buffered or streamed, sent (retried within the
 * rule and the budget) and the answer relayed, with 504 at the deadline. One async function: every await costs.
 * Never rejects.
 */
async function forward(
  deps: ForwardDeps, ctx: ConnContext, ex: Exchange, p: Prepared, state: BackendState, snap: ProxySnapshot, target: string, started: number,
): Promise<void> {
  try {
    const tp = state.config.trafficPolicy;
    // Fault injection, then the local rate limit, then the circuit breaker: the cheap refusals come first.
    // Both draws are taken even without a fault policy, so an injected random sequence lines up the same way.
    const fault = computeFault(tp?.faultInjection, deps.rand(), deps.rand());
    if (fault.delayMs > 0) { deps.stats.faults.delayed++; await sleep(fault.delayMs); }
    if (fault.abortStatus !== undefined) { deps.stats.faults.aborted++; answerLocally(deps, ctx, ex, started, p, target, fault.abortStatus, 'fault filter abort'); return; }
    if (state.limiter) {
      const t = state.limiter.take(upstreamIdentity(ctx), deps.now());
      if (!t.ok) {
        deps.stats.rateLimited++;
        answerLocally(deps, ctx, ex, started, p, target, 429, 'local rate limit exceeded', [['retry-after', String(Math.max(1, Math.ceil(t.retryAfterMs / 1000)))]]);
        return;
      }
    }
    const overload = computeAdmission(state.inflight, tp?.circuitBreaker);
    if (overload) {
      deps.stats.circuitBreaker[overload]++;
      answerLocally(deps, ctx, ex, started, p, target, 503, `upstream overloaded (${overload})`, [[OVERLOADED_HEADER, overload]]);
      return;
    }
    state.inflight++;
    try {
      const rule = p.candidate?.rule;
      const deadline = rule?.timeouts?.requestMs !== undefined ? started + rule.timeouts.requestMs : undefined;
      const perTry = rule?.timeouts?.backendRequestMs;
      // Without a route policy: safe retries only (resilience.ts computeMaxRetries; issue 5 F11).
      const maxRetries = computeMaxRetries(rule?.retry?.attempts);
      const retryCodes: readonly number[] = rule?.retry?.codes ?? [];
      const backoffMs = rule?.retry?.backoffMs ?? 25;
      const idempotent = IDEMPOTENT.has(p.method);
      const connectTimeoutMs = tp?.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
      const idleTimeoutMs = tp?.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
      const maxConnections = tp?.circuitBreaker?.maxConnections;
      const h2c = state.config.protocol === 'h2c';
      const lb = tp?.loadBalancer;
      let hashKey: string | undefined;
      if (lb?.type === 'ConsistentHash') {
        if ('header' in lb.hashOn) hashKey = readHeader(p.headers, lb.hashOn.header.toLowerCase());
        else if ('cookie' in lb.hashOn) hashKey = readCookie(readHeader(p.headers, 'cookie'), lb.hashOn.cookie);
        else hashKey = ctx.remoteAddress;
      }

      // The request deadline covers body buffering, every attempt and backoff; at it the client gets 504.
      let current: UpstreamCall | undefined;
      let timedOut = false;
      let clientGone = false;
      let deadlineTimer: NodeJS.Timeout | undefined;
      let deadlineHit: Promise<'deadline'> | undefined;
      if (deadline !== undefined) {
        deadlineHit = new Promise<'deadline'>((resolve) => {
          deadlineTimer = setTimeout(() => { timedOut = true; current?.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_TIMEOUT', 'request timeout')); resolve('deadline'); }, Math.max(0, deadline - deps.now()));
        });
      }
      // One listener for the whole exchange: a client gone before the end aborts the attempt or the relay.
      let relayAbort: (() => void) | undefined;
      ex.onClose(() => {
        if (ex.finished()) return;
        clientGone = true;
        current?.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'client went away'));
        relayAbort?.();
      });

      try {
        let body: { buffered: Buffer } | { stream: Readable } | CapturedBody;
        if (ex.bodyless) {
          // Nothing to read (no Content-Length, or 0, and no Transfer-Encoding): the stream is left to the server.
          body = EMPTY_BODY;
        } else {
          // Telemetry hook: request body bytes as they arrive (one more 'data' listener; nothing is held for it).
          const t = ex.trace;
          if (t) ex.body.on('data', (c: Buffer) => { t.requestBytes += c.length; });
          if (ex.protocol === 'http2' && ex.contentLength === undefined) {
            // An HTTP/2 stream of unknown length (gRPC): streamed at once, replayable only if it ends small.
            body = streamBody(ex.body, snap.limits.maxBufferedBodyBytes);
          } else {
            const bodyP = bufferBody(ex.body, snap.limits.maxBufferedBodyBytes, snap.limits.requestBodyIdleTimeoutMs);
            let got: Awaited<typeof bodyP> | 'deadline';
            try {
              got = deadlineHit ? await Promise.race([bodyP, deadlineHit]) : await bodyP;
            } catch (err) {
              if (err instanceof RequestRejection && !ex.headersSent()) {
                // Slow body: nothing was sent upstream; answer 408 and close (the rest of the body is never read).
                if (ex.protocol === 'http1') ctx.poisoned = true;
                ex.respond(err.status, [], `${err.message}\n`, true);
                logExchange(deps, ctx, ex, started, err.status, { target, authority: p.authority, backend: p.backendName, reason: `request body: ${err.message}` });
                if (ex.protocol === 'http1') setTimeout(() => ex.destroy(), 1000).unref();
                return;
              }
              // A body that fails to parse (bad chunk framing) or a client that left: the HTTP/1 server has already
              // answered 400 and closed; nothing was sent upstream.
              logExchange(deps, ctx, ex, started, 400, { target, authority: p.authority, backend: p.backendName, reason: `request body: ${describeError(err)}` });
              ex.destroy();
              return;
            }
            if (got === 'deadline') { finishTimeout(deps, ctx, ex, started, p, target); return; }
            body = got;
          }
        }
        let replayable = 'buffered' in body;
        const upstreamHeaders = computeProxyHeaderList({ headers: p.headers, authority: p.authority, clientAddress: ctx.remoteAddress, sourceSpiffeId: ctx.source?.spiffeId, teTrailers: p.teTrailers });
        ex.trace?.inject(upstreamHeaders);
        if ('buffered' in body) {
          if (body.buffered.length > 0 || !NO_LENGTH_WHEN_EMPTY.has(p.method)) upstreamHeaders.push('content-length', String(body.buffered.length));
          if (p.mirrors.length > 0) startMirrors(deps, ctx, p, target, upstreamHeaders, body.buffered);
        } else if (ex.contentLength !== undefined) {
          // A streamed body keeps the client's (validated) length; without one undici sends it chunked.
          upstreamHeaders.push('content-length', ex.contentLength);
        }
        state.budget.recordRequest(deps.now());

        let tried: Set<string> | undefined;
        let attempts = 0;
        let outcome: Attempt;
        for (;;) {
          attempts++;
          const ep = pickEndpoint(state.endpoints, lb, { cursor: state.cursor++, hashKey, rand: deps.rand, nowMs: deps.now(), avoid: tried });
          if (!ep) {
            deps.stats.upstream.noEndpoint++;
            outcome = { kind: 'error', err: new ProxyError('NM_ERR_PROXY_NO_ENDPOINT', `backend ${p.backendName} has no ready endpoint`), status: 503, ep: undefined, sent: false, timeout: undefined };
            break;
          }
          if (maxRetries > 0) (tried ??= new Set()).add(ep.key);
          // Telemetry hook: when the route asks for retries, each attempt gets its own CLIENT span (and its traceparent
          // upstream); the default safe retries (connect failures only) are counted on the request span instead.
          const attemptTrace = (rule?.retry?.attempts ?? 0) > 0 ? ex.trace?.attempt(attempts, ep.key, upstreamHeaders) : undefined;
          const pool = poolFor(deps, ctx, ep, connectTimeoutMs, idleTimeoutMs, maxConnections, h2c);
          const call = sendUpstream(pool, {
            method: p.method, path: target, headers: upstreamHeaders,
            body: 'buffered' in body ? (body.buffered.length > 0 ? body.buffered : undefined) : body.stream,
            idempotent: idempotent && replayable,
            trailers: h2c && !ex.bodyless ? () => requestTrailers(ex.body) : undefined,
          });
          current = call;
          let perTryTimedOut = false;
          const perTryTimer = perTry !== undefined ? setTimeout(() => { perTryTimedOut = true; call.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_TIMEOUT', `backend request timeout (${perTry} ms)`)); }, perTry) : undefined;
          ep.inflight++;
          try {
            const res = await call.result;
            if (res.kind !== 'response') throw new ProxyError('NM_ERR_PROXY_UPSTREAM_PROTOCOL', 'upstream switched protocols without being asked');
            outcome = { kind: 'response', res, ep };
          } catch (err) {
            const e = err instanceof ProxyError ? err : new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', describeError(err));
            const status = perTryTimedOut ? 504 : e.code === 'NM_ERR_PROXY_UPSTREAM_CONNECT' ? 503 : e.code === 'NM_ERR_PROXY_UPSTREAM_PROTOCOL' ? 502 : 503;
            outcome = { kind: 'error', err: e, status, ep, sent: call.sent(), timeout: perTryTimedOut ? 'backendRequest' : undefined };
          } finally {
            if (perTryTimer !== undefined) clearTimeout(perTryTimer);
            ep.inflight--;
            current = undefined;
          }
          attemptTrace?.end(outcome.kind === 'response' ? outcome.res.statusCode : undefined, outcome.kind === 'error' ? outcome.err.message : undefined);
          if (timedOut) { if (outcome.kind === 'response') outcome.res.body.destroy(); finishTimeout(deps, ctx, ex, started, p, target); return; }
          if (clientGone) { if (outcome.kind === 'response') outcome.res.body.destroy(); logExchange(deps, ctx, ex, started, 499, { target, authority: p.authority, backend: p.backendName, endpoint: ep.key, attempts, reason: 'client went away', forwarded: true }); return; }

          // Outlier detection sees every attempt: 5xx and connection failures count against the endpoint.
          const failed = outcome.kind === 'error' || outcome.res.statusCode >= 500;
          // A connect failure here or at the destination's proxy (F11): nothing reached a workload.
          const connectFailed = outcome.kind === 'error' ? outcome.err.code === 'NM_ERR_PROXY_UPSTREAM_CONNECT' : isPeerConnectFailure(outcome.res.statusCode, outcome.res.headers);
          if (recordOutcome(ep, failed, state.endpoints, computeOutlierPolicy(tp?.outlierDetection, connectFailed), deps.now())) {
            deps.stats.upstream.ejections++;
            deps.log.warn('endpoint ejected', { backend: p.backendName, endpoint: ep.key, forMs: ep.ejectedUntilMs - deps.now() });
          }
          if (outcome.kind === 'error') {
            if (outcome.err.code === 'NM_ERR_PROXY_UPSTREAM_CONNECT') deps.stats.upstream.connectFailures++;
            else if (outcome.err.code === 'NM_ERR_PROXY_UPSTREAM_PROTOCOL') deps.stats.upstream.protocolErrors++;
            else if (outcome.timeout) deps.stats.timeouts.backendRequest++;
            else deps.stats.upstream.resets++;
          }
          if (!replayable && attempts <= maxRetries && 'capture' in body) {
            // A streamed body the client finished within the buffer limit was copied whole: it may be sent again.
            const again = body.capture.replay();
            if (again !== undefined) { body = { buffered: again }; replayable = true; }
          }
          if (attempts > maxRetries || !replayable) break;
          const retryable = outcome.kind === 'response'
            ? retryCodes.includes(outcome.res.statusCode) || connectFailed
            : outcome.err.code === 'NM_ERR_PROXY_UPSTREAM_CONNECT' || !outcome.sent
              || (idempotent && outcome.err.code !== 'NM_ERR_PROXY_UPSTREAM_PROTOCOL' && (outcome.timeout === undefined || retryCodes.includes(504)));
          if (!retryable) break;
          if (!state.budget.tryRetry(deps.now())) { deps.stats.retryBudgetExhausted++; break; }
          if (outcome.kind === 'response') outcome.res.body.destroy();
          deps.stats.retries++;
          const wait = computeBackoff(backoffMs, attempts, deps.rand());
          if (wait > 0) {
            const r = deadlineHit ? await Promise.race([sleep(wait), deadlineHit]) : await sleep(wait);
            if (r === 'deadline') { finishTimeout(deps, ctx, ex, started, p, target); return; }
          }
          if (clientGone) return;
        }

        if (outcome.kind === 'error') {
          const status = outcome.status;
          ex.respond(status, computeProxyErrorHeaders(outcome.err.code), `${outcome.err.message}\n`, false, outcome.timeout !== undefined);
          logExchange(deps, ctx, ex, started, status, { target, authority: p.authority, backend: p.backendName, endpoint: outcome.ep?.key, attempts, reason: outcome.err.message, forwarded: outcome.sent });
          return;
        }
        const { res, ep } = outcome;
        let headers = computeResponseHeaderList(res.headers);
        if (p.responseModifiers.length > 0) {
          let pairs = toHeaderPairs(headers);
          for (const m of p.responseModifiers) pairs = applyHeaderModifier(pairs, m);
          headers = toFlatHeaders(pairs);
        }
        let sink: NodeJS.WritableStream;
        try {
          sink = ex.start(res.statusCode, headers);
        } catch (err) {
          // A head Node refuses to write (a header HTTP/2 forbids, say): the client gets a 502, never a hang.
          res.body.destroy();
          deps.stats.upstream.protocolErrors++;
          ex.respond(502, [], 'upstream response head cannot be relayed\n', false);
          logExchange(deps, ctx, ex, started, 502, { target, authority: p.authority, backend: p.backendName, endpoint: ep.key, attempts, reason: describeError(err), forwarded: true });
          return;
        }
        // Telemetry hook: response body bytes counted on their way to the client.
        const t = ex.trace;
        // Trailers go out with the end of the body: set now when the body is already whole, else at its end.
        if (res.body.ended && res.body.trailers !== undefined) ex.addTrailers(computeTrailerList(res.body.trailers));
        if (!res.body.writeWholeTo(ex)) {
          await relayBody(res.body, sink, deadlineHit, (abort) => { relayAbort = abort; }, t, (trailers) => ex.addTrailers(computeTrailerList(trailers)), () => ex.destroy());
        }
        if (timedOut) { finishTimeout(deps, ctx, ex, started, p, target); return; }
        if (deps.accessLog || ex.trace) logExchange(deps, ctx, ex, started, res.statusCode, { target, authority: p.authority, backend: p.backendName, endpoint: ep.key, attempts, forwarded: true });
        else countResponse(deps.stats, res.statusCode);
      } finally {
        if (deadlineTimer !== undefined) clearTimeout(deadlineTimer);
      }
    } finally {
      state.inflight--;
    }
  } catch (err) {
    deps.log.error('request handler failed', { err: describeError(err) });
  }
}

/**
 * Write an upstream body to the client with backpressure (a full socket pauses the upstream until it drains);
 * resolves at its end, on an upstream error (the client connection is cut), when the client goes away (the caller
 * invokes the function given to `onClientGone`: the upstream request is aborted) or at the deadline.
 */
function relayBody(body: UpstreamBody, sink: NodeJS.WritableStream, deadlineHit: Promise<'deadline'> | undefined, onClientGone: (abort: () => void) => void, counter: { responseBytes: number } | undefined, onTrailers: (trailers: UpstreamTrailers) => void, cut: () => void): Promise<void> {
  return new Promise((resolve) => {
    const out = sink as unknown as Duplex;
    let done = false;
    let draining = false;
    const onDrain = (): void => { body.resume(); };
    const finish = (): void => {
      if (done) return;
      done = true;
      if (draining) out.off('drain', onDrain);
      resolve();
    };
    onClientGone(() => { body.destroy(); finish(); });
    body.pipeTo({
      write: (chunk) => {
        if (counter) counter.responseBytes += chunk.length;
        if (out.write(chunk)) return true;
        if (!draining) { draining = true; out.on('drain', onDrain); }
        return false;
      },
      end: (trailers) => { if (trailers !== undefined) onTrailers(trailers); out.end(); finish(); },
      // The upstream failed mid-body: cut the client's stream or connection so it cannot mistake this for an end.
      error: () => { cut(); finish(); },
    });
    deadlineHit?.then(() => { body.destroy(); finish(); }, () => {});
  });
}

/** Fire-and-forget copies to mirror backends: never awaited, never allowed to touch the client's response. */
function startMirrors(deps: ForwardDeps, ctx: ConnContext, p: Prepared, target: string, headers: string[], body: Buffer): void {
  for (const m of p.mirrors) {
    if (deps.rand() * 100 >= m.percent) continue;
    const state = deps.backend(m.backend);
    if (!state) continue;
    const ep = pickEndpoint(state.endpoints, state.config.trafficPolicy?.loadBalancer, { cursor: state.cursor++, hashKey: undefined, rand: deps.rand, nowMs: deps.now() });
    if (!ep) continue;
    deps.stats.mirrors++;
    const tp = state.config.trafficPolicy;
    const pool = poolFor(deps, ctx, ep, tp?.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, tp?.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, tp?.circuitBreaker?.maxConnections, state.config.protocol === 'h2c');
    const call = sendUpstream(pool, { method: p.method, path: target, headers, body: body.length > 0 ? body : undefined, idempotent: false });
    const timer = setTimeout(() => call.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_TIMEOUT', 'mirror timeout')), MIRROR_TIMEOUT_MS);
    call.result.then((r) => { if (r.kind === 'response') r.body.resume(); else r.socket.destroy(); }, () => {}).finally(() => clearTimeout(timer));
  }
}

function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/;\s*/)) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq) === name) return part.slice(eq + 1);
  }
  return undefined;
}

/** Handle a WebSocket upgrade: the same checks, routing and policy, then a byte tunnel after the upstream's 101. */
export function handleUpgrade(deps: ForwardDeps, ctx: ConnContext, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  upgradeExchange(deps, ctx, req, socket, head).catch((err) => { deps.log.error('upgrade failed', { err: describeError(err) }); socket.destroy(); });
}

async function upgradeExchange(deps: ForwardDeps, ctx: ConnContext, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const started = deps.now();
  const snap = deps.snapshot();
  const hosts: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts.push(req.rawHeaders[i + 1]!);
  // A raw-socket view just good enough for `prepare`; responses are written by hand below.
  const ex = { protocol: 'http1', method: req.method ?? '', target: req.url ?? '', hosts, rawHeaders: req.rawHeaders, body: req } as unknown as Exchange;
  let trace: RequestObserver | undefined;
  const log = (status: number, fields: Partial<AccessLogEntry>): void => {
    countResponse(deps.stats, status);
    if (!deps.accessLog && !trace) return;
    const entry: AccessLogEntry = { connection: ctx.id, protocol: 'websocket', method: ex.method, target: ex.target, authority: undefined, status, forwarded: false, backend: undefined, endpoint: undefined, attempts: 1, durationMs: deps.now() - started, source: ctx.source?.spiffeId, reason: undefined, ...fields };
    deps.accessLog?.(entry);
    trace?.end(entry);
  };
  const p = prepare(deps, ctx, ex, snap);
  // Telemetry hook: a span for the upgrade request (ended at the 101 or the refusal), and one for the tunnel after it.
  if (deps.telemetry) trace = deps.telemetry.request(ctx, ex, p, snap);
  if (isRefusal(p)) {
    countRefusal(deps.stats, p);
    writeRawErrorAndClose(socket, p.status, p.reason);
    log(p.status, { reason: p.reason });
    return;
  }
  const state = deps.backend(p.backendName);
  if (!state) { writeRawErrorAndClose(socket, 500, 'backend not configured'); log(500, { reason: 'backend not configured' }); return; }
  const tp = state.config.trafficPolicy;
  const overload = computeAdmission(state.inflight, tp?.circuitBreaker);
  if (overload) { deps.stats.circuitBreaker[overload]++; writeRawErrorAndClose(socket, 503, `upstream overloaded (${overload})`); log(503, { reason: overload }); return; }
  if (state.limiter && !state.limiter.take(upstreamIdentity(ctx), deps.now()).ok) {
    deps.stats.rateLimited++; writeRawErrorAndClose(socket, 429, 'local rate limit exceeded'); log(429, { reason: 'rate limit' }); return;
  }
  const ep = pickEndpoint(state.endpoints, tp?.loadBalancer, { cursor: state.cursor++, hashKey: undefined, rand: deps.rand, nowMs: deps.now() });
  if (!ep) { writeRawErrorAndClose(socket, 503, 'no ready endpoint'); log(503, { reason: 'no endpoint' }); return; }
  const target = formatTarget(p.path, p.query);
  const headers = computeProxyHeaderList({ headers: p.headers, authority: p.authority, clientAddress: ctx.remoteAddress, sourceSpiffeId: ctx.source?.spiffeId, teTrailers: false });
  trace?.inject(headers);
  const pool = poolFor(deps, ctx, ep, tp?.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, tp?.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, undefined);
  const call = sendUpstream(pool, { method: p.method, path: target, headers, body: undefined, idempotent: false, upgrade: 'websocket' });
  socket.on('close', () => call.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'client went away')));
  state.inflight++;
  try {
    let r: UpstreamResponse | UpstreamUpgrade;
    try {
      r = await call.result;
    } catch (err) {
      writeRawErrorAndClose(socket, 502, describeError(err));
      log(502, { target, backend: p.backendName, endpoint: ep.key, reason: describeError(err), forwarded: call.sent() });
      return;
    }
    if (r.kind === 'response') {
      // The server declined the upgrade (CVE-2024-23326: never tunnel on a non-101): relay its answer, then close.
      const hs = computeResponseHeaders(r.headers);
      let headText = `HTTP/1.1 ${r.statusCode} ${r.statusCode === 200 ? 'OK' : 'Upgrade Declined'}\r\n`;
      for (const [k, v] of hs) if (k !== 'content-length') headText += `${k}: ${v}\r\n`;
      const b = await r.body.collect();
      socket.end(Buffer.concat([Buffer.from(`${headText}connection: close\r\ncontent-length: ${b.length}\r\n\r\n`, 'latin1'), b]));
      log(r.statusCode, { target, backend: p.backendName, endpoint: ep.key, forwarded: true, reason: 'upgrade declined' });
      return;
    }
    deps.stats.upgrades++;
    let headText = 'HTTP/1.1 101 Switching Protocols\r\n';
    for (const [k, v] of Object.entries(r.headers)) for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) headText += `${k}: ${one}\r\n`;
    socket.write(headText + '\r\n');
    if (head.length > 0) r.socket.write(head);
    log(101, { target, backend: p.backendName, endpoint: ep.key, forwarded: true });
    const tunnel = trace?.tunnel();
    const moved = await pipeBoth(socket, r.socket, tp?.idleTimeoutMs ?? 3600_000);
    tunnel?.end({ bytesSent: moved.bToA, bytesReceived: moved.aToB });
  } finally {
    state.inflight--;
  }
}
