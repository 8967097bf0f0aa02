/** FakeMap: the kernel semantics the agent's tests rely on. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mapSpecs } from './codecs.generated.ts';
import { BpfMapError } from './errors.ts';
import { FakeMap, FakeMapSet, createFakeMap } from './fake-map.ts';
import type { MapSpec } from './map-spec.ts';

const isErr = (code: string, errno?: number) => (e: unknown) => e instanceof BpfMapError && e.code === code && (errno === undefined || e.errno === errno);

describe('FakeMap', () => {
  it('hash: NOEXIST/EXIST flags, E2BIG when full, delete reports absence', () => {
    const m = new FakeMap({ ...mapSpecs.nm_lb_svc, maxEntries: 2 }, mapSpecs.nm_lb_svc.value);
    const v = { flags: 0, ready: 1, terminating: 0, aff_timeout: 0 };
    m.set(1, v);
    assert.throws(() => m.set(1, v, 'noexist'), isErr('NM_ERR_BPF_MAP_OP', 17));
    assert.throws(() => m.set(9, v, 'exist'), isErr('NM_ERR_BPF_MAP_OP', 2));
    m.set(2, v);
    assert.throws(() => m.set(3, v), isErr('NM_ERR_BPF_MAP_FULL', 7));
    m.set(2, { ...v, ready: 5 }); // replacing in a full map is fine
    assert.equal(m.get(2)?.ready, 5);
    assert.equal(m.delete(2), true);
    assert.equal(m.delete(2), false);
    assert.equal(m.get(2), undefined);
  });

  it('lru: evicts the least recently used entry instead of failing', () => {
    const spec = { ...mapSpecs.nm_lb_aff, maxEntries: 2 };
    const m = new FakeMap(spec, spec.value);
    const val = (b: number) => ({ last_ns: 1n, backend_id: b });
    m.set({ client: 1n, svc_id: 1 }, val(1));
    m.set({ client: 2n, svc_id: 1 }, val(2));
    m.get({ client: 1n, svc_id: 1 }); // touch: 2 is now the oldest
    m.set({ client: 3n, svc_id: 1 }, val(3));
    assert.equal(m.get({ client: 2n, svc_id: 1 }), undefined);
    assert.equal(m.get({ client: 1n, svc_id: 1 })?.backend_id, 1);
  });

  it('array: every index exists (zeroed), delete is EINVAL, out of range is E2BIG', () => {
    const m = new FakeMapSet(2).fake('nm_dp_cfg');
    assert.equal(m.get(0)?.proxy_port, 0);
    assert.throws(() => m.delete(0), isErr('NM_ERR_BPF_MAP_OP', 22));
    assert.throws(() => m.set(1, { flags: 0, proxy_mark: 0, host_netns: 0n, proxy4: '0.0.0.0', proxy_port: 0, proxy6: '::' }), isErr('NM_ERR_BPF_MAP_FULL'));
    assert.equal([...m.keys()].length, 1);
  });

  it('per-CPU maps hold one value per CPU', () => {
    const m = createFakeMap(mapSpecs.nm_dp_count, 4) as FakeMap<number, bigint[]>;
    m.set(1, [1n, 2n, 3n, 4n]);
    assert.deepEqual(m.get(1), [1n, 2n, 3n, 4n]);
    assert.throws(() => m.set(1, [1n]), /needs 4 elements/);
  });

  it('batch update stops at the first failure and reports how many went in', () => {
    const spec: MapSpec<number, { flags: number; ready: number; terminating: number; aff_timeout: number }> = { ...mapSpecs.nm_lb_svc, maxEntries: 3 };
    const m = new FakeMap(spec, spec.value);
    const v = { flags: 0, ready: 0, terminating: 0, aff_timeout: 0 };
    assert.throws(
      () => m.setMany([1, 2, 3, 4, 5].map((id) => [id, v] as const)),
      (e: unknown) => e instanceof BpfMapError && e.processed === 3 && e.code === 'NM_ERR_BPF_MAP_FULL',
    );
    assert.equal(m.size, 3);
    assert.equal(m.deleteMany([1, 2, 42]), 2);
  });

  it('keys are compared by their encoded bytes (padding included)', () => {
    const m = new FakeMapSet(2).fake('nm_lb4_fe');
    m.set({ addr: '10.96.0.1', port: 443, proto: 6 }, { svc_id: 1, kind: 1, flags: 0 });
    assert.equal(m.get({ addr: '10.96.0.1', port: 443, proto: 6 })?.svc_id, 1);
    assert.equal(m.get({ addr: '10.96.0.1', port: 443, proto: 17 }), undefined);
  });

  it('fault injection and call counts', () => {
    const set = new FakeMapSet(2);
    const fe = set.fake('nm_lb4_fe');
    fe.injectFault('setMany', 7);
    assert.throws(() => fe.setMany([[{ addr: '10.96.0.1', port: 1, proto: 6 }, { svc_id: 1, kind: 1, flags: 0 }]]), isErr('NM_ERR_BPF_MAP_FULL'));
    fe.setMany([[{ addr: '10.96.0.1', port: 1, proto: 6 }, { svc_id: 1, kind: 1, flags: 0 }]]);
    assert.equal(fe.stats.setMany, 2);
    assert.equal(fe.sortedEntries().length, 1);
  });
});
