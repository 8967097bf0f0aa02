/**
 * Real OTLP/HTTP protobuf export from two proxy tracers ("node-a", "node-b") into the sandbox OTLP receiver:
 * the decoded spans show the cross-node parent/child links and attributes for a plain, a retried and a denied
 * request. The retried request goes through the proxy's own hook (createRequestTelemetry): the request's CLIENT
 * span, one CLIENT span per attempt under it, each destination SERVER span under the attempt that reached it.
 * Loopback only.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { HeaderBag } from '../../l7proxy/telemetry/propagation.ts';
import { createRequestTelemetry, pickTraceHeaders } from '../../l7proxy/telemetry/request-telemetry.ts';
import { createTracer, type MeshTracer } from '../../l7proxy/telemetry/tracer.ts';
import type { DecodedSpan } from '../../sandbox/otlp-receiver/decode-trace-request.ts';
import { startOtlpReceiver, type OtlpReceiver } from '../../sandbox/otlp-receiver/receiver.ts';

const APP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

describe('proxy tracing → OTLP protobuf → receiver', () => {
  let dir: string;
  let rx: OtlpReceiver;
  let nodeA: MeshTracer;
  let nodeB: MeshTracer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-otlp-it-'));
    rx = await startOtlpReceiver({ outFile: join(dir, 'spans.jsonl') });
    const common = { otlp: { endpoint: rx.tracesUrl, headers: { 'x-tenant': 'test' } }, samplingRatio: 1, scheduledDelayMs: 20 };
    nodeA = createTracer({ ...common, nodeName: 'node-a' });
    nodeB = createTracer({ ...common, nodeName: 'node-b' });
  });
  after(async () => {
    await nodeA.shutdown();
    await nodeB.shutdown();
    await rx.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** One request as the two proxies would trace it: client span per attempt on a, server span per attempt on b. */
  function request(path: string, attempts: { status: number; verdict?: 'allow' | 'deny' }[]): void {
    const fromApp: HeaderBag = { traceparent: `00-${APP_TRACE}-${path === '/ok' ? '00f067aa0ba902b7' : path === '/retry' ? '00f067aa0ba902b8' : '00f067aa0ba902b9'}-01` };
    const parent = nodeA.extract(fromApp);
    for (const [i, a] of attempts.entries()) {
      const mesh = { sourceWorkload: 'web', sourceNamespace: 'shop', sourceSpiffeId: 'spiffe://cluster.local/ns/shop/sa/web', destinationService: 'reviews', destinationNamespace: 'shop', route: 'shop/reviews', retryAttempt: i + 1 };
      const client = nodeA.startClientSpan({ method: 'GET', path, serverAddress: 'reviews.shop.svc.cluster.local', serverPort: 9080, peerAddress: '10.200.0.2', mesh }, parent);
      const wire: HeaderBag = { ...fromApp };
      client.inject(wire);
      const server = nodeB.startServerSpan({ method: 'GET', path, peerAddress: '10.200.0.1', mesh: { ...mesh, destinationWorkload: 'reviews-v1' } }, nodeB.extract(wire));
      server.setMesh({ authzVerdict: a.verdict ?? 'allow', authzPolicy: 'shop/reviews-get' });
      server.end({ statusCode: a.status, ...(a.verdict === 'deny' ? { reason: 'authz_denied' } : {}) });
      client.end({ statusCode: a.status });
    }
  }

  /** The retried request as the source proxy traces it (forward.ts calls these hooks), and node-b per attempt. */
  function retriedThroughHooks(): void {
    const noSink = { connectionOpened: () => {}, connectionClosed: () => {}, requestFinished: () => {} };
    const hooks = createRequestTelemetry({ direction: 'outbound', tracer: () => nodeA, sink: noSink });
    const conn = { remoteAddress: '10.244.1.5', source: { spiffeId: 'spiffe://cluster.local/ns/shop/sa/web', namespace: 'shop', serviceAccount: 'web' }, dstKey: '10.96.0.20:9080', dstPort: 9080 };
    const obs = hooks.request(conn, { protocol: 'http1', method: 'GET', target: '/retry', rawHeaders: ['host', 'reviews', 'traceparent', `00-${APP_TRACE}-00f067aa0ba902b8-01`] },
      { service: { config: { name: 'shop/reviews:9080' }, policies: [] }, path: '/retry', authority: 'reviews.shop.svc.cluster.local:9080', candidate: { routeName: 'shop/reviews' } }, { services: new Map() })!;
    for (const [i, status] of [503, 200].entries()) {
      const headers = ['host', 'reviews'];
      const attempt = obs.attempt(i + 1, `10.200.0.${i + 2}:9080`, headers);
      const server = nodeB.startServerSpan({ method: 'GET', path: '/retry', peerAddress: '10.200.0.1', mesh: { destinationWorkload: 'reviews-v1' } }, nodeB.extract(pickTraceHeaders(headers)));
      server.end({ statusCode: status });
      attempt.end(status);
    }
    obs.end({ connection: 1, protocol: 'http1', method: 'GET', target: '/retry', authority: undefined, status: 200, forwarded: true, backend: 'shop/reviews-v1:9080', endpoint: '10.200.0.3:9080', attempts: 2, durationMs: 3, source: conn.source.spiffeId, reason: undefined });
  }

  const parentOf = (spans: readonly DecodedSpan[], s: DecodedSpan): DecodedSpan | undefined => spans.find((p) => p.spanId === s.parentSpanId);

  it('exports real protobuf that decodes into linked spans from both nodes', async () => {
    request('/ok', [{ status: 200 }]);
    retriedThroughHooks();
    request('/denied', [{ status: 403, verdict: 'deny' }]);
    await Promise.all([nodeA.forceFlush(), nodeB.forceFlush()]);
    const spans = await rx.waitForSpans((s) => s.length >= 9);
    assert.equal(spans.length, 9);
    assert.equal(rx.rejected(), 0);

    for (const server of spans.filter((s) => s.kind === 'SERVER')) {
      const client = parentOf(spans, server);
      assert.ok(client, `server span ${server.spanId} has its client span as parent`);
      assert.equal(client.kind, 'CLIENT');
      assert.equal(client.resource['k8s.node.name'], 'node-a');
      assert.equal(server.resource['k8s.node.name'], 'node-b');
      assert.equal(server.traceId, APP_TRACE);
      assert.equal(server.attributes['url.path'], client.attributes['url.path']);
    }

    const retriedRequest = spans.find((s) => s.kind === 'CLIENT' && s.attributes['url.path'] === '/retry' && s.parentSpanId === '00f067aa0ba902b8');
    assert.ok(retriedRequest, 'the request span hangs under the app\'s span');
    assert.equal(retriedRequest.attributes['nodemesh.retry.attempt'], 2, 'the request span says how many attempts it took');
    const attempts = spans.filter((s) => s.kind === 'CLIENT' && s.parentSpanId === retriedRequest.spanId)
      .sort((a, b) => Number(a.attributes['nodemesh.retry.attempt']) - Number(b.attributes['nodemesh.retry.attempt']));
    assert.deepEqual(attempts.map((s) => [s.attributes['nodemesh.retry.attempt'], s.attributes['http.request.resend_count'] ?? 0, s.attributes['network.peer.address'], s.status.code]), [[1, 0, '10.200.0.2', 'ERROR'], [2, 1, '10.200.0.3', 'UNSET']]);

    const denied = spans.find((s) => s.kind === 'SERVER' && s.attributes['url.path'] === '/denied');
    assert.ok(denied);
    assert.equal(denied.attributes['nodemesh.authz.verdict'], 'deny');
    assert.equal(denied.attributes['nodemesh.proxy.reason'], 'authz_denied');
    assert.equal(denied.attributes['http.response.status_code'], 403);
    assert.equal(parentOf(spans, denied)?.status.code, 'ERROR', 'the client side sees the 403 as an error');

    const ok = spans.find((s) => s.kind === 'CLIENT' && s.attributes['url.path'] === '/ok');
    assert.deepEqual(
      Object.fromEntries(Object.entries(ok?.attributes ?? {}).filter(([k]) => k.startsWith('nodemesh.source') || k === 'server.address' || k === 'http.request.method')),
      { 'http.request.method': 'GET', 'server.address': 'reviews.shop.svc.cluster.local', 'nodemesh.source.workload': 'web', 'nodemesh.source.namespace': 'shop', 'nodemesh.source.spiffe_id': 'spiffe://cluster.local/ns/shop/sa/web' },
    );
    assert.ok(ok && ok.durationMs >= 0 && ok.scope.name === 'nodemesh-proxy');

    const lines = (await readFile(join(dir, 'spans.jsonl'), 'utf8')).trim().split('\n');
    assert.equal(lines.length, 9, 'one JSON line per span in the file');
    assert.equal(nodeA.stats().exported, 5);
    assert.equal(nodeB.stats().dropped, 0);
  });
});
