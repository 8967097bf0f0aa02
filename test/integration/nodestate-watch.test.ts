// NodeStateWatch against the embedded API server with the real NodeState CRD: applies a complete set once, keeps
// the previous state through a resharding, ignores other nodes' shards.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { startApiServer, type ApiServer } from '../../sandbox/apiserver/server.ts';
import { CRD_DIRECTORY, type NodeState } from '../../crds/index.ts';
import { NodeStateWatch } from '../../agent/nodestate-watch.ts';
import type { MergedNodeState } from '../../agent/proxy/plan-proxy.ts';
import { silentLogger } from '../../agent/logger.ts';

async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function shard(node: string, index: number, count: number, hash: string, workloads: string[] = []): NodeState {
  return {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'NodeState',
    metadata: { name: `${node}-${index}`, labels: { 'nodemesh.io/node': node, 'app.kubernetes.io/managed-by': 'nodemesh-operator' } },
    spec: {
      nodeName: node, shard: { index, count }, contentHash: `sha256:${hash.padEnd(64, '0')}`, trustDomain: 'cluster.local',
      workloads: workloads.map((name) => ({ namespace: 'shop', name, uid: name, serviceAccount: 'web', spiffeId: 'spiffe://cluster.local/ns/shop/sa/web', podIPs: ['10.244.1.2'], mtls: { mode: 'STRICT' }, sources: [] })),
      services: [],
    },
  };
}

describe('NodeStateWatch against the API server', () => {
  let server: ApiServer;
  let api: CustomObjectsApi;
  let kc: KubeConfig;
  const applied: MergedNodeState[] = [];
  let watch: NodeStateWatch;
  const g = { group: 'nodemesh.io', version: 'v1alpha1', plural: 'nodestates' };

  before(async () => {
    server = await startApiServer({ crdDirs: [CRD_DIRECTORY] });
    kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    api = kc.makeApiClient(CustomObjectsApi);
    watch = new NodeStateWatch({ kc, nodeName: 'node-1', log: silentLogger, onState: (s) => applied.push(s) });
  });
  after(async () => { await watch.stop(); await server.close(); });

  it('applies the set once complete, never a partial one', async () => {
    await api.createClusterCustomObject({ ...g, body: shard('node-1', 0, 2, 'a0', ['p1']) });
    await api.createClusterCustomObject({ ...g, body: shard('node-2', 0, 1, 'b0', ['other']) });
    watch.start();
    await until(() => watch.status().synced, 'the first list');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(applied.length, 0);
    assert.match(watch.status().waiting ?? '', /1 of 2 missing/);
    await api.createClusterCustomObject({ ...g, body: shard('node-1', 1, 2, 'a1', ['p2']) });
    await until(() => applied.length === 1, 'the complete set');
    assert.deepEqual(applied[0]!.workloads.map((w) => w.name), ['p1', 'p2']);
  });

  it('keeps the previous state while shards disagree, applies the new set when consistent', async () => {
    // The operator shrinks to one shard: writes <node>-0 with count 1, then deletes <node>-1.
    await api.replaceClusterCustomObject({ ...g, name: 'node-1-0', body: { ...shard('node-1', 0, 1, 'c0', ['p1', 'p2', 'p3']), metadata: { ...shard('node-1', 0, 1, 'c0').metadata, resourceVersion: undefined } } });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(applied.length, 1);
    assert.match(watch.status().waiting ?? '', /disagree on count/);
    await api.deleteClusterCustomObject({ ...g, name: 'node-1-1' });
    await until(() => applied.length === 2, 'the resharded set');
    assert.deepEqual(applied[1]!.workloads.map((w) => w.name), ['p1', 'p2', 'p3']);
  });
});
