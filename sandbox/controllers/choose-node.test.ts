import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chooseNode, toleratesTaint } from './choose-node.ts';
import { testNode, testPod } from './testing.ts';

const owner = { kind: 'ReplicaSet', name: 'web-1', uid: 'rs-web' };

describe('chooseNode', () => {
  it('spreads a group first, then by total pods, then by name', () => {
    const nodes = [testNode('n1'), testNode('n2'), testNode('n3')];
    const bound = [
      testPod('a', { node: 'n1', owner }),
      testPod('b', { node: 'n2', owner }),
      testPod('x1', { node: 'n3' }),
      testPod('x2', { node: 'n3' }),
    ];
    // n3 has the most pods overall but none of the group: spreading the group wins.
    assert.deepEqual(chooseNode(testPod('new', { owner }), nodes, bound), { nodeName: 'n3' });
    // An ungrouped pod goes where there are fewest pods; the tie between n1 and n2 goes to the name.
    assert.deepEqual(chooseNode(testPod('solo'), nodes, bound), { nodeName: 'n1' });
  });

  it('groups pods without an owner by their labels', () => {
    const nodes = [testNode('n1'), testNode('n2')];
    const bound = [testPod('a', { node: 'n1', labels: { app: 'db' } }), testPod('b', { node: 'n2' }), testPod('c', { node: 'n2' })];
    assert.deepEqual(chooseNode(testPod('new', { labels: { app: 'db' } }), nodes, bound), { nodeName: 'n2' });
  });

  it('ignores terminal pods and the pod itself when counting', () => {
    const nodes = [testNode('n1'), testNode('n2')];
    const bound = [testPod('done', { node: 'n1', phase: 'Succeeded' }), testPod('b', { node: 'n2' })];
    assert.deepEqual(chooseNode(testPod('new'), nodes, bound), { nodeName: 'n1' });
  });

  it('skips not-ready, cordoned and full nodes', () => {
    const nodes = [testNode('n1', { ready: false }), testNode('n2', { unschedulable: true }), testNode('n3', { maxPods: 1 }), testNode('n4')];
    const bound = [testPod('a', { node: 'n3' }), testPod('b', { node: 'n4' }), testPod('c', { node: 'n4' })];
    assert.deepEqual(chooseNode(testPod('new'), nodes, bound), { nodeName: 'n4' });
  });

  it('honours nodeSelector and required node affinity', () => {
    const nodes = [testNode('n1', { labels: { disk: 'ssd', zone: 'a' } }), testNode('n2', { labels: { disk: 'hdd', zone: 'b' } })];
    const bySelector = testPod('p');
    if (bySelector.spec) bySelector.spec.nodeSelector = { disk: 'hdd' };
    assert.deepEqual(chooseNode(bySelector, nodes, []), { nodeName: 'n2' });
    const byAffinity = testPod('q');
    if (byAffinity.spec) {
      byAffinity.spec.affinity = {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [{ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }, { matchFields: [{ key: 'metadata.name', operator: 'In', values: ['nx'] }] }],
          },
        },
      };
    }
    assert.deepEqual(chooseNode(byAffinity, nodes, []), { nodeName: 'n1' });
  });

  it('keeps pods off tainted nodes unless they tolerate the taint', () => {
    const nodes = [testNode('n1', { taints: [{ key: 'dedicated', value: 'gpu', effect: 'NoSchedule' }] }), testNode('n2', { taints: [{ key: 'soft', effect: 'PreferNoSchedule' }] })];
    const bound = [testPod('a', { node: 'n2' })];
    assert.deepEqual(chooseNode(testPod('plain'), nodes, bound), { nodeName: 'n2' }, 'PreferNoSchedule does not filter');
    const tolerant = testPod('gpu');
    if (tolerant.spec) tolerant.spec.tolerations = [{ key: 'dedicated', operator: 'Equal', value: 'gpu', effect: 'NoSchedule' }];
    assert.deepEqual(chooseNode(tolerant, nodes, bound), { nodeName: 'n1' });
    assert.equal(toleratesTaint({ operator: 'Exists' }, { key: 'any', effect: 'NoExecute' }), true);
    assert.equal(toleratesTaint({ key: 'dedicated', value: 'cpu' }, { key: 'dedicated', value: 'gpu', effect: 'NoSchedule' }), false);
  });

  it('explains why nothing fits, in the scheduler’s words', () => {
    const nodes = [testNode('n1', { ready: false }), testNode('n2', { labels: { disk: 'ssd' }, taints: [{ key: 'k', value: 'v', effect: 'NoSchedule' }] }), testNode('n3', { labels: { disk: 'hdd' } })];
    const pod = testPod('p');
    if (pod.spec) pod.spec.nodeSelector = { disk: 'ssd' };
    assert.deepEqual(chooseNode(pod, nodes, []), {
      unschedulable: "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {k: v}, 1 node(s) were not ready.",
    });
    assert.deepEqual(chooseNode(pod, [], []), { unschedulable: '0/0 nodes are available:' });
  });
});
