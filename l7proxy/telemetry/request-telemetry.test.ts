/**
 * The telemetry hooks on real NodeProxies: a source-side proxy hands each connection to a destination-side proxy
 * in-process (as the same-node path does), each with its own tracer; the spans form one trace (CLIENT parent of
 * SERVER), the backend sees the SERVER span as its parent, records carry the mesh labels, refusals are classified,
 * and opaque TCP connections get L4 spans parented through the tunnel's trace headers.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { duplexPair } from 'node:stream';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { NodeProxy } from '../proxy.ts';
import { request, rawExchange, SERVICE_IP, SERVICE_PORT, startEcho, type EchoServer } from '../testing/harness.ts';
import type { ProxyConfig } from '../config.ts';
import type { ConnectionRecord, RequestRecord, TelemetrySink } from './records.ts';
import { classifyRefusal, computeWorkloadName, createRequestTelemetry, pickTraceHeaders, replaceTraceHeaders, splitServiceName } from './request-telemetry.ts';
import { createTracer } from './tracer.ts';

const WEB = { spiffeId: 'spiffe://cluster.local/ns/shop/sa/web', namespace: 'shop', serviceAccount: 'web' };
const APP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

function collectingSink(): TelemetrySink & { requests: RequestRecord[]; closed: ConnectionRecord[]; opened: number } {
  const s = { requests: [] as RequestRecord[], closed: [] as ConnectionRecord[], opened: 0 };
  return Object.assign(s, {
    connectionOpened: () => { s.opened++; },
    connectionClosed: (r: ConnectionRecord) => { s.closed.push(r); },
    requestFinished: (r: RequestRecord) => { s.requests.push(r); },
  });
}

describe('request telemetry on two proxies', () => {
  let echo: EchoServer;
  let tcpEcho: net.Server;
  let tcpPort = 0;
  let source: NodeProxy;
  let dest: NodeProxy;
  let port = 0;
  const exporter = new InMemorySpanExporter();
  const tracerA = createTracer({ nodeName: 'node-a', exporter, samplingRatio: 1, scheduledDelayMs: 10 });
  const tracerB = createTracer({ nodeName: 'node-b', exporter, samplingRatio: 1, scheduledDelayMs: 10 });
  const sinkA = collectingSink();
  const sinkB = collectingSink();
  let dst = { ip: SERVICE_IP, port: SERVICE_PORT };
  /** The backend answers the next request carrying x-fail-once with 503 (the retried request's first attempt). */
  let failNext = false;

  before(async () => {
    echo = await startEcho('echo-v1', {
      handler: (req, res) => {
        if (!req.headers['x-fail-once'] || !failNext) return false;
        failNext = false;
        res.writeHead(503, { 'content-length': '4' });
        res.end('busy');
        return true;
      },
    });
    tcpEcho = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => tcpEcho.listen(0, '127.0.0.1', r));
    tcpPort = (tcpEcho.address() as net.AddressInfo).port;
    const inbound: ProxyConfig = {
      version: 'in',
      services: [
        { name: 'shop/echo-v1-5d8f7b9c4-x2kqp:8080', addresses: [{ ip: '127.0.0.1', port: echo.port }], protocol: 'http', defaultBackend: 'shop/echo-v1-5d8f7b9c4-x2kqp:8080' },
        { name: 'shop/db-0:5432', addresses: [{ ip: '127.0.0.1', port: tcpPort }], protocol: 'tcp', defaultBackend: 'shop/db-0:5432' },
      ],
      backends: [
        { name: 'shop/echo-v1-5d8f7b9c4-x2kqp:8080', endpoints: [{ ip: '127.0.0.1', port: echo.port, ready: true }] },
        { name: 'shop/db-0:5432', endpoints: [{ ip: '127.0.0.1', port: tcpPort, ready: true }] },
      ],
      authorization: [{ name: 'shop/deny-admin', action: 'DENY', targetServices: ['shop/echo-v1-5d8f7b9c4-x2kqp:8080'], rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] }],
    };
    dest = new NodeProxy({ config: inbound, originalDst: () => undefined, identifySource: () => undefined });
    dest.serveStreams();
    dest.setTelemetry(createRequestTelemetry({ direction: 'inbound', tracer: () => tracerB, sink: sinkB }));
    const outbound: ProxyConfig = {
      version: 'out',
      services: [
        { name: 'shop/echo:80', addresses: [{ ip: SERVICE_IP, port: SERVICE_PORT }], protocol: 'http', defaultBackend: 'shop/echo-v1:80',
          routes: [{ name: 'shop/echo', createdAtMs: 0, rules: [
            { matches: [{ path: { type: 'PathPrefix', value: '/retry' } }], retry: { attempts: 2, codes: [503], backoffMs: 0 }, backendRefs: [{ backend: 'shop/echo-v1:80', weight: 1 }] },
            { backendRefs: [{ backend: 'shop/echo-v1:80', weight: 1 }] },
          ] }] },
        { name: 'shop/db:5432', addresses: [{ ip: SERVICE_IP, port: 5432 }], protocol: 'tcp', defaultBackend: 'shop/db:5432' },
      ],
      backends: [
        { name: 'shop/echo-v1:80', endpoints: [{ ip: '127.0.0.1', port: echo.port, ready: true }] },
        { name: 'shop/db:5432', endpoints: [{ ip: '127.0.0.1', port: tcpPort, ready: true }] },
      ],
    };
    source = new NodeProxy({
      config: outbound, originalDst: () => dst, identifySource: () => WEB,
      // The same-node hand-off: the destination side gets the stream with the source identity and the trace headers.
      connectUpstream: async (t) => {
        const [mine, theirs] = duplexPair();
        dest.acceptStream(theirs, { dst: { ip: t.ip, port: t.port }, source: WEB, remoteAddress: '10.0.0.1', ...(t.traceHeaders ? { traceHeaders: t.traceHeaders } : {}) });
        return mine;
      },
    });
    source.setTelemetry(createRequestTelemetry({ direction: 'outbound', tracer: () => tracerA, sink: sinkA }));
    port = (await source.start({ outboundPort: 0, host: '127.0.0.1' })).outboundPort;
  });

  after(async () => {
    await source?.stop({ drain: false });
    await dest?.stop({ drain: false });
    await echo?.close();
    if (tcpEcho) await new Promise<void>((r) => tcpEcho.close(() => r()));
    await tracerA.shutdown();
    await tracerB.shutdown();
  });

  it('one trace across both proxies: the app span → CLIENT (source) → SERVER (destination) → the backend', async () => {
    exporter.reset();
    const r = await request(port, { path: '/hello?x=1', headers: { traceparent: `00-${APP_TRACE}-00f067aa0ba902b7-01` } });
    assert.equal(r.status, 200);
    await tracerA.forceFlush();
    await tracerB.forceFlush();
    const spans = exporter.getFinishedSpans();
    const client = spans.find((s) => s.kind === SpanKind.CLIENT);
    const server = spans.find((s) => s.kind === SpanKind.SERVER);
    assert.ok(client && server, `spans: ${spans.map((s) => s.name).join(',')}`);
    assert.equal(client.spanContext().traceId, APP_TRACE);
    assert.equal(server.spanContext().traceId, APP_TRACE);
    assert.equal(client.parentSpanContext?.spanId, '00f067aa0ba902b7');
    assert.equal(server.parentSpanContext?.spanId, client.spanContext().spanId);
    assert.equal(client.resource.attributes['k8s.node.name'], 'node-a');
    assert.equal(server.resource.attributes['k8s.node.name'], 'node-b');
    assert.equal(client.attributes['nodemesh.route'], 'shop/echo');
    assert.equal(client.attributes['nodemesh.destination.service'], 'echo');
    assert.equal(client.attributes['nodemesh.source.workload'], 'web');
    assert.equal(client.attributes['url.path'], '/hello');
    assert.equal(server.attributes['http.response.status_code'], 200);
    assert.equal(server.attributes['nodemesh.destination.workload'], 'echo-v1');
    // The backend's parent is the destination proxy's span: exactly one traceparent, naming it.
    const sent = echo.requests.at(-1)!.rawHeaders;
    const tps = sent.filter((_, i) => i % 2 === 0 && sent[i]!.toLowerCase() === 'traceparent');
    assert.equal(tps.length, 1);
    assert.equal(pickTraceHeaders(sent).traceparent, `00-${APP_TRACE}-${server.spanContext().spanId}-01`);
  });

  it('records: reporter side, labels by name (never an address or path), route, code', async () => {
    const n = sinkA.requests.length;
    await request(port, { path: '/a' });
    const a = sinkA.requests.at(-1)!;
    const b = sinkB.requests.at(-1)!;
    assert.equal(sinkA.requests.length, n + 1);
    assert.deepEqual({ dir: a.direction, code: a.code, src: a.source.workload, ns: a.source.namespace, svc: a.destination.service, dns: a.destination.namespace, route: a.route, attempts: a.attempts },
      { dir: 'outbound', code: 200, src: 'web', ns: 'shop', svc: 'echo', dns: 'shop', route: 'shop/echo', attempts: 1 });
    assert.deepEqual({ dir: b.direction, code: b.code, svc: b.destination.service, authz: b.authz },
      { dir: 'inbound', code: 200, svc: 'echo-v1', authz: { verdict: 'allow', policy: '' } });
    assert.ok(a.traceId && a.traceId === b.traceId);
  });

  it('a denied path: 403 from the destination, recorded there as authz_denied by the deciding policy', async () => {
    const r = await request(port, { path: '/admin/x' });
    assert.equal(r.status, 403);
    const b = sinkB.requests.at(-1)!;
    assert.equal(b.refusal, 'authz_denied');
    assert.deepEqual(b.authz, { verdict: 'deny', policy: 'shop/deny-admin' });
    const a = sinkA.requests.at(-1)!;
    assert.equal(a.code, 403);
  });

  it('opaque TCP: a connection span on each side, the destination parented through the tunnel headers', async () => {
    exporter.reset();
    dst = { ip: SERVICE_IP, port: 5432 };
    try {
      const r = await rawExchange(port, 'ping', 300);
      assert.equal(r.text, 'ping');
    } finally {
      dst = { ip: SERVICE_IP, port: SERVICE_PORT };
    }
    await new Promise((r) => setTimeout(r, 100));
    await tracerA.forceFlush();
    await tracerB.forceFlush();
    const spans = exporter.getFinishedSpans().filter((s) => s.name.startsWith('tcp'));
    const out = spans.find((s) => s.kind === SpanKind.CLIENT);
    const inn = spans.find((s) => s.kind === SpanKind.SERVER);
    assert.ok(out && inn, `tcp spans: ${spans.length}`);
    assert.equal(inn.parentSpanContext?.spanId, out.spanContext().spanId);
    assert.equal(out.attributes['nodemesh.tcp.bytes_received'], 4);
    const closed = sinkA.closed.at(-1)!;
    assert.equal(closed.outcome, 'closed');
    assert.equal(closed.destination.service, 'db');
  });

  it('body sizes both ways, buffered and streamed, on both sides (records and spans)', async () => {
    for (const size of [11, 300_000]) {
      exporter.reset();
      const body = 'x'.repeat(size);
      const r = await request(port, { method: 'POST', path: '/upload', body, headers: { 'content-type': 'text/plain' } });
      assert.equal(r.status, 200);
      const answered = Buffer.byteLength(r.body);
      const a = sinkA.requests.at(-1)!;
      const b = sinkB.requests.at(-1)!;
      assert.deepEqual([a.requestBytes, a.responseBytes], [size, answered], `source side, ${size}-byte body`);
      assert.deepEqual([b.requestBytes, b.responseBytes], [size, answered], `destination side, ${size}-byte body`);
      await tracerA.forceFlush();
      await tracerB.forceFlush();
      const client = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.CLIENT);
      assert.equal(client?.attributes['http.request.body.size'], size);
      assert.equal(client?.attributes['http.response.body.size'], answered);
    }
  });

  it('a retried request: one CLIENT span per attempt under the request span; the destination parents on the attempt that reached it', async () => {
    exporter.reset();
    failNext = true;
    const r = await request(port, { path: '/retry/x', headers: { 'x-fail-once': '1' } });
    assert.equal(r.status, 200);
    await tracerA.forceFlush();
    await tracerB.forceFlush();
    const spans = exporter.getFinishedSpans();
    const nodeA = spans.filter((s) => s.resource.attributes['k8s.node.name'] === 'node-a' && s.kind === SpanKind.CLIENT);
    const request_ = nodeA.find((s) => s.parentSpanContext === undefined || !nodeA.some((o) => o.spanContext().spanId === s.parentSpanContext?.spanId));
    assert.ok(request_, `node-a spans: ${nodeA.length}`);
    const attempts = nodeA.filter((s) => s.parentSpanContext?.spanId === request_.spanContext().spanId)
      .sort((x, y) => Number(x.attributes['nodemesh.retry.attempt']) - Number(y.attributes['nodemesh.retry.attempt']));
    assert.deepEqual(attempts.map((s) => [s.attributes['nodemesh.retry.attempt'], s.attributes['http.request.resend_count'], s.attributes['http.response.status_code']]), [[1, undefined, 503], [2, 1, 200]]);
    assert.equal(request_.attributes['nodemesh.retry.attempt'], 2);
    assert.equal(request_.attributes['http.response.status_code'], 200);
    const servers = spans.filter((s) => s.kind === SpanKind.SERVER).map((s) => s.parentSpanContext?.spanId).sort();
    assert.deepEqual(servers, attempts.map((s) => s.spanContext().spanId).sort(), 'each destination-side SERVER span is the child of one attempt');
    assert.equal(sinkA.requests.at(-1)!.attempts, 2);
  });

  it('a WebSocket upgrade: a span for the upgrade (101) and a tunnel span under it, on both sides', async () => {
    exporter.reset();
    const echoed = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/ws', headers: { host: 'echo.default', connection: 'Upgrade', upgrade: 'websocket' }, agent: false });
      req.on('upgrade', (_res, socket) => {
        socket.once('data', (d: Buffer) => { resolve(d.toString()); socket.end(); });
        socket.write('ping');
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(echoed, 'echo:ping');
    await new Promise((r) => setTimeout(r, 200));
    await tracerA.forceFlush();
    await tracerB.forceFlush();
    const spans = exporter.getFinishedSpans();
    for (const [node, kind] of [['node-a', SpanKind.CLIENT], ['node-b', SpanKind.SERVER]] as const) {
      const mine = spans.filter((s) => s.resource.attributes['k8s.node.name'] === node);
      const upgrade = mine.find((s) => s.name === 'GET' && s.kind === kind);
      const tunnel = mine.find((s) => s.name.startsWith('tcp') && s.kind === kind);
      assert.ok(upgrade && tunnel, `${node}: ${mine.map((s) => s.name).join(', ')}`);
      assert.equal(upgrade.attributes['http.response.status_code'], 101);
      assert.equal(tunnel.parentSpanContext?.spanId, upgrade.spanContext().spanId);
      assert.equal(tunnel.attributes['nodemesh.tcp.bytes_received'], 4, `${node}: the client's 4 bytes`);
    }
    const b = sinkB.requests.at(-1)!;
    assert.deepEqual([b.protocol, b.code], ['websocket', 101]);
  });
});

describe('request telemetry helpers', () => {
  it('replaceTraceHeaders drops the client\'s trace headers and adds ours', () => {
    const h = ['host', 'x', 'TraceParent', 'old', 'tracestate', 'a=b', 'accept', '*/*'];
    replaceTraceHeaders(h, { traceparent: 'new' });
    assert.deepEqual(h, ['host', 'x', 'accept', '*/*', 'traceparent', 'new']);
  });
  it('names: services, workloads of generated pod names', () => {
    assert.deepEqual(splitServiceName('shop/echo:80'), { namespace: 'shop', name: 'echo' });
    assert.equal(computeWorkloadName('echo-v1-5d8f7b9c4-x2kqp'), 'echo-v1');
    assert.equal(computeWorkloadName('echo-v1'), 'echo-v1');
  });
  it('inbound destination: the agent\'s record of the local pod, else the owner of the pod name; re-read per request', () => {
    const sink = collectingSink();
    const known = new Map([['10.0.0.9', { workload: 'checkout', namespace: 'pay' }]]);
    const t = createRequestTelemetry({ direction: 'inbound', tracer: () => createTracer({ nodeName: 'n', enabled: false }), sink, localWorkload: (ip) => known.get(ip) });
    const finish = (dstKey: string, service: string): RequestRecord => {
      const conn = { remoteAddress: '10.0.1.1', source: WEB, dstKey, dstPort: 8080 };
      const route = { service: { config: { name: service }, policies: [] }, path: '/', authority: 'x', candidate: undefined };
      t.request(conn, { protocol: 'http1', method: 'GET', target: '/', rawHeaders: [] }, route, { services: new Map() })!
        .end({ connection: 1, protocol: 'http1', method: 'GET', target: '/', authority: undefined, status: 200, forwarded: true, backend: undefined, endpoint: undefined, attempts: 1, durationMs: 1, source: WEB.spiffeId, reason: undefined });
      return sink.requests.at(-1)!;
    };
    assert.deepEqual(finish('10.0.0.9:8080', 'shop/checkout-v2-5d8f7b9c4-x2kqp:8080').destination, { service: 'checkout', namespace: 'pay', workload: 'checkout' });
    assert.deepEqual(finish('10.0.0.7:8080', 'shop/echo-v1-5d8f7b9c4-x2kqp:8080').destination, { service: 'echo-v1', namespace: 'shop', workload: 'echo-v1' });
    // The pod at 10.0.0.7 becomes known to the agent: the next request names it from the record, not the pod name.
    known.set('10.0.0.7', { workload: 'echo', namespace: 'shop' });
    assert.deepEqual(finish('10.0.0.7:8080', 'shop/echo-v1-5d8f7b9c4-x2kqp:8080').destination, { service: 'echo', namespace: 'shop', workload: 'echo' });
    assert.deepEqual(sink.requests.map((r) => r.source), [0, 1, 2].map(() => ({ workload: 'web', namespace: 'shop', spiffeId: WEB.spiffeId })));
  });
  it('refusals are classified into bounded values', () => {
    assert.equal(classifyRefusal({ status: 504, reason: 'request timeout', forwarded: true }), 'timeout_request');
    assert.equal(classifyRefusal({ status: 503, reason: 'upstream overloaded (max-requests)', forwarded: false }), 'circuit_breaker');
    assert.equal(classifyRefusal({ status: 429, reason: 'local rate limit exceeded', forwarded: false }), 'rate_limit');
    assert.equal(classifyRefusal({ status: 200, reason: undefined, forwarded: true }), undefined);
  });
});
