/** computeChecks and the agent-status seam on hand-made facts (no API server). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Node } from '@kubernetes/client-node';
import { computeChecks, operatorVersionOfDeployment, parseKernelRelease, type CheckFacts } from './check.ts';
import { groupNodeStates } from './mesh-objects.ts';
import { formatAge, formatTable } from './output.ts';

const NOW = Date.parse('2026-11-20T10:00:00Z');
const node = (name: string, annotations?: Record<string, string>): V1Node => ({ metadata: { name, ...(annotations ? { annotations } : {}) } });
const shard = (nodeName: string, index: number, count: number): { metadata: { name: string }; spec: Record<string, unknown> } => ({ metadata: { name: `${nodeName}-${index}` }, spec: { nodeName, shard: { index, count }, workloads: [], services: [] } });

function facts(over: Partial<CheckFacts> = {}): CheckFacts {
  return {
    now: NOW,
    serverVersion: 'v1.32.0',
    requiredCrds: [{ name: 'nodestates.nodemesh.io', versions: ['v1alpha1'] }],
    crds: [{ metadata: { name: 'nodestates.nodemesh.io' }, spec: { group: 'nodemesh.io', names: { kind: 'NodeState', plural: 'nodestates' }, scope: 'Cluster', versions: [{ name: 'v1alpha1', served: true, storage: true }] } }],
    lease: { spec: { holderIdentity: 'op-1', renewTime: new Date(NOW - 5000), leaseDurationSeconds: 15 } },
    nodes: [node('a'), node('b')],
    nodeStates: [shard('a', 0, 1), shard('b', 0, 2), shard('b', 1, 2)],
    caSecret: 'missing',
    agents: [],
    ...over,
  };
}

const byName = (r: ReturnType<typeof computeChecks>, prefix: string): { status: string; detail?: string } | undefined => r.find((c) => c.name.startsWith(prefix));

describe('computeChecks', () => {
  it('passes CRDs, a fresh Lease and complete NodeState sets', () => {
    const r = computeChecks(facts());
    assert.equal(byName(r, 'nodestates.nodemesh.io')?.status, 'pass');
    assert.equal(byName(r, 'operator Lease is held')?.status, 'pass');
    assert.equal(byName(r, 'every Node has a complete')?.status, 'pass');
    assert.equal(byName(r, 'mesh CA Secret exists')?.status, 'fail');
  });

  it('fails a stale Lease, a wrong served version, missing and partial NodeStates', () => {
    const r = computeChecks(facts({
      lease: { spec: { holderIdentity: 'op-1', renewTime: new Date(NOW - 60_000), leaseDurationSeconds: 15 } },
      crds: [{ metadata: { name: 'nodestates.nodemesh.io' }, spec: { group: 'nodemesh.io', names: { kind: 'NodeState', plural: 'nodestates' }, scope: 'Cluster', versions: [{ name: 'v1alpha2', served: true, storage: true }] } }],
      nodes: [node('a'), node('b'), node('c')],
      nodeStates: [shard('a', 0, 1), shard('b', 0, 2), shard('gone', 0, 1)],
    }));
    assert.match(byName(r, 'operator Lease is fresh')?.detail ?? '', /last renewed 60s ago/);
    assert.match(byName(r, 'nodestates.nodemesh.io serves')?.detail ?? '', /missing: v1alpha1/);
    assert.match(byName(r, 'every Node has a NodeState')?.detail ?? '', /no NodeState for: c/);
    assert.match(byName(r, 'NodeState sets are complete')?.detail ?? '', /b \(1\/2\)/);
    assert.equal(byName(r, 'no NodeState for a missing Node')?.status, 'warn');
  });

  it('stops after an unreachable API server', () => {
    const r = computeChecks(facts({ apiError: 'connection refused' }));
    assert.deepEqual(r.map((c) => c.status), ['fail']);
  });

  it('reports agents: not ready fails, no endpoint skips, kernel features fail with a hint', () => {
    const r = computeChecks(facts({
      agents: [
        { node: 'a', url: 'http://x/statusz', status: { sync: { ready: false, lastError: 'map nm_lb_be full' }, kernel: { release: '6.1', bpffs: false } } },
        { node: 'b', error: 'no status endpoint known' },
      ],
    }));
    assert.equal(byName(r, 'agent on a is ready')?.detail, 'map nm_lb_be full');
    assert.equal(byName(r, 'agent on b answers')?.status, 'skip');
    assert.equal(byName(r, 'a: bpffs available')?.status, 'fail');
  });
});

describe('helpers', () => {
  it('groups shards and sees incomplete sets', () => {
    const g = groupNodeStates([shard('b', 1, 2), shard('a', 0, 1)]);
    assert.deepEqual([...g.keys()], ['a', 'b']);
    assert.equal(g.get('b')?.complete, false);
  });

  it('formats ages and tables like kubectl', () => {
    assert.deepEqual([5_000, 150_000, 3_600_000 * 5, 86_400_000 * 3, -1].map(formatAge), ['5s', '2m30s', '5h', '3d', '0s']);
    assert.equal(formatTable(['a', 'bb'], [['xxx', 'y']]), 'A     BB\nxxx   y\n');
  });
});

describe('computeChecks: kernel, clocks, versions', () => {
  it('kernel: passes 5.18+ with its features, fails an older one', () => {
    const r = computeChecks(facts({
      agents: [
        { node: 'a', url: 'http://x/statusz', status: { sync: { ready: true }, kernel: { release: '6.18.0', bpf: true, cgroup2: true, bpffs: true } } },
        { node: 'b', url: 'http://y/statusz', status: { sync: { ready: true }, kernel: { release: '5.15.0-91-generic', bpf: true, cgroup2: true, bpffs: true } } },
      ],
    }));
    assert.equal(byName(r, 'a: kernel 5.18 or newer, BPF, cgroup v2, bpffs')?.status, 'pass');
    assert.equal(byName(r, 'b: kernel 5.18 or newer')?.status, 'fail');
    assert.equal(parseKernelRelease('6.1.0-rc1')?.minor, 1);
  });

  it('clock and version groups come after the agents', () => {
    const r = computeChecks(facts({ cliVersion: '0.1.0', operatorVersion: { version: '0.1.0', source: 'test' }, agents: [{ node: 'a', url: 'http://x', status: { sync: { ready: true }, version: '0.2.0' } }] }));
    assert.deepEqual([...new Set(r.map((c) => c.group))].slice(-2), ['nodemesh-clocks', 'nodemesh-versions']);
    assert.equal(byName(r, 'agents are within the supported skew')?.status, 'fail', 'an agent ahead of the operator');
  });

  it('the operator version comes from the image tag when it is a release, else the Deployment label', () => {
    assert.equal(operatorVersionOfDeployment({ metadata: { labels: { 'app.kubernetes.io/version': '0.2.0' } }, spec: { selector: {}, template: { spec: { containers: [{ name: 'operator', image: 'reg/nodemesh:sha-1234' }] } } } }), '0.2.0');
    assert.equal(operatorVersionOfDeployment({ spec: { selector: {}, template: { spec: { containers: [{ name: 'operator', image: 'reg:5000/nodemesh/nodemesh:0.1.1@sha256:ab' }] } } } }), '0.1.1');
    assert.equal(operatorVersionOfDeployment({ spec: { selector: {}, template: { spec: { containers: [{ name: 'operator', image: 'nodemesh:latest' }] } } } }), undefined);
  });
});
