/**
 * Last good forms across restarts: what is persisted, what is trusted on load, and the reconciler around it -
 * a restarted operator with a broken object in the store keeps the object's last good form on the nodes, and
 * writes nothing while the record cannot be read.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HTTPRoute, NodeState } from '../crds/index.ts';
import { FakeRuntimeClock } from './clock.ts';
import { compileMesh } from './compile-mesh.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';
import { LAST_GOOD_MAX_BYTES, planLastGoodRecord, restoreLastGood, type LastGoodRecord, type LastGoodStore } from './last-good-store.ts';
import { silentOperatorLogger } from './logger.ts';
import type { NodeStateApi } from './reconcile-node-states.ts';
import { Reconciler, type ReconcilerCache } from './reconciler.ts';
import { buildSnapshot } from './snapshot.ts';
import type { StatusApi, UserObject } from './status-writer.ts';

const cluster = () => [node('n1'), pod('shop', 'echo-1', 'n1', { app: 'echo' }, '10.244.1.10'), service('shop', 'echo', { app: 'echo' }, '10.96.0.20')];
const good = (): HTTPRoute => httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80, weight: 7 }] }], 1);
/** Generation 2 of the same route (same uid), broken: a weight below zero. */
const broken = (): HTTPRoute => httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80, weight: -1 }] }], 2);

test('the record holds the last good form of objects invalid now, and only those', () => {
  const first = compileMesh(buildSnapshot([...cluster(), good()]));
  assert.deepEqual(planLastGoodRecord(first).record.entries, [], 'nothing to keep while everything is valid');
  const second = compileMesh(buildSnapshot([...cluster(), broken()]), first.lastGood);
  const { record, dropped } = planLastGoodRecord(second);
  assert.deepEqual(dropped, []);
  assert.deepEqual(record.entries.map((e) => [e.kind, e.namespace, e.name, e.generation, e.uid]), [['HTTPRoute', 'shop', 'echo', 1, 'route-shop-echo']]);
  assert.deepEqual(record.entries[0]!.spec, good().spec);
});

test('an oversized record keeps the security kinds and names what it left out', () => {
  const big = 'x'.repeat(200 * 1024);
  const routes = Array.from({ length: 6 }, (_, i) => httpRoute('shop', `r${i}`, 'echo', [{ matches: [{ headers: [{ name: 'x', value: big }] }], backendRefs: [{ name: 'echo', port: 80 }] }], 1));
  const authz = { apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'z', namespace: 'shop', uid: 'z1', generation: 1 }, spec: { action: 'ALLOW', rules: [{ from: [{ namespaces: ['shop'] }] }] } };
  const first = compileMesh(buildSnapshot([...cluster(), ...routes, authz]));
  const breakIt = <T extends { metadata?: object; spec?: unknown }>(o: T, spec: unknown): T => ({ ...o, metadata: { ...o.metadata, generation: 2 }, spec });
  const second = compileMesh(buildSnapshot([...cluster(), ...routes.map((r) => breakIt(r, { ...r.spec, parentRefs: [{ kind: 'Service', group: '', name: 'echo', port: 0 }] })), breakIt(authz, { action: 'MAYBE' })]), first.lastGood);
  const { record, dropped } = planLastGoodRecord(second);
  assert.equal(record.entries[0]!.kind, 'AuthorizationPolicy', 'security-relevant kinds first');
  assert.ok(dropped.length >= 2 && dropped.every((d) => d.startsWith('HTTPRoute shop/r')), dropped.join(', '));
  assert.ok(Buffer.byteLength(JSON.stringify(record)) <= LAST_GOOD_MAX_BYTES);
});

test('on load, an entry is used only for the same object, an older generation and a spec that still validates', () => {
  const snapshot = buildSnapshot([...cluster(), broken()]);
  const entry = { uid: 'route-shop-echo', kind: 'HTTPRoute' as const, namespace: 'shop', name: 'echo', generation: 1, spec: good().spec };
  const ok = restoreLastGood({ version: 1, entries: [entry] } satisfies LastGoodRecord, snapshot);
  assert.deepEqual([...ok.lastGood.keys()], ['route-shop-echo']);
  assert.deepEqual(ok.ignored, []);
  const cases: Array<[string, unknown, RegExp]> = [
    ['re-created object', { ...entry, uid: 'another-uid' }, /no such object now/],
    ['another kind', { ...entry, kind: 'TrafficPolicy' }, /no such object now/],
    ['not older', { ...entry, generation: 2 }, /not older than the current 2/],
    ['invalid stored spec', { ...entry, spec: broken().spec }, /does not validate/],
  ];
  for (const [what, e, why] of cases) {
    const r = restoreLastGood({ version: 1, entries: [e] }, snapshot);
    assert.equal(r.lastGood.size, 0, what);
    assert.match(r.ignored[0] ?? '', why, what);
  }
  assert.deepEqual(restoreLastGood({ version: 7 }, snapshot).ignored, ['the record is not a version 1 last-good record']);
  assert.deepEqual(restoreLastGood(undefined, snapshot), { lastGood: new Map(), ignored: [] });
});

/** An operator over an in-memory cluster; `objects` and the stores outlive it, as the API server would. */
function operator(objects: unknown[], nodeStates: Map<string, NodeState>, lastGoodStore: LastGoodStore | undefined) {
  const clock = new FakeRuntimeClock();
  let rv = 100;
  const writes: string[] = [];
  const users = () => objects.filter((o) => (o as { kind: string }).kind === 'HTTPRoute') as UserObject[];
  const cache: ReconcilerCache = {
    allSynced: () => true,
    unhealthy: () => [],
    states: () => [],
    snapshot: () => buildSnapshot(objects),
    nodeStates: () => [...nodeStates.values()],
    userObject: (kind, ns, name) => users().find((o) => o.kind === kind && o.metadata?.namespace === ns && o.metadata?.name === name),
  };
  const put = (verb: string) => async (b: NodeState): Promise<NodeState> => {
    writes.push(`${verb} ${b.metadata!.name}`);
    const s = { ...b, metadata: { ...b.metadata, uid: `u-${b.metadata!.name}`, resourceVersion: String(++rv) } };
    nodeStates.set(b.metadata!.name!, s);
    return s;
  };
  const nodeStateApi: NodeStateApi = { get: async (n) => nodeStates.get(n), create: put('create'), replace: put('replace'), delete: async (n) => void nodeStates.delete(n) };
  const statusApi: StatusApi = {
    get: async (kind, ns, name) => cache.userObject(kind, ns, name) as UserObject,
    replaceStatus: async (kind, body) => {
      writes.push(`status ${kind}`);
      const i = objects.findIndex((o) => (o as UserObject).kind === kind && (o as UserObject).metadata?.name === body.metadata?.name);
      objects[i] = { ...(objects[i] as object), status: body.status };
    },
  };
  const r = new Reconciler({ cache, nodeStateApi, statusApi, lastGoodStore, isLeader: () => true, log: silentOperatorLogger, clock, debounceMs: 10 });
  return { r, clock, writes, objects };
}

const carried = (nodeStates: Map<string, NodeState>): string[] => [...nodeStates.values()].flatMap((s) => s.spec.services.flatMap((x) => x.sources)).filter((t) => t.startsWith('HTTPRoute/')).sort();
const weights = (nodeStates: Map<string, NodeState>): number[] => [...nodeStates.values()].flatMap((s) => s.spec.services.flatMap((x) => x.ports.flatMap((p) => p.routes.flatMap((r) => r.backends.map((b) => b.weight)))));

function memoryStore(): LastGoodStore & { saved: unknown; saves: number; failLoad?: Error } {
  const store = {
    saved: undefined as unknown,
    saves: 0,
    failLoad: undefined as Error | undefined,
    load: async () => {
      if (store.failLoad) throw store.failLoad;
      return store.saved === undefined ? undefined : JSON.parse(JSON.stringify(store.saved));
    },
    save: async (record: LastGoodRecord) => {
      store.saves++;
      store.saved = JSON.parse(JSON.stringify(record));
    },
  };
  return store;
}

test('a restart with a broken object in the store keeps its last good form on the nodes', async () => {
  const store = memoryStore();
  const nodeStates = new Map<string, NodeState>();
  const objects: unknown[] = [...cluster(), good()];
  const before = operator(objects, nodeStates, store);
  before.r.notify();
  await before.clock.advance(100);
  assert.deepEqual(carried(nodeStates), ['HTTPRoute/shop/echo@1']);
  assert.equal(store.saves, 0, 'nothing to persist while every object is valid');
  objects[objects.length - 1] = broken();
  before.r.notify();
  await before.clock.advance(100);
  assert.deepEqual(carried(nodeStates), ['HTTPRoute/shop/echo@1'], 'generation 2 is invalid: nodes keep generation 1');
  assert.equal(store.saves, 1);
  await before.r.stop();

  // A new process: empty memory, the broken route in the store, the record in its ConfigMap.
  const after = operator(objects, nodeStates, store);
  after.r.notify();
  await after.clock.advance(100);
  assert.equal(after.r.status().lastOutcome, 'ok');
  assert.deepEqual(carried(nodeStates), ['HTTPRoute/shop/echo@1'], 'still the last good generation after the restart');
  assert.deepEqual(weights(nodeStates), [7]);
  assert.ok(!after.writes.some((w) => w.startsWith('replace') || w.startsWith('create')), `no NodeState rewritten: ${after.writes.join(', ')}`);
  const route = objects[objects.length - 1] as HTTPRoute;
  const accepted = route.status!.parents![0]!.conditions!.find((c) => c.type === 'Accepted')!;
  assert.match(accepted.message, /the last good generation 1 stays in effect/);

  // Without the record (the behaviour before persistence), the route would have been dropped from the nodes.
  const amnesiacStates = new Map<string, NodeState>();
  const amnesiac = operator(objects, amnesiacStates, undefined);
  amnesiac.r.notify();
  await amnesiac.clock.advance(100);
  assert.deepEqual(carried(amnesiacStates), [], 'without persistence the restart drops the route');
  await after.r.stop();
  await amnesiac.r.stop();
});

test('when the record cannot be read nothing is written, and the run is retried', async () => {
  const store = memoryStore();
  store.failLoad = Object.assign(new Error('etcdserver: request timed out'), { code: 500 });
  const nodeStates = new Map<string, NodeState>();
  const op = operator([...cluster(), broken()], nodeStates, store);
  op.r.notify();
  await op.clock.advance(100);
  assert.equal(op.r.status().lastOutcome, 'error');
  assert.match(op.r.status().lastError ?? '', /cannot read the persisted last good forms/);
  assert.deepEqual(op.writes, [], 'no NodeState and no status from a view without the last good forms');
  store.failLoad = undefined;
  await op.clock.advance(5_000);
  assert.equal(op.r.status().lastOutcome, 'ok');
  await op.r.stop();
});

test('a forbidden ConfigMap (403) turns persistence off and the operator carries on', async () => {
  const store = memoryStore();
  store.failLoad = Object.assign(new Error('configmaps "nodemesh-last-good" is forbidden'), { code: 403 });
  const nodeStates = new Map<string, NodeState>();
  const op = operator([...cluster(), good()], nodeStates, store);
  op.r.notify();
  await op.clock.advance(100);
  assert.equal(op.r.status().lastOutcome, 'ok');
  assert.deepEqual(carried(nodeStates), ['HTTPRoute/shop/echo@1']);
  await op.r.stop();
});
