import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeState, PolicyStatus } from '../crds/index.ts';
import { FakeRuntimeClock } from './clock.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';
import type { InformerState } from './informers.ts';
import { silentOperatorLogger } from './logger.ts';
import type { NodeStateApi } from './reconcile-node-states.ts';
import { Reconciler, type ReconcilerCache } from './reconciler.ts';
import { buildSnapshot } from './snapshot.ts';
import type { StatusApi, UserObject } from './status-writer.ts';

/** A cluster in memory: the cache and the write APIs share it, as informers would reflect writes. */
function world() {
  const clock = new FakeRuntimeClock();
  let rv = 1;
  const objects: unknown[] = [
    node('n1'),
    pod('shop', 'echo-1', 'n1', { app: 'echo' }, '10.244.1.10'),
    service('shop', 'echo', { app: 'echo' }, '10.96.0.20'),
    { ...httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80 }] }]), metadata: { name: 'echo', namespace: 'shop', uid: 'r1', generation: 1, resourceVersion: '1' } },
    { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'default', namespace: 'shop', uid: 'm1', generation: 1, resourceVersion: '1' }, spec: { mode: 'STRICT' } },
  ];
  const nodeStates = new Map<string, NodeState>();
  const writes: string[] = [];
  const state = { synced: true, unhealthy: [] as string[], unhealthySince: 0, leader: true };
  const user = () => objects.filter((o) => ['HTTPRoute', 'MeshTLSPolicy'].includes((o as { kind: string }).kind)) as UserObject[];
  const cache: ReconcilerCache = {
    allSynced: () => state.synced,
    unhealthy: () => state.unhealthy,
    states: () => state.unhealthy.map((name) => ({ name, synced: true, healthy: false, unhealthySince: state.unhealthySince }) as InformerState),
    snapshot: () => buildSnapshot(objects),
    nodeStates: () => [...nodeStates.values()],
    userObject: (kind, ns, name) => user().find((o) => o.kind === kind && o.metadata?.namespace === ns && o.metadata?.name === name),
  };
  const nodeStateApi: NodeStateApi = {
    get: async (name) => nodeStates.get(name),
    create: async (b) => {
      writes.push(`create ${b.metadata!.name}`);
      const s = { ...b, metadata: { ...b.metadata, uid: `u-${b.metadata!.name}`, resourceVersion: String(++rv) } };
      nodeStates.set(b.metadata!.name!, s);
      return s;
    },
    replace: async (b) => {
      writes.push(`replace ${b.metadata!.name}`);
      const s = { ...b, metadata: { ...b.metadata, resourceVersion: String(++rv) } };
      nodeStates.set(b.metadata!.name!, s);
      return s;
    },
    delete: async (name) => {
      writes.push(`delete ${name}`);
      nodeStates.delete(name);
    },
  };
  const statusApi: StatusApi = {
    get: async (kind, ns, name) => cache.userObject(kind, ns, name) as UserObject,
    replaceStatus: async (kind, body) => {
      writes.push(`status ${kind}`);
      const o = cache.userObject(kind, body.metadata!.namespace!, body.metadata!.name!)!;
      o.status = body.status as PolicyStatus;
      o.metadata!.resourceVersion = String(++rv);
      return o;
    },
  };
  const r = new Reconciler({ cache, nodeStateApi, statusApi, isLeader: () => state.leader, log: silentOperatorLogger, clock, debounceMs: 100, maxDelayMs: 1000, staleGraceMs: 10_000 });
  return { clock, r, state, writes, objects, user, nodeStates };
}

test('a non-leader writes nothing; gaining the lease reconciles at once', async () => {
  const w = world();
  w.state.leader = false;
  w.r.notify();
  await w.clock.advance(1000);
  assert.deepEqual(w.writes, []);
  assert.equal(w.r.status().lastOutcome, 'not-leader');
  w.state.leader = true;
  w.r.notify({ urgent: true });
  await w.clock.advance(200);
  assert.deepEqual(w.writes, ['create n1-0', 'status HTTPRoute', 'status MeshTLSPolicy']);
  const programmed = (w.user()[1]!.status as PolicyStatus).conditions!.find((c) => c.type === 'Programmed')!;
  assert.equal(programmed.status, 'True', 'Programmed from the confirmed writes, in the same run');
});

test('nothing is written before every informer has listed', async () => {
  const w = world();
  w.state.synced = false;
  w.r.notify();
  await w.clock.advance(1000);
  assert.deepEqual(w.writes, []);
  assert.equal(w.r.status().lastOutcome, 'not-synced');
});

test('a steady state writes nothing, and a burst of changes is one reconcile', async () => {
  const w = world();
  w.r.notify();
  await w.clock.advance(500);
  const n = w.writes.length;
  const before = w.r.status().reconciles;
  for (let i = 0; i < 100; i++) {
    w.r.notify();
    await w.clock.advance(1);
  }
  await w.clock.advance(1000);
  assert.equal(w.writes.length, n, 'no writes when nothing changed');
  assert.equal(w.r.status().reconciles - before, 1, 'coalesced');
});

test('a failing informer: NodeStates kept, Programmed turns Unknown after the grace period, back when healthy', async () => {
  const w = world();
  w.r.notify();
  await w.clock.advance(500);
  w.writes.length = 0;
  w.state.unhealthy = ['pods'];
  w.state.unhealthySince = w.clock.now();
  // A change while pods cannot be watched: the route's backends change (here: a new object).
  w.objects.push(service('shop', 'other', { app: 'other' }, '10.96.0.21'));
  w.r.notify();
  await w.clock.advance(5_000);
  assert.equal(w.writes.length, 0, 'within the grace period nothing is written');
  await w.clock.advance(6_000);
  const written: string[] = [...w.writes];
  assert.ok(written.length > 0 && written.every((x) => x.startsWith('status ')), `only statuses written: ${written.join(', ')}`);
  const prog = (w.user()[1]!.status as PolicyStatus).conditions!.find((c) => c.type === 'Programmed')!;
  assert.equal(prog.status, 'Unknown');
  assert.match(prog.message, /watch of pods is failing/);
  w.state.unhealthy = [];
  w.r.notify({ urgent: true });
  await w.clock.advance(500);
  assert.equal((w.user()[1]!.status as PolicyStatus).conditions!.find((c) => c.type === 'Programmed')!.status, 'True');
});

test('a failed write is retried with back-off', async () => {
  const w = world();
  let fail = 2;
  const orig = w.writes.push.bind(w.writes);
  w.writes.push = (...items: string[]) => {
    const first: string = items[0] ?? '';
    if (first.startsWith('create') && fail-- > 0) throw Object.assign(new Error('etcd timeout'), { code: 500 });
    return orig(...items);
  };
  w.r.notify();
  await w.clock.advance(200);
  assert.equal(w.r.status().lastOutcome, 'error');
  await w.clock.advance(5_000);
  assert.equal(w.r.status().lastOutcome, 'ok');
  assert.ok(w.writes.includes('create n1-0'));
});

test('our own writes coming back from the watch start no run; a change by anyone else does', async () => {
  const w = world();
  w.r.notify();
  await w.clock.advance(500);
  const runs = () => w.r.status().reconciles;
  const before = runs();
  // The informer hears back the shard and the statuses this operator wrote, exactly as written.
  for (const s of w.nodeStates.values()) w.r.onInformerChange('nodeStates', 'update', s);
  for (const o of w.user()) w.r.onInformerChange('httpRoutes', 'update', o);
  await w.clock.advance(500);
  assert.equal(runs(), before, 'echoes of our writes are no news');
  // Someone edits the shard (a new resourceVersion): the operator must look, and repairs it.
  const shard = [...w.nodeStates.values()][0]!;
  const edited = { ...shard, metadata: { ...shard.metadata, resourceVersion: '999' }, spec: { ...shard.spec, workloads: [] } };
  w.nodeStates.set(shard.metadata!.name!, edited);
  w.r.onInformerChange('nodeStates', 'update', edited);
  await w.clock.advance(500);
  assert.equal(runs(), before + 1);
  assert.equal(w.writes.at(-1), 'replace n1-0', 'the edited shard is rewritten');
  // A status someone else wrote is not ours either.
  const route = w.user()[0]!;
  route.status = { parents: [] };
  w.r.onInformerChange('httpRoutes', 'update', route);
  await w.clock.advance(500);
  assert.equal(runs(), before + 2);
  // Deletes always count.
  w.r.onInformerChange('nodeStates', 'delete', [...w.nodeStates.values()][0]);
  await w.clock.advance(500);
  assert.equal(runs(), before + 3);
});
