import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BUILTIN_FIELD_TYPES, fieldTypeFromSchema } from './field-types.ts';
import type { JsonObject } from './json.ts';
import type { ApplyPlan, ManagedFieldsEntry, WriteScope } from './managed-fields.ts';
import {
  decodeFieldsV1,
  describeConflicts,
  encodeFieldsV1,
  encodeManagedFields,
  fieldSetOf,
  formatFieldPath,
  joinPath,
  mergeApplied,
  parseManagedFields,
  planApply,
  planUpdateOwnership,
} from './managed-fields.ts';

const DEPLOYMENT = BUILTIN_FIELD_TYPES['Deployment']!;
const SERVICE = BUILTIN_FIELD_TYPES['Service']!;
const CONFIGMAP = { fields: {} };
const MAIN: WriteScope = { statusSubresource: true };
const NO_STATUS: WriteScope = { statusSubresource: false };

const paths = (set: Iterable<string>): string[] => [...set].map(formatFieldPath).sort();
const ok = (plan: ApplyPlan): { object: JsonObject; entries: ManagedFieldsEntry[] } => {
  assert.equal(plan.conflicts, undefined, `unexpected conflicts: ${JSON.stringify(plan.conflicts?.map((c) => formatFieldPath(c.path)))}`);
  return plan as { object: JsonObject; entries: ManagedFieldsEntry[] };
};
const cm = (data: JsonObject, labels?: JsonObject): JsonObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c', ...(labels ? { labels } : {}) }, data });
const apply = (live: JsonObject | undefined, applied: JsonObject, entries: ManagedFieldsEntry[], manager: string, force = false, type = CONFIGMAP, scope = NO_STATUS): ApplyPlan =>
  planApply({ live, applied, type, entries, who: { manager, apiVersion: 'v1' }, force, scope });

const deployment = (containers: JsonObject[], replicas = 2): JsonObject => ({
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name: 'd' },
  spec: { replicas, selector: { matchLabels: { app: 'd' } }, template: { metadata: { labels: { app: 'd' } }, spec: { containers } } },
});

describe('field sets', () => {
  it('lists members: leaves, associative-list items by key (defaulted key fields filled in), atomic maps and lists whole', () => {
    const set = fieldSetOf(deployment([{ name: 'c', image: 'i', ports: [{ containerPort: 80 }], args: ['a', 'b'] }]), DEPLOYMENT);
    assert.deepEqual(paths(set), [
      '.apiVersion',
      '.kind',
      '.metadata.name',
      '.spec.replicas',
      '.spec.selector',
      '.spec.template.metadata.labels.app',
      '.spec.template.spec.containers[name="c"]',
      '.spec.template.spec.containers[name="c"].args',
      '.spec.template.spec.containers[name="c"].image',
      '.spec.template.spec.containers[name="c"].name',
      '.spec.template.spec.containers[name="c"].ports[containerPort=80,protocol="TCP"]',
      '.spec.template.spec.containers[name="c"].ports[containerPort=80,protocol="TCP"].containerPort',
    ]);
  });

  it('round-trips through FieldsV1, with "." on members that have members below', () => {
    const set = fieldSetOf({ spec: { template: { spec: { containers: [{ name: 'c', image: 'i' }] } } }, metadata: { finalizers: ['x'] } }, DEPLOYMENT);
    const v1 = encodeFieldsV1(set);
    assert.deepEqual(v1, {
      'f:metadata': { 'f:finalizers': { 'v:"x"': {} } },
      'f:spec': { 'f:template': { 'f:spec': { 'f:containers': { 'k:{"name":"c"}': { '.': {}, 'f:image': {}, 'f:name': {} } } } } },
    });
    assert.deepEqual([...decodeFieldsV1(v1)].sort(), [...set].sort());
  });

  it('rejects malformed managedFields naming the entry and field', () => {
    assert.throws(() => parseManagedFields([{ manager: 'm', operation: 'Replace', fieldsType: 'FieldsV1', fieldsV1: {} }]), /must be "Apply" or "Update"/);
    assert.throws(() => parseManagedFields([{ manager: 'm', operation: 'Apply', fieldsV1: { 'x:y': {} } }]), (e: Error & { field?: string }) => e.field === 'metadata.managedFields[0].fieldsV1');
  });

  it('keeps an unchanged entry as stored (same time), so a no-op write stays a no-op', () => {
    const stored = { manager: 'm', operation: 'Update', apiVersion: 'v1', time: '2020-01-01T00:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:data': { 'f:a': {} } } };
    const entries = parseManagedFields([stored]);
    assert.equal(encodeManagedFields(entries, '2030-01-01T00:00:00Z')[0], stored);
    entries[0]!.fields.add(joinPath(['f:data', 'f:b']));
    assert.equal(encodeManagedFields(entries, '2030-01-01T00:00:00Z')[0]!['time'], '2030-01-01T00:00:00Z');
  });
});

describe('merge of an applied configuration', () => {
  it('merges containers by name, ports by containerPort+protocol, env by name; replaces atomic lists; unions sets', () => {
    const live = deployment([
      { name: 'a', image: 'a:1', env: [{ name: 'X', value: '1' }], ports: [{ containerPort: 80, protocol: 'TCP' }], args: ['old'] },
      { name: 'b', image: 'b:1' },
    ]);
    (live['metadata'] as JsonObject)['finalizers'] = ['f1'];
    const applied = deployment([{ name: 'a', image: 'a:2', env: [{ name: 'Y', value: '2' }], ports: [{ containerPort: 80, name: 'http' }], args: ['new'] }]);
    (applied['metadata'] as JsonObject)['finalizers'] = ['f2'];
    const out = mergeApplied(live, applied, DEPLOYMENT) as JsonObject;
    const containers = ((out['spec'] as JsonObject)['template'] as { spec: { containers: JsonObject[] } }).spec.containers;
    assert.deepEqual(containers, [
      { name: 'a', image: 'a:2', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }], ports: [{ containerPort: 80, protocol: 'TCP', name: 'http' }], args: ['new'] },
      { name: 'b', image: 'b:1' },
    ]);
    assert.deepEqual((out['metadata'] as JsonObject)['finalizers'], ['f1', 'f2']);
  });

  it('reads list types from a CRD schema (x-kubernetes-list-type map/set, atomic by default)', () => {
    const t = fieldTypeFromSchema({
      type: 'object',
      properties: {
        spec: {
          type: 'object',
          properties: {
            rules: { type: 'array', items: { type: 'object' } },
            hosts: { type: 'array', 'x-kubernetes-list-type': 'set', items: { type: 'string' } },
            filters: { type: 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'], items: { type: 'object' } },
          },
        },
      },
    });
    const live = { spec: { rules: [{ a: 1 }], hosts: ['x'], filters: [{ name: 'f', v: 1 }] } };
    const out = mergeApplied(live, { spec: { rules: [{ b: 2 }], hosts: ['y'], filters: [{ name: 'g', v: 2 }] } }, t) as JsonObject;
    assert.deepEqual(out['spec'], { rules: [{ b: 2 }], hosts: ['x', 'y'], filters: [{ name: 'f', v: 1 }, { name: 'g', v: 2 }] });
  });
});

describe('server-side apply ownership', () => {
  it('creates, then a second manager with a different value conflicts; forced, it takes the field over', () => {
    const first = ok(apply(undefined, cm({ x: '1', y: '2' }), [], 'alice'));
    assert.deepEqual(first.object['data'], { x: '1', y: '2' });
    assert.deepEqual(first.entries.map((e) => [e.manager, e.operation, paths(e.fields)]), [['alice', 'Apply', ['.data.x', '.data.y']]]);

    const conflicted = apply(first.object, cm({ x: '9' }), first.entries, 'bob');
    assert.ok(conflicted.conflicts);
    assert.deepEqual(conflicted.conflicts.map((c) => [c.manager, formatFieldPath(c.path)]), [['alice', '.data.x']]);
    assert.equal(describeConflicts(conflicted.conflicts).message, 'Apply failed with 1 conflict: conflict with "alice": .data.x');

    const forced = ok(apply(first.object, cm({ x: '9' }), first.entries, 'bob', true));
    assert.deepEqual(forced.object['data'], { x: '9', y: '2' });
    assert.deepEqual(forced.entries.map((e) => [e.manager, paths(e.fields)]), [['alice', ['.data.y']], ['bob', ['.data.x']]]);
  });

  it('shares a field applied with the same value; it stays while any owner still applies it', () => {
    const a = ok(apply(undefined, cm({ x: '1' }), [], 'alice'));
    const b = ok(apply(a.object, cm({ x: '1' }), a.entries, 'bob'));
    assert.deepEqual(b.entries.map((e) => [e.manager, paths(e.fields)]), [['alice', ['.data.x']], ['bob', ['.data.x']]]);
    const noData: JsonObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } };
    const aliceDrops = ok(apply(b.object, noData, b.entries, 'alice'));
    assert.deepEqual(aliceDrops.object['data'], { x: '1' }, 'bob still owns it');
    const bobDrops = ok(apply(aliceDrops.object, noData, aliceDrops.entries, 'bob'));
    assert.equal(bobDrops.object['data'], undefined, 'no owner left: removed (and the emptied map with it)');
    const explicitEmpty = ok(apply(aliceDrops.object, cm({}), aliceDrops.entries, 'bob'));
    assert.deepEqual(explicitEmpty.object['data'], {}, 'an applied {} is a value of its own');
  });

  it('removes a container, an env var and a label the manager stopped applying, but not what an updater owns', () => {
    const v1 = deployment([
      { name: 'a', image: 'a', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }] },
      { name: 'b', image: 'b' },
    ]);
    (v1['metadata'] as JsonObject)['labels'] = { keep: 'y', drop: 'y' };
    const created = ok(planApply({ live: undefined, applied: v1, type: DEPLOYMENT, entries: [], who: { manager: 'kubectl', apiVersion: 'apps/v1' }, force: false, scope: MAIN }));
    // kubectl scale (an Update) takes replicas.
    const scaled = structuredClone(created.object);
    (scaled['spec'] as JsonObject)['replicas'] = 5;
    const afterScale = planUpdateOwnership(created.entries, created.object, scaled, DEPLOYMENT, { manager: 'kubectl-scale', apiVersion: 'apps/v1' }, MAIN);
    assert.deepEqual(afterScale.map((e) => [e.manager, e.operation, e.fields.has(joinPath(['f:spec', 'f:replicas']))]), [
      ['kubectl', 'Apply', false],
      ['kubectl-scale', 'Update', true],
    ]);

    const v2 = deployment([{ name: 'a', image: 'a', env: [{ name: 'X', value: '1' }] }]);
    delete (v2['spec'] as JsonObject)['replicas'];
    (v2['metadata'] as JsonObject)['labels'] = { keep: 'y' };
    const next = ok(planApply({ live: scaled, applied: v2, type: DEPLOYMENT, entries: afterScale, who: { manager: 'kubectl', apiVersion: 'apps/v1' }, force: false, scope: MAIN }));
    const spec = next.object['spec'] as { replicas: number; template: { spec: { containers: JsonObject[] } } };
    assert.deepEqual(spec.template.spec.containers, [{ name: 'a', image: 'a', env: [{ name: 'X', value: '1' }] }]);
    assert.equal(spec.replicas, 5, 'replicas belongs to kubectl-scale now');
    assert.deepEqual((next.object['metadata'] as JsonObject)['labels'], { keep: 'y' });
  });

  it('lists every conflict grouped by manager, an Update manager with its API version', () => {
    const live = { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }], type: 'ClusterIP' } };
    const entries = planUpdateOwnership([], undefined, live, SERVICE, { manager: 'kubectl-client-side-apply', apiVersion: 'v1' }, MAIN);
    const plan = planApply({
      live,
      applied: { apiVersion: 'v1', kind: 'Service', metadata: { name: 's' }, spec: { ports: [{ port: 80, targetPort: 9090 }], type: 'NodePort' } },
      type: SERVICE,
      entries,
      who: { manager: 'ssa', apiVersion: 'v1' },
      force: false,
      scope: MAIN,
    });
    assert.ok(plan.conflicts);
    assert.equal(
      describeConflicts(plan.conflicts).message,
      'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply" using v1:\n- .spec.ports[port=80,protocol="TCP"].targetPort\n- .spec.type',
    );
  });

  it('ignores status on the main endpoint of a kind with a status subresource, and owns only status on /status', () => {
    const live = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' }, spec: { replicas: 1 }, status: { replicas: 1 } };
    const main = ok(planApply({ live, applied: { ...live, status: { replicas: 7 } }, type: DEPLOYMENT, entries: [], who: { manager: 'm', apiVersion: 'apps/v1' }, force: false, scope: MAIN }));
    assert.deepEqual(paths(main.entries[0]!.fields), ['.spec.replicas']);
    const status = ok(planApply({ live, applied: { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' }, status: { replicas: 3 } }, type: DEPLOYMENT, entries: main.entries, who: { manager: 'm', apiVersion: 'apps/v1' }, force: false, scope: { statusSubresource: true, subresource: 'status' } }));
    assert.deepEqual(status.entries.map((e) => [e.manager, e.subresource ?? '', paths(e.fields)]), [['m', '', ['.spec.replicas']], ['m', 'status', ['.status.replicas']]]);
  });
});

describe('update ownership', () => {
  it('gives changed fields to the updater and takes them from everyone else; removed fields leave every set', () => {
    const before = cm({ a: '1', b: '2' }, { x: 'y' });
    const created = planUpdateOwnership([], undefined, before, CONFIGMAP, { manager: 'creator', apiVersion: 'v1' }, NO_STATUS);
    assert.deepEqual(paths(created[0]!.fields), ['.data.a', '.data.b', '.metadata.labels.x']);
    const after = cm({ a: '9', c: '3' }, { x: 'y' });
    const updated = planUpdateOwnership(created, before, after, CONFIGMAP, { manager: 'editor', apiVersion: 'v1' }, NO_STATUS);
    assert.deepEqual(updated.map((e) => [e.manager, e.operation, paths(e.fields)]), [
      ['creator', 'Update', ['.metadata.labels.x']],
      ['editor', 'Update', ['.data.a', '.data.c']],
    ]);
    assert.equal(planUpdateOwnership(updated, after, structuredClone(after), CONFIGMAP, { manager: 'other', apiVersion: 'v1' }, NO_STATUS), updated, 'a write that changes nothing changes no ownership');
  });
});
