/** computeChecks and the agent-status seam on hand-made facts (no API server). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Node } from '@kubernetes/client-node';
import { normalizeStatusUrl, parseAgentEndpoints, resolveAgentEndpoints } from './agent-status.ts';
import { computeChecks, type CheckFacts } from './check.ts';
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

  it('resolves agent endpoints: flag, then Node annotation', () => {
    const explicit = parseAgentEndpoints('a=http://10.0.0.1:10256');
    const m = resolveAgentEndpoints([node('a', { 'nodemesh.io/agent-status-url': 'http://ignored/' }), node('b', { 'nodemesh.io/agent-status-url': 'http://10.0.0.2:10256/custom' }), node('c')], explicit);
    assert.deepEqual([...m], [['a', 'http://10.0.0.1:10256/statusz'], ['b', 'http://10.0.0.2:10256/custom'], ['c', undefined]]);
    assert.throws(() => parseAgentEndpoints('nourl'), { code: 'NM_ERR_CLI_USAGE' });
    assert.equal(normalizeStatusUrl('http://h:1'), 'http://h:1/statusz');
  });

  it('formats ages and tables like kubectl', () => {
    assert.deepEqual([5_000, 150_000, 3_600_000 * 5, 86_400_000 * 3, -1].map(formatAge), ['5s', '2m30s', '5h', '3d', '0s']);
    assert.equal(formatTable(['a', 'bb'], [['xxx', 'y']]), 'A     BB\nxxx   y\n');
  });
});
