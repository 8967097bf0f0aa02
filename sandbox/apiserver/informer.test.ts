/** The real @kubernetes/client-node informer (over TLS with the server's kubeconfig): order of events, relist after 410. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ObjectCache, V1ConfigMap, V1ConfigMapList } from '@kubernetes/client-node';
import { CoreV1Api, KubeConfig, makeInformer } from '@kubernetes/client-node';
import type { ApiServer } from './server.ts';
import { startApiServer } from './server.ts';

async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('client-node informer against the API server', () => {
  let server: ApiServer;
  let api: CoreV1Api;
  let kc: KubeConfig;
  before(async () => {
    server = await startApiServer({ watchHistoryWindow: 20 });
    kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    api = kc.makeApiClient(CoreV1Api);
  });
  after(async () => {
    await server.close();
  });

  it('sees add, update and delete in order', async () => {
    const informer = makeInformer(kc, '/api/v1/namespaces/default/configmaps', () => api.listNamespacedConfigMap({ namespace: 'default' }));
    const seen: string[] = [];
    informer.on('add', (o) => seen.push(`add ${o.metadata?.name} ${JSON.stringify(o.data ?? {})}`));
    informer.on('update', (o) => seen.push(`update ${o.metadata?.name} ${JSON.stringify(o.data ?? {})}`));
    informer.on('delete', (o) => seen.push(`delete ${o.metadata?.name}`));
    await informer.start();
    try {
      await api.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'inf-a' }, data: { v: '1' } } });
      await api.patchNamespacedConfigMap({ namespace: 'default', name: 'inf-a', body: [{ op: 'replace', path: '/data/v', value: '2' }] });
      await api.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'inf-b' } } });
      await api.deleteNamespacedConfigMap({ namespace: 'default', name: 'inf-a' });
      await until(() => seen.length >= 4, 'four informer events');
      assert.deepEqual(seen, ['add inf-a {"v":"1"}', 'update inf-a {"v":"2"}', 'add inf-b {}', 'delete inf-a']);
      // makeInformer returns a ListWatch, which is also the informer's cache.
      assert.deepEqual(
        (informer as unknown as ObjectCache<V1ConfigMap>).list().map((o) => o.metadata?.name),
        ['inf-b'],
      );
    } finally {
      await informer.stop();
    }
  });

  it('relists after a 410 Gone and converges on the current state', async () => {
    // The first list is served stale (taken before the history window moved on), so the informer's watch
    // asks for a compacted revision, gets an ERROR 410 event, and must relist.
    const stale = await api.listNamespacedConfigMap({ namespace: 'kube-public' });
    await api.createNamespacedConfigMap({ namespace: 'kube-public', body: { metadata: { name: 'late' } } });
    for (let i = 0; i < 30; i++) await api.createNamespacedConfigMap({ namespace: 'kube-system', body: { metadata: { name: `churn-${i}` } } });
    let lists = 0;
    const listFn = async (): Promise<V1ConfigMapList> => {
      lists++;
      return lists === 1 ? stale : api.listNamespacedConfigMap({ namespace: 'kube-public' });
    };
    const informer = makeInformer<V1ConfigMap>(kc, '/api/v1/namespaces/kube-public/configmaps', listFn);
    const added: string[] = [];
    informer.on('add', (o) => added.push(o.metadata?.name ?? ''));
    const errors: unknown[] = [];
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    try {
      await until(() => lists >= 2 && added.includes('late'), 'a relist that shows the object created after the stale list');
      await api.createNamespacedConfigMap({ namespace: 'kube-public', body: { metadata: { name: 'after-relist' } } });
      await until(() => added.includes('after-relist'), 'the watch to resume after the relist');
      assert.deepEqual(errors, []);
    } finally {
      await informer.stop();
    }
  });
});
