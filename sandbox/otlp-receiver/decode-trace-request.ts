/**
 * Decodes an OTLP ExportTraceServiceRequest (protobuf or OTLP/JSON) into flat span records, one per span,
 * each carrying its resource and scope: the shape the receiver writes as JSON lines.
 */
// Field numbers follow opentelemetry-proto (collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
// common/v1/common.proto, resource/v1/resource.proto). Unknown fields are skipped, as protobuf requires.
import { OtlpReceiverError } from './errors.ts';
import { readFields, readHex, readString, toInt64 } from './protobuf-reader.ts';

/** An attribute value as JSON: int64 beyond 2^53 stays a decimal string; bytes become base64. */
export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };

/** Span kinds by their OTLP number (SPAN_KIND_*). */
export const SPAN_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'] as const;

/** Status codes by their OTLP number (STATUS_CODE_*). */
export const STATUS_CODES = ['UNSET', 'OK', 'ERROR'] as const;

/** One span as the receiver records it (one JSON line in the output file). */
export type DecodedSpan = {
  traceId: string; // 32 lower-case hex digits
  spanId: string; // 16 lower-case hex digits
  /** Empty for a root span. */
  parentSpanId: string;
  traceState: string;
  /** W3C trace flags (bit 0 = sampled) plus OTLP's remote-parent bits; 0 when the exporter left it out. */
  flags: number;
  name: string;
  kind: (typeof SPAN_KINDS)[number];
  /** Nanoseconds since the epoch, as decimal strings (they pass 2^53). */
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  /** end − start in milliseconds (float), for people reading the file. */
  durationMs: number;
  attributes: Record<string, AttributeValue>;
  events: { name: string; timeUnixNano: string; attributes: Record<string, AttributeValue> }[];
  links: { traceId: string; spanId: string; traceState: string; attributes: Record<string, AttributeValue> }[];
  status: { code: (typeof STATUS_CODES)[number]; message: string };
  droppedAttributesCount: number;
  resource: Record<string, AttributeValue>;
  scope: { name: string; version: string };
};

type Scope = { name: string; version: string };

function int64ToJson(v: bigint): number | string {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
}

function decodeAnyValue(buf: Uint8Array): AttributeValue {
  let out: AttributeValue = null;
  for (const f of readFields(buf, 'AnyValue')) {
    if (f.field === 1 && f.wire === 2) out = readString(f.bytes);
    else if (f.field === 2 && f.wire === 0) out = f.value !== 0n;
    else if (f.field === 3 && f.wire === 0) out = int64ToJson(toInt64(f.value));
    else if (f.field === 4 && f.wire === 1) out = Buffer.from(f.raw).readDoubleLE(0);
    else if (f.field === 5 && f.wire === 2) {
      const values: AttributeValue[] = [];
      for (const g of readFields(f.bytes, 'ArrayValue')) if (g.field === 1 && g.wire === 2) values.push(decodeAnyValue(g.bytes));
      out = values;
    } else if (f.field === 6 && f.wire === 2) {
      out = decodeKeyValues(f.bytes, 1, 'KeyValueList');
    } else if (f.field === 7 && f.wire === 2) out = Buffer.from(f.bytes).toString('base64');
  }
  return out;
}

function decodeKeyValue(buf: Uint8Array): [string, AttributeValue] {
  let key = '';
  let value: AttributeValue = null;
  for (const f of readFields(buf, 'KeyValue')) {
    if (f.field === 1 && f.wire === 2) key = readString(f.bytes);
    else if (f.field === 2 && f.wire === 2) value = decodeAnyValue(f.bytes);
  }
  return [key, value];
}

/** Collects the repeated KeyValue field `field` of a message into an object. */
function decodeKeyValues(buf: Uint8Array, field: number, context: string): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const f of readFields(buf, context)) {
    if (f.field === field && f.wire === 2) {
      const [k, v] = decodeKeyValue(f.bytes);
      out[k] = v;
    }
  }
  return out;
}

function nanosToMs(start: bigint, end: bigint): number {
  return Number(end - start) / 1e6;
}

function decodeSpan(buf: Uint8Array, resource: Record<string, AttributeValue>, scope: Scope): DecodedSpan {
  const span: DecodedSpan = {
    traceId: '', spanId: '', parentSpanId: '', traceState: '', flags: 0, name: '', kind: 'UNSPECIFIED',
    startTimeUnixNano: '0', endTimeUnixNano: '0', durationMs: 0, attributes: {}, events: [], links: [],
    status: { code: 'UNSET', message: '' }, droppedAttributesCount: 0, resource, scope,
  };
  let start = 0n;
  let end = 0n;
  for (const f of readFields(buf, 'Span')) {
    switch (f.field) {
      case 1: if (f.wire === 2) span.traceId = readHex(f.bytes); break;
      case 2: if (f.wire === 2) span.spanId = readHex(f.bytes); break;
      case 3: if (f.wire === 2) span.traceState = readString(f.bytes); break;
      case 4: if (f.wire === 2) span.parentSpanId = readHex(f.bytes); break;
      case 5: if (f.wire === 2) span.name = readString(f.bytes); break;
      case 6: if (f.wire === 0) span.kind = SPAN_KINDS[Number(f.value)] ?? 'UNSPECIFIED'; break;
      case 7: if (f.wire === 1) start = f.value; break;
      case 8: if (f.wire === 1) end = f.value; break;
      case 9: if (f.wire === 2) { const [k, v] = decodeKeyValue(f.bytes); span.attributes[k] = v; } break;
      case 10: if (f.wire === 0) span.droppedAttributesCount = Number(f.value); break;
      case 11: if (f.wire === 2) span.events.push(decodeEvent(f.bytes)); break;
      case 13: if (f.wire === 2) span.links.push(decodeLink(f.bytes)); break;
      case 15: if (f.wire === 2) span.status = decodeStatus(f.bytes); break;
      case 16: if (f.wire === 5) span.flags = f.value; break;
      default: break;
    }
  }
  span.startTimeUnixNano = start.toString();
  span.endTimeUnixNano = end.toString();
  span.durationMs = nanosToMs(start, end);
  return span;
}

function decodeEvent(buf: Uint8Array): DecodedSpan['events'][number] {
  const ev = { name: '', timeUnixNano: '0', attributes: {} as Record<string, AttributeValue> };
  for (const f of readFields(buf, 'Span.Event')) {
    if (f.field === 1 && f.wire === 1) ev.timeUnixNano = f.value.toString();
    else if (f.field === 2 && f.wire === 2) ev.name = readString(f.bytes);
    else if (f.field === 3 && f.wire === 2) { const [k, v] = decodeKeyValue(f.bytes); ev.attributes[k] = v; }
  }
  return ev;
}

function decodeLink(buf: Uint8Array): DecodedSpan['links'][number] {
  const link = { traceId: '', spanId: '', traceState: '', attributes: {} as Record<string, AttributeValue> };
  for (const f of readFields(buf, 'Span.Link')) {
    if (f.field === 1 && f.wire === 2) link.traceId = readHex(f.bytes);
    else if (f.field === 2 && f.wire === 2) link.spanId = readHex(f.bytes);
    else if (f.field === 3 && f.wire === 2) link.traceState = readString(f.bytes);
    else if (f.field === 4 && f.wire === 2) { const [k, v] = decodeKeyValue(f.bytes); link.attributes[k] = v; }
  }
  return link;
}

function decodeStatus(buf: Uint8Array): DecodedSpan['status'] {
  const st: DecodedSpan['status'] = { code: 'UNSET', message: '' };
  for (const f of readFields(buf, 'Status')) {
    if (f.field === 2 && f.wire === 2) st.message = readString(f.bytes);
    else if (f.field === 3 && f.wire === 0) st.code = STATUS_CODES[Number(f.value)] ?? 'UNSET';
  }
  return st;
}

function decodeScope(buf: Uint8Array): Scope {
  const s = { name: '', version: '' };
  for (const f of readFields(buf, 'InstrumentationScope')) {
    if (f.field === 1 && f.wire === 2) s.name = readString(f.bytes);
    else if (f.field === 2 && f.wire === 2) s.version = readString(f.bytes);
  }
  return s;
}

/** Decodes a protobuf ExportTraceServiceRequest body. Throws OtlpReceiverError on malformed input. */
export function decodeTraceRequestProtobuf(body: Uint8Array): DecodedSpan[] {
  const out: DecodedSpan[] = [];
  for (const rs of readFields(body, 'ExportTraceServiceRequest')) {
    if (rs.field !== 1 || rs.wire !== 2) continue;
    let resource: Record<string, AttributeValue> = {};
    const scopeSpans: Uint8Array[] = [];
    // Resource may follow scope_spans on the wire: collect first, then decode spans with it.
    for (const f of readFields(rs.bytes, 'ResourceSpans')) {
      if (f.field === 1 && f.wire === 2) resource = decodeKeyValues(f.bytes, 1, 'Resource');
      else if (f.field === 2 && f.wire === 2) scopeSpans.push(f.bytes);
    }
    for (const ss of scopeSpans) {
      let scope: Scope = { name: '', version: '' };
      const spans: Uint8Array[] = [];
      for (const f of readFields(ss, 'ScopeSpans')) {
        if (f.field === 1 && f.wire === 2) scope = decodeScope(f.bytes);
        else if (f.field === 2 && f.wire === 2) spans.push(f.bytes);
      }
      for (const s of spans) out.push(decodeSpan(s, resource, scope));
    }
  }
  return out;
}

// ---- OTLP/JSON (proto3 JSON mapping with OTLP's exceptions: IDs are hex, enums are integers) ----

type Json = unknown;

function obj(v: Json, where: string): Record<string, Json> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new OtlpReceiverError('NM_ERR_OTLP_JSON_INVALID', `${where}: expected an object, got ${Array.isArray(v) ? 'an array' : typeof v}`);
  return v as Record<string, Json>;
}

function arr(v: Json, where: string): Json[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new OtlpReceiverError('NM_ERR_OTLP_JSON_INVALID', `${where}: expected an array, got ${typeof v}`);
  return v;
}

function str(v: Json): string {
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
}

/** IDs in OTLP/JSON are hex; some senders use base64 (plain proto3 JSON): accept both. */
function jsonId(v: Json, hexLen: number): string {
  const s = str(v);
  if (s === '') return '';
  if (s.length === hexLen && /^[0-9a-fA-F]+$/.test(s)) return s.toLowerCase();
  return Buffer.from(s, 'base64').toString('hex');
}

function jsonAnyValue(v: Json, where: string): AttributeValue {
  const o = obj(v, where);
  if ('stringValue' in o) return str(o.stringValue);
  if ('boolValue' in o) return o.boolValue === true || o.boolValue === 'true';
  if ('intValue' in o) {
    const n = BigInt(str(o.intValue) || '0');
    return int64ToJson(n);
  }
  if ('doubleValue' in o) return Number(o.doubleValue);
  if ('arrayValue' in o) return arr(obj(o.arrayValue, `${where}.arrayValue`).values, `${where}.arrayValue.values`).map((x, i) => jsonAnyValue(x, `${where}.arrayValue.values[${i}]`));
  if ('kvlistValue' in o) return jsonKeyValues(obj(o.kvlistValue, `${where}.kvlistValue`).values, `${where}.kvlistValue.values`);
  if ('bytesValue' in o) return str(o.bytesValue);
  return null;
}

function jsonKeyValues(v: Json, where: string): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const [i, kv] of arr(v, where).entries()) {
    const o = obj(kv, `${where}[${i}]`);
    out[str(o.key)] = jsonAnyValue(o.value, `${where}[${i}].value`);
  }
  return out;
}

function jsonNanos(v: Json): bigint {
  const s = str(v);
  return s === '' ? 0n : BigInt(s);
}

function jsonEnum<T extends readonly string[]>(v: Json, names: T, prefix: string): T[number] {
  if (typeof v === 'number') return names[v] ?? names[0]!;
  const s = str(v);
  // Tolerate the proto3 JSON enum-name form too (SPAN_KIND_SERVER).
  const bare = s.startsWith(prefix) ? s.slice(prefix.length) : s;
  return (names as readonly string[]).includes(bare) ? (bare as T[number]) : names[0]!;
}

/** Decodes an OTLP/JSON ExportTraceServiceRequest body. Throws OtlpReceiverError on malformed input. */
export function decodeTraceRequestJson(text: string): DecodedSpan[] {
  let root: Json;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new OtlpReceiverError('NM_ERR_OTLP_JSON_INVALID', `ExportTraceServiceRequest: body is not JSON (${(e as Error).message}); protobuf senders must use Content-Type: application/x-protobuf`, { cause: e });
  }
  const out: DecodedSpan[] = [];
  for (const [i, rsv] of arr(obj(root, 'request').resourceSpans, 'resourceSpans').entries()) {
    const rs = obj(rsv, `resourceSpans[${i}]`);
    const resource = jsonKeyValues(obj(rs.resource, `resourceSpans[${i}].resource`).attributes, `resourceSpans[${i}].resource.attributes`);
    for (const [j, ssv] of arr(rs.scopeSpans, `resourceSpans[${i}].scopeSpans`).entries()) {
      const where = `resourceSpans[${i}].scopeSpans[${j}]`;
      const ss = obj(ssv, where);
      const sc = obj(ss.scope, `${where}.scope`);
      const scope = { name: str(sc.name), version: str(sc.version) };
      for (const [k, spv] of arr(ss.spans, `${where}.spans`).entries()) {
        const w = `${where}.spans[${k}]`;
        const sp = obj(spv, w);
        const start = jsonNanos(sp.startTimeUnixNano);
        const end = jsonNanos(sp.endTimeUnixNano);
        const st = obj(sp.status, `${w}.status`);
        out.push({
          traceId: jsonId(sp.traceId, 32),
          spanId: jsonId(sp.spanId, 16),
          parentSpanId: jsonId(sp.parentSpanId, 16),
          traceState: str(sp.traceState),
          flags: typeof sp.flags === 'number' ? sp.flags : 0,
          name: str(sp.name),
          kind: jsonEnum(sp.kind, SPAN_KINDS, 'SPAN_KIND_'),
          startTimeUnixNano: start.toString(),
          endTimeUnixNano: end.toString(),
          durationMs: nanosToMs(start, end),
          attributes: jsonKeyValues(sp.attributes, `${w}.attributes`),
          events: arr(sp.events, `${w}.events`).map((ev, n) => {
            const e = obj(ev, `${w}.events[${n}]`);
            return { name: str(e.name), timeUnixNano: jsonNanos(e.timeUnixNano).toString(), attributes: jsonKeyValues(e.attributes, `${w}.events[${n}].attributes`) };
          }),
          links: arr(sp.links, `${w}.links`).map((lv, n) => {
            const l = obj(lv, `${w}.links[${n}]`);
            return { traceId: jsonId(l.traceId, 32), spanId: jsonId(l.spanId, 16), traceState: str(l.traceState), attributes: jsonKeyValues(l.attributes, `${w}.links[${n}].attributes`) };
          }),
          status: { code: jsonEnum(st.code, STATUS_CODES, 'STATUS_CODE_'), message: str(st.message) },
          droppedAttributesCount: typeof sp.droppedAttributesCount === 'number' ? sp.droppedAttributesCount : 0,
          resource,
          scope,
        });
      }
    }
  }
  return out;
}
