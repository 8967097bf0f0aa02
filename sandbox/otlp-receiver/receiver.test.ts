/** The OTLP receiver: protobuf and JSON decoding of hand-encoded requests, the HTTP contract, the JSON-lines file. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { decodeTraceRequestJson, decodeTraceRequestProtobuf } from './decode-trace-request.ts';
import { startOtlpReceiver, type OtlpReceiver } from './receiver.ts';

// ---- a tiny protobuf encoder, written independently of the decoder ----
function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return out;
}
const tag = (field: number, wire: number): number[] => varint(BigInt((field << 3) | wire));
const ld = (field: number, bytes: Uint8Array | number[]): number[] => [...tag(field, 2), ...varint(BigInt(bytes.length)), ...bytes];
const str = (field: number, s: string): number[] => ld(field, [...Buffer.from(s, 'utf8')]);
const vi = (field: number, n: bigint): number[] => [...tag(field, 0), ...varint(n)];
const f64 = (field: number, n: bigint): number[] => { const b = Buffer.alloc(8); b.writeBigUInt64LE(n); return [...tag(field, 1), ...b]; };
const f32 = (field: number, n: number): number[] => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return [...tag(field, 5), ...b]; };
const dbl = (field: number, n: number): number[] => { const b = Buffer.alloc(8); b.writeDoubleLE(n); return [...tag(field, 1), ...b]; };
const kv = (key: string, any: number[]): number[] => [...str(1, key), ...ld(2, any)];

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const SPAN = 'b7ad6b7169203331';
const PARENT = '00f067aa0ba902b7';

function sampleRequest(): Uint8Array {
  const span = [
    ...ld(1, [...Buffer.from(TRACE, 'hex')]),
    ...ld(2, [...Buffer.from(SPAN, 'hex')]),
    ...str(3, 'nm=1'),
    ...ld(4, [...Buffer.from(PARENT, 'hex')]),
    ...str(5, 'GET'),
    ...vi(6, 2n), // SERVER
    ...f64(7, 1_700_000_000_000_000_000n),
    ...f64(8, 1_700_000_000_002_500_000n),
    ...ld(9, kv('http.request.method', str(1, 'GET'))),
    ...ld(9, kv('http.response.status_code', vi(3, 200n))),
    ...ld(9, kv('neg', vi(3, -5n))),
    ...ld(9, kv('ok', vi(2, 1n))),
    ...ld(9, kv('ratio', dbl(4, 0.25))),
    ...ld(9, kv('list', ld(5, [...ld(1, str(1, 'a')), ...ld(1, vi(3, 2n))]))),
    ...ld(11, [...f64(1, 1_700_000_000_001_000_000n), ...str(2, 'retry'), ...ld(3, kv('attempt', vi(3, 2n)))]),
    ...ld(15, [...str(2, 'upstream reset'), ...vi(3, 2n)]),
    ...f32(16, 0x101),
    ...vi(99, 7n), // an unknown field: skipped
  ];
  const scopeSpans = [...ld(1, [...str(1, 'nodemesh-proxy'), ...str(2, '0.1.0')]), ...ld(2, span)];
  const resourceSpans = [...ld(2, scopeSpans), ...ld(1, ld(1, kv('service.name', str(1, 'nodemesh-proxy'))))];
  return Uint8Array.from(ld(1, resourceSpans));
}

describe('decodeTraceRequestProtobuf', () => {
  it('decodes every field of a span, its resource and scope', () => {
    const [s, ...rest] = decodeTraceRequestProtobuf(sampleRequest());
    assert.equal(rest.length, 0);
    assert.ok(s);
    assert.equal(s.traceId, TRACE);
    assert.equal(s.spanId, SPAN);
    assert.equal(s.parentSpanId, PARENT);
    assert.equal(s.traceState, 'nm=1');
    assert.equal(s.name, 'GET');
    assert.equal(s.kind, 'SERVER');
    assert.equal(s.startTimeUnixNano, '1700000000000000000');
    assert.equal(s.durationMs, 2.5);
    assert.equal(s.flags, 0x101);
    assert.deepEqual(s.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, neg: -5, ok: true, ratio: 0.25, list: ['a', 2] });
    assert.deepEqual(s.events, [{ name: 'retry', timeUnixNano: '1700000000001000000', attributes: { attempt: 2 } }]);
    assert.deepEqual(s.status, { code: 'ERROR', message: 'upstream reset' });
    assert.deepEqual(s.resource, { 'service.name': 'nodemesh-proxy' }, 'resource after scope_spans on the wire still applies');
    assert.deepEqual(s.scope, { name: 'nodemesh-proxy', version: '0.1.0' });
  });

  it('refuses a truncated message with the message type in the error', () => {
    const req = sampleRequest();
    assert.throws(() => decodeTraceRequestProtobuf(req.subarray(0, req.length - 3)), { code: 'NM_ERR_OTLP_PROTOBUF_TRUNCATED', message: /ExportTraceServiceRequest/ });
  });

  it('an empty body is an empty request', () => {
    assert.deepEqual(decodeTraceRequestProtobuf(new Uint8Array()), []);
  });
});

const JSON_REQUEST = {
  resourceSpans: [{
    resource: { attributes: [{ key: 'service.name', value: { stringValue: 'nodemesh-proxy' } }] },
    scopeSpans: [{
      scope: { name: 'nodemesh-proxy' },
      spans: [{
        traceId: TRACE.toUpperCase(), spanId: SPAN, parentSpanId: '', name: 'GET', kind: 3,
        startTimeUnixNano: '1700000000000000000', endTimeUnixNano: '1700000000001000000',
        attributes: [{ key: 'http.response.status_code', value: { intValue: '503' } }, { key: 'b', value: { boolValue: true } }],
        status: { code: 2 },
      }],
    }],
  }],
};

describe('decodeTraceRequestJson', () => {
  it('decodes OTLP/JSON with hex IDs and string int64', () => {
    const [s] = decodeTraceRequestJson(JSON.stringify(JSON_REQUEST));
    assert.ok(s);
    assert.equal(s.traceId, TRACE);
    assert.equal(s.kind, 'CLIENT');
    assert.equal(s.parentSpanId, '');
    assert.deepEqual(s.attributes, { 'http.response.status_code': 503, b: true });
    assert.equal(s.status.code, 'ERROR');
    assert.equal(s.durationMs, 1);
  });

  it('names the field that has the wrong shape', () => {
    assert.throws(() => decodeTraceRequestJson('{"resourceSpans":{}}'), { code: 'NM_ERR_OTLP_JSON_INVALID', message: /resourceSpans: expected an array/ });
  });
});

describe('startOtlpReceiver', () => {
  let dir: string;
  let rx: OtlpReceiver;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-otlp-'));
    rx = await startOtlpReceiver({ outFile: join(dir, 'spans.jsonl') });
  });
  after(async () => {
    await rx.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('accepts protobuf, gzip protobuf and JSON, and appends one line per span', async () => {
    const pb = await fetch(rx.tracesUrl, { method: 'POST', headers: { 'content-type': 'application/x-protobuf' }, body: sampleRequest() });
    assert.equal(pb.status, 200);
    assert.equal(pb.headers.get('content-type'), 'application/x-protobuf');
    const gz = await fetch(rx.tracesUrl, { method: 'POST', headers: { 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' }, body: gzipSync(sampleRequest()) });
    assert.equal(gz.status, 200);
    const js = await fetch(rx.tracesUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(JSON_REQUEST) });
    assert.equal(js.status, 200);
    assert.equal(await js.text(), '{}');
    await rx.waitForSpans((s) => s.length === 3);
    const lines = (await readFile(join(dir, 'spans.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { kind: string });
    assert.deepEqual(lines.map((l) => l.kind), ['SERVER', 'SERVER', 'CLIENT']);
  });

  it('answers 400 to a bad body, 404 elsewhere, 405 to GET', async () => {
    const before = rx.rejected();
    const bad = await fetch(rx.tracesUrl, { method: 'POST', headers: { 'content-type': 'application/x-protobuf' }, body: Uint8Array.from([0x0a, 0x20, 0x01]) });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /truncated/);
    assert.equal((await fetch(`${rx.url}/v1/metrics`, { method: 'POST', body: '' })).status, 404);
    assert.equal((await fetch(rx.tracesUrl)).status, 405);
    assert.equal(rx.rejected() - before, 3);
  });

  it('waitForSpans explains what it has when it times out', async () => {
    await assert.rejects(rx.waitForSpans(() => false, 50), /waited 50 ms for spans; have \d+: SERVER GET/);
  });
});
