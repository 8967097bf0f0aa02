/** Planning and writing service entries: the readiness, locality and ordering rules, on fake maps. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nmBeFlags, nmSvcFlags } from './codecs.generated.ts';
import { BpfCodecError } from './errors.ts';
import { FakeMapSet } from './fake-map.ts';
import { type ServiceSpec, lookupOriginalDst, planServiceEntries, readServiceCounters, removeServiceEntries, writeDatapathConfig, writeServiceEntries, writeServicesBulk } from './lb-tables.ts';

const base: ServiceSpec = {
  id: 7,
  proto: 'TCP',
  frontends: [
    { addr: '10.96.0.10', port: 80, kind: 'ClusterIP' },
    { addr: '192.168.0.2', port: 30080, kind: 'NodePort' },
  ],
  backends: [
    { id: 12, addr: '10.244.1.3', port: 8080, ready: true, local: false },
    { id: 11, addr: '10.244.0.2', port: 8080, ready: true, local: true },
    { id: 13, addr: '10.244.1.4', port: 8080, ready: false, serving: true, terminating: true },
    { id: 14, addr: '10.244.1.5', port: 8080, ready: false, serving: false, terminating: true },
    { id: 15, addr: '10.244.1.6', port: 8080, ready: false },
  ],
};

/** A golden-style text dump of what a service put in the maps. */
function dump(maps: FakeMapSet): string[] {
  const lines: string[] = [];
  for (const [k, v] of maps.fake('nm_lb4_fe').sortedEntries()) lines.push(`FE ${k.addr}:${k.port}/${k.proto} -> svc ${v.svc_id} kind ${v.kind}`);
  for (const [k, v] of maps.fake('nm_lb_svc').sortedEntries()) lines.push(`SVC ${k} flags ${v.flags} ready ${v.ready} term ${v.terminating} aff ${v.aff_timeout}`);
  for (const [k, v] of maps.fake('nm_lb_slot').sortedEntries()) lines.push(`SLOT ${k.svc_id}/${k.slot} -> be ${v.backend_id}`);
  for (const [k, v] of maps.fake('nm_lb_be').sortedEntries()) lines.push(`BE ${k} ${v.addr}:${v.port} flags ${v.flags} svc ${v.svc_id}`);
  return lines;
}

describe('planServiceEntries', () => {
  it('puts ready endpoints first, serving terminating ones after, drops the rest', () => {
    const e = planServiceEntries(base);
    assert.deepEqual(e.svc, { flags: 0, ready: 2, terminating: 1, aff_timeout: 0 });
    assert.deepEqual(e.slots.map(([k, v]) => [k.slot, v.backend_id]), [[1, 11], [2, 12], [3, 13]]);
    assert.deepEqual(e.backends.map(([id, b]) => [id, b.flags]), [[11, nmBeFlags.NM_BE_F_LOCAL], [12, 0], [13, nmBeFlags.NM_BE_F_TERMINATING]]);
    assert.equal(e.fe4.length, 2);
  });

  it('internalTrafficPolicy Local keeps only this node\'s endpoints', () => {
    const e = planServiceEntries({ ...base, trafficPolicyLocal: true });
    assert.deepEqual(e.slots.map(([, v]) => v.backend_id), [11]);
    assert.equal(e.svc.flags, nmSvcFlags.NM_SVC_F_LOCAL);
  });

  it('sessionAffinity and L7 set their flags', () => {
    const e = planServiceEntries({ ...base, affinityTimeoutSec: 10800, l7: true });
    assert.equal(e.svc.flags, nmSvcFlags.NM_SVC_F_AFFINITY | nmSvcFlags.NM_SVC_F_L7);
    assert.equal(e.svc.aff_timeout, 10800);
  });

  it('refuses what the kernel could not use', () => {
    assert.throws(() => planServiceEntries({ ...base, id: 0 }), BpfCodecError);
    assert.throws(() => planServiceEntries({ ...base, frontends: [...base.frontends, { addr: 'fd00::1', port: 80, kind: 'ClusterIP' }] }), /mixes IPv4 and IPv6/);
    assert.throws(() => planServiceEntries({ ...base, backends: [{ id: 1, addr: 'fd00::2', port: 1, ready: true }] }), /not of the frontends' family/);
    assert.throws(() => planServiceEntries({ ...base, affinityTimeoutSec: 90000 }), /86400/);
  });

  it('plans IPv6 frontends into nm_lb6_fe', () => {
    const e = planServiceEntries({ id: 3, proto: 'UDP', frontends: [{ addr: 'fd00:96::a', port: 53, kind: 'ClusterIP' }], backends: [{ id: 1, addr: 'fd00:244::5', port: 53, ready: true }] });
    assert.equal(e.fe6[0]?.[0].addr, 'fd00:96::a');
    assert.equal(e.fe6[0]?.[0].proto, 17);
  });
});

describe('writing service entries', () => {
  it('writes, shrinks and removes, leaving nothing stale', () => {
    const maps = new FakeMapSet(2);
    const first = planServiceEntries(base);
    writeServiceEntries(maps, first);
    assert.deepEqual(dump(maps), [
      'FE 10.96.0.10:80/6 -> svc 7 kind 1',
      'FE 192.168.0.2:30080/6 -> svc 7 kind 2',
      'SVC 7 flags 0 ready 2 term 1 aff 0',
      'SLOT 7/1 -> be 11',
      'SLOT 7/2 -> be 12',
      'SLOT 7/3 -> be 13',
      'BE 11 10.244.0.2:8080 flags 2 svc 7',
      'BE 12 10.244.1.3:8080 flags 0 svc 7',
      'BE 13 10.244.1.4:8080 flags 1 svc 7',
    ]);

    const second = planServiceEntries({ ...base, frontends: [base.frontends[0]!], backends: [base.backends[0]!] });
    writeServiceEntries(maps, second, first);
    assert.deepEqual(dump(maps), ['FE 10.96.0.10:80/6 -> svc 7 kind 1', 'SVC 7 flags 0 ready 1 term 0 aff 0', 'SLOT 7/1 -> be 12', 'BE 12 10.244.1.3:8080 flags 0 svc 7']);

    maps.map('nm_lb_stats').set(7, [{ translations: 1n, no_backend: 0n, aff_hits: 0n, proxied: 0n }, { translations: 0n, no_backend: 0n, aff_hits: 0n, proxied: 0n }]);
    removeServiceEntries(maps, second);
    assert.deepEqual(dump(maps), []);
    assert.deepEqual(readServiceCounters(maps, 7), { translations: 0n, noBackend: 0n, affinityHits: 0n, proxied: 0n }, 'counters are zeroed with the service');
    assert.equal(readServiceCounters(maps, 0), undefined, 'no slot outside 1..MAX_SERVICE_ID');
  });

  it('drops stale slots and backends even without the previous plan', () => {
    const maps = new FakeMapSet(2);
    writeServiceEntries(maps, planServiceEntries(base));
    writeServiceEntries(maps, planServiceEntries({ ...base, backends: [] }));
    assert.deepEqual(dump(maps).filter((l) => !l.startsWith('FE')), ['SVC 7 flags 0 ready 0 term 0 aff 0']);
  });

  it('keeps counters across rewrites', () => {
    const maps = new FakeMapSet(2);
    const e = planServiceEntries(base);
    writeServicesBulk(maps, [e]);
    maps.map('nm_lb_stats').set(7, [{ translations: 5n, no_backend: 1n, aff_hits: 0n, proxied: 0n }, { translations: 2n, no_backend: 0n, aff_hits: 0n, proxied: 0n }]);
    writeServicesBulk(maps, [e]);
    assert.equal(readServiceCounters(maps, 7)?.translations, 7n);
  });

  it('bulk-writes many services with one batch per map', () => {
    const maps = new FakeMapSet(2);
    const services = Array.from({ length: 200 }, (_, i) =>
      planServiceEntries({
        id: i + 1,
        proto: 'TCP',
        frontends: [{ addr: `10.96.${i >> 8}.${i & 255}`, port: 80, kind: 'ClusterIP' }],
        backends: [1, 2, 3, 4].map((b) => ({ id: i * 4 + b, addr: `10.244.${i >> 8}.${(i & 63) * 4 + b - 1}`, port: 8080, ready: true })),
      }),
    );
    writeServicesBulk(maps, services);
    assert.equal(maps.fake('nm_lb_slot').size, 800);
    assert.equal(maps.fake('nm_lb_slot').stats.setMany, 1);
    assert.equal(maps.fake('nm_lb4_fe').stats.set, 0);
  });

  it('configures the node and reads original destinations for the proxy', () => {
    const maps = new FakeMapSet(2);
    writeDatapathConfig(maps, { sockmap: true, proxyCheck: true, proxy: { ip4: '192.168.0.2', port: 15001, mark: 0x539 } });
    assert.deepEqual(maps.map('nm_dp_cfg').get(0), { flags: 3, proxy_mark: 0x539, host_netns: 0n, proxy4: '192.168.0.2', proxy_port: 15001, proxy6: '::' });
    maps.map('nm_pxy4_odst').set({ addr: '10.244.0.9', port: 40000 }, { addr: '10.96.0.10', port: 80, flags: 1, svc_id: 7 });
    assert.equal(lookupOriginalDst(maps, { addr: '10.244.0.9', port: 40000 }, true)?.addr, '10.96.0.10');
    assert.equal(lookupOriginalDst(maps, { addr: '10.244.0.9', port: 40000 }), undefined);
  });
});
