import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import { resolveSandboxConfig } from './config.ts';
import { computeTopology } from './net/topology.ts';
import { computeNodeKubeconfig, planNodeDaemons } from './supervisor-main.ts';
import { computeDaemonBackoffMs } from './supervisor.ts';

test('daemon back-off doubles up to 30 s', () => {
  assert.deepEqual([0, 1, 2, 10].map(computeDaemonBackoffMs), [500, 1000, 2000, 30_000]);
});

test('each node gets an API server forwarder in its own namespace', () => {
  const cfg = resolveSandboxConfig({});
  const specs = planNodeDaemons(cfg, computeTopology(cfg, 2));
  assert.deepEqual(specs.map((s) => [s.name, s.netns]), [['forwarder/node-1', 'nm-node-1'], ['forwarder/node-2', 'nm-node-2']]);
  assert.ok(specs[0]!.argv.includes('/run/nodemesh/sandbox/apiserver.sock'));
});

test('the in-node kubeconfig points at the node-local forwarder and keeps the CA', () => {
  const host = 'apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: https://127.0.0.1:16443\n    certificate-authority-data: QUJD\n';
  const doc = parse(computeNodeKubeconfig(host)) as { clusters: { cluster: Record<string, string> }[] };
  assert.equal(doc.clusters[0]!.cluster.server, 'https://127.0.0.1:6443');
  assert.equal(doc.clusters[0]!.cluster['certificate-authority-data'], 'QUJD');
});

test('kube-lite reads the current context\'s server, CA and token', async () => {
  const { parseKubeconfigAccess } = await import('./kube-lite.ts');
  const a = parseKubeconfigAccess(`apiVersion: v1
kind: Config
current-context: b
contexts:
- {name: a, context: {cluster: c1, user: u1}}
- {name: b, context: {cluster: c2, user: u2}}
clusters:
- {name: c1, cluster: {server: https://one}}
- {name: c2, cluster: {server: https://two, certificate-authority-data: ${Buffer.from('PEM').toString('base64')}}}
users:
- {name: u1, user: {token: t1}}
- {name: u2, user: {token: t2}}
`);
  assert.deepEqual(a, { server: 'https://two', ca: 'PEM', insecure: false, token: 't2', cert: undefined, key: undefined });
});
