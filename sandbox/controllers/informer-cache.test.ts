import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { startApiServer } from '../apiserver/server.ts';
import { InformerCache } from './informer-cache.ts';
import { makeKubeClients } from './kube-api.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not true after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('InformerCache', () => {
  it('syncs, indexes, and survives an API server restart (relisting what changed meanwhile)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nm-informer-'));
    const port = await freePort();
    const opts = { port, tls: true, stateDir: join(dir, 'state'), crdDirs: [] };
    let server = await startApiServer(opts);
    const kubeconfig = join(dir, 'kubeconfig');
    await server.writeKubeconfig(kubeconfig);
    const clients = makeKubeClients(kubeconfig);
    const logs: string[] = [];
    const cache = new InformerCache<V1ConfigMap>({ kc: clients.kc, path: '/api/v1/configmaps', list: () => clients.core.listConfigMapForAllNamespaces(), log: (l) => logs.push(l) });
    cache.addIndex('colour', (cm) => (cm.data?.['colour'] ? [cm.data['colour']] : []));
    const events: string[] = [];
    cache.on((event, cm) => events.push(`${event} ${cm.metadata?.name}`));
    try {
      await clients.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'before' }, data: { colour: 'red' } } });
      cache.start();
      await cache.synced;
      assert.equal(cache.hasSynced(), true);
      assert.ok(cache.get('before', 'default'));
      assert.deepEqual(cache.byIndex('colour', 'red').map((c) => c.metadata?.name), ['before']);

      await clients.core.patchNamespacedConfigMap({ name: 'before', namespace: 'default', body: [{ op: 'replace', path: '/data/colour', value: 'blue' }] });
      await until('the index follows an update', () => cache.byIndex('colour', 'blue').length === 1);
      assert.equal(cache.indexSize('colour', 'red'), 0);

      // A new server on the same port and state directory starts with an empty store: the informer's
      // resourceVersion means nothing there, so it must relist and report what vanished.
      await server.close();
      server = await startApiServer(opts);
      await clients.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'after' }, data: { colour: 'green' } } }).catch(async () => {
        // The first request may race the restart; once more is enough.
        await new Promise((r) => setTimeout(r, 200));
        await clients.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'after' }, data: { colour: 'green' } } });
      });
      await until('the cache shows the new server state', () => cache.get('after', 'default') !== undefined && cache.get('before', 'default') === undefined, 20_000);
      assert.ok(events.includes('delete before'), `events: ${events.join(', ')}`);
      assert.deepEqual(cache.byIndex('colour', 'blue'), []);
      assert.ok(logs.some((l) => l.includes('retrying')), 'the outage was reported');
    } finally {
      await cache.stop();
      clients.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
