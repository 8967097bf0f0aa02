import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildPodForReplicaSet, computeReplicaSetStatus, nextAvailabilityCheckMs, planReplicaSet, rankPodsForDeletion } from './plan-replica-set.ts';
import { testPod, testReplicaSet } from './testing.ts';

const rs = testReplicaSet('web-abc', { replicas: 3, labels: { app: 'web' } });
const own = { kind: 'ReplicaSet', name: 'web-abc', uid: 'rs-web-abc' };
const names = (pods: { metadata?: { name?: string } }[]): string[] => pods.map((p) => p.metadata?.name ?? '');

describe('planReplicaSet', () => {
  it('creates the missing pods', () => {
    const plan = planReplicaSet(rs, [testPod('a', { labels: { app: 'web' }, owner: own })]);
    assert.equal(plan.create, 2);
    assert.deepEqual(plan.delete, []);
  });

  it('does not count terminating or finished pods', () => {
    const pods = [
      testPod('a', { labels: { app: 'web' }, owner: own, ready: true }),
      testPod('b', { labels: { app: 'web' }, owner: own, terminating: true }),
      testPod('c', { labels: { app: 'web' }, owner: own, phase: 'Failed' }),
    ];
    const plan = planReplicaSet(rs, pods);
    assert.equal(plan.create, 2);
    assert.deepEqual(names(plan.active), ['a']);
  });

  it('ignores pods of other owners and namespaces, adopts matching orphans, releases mismatches', () => {
    const pods = [
      testPod('other', { labels: { app: 'web' }, owner: { kind: 'ReplicaSet', name: 'x', uid: 'rs-x' } }),
      testPod('elsewhere', { ns: 'kube-system', labels: { app: 'web' } }),
      testPod('orphan', { labels: { app: 'web' } }),
      testPod('relabelled', { labels: { app: 'debug' }, owner: own }),
    ];
    const plan = planReplicaSet(rs, pods);
    assert.deepEqual(names(plan.adopt), ['orphan']);
    assert.deepEqual(names(plan.release), ['relabelled']);
    assert.equal(plan.create, 2);
  });

  it('scales down unscheduled, pending, not-ready, then newest pods first', () => {
    const labels = { app: 'web' };
    const pods = [
      testPod('old-ready', { labels, owner: own, node: 'n1', ready: true, readySinceMs: 1000, createdMs: 100 }),
      testPod('new-ready', { labels, owner: own, node: 'n2', ready: true, readySinceMs: 1000, createdMs: 900 }),
      testPod('not-ready', { labels, owner: own, node: 'n2', ready: false, phase: 'Running' }),
      testPod('pending', { labels, owner: own, node: 'n1' }),
      testPod('unscheduled', { labels, owner: own }),
    ];
    const one = planReplicaSet(testReplicaSet('web-abc', { replicas: 1 }), pods);
    assert.deepEqual(names(one.delete), ['unscheduled', 'pending', 'not-ready', 'new-ready']);
    assert.equal(one.create, 0);
  });

  it('prefers pods ready for a shorter time, then with more restarts', () => {
    const labels = { app: 'web' };
    const ranked = rankPodsForDeletion([
      testPod('long', { labels, owner: own, node: 'n1', ready: true, readySinceMs: 1000 }),
      testPod('short', { labels, owner: own, node: 'n2', ready: true, readySinceMs: 5000 }),
      testPod('flappy', { labels, owner: own, node: 'n3', ready: true, readySinceMs: 1000, restarts: 7 }),
    ]);
    assert.deepEqual(names(ranked), ['short', 'flappy', 'long']);
  });

  it('deletes everything of a zero-replica set', () => {
    const pods = [testPod('a', { labels: { app: 'web' }, owner: own, node: 'n1', ready: true })];
    assert.deepEqual(names(planReplicaSet(testReplicaSet('web-abc', { replicas: 0 }), pods).delete), ['a']);
  });
});

describe('computeReplicaSetStatus', () => {
  it('counts replicas, ready and available (minReadySeconds)', () => {
    const r = testReplicaSet('web-abc', { replicas: 3 });
    if (r.spec) r.spec.minReadySeconds = 10;
    const active = [
      testPod('a', { labels: { app: 'web' }, owner: own, ready: true, readySinceMs: 0 }),
      testPod('b', { labels: { app: 'web' }, owner: own, ready: true, readySinceMs: 95_000 }),
      testPod('c', { labels: {}, owner: own }),
    ];
    assert.deepEqual(computeReplicaSetStatus(r, active, 100_000), { replicas: 3, fullyLabeledReplicas: 2, readyReplicas: 2, availableReplicas: 1, observedGeneration: 1 });
    assert.equal(nextAvailabilityCheckMs(r, active, 100_000), 5_000);
  });
});

describe('buildPodForReplicaSet', () => {
  it('copies the template and points back at the ReplicaSet', () => {
    const pod = buildPodForReplicaSet(rs);
    assert.equal(pod.metadata?.generateName, 'web-abc-');
    assert.deepEqual(pod.metadata?.labels, { app: 'web' });
    assert.deepEqual(pod.metadata?.ownerReferences, [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-abc', uid: 'rs-web-abc', controller: true, blockOwnerDeletion: true }]);
    assert.equal(pod.spec?.containers[0]?.image, 'nodemesh/echo');
  });
});
