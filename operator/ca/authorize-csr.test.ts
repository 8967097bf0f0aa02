// The confused-deputy check (B7): an agent gets certificates only for service accounts of pods on its node.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { authorizeCsr, type CsrDecision } from './authorize-csr.ts';

function pod(name: string, ns: string, sa: string | undefined, node: string | undefined, phase = 'Running'): V1Pod {
  return { metadata: { name, namespace: ns }, spec: { containers: [], ...(sa ? { serviceAccountName: sa } : {}), ...(node ? { nodeName: node } : {}) }, status: { phase } };
}

const pods: V1Pod[] = [
  pod('web-1', 'shop', 'web', 'node-a'),
  pod('db-1', 'shop', 'db', 'node-b'),
  pod('job-1', 'batch', 'runner', 'node-a', 'Succeeded'),
  pod('plain', 'shop', undefined, 'node-a'),
  pod('pending', 'shop', 'queue', undefined, 'Pending'),
];

const code = (d: CsrDecision): string => (d.allowed ? 'allowed' : d.code);

describe('authorizeCsr', () => {
  const node = (nodeName: string) => ({ kind: 'node' as const, nodeName });

  it('lets a node have the service account of a pod scheduled on it', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'allowed');
  });
  it('refuses a pod on the other node', () => {
    const d = authorizeCsr({ requester: node('node-a'), requested: { namespace: 'shop', serviceAccount: 'db' }, pods });
    assert.equal(code(d), 'pod_on_other_node');
    assert.match(d.reason, /node-b/);
  });
  it('refuses a service account with no pod at all', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'kube-system', serviceAccount: 'admin' }, pods })), 'no_pod_on_node');
  });
  it('refuses the same name in another namespace', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'other', serviceAccount: 'web' }, pods })), 'no_pod_on_node');
  });
  it('refuses when the only pod on the node has finished', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'batch', serviceAccount: 'runner' }, pods })), 'pod_terminated');
  });
  it('treats a pod without serviceAccountName as running as default', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'shop', serviceAccount: 'default' }, pods })), 'allowed');
  });
  it('does not count an unscheduled pod for any node', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'shop', serviceAccount: 'queue' }, pods })), 'no_pod_on_node');
  });
  it('refuses invalid names and empty requesters', () => {
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'Shop', serviceAccount: 'web' }, pods })), 'invalid_identity');
    assert.equal(code(authorizeCsr({ requester: node('node-a'), requested: { namespace: 'shop', serviceAccount: 'web/../x' }, pods })), 'invalid_identity');
    assert.equal(code(authorizeCsr({ requester: node(''), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'invalid_requester');
  });

  describe('service-account token path', () => {
    const sa = (namespace: string, name: string, podName?: string, nodeName?: string) => ({
      kind: 'serviceaccount' as const,
      namespace,
      name,
      ...(podName ? { podName } : {}),
      ...(nodeName ? { nodeName } : {}),
    });
    it('lets a token have its own identity', () => {
      assert.equal(code(authorizeCsr({ requester: sa('shop', 'web'), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'allowed');
    });
    it('refuses another identity', () => {
      assert.equal(code(authorizeCsr({ requester: sa('shop', 'web'), requested: { namespace: 'shop', serviceAccount: 'db' }, pods })), 'other_service_account');
    });
    it('checks the bound pod and node', () => {
      assert.equal(code(authorizeCsr({ requester: sa('shop', 'web', 'web-1', 'node-a'), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'allowed');
      assert.equal(code(authorizeCsr({ requester: sa('shop', 'web', 'web-1', 'node-b'), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'node_mismatch');
      assert.equal(code(authorizeCsr({ requester: sa('shop', 'web', 'gone'), requested: { namespace: 'shop', serviceAccount: 'web' }, pods })), 'pod_not_found');
      assert.equal(code(authorizeCsr({ requester: sa('batch', 'runner', 'job-1'), requested: { namespace: 'batch', serviceAccount: 'runner' }, pods })), 'pod_terminated');
    });
  });
});
