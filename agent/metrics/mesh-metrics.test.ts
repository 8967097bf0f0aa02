/** The nodemesh_* families fed from proxy records, BPF counters and agent state, scraped over HTTP. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import type { RequestRecord } from '../../l7proxy/telemetry/records.ts';
import { createStats } from '../../l7proxy/stats.ts';
import { AccessLogWriter } from './access-log.ts';
import { startMetricsServer } from './handler.ts';
import { createMeshMetrics, describeDatapathCount, mirrorProxyStats, recordNodeStateApply, setCertificateExpiries, setDatapathCounters, setMapFill } from './mesh-metrics.ts';
import { Registry } from './registry.ts';
import { createTelemetrySink } from './telemetry-sink.ts';
import { parseExposition, sumSamples } from './testing/parse-exposition.ts';

function request(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    direction: 'outbound', startMs: Date.UTC(2026, 10, 20, 10, 0, 0), durationSeconds: 0.004, protocol: 'http1', method: 'GET', code: 200,
    source: { workload: 'web', namespace: 'shop', spiffeId: 'spiffe://cluster.local/ns/shop/sa/web' },
    destination: { service: 'reviews', namespace: 'shop' }, route: 'shop/reviews', requestBytes: 0, responseBytes: 512, attempts: 1,
    path: '/api/reviews/42?token=secret', peerAddress: '10.1.0.5', ...over,
  };
}

describe('mesh metrics', () => {
  it('a scrape during a known load matches what the client saw', async () => {
    const registry = new Registry();
    const m = createMeshMetrics(registry);
    const sink = createTelemetrySink(m);
    const server = await startMetricsServer({ registry, host: '127.0.0.1', port: 0 });
    try {
      // The "client" sent 40 requests: 37 OK, 2 answered 503 after a retry each, 1 timed out (504).
      const seen = { ok: 0, unavailable: 0, timeout: 0 };
      for (let i = 0; i < 37; i++) { sink.requestFinished(request({ durationSeconds: 0.002 + i / 100_000 })); seen.ok++; }
      for (let i = 0; i < 2; i++) { sink.requestFinished(request({ code: 503, attempts: 2 })); seen.unavailable++; }
      sink.requestFinished(request({ code: 504, refusal: 'timeout_request', durationSeconds: 2 })); seen.timeout++;
      // The destination node's view of one of them, with the authorization decision.
      sink.requestFinished(request({ direction: 'inbound', authz: { verdict: 'allow', policy: 'shop/reviews-get' } }));

      const res = await fetch(server.url, { headers: { 'accept-encoding': 'gzip' } });
      assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(res.headers.get('content-encoding'), 'gzip', 'compressed for scrapers that accept it (fetch inflates it)');
      const text = await res.text();
      const exp = parseExposition(text);
      const src = { reporter: 'source', source_workload: 'web', destination_service: 'reviews', route: 'shop/reviews' };
      assert.equal(sumSamples(exp, 'nodemesh_requests_total', { ...src, code: '200' }), seen.ok);
      assert.equal(sumSamples(exp, 'nodemesh_requests_total', { ...src, code: '503' }), seen.unavailable);
      assert.equal(sumSamples(exp, 'nodemesh_requests_total', { ...src, code: '504' }), seen.timeout);
      assert.equal(sumSamples(exp, 'nodemesh_request_duration_seconds_count', src), 40);
      assert.equal(sumSamples(exp, 'nodemesh_request_duration_seconds_bucket', { ...src, le: '0.005' }), 39, 'all but the 2 s timeout fall in the 5 ms bucket');
      assert.equal(sumSamples(exp, 'nodemesh_retries_total', { destination_service: 'reviews' }), 2);
      assert.equal(sumSamples(exp, 'nodemesh_timeouts_total', { kind: 'request' }), 1);
      assert.equal(sumSamples(exp, 'nodemesh_requests_total', { reporter: 'destination' }), 1);
      assert.equal(sumSamples(exp, 'nodemesh_authz_verdicts_total', { verdict: 'allow', policy: 'shop/reviews-get' }), 1);
      assert.equal(sumSamples(exp, 'nodemesh_response_size_bytes_bucket', { ...src, le: '1024' }), 40);
      assert.doesNotMatch(text, /token=secret|10\.1\.0\.5|api\/reviews/, 'paths and addresses never become labels');
    } finally {
      await server.close();
    }
  });

  it('mirrors BPF counters, map fill, NodeState, certificates and proxy counters', () => {
    const registry = new Registry();
    const m = createMeshMetrics(registry);
    assert.deepEqual(describeDatapathCount(1), { kind: 'drop', name: 'no_backend' });
    assert.deepEqual(describeDatapathCount(9), { kind: 'event', name: 'sockhash_add' });
    assert.equal(describeDatapathCount(16), undefined);
    setDatapathCounters(m, { nodeCounts: [0, 3n, 0, 0, 0, 1], services: [{ namespace: 'shop', service: 'reviews', translations: 120, noBackend: 2, affinityHits: 0, proxied: 100 }] });
    setMapFill(m, [{ map: 'nm_lb_be', entries: 42, capacity: 65536 }]);
    recordNodeStateApply(m, { version: 17, shards: 2, seconds: 0.012, ok: true });
    recordNodeStateApply(m, { version: 18, shards: 2, seconds: 0.5, ok: false });
    setCertificateExpiries(m, [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', notAfter: new Date('2026-11-21T10:00:00Z') }]);
    const stats = createStats();
    stats.rejected.malformed = 4;
    stats.connections.active = 9;
    mirrorProxyStats(m, stats);
    const exp = parseExposition(registry.render());
    assert.equal(sumSamples(exp, 'nodemesh_datapath_drops_total', { reason: 'no_backend' }), 3);
    assert.equal(sumSamples(exp, 'nodemesh_datapath_drops_total', { reason: 'proxy_down' }), 1);
    assert.equal(sumSamples(exp, 'nodemesh_datapath_translations_total', { destination_service: 'reviews' }), 120);
    assert.equal(sumSamples(exp, 'nodemesh_bpf_map_entries', { map: 'nm_lb_be' }), 42);
    assert.equal(sumSamples(exp, 'nodemesh_bpf_map_capacity', { map: 'nm_lb_be' }), 65536);
    assert.equal(sumSamples(exp, 'nodemesh_nodestate_version'), 17, 'a failed apply keeps the version in effect');
    assert.equal(sumSamples(exp, 'nodemesh_nodestate_apply_failures_total'), 1);
    assert.equal(sumSamples(exp, 'nodemesh_nodestate_apply_seconds_count'), 2);
    assert.equal(sumSamples(exp, 'nodemesh_certificate_expiry_timestamp_seconds', { identity: 'spiffe://cluster.local/ns/shop/sa/web' }), 1795255200);
    assert.equal(sumSamples(exp, 'nodemesh_proxy_rejected_requests_total', { reason: 'malformed' }), 4);
    assert.equal(sumSamples(exp, 'nodemesh_proxy_connections_active'), 9);
    // A service gone from the BPF stats map loses its series.
    setDatapathCounters(m, { nodeCounts: [], services: [] });
    assert.equal(sumSamples(parseExposition(registry.render()), 'nodemesh_datapath_translations_total'), 0);
  });

  it('counts TCP connections and bytes by direction', () => {
    const registry = new Registry();
    const m = createMeshMetrics(registry);
    const sink = createTelemetrySink(m);
    const peers = { direction: 'outbound' as const, source: { workload: 'api', namespace: 'db' }, destination: { service: 'postgres', namespace: 'db' } };
    sink.connectionOpened(peers);
    sink.connectionClosed({ ...peers, startMs: 0, durationSeconds: 3, bytesSent: 100, bytesReceived: 5000, outcome: 'closed' });
    const exp = parseExposition(registry.render());
    assert.equal(sumSamples(exp, 'nodemesh_tcp_connections_opened_total', { destination_service: 'postgres' }), 1);
    assert.equal(sumSamples(exp, 'nodemesh_tcp_connections_closed_total', { outcome: 'closed' }), 1);
    assert.equal(sumSamples(exp, 'nodemesh_tcp_bytes_total', { direction: 'received' }), 5000);
  });
});

describe('access log', () => {
  it('writes one JSON line per record of opted-in namespaces, in batches', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => { text += c.toString(); });
    const log = new AccessLogWriter({ stream: out, node: 'node-a', flushIntervalMs: 5 });
    log.setNamespaces(['shop']);
    log.logRequest(request({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736' }));
    log.logRequest(request({ source: { workload: 'x', namespace: 'other' } })); // outbound from a namespace that did not opt in
    log.logRequest(request({ direction: 'inbound', source: { workload: 'x', namespace: 'other' } })); // inbound to shop: logged
    log.logConnection({ direction: 'inbound', startMs: 0, durationSeconds: 1.5, source: { workload: 'a', namespace: 'other' }, destination: { service: 'db', namespace: 'shop' }, bytesSent: 1, bytesReceived: 2, outcome: 'denied', authz: { verdict: 'deny', policy: 'shop/deny-all' } });
    assert.equal(text, '', 'nothing is written synchronously');
    await log.flush();
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    assert.deepEqual(lines[0], {
      time: '2026-11-20T10:00:00.000Z', type: 'request', node: 'node-a', reporter: 'source', src_workload: 'web', src_namespace: 'shop',
      src_spiffe_id: 'spiffe://cluster.local/ns/shop/sa/web', dst_service: 'reviews', dst_namespace: 'shop', peer_address: '10.1.0.5', duration_ms: 4,
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', protocol: 'http1', method: 'GET', path: '/api/reviews/42?token=secret', code: 200, route: 'shop/reviews',
      attempts: 1, request_bytes: 0, response_bytes: 512,
    });
    assert.equal(lines[2]?.type, 'connection');
    assert.equal(lines[2]?.authz_verdict, 'deny');
    await log.close();
  });

  it('drops and counts past its bound while the stream is stuck, never blocking', async () => {
    const stuck = new PassThrough({ highWaterMark: 16 }); // nobody reads it
    let dropCount = 0;
    const log = new AccessLogWriter({ stream: stuck, node: 'n', maxBuffered: 10, flushIntervalMs: 1, onDrop: () => dropCount++ });
    log.setNamespaces(['shop']);
    for (let i = 0; i < 10; i++) log.logRequest(request());
    await new Promise((r) => setTimeout(r, 20)); // first batch goes to the stream, which is now full
    const started = performance.now();
    for (let i = 0; i < 100; i++) log.logRequest(request());
    assert.ok(performance.now() - started < 50);
    assert.equal(log.dropped(), 90);
    assert.equal(dropCount, 90);
    stuck.resume(); // the reader catches up: the buffered 10 are written
    await log.flush();
    assert.equal(log.written(), 20);
  });
});
