/** Tests for the schema instance check used on fixtures and operator output. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CRD_DIR, readCrds } from './generate-types.ts';
import { validateObject } from './validate-instance.ts';

const crd = (kind: string) => readCrds(CRD_DIR).find((c) => c.crd.spec.names.kind === kind)!.crd;

test('a valid HTTPRoute passes; violations come with paths', () => {
  const good = {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r' },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 80 }], rules: [{ backendRefs: [{ name: 'echo', port: 80, weight: 90 }], timeouts: { request: '10s' } }] },
  };
  assert.deepEqual(validateObject(crd('HTTPRoute'), good), []);
  const bad = structuredClone(good) as unknown as { spec: Record<string, unknown> };
  bad.spec['rules'] = [{ backendRefs: [{ name: 'echo', port: 70000, weight: -1 }], timeouts: { request: '10 seconds' }, typo: 1 }];
  assert.deepEqual(validateObject(crd('HTTPRoute'), bad as unknown as Record<string, unknown>).map((p) => p.path), [
    'spec.rules[0].backendRefs[0].port',
    'spec.rules[0].backendRefs[0].weight',
    'spec.rules[0].timeouts.request',
    'spec.rules[0].typo',
  ]);
});

test('NodeState requires its keys and bounds its enums', () => {
  const problems = validateObject(crd('NodeState'), {
    apiVersion: 'nodemesh.io/v1alpha1', kind: 'NodeState', metadata: {},
    spec: { nodeName: 'n', shard: { index: 0, count: 1 }, contentHash: 'md5:x', trustDomain: 'td', workloads: [{ namespace: 'a' }], services: [] },
  });
  assert.ok(problems.some((p) => p.path === 'spec.contentHash'));
  assert.ok(problems.some((p) => p.path === 'spec.workloads[0].spiffeId' && p.message === 'is required'));
});
