/**
 * Trace context on plain header objects (Node's lower-cased `IncomingHttpHeaders`, HTTP/2 headers, or any
 * `Record<string, string | string[]>`): read W3C `traceparent`/`tracestate` first, then B3 single (`b3`), then
 * B3 multi (`x-b3-*`); write the formats the mesh asks for.
 */
import { ROOT_CONTEXT, TraceFlags, isSpanContextValid, trace, type Context, type SpanContext, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { InjectFormat } from './config.ts';

/** Headers as the proxy holds them: names in any case, values a string or a list (repeated headers). */
export type HeaderBag = Record<string, string | string[] | number | undefined>;

const w3c = new W3CTraceContextPropagator();

function headerValue(headers: HeaderBag, name: string): string | undefined {
  let v = headers[name];
  if (v === undefined) {
    // Callers usually pass Node's lower-cased headers; fall back to a case-insensitive scan for hand-built bags.
    for (const k of Object.keys(headers)) {
      if (k.toLowerCase() === name) {
        v = headers[k];
        break;
      }
    }
  }
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v[0];
  return String(v);
}

const getter: TextMapGetter<HeaderBag> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    // W3C: several tracestate headers are one list joined by commas; traceparent must be single (first wins).
    if (key === 'tracestate') {
      const v = carrier[key];
      if (Array.isArray(v)) return v.join(',');
    }
    return headerValue(carrier, key);
  },
};

const setter: TextMapSetter<HeaderBag> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

/** A B3 trace ID may be 64-bit; W3C needs 128: left-pad with zeros, as the B3 spec says. */
function b3TraceId(v: string): string | undefined {
  const t = v.trim().toLowerCase();
  if (HEX32.test(t)) return t;
  if (HEX16.test(t)) return `0000000000000000${t}`;
  return undefined;
}

function remote(traceId: string, spanId: string, sampled: boolean): SpanContext | undefined {
  const sc: SpanContext = { traceId, spanId, traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true };
  return isSpanContextValid(sc) ? sc : undefined;
}

/** Parses `b3: {traceId}-{spanId}[-{sampling}[-{parentSpanId}]]`; a lone sampling flag carries no context. */
export function parseB3Single(value: string): SpanContext | undefined {
  const parts = value.trim().split('-');
  if (parts.length < 2) return undefined;
  const traceId = b3TraceId(parts[0]!);
  const spanId = parts[1]!.toLowerCase();
  if (!traceId || !HEX16.test(spanId)) return undefined;
  const sampling = parts[2];
  if (sampling !== undefined && sampling !== '0' && sampling !== '1' && sampling !== 'd') return undefined;
  return remote(traceId, spanId, sampling === '1' || sampling === 'd');
}

/** Parses `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (1/0/true/false), `x-b3-flags` (1 = debug = sampled). */
export function parseB3Multi(headers: HeaderBag): SpanContext | undefined {
  const t = headerValue(headers, 'x-b3-traceid');
  const s = headerValue(headers, 'x-b3-spanid');
  if (t === undefined || s === undefined) return undefined;
  const traceId = b3TraceId(t);
  const spanId = s.trim().toLowerCase();
  if (!traceId || !HEX16.test(spanId)) return undefined;
  const sampled = headerValue(headers, 'x-b3-sampled')?.trim().toLowerCase();
  const debug = headerValue(headers, 'x-b3-flags')?.trim() === '1';
  return remote(traceId, spanId, debug || sampled === '1' || sampled === 'true');
}

/**
 * The remote parent carried by `headers`, as a Context to start spans under (ROOT_CONTEXT when there is none
 * or it is malformed: a bad header starts a new trace, it never fails the request).
 */
export function extractTraceContext(headers: HeaderBag, base: Context = ROOT_CONTEXT): Context {
  const fromW3c = w3c.extract(base, headers, getter);
  if (trace.getSpanContext(fromW3c)) return fromW3c;
  const single = headerValue(headers, 'b3');
  const sc = (single !== undefined ? parseB3Single(single) : undefined) ?? parseB3Multi(headers);
  return sc ? trace.setSpanContext(base, sc) : base;
}

const B3_MULTI = ['x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'];

function deleteHeader(headers: HeaderBag, name: string): void {
  for (const k of Object.keys(headers)) if (k.toLowerCase() === name) delete headers[k];
}

/**
 * Writes the span context of `ctx` into `headers` (mutated, lower-case names) in each of `formats`, replacing
 * what the client sent in those formats, so the next hop's parent is our span. No span context: headers stay.
 */
export function injectTraceContext(ctx: Context, headers: HeaderBag, formats: readonly InjectFormat[] = ['tracecontext']): void {
  const sc = trace.getSpanContext(ctx);
  if (!sc || !isSpanContextValid(sc)) return;
  const sampled = (sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
  for (const f of formats) {
    if (f === 'tracecontext') {
      deleteHeader(headers, 'traceparent');
      deleteHeader(headers, 'tracestate');
      w3c.inject(ctx, headers, setter);
    } else if (f === 'b3') {
      deleteHeader(headers, 'b3');
      headers.b3 = `${sc.traceId}-${sc.spanId}-${sampled ? '1' : '0'}`;
    } else {
      for (const h of B3_MULTI) deleteHeader(headers, h);
      headers['x-b3-traceid'] = sc.traceId;
      headers['x-b3-spanid'] = sc.spanId;
      headers['x-b3-sampled'] = sampled ? '1' : '0';
    }
  }
}

/** The `traceparent` value for `ctx` (e.g. for an HTTP/2 CONNECT tunnel request or a log line), or undefined. */
export function formatTraceparent(ctx: Context): string | undefined {
  const h: HeaderBag = {};
  injectTraceContext(ctx, h, ['tracecontext']);
  return typeof h.traceparent === 'string' ? h.traceparent : undefined;
}
