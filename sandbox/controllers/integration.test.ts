/**
 * The controllers against the real embedded API server: a Deployment and a Service converge to a
 * ReplicaSet, pods on both nodes and EndpointSlices; then scale (through the scale subresource),
 * rollout, unschedulable pods, and deletion. The test plays kubelet: it reports pods Running and Ready
 * with an address, and finishes graceful deletions.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Deployment, V1EndpointSlice, V1Pod, V1ReplicaSet } from '@kubernetes/client-node';
import { startApiServer } from '../apiserver/server.ts';
import { startControllers, type RunningControllers } from './index.ts';
import { isNotFound, makeKubeClients, mergePatchOptions, type KubeClients } from './kube-api.ts';
import { isPodReady, isTerminating } from './object-meta.ts';

/** Typed client objects are class instances; compare their JSON. */
const plain = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

const patienceMs = Number(process.env['NM_TEST_PATIENCE_MS'] ?? 20_000);
const ns = 'default';

/** Retries `check` until it stops throwing or the patience runs out; then throws its last error. */
async function eventually<T>(what: string, check: () => Promise<T>, logs: string[]): Promise<T> {
  const deadline = Date.now() + patienceMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await check();
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = logs.slice(-25).join('\n  ');
  throw new Error(`${what}: not true after ${patienceMs} ms: ${(last as Error)?.message ?? last}\n controller log tail:\n  ${tail}`, { cause: last });
}

/** A kubelet stand-in: bound pods become Running+Ready with an address; terminating pods are removed. */
function startFakeKubelet(clients: KubeClients, onError: (err: unknown) => void): { stop(): Promise<void>; ready: Set<string> } {
  const ips = new Map<string, string>();
  const perNode = new Map<string, number>();
  /** Pods the kubelet holds not-ready (by name), to check endpoint conditions. */
  const notReady = new Set<string>();
  let stopped = false;
  const reconcilePod = async (pod: V1Pod): Promise<void> => {
    const name = pod.metadata?.name ?? '';
    if (isTerminating(pod)) {
      await clients.core.deleteNamespacedPod({ name, namespace: ns, gracePeriodSeconds: 0 }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      return;
    }
    const node = pod.spec?.nodeName;
    if (!node) return;
    const wantReady = !notReady.has(name);
    if (pod.status?.podIP && isPodReady(pod) === wantReady) return;
    let ip = ips.get(name);
    if (!ip) {
      const n = (perNode.get(node) ?? 0) + 1;
      perNode.set(node, n);
      ip = `10.244.${node === 'node-1' ? 1 : 2}.${n + 1}`;
      ips.set(name, ip);
    }
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const status = wantReady ? 'True' : 'False';
    const conditions = ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({ type, status: type === 'ContainersReady' || type === 'Ready' ? status : 'True', lastTransitionTime: now }));
    const hostIP = node === 'node-1' ? '192.168.50.1' : '192.168.50.2';
    await clients.core
      .patchNamespacedPodStatus({ name, namespace: ns, body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP, conditions } } }, mergePatchOptions)
      .catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
  };
  const tick = async (): Promise<void> => {
    const list = (await clients.core.listNamespacedPod({ namespace: ns })).items;
    // Several at a time, as many kubelets would report.
    for (let i = 0; i < list.length; i += 16) await Promise.all(list.slice(i, i + 16).map(reconcilePod));
  };
  const loop = (async () => {
    while (!stopped) {
      await tick().catch(onError);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    ready: notReady,
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

function deployment(image: string, replicas: number): V1Deployment {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace: ns },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web', version: 'v1' } },
        spec: { containers: [{ name: 'echo', image, ports: [{ name: 'http', containerPort: 8080 }] }] },
      },
    },
  };
}

describe('controllers against the embedded API server', () => {
  let dir = '';
  let server: Awaited<ReturnType<typeof startApiServer>> | undefined;
  let controllers: RunningControllers | undefined;
  let kubelet: ReturnType<typeof startFakeKubelet> | undefined;
  let clients: KubeClients;
  const logs: string[] = [];
  const kubeletErrors: unknown[] = [];

  const pods = async (): Promise<V1Pod[]> => (await clients.core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' })).items.filter((p) => !isTerminating(p));
  const replicaSets = async (): Promise<V1ReplicaSet[]> => (await clients.apps.listNamespacedReplicaSet({ namespace: ns })).items;
  const slices = async (svc: string): Promise<V1EndpointSlice[]> => (await clients.discovery.listNamespacedEndpointSlice({ namespace: ns, labelSelector: `kubernetes.io/service-name=${svc}` })).items;
  const readyAddresses = (list: V1EndpointSlice[]): string[] =>
    list.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready).map((e) => e.addresses[0] ?? '').sort();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nm-controllers-'));
    server = await startApiServer({ port: 0, tls: true, stateDir: join(dir, 'state'), crdDirs: [] });
    const kubeconfig = join(dir, 'kubeconfig');
    await server.writeKubeconfig(kubeconfig);
    clients = makeKubeClients(kubeconfig);
    for (const name of ['node-1', 'node-2']) {
      await clients.core.createNode({ body: { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name, 'topology.kubernetes.io/zone': `zone-${name.slice(-1)}` } } } });
      await clients.core.patchNodeStatus({ name, body: { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }], allocatable: { pods: '110' } } } }, mergePatchOptions);
    }
    controllers = await startControllers({ kubeconfigPath: kubeconfig, logger: (line) => logs.push(`${Date.now() % 100000} ${line}`) });
    kubelet = startFakeKubelet(clients, (err) => kubeletErrors.push(err));
  });

  after(async () => {
    await kubelet?.stop();
    await controllers?.stop();
    clients?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
    if (process.env['NM_TEST_VERBOSE']) console.log(logs.join('\n'));
  });

  it('brings a Deployment and its Service to ready pods and endpoints on both nodes', async () => {
    await clients.core.createNamespacedService({
      namespace: ns,
      body: { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: ns }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
    });
    await clients.apps.createNamespacedDeployment({ namespace: ns, body: deployment('nodemesh/echo:v1', 3) });

    const rs = await eventually('one ReplicaSet web-<hash> owned by the Deployment', async () => {
      const list = await replicaSets();
      assert.equal(list.length, 1);
      const r = list[0] as V1ReplicaSet;
      const hash = r.metadata?.labels?.['pod-template-hash'];
      assert.ok(hash);
      assert.equal(r.metadata?.name, `web-${hash}`);
      assert.equal(r.spec?.selector.matchLabels?.['pod-template-hash'], hash);
      assert.equal(r.metadata?.ownerReferences?.[0]?.kind, 'Deployment');
      return r;
    }, logs);

    const running = await eventually('3 pods Ready, spread over both nodes', async () => {
      const list = await pods();
      assert.equal(list.length, 3);
      assert.ok(list.every((p) => isPodReady(p) && p.status?.podIP));
      assert.ok(list.every((p) => p.metadata?.name?.startsWith(`${rs.metadata?.name}-`)));
      assert.deepEqual(new Set(list.map((p) => p.spec?.nodeName)), new Set(['node-1', 'node-2']));
      return list;
    }, logs);

    await eventually('an EndpointSlice with the 3 pods on port 8080', async () => {
      const list = await slices('web');
      assert.equal(list.length, 1);
      const s = list[0] as V1EndpointSlice;
      assert.match(s.metadata?.name ?? '', /^web-.+/);
      assert.equal(s.metadata?.labels?.['endpointslice.kubernetes.io/managed-by'], 'endpointslice-controller.k8s.io');
      assert.equal(s.metadata?.ownerReferences?.[0]?.kind, 'Service');
      assert.deepEqual(plain(s.ports), [{ name: 'http', port: 8080, protocol: 'TCP' }]);
      assert.deepEqual(readyAddresses(list), running.map((p) => p.status?.podIP ?? '').sort());
      assert.ok(s.endpoints?.every((e) => e.nodeName && e.zone?.startsWith('zone-') && e.targetRef?.kind === 'Pod'));
    }, logs);

    await eventually('Deployment status: 3 available, Available=True', async () => {
      const d = await clients.apps.readNamespacedDeployment({ name: 'web', namespace: ns });
      assert.deepEqual([d.status?.replicas, d.status?.updatedReplicas, d.status?.readyReplicas, d.status?.availableReplicas], [3, 3, 3, 3]);
      assert.equal(d.status?.observedGeneration, d.metadata?.generation);
      assert.equal(d.status?.conditions?.find((c) => c.type === 'Available')?.status, 'True');
      assert.equal(d.status?.conditions?.find((c) => c.type === 'Progressing')?.reason, 'NewReplicaSetAvailable');
      assert.equal(d.metadata?.annotations?.['deployment.kubernetes.io/revision'], '1');
    }, logs);
  });

  it('reports a not-ready pod as not ready in its slice', async () => {
    const [victim] = await pods();
    kubelet?.ready.add(victim?.metadata?.name ?? '');
    await eventually('the endpoint turns not ready', async () => {
      const eps = (await slices('web')).flatMap((s) => s.endpoints ?? []);
      const ep = eps.find((e) => e.targetRef?.name === victim?.metadata?.name);
      assert.deepEqual(plain(ep?.conditions), { ready: false, serving: false, terminating: false });
    }, logs);
    kubelet?.ready.delete(victim?.metadata?.name ?? '');
  });

  it('scales down through the scale subresource, deleting pods and endpoints', async () => {
    await clients.apps.patchNamespacedDeploymentScale({ name: 'web', namespace: ns, body: { spec: { replicas: 1 } } }, mergePatchOptions);
    await eventually('1 pod, 1 endpoint', async () => {
      assert.equal((await pods()).length, 1);
      assert.equal(readyAddresses(await slices('web')).length, 1);
      const d = await clients.apps.readNamespacedDeployment({ name: 'web', namespace: ns });
      assert.equal(d.status?.availableReplicas, 1);
    }, logs);
  });

  it('rolls out a template change to a new ReplicaSet', async () => {
    await clients.apps.patchNamespacedDeployment({ name: 'web', namespace: ns, body: { spec: { replicas: 4 } } }, mergePatchOptions);
    await eventually('4 pods', async () => assert.equal((await pods()).filter(isPodReady).length, 4), logs);
    const [oldRs] = await replicaSets();
    await clients.apps.patchNamespacedDeployment(
      { name: 'web', namespace: ns, body: { spec: { template: { metadata: { labels: { app: 'web', version: 'v2' } }, spec: { containers: [{ name: 'echo', image: 'nodemesh/echo:v2', ports: [{ name: 'http', containerPort: 8080 }] }] } } } } },
      mergePatchOptions,
    );
    let maxPods = 0;
    await eventually('all 4 pods from the new ReplicaSet, the old one at 0', async () => {
      const list = await pods();
      maxPods = Math.max(maxPods, list.length);
      const sets = await replicaSets();
      assert.equal(sets.length, 2);
      const fresh = sets.find((r) => r.metadata?.uid !== oldRs?.metadata?.uid) as V1ReplicaSet;
      assert.equal(fresh.metadata?.annotations?.['deployment.kubernetes.io/revision'], '2');
      assert.equal(sets.find((r) => r.metadata?.uid === oldRs?.metadata?.uid)?.spec?.replicas, 0);
      assert.equal(list.length, 4);
      assert.ok(list.every((p) => p.metadata?.labels?.['version'] === 'v2' && isPodReady(p)));
      const d = await clients.apps.readNamespacedDeployment({ name: 'web', namespace: ns });
      assert.deepEqual([d.status?.updatedReplicas, d.status?.availableReplicas], [4, 4]);
      assert.equal(readyAddresses(await slices('web')).length, 4);
    }, logs);
    assert.ok(maxPods <= 5, `maxSurge 25% of 4 allows 5 pods at most, saw ${maxPods}`);
  });

  it('marks a pod no node fits as Unschedulable', async () => {
    await clients.core.createNamespacedPod({
      namespace: ns,
      body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'picky', namespace: ns }, spec: { nodeSelector: { disk: 'ssd' }, containers: [{ name: 'c', image: 'nodemesh/echo' }] } },
    });
    await eventually('PodScheduled=False/Unschedulable', async () => {
      const pod = await clients.core.readNamespacedPod({ name: 'picky', namespace: ns });
      const cond = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
      assert.equal(cond?.status, 'False');
      assert.equal(cond?.reason, 'Unschedulable');
      assert.match(cond?.message ?? '', /0\/2 nodes are available: 2 node\(s\) didn't match Pod's node affinity\/selector/);
      assert.equal(pod.spec?.nodeName, undefined);
    }, logs);
    await clients.core.patchNode({ name: 'node-2', body: { metadata: { labels: { disk: 'ssd' } } } }, mergePatchOptions);
    await eventually('bound once a node fits', async () => {
      const pod = await clients.core.readNamespacedPod({ name: 'picky', namespace: ns });
      assert.equal(pod.spec?.nodeName, 'node-2');
    }, logs);
    await clients.core.deleteNamespacedPod({ name: 'picky', namespace: ns });
  });

  it('splits 250 endpoints into slices of at most 100', async () => {
    await clients.core.createNamespacedService({
      namespace: ns,
      body: { apiVersion: 'v1', kind: 'Service', metadata: { name: 'many', namespace: ns }, spec: { selector: { app: 'many' }, ports: [{ port: 9000 }] } },
    });
    // Pre-bound bare pods: the scheduler has nothing to do, the kubelet reports them Ready.
    await Promise.all(
      Array.from({ length: 250 }, (_, i) =>
        clients.core.createNamespacedPod({
          namespace: ns,
          body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: `many-${i}`, namespace: ns, labels: { app: 'many' } }, spec: { nodeName: i % 2 ? 'node-1' : 'node-2', containers: [{ name: 'c', image: 'nodemesh/echo' }] } },
        }),
      ),
    );
    await eventually('250 ready endpoints in slices of at most 100', async () => {
      const list = await slices('many');
      assert.equal(readyAddresses(list).length, 250);
      const sizes = list.map((s) => s.endpoints?.length ?? 0);
      // Packing depends on the order pods turn ready (upstream does not rebalance either): 3 or 4 slices.
      assert.ok(sizes.every((n) => n <= 100) && sizes.length >= 3 && sizes.length <= 4, `slice sizes ${sizes.join(',')}`);
      assert.ok(list.every((s) => s.ports?.[0]?.port === 9000));
    }, logs);
    const names = (await slices('many')).map((s) => s.metadata?.name).sort();
    await clients.core.deleteCollectionNamespacedPod({ namespace: ns, labelSelector: 'app=many', gracePeriodSeconds: 0 });
    await eventually('all gone, the same slice kept as placeholder', async () => {
      const list = await slices('many');
      assert.equal(list.length, 1);
      assert.equal(list[0]?.endpoints?.length ?? 0, 0);
      assert.ok(names.includes(list[0]?.metadata?.name), 'a slice was reused rather than recreated');
    }, logs);
    await clients.core.deleteNamespacedService({ name: 'many', namespace: ns });
  });

  it('removes ReplicaSets, pods and slices when the Deployment and Service are deleted', async () => {
    await clients.apps.deleteNamespacedDeployment({ name: 'web', namespace: ns });
    await eventually('no ReplicaSets or pods left', async () => {
      assert.equal((await replicaSets()).length, 0);
      assert.equal((await clients.core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' })).items.length, 0);
    }, logs);
    assert.ok((await slices('web')).length > 0, 'the Service keeps its (placeholder) slice');
    await clients.core.deleteNamespacedService({ name: 'web', namespace: ns });
    await eventually('no slices left', async () => assert.equal((await slices('web')).length, 0), logs);
    assert.deepEqual(kubeletErrors, []);
  });
});
