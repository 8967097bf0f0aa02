import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CONTROLLER_NAME, type HTTPRouteStatus, type PolicyStatus } from '../crds/index.ts';
import { compileMesh } from './compile-mesh.ts';
import { computeStatuses, type ObjectStatus } from './compute-status.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';
import { silentOperatorLogger } from './logger.ts';
import { buildSnapshot } from './snapshot.ts';
import { applyStatusWrites, markUnconfirmed, planStatusWrites, type StatusApi, type UserObject } from './status-writer.ts';

const route = httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80 }] }]);
const mtls = { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'default', namespace: 'shop', uid: 'mtls-1', generation: 1 }, spec: { mode: 'STRICT' } };
const objects = [node('n1'), pod('shop', 'echo-1', 'n1', { app: 'echo' }, '10.244.1.10'), service('shop', 'echo', { app: 'echo' }, '10.96.0.20'), route, mtls];

function statuses(): ObjectStatus[] {
  const s = buildSnapshot(objects);
  return computeStatuses(s, compileMesh(s), [], { now: '2026-11-01T00:00:00Z' });
}

const lookupFrom = (objs: UserObject[]) => (kind: string, ns: string, name: string) => objs.find((o) => o.kind === kind && o.metadata?.namespace === ns && o.metadata?.name === name);

test('only objects whose stored status differs are written', () => {
  const st = statuses();
  const withStatus = [
    { ...route, status: st.find((s) => s.kind === 'HTTPRoute')!.status },
    { ...mtls, status: { conditions: [] } },
  ] as UserObject[];
  const writes = planStatusWrites(st, lookupFrom(withStatus));
  assert.deepEqual(writes.map((w) => w.target.kind), ['MeshTLSPolicy']);
  const reverseKeys = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(reverseKeys) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverseKeys(x)])) : v;
  const reordered = reverseKeys(st.find((s) => s.kind === 'HTTPRoute')!.status);
  assert.deepEqual(planStatusWrites(st.filter((s) => s.kind === 'HTTPRoute'), lookupFrom([{ ...route, status: reordered } as UserObject])).length, 0, 'key order does not count as a change');
});

test('a status for a re-created object (other uid) is not written', () => {
  const st = statuses();
  const recreated = { ...mtls, metadata: { ...mtls.metadata, uid: 'mtls-2' } } as UserObject;
  assert.deepEqual(planStatusWrites(st, lookupFrom([recreated])), []);
});

test('markUnconfirmed turns Programmed Unknown and keeps its transition time when it already was', () => {
  const st = statuses();
  const r = st.find((s) => s.kind === 'HTTPRoute')!;
  const u = markUnconfirmed(r, undefined, 'watch of pods failing', '2026-11-02T00:00:00Z');
  const conds = (u.status as HTTPRouteStatus).parents![0]!.conditions ?? [];
  assert.deepEqual(conds.map((c) => [c.type, c.status]), [['Accepted', 'True'], ['ResolvedRefs', 'True'], ['Programmed', 'Unknown']]);
  const prog = conds.find((c) => c.type === 'Programmed')!;
  assert.equal(prog.reason, 'Unconfirmed');
  assert.equal(prog.message, 'watch of pods failing');
  assert.equal(prog.lastTransitionTime, '2026-11-02T00:00:00Z');
  const again = markUnconfirmed(r, u.status, 'still failing', '2026-11-03T00:00:00Z');
  assert.equal((again.status as HTTPRouteStatus).parents![0]!.conditions!.find((c) => c.type === 'Programmed')!.lastTransitionTime, '2026-11-02T00:00:00Z');
  const p = markUnconfirmed(st.find((s) => s.kind === 'MeshTLSPolicy')!, undefined, 'x', '2026-11-02T00:00:00Z');
  assert.equal((p.status as PolicyStatus).conditions!.find((c) => c.type === 'Programmed')!.status, 'Unknown');
});

/** Status storage with a concurrent writer that sneaks in once. */
function fakeStatusApi(stored: Map<string, UserObject>): StatusApi & { puts: string[]; sneak?: (o: UserObject) => void } {
  let rv = 100;
  const api: StatusApi & { puts: string[]; sneak?: (o: UserObject) => void } = {
    puts: [],
    get: async (kind, ns, name) => structuredClone(stored.get(`${kind}/${ns}/${name}`)),
    replaceStatus: async (kind, body) => {
      const key = `${kind}/${body.metadata!.namespace}/${body.metadata!.name}`;
      const cur = stored.get(key)!;
      if (api.sneak) {
        api.sneak(cur);
        api.sneak = undefined;
        cur.metadata!.resourceVersion = String(++rv);
      }
      if (cur.metadata!.resourceVersion !== body.metadata!.resourceVersion) throw Object.assign(new Error('Conflict'), { code: 409 });
      api.puts.push(key);
      const next = { ...cur, status: structuredClone(body.status), metadata: { ...cur.metadata, resourceVersion: String(++rv) } } as UserObject;
      stored.set(key, next);
      return next;
    },
  };
  return api;
}

test('a 409 re-reads and keeps the other controller\'s parent entry (no lost update)', async () => {
  const st = statuses().filter((s) => s.kind === 'HTTPRoute');
  const cached = { ...route, metadata: { ...route.metadata, resourceVersion: '1' } } as UserObject;
  const stored = new Map([['HTTPRoute/shop/echo', structuredClone(cached)]]);
  const api = fakeStatusApi(stored);
  const foreign = { parentRef: { name: 'gw', kind: 'Gateway' }, controllerName: 'example.com/gateway', conditions: [] };
  api.sneak = (o) => {
    o.status = { parents: [foreign] } as HTTPRouteStatus;
  };
  const res = await applyStatusWrites(planStatusWrites(st, lookupFrom([cached])), api, { isLeader: () => true, log: silentOperatorLogger });
  assert.equal(res.conflicts, 1);
  assert.equal(res.written, 1);
  const parents = (stored.get('HTTPRoute/shop/echo')!.status as HTTPRouteStatus).parents!;
  assert.deepEqual(parents.map((p) => p.controllerName), ['example.com/gateway', CONTROLLER_NAME]);
});

test('a 409 on an object whose spec moved on is left to the next reconcile', async () => {
  const st = statuses().filter((s) => s.kind === 'MeshTLSPolicy');
  const cached = { ...mtls, metadata: { ...mtls.metadata, resourceVersion: '1' } } as unknown as UserObject;
  const stored = new Map([['MeshTLSPolicy/shop/default', structuredClone(cached)]]);
  const api = fakeStatusApi(stored);
  api.sneak = (o) => {
    o.metadata!.generation = 2;
  };
  const res = await applyStatusWrites(planStatusWrites(st, lookupFrom([cached])), api, { isLeader: () => true, log: silentOperatorLogger });
  assert.equal(res.written, 0);
  assert.equal(res.skipped, 1);
  assert.deepEqual(api.puts, []);
});

test('no status is written once the leader fence is closed', async () => {
  const st = statuses();
  const cached = [route, mtls].map((o) => ({ ...o, metadata: { ...o.metadata, resourceVersion: '1' } })) as unknown as UserObject[];
  const api = fakeStatusApi(new Map(cached.map((o) => [`${o.kind}/${o.metadata!.namespace}/${o.metadata!.name}`, structuredClone(o)])));
  const res = await applyStatusWrites(planStatusWrites(st, lookupFrom(cached)), api, { isLeader: () => false, log: silentOperatorLogger });
  assert.equal(res.aborted, true);
  assert.deepEqual(api.puts, []);
});
