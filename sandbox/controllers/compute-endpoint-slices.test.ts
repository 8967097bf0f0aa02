import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Pod } from '@kubernetes/client-node';
import { computeEndpointSlices, findPodPort, type EndpointSliceChanges } from './compute-endpoint-slices.ts';
import { testNode, testPod, testService } from './testing.ts';

const svc = testService('web', { labels: { team: 'a' } });

function pods(n: number, o: { ready?: boolean; from?: number } = {}): V1Pod[] {
  return Array.from({ length: n }, (_, i) => {
    const k = (o.from ?? 0) + i;
    return testPod(`web-${String(k).padStart(4, '0')}`, { labels: { app: 'web' }, ip: `10.0.${Math.floor(k / 250)}.${(k % 250) + 1}`, node: 'n1', ready: o.ready ?? true });
  });
}

/** Gives created slices names, as the API server would, so they can be fed back as existing. */
function materialise(changes: EndpointSliceChanges, existing: V1EndpointSlice[]): V1EndpointSlice[] {
  let n = existing.length;
  const gone = new Set(changes.delete.map((s) => s.metadata?.name));
  const updated = new Map(changes.update.map((s) => [s.metadata?.name, s]));
  const out = existing.filter((s) => !gone.has(s.metadata?.name)).map((s) => updated.get(s.metadata?.name) ?? s);
  for (const c of changes.create) out.push({ ...c, metadata: { ...c.metadata, name: `${c.metadata?.generateName}${++n}` } });
  return out;
}

const count = (c: EndpointSliceChanges): [number, number, number] => [c.create.length, c.update.length, c.delete.length];

describe('computeEndpointSlices', () => {
  it('creates one slice with endpoints, ports, labels and the owner', () => {
    const c = computeEndpointSlices(svc, pods(2), []);
    assert.deepEqual(count(c), [1, 0, 0]);
    const s = c.create[0] as V1EndpointSlice;
    assert.equal(s.metadata?.generateName, 'web-');
    assert.deepEqual(s.metadata?.labels, { team: 'a', 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' });
    assert.deepEqual(s.metadata?.ownerReferences, [{ apiVersion: 'v1', kind: 'Service', name: 'web', uid: 'svc-web', controller: true, blockOwnerDeletion: true }]);
    assert.equal(s.addressType, 'IPv4');
    assert.deepEqual(s.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
    assert.deepEqual(s.endpoints[0], {
      addresses: ['10.0.0.1'],
      conditions: { ready: true, serving: true, terminating: false },
      targetRef: { kind: 'Pod', namespace: 'default', name: 'web-0000', uid: 'pod-web-0000' },
      nodeName: 'n1',
    });
  });

  it('skips pods without an address, of other namespaces, not matching, or finished', () => {
    const list = [
      testPod('noip', { labels: { app: 'web' }, ready: true }),
      testPod('other-ns', { ns: 'x', labels: { app: 'web' }, ip: '10.1.0.1', ready: true }),
      testPod('other-app', { labels: { app: 'db' }, ip: '10.1.0.2', ready: true }),
      testPod('done', { labels: { app: 'web' }, ip: '10.1.0.3', phase: 'Succeeded' }),
      testPod('ok', { labels: { app: 'web' }, ip: '10.1.0.4', ready: false }),
    ];
    const c = computeEndpointSlices(svc, list, []);
    assert.deepEqual(c.create[0]?.endpoints.map((e) => e.addresses[0]), ['10.1.0.4']);
    assert.deepEqual(c.create[0]?.endpoints[0]?.conditions, { ready: false, serving: false, terminating: false });
  });

  it('marks terminating pods: not ready, serving while Ready, terminating', () => {
    const t = testPod('t', { labels: { app: 'web' }, ip: '10.0.9.9', ready: true, terminating: true });
    const c = computeEndpointSlices(svc, [t], []);
    assert.deepEqual(c.create[0]?.endpoints[0]?.conditions, { ready: false, serving: true, terminating: true });
  });

  it('publishes not-ready addresses as ready when the Service asks', () => {
    const s = testService('web', { publishNotReady: true });
    const c = computeEndpointSlices(s, [testPod('p', { labels: { app: 'web' }, ip: '10.0.0.7', ready: false })], []);
    assert.deepEqual(c.create[0]?.endpoints[0]?.conditions, { ready: true, serving: true, terminating: false });
  });

  it('resolves named ports per pod and splits pods with different numbers into different slices', () => {
    const s = testService('web', { ports: [{ name: 'http', port: 80, targetPort: 'web', protocol: 'TCP' }, { name: 'metrics', port: 9090, targetPort: 9090 }] });
    const a = testPod('a', { labels: { app: 'web' }, ip: '10.0.0.1', ready: true, ports: [{ name: 'web', containerPort: 8080 }] });
    const b = testPod('b', { labels: { app: 'web' }, ip: '10.0.0.2', ready: true, ports: [{ name: 'web', containerPort: 8081 }] });
    const c = testPod('c', { labels: { app: 'web' }, ip: '10.0.0.3', ready: true, ports: [{ name: 'other', containerPort: 1 }] });
    assert.equal(findPodPort(a, { port: 80, targetPort: 'web' }), 8080);
    assert.equal(findPodPort(a, { port: 80, targetPort: 'web', protocol: 'UDP' }), undefined);
    assert.equal(findPodPort(a, { port: 80 }), 80);
    const out = computeEndpointSlices(s, [a, b, c], []);
    const byPorts = Object.fromEntries(out.create.map((sl) => [JSON.stringify(sl.ports?.map((p) => p.port)), sl.endpoints.map((e) => e.targetRef?.name)]));
    assert.deepEqual(byPorts, { '[8080,9090]': ['a'], '[8081,9090]': ['b'], '[9090]': ['c'] });
  });

  it('packs at most 100 endpoints per slice and keeps churn minimal as pods come and go', () => {
    const all = pods(250);
    const first = computeEndpointSlices(svc, all, []);
    assert.deepEqual(first.create.map((s) => s.endpoints.length), [100, 100, 50]);
    let existing = materialise(first, []);
    assert.deepEqual(count(computeEndpointSlices(svc, all, existing)), [0, 0, 0], 'no change, no write');

    // Ten pods of the first slice go: only that slice is written.
    const fewer = all.filter((_, i) => i < 5 || i >= 15);
    const c1 = computeEndpointSlices(svc, fewer, existing);
    assert.deepEqual(count(c1), [0, 1, 0]);
    assert.equal(c1.update[0]?.metadata?.name, existing[0]?.metadata?.name);
    assert.equal(c1.update[0]?.endpoints.length, 90);
    existing = materialise(c1, existing);

    // New pods fill the slice being written anyway rather than touching another.
    const more = [...fewer, ...pods(3, { from: 500 })];
    const c2 = computeEndpointSlices(svc, more, existing);
    assert.deepEqual(count(c2), [0, 1, 0]);
    assert.equal(c2.update[0]?.endpoints.length, 93);
    existing = materialise(c2, existing);

    // One pod turning unready rewrites its slice alone.
    const flipped = more.map((p) => (p.metadata?.name === 'web-0200' ? testPod('web-0200', { labels: { app: 'web' }, ip: '10.0.0.201', node: 'n1', ready: false }) : p));
    const c3 = computeEndpointSlices(svc, flipped, existing);
    assert.deepEqual(count(c3), [0, 1, 0]);
    assert.equal(c3.update[0]?.metadata?.name, existing[2]?.metadata?.name);
    assert.equal(c3.update[0]?.endpoints.find((e) => e.targetRef?.name === 'web-0200')?.conditions?.ready, false);

    // 243 -> 291 endpoints: the new ones fill free room first, a new slice only for the rest.
    const c4 = computeEndpointSlices(svc, [...more, ...pods(48, { from: 600 })], existing);
    const sizes = materialise(c4, existing).map((s) => s.endpoints.length);
    assert.ok(sizes.every((n) => n <= 100), `a slice over 100: ${sizes}`);
    assert.equal(sizes.reduce((a, b) => a + b, 0), 291);
    assert.equal(sizes.length, 3, "291 endpoints still fit in three slices");
  });

  it('keeps a placeholder slice when there are no endpoints, and reuses slices instead of delete+create', () => {
    const empty = computeEndpointSlices(svc, [], []);
    assert.deepEqual(count(empty), [1, 0, 0]);
    assert.deepEqual([empty.create[0]?.endpoints, empty.create[0]?.ports], [[], []]);
    let existing = materialise(empty, []);
    assert.deepEqual(count(computeEndpointSlices(svc, [], existing)), [0, 0, 0]);

    const up = computeEndpointSlices(svc, pods(1), existing);
    assert.deepEqual(count(up), [0, 1, 0], 'the placeholder becomes the first real slice');
    existing = materialise(up, existing);

    const replaced = computeEndpointSlices(svc, pods(1, { from: 7 }), existing);
    assert.deepEqual(count(replaced), [0, 1, 0], 'all endpoints replaced: same slice, new content');
    existing = materialise(replaced, existing);

    const drained = computeEndpointSlices(svc, [], existing);
    assert.deepEqual(count(drained), [0, 1, 0], 'back to a placeholder in place');
    assert.deepEqual(drained.update[0]?.endpoints, []);
  });

  it('deletes its slices when the Service loses its selector, and leaves other managers alone', () => {
    const existing = materialise(computeEndpointSlices(svc, pods(2), []), []);
    const foreign: V1EndpointSlice = { metadata: { name: 'web-manual', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [] };
    const noSelector = testService('web', { selector: undefined });
    const c = computeEndpointSlices(noSelector, pods(2), [...existing, foreign]);
    assert.deepEqual(c.delete.map((s) => s.metadata?.name), [existing[0]?.metadata?.name]);
    assert.deepEqual(count(c), [0, 0, 1]);
  });

  it('replaces slices of an earlier Service with the same name', () => {
    const existing = materialise(computeEndpointSlices(svc, pods(2), []), []);
    const reborn = { ...svc, metadata: { ...svc.metadata, uid: 'svc-web-2' } };
    const c = computeEndpointSlices(reborn, pods(2), existing);
    assert.deepEqual(count(c), [1, 0, 1]);
    assert.equal(c.create[0]?.metadata?.ownerReferences?.[0]?.uid, 'svc-web-2');
  });

  it('adds zones from node labels, hostnames for subdomains, and the headless label', () => {
    const headless = testService('db', { selector: { app: 'db' }, clusterIP: 'None' });
    const p = testPod('db-0', { labels: { app: 'db' }, ip: '10.0.0.5', node: 'n1', ready: true });
    if (p.spec) {
      p.spec.hostname = 'db-0';
      p.spec.subdomain = 'db';
    }
    const nodes = new Map([['n1', testNode('n1', { labels: { 'topology.kubernetes.io/zone': 'z1' } })]]);
    const c = computeEndpointSlices(headless, [p], [], { nodes });
    const ep = c.create[0]?.endpoints[0];
    assert.equal(ep?.zone, 'z1');
    assert.equal(ep?.hostname, 'db-0');
    assert.equal(c.create[0]?.metadata?.labels?.['service.kubernetes.io/headless'], '');
  });

  it('rewrites labels in place when the Service labels change', () => {
    const existing = materialise(computeEndpointSlices(svc, pods(2), []), []);
    const relabelled = testService('web', { labels: { team: 'b' } });
    const c = computeEndpointSlices(relabelled, pods(2), existing);
    assert.deepEqual(count(c), [0, 1, 0]);
    assert.equal(c.update[0]?.metadata?.labels?.['team'], 'b');
  });
});
