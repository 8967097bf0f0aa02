/** The agent's watches against a fake API server: sync, this node's pods only, and recovery from failed lists, dropped watches and 410 Gone. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ClusterWatch, computeWatchBackoffMs, type WatchEvent } from './informers.ts';
import { silentLogger } from './logger.ts';
import { FakeApiServer } from './testing/fake-apiserver.ts';
import { makeService, makeSlice } from './testing/scenario.ts';

async function eventually(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ClusterWatch', () => {
  const api = new FakeApiServer();
  before(() => api.start());
  after(() => api.close());

  it('backs off from 200 ms to 10 s with jitter', () => {
    assert.equal(computeWatchBackoffMs(0, 0.5), 200);
    assert.equal(computeWatchBackoffMs(3, 0.5), 1600);
    assert.equal(computeWatchBackoffMs(20, 0.5), 10_000);
    assert.ok(computeWatchBackoffMs(0, 0) >= 160 && computeWatchBackoffMs(0, 1) <= 240);
  });

  it('syncs once every kind has listed (after retrying failed lists), watches only its pods, and survives dropped watches and 410', async () => {
    api.apply('services', makeService('default', 'a', '10.96.0.1', 80) as never);
    api.apply('endpointslices', makeSlice('default', 'a', 8080, ['10.244.1.1']) as never);
    api.apply('nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1' } });
    api.apply('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'mine', namespace: 'default' }, spec: { nodeName: 'node-1' } });
    api.apply('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'theirs', namespace: 'default' }, spec: { nodeName: 'node-2' } });
    api.failLists('endpointslices', 2);
    const events: string[] = [];
    let synced = 0;
    const rec = (kind: string) => (t: WatchEvent, o: { metadata?: { name?: string } }) => events.push(`${kind} ${t} ${o.metadata?.name}`);
    const w = new ClusterWatch(api.kubeConfig(), 'node-1', { service: rec('svc'), endpointSlice: rec('eps'), node: rec('node'), pod: rec('pod'), synced: () => synced++ }, silentLogger);
    w.start();
    try {
      await eventually('sync', () => synced === 1);
      assert.deepEqual(w.unsynced(), []);
      assert.ok(events.includes('eps add a-1'), 'the slice arrived after two failed lists');
      assert.ok(events.includes('pod add mine'));
      assert.ok(!events.some((e) => e.includes('theirs')), 'pods of other nodes are not watched');
      await eventually('watches open', () => api.openWatches('services') === 1);

      // The connection drops; a change made meanwhile arrives after the restart (resumed from its resourceVersion).
      api.dropWatches();
      api.apply('services', makeService('default', 'b', '10.96.0.2', 80) as never);
      await eventually('resumed watch delivers b', () => events.includes('svc add b'));
      assert.ok(api.requests.some((r) => /^WATCH services rv=1\d\d$/.test(r)));

      // History compacted while disconnected: the resume gets 410, the informer relists, and the
      // object deleted meanwhile is reported deleted.
      await eventually('watches open again', () => api.openWatches('services') === 1);
      api.dropWatches();
      api.remove('services', 'default', 'a');
      api.compact();
      const lists = api.requests.filter((r) => r === 'LIST services').length;
      await eventually('relist after 410', () => api.requests.filter((r) => r === 'LIST services').length > lists);
      await eventually('delete seen', () => events.includes('svc delete a'));
      assert.equal(synced, 1, 'sync is announced once');
      assert.ok(w.kinds.find((k) => k.name === 'services')?.synced);
    } finally {
      await w.stop();
    }
  });
});
