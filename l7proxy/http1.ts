/** Strict HTTP/1 downstream: Node's llhttp in strict mode plus the framing checks it leaves to us. */
// What Node 24's llhttp already rejects (checked by raw-socket tests in smuggling.test.ts): CL+TE, duplicate or
// non-decimal Content-Length (`+1`, `0x1`, `1, 1`), TE lists ending in something other than chunked, `xchunked`,
// duplicate TE, chunk-size tricks, chunk-extension floods, bare CR or LF, obs-fold, NUL/CTL in values, space before
// the colon, invalid target bytes, oversized heads. What it accepts and we refuse here: Content-Length with leading
// zeros, `Transfer-Encoding` other than exactly `chunked` (`identity, chunked`, `gzip, chunked`), TE on HTTP/1.0,
// HTTP/0.9 and `HTTP/2.0` request lines, more than 100 header fields, duplicate Host, `_` in header names.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { EffectiveLimits } from './config.ts';
import { RequestRejection } from './errors.ts';

/** Why a parsed HTTP/1 request must not be forwarded, or undefined when it may go on. */
export function checkHttp1Request(req: Pick<IncomingMessage, 'httpVersionMajor' | 'httpVersionMinor' | 'rawHeaders'>, limits: Pick<EffectiveLimits, 'maxHeaderCount'>): RequestRejection | undefined {
  if (req.httpVersionMajor !== 1 || (req.httpVersionMinor !== 0 && req.httpVersionMinor !== 1)) {
    return new RequestRejection(400, `unsupported HTTP version ${req.httpVersionMajor}.${req.httpVersionMinor}`);
  }
  const raw = req.rawHeaders;
  if (raw.length / 2 > limits.maxHeaderCount) return new RequestRejection(431, `more than ${limits.maxHeaderCount} header fields`);
  let cl = 0; let te = 0; let host = 0;
  for (let i = 0; i < raw.length; i += 2) {
    // Only names as long as Host (4), Content-Length (14) or Transfer-Encoding (17) need a closer look.
    const len = raw[i]!.length;
    if (len !== 4 && len !== 14 && len !== 17) continue;
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    if (name === 'content-length') {
      cl++;
      if (!/^(0|[1-9][0-9]{0,15})$/.test(value)) return new RequestRejection(400, 'Content-Length must be a plain decimal without leading zeros');
    } else if (name === 'transfer-encoding') {
      te++;
      if (value.toLowerCase() !== 'chunked') return new RequestRejection(400, 'Transfer-Encoding other than exactly "chunked"');
    } else if (name === 'host') host++;
  }
  if (cl > 1) return new RequestRejection(400, 'duplicate Content-Length');
  if (te > 1) return new RequestRejection(400, 'duplicate Transfer-Encoding');
  if (cl > 0 && te > 0) return new RequestRejection(400, 'both Content-Length and Transfer-Encoding');
  if (te > 0 && req.httpVersionMinor === 0) return new RequestRejection(400, 'Transfer-Encoding in an HTTP/1.0 request');
  if (host !== 1) return new RequestRejection(400, host === 0 ? 'missing Host header' : 'duplicate Host header');
  return undefined;
}

/** True for a WebSocket upgrade the proxy will tunnel; other Upgrade tokens (h2c!) are served as plain requests. */
export function isWebSocketUpgrade(req: Pick<IncomingMessage, 'headers' | 'method'>): boolean {
  const up = req.headers.upgrade;
  return req.method === 'GET' && typeof up === 'string' && up.trim().toLowerCase() === 'websocket';
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

/** Write a minimal error response on a raw socket and close it (for parse errors and refused upgrades). */
export function writeRawErrorAndClose(socket: Duplex, status: number, reason: string): void {
  if (!socket.writable) { socket.destroy(); return; }
  const body = `${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  // A client that never reads must not keep the socket: give the write a moment, then cut.
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Handlers the HTTP/1 server calls. */
export type Http1Handlers = {
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A framing error from llhttp; the socket is closed after the answer. */
  parseError(code: string, socket: Socket): void;
};

/**
 * An http.Server that never listens: the proxy hands it sockets with `emit('connection')`. llhttp stays strict
 * (insecureHTTPParser false), heads are capped at `maxHeaderBytes`, Host is required, and a framing error gets a
 * 400/431 written on the socket, which is then closed (never left for the next request to reuse).
 */
export function createHttp1Server(limits: EffectiveLimits, handlers: Http1Handlers): http.Server {
  const server = http.createServer({
    insecureHTTPParser: false,
    maxHeaderSize: limits.maxHeaderBytes,
    requireHostHeader: true,
    joinDuplicateHeaders: false,
    keepAliveTimeout: limits.downstreamIdleTimeoutMs,
    headersTimeout: limits.requestHeadersTimeoutMs,
    requestTimeout: Math.max(300_000, limits.requestHeadersTimeoutMs + 1),
    // How often slow heads are swept; the proxy emits 'listening' on this never-listening server to start it.
    connectionsCheckingInterval: Math.min(1000, limits.requestHeadersTimeoutMs / 2),
    shouldUpgradeCallback: (req) => isWebSocketUpgrade(req),
  });
  server.on('request', handlers.request);
  server.on('upgrade', handlers.upgrade);
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => writeRawErrorAndClose(socket, 405, 'CONNECT is not supported here'));
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    handlers.parseError(err.code ?? 'UNKNOWN', socket);
    // Node's own rule: answer only when no response of an earlier (pipelined) request is in flight, else the
    // client would read our 400 as that request's response.
    // When the in-flight response belongs to the request whose body just failed to parse (it is incomplete, and
    // requests are parsed in order) and nothing of it was sent yet, the 400 is that request's answer.
    const inflight = (socket as Socket & { _httpMessage?: { _headerSent?: boolean; req?: { complete?: boolean } } })._httpMessage;
    const ownsError = inflight !== undefined && inflight !== null && !inflight._headerSent && inflight.req?.complete === false;
    if (err.code === 'ECONNRESET' || (inflight && !ownsError)) { socket.destroy(); return; }
    if (inflight) inflight._headerSent = true; // the handler must not write a second response on this socket
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT' ? 408 : 400;
    writeRawErrorAndClose(socket, status, status === 431 ? 'request header fields too large' : `malformed request (${err.code ?? 'parse error'})`);
  });
  return server;
}
