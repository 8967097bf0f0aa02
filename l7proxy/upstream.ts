/** Upstream HTTP with undici: one pool per (source identity, endpoint), hostile responses refused at the head. */
// Why per identity: a connection carries one workload's identity (its mTLS certificate once the tunnel layer sits
// under this), so two pods must never share one, even to the same endpoint (ref. B7, confused deputy).
import type { Duplex, Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { ProxyError } from './errors.ts';
import { isHboneConnectError } from './hbone/errors.ts';
import { H2Pool } from './upstream-h2.ts';

/** Connection settings of a pool; a change of these makes a new pool. `h2c`: HTTP/2 with prior knowledge. */
export type PoolOptions = { connectTimeoutMs: number; idleTimeoutMs: number; maxConnections: number | undefined; h2c?: boolean };

/** What requests are sent on: an undici pool (HTTP/1.1) or sessions of HTTP/2 with prior knowledge. */
export type UpstreamPool = Pool | H2Pool;

/** One request to send upstream. */
export type UpstreamRequest = {
  method: string;
  path: string;
  /** Flat `[name, value, name, value, ...]`, lower-case names (see `computeProxyHeaderList`). */
  headers: string[];
  /** Buffered body, a stream to pipe, or nothing. */
  body: Buffer | Readable | undefined;
  /** Only then may undici replay it on a fresh connection. */
  idempotent: boolean;
  /** Set for a WebSocket upgrade (the token sent in Upgrade). */
  upgrade?: string;
  /**
   * Request trailers (already filtered), read once the body has been sent; only HTTP/2 upstreams carry them
   * (undici sends none on HTTP/1.1).
   */
  trailers?: () => Record<string, string | string[]> | undefined;
};

/** A response whose head passed the checks; `body` streams the rest. */
export type UpstreamResponse = {
  kind: 'response';
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: UpstreamBody;
};

/** A 101 to a requested upgrade: the raw upstream socket, now a tunnel. */
export type UpstreamUpgrade = { kind: 'upgrade'; headers: Record<string, string | string[] | undefined>; socket: Duplex };

/** A request in flight: its result, and `abort` to cancel it (timeouts, client gone). */
export type UpstreamCall = { result: Promise<UpstreamResponse | UpstreamUpgrade>; abort(reason: Error): void; sent(): boolean };

/**
 * Why a response head is unsafe to relay, or undefined. undici's llhttp already refuses bad characters, bare LF
 * and obs-fold; the framing ambiguities below only surface at the end of the body there, too late for a 502.
 */
export function checkResponseHead(rawHeaders: readonly (Buffer | string)[] | undefined, statusCode = 200): string | undefined {
  if (!rawHeaders) return undefined;
  let cl = 0; let te = 0; let teValue = ''; let clValue = '';
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i]!;
    // Only names as long as the two framing headers are decoded (the others cannot be them).
    if (raw.length !== 14 && raw.length !== 17) continue;
    const name = raw.toString().toLowerCase();
    if (name === 'content-length') {
      cl++;
      clValue = rawHeaders[i + 1]!.toString().trim();
      if (!/^[0-9]{1,16}$/.test(clValue)) return 'invalid Content-Length in response';
    } else if (name === 'transfer-encoding') { te++; teValue = rawHeaders[i + 1]!.toString().trim().toLowerCase(); }
  }
  if (cl > 1) return 'duplicate Content-Length in response';
  if (te > 0 && cl > 0) return 'both Content-Length and Transfer-Encoding in response';
  if (te > 1 || (te === 1 && teValue !== 'chunked')) return 'Transfer-Encoding other than exactly "chunked" in response';
  // A 204 or 304 has no body whatever its head says (RFC 9112 §6.3): a body-framing header on one means the server
  // and the proxy would disagree on where the next response starts. A 304 may repeat the length of the 200 it
  // stands for, and `Content-Length: 0` on a 204 is common and harmless.
  if ((statusCode === 204 || statusCode === 304) && te > 0) return `Transfer-Encoding on a ${statusCode} response`;
  if (statusCode === 204 && cl > 0 && clValue !== '0') return 'Content-Length on a 204 response';
  return undefined;
}

/** What an upstream connection is for: the source identity it carries and the endpoint it reaches. */
export type UpstreamTarget = {
  /** SPIFFE ID of the source workload, or `anon:<source address>`. */
  identity: string;
  ip: string;
  port: number;
  timeoutMs: number;
  /** Trace context for the tunnel request (HBONE CONNECT) of an opaque TCP connection; absent for HTTP pools. */
  traceHeaders?: Record<string, string>;
};

/**
 * Opens the byte stream under one upstream connection: plain TCP, an HBONE CONNECT stream to another node's proxy,
 * or a same-node hand-off. Rejects with an error whose code says whether anything was sent (see classifyUpstreamError).
 */
export type UpstreamConnector = (target: UpstreamTarget) => Promise<Duplex>;

/** Pools by key; `close` drains them, `prune` closes those no longer wanted. */
export class UpstreamPools {
  #pools = new Map<string, UpstreamPool>();
  readonly #connector: UpstreamConnector | undefined;

  /** `connector` replaces undici's own TCP connect (the mesh tunnel plugs in here); absent → plain TCP. */
  constructor(connector?: UpstreamConnector) {
    this.#connector = connector;
  }

  /** The pool for `identity` (SPIFFE ID, or `anon:<source address>`) to `origin` with `opts`. */
  get(identity: string, ip: string, port: number, opts: PoolOptions): UpstreamPool {
    const origin = ip.includes(':') ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
    const key = `${identity}|${origin}|${opts.connectTimeoutMs}|${opts.idleTimeoutMs}|${opts.maxConnections ?? ''}${opts.h2c ? '|h2c' : ''}`;
    let pool = this.#pools.get(key);
    if ((!pool || pool.closed || pool.destroyed) && opts.h2c) {
      pool = new H2Pool({ identity, ip, port, connectTimeoutMs: opts.connectTimeoutMs, idleTimeoutMs: opts.idleTimeoutMs, maxConnections: opts.maxConnections, connector: this.#connector });
      this.#pools.set(key, pool);
    } else if (!pool || pool.closed || pool.destroyed) {
      pool = new Pool(origin, {
        connections: opts.maxConnections ?? null,
        connectTimeout: opts.connectTimeoutMs,
        keepAliveTimeout: opts.idleTimeoutMs,
        keepAliveMaxTimeout: opts.idleTimeoutMs,
        // The proxy runs its own per-attempt and request deadlines; undici's only catch what those do not.
        headersTimeout: 0,
        bodyTimeout: 0,
        pipelining: 1,
        strictContentLength: true,
        // undici types its connector as returning a net.Socket; any Duplex works (it uses only stream methods).
        ...(this.#connector ? { connect: this.#undiciConnect(identity, ip, port, opts.connectTimeoutMs) as unknown as Pool.Options['connect'] } : {}),
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  #undiciConnect(identity: string, ip: string, port: number, timeoutMs: number): (o: unknown, cb: (err: Error | null, socket: Duplex | null) => void) => void {
    const connector = this.#connector!;
    return (_o, cb) => {
      connector({ identity, ip, port, timeoutMs }).then((s) => cb(null, s), (err: unknown) => cb(err as Error, null));
    };
  }

  /** Number of pools (tests check identity separation with it). */
  get size(): number { return this.#pools.size; }

  /** Keys of the pools, `identity|origin|...`. */
  keys(): string[] { return [...this.#pools.keys()]; }

  /** Close pools whose endpoint is not in `liveOrigins` (`ip:port` keys) any more. */
  prune(liveOrigins: ReadonlySet<string>): void {
    for (const [key, pool] of this.#pools) {
      const origin = key.split('|')[1]!.replace('http://', '');
      if (!liveOrigins.has(origin)) { this.#pools.delete(key); pool.close().catch(() => {}); }
    }
  }

  /** Close every pool: gracefully (in-flight finish) or at once. */
  async close(graceful: boolean): Promise<void> {
    const all = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(all.map((p) => (graceful ? p.close() : p.destroy()).catch(() => {})));
  }
}

/** Response trailers as undici hands them over (HTTP/1 chunked trailer section or HTTP/2 trailing HEADERS). */
export type UpstreamTrailers = Record<string, string | string[] | undefined>;

/** Where a relayed response body goes: `write` returning false pauses the upstream until `UpstreamBody.resume()`. */
export type BodySink = {
  write(chunk: Buffer): boolean;
  /** The body ended; `trailers` when the upstream sent any (not yet filtered). */
  end(trailers?: UpstreamTrailers): void;
  error(err: Error): void;
};

/** Most bytes held for a body nobody consumes yet before the upstream is paused. */
const EARLY_BODY_LIMIT = 64 * 1024;

/**
 * An upstream response body. undici's chunks go straight to one consumer (no intermediate stream): chunks that
 * arrive before the consumer attaches are held (pausing the upstream past 64 KiB), then handed over in order.
 * Destroying an unfinished body aborts the upstream request, and undici then destroys that connection.
 */
export class UpstreamBody {
  #controller: Dispatcher.DispatchController;
  #held: Buffer[] | undefined;
  #heldBytes = 0;
  #sink: BodySink | undefined;
  #discard = false;
  #ended = false;
  #error: Error | undefined;
  #destroyed = false;
  #trailers: UpstreamTrailers | undefined;

  constructor(controller: Dispatcher.DispatchController) {
    this.#controller = controller;
  }

  /** True once the last byte arrived. */
  get ended(): boolean { return this.#ended; }

  /** True once destroyed (by the consumer or an upstream error). */
  get destroyed(): boolean { return this.#destroyed; }

  /** The upstream's trailers once the body ended, if it sent any (unfiltered). */
  get trailers(): UpstreamTrailers | undefined { return this.#trailers; }

  /** Deliver every chunk to `sink`, starting with those already held. */
  pipeTo(sink: BodySink): void {
    this.#sink = sink;
    const held = this.#held;
    this.#held = undefined;
    this.#heldBytes = 0;
    let flowing = true;
    if (held) for (const c of held) flowing = sink.write(c) && flowing;
    if (this.#error) { sink.error(this.#error); return; }
    if (this.#ended) { sink.end(this.#trailers); return; }
    if (flowing) this.resume();
    else this.#controller.pause();
  }

  /** Read on (after the sink drained), or, without a sink, throw the rest away (mirrors, abandoned bodies). */
  resume(): void {
    if (!this.#sink) { this.#discard = true; this.#held = undefined; this.#heldBytes = 0; }
    if (this.#controller.paused && !this.#controller.aborted) this.#controller.resume();
  }

  /** Stop reading; an unfinished body aborts its upstream request. */
  destroy(reason?: Error): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#held = undefined;
    if (!this.#ended && !this.#controller.aborted) this.#controller.abort(reason ?? new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'response body abandoned by the client side'));
  }

  /**
   * When the whole body has arrived already (a small answer: head, body and end in one read), write it to `out` and
   * end it at once, with no sink or listeners; false, with nothing written, otherwise.
   */
  writeWholeTo(out: { write(chunk: Buffer): unknown; end(chunk?: Buffer): unknown }): boolean {
    if (!this.#ended || this.#destroyed || this.#sink || this.#discard) return false;
    const held = this.#held;
    this.#held = undefined;
    this.#heldBytes = 0;
    this.#discard = true;
    if (held === undefined) out.end();
    else if (held.length === 1) out.end(held[0]);
    else { for (const c of held) out.write(c); out.end(); }
    return true;
  }

  /** The whole body (small answers only: a declined upgrade). */
  collect(): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      this.pipeTo({ write: (c) => { chunks.push(c); return true; }, end: () => resolve(Buffer.concat(chunks)), error: reject });
    });
  }

  /** @internal undici's data callback. */
  push(chunk: Buffer): void {
    if (this.#destroyed || this.#discard) return;
    if (this.#sink) { if (!this.#sink.write(chunk)) this.#controller.pause(); return; }
    (this.#held ??= []).push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#heldBytes > EARLY_BODY_LIMIT) this.#controller.pause();
  }

  /** @internal undici's end callback. */
  finish(trailers?: UpstreamTrailers): void {
    this.#ended = true;
    if (trailers !== undefined && Object.keys(trailers).length > 0) this.#trailers = trailers;
    if (!this.#destroyed) this.#sink?.end(this.#trailers);
  }

  /** @internal undici's error callback after the head. */
  fail(err: Error): void {
    if (this.#ended || this.#destroyed) return;
    this.#error = err;
    this.#destroyed = true;
    this.#sink?.error(err);
  }
}

/**
 * One request in flight: the handler undici calls (a class, so a request costs one object, not a set of closures)
 * and the `UpstreamCall` the proxy awaits.
 */
class UpstreamExchange implements Dispatcher.DispatchHandler, UpstreamCall {
  result: Promise<UpstreamResponse | UpstreamUpgrade>;
  #resolve!: (v: UpstreamResponse | UpstreamUpgrade) => void;
  #reject!: (e: Error) => void;
  #controller: Dispatcher.DispatchController | undefined;
  #cancelled: Error | undefined;
  #settled = false;
  #started = false;
  #body: UpstreamBody | undefined;
  readonly #pool: Dispatcher;

  constructor(pool: Dispatcher) {
    this.#pool = pool;
    this.result = new Promise<UpstreamResponse | UpstreamUpgrade>((res, rej) => { this.#resolve = res; this.#reject = rej; });
  }

  #settleOk(v: UpstreamResponse | UpstreamUpgrade): void { if (!this.#settled) { this.#settled = true; this.#resolve(v); } }
  #settleErr(e: Error): void { if (!this.#settled) { this.#settled = true; this.#reject(e); } }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.#controller = c;
    this.#started = true;
    if (this.#cancelled) c.abort(this.#cancelled);
  }

  onRequestUpgrade(_c: Dispatcher.DispatchController, _statusCode: number, headers: UpstreamUpgrade['headers'], socket: Duplex): void {
    this.#settleOk({ kind: 'upgrade', headers, socket });
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, headers: UpstreamResponse['headers']): void {
    if (statusCode < 200) return; // 100 Continue and friends stay between undici and the server
    const bad = checkResponseHead(c.rawHeaders as (Buffer | string)[] | undefined, statusCode);
    if (bad) {
      // Aborting mid-response makes undici destroy the socket: the connection is never reused.
      const err = new ProxyError('NM_ERR_PROXY_UPSTREAM_PROTOCOL', `upstream ${bad}`);
      this.#settleErr(err);
      c.abort(err);
      return;
    }
    this.#body = new UpstreamBody(c);
    this.#settleOk({ kind: 'response', statusCode, headers, body: this.#body });
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void { this.#body?.push(chunk); }

  onResponseEnd(_c: Dispatcher.DispatchController, trailers?: UpstreamTrailers): void {
    // Framing or connection fields in a trailer section are a server out of step with its own framing (undici's
    // parser then misreads the next response on that connection): the response has gone out, so instead the
    // connections behind it are retired (a closed pool finishes what runs and is replaced on next use).
    if (trailers !== undefined && hasFramingTrailer(trailers)) this.#pool.close().catch(() => {});
    this.#body?.finish(trailers);
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    const e = classifyUpstreamError(err);
    this.#settleErr(e);
    this.#body?.fail(e);
  }

  /** Dispatch failed synchronously (invalid request for undici). */
  failNow(err: Error): void { this.#settleErr(classifyUpstreamError(err)); }

  abort(reason: Error): void {
    this.#cancelled = reason;
    this.#settleErr(reason);
    const c = this.#controller;
    if (c && !c.aborted) c.abort(reason);
    this.#body?.destroy(reason);
  }

  sent(): boolean { return this.#started; }
}

/** Send `req` on `pool`. The head is checked before anything reaches the client; a bad one aborts the connection. */
export function sendUpstream(pool: Dispatcher | H2Pool, req: UpstreamRequest): UpstreamCall {
  if (pool instanceof H2Pool) return pool.send(req);
  const call = new UpstreamExchange(pool);
  try {
    pool.dispatch({
      path: req.path,
      method: req.method as Dispatcher.HttpMethod,
      // A flat [name, value, ...] list: undici validates each pair and writes them in order.
      headers: req.headers,
      body: req.body ?? null,
      idempotent: req.idempotent,
      upgrade: req.upgrade ?? null,
      blocking: true,
    }, call);
  } catch (err) {
    call.failNow(err as Error);
  }
  return call;
}

/** True when a trailer section carries fields that frame messages or manage the connection. */
export function hasFramingTrailer(trailers: UpstreamTrailers): boolean {
  for (const k of Object.keys(trailers)) {
    const name = k.toLowerCase();
    if (name === 'transfer-encoding' || name === 'content-length' || name === 'connection' || name === 'upgrade') return true;
  }
  return false;
}

/** Map undici's errors onto ours: connect failures (safe to retry anywhere), resets, protocol violations. */
export function classifyUpstreamError(err: Error): ProxyError {
  if (err instanceof ProxyError) return err;
  const code = (err as Error & { code?: string }).code ?? '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || isHboneConnectError(err)) {
    return new ProxyError('NM_ERR_PROXY_UPSTREAM_CONNECT', `upstream connect failed (${code || err.message}); is the endpoint listening?`, { cause: err });
  }
  if (code.startsWith('HPE_') || /does not match the HTTP\/1\.1 protocol|bad upgrade|bad response|content-length/i.test(err.message)) {
    return new ProxyError('NM_ERR_PROXY_UPSTREAM_PROTOCOL', `upstream sent an invalid response (${err.message})`, { cause: err });
  }
  return new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', `upstream connection failed (${code || err.message})`, { cause: err });
}
