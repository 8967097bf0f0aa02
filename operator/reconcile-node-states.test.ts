import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeState } from '../crds/index.ts';
import { computeNodeState } from './compute-node-state.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';
import { silentOperatorLogger } from './logger.ts';
import { applyNodeStatePlan, HashMemo, planNodeStateWrites, verifiedHash, type NodeStateApi } from './reconcile-node-states.ts';
import { buildSnapshot } from './snapshot.ts';

const base = [
  node('n1'),
  node('n2'),
  pod('shop', 'web-1', 'n1', { app: 'web' }, '10.244.1.10', 'web'),
  pod('shop', 'echo-1', 'n2', { app: 'echo' }, '10.244.2.10', 'echo'),
  service('shop', 'echo', { app: 'echo' }, '10.96.0.20'),
];
const route = (weight: number) => httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80, weight }] }]);
const desiredOf = (objects: unknown[]): NodeState[] => {
  const s = buildSnapshot(objects);
  return ['n1', 'n2'].flatMap((n) => computeNodeState(s, n));
};
/** As the API server would store it: with metadata filled in. */
const stored = (states: NodeState[], rv = '1'): NodeState[] => states.map((s) => ({ ...s, metadata: { ...s.metadata, uid: `uid-${s.metadata?.name}`, resourceVersion: rv } }));

test('nothing to write when every stored shard has the desired hash', () => {
  const desired = desiredOf([...base, route(1)]);
  const plan = planNodeStateWrites(desired, stored(desired));
  assert.deepEqual(plan.upserts, []);
  assert.deepEqual(plan.deletes, []);
  assert.deepEqual(plan.unchanged, ['n1-0', 'n2-0']);
});

test('a changed route rewrites only the shards whose hash changed', () => {
  const before = desiredOf([...base]);
  const after = desiredOf([...base, route(1)]);
  const plan = planNodeStateWrites(after, stored(before));
  assert.ok(plan.upserts.length > 0);
  for (const u of plan.upserts) {
    assert.notEqual(u.existing?.spec.contentHash, u.desired.spec.contentHash);
  }
  const changedBoth = after.filter((a) => before.find((b) => b.metadata?.name === a.metadata?.name)?.spec.contentHash !== a.spec.contentHash).map((a) => a.metadata?.name);
  assert.deepEqual(plan.upserts.map((u) => u.desired.metadata?.name), changedBoth);
});

test('a hand-edited shard whose hash no longer matches its content is rewritten', () => {
  const desired = desiredOf([...base, route(1)]);
  const tampered = stored(desired).map((s) => (s.metadata?.name === 'n2-0' ? { ...s, spec: { ...s.spec, workloads: [] } } : s));
  assert.equal(verifiedHash(tampered.find((s) => s.metadata?.name === 'n2-0')!), undefined);
  const plan = planNodeStateWrites(desired, tampered);
  assert.deepEqual(plan.upserts.map((u) => u.desired.metadata?.name), ['n2-0']);
});

test('surplus shards and shards of nodes that are gone are deleted', () => {
  const desired = desiredOf([...base]);
  const extra: NodeState[] = [
    { ...desired[0]!, metadata: { ...desired[0]!.metadata, name: 'n1-1' }, spec: { ...desired[0]!.spec, shard: { index: 1, count: 2 } } },
    { ...desired[1]!, metadata: { ...desired[1]!.metadata, name: 'gone-0' }, spec: { ...desired[1]!.spec, nodeName: 'gone' } },
  ];
  const plan = planNodeStateWrites(desired, stored([...desired, ...extra]));
  assert.deepEqual(plan.deletes.map((d) => d.metadata?.name), ['gone-0', 'n1-1']);
  assert.deepEqual(plan.upserts, []);
});

test('HashMemo hashes an unchanged stored shard once', () => {
  const desired = stored(desiredOf([...base, route(1)]));
  const memo = new HashMemo();
  let calls = 0;
  const counting = (s: NodeState) => {
    calls++;
    return memo.storedHash(s);
  };
  planNodeStateWrites(desired, desired, counting);
  const first = memo.storedHash(desired[0]!);
  assert.equal(first, desired[0]!.spec.contentHash);
  assert.ok(calls >= 2);
  memo.prune(new Set(['n1-0']));
  assert.equal(memo.storedHash(desired[0]!), first);
});

/** NodeState storage in memory with resourceVersions, 409s and a write log. */
function fakeApi(initial: NodeState[]): NodeStateApi & { objects: Map<string, NodeState>; log: string[]; conflictOnce: Set<string> } {
  let rv = 10;
  const objects = new Map(initial.map((s) => [s.metadata!.name!, structuredClone(s)]));
  const log: string[] = [];
  const conflictOnce = new Set<string>();
  const err = (code: number, m: string) => Object.assign(new Error(m), { code });
  return {
    objects,
    log,
    conflictOnce,
    get: async (name) => structuredClone(objects.get(name)),
    create: async (body) => {
      const name = body.metadata!.name!;
      if (objects.has(name)) throw err(409, 'AlreadyExists');
      log.push(`create ${name}`);
      const s = { ...structuredClone(body), metadata: { ...body.metadata, uid: `u-${name}`, resourceVersion: String(++rv) } };
      objects.set(name, s);
      return structuredClone(s);
    },
    replace: async (body) => {
      const name = body.metadata!.name!;
      const cur = objects.get(name);
      if (!cur) throw err(404, 'NotFound');
      if (conflictOnce.delete(name)) {
        // Someone else wrote in between.
        cur.metadata!.resourceVersion = String(++rv);
      }
      if (cur.metadata?.resourceVersion !== body.metadata?.resourceVersion) throw err(409, 'Conflict');
      log.push(`replace ${name}`);
      const s = { ...structuredClone(body), metadata: { ...body.metadata, uid: cur.metadata?.uid, resourceVersion: String(++rv) } };
      objects.set(name, s);
      return structuredClone(s);
    },
    delete: async (name) => {
      log.push(`delete ${name}`);
      objects.delete(name);
    },
  };
}

test('applying a plan: creates, replaces with a 409 retried after a re-read, deletes last, version bumped', async () => {
  const before = stored(desiredOf([...base]));
  const surplus = { ...before[0]!, metadata: { ...before[0]!.metadata, name: 'n1-1' } };
  before[1]!.spec.version = 4;
  const api = fakeApi([before[1]!, surplus]); // n1-0 missing, n2-0 stale
  api.conflictOnce.add('n2-0');
  const desired = desiredOf([...base, route(5)]);
  const plan = planNodeStateWrites(desired, [...api.objects.values()]);
  const res = await applyNodeStatePlan(plan, api, { isLeader: () => true, log: silentOperatorLogger });
  assert.deepEqual(res.failed, []);
  assert.equal(res.conflicts, 1);
  assert.deepEqual(api.log, ['create n1-0', 'replace n2-0', 'delete n1-1']);
  assert.equal(api.objects.get('n2-0')!.spec.version, 5);
  for (const d of desired) assert.equal(api.objects.get(d.metadata!.name!)!.spec.contentHash, d.spec.contentHash);
  assert.deepEqual(planNodeStateWrites(desired, [...api.objects.values()]).upserts, [], 'converged');
});

test('a closed leader fence stops the plan before the next request', async () => {
  const api = fakeApi([]);
  const desired = desiredOf([...base, route(5)]);
  let budget = 1;
  const res = await applyNodeStatePlan(planNodeStateWrites(desired, []), api, { isLeader: () => budget-- > 0, log: silentOperatorLogger, concurrency: 1 });
  assert.equal(res.aborted, true);
  assert.deepEqual(api.log, ['create n1-0']);
});

test('a node whose upsert failed keeps its surplus shards', async () => {
  const before = stored(desiredOf([...base]));
  const surplus = { ...before[1]!, metadata: { ...before[1]!.metadata, name: 'n2-1' }, spec: { ...before[1]!.spec, shard: { index: 1, count: 2 } } };
  const api = fakeApi([before[0]!, before[1]!, surplus]);
  api.replace = async () => {
    throw Object.assign(new Error('boom'), { code: 500 });
  };
  const desired = desiredOf([...base, route(7)]);
  const res = await applyNodeStatePlan(planNodeStateWrites(desired, [...api.objects.values()]), api, { isLeader: () => true, log: silentOperatorLogger });
  assert.ok(res.failed.length > 0);
  assert.ok(api.objects.has('n2-1'), 'surplus shard of the failed node kept');
});
