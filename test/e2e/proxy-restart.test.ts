/**
 * Privileged end-to-end test of the node proxy's lifecycle under load (reliability anchors F4 and F11), in a sandbox
 * instance of its own (`drain`): a load pod on node-1 sends a steady 200 requests/s (keep-alive connections, every
 * 5th request on a new one) to a Service with three echo pods on node-2 (cross-node: HBONE) and one with an echo pod
 * on node-1 (same node), all STRICT mTLS, through the real agents, kernel redirect and proxies.
 *   F4: `kill -USR2 <agent>` restarts that node's proxy gracefully (a new process binds next to the old one, then the
 *       old one drains), on node-1 and then node-2: not one request fails, and the old process is gone.
 *   F11: SIGKILL of one echo pod's process: no request fails (in-flight idempotent ones are retried on another
 *       endpoint), and attempts on it stop within 2 s (the proxies' retry counters stop moving); SIGTERM of another
 *       (the echo closes its listener and its connections): no request fails.
 * Needs root: without it the test FAILS (a skipped test looks like a pass). Brings its instance down at the end.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { agentStatus, assertMeshWired, fetchAgent, readSupervisorReport } from './helpers/mesh-control-plane.ts';
import type { LoadSummary } from './helpers/mesh-load.ts';
import { NODEMESH, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';

const INSTANCE = 'drain';
const NS = 'drain';
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000 });
const { cfg, kubectl } = sb;
const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });
const LOAD = join(import.meta.dirname, 'helpers/mesh-load.ts');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const echoPod = (name: string, node: string, app: string): string => `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${NS}, labels: {app: ${app}}}
spec:
  nodeName: ${node}
  serviceAccountName: echo
  # A killed backend stays dead: what happens next is the proxies' doing, not a quick container restart.
  restartPolicy: Never
  containers:
  - name: echo
    image: nodemesh/echo
    args: ["--port", "8080"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}`;

const service = (name: string): string => `---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${NS}}
spec:
  selector: {app: ${name}}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ${name}, namespace: ${NS}}
spec:
  parentRefs: [{group: "", kind: Service, name: ${name}, port: 80}]
  rules: [{backendRefs: [{name: ${name}, port: 80}]}]`;

const objects = `
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: load, namespace: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ${NS}}
---
apiVersion: v1
kind: Pod
metadata: {name: load, namespace: ${NS}, labels: {app: load}}
spec:
  nodeName: node-1
  serviceAccountName: load
  containers: [{name: main, image: nodemesh/echo, args: ["--port", "8080"]}]
${echoPod('echo-r0', 'node-2', 'remote')}
${echoPod('echo-r1', 'node-2', 'remote')}
${echoPod('echo-r2', 'node-2', 'remote')}
${echoPod('echo-l0', 'node-1', 'local')}
${service('remote')}
${service('local')}
---
apiVersion: nodemesh.io/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: ${NS}}
spec: {mode: STRICT}
`;

/** A load run inside the load pod, stopped by creating `stopFile`. */
function startLoad(dir: string, name: string, urls: string[]): { stop(): Promise<LoadSummary>; child: ChildProcess } {
  const stopFile = join(dir, `${name}.stop`);
  const args = ['sandbox', 'exec', 'load', '-n', NS, '--', process.execPath, LOAD, ...urls.flatMap((u) => ['--url', u]), '--rate', '200', '--connections', '16', '--fresh-every', '5', '--stop-file', stopFile];
  const child = spawn(NODEMESH, args, { env: sb.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  return {
    child,
    async stop() {
      writeFileSync(stopFile, '');
      await closed;
      const line = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
      assert.ok(line, `the load printed no summary (exit ${child.exitCode}):\n${out.slice(-2000)}\n${err.slice(-2000)}`);
      return JSON.parse(line) as LoadSummary;
    },
  };
}

/** The pid of a node's agent (the sandbox supervisor's daemon `agent/<node>`), checked against its command line. */
function agentPid(node: string): number {
  const d = readSupervisorReport(cfg).daemons.find((x) => x.name === `agent/${node}`);
  assert.ok(d?.pid, `no running agent/${node} in the supervisor report`);
  const cmd = readFileSync(`/proc/${d.pid}/cmdline`, 'utf8');
  assert.match(cmd, /agent\/main\.ts/, `pid ${d.pid} is not the agent: ${cmd}`);
  return d.pid;
}

/** The pid of a pod's container process, as the sandbox kubelet reports it. */
function containerPid(pod: string): number {
  for (const n of readSupervisorReport(cfg).nodes) for (const p of n.pods) if (p.key === `${NS}/${pod}`) {
    const pid = p.containers[0]?.pid;
    assert.ok(pid, `pod ${pod} has no running container: ${JSON.stringify(p)}`);
    return pid;
  }
  throw new Error(`pod ${NS}/${pod} not in the supervisor report`);
}

type ProxyView = { pid?: number; state?: string; handover?: unknown; lastHandover?: { outcome: string; oldPid?: number; newPid?: number; readyMs: number; drainedMs: number } };
const proxyOf = async (node: string): Promise<ProxyView> => ((await agentStatus(cfg, node)).mesh?.proxy ?? {}) as ProxyView;

/** Sum of `nodemesh_retries_total` over every series of a node's agent. */
async function retriesOn(node: string): Promise<number> {
  const text = await fetchAgent(cfg, node, 'metrics');
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith('nodemesh_retries_total')) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  return sum;
}
const retries = async (): Promise<number> => (await retriesOn('node-1')) + (await retriesOn('node-2'));

describe('node proxy restarts and backend deaths under load (root)', { timeout: 900_000 }, () => {
  let dir = '';
  let remote = '';
  let local = '';
  const loads: ChildProcess[] = [];
  /** Tests that got to their end; fewer than all: the logs are kept. */
  let passed = 0;

  before(async () => {
    requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs, tc); run it with sudo');
    dir = await tempDir('nm-drain-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    assertMeshWired(cfg);
    const file = join(dir, 'objects.yaml');
    writeFileSync(file, objects);
    ok(await kubectl('apply', '-f', file), 'kubectl apply');
    for (const pod of ['load', 'echo-r0', 'echo-r1', 'echo-r2', 'echo-l0']) {
      await eventually(`pod ${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', NS, '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    }
    remote = ok(await kubectl('get', 'svc', 'remote', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}'), 'remote ClusterIP');
    local = ok(await kubectl('get', 'svc', 'local', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}'), 'local ClusterIP');
    for (const node of ['node-1', 'node-2']) await eventually(`${node}'s proxy serving`, async () => (await proxyOf(node)).state === 'serving', 120_000);
    // Every endpoint answers through the mesh before the load starts.
    await eventually('all four echo pods answering through the mesh', async () => {
      const r = await sb.run(NODEMESH, ['sandbox', 'exec', 'load', '-n', NS, '--', process.execPath, LOAD, '--url', `http://${remote}/warm`, '--url', `http://${local}/warm`, '--rate', '50', '--seconds', '2'], { timeoutMs: 60_000 });
      const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
      if (!line) return false;
      const s = JSON.parse(line) as LoadSummary;
      return s.failed === 0 && ['echo-r0', 'echo-r1', 'echo-r2', 'echo-l0'].every((p) => (s.byPod[p] ?? 0) > 0);
    }, 120_000, 1000);
  });

  after(async () => {
    for (const c of loads) if (c.exitCode === null) c.kill('SIGTERM');
    // The agents' and proxies' logs go with the instance: keep a copy when something failed.
    if (passed < 2) {
      const keep = `/tmp/nm-drain-e2e-logs-${Date.now()}`;
      await sb.run('cp', ['-r', dirname(sb.paths.supervisorLog), keep]);
      console.log(`sandbox logs kept in ${keep}`);
    }
    await sb.teardown({ dir });
  });

  it('F4: a graceful restart of the proxy on node-1, then on node-2, fails no request', async () => {
    // A short delay keeps requests in flight at every moment of the handover.
    const load = startLoad(dir, 'f4', [`http://${remote}/f4?delay=20ms`, `http://${local}/f4?delay=20ms`]);
    loads.push(load.child);
    await sleep(4000);
    const handovers: Record<string, ProxyView['lastHandover']> = {};
    for (const node of ['node-1', 'node-2']) {
      const before = await proxyOf(node);
      assert.ok(before.pid, `${node}: proxy pid unknown`);
      process.kill(agentPid(node), 'SIGUSR2');
      const after = await eventually(`${node}: the new proxy serving and the old one drained`, async () => {
        const p = await proxyOf(node);
        return p.pid !== before.pid && p.handover === undefined && p.lastHandover?.oldPid === before.pid ? p : undefined;
      }, 60_000);
      assert.equal(after.lastHandover?.outcome, 'graceful', JSON.stringify(after.lastHandover));
      assert.throws(() => process.kill(before.pid!, 0), /ESRCH/, `${node}: the old proxy ${before.pid} still runs`);
      handovers[node] = after.lastHandover;
      await sleep(3000);
    }
    const s = await load.stop();
    const summary = JSON.stringify({ total: s.total, failed: s.failed, byReason: s.byReason, failures: s.failures.slice(0, 10), byPod: s.byPod, handovers });
    assert.equal(s.failed, 0, summary);
    assert.ok(s.total >= 0.8 * 200 * (s.durationMs / 1000), `the load fell behind its rate: ${summary}`);
    assert.ok((s.byPod['echo-l0'] ?? 0) > 0 && (s.byPod['echo-r0'] ?? 0) > 0, summary);
    passed++;
    console.log(`F4: ${s.total} requests in ${(s.durationMs / 1000).toFixed(1)} s, 0 failed; handovers ${JSON.stringify(handovers)}`);
  });

  it('F11: SIGKILL of one of three backends, then SIGTERM of another: no failed request, attempts on the dead one stop within 2 s', async () => {
    const load = startLoad(dir, 'f11', [`http://${remote}/f11?delay=30ms`]);
    loads.push(load.child);
    await sleep(4000);
    const started = Date.now();
    process.kill(containerPid('echo-r0'), 'SIGKILL');
    const killedAt = Date.now() - started;
    await sleep(2000);
    const retriesAt2s = await retries();
    await sleep(2000);
    const retriesAt4s = await retries();
    // Attempts on a dead endpoint fail and are retried: a counter still moving means it is still being tried.
    assert.equal(retriesAt4s, retriesAt2s, `retries kept happening 2-4 s after the SIGKILL (${retriesAt2s} → ${retriesAt4s}): the dead endpoint is still tried`);
    process.kill(containerPid('echo-r1'), 'SIGTERM');
    await sleep(4000);
    const s = await load.stop();
    const summary = JSON.stringify({ total: s.total, failed: s.failed, byReason: s.byReason, failures: s.failures.slice(0, 10), byPod: s.byPod });
    assert.equal(s.failed, 0, summary);
    assert.ok((s.byPod['echo-r2'] ?? 0) > 0, summary);
    passed++;
    console.log(`F11: ${s.total} requests, 0 failed; SIGKILL at ${killedAt} ms; retries ${retriesAt2s} at +2 s, ${retriesAt4s} at +4 s`);
  });
});
