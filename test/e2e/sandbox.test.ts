/**
 * Privileged end-to-end test of the sandbox cluster: `bin/nodemesh sandbox up` (2 nodes × 2 pods), kubectl
 * against it, Deployments and Services through the controllers and the kubelet, an informer's event order,
 * pod → pod traffic across nodes, route lookups that must end unreachable inside the sandbox, schema
 * validation of custom resources, restarts, and a `down` (after a kill -9 of the supervisor) that leaves
 * nothing behind. Runs as its own sandbox instance (`e2e`), so a user's sandbox is never touched.
 * Needs root: without it the test FAILS, because a skipped test looks like a pass.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, makeInformer, type Informer, type V1Pod } from '@kubernetes/client-node';
import { locateCgroupRoot, listCgroupPids } from '../../sandbox/cgroup.ts';
import { findLeftovers } from '../../sandbox/down.ts';
import { checkIsolation, defaultOutsideAddresses, formatWalk } from '../../sandbox/net/isolation.ts';
import { computePodNetNames } from '../../sandbox/net/topology.ts';
import { isOurProcessAlive, readProcStat } from '../../sandbox/process.ts';
import { readState } from '../../sandbox/state.ts';
import { NODEMESH, ROOT, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';

const sb = sandboxInstance('e2e');
const { cfg, paths, run, nodemesh, kubectl } = sb;
const eventually = poller({ timeoutMs: 60_000, everyMs: 250 });

type PodEvent = { type: string; name: string; uid: string; rv: number; phase?: string };

describe('sandbox end to end (root)', { timeout: 600_000 }, () => {
  let core: CoreV1Api;
  let informer: Informer<V1Pod> | undefined;
  const events: PodEvent[] = [];
  let watchFromRv = 0;
  let tmp = '';

  before(async () => {
    requireRoot();
    tmp = await tempDir('nm-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '2');
    const kc = new KubeConfig();
    kc.loadFromFile(sb.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    const list = await core.listNamespacedPod({ namespace: 'default' });
    watchFromRv = Number(list.metadata?.resourceVersion ?? 0);
    informer = makeInformer(kc, '/api/v1/namespaces/default/pods', () => core.listNamespacedPod({ namespace: 'default' }));
    for (const type of ['add', 'update', 'delete'] as const) {
      informer.on(type, (p: V1Pod) => events.push({ type, name: p.metadata?.name ?? '', uid: p.metadata?.uid ?? '', rv: Number(p.metadata?.resourceVersion), phase: p.status?.phase }));
    }
    informer.on('error', (err: unknown) => events.push({ type: `error ${String(err)}`, name: '', uid: '', rv: 0 }));
    await informer.start();
  });

  after(async () => {
    await informer?.stop();
    await sb.teardown({ dir: tmp, what: 'final down' });
  });

  it('refuses a second `up` while one is up', async () => {
    const again = await nodemesh('sandbox', 'up');
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already up/);
  });

  it('kubectl get nodes,pods -A -o wide shows both nodes and four pods with their addresses', async () => {
    const out = ok(await kubectl('get', 'nodes,pods', '-A', '-o', 'wide'), 'kubectl get');
    assert.match(out, /node-1\s+Ready.*10\.200\.0\.11/);
    assert.match(out, /node-2\s+Ready.*10\.200\.0\.12/);
    for (const [pod, node, net] of [['echo-1-1', 'node-1', '10.244.1.'], ['echo-1-2', 'node-1', '10.244.1.'], ['echo-2-1', 'node-2', '10.244.2.'], ['echo-2-2', 'node-2', '10.244.2.']] as const) {
      assert.match(out, new RegExp(`${pod}\\s+1/1\\s+Running.*${net.replace(/\./g, '\\.')}\\d+\\s+${node}`), `pod ${pod} on ${node} with an address in ${net}0/24:\n${out}`);
    }
    const status = ok(await nodemesh('sandbox', 'status'), 'sandbox status');
    assert.match(status, /forwarder\/node-1 running/);
  });

  it('pod → pod by address across nodes, with the caller\'s own address seen (no NAT)', async () => {
    const target = await core.readNamespacedPod({ name: 'echo-2-1', namespace: 'default' });
    const caller = await core.readNamespacedPod({ name: 'echo-1-1', namespace: 'default' });
    const r = ok(await nodemesh('sandbox', 'exec', 'echo-1-1', '--', 'curl', '-s', '--max-time', '5', `http://${target.status?.podIP}:8080/cross?x=1`), 'curl across nodes');
    const body = JSON.parse(r) as { pod: string; node: string; client: string; path: string; version: string };
    assert.equal(body.pod, 'echo-2-1');
    assert.equal(body.node, 'node-2');
    assert.equal(body.version, 'v1');
    assert.equal(body.path, '/cross?x=1');
    assert.equal(body.client.split(':')[0], caller.status?.podIP);
    const logs = ok(await nodemesh('sandbox', 'logs', 'echo-2-1'), 'sandbox logs');
    assert.match(logs, new RegExp(`connection from ${caller.status?.podIP?.replace(/\./g, '\\.')}:\\d+`));
    // Through the in-node API forwarder too: components inside a node reach https://127.0.0.1:6443.
    const nodeNetns = `${cfg.prefix}node-1`;
    const api = await run('ip', ['netns', 'exec', nodeNetns, 'curl', '-sk', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', 'https://127.0.0.1:6443/version']);
    assert.match(api.stdout, /^(200|401|403)$/, `API server through the node forwarder answered ${api.stdout} ${api.stderr}`);
  });

  it('sandbox exec passes stdin through and propagates the exit code', async () => {
    assert.equal((await run(NODEMESH, ['sandbox', 'exec', 'echo-1-2', '--', 'cat'], { input: 'through the pod\n' })).stdout, 'through the pod\n');
    assert.equal((await nodemesh('sandbox', 'exec', 'echo-1-2', '--', 'sh', '-c', 'exit 7')).code, 7);
    const cg = ok(await nodemesh('sandbox', 'exec', 'echo-1-2', '--', 'cat', '/proc/self/cgroup'), 'cat cgroup');
    assert.match(cg, new RegExp(`0::/${cfg.cgroupDirName}/node-1/pod-[0-9a-f]{8}`));
  });

  it('route lookups to outside addresses, followed hop by hop from every namespace, end unreachable inside the sandbox', async () => {
    const outside = [...new Set(['192.0.2.1', '8.8.8.8', ...(await defaultOutsideAddresses())])];
    const report = await checkIsolation(cfg, outside);
    assert.deepEqual(report.problems, [], report.problems.join('\n'));
    assert.ok(report.namespaces.length >= 7, `fabric, 2 nodes, 4 pods: ${report.namespaces.join(' ')}`);
    const pod = await core.readNamespacedPod({ name: 'echo-1-1', namespace: 'default' });
    const podNetns = computePodNetNames(cfg, pod.metadata?.uid ?? '').netns;
    for (const a of outside) {
      const w = report.walks.find((x) => x.from === podNetns && x.address === a);
      assert.ok(w, `a walk from ${podNetns} to ${a}`);
      assert.deepEqual(w.hops.map((h) => h.netns), [podNetns, `${cfg.prefix}node-1`], formatWalk(w));
      assert.equal(w.hops.at(-1)?.lookup.kind, 'unreachable', formatWalk(w));
    }
    const fabric = await run('ip', ['-n', `${cfg.prefix}fabric`, 'route', 'show']);
    assert.equal(fabric.stdout.trim(), '', 'the fabric has no routes at all');
    const nodeRoutes = await run('ip', ['-n', `${cfg.prefix}node-1`, 'route', 'show']);
    assert.match(nodeRoutes.stdout, /^unreachable default/m);
    assert.doesNotMatch(nodeRoutes.stdout, /^default via/m);
  });

  it('kubectl apply of a Service and a Deployment of nodemesh/echo brings 3 pods to Running on both nodes; hosts files name the service', async () => {
    const manifest = (labels: string): string => `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web${labels}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v2}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: echo
        image: nodemesh/echo
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
`;
    await writeFile(join(tmp, 'web.yaml'), manifest(', tier: frontend'));
    ok(await kubectl('apply', '-f', join(tmp, 'web.yaml')), 'kubectl apply');
    const pods = await eventually('3 web pods Running and Ready', async () => {
      const l = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' });
      const running = l.items.filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running' && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return running.length === 3 && l.items.length === 3 ? running : undefined;
    }, 90_000);
    assert.deepEqual(new Set(pods.map((p) => p.spec?.nodeName)), new Set(['node-1', 'node-2']));
    for (const p of pods) assert.ok(existsSync(`/run/netns/${computePodNetNames(cfg, p.metadata?.uid ?? '').netns}`));
    const svc = await core.readNamespacedService({ name: 'web', namespace: 'default' });
    assert.match(svc.spec?.clusterIP ?? '', /^10\.96\./);
    const hosts = await eventually('the hosts file to name the service', async () => {
      const r = await nodemesh('sandbox', 'exec', 'echo-1-1', '--', 'getent', 'hosts', 'web.default.svc.cluster.local');
      return r.code === 0 ? r.stdout : undefined;
    }, 15_000);
    assert.match(hosts, new RegExp(`^${svc.spec?.clusterIP?.replace(/\./g, '\\.')}\\s`));
    const byName = ok(await nodemesh('sandbox', 'exec', 'echo-1-1', '--', 'curl', '-s', '--max-time', '5', `http://${pods[0]?.metadata?.name}.default.pod.cluster.local:8080/`), 'curl by pod name');
    assert.equal((JSON.parse(byName) as { pod: string; version: string }).version, 'v2');

    // An edit that removes a label, applied again.
    await writeFile(join(tmp, 'web.yaml'), manifest(''));
    ok(await kubectl('apply', '-f', join(tmp, 'web.yaml')), 'kubectl apply without the label');
    const labels = JSON.parse(ok(await kubectl('get', 'deployment', 'web', '-o', 'jsonpath={.metadata.labels}'), 'get labels')) as Record<string, string>;
    assert.deepEqual(labels, { app: 'web' });

    // Scale to 1: two pods and their namespaces go.
    ok(await kubectl('scale', 'deployment', 'web', '--replicas=1'), 'kubectl scale');
    await eventually('web to be down to one pod', async () => {
      const l = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' });
      return l.items.length === 1 ? true : undefined;
    }, 60_000);
    // The object may go before the kubelet has finished (a force delete does that); the namespaces follow.
    const netnsOf = (p: V1Pod): string => `/run/netns/${computePodNetNames(cfg, p.metadata?.uid ?? '').netns}`;
    await eventually('two pod namespaces to be gone', async () => pods.filter((p) => !existsSync(netnsOf(p))).length === 2 || undefined, 20_000);

    ok(await kubectl('delete', '-f', join(tmp, 'web.yaml')), 'kubectl delete');
    await eventually('web pods, deployment and service to be gone', async () => {
      const l = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' });
      const g = await kubectl('get', 'deployment,service', 'web');
      return l.items.length === 0 && g.code !== 0 ? true : undefined;
    }, 60_000);
    await eventually('every web pod namespace to be gone', async () => pods.every((p) => !existsSync(netnsOf(p))) || undefined, 20_000);
  });

  it('the informer saw every pod event in order', async () => {
    const watched = events.filter((e) => e.rv > watchFromRv);
    assert.ok(!events.some((e) => e.type.startsWith('error')), events.filter((e) => e.type.startsWith('error')).map((e) => e.type).join('\n'));
    for (let i = 1; i < watched.length; i++) assert.ok(watched[i]!.rv > watched[i - 1]!.rv, `resourceVersion goes up: ${JSON.stringify(watched.slice(i - 1, i + 1))}`);
    const webUids = [...new Set(watched.filter((e) => e.name.startsWith('web-')).map((e) => e.uid))];
    assert.equal(webUids.length, 3);
    for (const uid of webUids) {
      const mine = watched.filter((e) => e.uid === uid);
      assert.equal(mine[0]?.type, 'add', `first event of ${mine[0]?.name} is add`);
      assert.equal(mine.at(-1)?.type, 'delete', `last event of ${mine[0]?.name} is delete`);
      assert.equal(mine.filter((e) => e.type === 'delete').length, 1);
      assert.ok(mine.some((e) => e.type === 'update' && e.phase === 'Running'), `${mine[0]?.name} was seen Running`);
    }
  });

  it('kubectl apply of a Service and an invalid custom resource names the field and stores nothing of it', async () => {
    const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.nodemesh.io}
spec:
  group: e2e.nodemesh.io
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
`;
    await writeFile(join(tmp, 'crd.yaml'), crd);
    ok(await kubectl('apply', '-f', join(tmp, 'crd.yaml')), 'apply test CRD');
    await eventually('the Widget kind to be served', async () => (await kubectl('get', 'widgets')).code === 0 || undefined, 20_000);
    await writeFile(join(tmp, 'bad.yaml'), `apiVersion: v1
kind: Service
metadata: {name: valid-svc, namespace: default}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
---
apiVersion: e2e.nodemesh.io/v1
kind: Widget
metadata: {name: bad-widget, namespace: default}
spec:
  size: "big"
`);
    const r = await kubectl('apply', '-f', join(tmp, 'bad.yaml'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /spec\.size/, r.stderr);
    assert.notEqual((await kubectl('get', 'widget', 'bad-widget')).code, 0, 'nothing of the invalid object is stored');
    ok(await kubectl('get', 'service', 'valid-svc'), 'the valid Service was applied');
    if (existsSync(join(ROOT, 'crds/trafficpolicies.nodemesh.io.yaml'))) {
      await writeFile(join(tmp, 'bad-tp.yaml'), `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: bad-tp, namespace: default}
spec:
  targetRefs: [{kind: Pod, name: echo}]
`);
      const tp = await kubectl('apply', '-f', join(tmp, 'bad-tp.yaml'));
      assert.notEqual(tp.code, 0);
      assert.match(tp.stderr, /spec\.targetRefs\[0\]\.kind/, tp.stderr);
      assert.notEqual((await kubectl('get', 'trafficpolicy', 'bad-tp')).code, 0);
    }
    ok(await kubectl('delete', '-f', join(tmp, 'crd.yaml')), 'delete test CRD');
    ok(await kubectl('delete', 'service', 'valid-svc'), 'delete valid-svc');
  });

  it('a container that fails is restarted per restartPolicy; one that succeeds under OnFailure is not', async () => {
    await writeFile(join(tmp, 'crash.yaml'), `apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: default}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: [sh, -c, 'sleep 0.2; exit 3']}
---
apiVersion: v1
kind: Pod
metadata: {name: finisher, namespace: default}
spec:
  restartPolicy: OnFailure
  containers:
  - {name: c, image: busybox, command: [sh, -c, 'echo done']}
`);
    ok(await kubectl('apply', '-f', join(tmp, 'crash.yaml')), 'apply crash pods');
    await eventually('crasher restarted twice', async () => {
      const p = await core.readNamespacedPod({ name: 'crasher', namespace: 'default' });
      return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 2 || undefined;
    }, 30_000);
    const fin = await eventually('finisher Succeeded', async () => {
      const p = await core.readNamespacedPod({ name: 'finisher', namespace: 'default' });
      return p.status?.phase === 'Succeeded' ? p : undefined;
    }, 30_000);
    assert.equal(fin.status?.containerStatuses?.[0]?.restartCount, 0);
    ok(await kubectl('delete', '-f', join(tmp, 'crash.yaml'), '--wait=true'), 'delete crash pods');
  });

  it('after kill -9 of the supervisor, `up` refuses and `down` leaves no namespace, cgroup, pin, process or file', async () => {
    // A pin, as the datapath will make, so the test proves pins go too.
    const pin = join(cfg.bpfDir, 'node-1', 'nm_e2e_test');
    ok(await run('bpftool', ['map', 'create', pin, 'type', 'hash', 'key', '4', 'value', '4', 'entries', '4', 'name', 'nm_e2e_test']), 'bpftool map create');
    assert.ok(existsSync(pin));
    const state = await readState(paths.state);
    assert.ok(state);
    const cgRoot = await locateCgroupRoot(cfg);
    assert.ok(cgRoot);
    const pids = await listCgroupPids(cgRoot);
    assert.ok(pids.length >= 5, `supervisor, forwarders and pods run in the sandbox's cgroups: ${pids.join(',')}`);
    const sup = state.entries.find((e) => e.kind === 'process' && e.role === 'supervisor');
    assert.ok(sup && sup.kind === 'process');
    process.kill(sup.pid, 'SIGKILL');
    await eventually('the supervisor to be gone', async () => !(await isOurProcessAlive(sup.pid, sup.startTime)) || undefined, 10_000);

    const again = await nodemesh('sandbox', 'up');
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /sandbox down/);

    const down = await nodemesh('sandbox', 'down');
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual(await findLeftovers(cfg), []);
    assert.ok(!existsSync(pin));
    const netns = ok(await run('ip', ['netns', 'list']), 'ip netns list');
    assert.doesNotMatch(netns, new RegExp(`^${cfg.prefix}`, 'm'));
    // A killed process whose parent (the supervisor) was killed too stays a zombie until PID 1 reaps it; a zombie runs nothing.
    for (const pid of pids) {
      const st = await readProcStat(pid);
      assert.ok(st === undefined || st.state === 'Z', `process ${pid} is gone (state ${st?.state})`);
    }
    const etc = existsSync('/etc/netns') ? await readdir('/etc/netns') : [];
    assert.deepEqual(etc.filter((n) => n.startsWith(cfg.prefix)), []);
    assert.ok(!existsSync(cfg.stateDir));
    const idempotent = await nodemesh('sandbox', 'down');
    assert.equal(idempotent.code, 0);
    assert.match(idempotent.stdout, /nothing to remove/);
  });

  it('a fresh `up` works after that, and a graceful `down` leaves nothing either', async () => {
    ok(await nodemesh('sandbox', 'up', '--nodes', '1', '--pods-per-node', '1'), 'second sandbox up');
    const r = ok(await nodemesh('sandbox', 'exec', 'echo-1-1', '--', 'curl', '-s', '--max-time', '5', 'http://echo-1-1.default.pod.cluster.local:8080/'), 'curl self by name');
    assert.equal((JSON.parse(r) as { pod: string }).pod, 'echo-1-1');
    const state = await readState(paths.state);
    const sup = state?.entries.find((e) => e.kind === 'process' && e.role === 'supervisor');
    assert.ok(sup && sup.kind === 'process');
    ok(await nodemesh('sandbox', 'down'), 'graceful down');
    assert.equal(await isOurProcessAlive(sup.pid, sup.startTime), false);
    assert.deepEqual(await findLeftovers(cfg), []);
  });
});
