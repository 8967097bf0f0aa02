/**
 * End-to-end add-one for nodemesh: the sandbox's API server in this process, the agent's real
 * watches and sync loop writing the benchmark node's maps, N services created, then one more:
 * time from the create call to the first successful connect from the client pod.
 */
import { CoreV1Api, DiscoveryV1Api, KubeConfig, type V1EndpointSlice, type V1Service } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import type { MapSet } from '../bpf/index.ts';
import { ClusterWatch } from '../agent/informers.ts';
import { silentLogger } from '../agent/logger.ts';
import { SyncLoop } from '../agent/sync-loop.ts';
import { startApiServer } from '../sandbox/apiserver/server.ts';
import { type BenchTopology, inNetnsArgv } from './l4-topology.ts';
import type { EndToEnd } from './l4-report.ts';

/** The Service and EndpointSlice of benchmark service i (all share the 4 backends). */
export function benchObjects(t: BenchTopology, i: number, vip: string): { svc: V1Service; slice: V1EndpointSlice } {
  const name = `s${i}`;
  return {
    svc: { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'bench' }, spec: { clusterIP: vip, clusterIPs: [vip], ports: [{ name: 'http', port: 80, targetPort: t.backendPort, protocol: 'TCP' }] } },
    slice: {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'bench', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: t.backendPort, protocol: 'TCP' }],
      endpoints: t.backendAddrs.map((a) => ({ addresses: [a], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'bench-node' })),
    },
  };
}

function firstConnect(t: BenchTopology, tool: string, vip: string): { started: Promise<void>; done: Promise<number | null> } {
  const argv = inNetnsArgv(t.clientCgroup, t.clientNs, [tool, 'first', '10000', '80', vip]);
  const c = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let markStarted: () => void = () => {};
  const started = new Promise<void>((r) => (markStarted = r));
  c.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('STARTED')) markStarted();
  });
  const done = new Promise<number | null>((resolve) => {
    c.on('exit', () => {
      markStarted();
      try {
        resolve((JSON.parse(out.trim().split('\n').pop() ?? '{}') as { atUs: number | null }).atUs);
      } catch {
        resolve(null);
      }
    });
  });
  return { started, done };
}

function within<T>(p: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(why())), ms)))]).finally(() => clearTimeout(timer));
}

async function pool<T>(items: readonly T[], width: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await fn(items[next++] as T);
  }));
}

/** Runs the end-to-end measurement for each N (ascending; services accumulate). */
export async function measureEndToEnd(opts: { t: BenchTopology; maps: MapSet; tool: string; ns: readonly number[]; samples: number; vip: (i: number) => string; log: (line: string) => void }): Promise<EndToEnd[]> {
  const api = await startApiServer({ host: '127.0.0.1', port: 0, serviceCIDR: '10.96.0.0/12', watchHistoryWindow: 100_000 });
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const loop = new SyncLoop({ maps: opts.maps, nodeName: 'bench-node', log: silentLogger });
  const watch = new ClusterWatch(kc, 'bench-node', {
    service: (ty, o) => loop.onService(ty, o), endpointSlice: (ty, o) => loop.onEndpointSlice(ty, o), node: (ty, o) => loop.onNode(ty, o), pod: (ty, o) => loop.onPod(ty, o), synced: () => loop.markSynced(),
  }, silentLogger);
  const out: EndToEnd[] = [];
  try {
    await core.createNamespace({ body: { metadata: { name: 'bench' } } }).catch(() => undefined);
    watch.start();
    await within(loop.whenReady(), 60_000, () => `the agent's watches never listed (still waiting for ${watch.unsynced().join(', ')})`);
    let created = 0;
    let extra = 200_000;
    for (const n of opts.ns) {
      const todo = Array.from({ length: n - created }, (_, k) => created + k);
      const t0 = Date.now();
      await pool(todo, 32, async (i) => {
        const { svc, slice } = benchObjects(opts.t, i, opts.vip(i));
        await core.createNamespacedService({ namespace: 'bench', body: svc });
        await discovery.createNamespacedEndpointSlice({ namespace: 'bench', body: slice });
      });
      created = n;
      await new Promise((r) => setTimeout(r, 200));
      await within(loop.idle(), 120_000, () => 'the agent did not catch up with the services created');
      opts.log(`  e2e: ${n} services in the API server (${Date.now() - t0} ms to create), agent caught up`);
      const e: EndToEnd = { n, samplesMs: [], agentMs: [], apiToEventMs: [] };
      for (let s = 0; s < opts.samples; s++) {
        const i = extra++;
        const vip = opts.vip(i);
        const { svc, slice } = benchObjects(opts.t, i, vip);
        const probe = firstConnect(opts.t, opts.tool, vip);
        await probe.started;
        const startUs = (performance.timeOrigin + performance.now()) * 1000;
        // The slice first, then the service: the agent programs the service with its endpoints in one pass.
        await discovery.createNamespacedEndpointSlice({ namespace: 'bench', body: slice });
        await core.createNamespacedService({ namespace: 'bench', body: svc });
        const at = await probe.done;
        await loop.idle();
        const last = loop.status().lastPass;
        if (at === null) throw new Error(`e2e: service ${vip} never answered`);
        e.samplesMs.push((at - startUs) / 1000);
        if (last) {
          // lagMs: event received → pass started; then planning and the map writes.
          const total = last.lagMs + last.planMs + last.ms;
          e.agentMs.push(total);
          e.apiToEventMs.push(Date.parse(last.at) - total - startUs / 1000);
        }
        await core.deleteNamespacedService({ name: svc.metadata?.name ?? '', namespace: 'bench' });
        await discovery.deleteNamespacedEndpointSlice({ name: slice.metadata?.name ?? '', namespace: 'bench' });
        await loop.idle();
      }
      opts.log(`  e2e N=${n}: API → connect ${e.samplesMs.map((x) => x.toFixed(2)).join(' ')} ms`);
      out.push(e);
    }
  } finally {
    await watch.stop();
    await loop.stop();
    await api.close();
  }
  return out;
}
