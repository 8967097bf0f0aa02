/** AgentTelemetry on fake maps: worker batches become metrics, BPF counters and map fill are read, stale workers age out. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FakeMapSet, nmCount, nmPodCount, nmPodegCount, possibleCpus } from '../bpf/index.ts';
import { createStats } from '../l7proxy/stats.ts';
import type { RequestRecord } from '../l7proxy/telemetry/records.ts';
import { createLogger } from './logger.ts';
import { parseExposition, sumSamples } from './metrics/testing/parse-exposition.ts';
import { FILL_MAPS, AgentTelemetry, parseServicePortKey } from './telemetry.ts';
import { PassThrough } from 'node:stream';

const log = createLogger(new PassThrough(), 'test', {});

function request(code: number): RequestRecord {
  return {
    direction: 'outbound', startMs: 0, durationSeconds: 0.002, protocol: 'http1', method: 'GET', code,
    source: { workload: 'web', namespace: 'shop' }, destination: { service: 'reviews', namespace: 'shop' }, route: 'shop/reviews',
    requestBytes: 0, responseBytes: 10, attempts: 1, path: '/x',
  };
}

describe('AgentTelemetry', () => {
  it('counts the records of worker batches and mirrors the workers\' proxy counters', () => {
    const t = new AgentTelemetry({ nodeName: 'node-a', maps: new FakeMapSet(), serviceNames: () => new Map(), log, accessLogStream: new PassThrough() });
    const stats = createStats();
    stats.connections.active = 3;
    t.onBatch({ t: 'nm-telemetry', pid: 1, requests: [request(200), request(200), request(503)], opened: [], closed: [], dropped: 0, proxyStats: stats });
    t.onBatch({ t: 'nm-telemetry', pid: 2, requests: [request(200)], opened: [], closed: [], dropped: 2, proxyStats: stats });
    const exp = parseExposition(t.registry.render());
    assert.equal(sumSamples(exp, 'nodemesh_requests_total', { reporter: 'source', route: 'shop/reviews', code: '200' }), 3);
    assert.equal(sumSamples(exp, 'nodemesh_requests_total', { code: '503' }), 1);
    assert.equal(sumSamples(exp, 'nodemesh_proxy_connections_active'), 6, 'two workers, summed');
    assert.deepEqual(t.counts, { requests: 4, connections: 0, droppedInWorkers: 2 });
  });

  it('reads datapath counters per service and the fill of every hash map', () => {
    const maps = new FakeMapSet();
    const cpus = possibleCpus;
    const zero = { translations: 0n, no_backend: 0n, aff_hits: 0n, proxied: 0n };
    maps.map('nm_lb_stats').set(7, Array.from({ length: cpus }, (_, i) => (i === 0 ? { ...zero, translations: 5n, proxied: 2n } : zero)));
    maps.map('nm_lb_svc').set(7, { flags: 0, ready: 1, terminating: 0, aff_timeout: 0 });
    maps.map('nm_dp_count').set(nmCount.NM_CNT_DROP_PROXY_DOWN, Array.from({ length: cpus }, (_, i) => (i === 0 ? 4n : 0n)));
    const t = new AgentTelemetry({ nodeName: 'node-a', maps, serviceNames: () => new Map([[7, 'shop/reviews:9080/TCP/v4']]), log, accessLogStream: new PassThrough() });
    t.refreshDatapath();
    const exp = parseExposition(t.registry.render());
    assert.equal(sumSamples(exp, 'nodemesh_datapath_translations_total', { destination_service: 'reviews', destination_namespace: 'shop' }), 5);
    assert.equal(sumSamples(exp, 'nodemesh_datapath_proxied_total', { destination_service: 'reviews' }), 2);
    assert.equal(sumSamples(exp, 'nodemesh_datapath_drops_total', { reason: 'proxy_down' }), 4);
    assert.equal(sumSamples(exp, 'nodemesh_bpf_map_entries', { map: 'nm_lb_svc' }), 1);
    assert.ok(t.mapFill().length === FILL_MAPS.length && FILL_MAPS.includes('nm_lb_svc') && !FILL_MAPS.includes('nm_dp_cfg'));
  });

  it('exports the pods\' anti-spoofing and STRICT-ingress counters by reason and the admin guard\'s resets by port, no addresses', async () => {
    const maps = new FakeMapSet();
    const cpus = possibleCpus;
    const perCpu = (first: bigint, rest = 0n): bigint[] => Array.from({ length: cpus }, (_, i) => (i === 0 ? first : rest));
    maps.map('nm_podeg_count').set(nmPodegCount.NM_PODEG_CNT_PASSED, perCpu(100n, 1n));
    maps.map('nm_podeg_count').set(nmPodegCount.NM_PODEG_CNT_SPOOFED, perCpu(5n));
    maps.map('nm_podeg_count').set(nmPodegCount.NM_PODEG_CNT_NO_ENTRY, perCpu(2n));
    maps.map('nm_pod_count').set(nmPodCount.NM_POD_CNT_ALLOWED, perCpu(50n));
    maps.map('nm_pod_count').set(nmPodCount.NM_POD_CNT_DROPPED, perCpu(3n, 1n));
    maps.map('nm_pod4_src').set(7, { addr: '10.244.1.7', flags: 0 });
    let table: { port: number; packets: number }[] | undefined = [{ port: 10256, packets: 9 }, { port: 15012, packets: 1 }];
    const t = new AgentTelemetry({ nodeName: 'node-a', maps, serviceNames: () => new Map(), log, accessLogStream: new PassThrough(), adminGuardRejected: async () => table });
    t.refreshDatapath();
    await t.refreshAdminGuard();
    let text = t.registry.render();
    let exp = parseExposition(text);
    assert.equal(sumSamples(exp, 'nodemesh_pod_egress_drops_total', { reason: 'spoofed_source' }), 5);
    assert.equal(sumSamples(exp, 'nodemesh_pod_egress_drops_total', { reason: 'no_entry' }), 2);
    assert.equal(sumSamples(exp, 'nodemesh_pod_egress_drops_total', { reason: 'ipv6' }), 0);
    assert.equal(sumSamples(exp, 'nodemesh_pod_egress_passed_total'), 100 + (cpus - 1), 'summed over CPUs');
    assert.equal(sumSamples(exp, 'nodemesh_pod_ingress_drops_total', { reason: 'not_from_proxy' }), 3 + (cpus - 1), 'STRICT guard drops, summed over CPUs');
    assert.equal(sumSamples(exp, 'nodemesh_pod_ingress_drops_total'), 3 + (cpus - 1), 'allowed packets are not drops: one reason only');
    assert.equal(sumSamples(exp, 'nodemesh_admin_guard_rejected_total', { port: '10256' }), 9);
    assert.equal(sumSamples(exp, 'nodemesh_admin_guard_rejected_total', { port: '15012' }), 1);
    assert.doesNotMatch(text, /10\.244\.1\.7/, 'no pod address in any label');
    // The guard removed (no table): its series go.
    table = undefined;
    await t.refreshAdminGuard();
    text = t.registry.render();
    exp = parseExposition(text);
    assert.equal(sumSamples(exp, 'nodemesh_admin_guard_rejected_total'), 0);
    assert.doesNotMatch(text, /nodemesh_admin_guard_rejected_total\{/);
  });

  it('service-port keys name the service', () => {
    assert.deepEqual(parseServicePortKey('shop/reviews:9080/TCP/v4'), { namespace: 'shop', service: 'reviews' });
    assert.equal(parseServicePortKey('nonsense'), undefined);
  });
});
