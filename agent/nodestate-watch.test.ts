// computeNodeStateSet: a node's shards become one state only when the set is complete and consistent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeState, NodeService, NodeWorkload } from '../crds/index.ts';
import { computeNodeStateSet } from './nodestate-watch.ts';

function shard(node: string, index: number, count: number, opts: { workloads?: NodeWorkload[]; services?: NodeService[]; td?: string; hash?: string } = {}): NodeState {
  return {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'NodeState', metadata: { name: `${node}-${index}` },
    spec: { nodeName: node, shard: { index, count }, contentHash: opts.hash ?? `sha256:${node}-${index}-${count}`, trustDomain: opts.td ?? 'cluster.local', workloads: opts.workloads ?? [], services: opts.services ?? [] },
  };
}
const wl = (ns: string, name: string): NodeWorkload => ({ namespace: ns, name, uid: name, serviceAccount: 'sa', spiffeId: `spiffe://cluster.local/ns/${ns}/sa/sa`, podIPs: [], mtls: { mode: 'DISABLED' }, sources: [] });
const sv = (ns: string, name: string): NodeService => ({ namespace: ns, name, clusterIPs: [], mtlsMode: 'DISABLED', ports: [], sources: [] });

test('a complete set merges in order, whatever order the shards came in', () => {
  const set = computeNodeStateSet([
    shard('n1', 1, 2, { workloads: [wl('b', 'p2')], services: [sv('a', 's2')] }),
    shard('n2', 0, 1, { workloads: [wl('z', 'other-node')] }),
    shard('n1', 0, 2, { workloads: [wl('a', 'p1')], services: [sv('a', 's1')] }),
  ], 'n1');
  assert.equal(set.complete, true);
  if (!set.complete) return;
  assert.equal(set.shards, 2);
  assert.deepEqual(set.state.workloads.map((w) => w.name), ['p1', 'p2']);
  assert.deepEqual(set.state.services.map((s) => s.name), ['s1', 's2']);
  assert.equal(set.state.version, 'sha256:n1-0-2,sha256:n1-1-2');
  assert.equal(set.state.trustDomain, 'cluster.local');
});

test('an empty node still has one (empty) shard: a complete, empty state', () => {
  const set = computeNodeStateSet([shard('n1', 0, 1)], 'n1');
  assert.equal(set.complete, true);
});

test('incomplete or inconsistent sets are not applied, with a reason', () => {
  const reason = (objs: NodeState[]): string => { const s = computeNodeStateSet(objs, 'n1'); assert.equal(s.complete, false); return s.complete ? '' : s.reason; };
  assert.match(reason([]), /no NodeState/);
  assert.match(reason([shard('n1', 0, 2)]), /shard\(s\) 1 of 2 missing/);
  // A split in progress: the old single shard and the first new one.
  assert.match(reason([shard('n1', 0, 1), shard('n1', 1, 2)]), /disagree on count/);
  assert.match(reason([shard('n1', 0, 2), shard('n1', 0, 2), shard('n1', 1, 2)]), /two shards with index 0/);
  assert.match(reason([shard('n1', 0, 2), shard('n1', 2, 2)]), /outside/);
  assert.match(reason([shard('n1', 0, 2), shard('n1', 1, 2, { td: 'other' })]), /trust domain/);
});
