/** JSON patch, JSON merge patch and strategic merge patch, including patches captured from kubectl 1.32 apply. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusError } from './errors.ts';
import type { JsonObject } from './json.ts';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, createMergePatch, patchMetaFor } from './patch.ts';

describe('JSON patch', () => {
  it('add, remove, replace, move, copy, test, array append and escaping', () => {
    const doc: JsonObject = { a: { b: 1 }, list: [1, 2], 'x/y': 'slash' };
    const out = applyJsonPatch(doc, [
      { op: 'add', path: '/a/c', value: 2 },
      { op: 'add', path: '/list/-', value: 3 },
      { op: 'add', path: '/list/0', value: 0 },
      { op: 'replace', path: '/a/b', value: 10 },
      { op: 'remove', path: '/x~1y' },
      { op: 'copy', from: '/a', path: '/copy' },
      { op: 'move', from: '/copy/c', path: '/moved' },
      { op: 'test', path: '/moved', value: 2 },
    ]);
    assert.deepEqual(out, { a: { b: 10, c: 2 }, list: [0, 1, 2, 3], copy: { b: 10 }, moved: 2 });
    assert.deepEqual(doc, { a: { b: 1 }, list: [1, 2], 'x/y': 'slash' }, 'input untouched');
  });
  it('fails a failed test and a missing path with 422, malformed ops with 400', () => {
    assert.throws(() => applyJsonPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }]), (e: StatusError) => e.code === 422);
    assert.throws(() => applyJsonPatch({ a: 1 }, [{ op: 'remove', path: '/b' }]), (e: StatusError) => e.code === 422);
    assert.throws(() => applyJsonPatch({ a: 1 }, [{ op: 'jump', path: '/a' }]), (e: StatusError) => e.code === 400);
    assert.throws(() => applyJsonPatch({ a: 1 }, { op: 'add' }), (e: StatusError) => e.code === 400);
  });
});

describe('JSON merge patch', () => {
  it('merges objects, deletes with null, replaces lists', () => {
    const out = applyMergePatch({ a: { b: 1, c: 2 }, l: [1, 2], keep: true }, { a: { b: null, d: 3 }, l: [9] });
    assert.deepEqual(out, { a: { c: 2, d: 3 }, l: [9], keep: true });
  });
  it('createMergePatch round-trips', () => {
    const from = { a: 1, b: { c: 2, d: 3 } };
    const to = { b: { c: 5 }, e: [1] };
    assert.deepEqual(applyMergePatch(from, createMergePatch(from, to)), to);
  });
});

describe('strategic merge patch', () => {
  const deploy = (): JsonObject => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'echo', labels: { app: 'echo', tier: 'web' }, finalizers: ['a', 'b'] },
    spec: {
      replicas: 3,
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' } },
      template: {
        metadata: { labels: { app: 'echo', version: 'v1' } },
        spec: {
          containers: [
            {
              name: 'echo',
              image: 'nodemesh/echo',
              env: [
                { name: 'A', value: '1' },
                { name: 'B', value: '2' },
              ],
              ports: [{ containerPort: 8080, protocol: 'TCP' }],
            },
            { name: 'sidecar', image: 'busybox' },
          ],
          volumes: [{ name: 'v', emptyDir: {} }],
        },
      },
    },
  });

  it('applies the patch kubectl 1.32 sends when an apply changes and removes fields', () => {
    // Captured from `kubectl apply -v=8` (second apply of an edited Deployment).
    const patch = {
      metadata: { labels: { tier: null } },
      spec: {
        replicas: 2,
        strategy: { $retainKeys: ['type'], type: 'Recreate' },
        template: {
          metadata: { labels: { version: 'v2' } },
          spec: {
            '$setElementOrder/containers': [{ name: 'echo' }],
            containers: [
              {
                '$setElementOrder/env': [{ name: 'B' }],
                env: [
                  { name: 'B', value: '3' },
                  { $patch: 'delete', name: 'A' },
                ],
                image: 'nodemesh/echo:2',
                name: 'echo',
              },
              { $patch: 'delete', name: 'sidecar' },
            ],
          },
        },
      },
    };
    const out = applyStrategicMergePatch(deploy(), patch, patchMetaFor('Deployment'));
    const spec = out['spec'] as JsonObject;
    assert.deepEqual((out['metadata'] as JsonObject)['labels'], { app: 'echo' });
    assert.equal(spec['replicas'], 2);
    assert.deepEqual(spec['strategy'], { type: 'Recreate' }, '$retainKeys drops rollingUpdate');
    const tpl = spec['template'] as JsonObject;
    assert.deepEqual((tpl['metadata'] as JsonObject)['labels'], { app: 'echo', version: 'v2' });
    const podSpec = tpl['spec'] as JsonObject;
    assert.deepEqual(podSpec['containers'], [{ name: 'echo', image: 'nodemesh/echo:2', env: [{ name: 'B', value: '3' }], ports: [{ containerPort: 8080, protocol: 'TCP' }] }]);
    assert.deepEqual(podSpec['volumes'], [{ name: 'v', emptyDir: {} }], 'untouched fields stay');
  });

  it('applies the Service patch kubectl sends to remove a port (merge key `port`)', () => {
    const svc: JsonObject = {
      metadata: { name: 'echo' },
      spec: {
        ports: [
          { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 },
          { name: 'metrics', port: 9090, protocol: 'TCP', targetPort: 9090 },
        ],
        clusterIP: '10.96.0.2',
      },
    };
    const out = applyStrategicMergePatch(svc, { spec: { '$setElementOrder/ports': [{ port: 80 }], ports: [{ $patch: 'delete', port: 9090 }] } }, patchMetaFor('Service'));
    assert.deepEqual((out['spec'] as JsonObject)['ports'], [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }]);
    assert.equal((out['spec'] as JsonObject)['clusterIP'], '10.96.0.2');
  });

  it('merges lists by key, adds new items, orders by $setElementOrder', () => {
    const out = applyStrategicMergePatch(
      deploy(),
      {
        spec: {
          template: {
            spec: {
              '$setElementOrder/containers': [{ name: 'new' }, { name: 'echo' }, { name: 'sidecar' }],
              containers: [
                { name: 'new', image: 'n' },
                { name: 'echo', ports: [{ containerPort: 9000 }] },
              ],
            },
          },
        },
      },
      patchMetaFor('Deployment'),
    );
    const cs = ((out['spec'] as JsonObject)['template'] as JsonObject)['spec'] as JsonObject;
    const list = cs['containers'] as JsonObject[];
    assert.deepEqual(
      list.map((c) => c['name']),
      ['new', 'echo', 'sidecar'],
    );
    assert.deepEqual(list[1]!['ports'], [{ containerPort: 8080, protocol: 'TCP' }, { containerPort: 9000 }], 'ports merged by containerPort');
  });

  it('$patch: replace on a list and on a map, $deleteFromPrimitiveList, primitive set merge', () => {
    const meta = patchMetaFor('Deployment');
    const r1 = applyStrategicMergePatch(deploy(), { spec: { template: { spec: { containers: [{ $patch: 'replace' }, { name: 'only', image: 'o' }] } } } }, meta);
    assert.deepEqual(((r1['spec'] as JsonObject)['template'] as JsonObject)['spec'] && (((r1['spec'] as JsonObject)['template'] as JsonObject)['spec'] as JsonObject)['containers'], [{ name: 'only', image: 'o' }]);
    const r2 = applyStrategicMergePatch(deploy(), { spec: { strategy: { $patch: 'replace', type: 'Recreate' } } }, meta);
    assert.deepEqual((r2['spec'] as JsonObject)['strategy'], { type: 'Recreate' });
    const r3 = applyStrategicMergePatch(deploy(), { metadata: { '$deleteFromPrimitiveList/finalizers': ['a'], finalizers: ['c'] } }, meta);
    assert.deepEqual((r3['metadata'] as JsonObject)['finalizers'], ['b', 'c']);
  });

  it('replaces lists without a merge strategy and deletes keys set to null', () => {
    const out = applyStrategicMergePatch({ spec: { tolerations: [{ key: 'a' }], x: 1 } }, { spec: { tolerations: [{ key: 'b' }], x: null } }, patchMetaFor('Pod'));
    assert.deepEqual(out, { spec: { tolerations: [{ key: 'b' }] } });
  });
});
