import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from './apiserver/testing.ts';
import { resolveSandboxConfig } from './config.ts';
import { meshPaths } from './mesh-wiring.ts';
import { computeTopology } from './net/topology.ts';
import { MIRROR_POD_ANNOTATION, computeAgentPod, computeAgentPodStatus, createSandboxPodDialer, loadAgentPodTemplate, planSandboxPodDial } from './supervisor-agent-pods.ts';
import type { DaemonStatus } from './supervisor.ts';

const template = loadAgentPodTemplate();
const running: DaemonStatus = { name: 'agent/node-1', node: 'node-1', pid: 42, state: 'running', restarts: 1, lastExit: 'exit 1', since: '2026-11-21T10:00:00.000Z' };

describe('sandbox agent pods', () => {
  it('look like the DaemonSet\'s pods: its template labels and port name, hostNetwork, bound to the node, a mirror pod', () => {
    const pod = computeAgentPod(template, 'node-2');
    assert.deepEqual(pod.metadata?.labels, { 'app.kubernetes.io/name': 'nodemesh-agent', 'app.kubernetes.io/part-of': 'nodemesh' });
    assert.equal(pod.metadata?.namespace, 'nodemesh-system');
    assert.equal(pod.metadata?.name, 'nodemesh-agent-node-2');
    assert.equal(pod.metadata?.ownerReferences, undefined, 'owned by nothing');
    assert.ok(pod.metadata?.annotations?.[MIRROR_POD_ANNOTATION], 'the sandbox kubelet must not try to run it');
    assert.equal(pod.spec?.nodeName, 'node-2');
    assert.equal(pod.spec?.hostNetwork, true);
    assert.equal(pod.spec?.serviceAccountName, 'nodemesh-agent');
    assert.deepEqual(pod.spec?.containers[0]?.ports, [
      { name: 'health', containerPort: 10256, hostPort: 10256, protocol: 'TCP' },
      { name: 'metrics', containerPort: 10249, hostPort: 10249, protocol: 'TCP' },
    ]);
    // The DaemonSet's scrape annotations, pointing at the port this pod really serves metrics on (not the manifest's 9881).
    const a = pod.metadata?.annotations ?? {};
    assert.deepEqual([a['prometheus.io/scrape'], a['prometheus.io/port'], a['prometheus.io/path']], ['true', '10249', '/metrics']);
    assert.equal(computeAgentPod(template, 'node-2', 10256, 19249).metadata?.annotations?.['prometheus.io/port'], '19249');
  });

  it('status: Running on the node\'s address; Ready only while the daemon runs and /readyz answers 200', () => {
    const ready = computeAgentPodStatus(template, { address: '10.200.0.11', daemon: running, readyz: { ok: true, message: '200 ok' } }, '2026-11-21T09:59:00.000Z');
    assert.equal(ready.phase, 'Running');
    assert.equal(ready.podIP, '10.200.0.11');
    assert.equal(ready.hostIP, '10.200.0.11');
    assert.deepEqual(ready.conditions?.map((c) => [c.type, c.status]), [['PodScheduled', 'True'], ['Initialized', 'True'], ['ContainersReady', 'True'], ['Ready', 'True']]);
    assert.equal(ready.containerStatuses?.[0]?.restartCount, 1);
    assert.equal(ready.containerStatuses?.[0]?.lastState?.terminated?.exitCode, 1);

    const syncing = computeAgentPodStatus(template, { address: '10.200.0.11', daemon: running, readyz: { ok: false, message: '503 not ready: first sync pending' } }, '2026-11-21T09:59:00.000Z');
    const readyCond = syncing.conditions?.find((c) => c.type === 'Ready');
    assert.equal(readyCond?.status, 'False');
    assert.equal(readyCond?.message, 'readiness: 503 not ready: first sync pending');
    assert.equal(syncing.containerStatuses?.[0]?.ready, false);

    const crashing = computeAgentPodStatus(template, { address: '10.200.0.11', daemon: { ...running, state: 'backoff', lastExit: 'signal SIGKILL' }, readyz: undefined }, '2026-11-21T09:59:00.000Z');
    assert.equal(crashing.containerStatuses?.[0]?.state?.waiting?.reason, 'CrashLoopBackOff');
    assert.equal(crashing.containerStatuses?.[0]?.lastState?.terminated?.reason, 'Signaled');
    assert.match(crashing.conditions?.find((c) => c.type === 'Ready')?.message ?? '', /exited \(signal SIGKILL\), restarting/);
  });

  it('the pods-proxy dialer reaches a node\'s agent status port through its socket and refuses everything else', () => {
    const cfg = { ...resolveSandboxConfig({}), stateDir: '/run/nodemesh/sb-test' };
    const topo = computeTopology(cfg, 2);
    const t = { namespace: 'nodemesh-system', name: 'nodemesh-agent-node-2', nodeName: 'node-2', hostNetwork: true, port: 10256 };
    assert.deepEqual(planSandboxPodDial(t, cfg, topo), { socketPath: '/run/nodemesh/sb-test/agent-node-2.sock' });
    assert.match((planSandboxPodDial({ ...t, port: 22 }, cfg, topo) as { refused: string }).refused, /only the agent status port 10256 of node-2 .* not port 22/);
    assert.match((planSandboxPodDial({ ...t, hostNetwork: false }, cfg, topo) as { refused: string }).refused, /pod network, which the sandbox API server has no route into/);
    assert.match((planSandboxPodDial({ ...t, nodeName: 'node-9' }, cfg, topo) as { refused: string }).refused, /node node-9, which is not a node of this sandbox/);
  });
});

describe('sandbox API server pods/proxy to an agent socket (no root: a stand-in agent on the unix socket)', () => {
  let dir: string;
  let t: TestServer;
  let agent: Server;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-agent-pods-'));
    const cfg = { ...resolveSandboxConfig({}), stateDir: dir };
    const topo = computeTopology(cfg, 2);
    agent = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', date: 'Thu, 01 Jan 2026 00:00:00 GMT' });
      res.end(JSON.stringify({ node: 'node-1', path: req.url }));
    });
    await new Promise<void>((r) => agent.listen(meshPaths(cfg).statusSocket('node-1'), () => r()));
    t = await startTestServer({ podProxyDialer: createSandboxPodDialer(cfg, topo) });
    for (const node of ['node-1', 'node-2']) {
      const created = await t.request('POST', '/api/v1/namespaces/nodemesh-system/pods', computeAgentPod(template, node));
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const status = computeAgentPodStatus(template, { address: node === 'node-1' ? '10.200.0.11' : '10.200.0.12', daemon: running, readyz: { ok: true, message: '200' } }, '2026-11-21T09:59:00.000Z');
      assert.equal((await t.request('PATCH', `/api/v1/namespaces/nodemesh-system/pods/${created.body.metadata.name}/status`, { status }, { 'content-type': 'application/merge-patch+json' })).status, 200);
    }
  });
  after(async () => {
    await t?.close();
    agent?.closeAllConnections();
    await new Promise<void>((r) => (agent ? agent.close(() => r()) : r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('answers the agent\'s /statusz with its Date; a node whose agent socket is missing is a 503 Status', async () => {
    const r = await t.request('GET', '/api/v1/namespaces/nodemesh-system/pods/nodemesh-agent-node-1:10256/proxy/statusz');
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { node: 'node-1', path: '/statusz' });
    assert.equal(r.headers.get('date'), 'Thu, 01 Jan 2026 00:00:00 GMT');
    const down = await t.request('GET', '/api/v1/namespaces/nodemesh-system/pods/nodemesh-agent-node-2:10256/proxy/statusz');
    assert.equal(down.status, 503);
    assert.match(down.body.message, /error trying to reach pod nodemesh-system\/nodemesh-agent-node-2 at 10\.200\.0\.12:10256: ENOENT/);
    const other = await t.request('GET', '/api/v1/namespaces/nodemesh-system/pods/nodemesh-agent-node-1:22/proxy/');
    assert.equal(other.status, 503);
    assert.match(other.body.message, /only the agent status port 10256/);
  });
});
