/** HTTP/2 with prior knowledge (h2c) to a backend: node:http2 sessions per (identity, endpoint), one stream per request. */
// Why node:http2 and not undici's h2c client: undici 8.12 reports an upstream RST_STREAM that arrives after the
// response head as a clean end (a truncated body would look complete), cannot send request trailers, and cancels
// with RST_STREAM(NO_ERROR) when the request body failed. Here every outcome is decided at the stream's 'close',
// from its rstCode, and both directions carry trailers.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import net from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { ProxyError } from './errors.ts';
import { classifyUpstreamError, UpstreamBody, type UpstreamCall, type UpstreamConnector, type UpstreamRequest, type UpstreamResponse, type UpstreamTrailers, type UpstreamUpgrade } from './upstream.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = http2.constants;

/** Streams opened at once on one upstream session before another session is opened (fewer if the server says so). */
export const H2_MAX_STREAMS_PER_SESSION = 100;

/** Limits on what a backend may make the proxy hold for one session (a hostile upstream gets GOAWAY). */
const SESSION_OPTIONS: http2.ClientSessionOptions = {
  settings: { enablePush: false, initialWindowSize: 1024 * 1024, maxHeaderListSize: 64 * 1024 },
  maxSessionMemory: 10,
  maxHeaderListPairs: 256,
  maxSettings: 32,
  maxOutstandingPings: 10,
  peerMaxConcurrentStreams: H2_MAX_STREAMS_PER_SESSION,
};

/** Where the sessions of one pool go and how. */
export type H2PoolOptions = {
  identity: string;
  ip: string;
  port: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Most sessions at once; beyond it streams share the least-loaded session (nghttp2 queues over its limit). */
  maxConnections: number | undefined;
  connector: UpstreamConnector | undefined;
};

type Session = { session: ClientHttp2Session; active: number };

/** The HTTP/2 counterpart of an undici Pool: sessions to one endpoint for one identity, streams spread over them. */
export class H2Pool {
  readonly #opts: H2PoolOptions;
  readonly #authority: string;
  #sessions: Session[] = [];
  #connecting: Promise<Session> | undefined;
  #closed = false;
  #destroyed = false;

  constructor(opts: H2PoolOptions) {
    this.#opts = opts;
    this.#authority = opts.ip.includes(':') ? `http://[${opts.ip}]:${opts.port}` : `http://${opts.ip}:${opts.port}`;
  }

  get closed(): boolean { return this.#closed; }
  get destroyed(): boolean { return this.#destroyed; }
  /** Open sessions (tests check multiplexing with it). */
  get sessionCount(): number { return this.#sessions.length; }

  /** No new streams; open sessions finish theirs and close. */
  close(): Promise<void> {
    this.#closed = true;
    const all = this.#sessions;
    this.#sessions = [];
    return Promise.all(all.map((s) => new Promise<void>((r) => { if (s.session.closed || s.session.destroyed) r(); else s.session.close(() => r()); }))).then(() => {});
  }

  /** Every session and stream cut now. */
  destroy(): Promise<void> {
    this.#closed = true;
    this.#destroyed = true;
    for (const s of this.#sessions) s.session.destroy();
    this.#sessions = [];
    return Promise.resolve();
  }

  /** Send one request as one stream. */
  send(req: UpstreamRequest): UpstreamCall {
    const call = new H2Call(req, this.#authority);
    if (this.#closed) { call.fail(new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'upstream pool closed'), false); return call; }
    const ready = this.#pick();
    if (ready) call.start(ready);
    else this.#session().then((s) => call.start(s), (err: Error) => call.fail(err, false));
    return call;
  }

  /** A usable session with a free stream slot, or (at the connection limit) the least-loaded one. */
  #pick(): Session | undefined {
    let best: Session | undefined;
    for (const s of this.#sessions) {
      if (s.session.closed || s.session.destroyed) continue;
      const limit = Math.min(H2_MAX_STREAMS_PER_SESSION, s.session.remoteSettings.maxConcurrentStreams ?? H2_MAX_STREAMS_PER_SESSION);
      if (s.active < limit) return s;
      if (!best || s.active < best.active) best = s;
    }
    const max = this.#opts.maxConnections;
    return best && max !== undefined && this.#sessions.length >= max ? best : undefined;
  }

  #session(): Promise<Session> {
    // Requests that arrive while a session is being opened share it.
    this.#connecting ??= this.#connect().finally(() => { this.#connecting = undefined; });
    return this.#connecting;
  }

  async #connect(): Promise<Session> {
    const o = this.#opts;
    let socket: Duplex;
    try {
      socket = o.connector ? await o.connector({ identity: o.identity, ip: o.ip, port: o.port, timeoutMs: o.connectTimeoutMs }) : await connectPlain(o.ip, o.port, o.connectTimeoutMs);
    } catch (err) {
      throw classifyUpstreamError(err as Error);
    }
    if (this.#closed) { socket.destroy(); throw new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', 'upstream pool closed'); }
    const session = http2.connect(this.#authority, { ...SESSION_OPTIONS, createConnection: () => socket });
    const entry: Session = { session, active: 0 };
    const forget = (): void => { this.#sessions = this.#sessions.filter((s) => s !== entry); };
    session.on('error', () => { forget(); session.destroy(); });
    session.on('close', forget);
    // After GOAWAY no new stream may go on this session; those in flight finish (or fail, if past lastStreamID).
    session.on('goaway', forget);
    session.setTimeout(o.idleTimeoutMs, () => { if (entry.active === 0) { forget(); session.close(); } });
    // Sockets from a connector are already connected: 'connect' may never fire for them, SETTINGS go out at once.
    this.#sessions.push(entry);
    return entry;
  }
}

/** Plain TCP connect within `timeoutMs`; errors carry the socket's code (ECONNREFUSED...) for classification. */
function connectPlain(ip: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    const timer = setTimeout(() => { s.destroy(); reject(Object.assign(new Error(`connect to ${ip}:${port} timed out after ${timeoutMs} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' })); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.off('error', onError); s.setNoDelay(true); resolve(s); });
    const onError = (err: Error): void => { clearTimeout(timer); reject(err); };
    s.once('error', onError);
  });
}

/** Flow control of one response stream in the shape `UpstreamBody` drives (pause, resume, abort). */
class StreamController {
  paused = false;
  aborted = false;
  readonly #stream: ClientHttp2Stream;
  readonly #onAbort: (reason: Error) => void;
  constructor(stream: ClientHttp2Stream, onAbort: (reason: Error) => void) { this.#stream = stream; this.#onAbort = onAbort; }
  pause(): void { this.paused = true; this.#stream.pause(); }
  resume(): void { this.paused = false; this.#stream.resume(); }
  abort(reason: Error): void { if (this.aborted) return; this.aborted = true; this.#onAbort(reason); }
}

/** The request headers as HTTP/2 wants them: pseudo-headers first, Host as :authority, lower-case names. */
export function computeH2RequestHeaders(method: string, path: string, flat: readonly string[]): OutgoingHttpHeaders {
  const h: OutgoingHttpHeaders = { ':method': method, ':scheme': 'http', ':path': path };
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!;
    const value = flat[i + 1]!;
    if (name === 'host') { h[':authority'] = value; continue; }
    const prev = h[name];
    if (prev === undefined) h[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else h[name] = [String(prev), value];
  }
  return h;
}

/** One request on one stream: the `UpstreamCall` the proxy awaits. */
class H2Call implements UpstreamCall {
  result: Promise<UpstreamResponse | UpstreamUpgrade>;
  #resolve!: (v: UpstreamResponse) => void;
  #reject!: (e: Error) => void;
  #settled = false;
  #sent = false;
  #cancelled: Error | undefined;
  #stream: ClientHttp2Stream | undefined;
  #body: UpstreamBody | undefined;
  readonly #req: UpstreamRequest;
  readonly #authority: string;

  constructor(req: UpstreamRequest, authority: string) {
    this.#req = req;
    this.#authority = authority;
    this.result = new Promise<UpstreamResponse>((res, rej) => { this.#resolve = res; this.#reject = rej; });
  }

  /** The request never became a stream (connect failed, pool closed); `sent` says whether that is retry-safe. */
  fail(err: Error, sent: boolean): void {
    this.#sent = sent;
    if (!this.#settled) { this.#settled = true; this.#reject(err); }
  }

  start(s: Session): void {
    if (this.#cancelled) return;
    const req = this.#req;
    const headers = computeH2RequestHeaders(req.method, req.path, req.headers);
    if (headers[':authority'] === undefined) headers[':authority'] = this.#authority.slice(7);
    const body = req.body;
    let stream: ClientHttp2Stream;
    try {
      stream = s.session.request(headers, { endStream: body === undefined, waitForTrailers: body !== undefined && req.trailers !== undefined });
    } catch (err) {
      // A session closing under us (GOAWAY just arrived): nothing reached the server.
      this.fail(classifyUpstreamError(err as Error), false);
      return;
    }
    this.#stream = stream;
    this.#sent = true;
    s.active++;
    let responded = false;
    let trailers: UpstreamTrailers | undefined;
    stream.on('response', (h: IncomingHttpHeaders) => {
      responded = true;
      const status = Number(h[':status']);
      if (!this.#settled) { this.#settled = true; this.#resolve({ kind: 'response', statusCode: status, headers: h as UpstreamResponse['headers'], body: bodyOut }); }
    });
    // The body exists from the start: on a session over a JS stream (a tunnel) DATA can be emitted before
    // 'response' is, and must be held, not lost.
    const bodyOut = new UpstreamBody(new StreamController(stream, (reason) => this.#cancel(reason)) as unknown as Dispatcher.DispatchController);
    this.#body = bodyOut;
    stream.on('data', (chunk: Buffer) => { bodyOut.push(chunk); });
    stream.on('trailers', (t: IncomingHttpHeaders) => { trailers = t as UpstreamTrailers; });
    if (req.trailers !== undefined && body !== undefined) {
      const get = req.trailers;
      stream.on('wantTrailers', () => { const t = get(); stream.sendTrailers(t ?? {}); });
    }
    // A clean end is 'end' (emitted only once every DATA byte was delivered; 'close' can come first and would
    // drop what is still buffered); a reset never emits 'end', only 'error' and 'close' with its rstCode.
    let ended = false;
    stream.on('end', () => { ended = true; bodyOut.finish(trailers); });
    stream.on('error', () => { /* the outcome is decided at 'close' from rstCode */ });
    stream.on('close', () => {
      s.active--;
      if (ended && responded) return;
      const code = stream.rstCode ?? NGHTTP2_NO_ERROR;
      const why = this.#cancelled ?? new ProxyError('NM_ERR_PROXY_UPSTREAM_RESET', `upstream ${code === NGHTTP2_NO_ERROR ? 'closed' : 'reset'} the stream (HTTP/2 error code ${code})${responded ? ' before the end of the response' : ''}`);
      // REFUSED_STREAM: the server did not process it (RFC 9113 §8.7), safe to send again anywhere.
      if (code === NGHTTP2_REFUSED_STREAM && !responded) this.#sent = false;
      if (!this.#settled) { this.#settled = true; this.#reject(why); }
      bodyOut.fail(why);
    });
    if (body === undefined) return;
    if (Buffer.isBuffer(body)) { stream.end(body); return; }
    pipeBody(body, stream);
  }

  #cancel(reason: Error): void {
    this.#cancelled ??= reason;
    const st = this.#stream;
    if (st && !st.closed && !st.destroyed) st.close(NGHTTP2_CANCEL);
  }

  abort(reason: Error): void {
    this.#cancel(reason);
    if (!this.#settled) { this.#settled = true; this.#reject(reason); }
    this.#body?.destroy(reason);
  }

  sent(): boolean { return this.#sent; }
}

/** Pipe a streamed request body into the stream; a body that fails (client reset) cancels the stream. */
function pipeBody(body: Readable, stream: ClientHttp2Stream): void {
  body.pipe(stream);
  body.once('error', () => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); });
  stream.once('close', () => { body.unpipe(stream); });
}
