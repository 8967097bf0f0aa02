import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeGrpcStatus, computeProxyHeaders, computeRequestHeaders, computeResponseHeaders, computeTrailerList, encodeGrpcMessage, isGrpcContentType } from './headers.ts';
import { checkHttp1Request } from './http1.ts';

test('hop-by-hop, Connection-listed and client identity headers are removed', () => {
  const raw = ['Host', 'a', 'Connection', 'keep-alive, X-Secret', 'X-Secret', '1', 'Keep-Alive', 't=5', 'TE', 'trailers, gzip', 'Trailer', 'x',
    'Upgrade', 'h2c', 'Proxy-Authorization', 'x', 'X-Forwarded-For', '6.6.6.6', 'Forwarded', 'for=x', 'X-Envoy-Original-Path', '/a',
    'X-Nodemesh-Source-Identity', 'spiffe://evil/ns/a/sa/b', 'X-Spiffe-Id', 'x', 'X-Forwarded-Client-Cert', 'x', 'Content-Length', '3', 'Accept', '*/*'];
  const c = computeRequestHeaders(raw, 'reject');
  assert.ok(c.ok);
  assert.deepEqual(c.headers, [['accept', '*/*']]);
  assert.equal(c.teTrailers, true);
  const out = computeProxyHeaders({ headers: c.headers, authority: 'a', clientAddress: '10.0.0.1', sourceSpiffeId: 'spiffe://cluster.local/ns/web/sa/frontend', teTrailers: true });
  const names = out.map(([k]) => k);
  assert.deepEqual(names, ['host', 'accept', 'x-request-id', 'x-forwarded-for', 'x-forwarded-proto', 'x-nodemesh-source-identity', 'te']);
  assert.equal(out.find(([k]) => k === 'x-forwarded-for')![1], '10.0.0.1');
});

test('identity values that are not plain SPIFFE IDs are never copied into headers', () => {
  const out = computeProxyHeaders({ headers: [], authority: 'a', clientAddress: undefined, sourceSpiffeId: 'spiffe://td/ns/a\r\nx: y', teTrailers: false });
  assert.ok(!out.some(([k]) => k === 'x-nodemesh-source-identity'));
});

test('underscore header names: reject, drop or allow', () => {
  assert.equal(computeRequestHeaders(['x_user', 'a'], 'reject').ok, false);
  const d = computeRequestHeaders(['x_user', 'a', 'x-user', 'b'], 'drop');
  assert.ok(d.ok && d.headers.length === 1 && d.headers[0]![0] === 'x-user');
  assert.ok(computeRequestHeaders(['x_user', 'a'], 'allow').ok);
});

test('a valid client x-request-id is kept, a bad one replaced', () => {
  const keep = computeProxyHeaders({ headers: [['x-request-id', 'abc-123']], authority: 'a', clientAddress: undefined, sourceSpiffeId: undefined, teTrailers: false });
  assert.equal(keep.filter(([k]) => k === 'x-request-id').length, 1);
  assert.equal(keep.find(([k]) => k === 'x-request-id')![1], 'abc-123');
  const replaced = computeProxyHeaders({ headers: [['x-request-id', 'a b']], authority: 'a', clientAddress: undefined, sourceSpiffeId: undefined, teTrailers: false });
  assert.notEqual(replaced.find(([k]) => k === 'x-request-id')![1], 'a b');
});

test('response headers lose hop-by-hop fields', () => {
  const out = computeResponseHeaders({ connection: 'close, x-internal', 'x-internal': '1', 'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain' });
  assert.deepEqual(out, [['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['content-type', 'text/plain']]);
});

test('HTTP/1 checks beyond llhttp', () => {
  const base = { httpVersionMajor: 1, httpVersionMinor: 1 };
  const limits = { maxHeaderCount: 100 };
  assert.equal(checkHttp1Request({ ...base, rawHeaders: ['Host', 'a'] }, limits), undefined);
  const status = (r: Partial<typeof base> & { rawHeaders: string[] }) => checkHttp1Request({ ...base, ...r }, limits)?.status;
  assert.equal(status({ rawHeaders: ['Host', 'a', 'Content-Length', '01'] }), 400);
  assert.equal(status({ rawHeaders: ['Host', 'a', 'Transfer-Encoding', 'identity, chunked'] }), 400);
  assert.equal(status({ rawHeaders: ['Host', 'a', 'Transfer-Encoding', 'chunked'], httpVersionMinor: 0 }), 400);
  assert.equal(status({ rawHeaders: ['Host', 'a', 'Host', 'b'] }), 400);
  assert.equal(status({ rawHeaders: [] , httpVersionMinor: 0 }), 400);
  assert.equal(status({ rawHeaders: ['Host', 'a'], httpVersionMajor: 0, httpVersionMinor: 9 }), 400);
  assert.equal(status({ rawHeaders: ['Host', 'a', ...Array.from({ length: 100 }, (_, i) => [`x-${i}`, 'v']).flat()] }), 431);
});

test('trailers: framing, routing, auth, cookies, hop-by-hop, pseudo and mesh-owned fields are dropped; the rest kept in order', () => {
  assert.deepEqual(computeTrailerList({
    'grpc-status': '0', 'Grpc-Message': 'ok', 'content-length': '9', 'transfer-encoding': 'chunked', host: 'x', authorization: 'a',
    'set-cookie': ['a=1'], connection: 'close', te: 'trailers', trailer: 'x', ':status': '200', 'x-nodemesh-source-identity': 'spiffe://e/x',
    'proxy-authenticate': 'x', 'x-sum': ['1', '2'],
  }), ['grpc-status', '0', 'grpc-message', 'ok', 'x-sum', '1', 'x-sum', '2']);
  assert.deepEqual(computeTrailerList(undefined), []);
});

test('gRPC: content types, the status for a local answer, grpc-message encoding', () => {
  for (const v of ['application/grpc', 'application/grpc+proto', 'Application/GRPC;charset=utf-8']) assert.ok(isGrpcContentType(v), v);
  for (const v of [undefined, 'application/grpc-web', 'application/grpc-web+proto', 'application/json', 'application/grpcx']) assert.ok(!isGrpcContentType(v), String(v));
  assert.deepEqual([504, 503, 502, 429, 403, 404, 400, 500, 302].map((s) => computeGrpcStatus(s, false)), [14, 14, 14, 14, 7, 12, 13, 2, 2]);
  assert.equal(computeGrpcStatus(504, true), 4);
  assert.equal(encodeGrpcMessage('upstream 100% gone\nnow é'), 'upstream 100%25 gone%0Anow %C3%A9');
});
