/**
 * Privileged end-to-end test of the L4 datapath in a sandbox of its own (instance `dp`: namespaces
 * nm-dp-*, cgroup nodemesh-sandbox-dp, bpffs /sys/fs/bpf/nodemesh-dp), with one nodemesh agent per
 * node run by the supervisor: ClusterIP TCP on the same node and across nodes without SNAT,
 * getpeername, UDP DNS through the kube-dns service address, balance over 4 endpoints, endpoint
 * churn under 50 looping clients, ECONNREFUSED at once without backends, and a kill -9 of the
 * agent with 20 long-lived connections open. FAILS (never skips) without root or bpftool.
 * Debug a run: NODEMESH_SANDBOX_INSTANCE=dp bin/nodemesh sandbox exec client -- sh   (while it runs)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, DiscoveryV1Api, type V1Pod, type V1Service } from '@kubernetes/client-node';
import { CGROUP_PROGRAMS } from '../../bpf/datapath.ts';
import { locateCgroupRoot } from '../../sandbox/cgroup.ts';
import { findLeftovers } from '../../sandbox/down.ts';
import { locatePod } from '../../sandbox/exec-pod.ts';
import { loadKubeConfig } from '../../sandbox/kube.ts';
import { podWrapperArgv } from '../../sandbox/kubelet/pod-exec.ts';
import type { SupervisorReport } from '../../sandbox/supervisor-main.ts';
import { NODEMESH, ROOT, poller, requireRoot, sandboxInstance } from './helpers/sandbox-instance.ts';

const CLIENT = join(import.meta.dirname, 'helpers/datapath-client.ts');
const DNS = join(ROOT, 'sandbox/workloads/dns.ts');
const sb = sandboxInstance('dp');
const { cfg, paths, env: ENV } = sb;
const eventually = poller({ timeoutMs: 30_000, everyMs: 100 });

function sh(cmd: string, args: string[], env = ENV): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}\n${e.stdout ?? ''}`, { cause: err });
  }
}

/** Starts a command in a pod (its netns and cgroup); resolves with its last stdout JSON line. */
async function startInPod(pod: string, argv: string[], timeoutMs = 60_000): Promise<{ child: ChildProcess; result: Promise<Record<string, unknown>>; lines: () => string }> {
  const loc = await locatePod(cfg, pod, 'default');
  const w = podWrapperArgv(loc.cgroup, loc.netns, argv);
  const child = spawn(w[0] as string, w.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  const result = new Promise<Record<string, unknown>>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`${argv.join(' ')} in pod ${pod} took over ${timeoutMs} ms; stdout ${out} stderr ${err}`));
    }, timeoutMs);
    child.on('exit', () => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try {
        res(JSON.parse(last) as Record<string, unknown>);
      } catch {
        rej(new Error(`${argv.join(' ')} in pod ${pod} printed no JSON; stdout ${out} stderr ${err}`));
      }
    });
  });
  return { child, result, lines: () => out };
}

async function client<T = Record<string, unknown>>(...args: string[]): Promise<T> {
  const r = await (await startInPod('client', [process.execPath, CLIENT, ...args])).result;
  if (r.error) throw new Error(`client ${args.join(' ')}: ${String(r.error)}`);
  return r as T;
}

function readyFile(tmp: string, pod: string): string {
  return join(tmp, `ready-${pod}`);
}

function echoPod(tmp: string, name: string, node: string, labels: Record<string, string>): V1Pod {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app: 'echo4', ...labels } },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: 'echo', image: 'nodemesh/echo', args: ['--port', '8080'], ports: [{ name: 'http', containerPort: 8080 }],
        // Readiness the test controls (the endpoint leaves the service while the pod keeps serving),
        // and only once the server listens: a ready endpoint must accept connections.
        readinessProbe: { exec: { command: ['sh', '-c', `test -f ${readyFile(tmp, name)} && curl -sf -o /dev/null --max-time 1 http://127.0.0.1:8080/`] }, periodSeconds: 1 },
      }],
    },
  };
}

function service(name: string, selector: Record<string, string>, port = 80): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec: { selector, ports: [{ port, targetPort: 8080, protocol: 'TCP' }] } };
}

function agentLog(node: string): string {
  const p = join(cfg.stateDir, `agent-${node}.log`);
  return existsSync(p) ? readFileSync(p, 'utf8') : '';
}

function supervisorReport(): SupervisorReport {
  return JSON.parse(readFileSync(paths.supervisorStatus, 'utf8')) as SupervisorReport;
}

interface CgroupTreeEntry {
  cgroup: string;
  programs: Array<{ id: number; attach_type: string; name: string }>;
}

describe('L4 datapath in the sandbox (root)', { timeout: 900_000 }, () => {
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  let tmp = '';
  let cgroupRoot = '';
  const ip: Record<string, string> = {};
  let clientIp = '';
  let broughtUp = false;

  before(async () => {
    // Fail, never skip: a skipped privileged test looks like a pass in CI.
    requireRoot('this test needs root (network namespaces, cgroups, BPF): run it with sudo');
    sh('bpftool', ['version']);
    sh('make', ['-s', '-C', join(ROOT, 'bpf')]);
    tmp = mkdtempSync(join(tmpdir(), 'nmdp-'));
    if (existsSync(paths.state)) sh(NODEMESH, ['sandbox', 'down']);
    broughtUp = true;
    sh(NODEMESH, ['sandbox', 'up', '--nodes', '2', '--pods-per-node', '0']);
    cgroupRoot = (await locateCgroupRoot(cfg)) ?? '';
    assert.ok(cgroupRoot, 'the sandbox found no cgroup2 hierarchy');
    core = loadKubeConfig(paths.hostKubeconfig).makeApiClient(CoreV1Api);
    discovery = loadKubeConfig(paths.hostKubeconfig).makeApiClient(DiscoveryV1Api);
    for (const node of ['node-1', 'node-2']) {
      await eventually(`agent on ${node} ready (${join(cfg.stateDir, `agent-${node}.log`)})`, () => {
        const r = sh('nsenter', [`--net=/run/netns/${cfg.prefix}${node}`, '--', 'curl', '-s', '--max-time', '1', 'http://127.0.0.1:10256/readyz']);
        return r.startsWith('ok');
      }, 60_000, 250);
    }
    for (const p of ['e1a', 'e1b', 'e2a', 'e2b']) writeFileSync(readyFile(tmp, p), 'ok\n');
    const pods = [
      echoPod(tmp, 'e1a', 'node-1', { pick: 'e1a' }),
      echoPod(tmp, 'e1b', 'node-1', {}),
      echoPod(tmp, 'e2a', 'node-2', { pick: 'e2a' }),
      echoPod(tmp, 'e2b', 'node-2', {}),
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: 'default', labels: { app: 'client' } }, spec: { nodeName: 'node-1', terminationGracePeriodSeconds: 1, containers: [{ name: 'c', image: 'nodemesh/client', command: ['sleep', 'infinity'] }] } } as V1Pod,
    ];
    for (const p of pods) await core.createNamespacedPod({ namespace: 'default', body: p });
    for (const s of [service('echo4', { app: 'echo4' }), service('same', { pick: 'e1a' }), service('cross', { pick: 'e2a' }), service('empty', { app: 'nothing' })]) {
      const created = await core.createNamespacedService({ namespace: 'default', body: s });
      ip[s.metadata?.name ?? ''] = created.spec?.clusterIP ?? '';
    }
    await eventually('every pod Ready', async () => {
      const list = await core.listNamespacedPod({ namespace: 'default' });
      return list.items.length === 5 && list.items.every((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    }, 90_000, 500);
    clientIp = (await core.readNamespacedPod({ name: 'client', namespace: 'default' })).status?.podIP ?? '';
    await eventually('echo4 answering from all 4 pods', async () => {
      const r = await client<{ pods: Record<string, number> }>('many', `http://${ip.echo4}/`, '40');
      return Object.keys(r.pods).length === 4;
    }, 30_000, 500);
  });

  after(() => {
    const problems: string[] = [];
    if (broughtUp) {
      try {
        sh(NODEMESH, ['sandbox', 'down']);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    return findLeftovers(cfg).then((left) => assert.deepEqual([...problems, ...left], [], 'the test sandbox is gone'));
  });

  it('reaches a ClusterIP backend on the same node and on the other node, showing the client its pod address (no SNAT)', async () => {
    const same = await client<{ pods: Record<string, number>; clients: string[]; errors: Record<string, number> }>('many', `http://${ip.same}/`, '5');
    assert.deepEqual(same.pods, { e1a: 5 });
    assert.deepEqual(same.clients, [clientIp]);
    const cross = await client<{ pods: Record<string, number>; clients: string[] }>('many', `http://${ip.cross}/`, '5');
    assert.deepEqual(cross.pods, { e2a: 5 });
    assert.deepEqual(cross.clients, [clientIp]);
    const loc = await locatePod(cfg, 'e2a', 'default');
    const log = readFileSync(join(loc.logDir, 'echo.log'), 'utf8');
    assert.match(log, new RegExp(`connection from ${clientIp.replace(/\./g, '\\.')}:\\d+`), `echo e2a's connection log names the client pod ${clientIp}`);
  });

  it('shows the service address to getpeername', async () => {
    const r = await client<{ remote: string; echo: { client: string } }>('peer', ip.echo4 as string, '80');
    assert.equal(r.remote, `${ip.echo4}:80`);
    assert.ok(r.echo.client.startsWith(`${clientIp}:`));
  });

  it('answers DNS over UDP (and TCP) through the kube-dns service address 10.96.0.10', async () => {
    const run = async (...args: string[]): Promise<Record<string, unknown>> => (await startInPod('client', [process.execPath, DNS, 'query', ...args])).result;
    const udp = await run('echo4.default.svc.cluster.local');
    assert.equal(udp.rcode, 'NOERROR', JSON.stringify(udp));
    assert.deepEqual(udp.addresses, [ip.echo4]);
    assert.equal(udp.from, '10.96.0.10:53', 'the reply appears to come from the service address');
    const tcp = await run('cross.default.svc.cluster.local', '--tcp');
    assert.deepEqual(tcp.addresses, [ip.cross]);
    assert.equal((await run('nothing.default.svc.cluster.local')).rcode, 'NXDOMAIN');
    assert.equal((await run('example.org')).rcode, 'REFUSED');
    const resolv = readFileSync(join('/etc/netns', (await locatePod(cfg, 'client', 'default')).netns, 'resolv.conf'), 'utf8');
    assert.match(resolv, /nameserver 10\.96\.0\.10/);
    assert.match(resolv, /search default\.svc\.cluster\.local svc\.cluster\.local cluster\.local/);
  });

  it('balances 2,000 connects over 4 endpoints within ±10%', async () => {
    const r = await client<{ pods: Record<string, number>; errors: Record<string, number> }>('many', `http://${ip.echo4}/`, '2000');
    assert.deepEqual(r.errors, {});
    assert.deepEqual(Object.keys(r.pods).sort(), ['e1a', 'e1b', 'e2a', 'e2b']);
    for (const [pod, n] of Object.entries(r.pods)) assert.ok(n >= 450 && n <= 550, `${pod} got ${n} of 2000 (want 500 ± 50): ${JSON.stringify(r.pods)}`);
  });

  it('refuses a service without backends at once (ECONNREFUSED in under 10 ms)', async () => {
    const r = await client<{ results: Array<{ code: string; ms: number }> }>('refused', ip.empty as string, '80', '21');
    const measured = r.results.slice(1); // the first connect of a fresh process pays for JIT and module loading
    assert.ok(measured.every((x) => x.code === 'ECONNREFUSED'), JSON.stringify(r.results));
    const worst = Math.max(...measured.map((x) => x.ms));
    console.log(`refusals: slowest ${worst.toFixed(2)} ms, median ${measured.map((x) => x.ms).sort((a, b) => a - b)[10]?.toFixed(2)} ms`);
    assert.ok(worst < 10, `slowest refusal ${worst.toFixed(2)} ms: ${measured.map((x) => x.ms.toFixed(2)).join(' ')}`);
  });

  it('loses no connect while endpoints churn under 50 looping clients', async () => {
    const run = await startInPod('client', [process.execPath, CLIENT, 'loop', `http://${ip.echo4}/`, '50', '15000'], 60_000);
    const started = Date.now();
    const waitSlice = (want: (ready: Set<string>) => boolean, what: string): Promise<true> =>
      eventually(what, async () => {
        const slices = await discovery.listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=echo4' });
        const ready = new Set<string>();
        for (const s of slices.items) for (const e of s.endpoints ?? []) if (e.conditions?.ready !== false) ready.add(e.targetRef?.name ?? '');
        return want(ready) ? true : undefined;
      }, 20_000, 100);
    // New endpoints join, then old ones leave (unready first, deleted once out of the service).
    for (const p of ['e1c', 'e2c']) writeFileSync(readyFile(tmp, p), 'ok\n');
    await core.createNamespacedPod({ namespace: 'default', body: echoPod(tmp, 'e1c', 'node-1', {}) });
    await core.createNamespacedPod({ namespace: 'default', body: echoPod(tmp, 'e2c', 'node-2', {}) });
    await waitSlice((r) => r.has('e1c') && r.has('e2c'), 'e1c and e2c ready in echo4');
    rmSync(readyFile(tmp, 'e1b'));
    rmSync(readyFile(tmp, 'e2c'));
    await waitSlice((r) => !r.has('e1b') && !r.has('e2c'), 'e1b and e2c out of echo4');
    await new Promise((r) => setTimeout(r, 500));
    await core.deleteNamespacedPod({ name: 'e2c', namespace: 'default' });
    writeFileSync(readyFile(tmp, 'e1b'), 'ok\n');
    await waitSlice((r) => r.has('e1b'), 'e1b back in echo4');
    // Back to the four endpoints the next test counts on.
    rmSync(readyFile(tmp, 'e1c'));
    await waitSlice((r) => !r.has('e1c'), 'e1c out of echo4');
    await new Promise((r) => setTimeout(r, 500));
    await core.deleteNamespacedPod({ name: 'e1c', namespace: 'default' });
    assert.ok(Date.now() - started < 15_000, 'the churn happened while the clients were looping');
    const r = (await run.result) as { total: number; pods: Record<string, number>; errors: Record<string, number> };
    console.log(`churn: ${r.total} requests by 50 clients, by pod ${JSON.stringify(r.pods)}`);
    assert.deepEqual(r.errors, {}, `failed connects during churn (of ${r.total}): ${JSON.stringify(r)}`);
    assert.ok(r.total > 1000, `only ${r.total} requests in 15 s`);
    assert.ok((r.pods.e1c ?? 0) > 0 && (r.pods.e2c ?? 0) > 0, `new endpoints got traffic: ${JSON.stringify(r.pods)}`);
  });

  it('keeps serving through a kill -9 of the agent and catches up within 1 s of its restart', async () => {
    const node = 'node-1';
    const hold = await startInPod('client', [process.execPath, CLIENT, 'hold', `http://${ip.echo4}/`, '20', '8000'], 60_000);
    await eventually('20 connections held', () => hold.lines().includes('HOLDING'), 20_000, 50);
    const daemon = supervisorReport().daemons.find((d) => d.name === `agent/${node}`);
    const pid = daemon?.pid;
    assert.ok(pid, `agent/${node} has a pid in ${paths.supervisorStatus}`);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.some((a) => a.endsWith('agent/main.ts')) && cmdline.includes(node) && cmdline.includes(join(cfg.bpfDir, node)), `pid ${pid} is our agent: ${cmdline.join(' ')}`);
    const startsBefore = agentLog(node).split('\n').filter((l) => / starting /.test(l)).length;

    process.kill(pid, 'SIGKILL');
    const killedAt = Date.now();
    // While no agent runs: a new service, and new connects that must still be balanced.
    const late = await core.createNamespacedService({ namespace: 'default', body: service('late', { app: 'echo4' }, 81) });
    const lateIp = late.spec?.clusterIP ?? '';
    const first = await startInPod('client', [process.execPath, CLIENT, 'first', lateIp, '81', '15000'], 30_000);
    const down = await client<{ pods: Record<string, number>; errors: Record<string, number> }>('many', `http://${ip.echo4}/`, '200');
    const downEnded = Date.now();
    const restartLine = await eventually('the agent restarted', () => agentLog(node).split('\n').filter((l) => / starting /.test(l))[startsBefore], 15_000, 20);
    const restartAt = Date.parse(restartLine.split(' ')[0] as string);
    assert.ok(restartAt > downEnded, `the 200 connects ran while no agent ran (killed ${killedAt}, done ${downEnded}, restarted ${restartAt})`);
    assert.deepEqual(down.errors, {});
    assert.deepEqual(Object.keys(down.pods).sort(), ['e1a', 'e1b', 'e2a', 'e2b']);
    for (const [p, n] of Object.entries(down.pods)) assert.ok(n >= 30 && n <= 70, `${p} got ${n} of 200 while the agent was down: ${JSON.stringify(down.pods)}`);

    const f = (await first.result) as { at: number | null };
    assert.ok(f.at, 'the service created while the agent was down never answered');
    console.log(`kill -9: agent restarted ${restartAt - killedAt} ms after the kill; the service created meanwhile answered ${f.at - restartAt} ms after the restart; 200 connects while down: ${JSON.stringify(down.pods)}`);
    assert.ok(f.at - restartAt <= 1000, `service created while down answered ${f.at - restartAt} ms after the restart (want ≤ 1000)`);

    const held = (await hold.result) as { failures: string[]; reconnected: number; requests: number };
    assert.deepEqual(held.failures, [], 'every long-lived connection survived, on its own backend');
    assert.equal(held.reconnected, 0);
    assert.ok(held.requests > 20 * 30);

    // Each program attached exactly once to each node's cgroup, nowhere else.
    const tree = JSON.parse(sh('bpftool', ['-j', 'cgroup', 'tree', cgroupRoot.replace(/\/[^/]+$/, '')])) as CgroupTreeEntry[];
    const ours = new Set<string>(CGROUP_PROGRAMS.map((p) => p.program));
    for (const n of ['node-1', 'node-2']) {
      const entry = tree.filter((e) => e.cgroup.endsWith(`${cfg.cgroupDirName}/${n}`)).flatMap((e) => e.programs);
      assert.deepEqual(entry.map((p) => p.name).sort(), [...ours].sort(), `bpftool cgroup tree: programs on ${n}`);
    }
    // Never on the machine's root cgroup, and inside this instance only on node cgroups (other
    // sandboxes or benchmarks running at the same time have their own, elsewhere).
    const mount = cgroupRoot.replace(/\/[^/]+$/, '');
    const elsewhere = tree
      .filter((e) => e.cgroup === mount || e.cgroup === '/' || (e.cgroup.startsWith(`${cgroupRoot}/`) && !/\/node-\d+$/.test(e.cgroup)) || e.cgroup === cgroupRoot)
      .flatMap((e) => e.programs.filter((p) => ours.has(p.name)).map((p) => `${e.cgroup}:${p.name}`));
    assert.deepEqual(elsewhere, [], 'none of our programs is attached to the root cgroup or outside the node cgroups');
    assert.match(agentLog(node), /attachments="nm_sk4_connect:adopted/);
    const status = sh(NODEMESH, ['sandbox', 'status']);
    assert.match(status, new RegExp(`agent/${node} running pid \\d+ restarts=1`), status);
  });
});
