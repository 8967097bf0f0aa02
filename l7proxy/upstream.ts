/** Upstream HTTP with undici: one pool per (source identity, endpoint), hostile responses refused at the head. */
// Why per identity: a connection carries one workload's identity (its mTLS certificate once the tunnel layer sits
// under this), so two pods must never share one, even to the same endpoint (ref. B7, confused deputy).
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { ProxyError } from './errors.ts';
import { isHboneConnectError } from './hbone/errors.ts';
import type { HeaderList } from './route.ts';
import { toHeaderObject } from './headers.ts';

/** Connection settings of a pool; a change of these makes a new pool. */
export type PoolOptions = { connectTimeoutMs: number; idleTimeoutMs: number; maxConnections: number | undefined };

/** One request to send upstream. */
export type UpstreamRequest = {
  method: string;
  path: string;
  headers: HeaderList;
  /** Buffered body, a stream to pipe, or nothing. */
  body: Buffer | Readable | undefined;
  /** Only then may undici replay it on a fresh connection. */
  idempotent: boolean;
  /** Set for a WebSocket upgrade (the token sent in Upgrade). */
  upgrade?: string;
};

/** A response whose head passed the checks; `body` streams the rest. */
export type UpstreamResponse = {
  kind: 'response';
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
};

/** A 101 to a requested upgrade: the raw upstream socket, now a tunnel. */
export type UpstreamUpgrade = { kind: 'upgrade'; headers: Record<string, string | string[] | undefined>; socket: Duplex };

/** A request in flight: its result, and `abort` to cancel it (timeouts, client gone). */
export type UpstreamCall = { result: Promise<UpstreamResponse | UpstreamUpgrade>; abort(reason: Error): void; sent(): boolean };

/**
 * Why a response head is unsafe to relay, or undefined. undici's llhttp already refuses bad characters, bare LF
 * and obs-fold; the framing ambiguities below only surface at the end of the body there, too late for a 502.
 */
export function checkResponseHead(rawHeaders: readonly (Buffer | string)[] | undefined): string | undefined {
  if (!rawHeaders) return undefined;
  let cl = 0; let te = 0; let teValue = '';
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toString().toLowerCase();
    const value = rawHeaders[i + 1]!.toString();
    if (name === 'content-length') {
      cl++;
      if (!/^[0-9]{1,16}$/.test(value.trim())) return 'invalid Content-Length in response';
    } else if (name === 'transfer-encoding') { te++; teValue = value.trim().toLowerCase(); }
  }
  if (cl > 1) return 'duplicate Content-Length in response';
  if (te > 0 && cl > 0) return 'both Content-Length and Transfer-Encoding in response';
  if (te > 1 || (te === 1 && teValue !== 'chunked')) return 'Transfer-Encoding other than exactly "chunked" in response';
  return undefined;
}

/** What an upstream connection is for: the source identity it carries and the endpoint it reaches. */
export type UpstreamTarget = {
  /** SPIFFE ID of the source workload, or `anon:<source address>`. */
  identity: string;
  ip: string;
  port: number;
  timeoutMs: number;
};

/**
 * Opens the byte stream under one upstream connection: plain TCP, an HBONE CONNECT stream to another node's proxy,
 * or a same-node hand-off. Rejects with an error whose code says whether anything was sent (see classifyUpstreamError).
 */
export type UpstreamConnector = (target: UpstreamTarget) => Promise<Duplex>;

/** Pools by key; `close` drains them, `prune` closes those no longer wanted. */
export class UpstreamPools {
  #pools = new Map<string, Pool>();
  readonly #connector: UpstreamConnector | undefined;

  /** `connector` replaces undici's own TCP connect (the mesh tunnel plugs in here); absent → plain TCP. */
  constructor(connector?: UpstreamConnector) {
    this.#connector = connector;
  }

  /** The pool for `identity` (SPIFFE ID, or `anon:<source address>`) to `origin` with `opts`. */
  get(identity: string, ip: string, port: number, opts: PoolOptions): Pool {
    const origin = ip.includes(':') ? `http://[${ip}]:${port}` : `http://${ip}:${port}`;
    const key = `${identity}|${origin}|${opts.connectTimeoutMs}|${opts.idleTimeoutMs}|${opts.maxConnections ?? ''}`;
    let pool = this.#pools.get(key);
    if (!pool || pool.closed || pool.destroyed) {
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

/** Send `req` on `pool`. The head is checked before anything reaches the client; a bad one aborts the connection. */
export function sendUpstream(pool: Dispatcher, req: UpstreamRequest): UpstreamCall {
  let controller: Dispatcher.DispatchController | undefined;
  let cancelled: Error | undefined;
  let settled = false;
  let started = false;
  let body: PassThrough | undefined;
  let resolveFn!: (v: UpstreamResponse | UpstreamUpgrade) => void;
  let rejectFn!: (e: Error) => void;
  const result = new Promise<UpstreamResponse | UpstreamUpgrade>((res, rej) => { resolveFn = res; rejectFn = rej; });
  const settle = (fn: () => void): void => { if (!settled) { settled = true; fn(); } };

  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(c) {
      controller = c;
      started = true;
      if (cancelled) c.abort(cancelled);
    },
    onRequestUpgrade(_c, _statusCode, headers, socket) {
      settle(() => resolveFn({ kind: 'upgrade', headers: headers as UpstreamUpgrade['headers'], socket }));
    },
    onResponseStart(c, statusCode, headers) {
      if (statusCode < 200) return; // 100 Continue and friends stay between undici and the server
      const bad = checkResponseHead(c.rawHeaders as (Buffer | string)[] | undefined);
      if (bad) {
        // Aborting mid-response makes undici destroy the socket: the connection is never reused.
        const err = new ProxyError('NM_ERR_PROXY_UPSTREAM_PROTOCOL', `upstream ${bad}`);
        settle(() => rejectFn(err));
        c.abort(err);
        return;
      }
      body = new PassThrough({ highWaterMark: 64 * 1024 });
      body.on('drain', () => c.resume());
      // A consumer that destroys the body (client gone) cancels the upstream request too.
      body.on('close', () => { if (!body!.readableEnded) c.abort(new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'response body abandoned by the client side')); });
      const b = body;
      settle(() => resolveFn({ kind: 'response', statusCode, headers: headers as UpstreamResponse['headers'], body: b }));
    },
    onResponseData(c, chunk) {
      if (body && !body.write(chunk)) c.pause();
    },
    onResponseEnd() {
      body?.end();
    },
    onResponseError(_c, err) {
      const e = classifyUpstreamError(err);
      settle(() => rejectFn(e));
      if (body && !body.destroyed) body.destroy(e);
    },
  };
  const body0 = req.body;
  try {
    pool.dispatch({
      path: req.path,
      method: req.method as Dispatcher.HttpMethod,
      headers: toHeaderObject(req.headers),
      body: body0 ?? null,
      idempotent: req.idempotent,
      upgrade: req.upgrade ?? null,
      blocking: true,
    }, handler);
  } catch (err) {
    settle(() => rejectFn(classifyUpstreamError(err as Error)));
  }
  return {
    result,
    abort(reason: Error) {
      cancelled = reason;
      settle(() => rejectFn(reason));
      if (controller && !controller.aborted) controller.abort(reason);
      if (body && !body.destroyed) body.destroy(reason);
    },
    sent: () => started,
  };
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
