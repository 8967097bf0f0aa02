/** `connectivity test` pure parts: the objects, the checks per placement, the check pods and the report. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeCheckPod, computeConnectivityChecks, computeConnectivityObjects, formatConnectivityReport } from './connectivity.ts';

const images = { echo: 'nodemesh/echo', client: 'nodemesh/client' };

describe('kubectl mesh connectivity test', () => {
  it('deploys an echo pod per node, a Service, STRICT and a DENY policy in its own namespace', () => {
    const kinds = computeConnectivityObjects('t', 'n1', 'n2', images).map((o) => `${(o as { kind: string }).kind}/${(o as { metadata: { name: string } }).metadata.name}`);
    assert.deepEqual(kinds, ['Namespace/t', 'ServiceAccount/echo', 'ServiceAccount/client', 'Pod/echo-a', 'Pod/echo-b', 'Service/echo', 'MeshTLSPolicy/strict', 'AuthorizationPolicy/deny-path']);
    assert.equal(computeConnectivityObjects('t', 'n1', undefined, images).filter((o) => (o as { kind: string }).kind === 'Pod').length, 1);
  });
  it('checks: cross-node ones only with two nodes; STRICT bypasses the proxy with its mark', () => {
    const two = computeConnectivityChecks({ namespace: 't', nodeA: 'n1', nodeB: 'n2', ipA: '10.0.1.2', ipB: '10.0.2.2', clusterIP: '10.96.0.9' });
    assert.deepEqual(two.map((c) => c.name), ['pod-to-pod-same-node', 'pod-to-pod-cross-node', 'pod-to-service', 'dns', 'mtls', 'strict-enforced', 'deny-policy']);
    const one = computeConnectivityChecks({ namespace: 't', nodeA: 'n1', nodeB: undefined, ipA: '10.0.1.2', ipB: undefined, clusterIP: '10.96.0.9' });
    assert.ok(!one.some((c) => c.name === 'pod-to-pod-cross-node'));
    const strict = two.find((c) => c.name === 'strict-enforced')!;
    const pod = computeCheckPod('t', 'n1', strict, images, 30);
    assert.deepEqual(pod.spec?.containers[0]?.args, ['--url', 'http://10.0.2.2:8080/bypass', '--deadline', '30s', '--timeout', '2s', '--interval', '500ms', '--expect-error', '--so-mark', '0x4e4d']);
    assert.equal(pod.spec?.restartPolicy, 'Never');
    assert.match(two.find((c) => c.name === 'mtls')!.expect.body!, /sa\/client/);
  });
  it('report: a line per check and the summary line, skips listed but not counted', () => {
    const text = formatConnectivityReport({ namespace: 't', nodes: ['n1'], outcomes: [
      { name: 'a', description: 'first', result: 'pass' },
      { name: 'b', description: 'second one', result: 'fail', detail: 'timed out' },
      { name: 'c', description: 'third', result: 'skip' },
    ] }, 'table');
    assert.equal(text, 'Connectivity test in namespace t (nodes: n1)\n  [1/3] first       ✓ pass\n  [2/3] second one  ✗ fail: timed out\n  [3/3] third       - skip\n\n✗ 1/2 tests passed (1 skipped)\n');
  });
});
