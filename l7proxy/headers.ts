/** Header hygiene: hop-by-hop removal, client-sent identity/forwarding headers dropped, the proxy's own set. */
// Why drop rather than append: a header the client wrote (x-forwarded-client-cert, x-spiffe-id, forwarded, ...)
// would otherwise reach the backend looking as if the mesh vouched for it (ref. B7; Envoy GHSA-w5w5-487h-qv8q).
import { randomUUID } from 'node:crypto';
import type { HeaderList } from './route.ts';

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus their non-standard relatives; never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);
/** Headers only the mesh may set; whatever a client sent under these names is removed. */
const UNTRUSTED = /^(x-forwarded-.*|forwarded|x-real-ip|x-envoy-.*|x-nodemesh-.*|x-spiffe-id|x-forwarded-client-cert|x-client-cert.*|x-ssl-client-.*|proxy-.*|l5d-.*)$/;
/** Framing and routing headers the proxy computes itself. */
const RECOMPUTED = new Set(['host', 'content-length', 'expect']);
/** Request ids we pass on as they are; anything else is replaced. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** The header naming the source workload's SPIFFE ID, set by the proxy only. */
export const SOURCE_IDENTITY_HEADER = 'x-nodemesh-source-identity';
/** The header saying which circuit-breaker limit refused a request. */
export const OVERLOADED_HEADER = 'x-nodemesh-overloaded';
const SPIFFE_SAFE = /^spiffe:\/\/[a-z0-9.\-_]+(\/[A-Za-z0-9._\-~%]+)+$/;

/** `keep-alive` alone: a Connection value that lists no header beyond the hop-by-hop set (Keep-Alive is in it). */
function isPlainConnectionValue(v: string): boolean {
  return v.length === 10 && v.toLowerCase() === 'keep-alive';
}

/** Connection tokens: the names of headers the sender marked hop-by-hop, lower-cased. */
function connectionTokens(rawHeaders: readonly string[]): Set<string> | undefined {
  let out: Set<string> | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'connection') continue;
    const value = rawHeaders[i + 1]!;
    // The usual value names no other header.
    if (isPlainConnectionValue(value)) continue;
    out ??= new Set<string>();
    for (const t of value.split(',')) { const v = t.trim().toLowerCase(); if (v) out.add(v); }
  }
  return out;
}

/** Outcome of cleaning request headers: the list to forward, or the name of a header that forbids the request. */
export type CleanedHeaders = { ok: true; headers: HeaderList; teTrailers: boolean } | { ok: false; reason: string };

/**
 * The end-to-end request headers of `rawHeaders` (alternating name, value), lower-cased, without hop-by-hop
 * headers, headers named in Connection, untrusted identity/forwarding headers, pseudo-headers and the ones the
 * proxy recomputes (Host, Content-Length, Expect). `TE: trailers` survives as the only TE value that may.
 */
export function computeRequestHeaders(rawHeaders: readonly string[], underscores: 'reject' | 'drop' | 'allow'): CleanedHeaders {
  const listed = connectionTokens(rawHeaders);
  const out: HeaderList = [];
  let teTrailers = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    if (name.startsWith(':')) continue;
    if (name.includes('_')) {
      if (underscores === 'reject') return { ok: false, reason: `header name with underscore (${name}) is rejected` };
      if (underscores === 'drop') continue;
    }
    if (name === 'te') { if (/(^|,)\s*trailers\s*(;|,|$)/i.test(value)) teTrailers = true; continue; }
    if (HOP_BY_HOP.has(name) || (listed !== undefined && listed.has(name)) || UNTRUSTED.test(name) || RECOMPUTED.has(name)) continue;
    out.push([name, value]);
  }
  return { ok: true, headers: out, teTrailers };
}

/** What the proxy adds to the cleaned request headers. */
export type ProxyHeaderInput = {
  headers: HeaderList;
  authority: string;
  clientAddress: string | undefined;
  sourceSpiffeId: string | undefined;
  teTrailers: boolean;
};

/** The headers the proxy adds after cleaning: forwarding facts and, when known, the source identity. */
export function computeProxyHeaders(input: ProxyHeaderInput): HeaderList {
  const flat = computeProxyHeaderList(input);
  const out: HeaderList = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

let lastSafeSpiffeId = '';

/** Whether a SPIFFE ID may be copied into a header (remembers the last good one: it repeats on a connection). */
function isSafeSpiffeId(id: string): boolean {
  if (id === lastSafeSpiffeId) return true;
  if (!SPIFFE_SAFE.test(id)) return false;
  lastSafeSpiffeId = id;
  return true;
}

/**
 * `computeProxyHeaders` as the flat `[name, value, ...]` list undici takes, built in one pass (the per-request form):
 * Host first, the cleaned headers, then `x-request-id` (a client's well-formed one is kept), `x-forwarded-for`,
 * `x-forwarded-proto`, the source identity and `te: trailers`.
 */
export function computeProxyHeaderList(input: ProxyHeaderInput): string[] {
  const headers = input.headers;
  let keepRequestId = false;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h[0] === 'x-request-id' && REQUEST_ID.test(h[1])) { keepRequestId = true; break; }
  }
  const out: string[] = ['host', input.authority];
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (!keepRequestId && h[0] === 'x-request-id') continue;
    out.push(h[0], h[1]);
  }
  if (!keepRequestId) out.push('x-request-id', randomUUID());
  if (input.clientAddress) out.push('x-forwarded-for', input.clientAddress);
  out.push('x-forwarded-proto', 'http');
  // Only a structurally plain SPIFFE ID is copied, so no CR/LF or separator from a certificate reaches a header.
  if (input.sourceSpiffeId && isSafeSpiffeId(input.sourceSpiffeId)) out.push(SOURCE_IDENTITY_HEADER, input.sourceSpiffeId);
  if (input.teTrailers) out.push('te', 'trailers');
  return out;
}

/**
 * Response headers to send downstream: hop-by-hop and Connection-listed ones removed (HTTP/2 forbids them
 * outright), as an object with arrays for repeated names.
 */
export function computeResponseHeaders(headers: Record<string, string | string[] | undefined>): HeaderList {
  const flat = computeResponseHeaderList(headers);
  const out: HeaderList = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

/** `computeResponseHeaders` as a flat `[name, value, ...]` list (what `writeHead` takes without copying). */
export function computeResponseHeaderList(headers: Record<string, string | string[] | undefined>): string[] {
  const conn = headers['connection'];
  let listed: Set<string> | undefined;
  if (conn !== undefined && !(typeof conn === 'string' && isPlainConnectionValue(conn))) {
    listed = new Set<string>();
    for (const v of Array.isArray(conn) ? conn : [conn]) for (const t of v.split(',')) listed.add(t.trim().toLowerCase());
  }
  const out: string[] = [];
  const keys = Object.keys(headers);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = headers[k];
    if (v === undefined) continue;
    const name = k.toLowerCase();
    if (HOP_BY_HOP.has(name) || (listed !== undefined && listed.has(name)) || name.startsWith('proxy-') || name.startsWith(':')) continue;
    if (typeof v === 'string') out.push(name, v);
    else for (const one of v) out.push(name, one);
  }
  return out;
}

/** A flat `[name, value, ...]` list as pairs. */
export function toHeaderPairs(flat: readonly string[]): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

/** Pairs as a flat `[name, value, ...]` list. */
export function toFlatHeaders(list: HeaderList): string[] {
  const out: string[] = [];
  for (const [k, v] of list) out.push(k, v);
  return out;
}

/** A header list as the object `writeHead` and undici take: repeated names become arrays. */
export function toHeaderObject(list: HeaderList): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (const [k, v] of list) {
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [prev, v];
  }
  return out;
}

/** First value of a header in a list, repeated fields joined with ", " (how routing reads headers). */
export function readHeader(list: HeaderList, name: string): string | undefined {
  let out: string | undefined;
  for (const [k, v] of list) if (k === name) out = out === undefined ? v : `${out}, ${v}`;
  return out;
}

/**
 * Fields that must not travel in a trailer section (RFC 9110 §6.5.1): framing, routing, authentication, response
 * control and content metadata, cookies, plus everything hop-by-hop. A trailer is appended after the body, so a
 * recipient that merged such a field into the head would act on something the sender never vouched for there.
 */
const FORBIDDEN_TRAILERS = new Set([
  'content-length', 'transfer-encoding', 'host', 'authorization', 'proxy-authorization', 'www-authenticate',
  'proxy-authenticate', 'cookie', 'set-cookie', 'age', 'cache-control', 'expires', 'date', 'location', 'retry-after',
  'vary', 'warning', 'content-encoding', 'content-type', 'content-range', 'trailer', 'expect', 'max-forwards',
  'pragma', 'range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range',
]);

/**
 * The trailers to relay, as a flat `[name, value, ...]` list with lower-case names: hop-by-hop, forbidden and
 * pseudo fields, and any field the proxy itself owns (`x-nodemesh-*`), are dropped. Empty when nothing is left.
 */
export function computeTrailerList(trailers: Record<string, string | string[] | undefined> | undefined): string[] {
  const out: string[] = [];
  if (trailers === undefined) return out;
  for (const k of Object.keys(trailers)) {
    const v = trailers[k];
    if (v === undefined) continue;
    const name = k.toLowerCase();
    if (name.startsWith(':') || HOP_BY_HOP.has(name) || FORBIDDEN_TRAILERS.has(name) || name.startsWith('proxy-') || name.startsWith('x-nodemesh-')) continue;
    if (typeof v === 'string') out.push(name, v);
    else for (const one of v) out.push(name, one);
  }
  return out;
}

/** A gRPC request (`content-type: application/grpc` or `application/grpc+proto` ...); grpc-web is plain HTTP. */
export function isGrpcContentType(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.length < 16) return false;
  const v = contentType.toLowerCase();
  return v.startsWith('application/grpc') && (v.length === 16 || v[16] === '+' || v[16] === ';');
}

/**
 * The gRPC status for an answer the proxy gives itself (gRPC's HTTP-to-status table, doc/http-grpc-status-mapping):
 * the proxy's own deadlines give DEADLINE_EXCEEDED (4), as Envoy's route timeout does; overload, rate limit, no
 * endpoint and upstream failures UNAVAILABLE (14); a policy denial PERMISSION_DENIED (7); no route UNIMPLEMENTED
 * (12); a malformed request INTERNAL (13); anything else UNKNOWN (2).
 */
export function computeGrpcStatus(httpStatus: number, timeout: boolean): number {
  if (timeout) return 4;
  switch (httpStatus) {
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}

/** A grpc-message value: percent-encoded outside printable ASCII (gRPC's rule), capped so a reason stays a reason. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const b of Buffer.from(message.slice(0, 512), 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
