import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSandboxConfig } from '../config.ts';
import { computePodNetNames, computeTopology, isInstanceName, planNodeRoutes } from './topology.ts';

const cfg = resolveSandboxConfig({});

test('node addresses, pod CIDRs and names follow the design', () => {
  const t = computeTopology(cfg, 3);
  assert.equal(t.fabricNetns, 'nm-fabric');
  assert.deepEqual(t.nodes.map((n) => [n.name, n.netns, n.fabricAddr, n.podCidr, n.gateway]), [
    ['node-1', 'nm-node-1', '10.200.0.11', '10.244.1.0/24', '10.244.1.1'],
    ['node-2', 'nm-node-2', '10.200.0.12', '10.244.2.0/24', '10.244.2.1'],
    ['node-3', 'nm-node-3', '10.200.0.13', '10.244.3.0/24', '10.244.3.1'],
  ]);
  assert.throws(() => computeTopology(cfg, 0), /1 to 50 nodes/);
});

test('node routes: other pod CIDRs via their fabric address, then an unreachable default, nothing else', () => {
  const t = computeTopology(cfg, 3);
  assert.deepEqual(planNodeRoutes(t, t.nodes[1]!), [
    ['10.244.1.0/24', 'via', '10.200.0.11', 'dev', 'eth0'],
    ['10.244.3.0/24', 'via', '10.200.0.13', 'dev', 'eth0'],
    ['unreachable', 'default'],
  ]);
});

test('pod names fit interface limits and are recognised as the instance\'s', () => {
  const n = computePodNetNames(cfg, '0b8f6c1e-7d5a-4c1f-9a55-5e0e3b1f2a10');
  assert.match(n.netns, /^nm-pod-[0-9a-f]{8}$/);
  assert.ok(n.hostVeth.length <= 15);
  assert.equal(isInstanceName(cfg, n.netns), true);
  assert.equal(isInstanceName(cfg, 'nm-node-2'), true);
  assert.equal(isInstanceName(cfg, 'nm-e2e-node-2'), false, 'another instance is not ours');
  const e2e = resolveSandboxConfig({ NODEMESH_SANDBOX_INSTANCE: 'e2e' });
  assert.equal(isInstanceName(e2e, 'nm-e2e-node-2'), true);
  assert.equal(isInstanceName(e2e, 'nm-node-2'), false);
});
