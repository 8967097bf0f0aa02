/** Reconciler on fake maps: ordering a concurrent lookup can rely on, batching, no pruning before sync, adoption, failures. */
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { describe, it } from 'node:test';
import { FakeMapSet, planServiceEntries } from '../bpf/index.ts';
import { dumpMaps } from './dump-maps.ts';
import { type ClusterState, planDatapath } from './plan-datapath.ts';
import { isNoop, MapReconciler } from './reconcile-maps.ts';
import { ServiceIds } from './service-ids.ts';
import { CheckedMapSet } from './testing/checked-maps.ts';
import { makeService, makeSlice } from './testing/scenario.ts';

function state(services: ClusterState['services'], slices: ClusterState['endpointSlices']): ClusterState {
  return { nodeName: 'node-1', services, endpointSlices: slices, nodes: [], localPods: [] };
}

/** Plans and reconciles a state onto maps, the way the agent's full sync does. */
function apply(rec: MapReconciler, s: ClusterState, ids: ServiceIds, prune = true): { ids: ServiceIds; result: ReturnType<MapReconciler['reconcile']> } {
  const plan = planDatapath(s, ids);
  rec.replaceAll(plan.services.map((p) => planServiceEntries(p.spec)));
  return { ids: plan.ids, result: rec.reconcile({ prune }) };
}

function counts(translations: bigint): { translations: bigint; no_backend: bigint; aff_hits: bigint; proxied: bigint } {
  return { translations, no_backend: 0n, aff_hits: 0n, proxied: 0n };
}

describe('MapReconciler', () => {
  it('(the invariant checker itself catches a frontend written before its service)', () => {
    const maps = new CheckedMapSet();
    maps.map('nm_lb4_fe').set({ addr: '10.96.0.1', port: 80, proto: 6 }, { svc_id: 1, kind: 1, flags: 0 });
    assert.match(maps.violations.join('\n'), /missing service 1/);
  });

  it('keeps every intermediate state consistent through creates, scaling, endpoint churn and deletes', () => {
    const maps = new CheckedMapSet();
    const rec = new MapReconciler(maps);
    let ids = new ServiceIds();
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const b = makeService('default', 'b', '10.96.0.2', 80);
    const steps: ClusterState[] = [
      state([a, b], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2', '10.244.1.3', '10.244.1.4'])]),
      // scale a down to one, b gets endpoints
      state([a, b], [makeSlice('default', 'a', 8080, ['10.244.1.3']), makeSlice('default', 'b', 8080, ['10.244.2.1', '10.244.2.2'])]),
      // a's last ready endpoint terminates while a new one is not ready yet
      state([a, b], [makeSlice('default', 'a', 8080, [{ ip: '10.244.1.3', ready: false, serving: true, terminating: true }, { ip: '10.244.1.9', ready: false }]), makeSlice('default', 'b', 8080, ['10.244.2.1', '10.244.2.2'])]),
      // scale back up, replace all of a's endpoints
      state([a, b], [makeSlice('default', 'a', 8080, ['10.244.1.9', '10.244.1.10', '10.244.1.11']), makeSlice('default', 'b', 8080, ['10.244.2.2'])]),
      // a deleted, c created with a's old ClusterIP (the frontend changes hands)
      state([b, makeService('default', 'c', '10.96.0.1', 80)], [makeSlice('default', 'b', 8080, ['10.244.2.2']), makeSlice('default', 'c', 8080, ['10.244.3.1'])]),
      state([], []),
    ];
    steps.forEach((s, i) => {
      ids = apply(rec, s, ids).ids;
      // The datapath counts connects to the services of the first step.
      if (i === 0) for (const [id] of maps.inner.map('nm_lb_svc').entries()) maps.inner.map('nm_lb_stats').set(id, [counts(5n), counts(2n)]);
    });
    assert.deepEqual(maps.violations, []);
    assert.equal(dumpMaps(maps.inner), '');
    const counted = [...maps.inner.map('nm_lb_stats').entries()].filter(([, v]) => v.some((c) => c.translations !== 0n));
    assert.deepEqual(counted, [], 'counters of removed services are zeroed');
  });

  it('writes each map with at most one batch per pass', () => {
    const maps = new FakeMapSet(2);
    const rec = new MapReconciler(maps);
    const services = Array.from({ length: 50 }, (_, i) => makeService('default', `s${i}`, `10.96.1.${i + 1}`, 80));
    const slices = services.map((s, i) => makeSlice('default', s.metadata?.name ?? '', 8080, [`10.244.1.${i + 1}`, `10.244.2.${i + 1}`]));
    apply(rec, state(services, slices), new ServiceIds());
    for (const name of ['nm_lb4_fe', 'nm_lb_svc', 'nm_lb_slot', 'nm_lb_be'] as const) {
      const st = maps.fake(name).stats;
      assert.equal(st.set, 0, `${name}: no single-entry writes`);
      assert.equal(st.setMany, 1, `${name}: one batch`);
    }
    assert.equal(maps.fake('nm_lb_stats').stats.set + maps.fake('nm_lb_stats').stats.setMany, 0, 'nm_lb_stats: nothing written for new services (preallocated array)');
  });

  it('zeroes a released service id\'s counters in one batch, and leaves those of services that stay', () => {
    const maps = new FakeMapSet(2);
    const rec = new MapReconciler(maps);
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const b = makeService('default', 'b', '10.96.0.2', 80);
    const ids = apply(rec, state([a, b], [makeSlice('default', 'a', 8080, ['10.244.1.1']), makeSlice('default', 'b', 8080, ['10.244.1.2'])]), new ServiceIds()).ids;
    const idA = ids.peekService('default/a:80/TCP/v4') as number;
    const idB = ids.peekService('default/b:80/TCP/v4') as number;
    for (const id of [idA, idB]) maps.map('nm_lb_stats').set(id, [counts(4n), counts(1n)]);
    // Held back while pruning is not allowed: still counted.
    apply(rec, state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1'])]), ids, false);
    assert.equal(maps.map('nm_lb_stats').get(idB)?.[0]?.translations, 4n);
    const before = maps.fake('nm_lb_stats').stats.setMany;
    apply(rec, state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1'])]), ids);
    assert.equal(maps.fake('nm_lb_stats').stats.setMany, before + 1);
    assert.deepEqual(maps.map('nm_lb_stats').get(idB), [counts(0n), counts(0n)]);
    assert.deepEqual(maps.map('nm_lb_stats').get(idA), [counts(4n), counts(1n)]);
  });

  it('prunes nothing while pruning is not allowed, and everything stale once it is', () => {
    const maps = new FakeMapSet(2);
    const rec = new MapReconciler(maps);
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const b = makeService('default', 'b', '10.96.0.2', 80);
    let ids = apply(rec, state([a, b], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2']), makeSlice('default', 'b', 8080, ['10.244.1.5'])]), new ServiceIds()).ids;
    const before = dumpMaps(maps);
    // b vanished and a lost an endpoint: without pruning, nothing goes.
    const r = apply(rec, state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1'])]), ids, false);
    ids = r.ids;
    assert.equal(r.result.servicesRemoved + r.result.frontendsDeleted + r.result.slotsDeleted + r.result.backendsDeleted, 0);
    assert.ok(r.result.deferredDeletes > 0);
    assert.ok(rec.pending, 'the held-back deletes stay pending');
    assert.match(dumpMaps(maps), /10\.96\.0\.2:80/);
    assert.notEqual(dumpMaps(maps), '');
    void before;
    const r2 = rec.reconcile({ prune: true });
    assert.equal(r2.servicesRemoved, 1);
    assert.doesNotMatch(dumpMaps(maps), /10\.96\.0\.2:80|10\.244\.1\.2/);
    assert.ok(!rec.pending);
  });

  it('adopts maps written by an earlier agent: correct entries untouched, changes caught up, stale ones removed', () => {
    const maps = new FakeMapSet(2);
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const b = makeService('default', 'b', '10.96.0.2', 80);
    const c = makeService('default', 'c', '10.96.0.3', 80);
    apply(new MapReconciler(maps), state([a, b, c], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2']), makeSlice('default', 'b', 8080, ['10.244.1.5']), makeSlice('default', 'c', 8080, ['10.244.1.7'])]), new ServiceIds());
    const idOf = (ip: string): number | undefined => maps.map('nm_lb4_fe').get({ addr: ip, port: 80, proto: 6 })?.svc_id;
    const [idA, idC] = [idOf('10.96.0.1'), idOf('10.96.0.3')];
    // The agent dies; meanwhile b is deleted, c gains an endpoint and d is created.
    const d = makeService('default', 'd', '10.96.0.4', 80);
    const down = state([a, c, d], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2']), makeSlice('default', 'c', 8080, ['10.244.1.7', '10.244.1.8']), makeSlice('default', 'd', 8080, ['10.244.1.9'])]);
    for (const m of ['nm_lb4_fe', 'nm_lb_svc', 'nm_lb_slot', 'nm_lb_be'] as const) maps.fake(m).stats.setMany = 0;
    const written: unknown[] = [];
    const be = maps.fake('nm_lb_be');
    const setMany = be.setMany.bind(be);
    be.setMany = (entries, mode) => {
      written.push(...entries.map(([id]) => id));
      return setMany(entries, mode);
    };
    const rec = new MapReconciler(maps);
    const { result } = apply(rec, down, ServiceIds.fromMaps(maps));
    assert.equal(idOf('10.96.0.1'), idA, 'a keeps its id');
    assert.equal(idOf('10.96.0.3'), idC, 'c keeps its id');
    assert.equal(idOf('10.96.0.2'), undefined, 'b is gone');
    assert.ok(idOf('10.96.0.4'), 'd is there');
    assert.equal(result.servicesRemoved, 1);
    assert.equal(result.servicesWritten, 2, 'only c (count changed) and d are written');
    assert.equal(result.backendsWritten, 2, "c's new endpoint and d's");
    assert.equal(written.length, 2);
    assert.ok(isNoop(apply(new MapReconciler(maps), down, ServiceIds.fromMaps(maps)).result), 'a second adoption changes nothing');
  });

  it('keeps counters of services that stay, across passes and adoption', () => {
    const maps = new FakeMapSet(2);
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const s1 = state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1'])]);
    const ids = apply(new MapReconciler(maps), s1, new ServiceIds()).ids;
    const id = ids.peekService('default/a:80/TCP/v4') as number;
    maps.map('nm_lb_stats').set(id, [{ translations: 7n, no_backend: 0n, aff_hits: 0n, proxied: 0n }, { translations: 3n, no_backend: 1n, aff_hits: 0n, proxied: 0n }]);
    apply(new MapReconciler(maps), state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2'])]), ServiceIds.fromMaps(maps));
    assert.equal(maps.map('nm_lb_stats').get(id)?.[0]?.translations, 7n);
  });

  it('re-reads the maps after a failed batch and completes on the next pass', () => {
    const maps = new FakeMapSet(2);
    const rec = new MapReconciler(maps);
    const a = makeService('default', 'a', '10.96.0.1', 80);
    maps.fake('nm_lb_slot').injectFault('setMany', constants.errno.E2BIG);
    const plan = planDatapath(state([a], [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2'])]));
    rec.replaceAll(plan.services.map((p) => planServiceEntries(p.spec)));
    assert.throws(() => rec.reconcile({ prune: true }), /nm_lb_slot/);
    assert.ok(rec.pending);
    const r = rec.reconcile({ prune: true });
    assert.equal(r.slotsWritten, 2);
    assert.match(dumpMaps(maps), /SLOT=2/);
  });

  it('gives a contested frontend to the lower service id and hands it over when that one goes', () => {
    const maps = new CheckedMapSet();
    const rec = new MapReconciler(maps);
    const x = makeService('default', 'x', '10.96.0.1', 80, { externalIPs: ['192.0.2.1'] });
    const y = makeService('default', 'y', '10.96.0.2', 80, { externalIPs: ['192.0.2.1'] });
    const slices = [makeSlice('default', 'x', 8080, ['10.244.1.1']), makeSlice('default', 'y', 8080, ['10.244.1.2'])];
    let plan = planDatapath(state([x, y], slices));
    rec.replaceAll(plan.services.map((p) => planServiceEntries(p.spec)));
    const r = rec.reconcile({ prune: true });
    assert.equal(r.conflicts.length, 1);
    const idX = plan.ids.peekService('default/x:80/TCP/v4');
    const idY = plan.ids.peekService('default/y:80/TCP/v4');
    assert.equal(maps.inner.map('nm_lb4_fe').get({ addr: '192.0.2.1', port: 80, proto: 6 })?.svc_id, idX);
    plan = planDatapath(state([y], slices), plan.ids);
    rec.replaceAll(plan.services.map((p) => planServiceEntries(p.spec)));
    rec.reconcile({ prune: true });
    assert.equal(maps.inner.map('nm_lb4_fe').get({ addr: '192.0.2.1', port: 80, proto: 6 })?.svc_id, idY);
    assert.deepEqual(maps.violations, []);
  });
});
