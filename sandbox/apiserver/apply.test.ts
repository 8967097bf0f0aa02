/** Server-side apply, managedFields on every write, and response negotiation, over HTTP. */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CRD_DIRECTORY } from '../../crds/index.ts';
import type { TestServer } from './testing.ts';
import { startTestServer } from './testing.ts';

const APPLY = { 'content-type': 'application/apply-patch+yaml' };
const CM = '/api/v1/namespaces/default/configmaps';
const ROUTES = '/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- managedFields entries as served
const managers = (obj: any): string[] => (obj.metadata.managedFields ?? []).map((e: any) => `${e.manager}/${e.operation}${e.subresource ? `/${e.subresource}` : ''}`);

const route = (rules: string, extra = ''): string => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
${extra}  rules:
${rules}`;

describe('server-side apply over HTTP', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ crdDirs: [CRD_DIRECTORY] });
  });
  after(() => t.close());

  it('creates on apply (201), requires fieldManager, refuses force on other patches, and is idempotent', async () => {
    const body = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: "1"}\n';
    const missing = await t.request('PATCH', `${CM}/a`, body, APPLY);
    assert.equal(missing.status, 422);
    assert.equal(missing.body.message, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch');
    const created = await t.request('PATCH', `${CM}/a?fieldManager=alice`, body, APPLY);
    assert.equal(created.status, 201);
    assert.deepEqual(managers(created.body), ['alice/Apply']);
    assert.deepEqual(created.body.metadata.managedFields[0].fieldsV1, { 'f:data': { 'f:x': {} } });
    const again = await t.request('PATCH', `${CM}/a?fieldManager=alice`, body, APPLY);
    assert.equal(again.status, 200);
    assert.equal(again.body.metadata.resourceVersion, created.body.metadata.resourceVersion, 'a no-op apply writes nothing');
    const forced = await t.request('PATCH', `${CM}/a?force=true`, { data: { y: '2' } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(forced.status, 422);
    assert.match(forced.body.message, /force: Forbidden: may not be specified for non-apply patch/);
  });

  it('detects conflicts with an Update manager (a merge patch), forces them, honours dryRun and resourceVersion', async () => {
    await t.request('POST', `${CM}?fieldManager=creator`, { metadata: { name: 'b' }, data: { x: '1', y: '1' } });
    const patched = await t.request('PATCH', `${CM}/b?fieldManager=editor`, { data: { x: '2' } }, { 'content-type': 'application/merge-patch+json' });
    assert.deepEqual(managers(patched.body), ['creator/Update', 'editor/Update']);
    const body = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {x: "3", y: "1"}\n';
    const c = await t.request('PATCH', `${CM}/b?fieldManager=ssa`, body, APPLY);
    assert.equal(c.status, 409);
    assert.equal(c.body.reason, 'Conflict');
    assert.equal(c.body.message, 'Apply failed with 1 conflict: conflict with "editor" using v1: .data.x');
    assert.deepEqual(c.body.details.causes, [{ reason: 'FieldManagerConflict', message: 'conflict with "editor" using v1', field: '.data.x' }]);

    const dry = await t.request('PATCH', `${CM}/b?fieldManager=ssa&force=true&dryRun=All`, body, APPLY);
    assert.equal(dry.status, 200);
    assert.equal(dry.body.data.x, '3');
    assert.equal((await t.request('GET', `${CM}/b`)).body.data.x, '2', 'dry run stored nothing');

    const stale = await t.request('PATCH', `${CM}/b?fieldManager=ssa&force=true`, body.replace('name: b', 'name: b, resourceVersion: "1"'), APPLY);
    assert.equal(stale.status, 409);
    assert.match(stale.body.message, /the object has been modified/);

    const won = await t.request('PATCH', `${CM}/b?fieldManager=ssa&force=true`, body, APPLY);
    assert.equal(won.status, 200);
    assert.deepEqual(won.body.data, { x: '3', y: '1' });
    // y had the same value: shared with creator; x moved from editor to ssa, so editor owns nothing any more.
    assert.deepEqual(managers(won.body), ['creator/Update', 'ssa/Apply']);
  });

  it('lets a client replace managedFields explicitly and clear them with [{}]', async () => {
    await t.request('PATCH', `${CM}/c?fieldManager=alice`, 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: "1"}\n', APPLY);
    const cleared = await t.request('PATCH', `${CM}/c`, { metadata: { managedFields: [{}] } }, { 'content-type': 'application/merge-patch+json' });
    assert.equal(cleared.body.metadata.managedFields, undefined);
    const bad = await t.request('PATCH', `${CM}/c`, [{ op: 'add', path: '/metadata/managedFields', value: [{ manager: 'x', operation: 'Merge' }] }], { 'content-type': 'application/json-patch+json' });
    assert.equal(bad.status, 422);
    assert.match(bad.body.message, /metadata\.managedFields\[0\]\.operation/);
  });

  it('applies custom resources with their list types, and still runs schema defaults and CEL on the result', async () => {
    const rulesV1 = '  - backendRefs: [{name: echo, port: 8080}]\n';
    const created = await t.request('PATCH', `${ROUTES}/r?fieldManager=alice`, route(rulesV1), APPLY);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.spec.parentRefs[0].group, '', 'schema defaults ran');
    const hosts = await t.request('PATCH', `${ROUTES}/r?fieldManager=bob`, 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  hostnames: [echo.example]\n', APPLY);
    assert.equal(hosts.status, 200, JSON.stringify(hosts.body));
    assert.deepEqual(hosts.body.spec.hostnames, ['echo.example']);
    assert.equal(hosts.body.spec.rules.length, 1, "alice's rules stay");
    const steal = await t.request('PATCH', `${ROUTES}/r?fieldManager=bob`, route('  - backendRefs: [{name: other, port: 80}]\n'), APPLY);
    assert.equal(steal.status, 409);
    assert.match(steal.body.message, /conflicts? with "alice"/);
    assert.match(steal.body.message, /\.spec\.rules/, 'rules is an atomic list: owned whole');
    const invalid = await t.request('PATCH', `${ROUTES}/r?fieldManager=alice`, route('  - backendRefs: [{name: echo}]\n'), APPLY);
    assert.equal(invalid.status, 422);
    assert.match(invalid.body.message, /Must have port for Service reference/);
    assert.equal((await t.request('GET', `${ROUTES}/r`)).body.spec.rules[0].backendRefs[0].port, 8080, 'nothing of the invalid apply was stored');
    const unknown = await t.request('PATCH', `${ROUTES}/r?fieldManager=alice&fieldValidation=Strict`, route(rulesV1, '  bogus: 1\n'), APPLY);
    assert.equal(unknown.status, 400);
    assert.match(unknown.body.message, /unknown field "spec.bogus"/);
  });
});

describe('response negotiation', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(() => t.close());

  it('answers JSON (with a JSON Content-Type) when protobuf comes first, YAML when asked, and 406 for protobuf only', async () => {
    const pb = await t.request('GET', '/api/v1/namespaces/default', undefined, { accept: 'application/vnd.kubernetes.protobuf, application/json' });
    assert.equal(pb.status, 200);
    assert.equal(pb.headers.get('content-type'), 'application/json');
    assert.equal(pb.body.metadata.name, 'default');
    const table = await t.request('GET', '/api/v1/namespaces', undefined, { accept: 'application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json' });
    assert.equal(table.body.kind, 'NamespaceList', 'a Table offered only in protobuf is not a Table in JSON');
    const yaml = await t.request('GET', '/api/v1/namespaces/default', undefined, { accept: 'application/yaml' });
    assert.equal(yaml.headers.get('content-type'), 'application/yaml');
    assert.match(yaml.body as string, /^apiVersion: v1\nkind: Namespace\n/);
    assert.match(yaml.body as string, /\n {2}creationTimestamp: "\d{4}-\d\d-\d\dT/, 'timestamps quoted, as Go writes them');
    const only = await t.request('GET', '/api/v1/namespaces/default', undefined, { accept: 'application/vnd.kubernetes.protobuf' });
    assert.equal(only.status, 406);
    assert.equal(only.body.reason, 'NotAcceptable');
    assert.match(only.body.message, /only the following media types are accepted: application\/json, application\/yaml/);
    const discovery = await t.request('GET', '/apis', undefined, { accept: 'application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json' });
    assert.equal(discovery.body.kind, 'APIGroupList');
  });
});
