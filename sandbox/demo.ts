/**
 * `nodemesh demo`: a two-node sandbox (built when none is up), the echo v1 and v2 Deployments and Services, a
 * client pod, and traffic from the client to echo pods on the other node, by pod address, pod DNS name and
 * Service name (eBPF datapath); then the mesh (demo-mesh.ts): a 90/10 canary route, mTLS STRICT, authorization,
 * a capture of the node link, `kubectl mesh status` and a trace across both nodes.
 */
import { AppsV1Api, CoreV1Api, type V1Deployment, type V1Pod, type V1Service } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT, sandboxPaths, type SandboxConfig } from './config.ts';
import { SandboxError } from './errors.ts';
import { locatePod } from './exec-pod.ts';
import { httpStatusOf, loadKubeConfig } from './kube.ts';
import { podWrapperArgv } from './kubelet/pod-exec.ts';
import { runMeshDemo } from './demo-mesh.ts';
import { meshPaths } from './mesh-wiring.ts';
import { readState } from './state.ts';
import { isSupervisorAlive, upSandbox, waitFor, waitForPodsReady } from './up.ts';

/** The demo's echo Deployment of one version (v1: two replicas, spread over the nodes by the scheduler; v2: one). */
export function computeEchoDeployment(version: 'v1' | 'v2' = 'v1'): V1Deployment {
  const labels = { app: 'echo', version };
  return {
    apiVersion: 'apps/v1', kind: 'Deployment',
    metadata: { name: `echo-${version}`, namespace: 'default', labels: { app: 'echo' } },
    spec: {
      replicas: version === 'v1' ? 2 : 1,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          containers: [{
            name: 'echo', image: 'nodemesh/echo', ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 2 },
          }],
          terminationGracePeriodSeconds: 5,
        },
      },
    },
  };
}

/** The demo's echo Service (every version), or the Service of one version (the route's backends). */
export function computeEchoService(version?: 'v1' | 'v2'): V1Service {
  return {
    apiVersion: 'v1', kind: 'Service',
    metadata: { name: version ? `echo-${version}` : 'echo', namespace: 'default', labels: { app: 'echo' } },
    spec: { selector: { app: 'echo', ...(version ? { version } : {}) }, ports: [{ name: 'http', port: 8080, targetPort: 8080, protocol: 'TCP' }] },
  };
}

/** The demo's client pod, bound to `nodeName`; it polls the Service by name (which answers once the datapath lands). */
export function computeClientPod(nodeName: string): V1Pod {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'client', namespace: 'default', labels: { app: 'client' } },
    spec: {
      nodeName,
      // Its own service account: the demo's AuthorizationPolicy allows exactly this identity.
      serviceAccountName: 'client',
      containers: [{ name: 'client', image: 'nodemesh/client', args: ['--url', 'http://echo.default.svc.cluster.local:8080/', '--interval', '5s', '--timeout', '1s'] }],
      terminationGracePeriodSeconds: 2,
    },
  };
}

/** Runs the demo, writing its narration through `out`; the client's own output goes to the terminal. */
export async function runDemo(cfg: SandboxConfig, out: (line: string) => void): Promise<void> {
  const paths = sandboxPaths(cfg);
  const state = await readState(paths.state);
  if (state && !(await isSupervisorAlive(state))) {
    throw new SandboxError('NM_ERR_SANDBOX_STALE_STATE', 'a previous sandbox crashed and left its state; run `nodemesh sandbox down`, then `nodemesh demo` again');
  }
  if (!state) {
    out('== 1. sandbox: 2 nodes');
    await upSandbox(cfg, { nodes: 2, podsPerNode: 0, out: (l) => out(`   ${l}`) });
  } else {
    out(`== 1. sandbox: already up (${state.nodes} nodes), reusing it`);
  }
  const kc = loadKubeConfig(paths.hostKubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);

  out('== 2. deploy: Deployments echo-v1 (2 replicas) and echo-v2 (1), Services echo, echo-v1, echo-v2, pod client (service account client)');
  for (const v of [undefined, 'v1', 'v2'] as const) await applyService(core, computeEchoService(v));
  for (const v of ['v1', 'v2'] as const) await applyDeployment(apps, computeEchoDeployment(v));
  await core.createNamespacedServiceAccount({ namespace: 'default', body: { metadata: { name: 'client', namespace: 'default' } } }).catch((err: unknown) => { if (httpStatusOf(err) !== 409) throw err; });
  let echoPods: V1Pod[] = [];
  await waitFor(async () => {
    const list = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=echo' });
    echoPods = list.items.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running' && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    return echoPods.filter((p) => p.metadata?.labels?.version === 'v1').length >= 2 && echoPods.some((p) => p.metadata?.labels?.version === 'v2');
  }, 90_000, 'the 3 echo pods to be Ready (is the deployment controller running? see `nodemesh sandbox status`)');
  echoPods = echoPods.filter((p) => p.metadata?.labels?.version === 'v1');
  const svc = await core.readNamespacedService({ name: 'echo', namespace: 'default' });
  for (const p of echoPods) out(`   echo pod ${p.metadata?.name} on ${p.spec?.nodeName} at ${p.status?.podIP}`);
  out(`   service echo: ClusterIP ${svc.spec?.clusterIP}:8080`);
  const nodes = (await core.listNode()).items.map((n) => n.metadata?.name ?? '');
  const first = echoPods[0] as V1Pod;
  const clientNode = nodes.find((n) => n !== first.spec?.nodeName) ?? first.spec?.nodeName ?? 'node-1';
  const existing = await core.readNamespacedPod({ name: 'client', namespace: 'default' }).catch(() => undefined);
  if (!existing) await core.createNamespacedPod({ namespace: 'default', body: computeClientPod(clientNode) });
  await waitForPodsReady(core, 'default', ['client'], 60_000);
  const client = await core.readNamespacedPod({ name: 'client', namespace: 'default' });
  const remote = echoPods.filter((p) => p.spec?.nodeName !== client.spec?.nodeName);
  out(`   client pod on ${client.spec?.nodeName} at ${client.status?.podIP}`);

  const targets = remote.length ? remote : echoPods;
  out(`== 3. traffic: client (${client.spec?.nodeName}) → echo pods on ${[...new Set(targets.map((p) => p.spec?.nodeName))].join(', ')}, by pod address`);
  await runClientInPod(cfg, targets.map((p) => `http://${p.status?.podIP}:8080/`));
  out('== 4. traffic by name: pod DNS names from each pod\'s hosts file (<pod>.default.pod.cluster.local, <a-b-c-d>.default.pod.cluster.local)');
  await runClientInPod(cfg, targets.map((p) => `http://${p.metadata?.name}.default.pod.cluster.local:8080/`));
  out(`== 5. by service name: echo.default.svc.cluster.local → ClusterIP ${svc.spec?.clusterIP}, balanced at connect() by the eBPF datapath`);
  const viaService = await runClientInPod(cfg, ['http://echo.default.svc.cluster.local:8080/'], 4);
  if (viaService !== 0) {
    out('   (no answer: a ClusterIP is only reachable through the nodemesh agent\'s datapath on each node; `nodemesh sandbox status` shows the agents)');
  }
  await runMeshDemo(cfg, kc, core, out, 6);
  out('');
  out('next:');
  out(`   export KUBECONFIG=${paths.hostKubeconfig} PATH="$PWD/bin:$PATH"    # kubectl and the kubectl-mesh plugin`);
  out('   kubectl get nodes,pods,svc,httproutes,nodestates -o wide');
  out('   kubectl mesh status          # flags go after "mesh": kubectl mesh status --kubeconfig FILE');
  out('   kubectl mesh stat            # success rate, requests/s and latency per service and route');
  out('   kubectl mesh connectivity test');
  out(`   jq -c '[.resource["k8s.node.name"], .kind, .name, .attributes["url.path"]]' ${meshPaths(cfg).spansFile}`);
  out('   bin/nodemesh sandbox exec client -- curl -s http://echo.default.svc.cluster.local:8080/');
  out('   bin/nodemesh sandbox down    # removes every namespace, cgroup, pin, process and file');
}

async function runClientInPod(cfg: SandboxConfig, urls: string[], count = 4): Promise<number> {
  const loc = await locatePod(cfg, 'client', 'default');
  const argv = podWrapperArgv(loc.cgroup, loc.netns, [process.execPath, join(REPO_ROOT, 'sandbox/workloads/client.ts'), ...urls.flatMap((u) => ['--url', u]), '--count', String(count), '--interval', '200ms', '--timeout', '1s']);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

async function applyService(core: CoreV1Api, svc: V1Service): Promise<void> {
  const name = svc.metadata?.name ?? '';
  const namespace = svc.metadata?.namespace ?? 'default';
  try {
    await core.createNamespacedService({ namespace, body: svc });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
    const cur = await core.readNamespacedService({ name, namespace });
    await core.replaceNamespacedService({ name, namespace, body: { ...svc, metadata: { ...svc.metadata, resourceVersion: cur.metadata?.resourceVersion }, spec: { ...svc.spec, clusterIP: cur.spec?.clusterIP, clusterIPs: cur.spec?.clusterIPs } } });
  }
}

async function applyDeployment(apps: AppsV1Api, d: V1Deployment): Promise<void> {
  const name = d.metadata?.name ?? '';
  const namespace = d.metadata?.namespace ?? 'default';
  try {
    await apps.createNamespacedDeployment({ namespace, body: d });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
    const cur = await apps.readNamespacedDeployment({ name, namespace });
    await apps.replaceNamespacedDeployment({ name, namespace, body: { ...d, metadata: { ...d.metadata, resourceVersion: cur.metadata?.resourceVersion } } });
  }
}
