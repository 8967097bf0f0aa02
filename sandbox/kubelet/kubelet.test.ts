import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSandboxConfig } from '../config.ts';
import { computeTopology } from '../net/topology.ts';
import { computeNodeObject } from './kubelet.ts';
import { planProbeCommand, resolveProbePort } from './probes.ts';

test('the Node object carries the fabric address, pod CIDR, hostname label and Ready', () => {
  const cfg = resolveSandboxConfig({});
  const node = computeTopology(cfg, 2).nodes[1]!;
  const n = computeNodeObject(cfg, node, new Date(0), { cpus: 4, memoryBytes: 8 * 1024 ** 3, kernel: '6.18', arch: 'x64' });
  assert.equal(n.metadata!.name, 'node-2');
  assert.equal(n.metadata!.labels!['kubernetes.io/hostname'], 'node-2');
  assert.equal(n.spec!.podCIDR, '10.244.2.0/24');
  assert.deepEqual(n.status!.addresses![0], { type: 'InternalIP', address: '10.200.0.12' });
  assert.equal(n.status!.conditions!.find((c) => c.type === 'Ready')!.status, 'True');
  assert.equal(n.status!.capacity!.memory, '8388608Ki');
  assert.equal(n.status!.nodeInfo!.architecture, 'amd64');
});

test('probe commands run against the pod address; named ports resolve', () => {
  const t = { netns: 'nm-pod-x', cgroupPath: '/cg', podIp: '10.244.1.2', ports: [{ name: 'http', containerPort: 8080 }], env: {} };
  assert.equal(resolveProbePort('http', t.ports), 8080);
  assert.equal(resolveProbePort('9090', t.ports), 9090);
  const http = planProbeCommand({ httpGet: { path: 'ready', port: 'http', httpHeaders: [{ name: 'X-A', value: '1' }] }, timeoutSeconds: 2 }, t)!;
  assert.equal(http.at(-1), 'http://10.244.1.2:8080/ready');
  assert.ok(http.includes('X-A: 1'));
  assert.deepEqual(planProbeCommand({ tcpSocket: { port: 8080 } }, t), ['timeout', '1', 'bash', '-c', 'exec 3<>/dev/tcp/10.244.1.2/8080']);
  assert.deepEqual(planProbeCommand({ exec: { command: ['true'] } }, t), ['timeout', '1', 'true']);
  assert.equal(planProbeCommand({ httpGet: { port: 'nope' } }, t), undefined);
});
