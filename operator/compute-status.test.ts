/** Tests for computeStatuses: Programmed against written NodeStates, transition times, foreign parents. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HTTPRouteStatus, PolicyStatus } from '../crds/index.ts';
import { compileMesh } from './compile-mesh.ts';
import { computeNodeState } from './compute-node-state.ts';
import { computeStatuses } from './compute-status.ts';
import { buildSnapshot } from './snapshot.ts';
import { httpRoute, node, pod, service } from './fixtures.test-helpers.ts';

const objects = () => [
  node('n1'), node('n2'),
  pod('shop', 'web', 'n1', { app: 'web' }, '10.0.1.1'),
  pod('shop', 'echo', 'n2', { app: 'echo' }, '10.0.2.1'),
  service('shop', 'echo', { app: 'echo' }, '10.96.0.1'),
];

test('Programmed waits for every node that needs the route', () => {
  const route = httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80 }] }]);
  const snap = buildSnapshot([...objects(), route]);
  const compiled = compileMesh(snap);
  const n1 = computeNodeState(snap, 'n1', compiled);
  const n2 = computeNodeState(snap, 'n2', compiled);
  const cond = (written: typeof n1) => {
    const [s] = computeStatuses(snap, compiled, written, { now: '2026-11-21T00:00:00Z' });
    return (s!.status as HTTPRouteStatus).parents![0]!.conditions!.find((c) => c.type === 'Programmed')!;
  };
  assert.deepEqual([cond([]).status, cond([]).reason], ['False', 'Pending']);
  assert.match(cond(n1).message, /1 of 2 node\(s\): n2/);
  assert.deepEqual([cond([...n1, ...n2]).status, cond([...n1, ...n2]).observedGeneration], ['True', 1]);
  // A stale NodeState (an older generation of the route) does not count.
  const v2 = httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'echo', port: 80, weight: 3 }] }], 2);
  const snap2 = buildSnapshot([...objects(), v2]);
  const [s2] = computeStatuses(snap2, compileMesh(snap2), [...n1, ...n2]);
  assert.equal((s2!.status as HTTPRouteStatus).parents![0]!.conditions!.find((c) => c.type === 'Programmed')!.status, 'False');
});

test('lastTransitionTime moves only when a status changes; other controllers keep their parents', () => {
  const route = httpRoute('shop', 'echo', 'echo', [{ backendRefs: [{ name: 'missing', port: 80 }] }]);
  route.status = {
    parents: [
      { parentRef: { name: 'gw' }, controllerName: 'example.com/gateway', conditions: [] },
      {
        parentRef: { group: '', kind: 'Service', name: 'echo', port: 80 },
        controllerName: 'nodemesh.io/operator',
        conditions: [
          { type: 'Accepted', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z', reason: 'Accepted', message: 'x', observedGeneration: 1 },
          { type: 'ResolvedRefs', status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z', reason: 'ResolvedRefs', message: 'x', observedGeneration: 1 },
        ],
      },
    ],
  };
  const snap = buildSnapshot([...objects(), route]);
  const [s] = computeStatuses(snap, compileMesh(snap), [], { now: '2026-11-21T00:00:00Z' });
  const parents = (s!.status as HTTPRouteStatus).parents!;
  assert.equal(parents[0]!.controllerName, 'example.com/gateway');
  const c = Object.fromEntries(parents[1]!.conditions!.map((x) => [x.type, x]));
  assert.equal(c['Accepted']!.lastTransitionTime, '2026-01-01T00:00:00Z');
  assert.equal(c['ResolvedRefs']!.lastTransitionTime, '2026-11-21T00:00:00Z');
  assert.equal(c['ResolvedRefs']!.message, 'spec.rules[0].backendRefs[0]: Service "shop/missing" not found');
});

test('policies get observedGeneration and CamelCase reasons', () => {
  const mtls = { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'd', namespace: 'shop', uid: 'm', generation: 4 }, spec: { mode: 'STRICT' } };
  const snap = buildSnapshot([...objects(), mtls]);
  const compiled = compileMesh(snap);
  const written = ['n1', 'n2'].flatMap((n) => computeNodeState(snap, n, compiled));
  const [s] = computeStatuses(snap, compiled, written);
  const st = s!.status as PolicyStatus;
  assert.equal(st.observedGeneration, 4);
  for (const c of st.conditions!) {
    assert.match(c.reason, /^[A-Z][A-Za-z]+$/);
    assert.equal(c.observedGeneration, 4);
    assert.equal(c.status, 'True');
  }
});
