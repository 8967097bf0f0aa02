/** The control loop end to end on fake maps and a fake API server: no pruning before sync, incremental passes, drift repair, a log line per pass. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FakeMapSet, planServiceEntries } from '../bpf/index.ts';
import { dumpMaps } from './dump-maps.ts';
import { ClusterWatch } from './informers.ts';
import { createMemoryLogger } from './logger.ts';
import { planDatapath } from './plan-datapath.ts';
import { MapReconciler } from './reconcile-maps.ts';
import { SyncLoop } from './sync-loop.ts';
import { FakeApiServer } from './testing/fake-apiserver.ts';
import { makeService, makeSlice } from './testing/scenario.ts';

async function eventually(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('SyncLoop', () => {
  const api = new FakeApiServer();
  before(() => api.start());
  after(() => api.close());

  it('prunes nothing until every watch has listed, then adopts, catches up and follows changes', async () => {
    const a = makeService('default', 'a', '10.96.0.1', 80);
    const z = makeService('default', 'z', '10.96.0.26', 80);
    // What a previous agent left pinned: a (correct) and z (deleted while no agent ran).
    const maps = new FakeMapSet(2);
    const old = planDatapath({ nodeName: 'node-1', services: [a, z], endpointSlices: [makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2']), makeSlice('default', 'z', 8080, ['10.244.1.9'])], nodes: [], localPods: [] });
    const r0 = new MapReconciler(maps);
    r0.replaceAll(old.services.map((s) => planServiceEntries(s.spec)));
    r0.reconcile({ prune: true });
    const before = dumpMaps(maps);

    api.apply('services', a as never);
    api.apply('endpointslices', makeSlice('default', 'a', 8080, ['10.244.1.1', '10.244.1.2']) as never);
    api.failLists('endpointslices', 3);
    const log = createMemoryLogger();
    const loop = new SyncLoop({ maps, nodeName: 'node-1', log });
    const w = new ClusterWatch(api.kubeConfig(), 'node-1', {
      service: (t, o) => loop.onService(t, o), endpointSlice: (t, o) => loop.onEndpointSlice(t, o), node: (t, o) => loop.onNode(t, o), pod: (t, o) => loop.onPod(t, o), synced: () => loop.markSynced(),
    }, log);
    for (const m of ['nm_lb4_fe', 'nm_lb_svc', 'nm_lb_slot', 'nm_lb_be'] as const) Object.assign(maps.fake(m).stats, { setMany: 0, deleteMany: 0, set: 0, delete: 0 });
    w.start();
    try {
      // Services are listed long before the slices: the maps must not move meanwhile.
      await eventually('services listed', () => w.kinds.find((k) => k.name === 'services')?.synced === true);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(w.unsynced(), ['endpointslices']);
      assert.equal(dumpMaps(maps), before, 'nothing written or pruned before every watch listed');
      await loop.whenReady();
      assert.doesNotMatch(dumpMaps(maps), /10\.96\.0\.26/, 'z pruned after sync');
      assert.equal(maps.fake('nm_lb_be').stats.setMany, 0, "a's entries were right and are not rewritten");
      assert.ok(log.lines.some((l) => /reconciled full=true .*svcRemoved=1/.test(l)), log.lines.join('\n'));

      // Incremental: a new service, then its endpoints; an endpoint of a goes away.
      api.apply('services', makeService('default', 'b', '10.96.0.2', 80) as never);
      api.apply('endpointslices', makeSlice('default', 'b', 8080, ['10.244.2.1']) as never);
      api.apply('endpointslices', makeSlice('default', 'a', 8080, ['10.244.1.2']) as never);
      await eventually('b programmed', () => /10\.244\.2\.1/.test(dumpMaps(maps)) && !/10\.244\.1\.1:/.test(dumpMaps(maps)));
      await loop.idle();
      assert.match(log.lines.filter((l) => l.includes('reconciled full=false')).join('\n'), /applyMs=[\d.]+ lagMs=[\d.]+/);

      // Someone deletes a frontend behind the agent's back: a resync puts it back.
      maps.map('nm_lb4_fe').delete({ addr: '10.96.0.2', port: 80, proto: 6 });
      loop.resync();
      await loop.idle();
      assert.match(dumpMaps(maps), /FE: 10\.96\.0\.2:80/);

      // A deleted service is removed with its backends.
      api.remove('services', 'default', 'b');
      await eventually('b removed', () => !/10\.96\.0\.2:/.test(dumpMaps(maps)));
      await loop.idle();
      assert.doesNotMatch(dumpMaps(maps), /10\.244\.2\.1/);
      assert.equal(loop.status().failures, 0);
    } finally {
      await w.stop();
      await loop.stop();
    }
  });
});
