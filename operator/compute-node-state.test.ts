/** Tests for computeNodeState: scoping, sharding, hashing, last good forms and isolation of bad objects. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NODESTATE_MAX_BYTES } from '../crds/index.ts';
import { compileMesh } from './compile-mesh.ts';
import { computeNodeState, hashOfSpec, nodeLabelValue, nodeStateName } from './compute-node-state.ts';
import { buildSnapshot } from './snapshot.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';

const base = () => [
  node('n1'), node('n2'),
  pod('shop', 'web', 'n1', { app: 'web' }, '10.0.1.1', 'web'),
  pod('shop', 'echo', 'n2', { app: 'echo' }, '10.0.2.1', 'echo'),
  service('shop', 'echo', { app: 'echo' }, '10.96.0.1'),
  service('shop', 'plain', { app: 'web' }, '10.96.0.2'),
];

test('a node gets its pods, the mesh services it needs, and nothing L4-only', () => {
  const snap = buildSnapshot([...base(), httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80 }] }])]);
  const [n1] = computeNodeState(snap, 'n1');
  assert.deepEqual(n1!.spec.workloads.map((w) => w.name), ['web']);
  assert.deepEqual(n1!.spec.services.map((s) => s.name), ['echo'], 'plain (L4 only) is absent');
  assert.equal(n1!.metadata!.name, 'n1-0');
  assert.equal(n1!.spec.contentHash, hashOfSpec(n1!.spec));
  const empty = computeNodeState(snap, 'no-such-node');
  assert.equal(empty.length, 1, 'a node without pods still gets one (empty) shard');
  assert.deepEqual([empty[0]!.spec.workloads, empty[0]!.spec.services], [[], []]);
});

test('large state is sharded under 512 KiB, every entry exactly once, stable under unrelated change', () => {
  const objects: unknown[] = [node('n1'), pod('shop', 'web', 'n1', { app: 'web' }, '10.0.1.1')];
  const header = 'v'.repeat(3000);
  for (let i = 0; i < 400; i++) {
    objects.push(service('shop', `svc-${i}`, { app: `svc-${i}` }, `10.96.${i >> 8}.${i & 255}`));
    objects.push(httpRoute('shop', `r-${i}`, `svc-${i}`, [{ matches: [{ headers: [{ name: 'x', value: header }] }], backendRefs: [{ name: `svc-${i}`, port: 80 }] }]));
  }
  const snap = buildSnapshot(objects);
  const states = computeNodeState(snap, 'n1');
  assert.ok(states.length >= 4 && (states.length & (states.length - 1)) === 0, `power-of-two shard count, got ${states.length}`);
  const names = states.flatMap((s) => s.spec.services.map((x) => x.name));
  assert.equal(names.length, 400);
  assert.equal(new Set(names).size, 400);
  for (const s of states) {
    assert.ok(JSON.stringify(s).length <= NODESTATE_MAX_BYTES, `${s.metadata!.name} under 512 KiB`);
    assert.equal(s.spec.shard.count, states.length);
    assert.equal(s.spec.contentHash, hashOfSpec(s.spec));
  }
  // Change one route: exactly one shard changes.
  const changed = objects.map((o) => ((o as { metadata?: { name?: string } }).metadata?.name === 'r-7' && (o as { kind: string }).kind === 'HTTPRoute'
    ? httpRoute('shop', 'r-7', 'svc-7', [{ backendRefs: [{ name: 'svc-7', port: 80, weight: 5 }] }], 2)
    : o));
  const after = computeNodeState(buildSnapshot(changed), 'n1');
  assert.equal(after.length, states.length);
  const differing = after.filter((s, i) => s.spec.contentHash !== states[i]!.spec.contentHash);
  assert.equal(differing.length, 1, 'only the shard carrying r-7 changes');
});

test('an invalid route keeps its last good form; deleting the route forgets it', () => {
  const good = httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80, weight: 7 }] }], 1);
  const c1 = compileMesh(buildSnapshot([...base(), good]));
  assert.equal(c1.lastGood.get('route-shop-echo')?.generation, 1);
  const bad = httpRoute('shop', 'echo', 'echo', [{ matches: [{ path: { type: 'RegularExpression', value: '(a+)+' } }], backendRefs: [{ name: 'echo', port: 80 }] }], 2);
  const snap2 = buildSnapshot([...base(), bad]);
  const c2 = compileMesh(snap2, c1.lastGood);
  const [n1] = computeNodeState(snap2, 'n1', c2);
  const echo = n1!.spec.services.find((s) => s.name === 'echo')!;
  assert.equal(echo.ports[0]!.routes[0]!.backends[0]!.weight, 7, 'generation 1 still routes');
  assert.deepEqual(echo.sources, ['HTTPRoute/shop/echo@1']);
  const outcome = c2.outcomes.find((o) => o.name === 'echo')!;
  assert.equal(outcome.accepted.status, 'False');
  assert.match(outcome.accepted.message, /spec\.rules\[0\]\.matches\[0\]\.path\.value: .*the last good generation 1 stays in effect/);
  const c3 = compileMesh(buildSnapshot(base()), c2.lastGood);
  assert.equal(c3.lastGood.size, 0, 'deleted objects leave no last good behind');
  // Without history the bad route attaches nothing and echo stays L4.
  const fresh = computeNodeState(snap2, 'n1', compileMesh(snap2));
  assert.equal(fresh[0]!.spec.services.length, 0);
});

test('a huge invalid route never disturbs a good one, and compiling stays fast', () => {
  const rules = Array.from({ length: 10_000 }, (_, i) => ({ matches: [{ path: { type: 'Exact', value: `/p${i}` } }], backendRefs: [{ name: 'echo', port: 80 }] }));
  const huge = httpRoute('shop', 'huge', 'echo', rules, 1, '2026-10-01T00:00:00Z');
  const mib = httpRoute('shop', 'mib', 'echo', [{ matches: [{ headers: Array.from({ length: 16 }, (_, i) => ({ name: `h${i}`, value: 'z'.repeat(4096) })) }] }].concat(Array(15).fill({ matches: [{ headers: Array.from({ length: 16 }, (_, i) => ({ name: `h${i}`, value: 'z'.repeat(4096) })) }] })), 1, '2026-10-01T00:00:00Z');
  const good = httpRoute('shop', 'good', 'echo', [{ backendRefs: [{ name: 'echo', port: 80 }] }], 1, '2026-11-05T00:00:00Z');
  const snap = buildSnapshot([...base(), huge, mib, good]);
  const start = performance.now();
  const compiled = compileMesh(snap);
  const states = computeNodeState(snap, 'n1', compiled);
  const ms = performance.now() - start;
  assert.ok(ms < 100, `compile took ${ms} ms`);
  const routes = states[0]!.spec.services.find((s) => s.name === 'echo')!.ports[0]!.routes;
  assert.deepEqual(routes.map((r) => r.route), ['shop/good']);
  for (const name of ['huge', 'mib']) {
    const o = compiled.outcomes.find((x) => x.name === name)!;
    assert.equal(o.accepted.status, 'False');
    assert.equal(o.accepted.reason, 'Invalid');
  }
});

test('an AuthorizationPolicy that never compiled denies everything it meant to select', () => {
  const broken = {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy',
    metadata: { name: 'broken', namespace: 'shop', uid: 'ap-broken', generation: 1 },
    spec: { selector: { matchLabels: { app: 'echo' } }, rules: [{ to: [{ methods: ['get'] }] }] },
  };
  const snap = buildSnapshot([...base(), broken]);
  const [n2] = computeNodeState(snap, 'n2');
  const echo = n2!.spec.workloads.find((w) => w.name === 'echo')!;
  assert.deepEqual(echo.authorization, {
    defaultAction: 'Allow',
    policies: [{ name: 'shop/broken', action: 'DENY', rules: [{ requiresHttp: false }], failClosed: true }],
  });
  const [n1] = computeNodeState(snap, 'n1');
  assert.equal(n1!.spec.workloads[0]!.authorization, undefined, 'web is not selected');
  // Selection itself broken: the whole namespace fails closed.
  const worse = { ...broken, spec: { selector: { matchLabels: { 'bad key!': 'x' } } } };
  const snap2 = buildSnapshot([...base(), worse]);
  assert.ok(computeNodeState(snap2, 'n1')[0]!.spec.workloads[0]!.authorization?.policies[0]!.failClosed);
  // An AUDIT policy that never compiled changes nothing.
  const audit = { ...broken, spec: { ...broken.spec, action: 'AUDIT' } };
  assert.equal(computeNodeState(buildSnapshot([...base(), audit]), 'n2')[0]!.spec.workloads[0]!.authorization, undefined);
});

test('names and labels of NodeState objects', () => {
  assert.equal(nodeStateName('node-a', 3), 'node-a-3');
  const long = 'n'.repeat(260);
  assert.ok(nodeStateName(long, 12).length <= 253);
  assert.notEqual(nodeStateName(long, 1), nodeStateName(`${long}x`, 1));
  assert.equal(nodeLabelValue('node-a'), 'node-a');
  assert.match(nodeLabelValue('x'.repeat(64)), /^h-[0-9a-f]{40}$/);
});
