/** The tracer with an in-memory exporter: span kinds, attributes, parenting across two "nodes", sampling, drops, pass-through. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { InMemorySpanExporter, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace';
import { createTracer } from './tracer.ts';
import type { HeaderBag } from './propagation.ts';

const APP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const APP_SPAN = '00f067aa0ba902b7';

function pair(ratio = 1): { exporter: InMemorySpanExporter; a: ReturnType<typeof createTracer>; b: ReturnType<typeof createTracer> } {
  const exporter = new InMemorySpanExporter();
  const common = { exporter, samplingRatio: ratio, scheduledDelayMs: 10 };
  return { exporter, a: createTracer({ ...common, nodeName: 'node-a' }), b: createTracer({ ...common, nodeName: 'node-b' }) };
}

function byKind(spans: ReadableSpan[], kind: SpanKind): ReadableSpan[] {
  return spans.filter((s) => s.kind === kind);
}

describe('createTracer', () => {
  it('links client span on the source node and server span on the destination node through traceparent', async () => {
    const { exporter, a, b } = pair();
    // The app on node a sent a traceparent: the client span continues its trace.
    const incoming: HeaderBag = { traceparent: `00-${APP_TRACE}-${APP_SPAN}-01`, tracestate: 'vendor=x', host: 'reviews.shop:9080' };
    const parent = a.extract(incoming);
    const client = a.startClientSpan({
      method: 'GET', path: '/api/reviews', serverAddress: 'reviews.shop', serverPort: 9080, peerAddress: '10.1.2.3', protocolVersion: '1.1',
      mesh: { sourceWorkload: 'web', sourceNamespace: 'shop', sourceSpiffeId: 'spiffe://cluster.local/ns/shop/sa/web', destinationService: 'reviews', destinationNamespace: 'shop', retryAttempt: 1 },
    }, parent);
    client.setMesh({ route: 'shop/reviews-canary' });
    const outgoing: HeaderBag = { ...incoming };
    client.inject(outgoing);
    assert.match(String(outgoing.traceparent), new RegExp(`^00-${APP_TRACE}-${client.spanId}-01$`));
    assert.equal(outgoing.tracestate, 'vendor=x', 'tracestate travels on');

    // Node b: the inbound listener extracts and starts the server span.
    const server = b.startServerSpan({ method: 'GET', path: '/api/reviews', peerAddress: '192.168.50.2', mesh: { destinationWorkload: 'reviews-v2', authzVerdict: 'allow', authzPolicy: 'shop/reviews-get' } }, b.extract(outgoing));
    const toPod: HeaderBag = {};
    server.inject(toPod);
    assert.match(String(toPod.traceparent), new RegExp(`-${server.spanId}-01$`), 'the pod sees the server span as its parent');
    server.end({ statusCode: 200 });
    client.end({ statusCode: 200 });
    await a.forceFlush();
    await b.forceFlush();

    const spans = exporter.getFinishedSpans();
    const [c] = byKind(spans, SpanKind.CLIENT);
    const [s] = byKind(spans, SpanKind.SERVER);
    assert.ok(c && s);
    assert.equal(c.spanContext().traceId, APP_TRACE);
    assert.equal(c.parentSpanContext?.spanId, APP_SPAN);
    assert.equal(s.parentSpanContext?.spanId, c.spanContext().spanId);
    assert.equal(s.spanContext().traceId, APP_TRACE);
    assert.equal(c.name, 'GET');
    assert.deepEqual(
      { ...c.attributes },
      {
        'http.request.method': 'GET', 'url.path': '/api/reviews', 'server.address': 'reviews.shop', 'server.port': 9080,
        'network.peer.address': '10.1.2.3', 'network.protocol.version': '1.1', 'http.response.status_code': 200,
        'nodemesh.source.workload': 'web', 'nodemesh.source.namespace': 'shop', 'nodemesh.source.spiffe_id': 'spiffe://cluster.local/ns/shop/sa/web',
        'nodemesh.destination.service': 'reviews', 'nodemesh.destination.namespace': 'shop', 'nodemesh.retry.attempt': 1,
        'nodemesh.route': 'shop/reviews-canary', 'nodemesh.node': 'node-a',
      },
    );
    assert.equal(s.attributes['nodemesh.authz.verdict'], 'allow');
    assert.equal(s.resource.attributes['k8s.node.name'], 'node-b');
    assert.equal(s.resource.attributes['service.name'], 'nodemesh-proxy');
  });

  it('marks errors per the conventions: 5xx on server spans, 4xx and 5xx on client spans, retries counted', async () => {
    const { exporter, a } = pair();
    const first = a.startClientSpan({ method: 'POST', path: '/x', mesh: { retryAttempt: 1 } }, ROOT_CONTEXT);
    first.end({ statusCode: 503 });
    const retry = a.startClientSpan({ method: 'POST', path: '/x', mesh: { retryAttempt: 2 } }, ROOT_CONTEXT);
    retry.end({ statusCode: 200 });
    const denied = a.startServerSpan({ method: 'GET', path: '/admin', mesh: { authzVerdict: 'deny', authzPolicy: 'shop/deny-admin' } }, ROOT_CONTEXT);
    denied.end({ statusCode: 403, reason: 'authz_denied' });
    const timedOut = a.startServerSpan({ method: 'BREW', path: '/' }, ROOT_CONTEXT);
    timedOut.end({ errorType: 'timeout', reason: 'request timeout 2000 ms' });
    timedOut.end({ statusCode: 200 }); // ignored: already ended
    await a.forceFlush();
    const [f, r, d, t] = exporter.getFinishedSpans();
    assert.ok(f && r && d && t);
    assert.equal(f.status.code, SpanStatusCode.ERROR);
    assert.equal(f.attributes['error.type'], '503');
    assert.equal(f.attributes['http.request.resend_count'], undefined);
    assert.equal(r.attributes['http.request.resend_count'], 1);
    assert.equal(r.attributes['nodemesh.retry.attempt'], 2);
    assert.equal(r.status.code, SpanStatusCode.UNSET);
    assert.equal(d.status.code, SpanStatusCode.UNSET, 'a 403 is the client\'s problem, not the server\'s');
    assert.equal(d.attributes['nodemesh.authz.verdict'], 'deny');
    assert.equal(d.attributes['nodemesh.proxy.reason'], 'authz_denied');
    assert.equal(t.name, 'HTTP');
    assert.equal(t.attributes['http.request.method'], '_OTHER');
    assert.equal(t.attributes['http.request.method_original'], 'BREW');
    assert.equal(t.attributes['error.type'], 'timeout');
    assert.equal(t.attributes['http.response.status_code'], undefined);
  });

  it('follows the parent decision and samples roots by ratio', async () => {
    const { exporter, a } = pair(0);
    const root = a.startServerSpan({ method: 'GET', path: '/' }, ROOT_CONTEXT);
    assert.equal(root.sampled, false, 'ratio 0: a new trace is not sampled');
    root.end({ statusCode: 200 });
    const child = a.startServerSpan({ method: 'GET', path: '/' }, a.extract({ traceparent: `00-${APP_TRACE}-${APP_SPAN}-01` }));
    assert.equal(child.sampled, true, 'a sampled parent wins over ratio 0');
    child.end({ statusCode: 200 });
    const unsampledParent = a.startServerSpan({ method: 'GET', path: '/' }, a.extract({ traceparent: `00-${APP_TRACE}-${APP_SPAN}-00` }));
    assert.equal(unsampledParent.sampled, false);
    const h: HeaderBag = {};
    unsampledParent.inject(h);
    assert.match(String(h.traceparent), new RegExp(`^00-${APP_TRACE}-[0-9a-f]{16}-00$`), 'the decision not to sample travels on');
    unsampledParent.end({ statusCode: 200 });
    await a.forceFlush();
    assert.equal(exporter.getFinishedSpans().length, 1);
  });

  it('accepts B3 single and multi headers as the parent', () => {
    const { a } = pair();
    const single = trace.getSpanContext(a.extract({ b3: `${APP_TRACE}-${APP_SPAN}-1` }));
    assert.equal(single?.traceId, APP_TRACE);
    const multi = trace.getSpanContext(a.extract({ 'X-B3-TraceId': 'a3ce929d0e0e4736', 'X-B3-SpanId': APP_SPAN, 'X-B3-Sampled': '1' }));
    assert.equal(multi?.traceId, '0000000000000000a3ce929d0e0e4736', '64-bit B3 trace IDs are left-padded');
    assert.equal(multi?.traceFlags, 1);
  });

  it('drops spans beyond the queue bound, counts them, and never blocks', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => { release = r; });
    const received: ReadableSpan[] = [];
    // An exporter that hangs until released, like a collector that stopped answering.
    const slow: SpanExporter = {
      export: (spans, done) => {
        received.push(...spans);
        gate.then(() => done({ code: ExportResultCode.SUCCESS }), () => {});
      },
      shutdown: () => Promise.resolve(),
    };
    const t = createTracer({ nodeName: 'n', exporter: slow, samplingRatio: 1, maxQueueSize: 4, maxExportBatchSize: 2, scheduledDelayMs: 100_000 });
    const started = performance.now();
    for (let i = 0; i < 20; i++) t.startServerSpan({ method: 'GET', path: `/${i}` }, ROOT_CONTEXT).end({ statusCode: 200 });
    assert.ok(performance.now() - started < 200, 'ending spans does not wait for the exporter');
    const st = t.stats();
    assert.equal(st.queued + st.dropped, 20);
    assert.ok(st.dropped >= 14, `dropped ${st.dropped}`);
    assert.ok(st.queueDepth <= 4);
    release();
    await t.forceFlush();
    assert.equal(t.stats().exported, st.queued);
    assert.equal(received.length, st.queued);
    await t.shutdown();
  });

  it('counts failed exports', async () => {
    const failing: SpanExporter = { export: (_s, done) => done({ code: ExportResultCode.FAILED, error: new Error('connection refused') }), shutdown: () => Promise.resolve() };
    const messages: string[] = [];
    const t = createTracer({ nodeName: 'n', exporter: failing, samplingRatio: 1, onExportError: (m) => messages.push(m) });
    t.startServerSpan({ method: 'GET', path: '/' }, ROOT_CONTEXT).end({ statusCode: 200 });
    await t.forceFlush().catch(() => {});
    assert.equal(t.stats().exportFailed, 1);
    assert.equal(t.stats().exportFailures, 1);
    assert.match(messages[0] ?? '', /connection refused.*collector reachable/);
  });

  it('records an L4 connection span with byte counts', async () => {
    const { exporter, a } = pair();
    const c = a.startConnectionSpan({ direction: 'outbound', peerAddress: '10.1.0.7', serverPort: 5432, mesh: { destinationService: 'postgres', destinationNamespace: 'db', sourceWorkload: 'api' } });
    const tunnel: HeaderBag = {};
    c.inject(tunnel);
    assert.ok(typeof tunnel.traceparent === 'string', 'the CONNECT tunnel can carry the context to the other node');
    c.end({ bytesSent: 120, bytesReceived: 4096 });
    await a.forceFlush();
    const [s] = exporter.getFinishedSpans();
    assert.ok(s);
    assert.equal(s.name, 'tcp postgres');
    assert.equal(s.kind, SpanKind.CLIENT);
    assert.equal(s.attributes['network.transport'], 'tcp');
    assert.equal(s.attributes['nodemesh.tcp.bytes_received'], 4096);
  });

  it('when disabled, records nothing and passes the client\'s trace headers through unchanged', () => {
    const t = createTracer({ nodeName: 'n', enabled: false });
    assert.equal(t.enabled, false);
    const incoming: HeaderBag = { traceparent: `00-${APP_TRACE}-${APP_SPAN}-01`, tracestate: 'a=1' };
    const s = t.startClientSpan({ method: 'GET', path: '/' }, t.extract(incoming));
    const out: HeaderBag = {};
    s.inject(out);
    assert.equal(out.traceparent, incoming.traceparent);
    assert.equal(out.tracestate, 'a=1');
    s.end({ statusCode: 200 });
    const none: HeaderBag = {};
    t.startClientSpan({ method: 'GET', path: '/' }, t.extract({})).inject(none);
    assert.deepEqual(none, {}, 'no context in, no headers out');
  });

  it('refuses an impossible ratio with the setting in the message', () => {
    assert.throws(() => createTracer({ nodeName: 'n', exporter: new InMemorySpanExporter(), samplingRatio: 2 }), { code: 'NM_ERR_TELEMETRY_BAD_CONFIG', message: /samplingRatio 2/ });
  });
});
