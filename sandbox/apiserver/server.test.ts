/** REST semantics over HTTP: CRUD, conflicts, generation, status, finalizers, watches, allocation, CRDs. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { TestServer } from './testing.ts';
import { startTestServer } from './testing.ts';

const CM = '/api/v1/namespaces/default/configmaps';
const SVC = '/api/v1/namespaces/default/services';
const DEPLOY = '/apis/apps/v1/namespaces/default/deployments';

function deployment(name: string, replicas = 1): object {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels: { app: name } },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'c', image: 'nodemesh/echo' }] } },
    },
  };
}

const TEST_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.test.nodemesh.io' },
  spec: {
    group: 'test.nodemesh.io',
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget', shortNames: ['wd'] },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {}, scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas' } },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['size'],
                properties: {
                  size: { type: 'string', enum: ['S', 'M', 'L'] },
                  replicas: { type: 'integer', minimum: 0, default: 1 },
                  rules: { type: 'array', items: { type: 'object', properties: { timeouts: { type: 'object', properties: { request: { type: 'string', pattern: '^[0-9]+s$' } } } } } },
                },
              },
              status: { type: 'object', properties: { replicas: { type: 'integer' }, phase: { type: 'string' } } },
            },
          },
        },
      },
    ],
  },
};

describe('apiserver REST semantics', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ watchHistoryWindow: 50, bookmarkIntervalSeconds: 0.2 });
  });
  after(async () => {
    await t.close();
  });

  it('rejects requests without the token and serves health without it', async () => {
    const r = await fetch(`${t.server.url}/api/v1/namespaces`);
    assert.equal(r.status, 401);
    const body = (await r.json()) as { kind: string; code: number };
    assert.equal(body.kind, 'Status');
    assert.equal((await fetch(`${t.server.url}/healthz`)).status, 200);
    const v = (await (await fetch(`${t.server.url}/version`)).json()) as { gitVersion: string };
    assert.equal(v.gitVersion, 'v1.32.0-nodemesh');
  });

  it('bootstraps namespaces, default service accounts and the kubernetes Service', async () => {
    const ns = await t.request('GET', '/api/v1/namespaces');
    const names = ns.body.items.map((i: { metadata: { name: string } }) => i.metadata.name);
    for (const n of ['default', 'kube-system', 'kube-public', 'nodemesh-system']) assert.ok(names.includes(n), n);
    const sa = await t.request('GET', '/api/v1/namespaces/nodemesh-system/serviceaccounts/default');
    assert.equal(sa.status, 200);
    const k = await t.request('GET', `${SVC}/kubernetes`);
    assert.equal(k.body.spec.clusterIP, '10.96.0.1');
  });

  it('creates with uid, creationTimestamp, generateName; 409 AlreadyExists; 404 for a missing namespace', async () => {
    const c = await t.request('POST', CM, { metadata: { name: 'a' }, data: { k: 'v' } });
    assert.equal(c.status, 201);
    assert.match(c.body.metadata.uid, /^[0-9a-f-]{36}$/);
    assert.match(c.body.metadata.creationTimestamp, /Z$/);
    assert.match(c.body.metadata.resourceVersion, /^\d+$/);
    const dup = await t.request('POST', CM, { metadata: { name: 'a' } });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.reason, 'AlreadyExists');
    assert.equal(dup.body.message, 'configmaps "a" already exists');
    const g = await t.request('POST', CM, { metadata: { generateName: 'gen-' } });
    assert.match(g.body.metadata.name, /^gen-[a-z0-9]{5}$/);
    const missing = await t.request('POST', '/api/v1/namespaces/nope/configmaps', { metadata: { name: 'x' } });
    assert.equal(missing.status, 404);
    assert.equal(missing.body.message, 'namespaces "nope" not found');
  });

  it('answers Status errors with the right codes for bad input', async () => {
    assert.equal((await t.request('POST', CM, '{not json', { 'content-type': 'application/json' })).status, 400);
    assert.equal((await t.request('GET', `${CM}/zzz`)).status, 404);
    assert.equal((await t.request('GET', '/api/v1/nothings')).status, 404);
    assert.equal((await t.request('POST', `${CM}/a`, {})).status, 405);
    const p = await t.request('PATCH', `${CM}/a`, '{}', { 'content-type': 'text/plain' });
    assert.equal(p.status, 415);
    assert.equal(p.body.kind, 'Status');
    const bad = await t.request('POST', CM, { metadata: { name: 'Not_Valid' } });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.details.causes[0].field, 'metadata.name');
    const badSel = await t.request('GET', `${CM}?labelSelector=${encodeURIComponent('a in (')}`);
    assert.equal(badSel.status, 400);
    const badField = await t.request('GET', `${CM}?fieldSelector=spec.nope%3Dx`);
    assert.equal(badField.status, 400);
    const yaml = await t.request('POST', CM, 'metadata:\n  name: from-yaml\ndata:\n  a: b\n', { 'content-type': 'application/yaml' });
    assert.equal(yaml.status, 201);
  });

  it('409 Conflict on an update with a stale resourceVersion; unconditional update succeeds', async () => {
    const c = await t.request('POST', CM, { metadata: { name: 'conf' }, data: { v: '1' } });
    const stale = c.body.metadata.resourceVersion;
    const u1 = await t.request('PUT', `${CM}/conf`, { ...c.body, data: { v: '2' } });
    assert.equal(u1.status, 200);
    assert.ok(Number(u1.body.metadata.resourceVersion) > Number(stale));
    const u2 = await t.request('PUT', `${CM}/conf`, { ...c.body, data: { v: '3' } });
    assert.equal(u2.status, 409);
    assert.equal(u2.body.reason, 'Conflict');
    assert.match(u2.body.message, /the object has been modified/);
    const u3 = await t.request('PUT', `${CM}/conf`, { metadata: { name: 'conf' }, data: { v: '4' } });
    assert.equal(u3.status, 200);
    assert.equal(u3.body.data.v, '4');
    const noop = await t.request('PUT', `${CM}/conf`, u3.body);
    assert.equal(noop.body.metadata.resourceVersion, u3.body.metadata.resourceVersion, 'a no-op update does not bump the resourceVersion');
  });

  it('bumps generation on spec changes only; status goes through /status only', async () => {
    const d = await t.request('POST', DEPLOY, deployment('gen'));
    assert.equal(d.body.metadata.generation, 1);
    const lab = await t.request('PATCH', `${DEPLOY}/gen`, { metadata: { labels: { x: 'y' } } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(lab.body.metadata.generation, 1, 'metadata change');
    const st = await t.request('PATCH', `${DEPLOY}/gen/status`, { status: { replicas: 1, readyReplicas: 1 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(st.status, 200);
    assert.equal(st.body.metadata.generation, 1, 'status change');
    assert.equal(st.body.status.readyReplicas, 1);
    const ignored = await t.request('PATCH', `${DEPLOY}/gen`, { status: { readyReplicas: 7 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(ignored.body.status.readyReplicas, 1, 'main endpoint ignores status');
    const specChange = await t.request('PATCH', `${DEPLOY}/gen`, { spec: { replicas: 3 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(specChange.body.metadata.generation, 2);
    const specViaStatus = await t.request('PATCH', `${DEPLOY}/gen/status`, { spec: { replicas: 9 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(specViaStatus.body.spec.replicas, 3, '/status ignores spec');
    const scale = await t.request('GET', `${DEPLOY}/gen/scale`);
    assert.equal(scale.body.kind, 'Scale');
    assert.equal(scale.body.spec.replicas, 3);
    assert.equal(scale.body.status.selector, 'app=gen');
    const scaled = await t.request('PATCH', `${DEPLOY}/gen/scale`, { spec: { replicas: 5 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(scaled.body.spec.replicas, 5);
    assert.equal((await t.request('GET', `${DEPLOY}/gen`)).body.metadata.generation, 3);
  });

  it('applies merge, JSON and strategic merge patches', async () => {
    await t.request('POST', DEPLOY, {
      ...deployment('p'),
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'p' } },
        template: {
          metadata: { labels: { app: 'p' } },
          spec: {
            containers: [
              { name: 'a', image: 'x', env: [{ name: 'E1', value: '1' }, { name: 'E2', value: '2' }] },
              { name: 'b', image: 'y' },
            ],
          },
        },
      },
    });
    const smp = {
      spec: {
        template: {
          spec: {
            $setElementOrder_containers: undefined,
            containers: [{ name: 'a', image: 'x2', env: [{ name: 'E2', $patch: 'delete' }] }, { name: 'b', $patch: 'delete' }],
          },
        },
      },
    };
    const r = await t.request('PATCH', `${DEPLOY}/p`, smp, { 'content-type': 'application/strategic-merge-patch+json' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const cs = r.body.spec.template.spec.containers;
    assert.equal(cs.length, 1);
    assert.equal(cs[0].image, 'x2');
    assert.deepEqual(cs[0].env, [{ name: 'E1', value: '1' }]);
    const j = await t.request('PATCH', `${DEPLOY}/p`, [{ op: 'add', path: '/metadata/labels/j', value: 'k' }, { op: 'test', path: '/spec/replicas', value: 1 }], { 'content-type': 'application/json-patch+json' });
    assert.equal(j.body.metadata.labels.j, 'k');
    const jf = await t.request('PATCH', `${DEPLOY}/p`, [{ op: 'test', path: '/spec/replicas', value: 9 }], { 'content-type': 'application/json-patch+json' });
    assert.equal(jf.status, 422);
    const m = await t.request('PATCH', `${DEPLOY}/p`, { metadata: { labels: { j: null } } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(m.body.metadata.labels.j, undefined);
    const stale = await t.request('PATCH', `${DEPLOY}/p`, { metadata: { resourceVersion: '1' } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(stale.status, 409);
  });

  it('label selectors (equality and set based) and field selectors', async () => {
    const mk = (name: string, labels: Record<string, string>) => t.request('POST', '/api/v1/namespaces/kube-public/configmaps', { metadata: { name, labels } });
    await mk('s1', { env: 'prod', tier: 'web' });
    await mk('s2', { env: 'dev', tier: 'web' });
    await mk('s3', { env: 'prod' });
    const q = async (sel: string): Promise<string[]> =>
      (await t.request('GET', `/api/v1/namespaces/kube-public/configmaps?labelSelector=${encodeURIComponent(sel)}`)).body.items.map((i: { metadata: { name: string } }) => i.metadata.name);
    assert.deepEqual(await q('env=prod'), ['s1', 's3']);
    assert.deepEqual(await q('env==prod,tier=web'), ['s1']);
    assert.deepEqual(await q('env!=prod'), ['s2']);
    assert.deepEqual(await q('env in (dev,qa)'), ['s2']);
    assert.deepEqual(await q('env notin (dev)'), ['s1', 's3']);
    assert.deepEqual(await q('tier'), ['s1', 's2']);
    assert.deepEqual(await q('!tier'), ['s3']);
    const f = await t.request('GET', `/api/v1/configmaps?fieldSelector=${encodeURIComponent('metadata.namespace=kube-public,metadata.name!=s1')}`);
    assert.deepEqual(
      f.body.items.map((i: { metadata: { name: string } }) => i.metadata.name),
      ['s2', 's3'],
    );
    await t.request('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'pn' }, spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'i' }] } });
    await t.request('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'po' }, spec: { nodeName: 'node-2', containers: [{ name: 'c', image: 'i' }] } });
    const pods = await t.request('GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1,status.phase%3DPending');
    assert.deepEqual(
      pods.body.items.map((i: { metadata: { name: string } }) => i.metadata.name),
      ['pn'],
    );
    assert.equal(pods.body.items[0].spec.restartPolicy, 'Always');
    assert.equal(pods.body.items[0].spec.serviceAccountName, 'default');
  });

  it('paginates with limit and continue', async () => {
    for (let i = 0; i < 7; i++) await t.request('POST', '/api/v1/namespaces/kube-system/configmaps', { metadata: { name: `page-${i}` } });
    const seen: string[] = [];
    let cont: string | undefined;
    let pages = 0;
    do {
      const r = await t.request('GET', `/api/v1/namespaces/kube-system/configmaps?limit=3${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
      seen.push(...r.body.items.map((i: { metadata: { name: string } }) => i.metadata.name));
      cont = r.body.metadata.continue;
      pages++;
    } while (cont);
    assert.equal(pages, 3);
    assert.deepEqual(
      seen,
      Array.from({ length: 7 }, (_, i) => `page-${i}`),
    );
    assert.equal((await t.request('GET', '/api/v1/namespaces/kube-system/configmaps?limit=3&continue=garbage')).status, 400);
  });

  it('allocates ClusterIPs and NodePorts, honours requests, rejects duplicates and out-of-range with 422', async () => {
    const a = await t.request('POST', SVC, { metadata: { name: 'alloc-a' }, spec: { ports: [{ port: 80 }] } });
    assert.equal(a.status, 201);
    assert.match(a.body.spec.clusterIP, /^10\.96\.\d+\.\d+$/);
    assert.notEqual(a.body.spec.clusterIP, '10.96.0.1');
    assert.deepEqual(a.body.spec.clusterIPs, [a.body.spec.clusterIP]);
    assert.equal(a.body.spec.type, 'ClusterIP');
    assert.equal(a.body.spec.sessionAffinity, 'None');
    assert.equal(a.body.spec.ports[0].protocol, 'TCP');
    assert.equal(a.body.spec.ports[0].targetPort, 80);
    assert.deepEqual(a.body.spec.ipFamilies, ['IPv4']);
    const req = await t.request('POST', SVC, { metadata: { name: 'alloc-b' }, spec: { clusterIP: '10.96.7.7', ports: [{ port: 80 }] } });
    assert.equal(req.body.spec.clusterIP, '10.96.7.7');
    const dup = await t.request('POST', SVC, { metadata: { name: 'alloc-c' }, spec: { clusterIP: '10.96.7.7', ports: [{ port: 80 }] } });
    assert.equal(dup.status, 422);
    assert.equal(dup.body.details.causes[0].field, 'spec.clusterIPs');
    assert.match(dup.body.message, /provided IP is already allocated/);
    const out = await t.request('POST', SVC, { metadata: { name: 'alloc-d' }, spec: { clusterIP: '192.168.1.1', ports: [{ port: 80 }] } });
    assert.equal(out.status, 422);
    assert.match(out.body.message, /not in the valid range/);
    const headless = await t.request('POST', SVC, { metadata: { name: 'alloc-h' }, spec: { clusterIP: 'None', ports: [{ port: 80 }] } });
    assert.deepEqual(headless.body.spec.clusterIPs, ['None']);
    const np = await t.request('POST', SVC, { metadata: { name: 'np-a' }, spec: { type: 'NodePort', ports: [{ name: 'a', port: 80, nodePort: 30080 }, { name: 'b', port: 81 }] } });
    assert.equal(np.status, 201, JSON.stringify(np.body));
    assert.equal(np.body.spec.ports[0].nodePort, 30080);
    assert.ok(np.body.spec.ports[1].nodePort >= 30000 && np.body.spec.ports[1].nodePort <= 32767);
    const npDup = await t.request('POST', SVC, { metadata: { name: 'np-b' }, spec: { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] } });
    assert.equal(npDup.status, 422);
    assert.equal(npDup.body.details.causes[0].field, 'spec.ports[0].nodePort');
    const npOut = await t.request('POST', SVC, { metadata: { name: 'np-c' }, spec: { type: 'NodePort', ports: [{ port: 80, nodePort: 80 }] } });
    assert.equal(npOut.status, 422);
    // A PUT without clusterIP keeps the allocated one; deleting releases it.
    const put = await t.request('PUT', `${SVC}/alloc-b`, { metadata: { name: 'alloc-b' }, spec: { ports: [{ port: 8080 }] } });
    assert.equal(put.body.spec.clusterIP, '10.96.7.7');
    assert.equal((await t.request('DELETE', `${SVC}/alloc-b`)).status, 200);
    const again = await t.request('POST', SVC, { metadata: { name: 'alloc-e' }, spec: { clusterIP: '10.96.7.7', ports: [{ port: 80 }] } });
    assert.equal(again.status, 201);
    assert.equal((await t.request('DELETE', `${SVC}/np-a`)).status, 200);
    const reuse = await t.request('POST', SVC, { metadata: { name: 'np-d' }, spec: { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] } });
    assert.equal(reuse.status, 201);
  });

  it('keeps an object with finalizers until they are removed', async () => {
    await t.request('POST', CM, { metadata: { name: 'fin', finalizers: ['test/hold'] } });
    const d = await t.request('DELETE', `${CM}/fin`, { propagationPolicy: 'Background', gracePeriodSeconds: 0 });
    assert.equal(d.status, 202);
    assert.ok(d.body.metadata.deletionTimestamp);
    const still = await t.request('GET', `${CM}/fin`);
    assert.equal(still.status, 200);
    assert.ok(still.body.metadata.deletionTimestamp);
    const addFin = await t.request('PATCH', `${CM}/fin`, { metadata: { finalizers: ['test/hold', 'test/more'] } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(addFin.status, 422);
    const rm = await t.request('PATCH', `${CM}/fin`, [{ op: 'remove', path: '/metadata/finalizers' }], { 'content-type': 'application/json-patch+json' });
    assert.equal(rm.status, 200);
    assert.equal((await t.request('GET', `${CM}/fin`)).status, 404);
  });

  it('garbage-collects dependents of a deleted owner (background) and orphans on request', async () => {
    const owner = await t.request('POST', DEPLOY, deployment('owner'));
    const ref = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'owner', uid: owner.body.metadata.uid, controller: true };
    const rs = await t.request('POST', '/apis/apps/v1/namespaces/default/replicasets', {
      metadata: { name: 'owner-rs', ownerReferences: [ref] },
      spec: { selector: { matchLabels: { app: 'owner' } }, template: { metadata: { labels: { app: 'owner' } }, spec: { containers: [{ name: 'c', image: 'i' }] } } },
    });
    assert.equal(rs.status, 201, JSON.stringify(rs.body));
    await t.request('POST', '/api/v1/namespaces/default/pods', {
      metadata: { name: 'owner-pod', ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'owner-rs', uid: rs.body.metadata.uid }] },
      spec: { containers: [{ name: 'c', image: 'i' }] },
    });
    await t.request('DELETE', `${DEPLOY}/owner`, { propagationPolicy: 'Background' });
    for (let i = 0; i < 50 && (await t.request('GET', '/api/v1/namespaces/default/pods/owner-pod')).status !== 404; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await t.request('GET', '/apis/apps/v1/namespaces/default/replicasets/owner-rs')).status, 404);
    assert.equal((await t.request('GET', '/api/v1/namespaces/default/pods/owner-pod')).status, 404);

    const o2 = await t.request('POST', CM, { metadata: { name: 'o2' } });
    await t.request('POST', CM, { metadata: { name: 'o2-dep', ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'o2', uid: o2.body.metadata.uid }] } });
    await t.request('DELETE', `${CM}/o2?propagationPolicy=Orphan`);
    await new Promise((r) => setTimeout(r, 50));
    const dep = await t.request('GET', `${CM}/o2-dep`);
    assert.equal(dep.status, 200);
    assert.equal(dep.body.metadata.ownerReferences, undefined);
  });

  it('deletes a namespace with its content', async () => {
    await t.request('POST', '/api/v1/namespaces', { metadata: { name: 'doomed' } });
    assert.equal((await t.request('GET', '/api/v1/namespaces/doomed/serviceaccounts/default')).status, 200);
    await t.request('POST', '/api/v1/namespaces/doomed/configmaps', { metadata: { name: 'x' } });
    const d = await t.request('DELETE', '/api/v1/namespaces/doomed');
    assert.equal(d.body.status.phase, 'Terminating');
    for (let i = 0; i < 50 && (await t.request('GET', '/api/v1/namespaces/doomed')).status !== 404; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await t.request('GET', '/api/v1/namespaces/doomed')).status, 404);
    assert.equal((await t.request('GET', '/api/v1/namespaces/doomed/configmaps/x')).status, 404);
  });

  it('deletes pods on an existing node gracefully; the kubelet finishes with grace 0', async () => {
    await t.request('POST', '/api/v1/nodes', { metadata: { name: 'graceful-node' } });
    await t.request('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'gp' }, spec: { nodeName: 'graceful-node', containers: [{ name: 'c', image: 'i' }] } });
    const d1 = await t.request('DELETE', '/api/v1/namespaces/default/pods/gp');
    assert.equal(d1.status, 202);
    assert.equal(d1.body.metadata.deletionGracePeriodSeconds, 30);
    assert.equal((await t.request('GET', '/api/v1/namespaces/default/pods/gp')).status, 200);
    const d2 = await t.request('DELETE', '/api/v1/namespaces/default/pods/gp', { gracePeriodSeconds: 0 });
    assert.equal(d2.status, 200);
    assert.equal((await t.request('GET', '/api/v1/namespaces/default/pods/gp')).status, 404);
  });

  it('watch resumes from a resourceVersion and sees selector transitions', async () => {
    const c = await t.request('POST', CM, { metadata: { name: 'w1', labels: { w: 'yes' } } });
    const rv = c.body.metadata.resourceVersion;
    await t.request('PATCH', `${CM}/w1`, { data: { a: '1' } }, { 'content-type': 'application/merge-patch+json' });
    await t.request('POST', CM, { metadata: { name: 'w2', labels: { w: 'yes' } } });
    const w = await t.watch(`${CM}?watch=true&resourceVersion=${rv}&labelSelector=w%3Dyes`);
    await w.waitFor((e) => e.length >= 2);
    assert.deepEqual(
      w.events.map((e) => [e.type, e.object.metadata.name]),
      [
        ['MODIFIED', 'w1'],
        ['ADDED', 'w2'],
      ],
    );
    await t.request('PATCH', `${CM}/w1`, { metadata: { labels: { w: 'no' } } }, { 'content-type': 'application/merge-patch+json' });
    await t.request('DELETE', `${CM}/w2`);
    await w.waitFor((e) => e.length >= 4);
    assert.deepEqual(
      w.events.slice(2).map((e) => [e.type, e.object.metadata.name]),
      [
        ['DELETED', 'w1'],
        ['DELETED', 'w2'],
      ],
    );
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    assert.deepEqual(
      rvs,
      [...rvs].sort((a, b) => a - b),
    );
    w.close();
  });

  it('sends the initial state, bookmarks, and the initial-events-end bookmark', async () => {
    const w = await t.watch(`${CM}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan`);
    await w.waitFor((e) => e.some((x) => x.type === 'BOOKMARK' && x.object.metadata.annotations?.['k8s.io/initial-events-end'] === 'true'));
    const idx = w.events.findIndex((x) => x.type === 'BOOKMARK');
    assert.ok(idx > 0 && w.events.slice(0, idx).every((x) => x.type === 'ADDED'));
    await w.waitFor((e) => e.filter((x) => x.type === 'BOOKMARK').length >= 2, 3000);
    const periodic = w.events.filter((x) => x.type === 'BOOKMARK')[1]!;
    assert.match(periodic.object.metadata.resourceVersion, /^\d+$/);
    w.close();
  });

  it('ends a watch after timeoutSeconds', async () => {
    const start = Date.now();
    const w = await t.watch(`${CM}?watch=true&resourceVersion=${(await t.request('GET', CM)).body.metadata.resourceVersion}&timeoutSeconds=1`);
    await w.ended;
    assert.ok(Date.now() - start >= 900);
  });

  it('answers 410 Gone (as a watch ERROR event) for a resourceVersion older than the history window', async () => {
    const first = await t.request('POST', CM, { metadata: { name: 'old' } });
    for (let i = 0; i < 60; i++) await t.request('PATCH', `${CM}/old`, { data: { i: String(i) } }, { 'content-type': 'application/merge-patch+json' });
    const w = await t.watch(`${CM}?watch=true&resourceVersion=${first.body.metadata.resourceVersion}`);
    await w.ended;
    assert.equal(w.events.length, 1);
    assert.equal(w.events[0]!.type, 'ERROR');
    assert.equal(w.events[0]!.object.code, 410);
    assert.equal(w.events[0]!.object.reason, 'Expired');
    // A revision from the future (a restarted server) also asks the client to relist.
    const f = await t.watch(`${CM}?watch=true&resourceVersion=99999999`);
    await f.ended;
    assert.equal(f.events[0]!.object.code, 410);
  });

  it('serves a CRD created at run time, validates its objects with field paths, and stops serving it on delete', async () => {
    const c = await t.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', TEST_CRD);
    assert.equal(c.status, 201, JSON.stringify(c.body));
    assert.equal(c.body.status.conditions.find((x: { type: string }) => x.type === 'Established').status, 'True');
    const disc = await t.request('GET', '/apis/test.nodemesh.io/v1');
    assert.equal(disc.body.resources[0].name, 'widgets');
    const W = '/apis/test.nodemesh.io/v1/namespaces/default/widgets';
    const bad = await t.request('POST', W, { apiVersion: 'test.nodemesh.io/v1', kind: 'Widget', metadata: { name: 'w' }, spec: { size: 'XL', rules: [{ timeouts: { request: '5m' } }] } });
    assert.equal(bad.status, 422);
    assert.deepEqual(
      bad.body.details.causes.map((x: { field: string }) => x.field),
      ['spec.size', 'spec.rules[0].timeouts.request'],
    );
    assert.equal(bad.body.details.causes[0].message, 'Unsupported value: "XL": supported values: "S", "M", "L"');
    assert.match(bad.body.message, /^Widget\.test\.nodemesh\.io "w" is invalid: \[spec\.size: Unsupported value/);
    assert.equal((await t.request('GET', `${W}/w`)).status, 404, 'invalid objects are never stored');
    const strict = await t.request('POST', `${W}?fieldValidation=Strict`, { apiVersion: 'test.nodemesh.io/v1', kind: 'Widget', metadata: { name: 'w' }, spec: { size: 'S', extra: 1 } });
    assert.equal(strict.status, 400);
    assert.match(strict.body.message, /unknown field "spec.extra"/);
    const ok = await t.request('POST', W, { apiVersion: 'test.nodemesh.io/v1', kind: 'Widget', metadata: { name: 'w' }, spec: { size: 'S', extra: 1 } });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.spec.extra, undefined, 'unknown fields are pruned');
    assert.equal(ok.body.spec.replicas, 1, 'schema defaults apply');
    assert.match(ok.headers.get('warning') ?? '', /^299 - "unknown field \\"spec\.extra\\""$/);
    const smp = await t.request('PATCH', `${W}/w`, { spec: { size: 'M' } }, { 'content-type': 'application/strategic-merge-patch+json' });
    assert.equal(smp.status, 415);
    const st = await t.request('PUT', `${W}/w/status`, { ...ok.body, status: { replicas: 1, phase: 'Ready' } });
    assert.equal(st.body.status.phase, 'Ready');
    assert.equal(st.body.metadata.generation, 1);
    const sc = await t.request('PATCH', `${W}/w/scale`, { spec: { replicas: 4 } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(sc.body.spec.replicas, 4);
    assert.equal((await t.request('GET', `${W}/w`)).body.metadata.generation, 2);
    const del = await t.request('DELETE', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.nodemesh.io');
    assert.equal(del.status, 200);
    assert.equal((await t.request('GET', W)).status, 404);
    assert.equal((await t.request('GET', '/apis/test.nodemesh.io/v1')).status, 404);
    // Re-created, the kind is served again and empty.
    await t.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', TEST_CRD);
    assert.equal((await t.request('GET', W)).body.items.length, 0);
  });

  it('issues ServiceAccount tokens and reviews them', async () => {
    await t.request('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'tok-pod' }, spec: { containers: [{ name: 'c', image: 'i' }] } });
    const pod = await t.request('GET', '/api/v1/namespaces/default/pods/tok-pod');
    const tr = await t.request('POST', '/api/v1/namespaces/default/serviceaccounts/default/token', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { audiences: ['nodemesh-ca'], expirationSeconds: 3600, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'tok-pod', uid: pod.body.metadata.uid } },
    });
    assert.equal(tr.status, 201, JSON.stringify(tr.body));
    const token = tr.body.status.token as string;
    const review = async (aud: string[]): Promise<{ authenticated: boolean; user: { username: string; extra?: Record<string, string[]> } }> =>
      (await t.request('POST', '/apis/authentication.k8s.io/v1/tokenreviews', { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: aud } })).body.status;
    const ok = await review(['nodemesh-ca']);
    assert.equal(ok.authenticated, true);
    assert.equal(ok.user.username, 'system:serviceaccount:default:default');
    assert.deepEqual(ok.user.extra?.['authentication.kubernetes.io/pod-name'], ['tok-pod']);
    assert.equal((await review(['other'])).authenticated, false);
    await t.request('DELETE', '/api/v1/namespaces/default/pods/tok-pod');
    assert.equal((await review(['nodemesh-ca'])).authenticated, false, 'a token dies with its pod');
  });

  it('serves discovery and OpenAPI v3 with fieldValidation on PATCH', async () => {
    const apis = await t.request('GET', '/apis');
    assert.ok(apis.body.groups.some((g: { name: string }) => g.name === 'apps'));
    const agg = await t.request('GET', '/apis', undefined, { accept: 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json' });
    assert.equal(agg.headers.get('content-type'), 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList');
    const apps = await t.request('GET', '/apis/apps/v1');
    const scale = apps.body.resources.find((r: { name: string }) => r.name === 'deployments/scale');
    assert.deepEqual([scale.group, scale.version, scale.kind], ['autoscaling', 'v1', 'Scale']);
    const root = await t.request('GET', '/openapi/v3');
    const url = root.body.paths['apis/apps/v1'].serverRelativeURL as string;
    const doc = await t.request('GET', url);
    const patch = doc.body.paths['/apis/apps/v1/namespaces/{namespace}/deployments/{name}'].patch;
    assert.deepEqual(patch['x-kubernetes-group-version-kind'], { group: 'apps', version: 'v1', kind: 'Deployment' });
    assert.ok(patch.parameters.some((p: { name: string }) => p.name === 'fieldValidation'));
  });

  it('renders Tables for kubectl', async () => {
    const r = await t.request('GET', '/api/v1/namespaces/default/pods', undefined, { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json' });
    assert.equal(r.body.kind, 'Table');
    assert.deepEqual(
      r.body.columnDefinitions.filter((c: { priority: number }) => c.priority === 0).map((c: { name: string }) => c.name),
      ['Name', 'Ready', 'Status', 'Restarts', 'Age'],
    );
    assert.equal(r.body.rows[0].object.kind, 'PartialObjectMetadata');
  });
});
