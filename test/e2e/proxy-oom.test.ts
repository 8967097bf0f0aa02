/**
 * Privileged end-to-end test of reliability anchor F12 in a sandbox instance of its own (`oomf`):
 *   - the node proxy under a cgroup memory limit (the agent's --proxy-memory-max, here NODEMESH_PROXY_MEMORY_MAX):
 *     the proxy runs in a memory cgroup of its own; when that cgroup runs out of memory (a ballast process the test
 *     puts into it, exempt from the OOM killer, takes what the proxy has not), the kernel OOM-kills a proxy process
 *     and the agent restarts the whole proxy. That must behave as F3 (kill -9 of the proxy): mesh connects fail closed
 *     (refused or reset, never forwarded around the proxy: the STRICT echo sees only the proxy's connections and the
 *     pod-ingress guard drops nothing), an L4-only flow is unaffected, the proxy serves again within 5 s of the OOM
 *     kill, and the agent says it was OOM-killed (status, log, nodemesh_proxy_oom_kills_total).
 *   - the state directory full mid-write: in a private mount namespace with a 256 KiB tmpfs, the proxy pid file, the
 *     sandbox state and a workload certificate are each replaced after the disk is full: the write fails with
 *     ENOSPC, the old content is intact, no temp file is left (cilium#15446).
 * Needs root: without it the test FAILS (a skipped test looks like a pass). Brings its instance down at the end; the
 * ballast is stopped by its pid; the proxy's cgroup goes with the agent (or is removed here).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseOomKills } from '../../agent/proxy/proxy-cgroup.ts';
import { agentStatus, assertMeshWired, fetchAgent } from './helpers/mesh-control-plane.ts';
import type { LoadSummary } from './helpers/mesh-load.ts';
import { twoNodeEchoYaml } from './helpers/two-node-echo.ts';
import { NODEMESH, ROOT, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';

const INSTANCE = 'oomf';
const NS = 'oomf';
const LIMIT_MI = 384;
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000, extraEnv: { NODEMESH_PROXY_MEMORY_MAX: `${LIMIT_MI}Mi` } });
const { cfg, run, kubectl } = sb;
const eventually = poller({ timeoutMs: 120_000, everyMs: 500 });
const LOAD = join(import.meta.dirname, 'helpers/mesh-load.ts');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type MemoryView = { cgroup?: string; hierarchy?: string; limitBytes: number; usageBytes?: number; oomKills: number; problem?: string };
type ProxyView = { pid?: number; state?: string; restarts?: number; lastExit?: string; memory?: MemoryView };
const proxyOf = async (node: string): Promise<ProxyView> => ((await agentStatus(cfg, node)).mesh?.proxy ?? {}) as ProxyView;

const objects = `${twoNodeEchoYaml({ namespace: NS, client: 'client', echoPod: 'echo' })}---
apiVersion: v1
kind: Namespace
metadata: {name: l4}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: l4, labels: {app: plain}}
spec:
  nodeName: node-2
  containers: [{name: echo, image: nodemesh/echo, args: ["--port", "8080"], ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: l4}
spec:
  selector: {app: plain}
  ports: [{name: http, port: 80, targetPort: 8080}]
`;

/** curl inside a pod (its netns and cgroup: the datapath applies). */
async function podCurl(pod: string, ns: string, url: string): Promise<{ code: number; status: number; ms: number }> {
  const r = await run(NODEMESH, ['sandbox', 'exec', pod, '-n', ns, '--', 'curl', '-s', '--max-time', '2', '-o', '/dev/null', '-w', '%{http_code}', url], { timeoutMs: 30_000 });
  return { code: r.code, status: Number(r.stdout.trim()) || 0, ms: r.ms };
}

/** A pod's IP as the API server has it. */
async function podIp(pod: string, ns: string): Promise<string> {
  return ok(await kubectl('get', 'pod', pod, '-n', ns, '-o', 'jsonpath={.status.podIP}'), `${pod} IP`).trim();
}

/** Sum of a counter over one node's agent metrics. */
async function counterOn(node: string, name: string): Promise<number> {
  let sum = 0;
  for (const line of (await fetchAgent(cfg, node, 'metrics')).split('\n')) if (line.startsWith(name)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  return sum;
}

describe('F12: the node proxy at its cgroup memory limit; the state directory full (root)', { timeout: 900_000 }, () => {
  let dir = '';
  let ballast: ChildProcess | undefined;
  let proxyCgroup: string | undefined;
  /** Both nodes' proxy cgroups: removed at the end if the agents left them (a v1 cgroup is outside the sandbox's tree). */
  const proxyCgroups = new Set<string>();
  let passed = 0;

  before(async () => {
    requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs, mounts); run it with sudo');
    dir = await tempDir('nm-oomf-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    assertMeshWired(cfg);
    const file = join(dir, 'objects.yaml');
    writeFileSync(file, objects);
    ok(await kubectl('apply', '-f', file), 'kubectl apply');
    for (const [pod, ns] of [['client', NS], ['echo', NS], ['plain', 'l4']] as const) {
      await eventually(`pod ${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', ns, '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    }
    for (const node of ['node-1', 'node-2']) {
      const p = await eventually(`${node}'s proxy serving`, async () => { const v = await proxyOf(node); return v.state === 'serving' ? v : undefined; });
      if (p.memory?.cgroup) proxyCgroups.add(p.memory.cgroup);
    }
  });

  after(async () => {
    if (ballast && ballast.exitCode === null && ballast.signalCode === null) ballast.kill('SIGKILL');
    if (passed < 2) {
      const keep = `/tmp/nm-oomf-e2e-logs-${Date.now()}`;
      await run('cp', ['-r', dirname(sb.paths.supervisorLog), keep]);
      console.log(`sandbox logs kept in ${keep}`);
    }
    try {
      await sb.teardown({ dir });
    } finally {
      // The agent removes its proxy's cgroup when it stops; one killed before that leaves it empty: removed here.
      const left: string[] = [];
      for (const cg of proxyCgroups) if (existsSync(cg)) try { rmdirSync(cg); } catch { left.push(cg); }
      assert.deepEqual(left, [], 'proxy cgroups still holding processes after sandbox down');
    }
  });

  it('OOM in the proxy\'s cgroup: fail closed like kill -9, L4 unaffected, serving within 5 s, reported as an OOM kill', async () => {
    const echoSvc = ok(await kubectl('get', 'svc', 'echo', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}'), 'echo ClusterIP');
    const plainSvc = ok(await kubectl('get', 'svc', 'plain', '-n', 'l4', '-o', 'jsonpath={.spec.clusterIP}'), 'plain ClusterIP');
    const clientIp = await podIp('client', NS);
    await eventually('the echo answering through the mesh', async () => (await podCurl('client', NS, `http://${echoSvc}/warm`)).status === 200);

    const p0 = await proxyOf('node-1');
    const mem = p0.memory;
    assert.ok(mem, `node-1's agent reports no proxy memory cgroup: ${JSON.stringify(p0)}`);
    assert.equal(mem.problem, undefined, `the proxy's memory limit is not in force: ${mem.problem}`);
    assert.equal(mem.limitBytes, LIMIT_MI * 2 ** 20);
    assert.ok(mem.cgroup && existsSync(mem.cgroup), `the proxy cgroup ${mem.cgroup} does not exist`);
    proxyCgroup = mem.cgroup;
    proxyCgroups.add(proxyCgroup);
    const procs = readFileSync(join(proxyCgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    assert.ok(procs.includes(p0.pid!), `the proxy ${p0.pid} is not in its cgroup (${procs.join(',')})`);
    assert.ok(procs.length >= 3, `the proxy's workers are not in its cgroup with it (${procs.join(',')})`);
    const eventsFile = join(proxyCgroup, mem.hierarchy === 'v2' ? 'memory.events' : 'memory.oom_control');
    const oomBefore = parseOomKills(readFileSync(eventsFile, 'utf8'));
    const dropsBefore = await counterOn('node-2', 'nodemesh_pod_ingress_drops_total');
    const restartsBefore = p0.restarts ?? 0;

    // Mesh traffic during the whole episode (fail-closed oracle), from the client pod on node-1.
    const stopFile = join(dir, 'load.stop');
    const load = spawn(NODEMESH, ['sandbox', 'exec', 'client', '-n', NS, '--', process.execPath, LOAD, '--url', `http://${echoSvc}/oom`, '--rate', '50', '--connections', '4', '--fresh-every', '2', '--timeout-ms', '3000', '--stop-file', stopFile], { env: sb.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let loadOut = '';
    load.stdout!.setEncoding('utf8').on('data', (d: string) => { loadOut += d; });
    const loadClosed = new Promise<void>((r) => load.once('close', () => r()));
    await sleep(2000);

    // The ballast: moves itself into the proxy's cgroup and takes what is left and 64 MiB more, in touched 4 MiB
    // pieces, so the cgroup hits its limit. The proxy's processes are marked the OOM killer's first choice (raising
    // oom_score_adj needs no privilege; lowering the ballast's would need CAP_SYS_RESOURCE): the kernel kills a proxy
    // process, as when the proxy itself grows. bash, not sh: dash's echo writes the pid in two pieces, and cgroup v1
    // refuses the lone newline with EIO.
    for (const pid of procs) writeFileSync(`/proc/${pid}/oom_score_adj`, '1000');
    const usage = Number(readFileSync(join(proxyCgroup, mem.hierarchy === 'v2' ? 'memory.current' : 'memory.usage_in_bytes'), 'utf8'));
    const wantMi = Math.ceil((mem.limitBytes - usage) / 2 ** 20) + 64;
    const fill = `const a=[];for(let i=0;i<${Math.ceil(wantMi / 4)};i++)a.push(Buffer.alloc(4<<20,1));process.stdout.write('full\\n');setInterval(()=>a.length,1e6);`;
    ballast = spawn('bash', ['-c', `echo $$ > '${join(proxyCgroup, 'cgroup.procs')}' && exec '${process.execPath}' -e "${fill}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let ballastErr = '';
    ballast.stderr!.setEncoding('utf8').on('data', (d: string) => { ballastErr += d; });
    const tBallast = Date.now();
    let tOom = 0;
    while (Date.now() - tBallast < 30_000) {
      if (parseOomKills(readFileSync(eventsFile, 'utf8')) > oomBefore) { tOom = Date.now(); break; }
      await sleep(25);
    }
    ballast.kill('SIGKILL');
    assert.ok(tOom, `no OOM kill in ${proxyCgroup} within 30 s of a ${wantMi} MiB ballast (usage was ${usage}, limit ${mem.limitBytes}); ballast: ${ballastErr.slice(-500)}`);

    // L4-only flows do not go through the proxy: unaffected while it is down.
    const l4 = await podCurl('client', NS, `http://${plainSvc}/l4`);
    // Serving again within 5 s of the OOM kill.
    let backMs = -1;
    while (Date.now() - tOom < 8000) {
      const r = await podCurl('client', NS, `http://${echoSvc}/back`);
      if (r.status === 200) { backMs = Date.now() - tOom; break; }
    }
    writeFileSync(stopFile, '');
    await loadClosed;
    const line = loadOut.trim().split('\n').reverse().find((l) => l.startsWith('{'));
    assert.ok(line, `the load printed no summary:\n${loadOut.slice(-2000)}`);
    const s = JSON.parse(line) as LoadSummary;

    const p1 = await proxyOf('node-1');
    const figures = { oomAfterMs: tOom - tBallast, backMs, ballastMi: wantMi, usageBefore: usage, load: { total: s.total, failed: s.failed, byReason: s.byReason }, lastExit: p1.lastExit, oomKills: p1.memory?.oomKills, restarts: (p1.restarts ?? 0) - restartsBefore };
    console.log(`F12 OOM: ${JSON.stringify(figures)}`);
    assert.equal(l4.status, 200, `the L4-only flow failed while the proxy was OOM-killed: ${JSON.stringify(l4)}`);
    assert.ok(backMs >= 0 && backMs <= 5000, `the proxy was not serving again within 5 s of the OOM kill: ${JSON.stringify(figures)}`);
    assert.notEqual(p1.pid, p0.pid, 'the proxy was not restarted');
    assert.ok((p1.memory?.oomKills ?? 0) >= 1, `the agent did not count the OOM kill: ${JSON.stringify(p1.memory)}`);
    assert.match(p1.lastExit ?? '', /OOM-killed/, `the proxy's last exit is not reported as an OOM kill: ${p1.lastExit}`);
    assert.ok(await counterOn('node-1', 'nodemesh_proxy_oom_kills_total') >= 1, 'nodemesh_proxy_oom_kills_total did not move');
    const agentLog = readFileSync(join(cfg.stateDir, 'agent-node-1.log'), 'utf8');
    assert.match(agentLog, /proxy OOM-killed at its cgroup memory limit/, 'the agent log does not say the proxy was OOM-killed');
    // Fail closed: every failure is a refused or reset connection or a proxy's 5xx, never a hang...
    for (const reason of Object.keys(s.byReason)) assert.match(reason, /ECONNREFUSED|ECONNRESET|EPIPE|socket hang up|status 50[234]/, `a failure of another kind during the OOM: ${reason} (${JSON.stringify(s.byReason)})`);
    assert.ok(s.ok > 0, `no request succeeded around the episode: ${JSON.stringify(figures)}`);
    // ...and never forwarded around the proxy: the STRICT echo only ever saw the proxy's connections...
    const echoLog = ok(await kubectl('logs', 'echo', '-n', NS), 'echo logs');
    const sources = new Set([...echoLog.matchAll(/connection from ([\d.]+):/g)].map((m) => m[1]!));
    assert.ok(!sources.has(clientIp), `the echo got a connection straight from the client pod ${clientIp}: ${[...sources].join(',')}`);
    // ...and the kernel's STRICT guard on the echo's veth had nothing to drop (no bypass was even attempted).
    assert.equal(await counterOn('node-2', 'nodemesh_pod_ingress_drops_total'), dropsBefore, 'packets to the STRICT echo from a source other than the proxy');
    passed++;
  });

  it('state directory full mid-write: each file keeps its old content and no temp file is left', async () => {
    const mnt = join(dir, 'full-tmpfs');
    mkdirSync(mnt, { recursive: true });
    // A private mount namespace: the tiny tmpfs exists only for this one process and goes with it.
    const r = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=256k nmt-full '${mnt}' && exec '${process.execPath}' '${join(ROOT, 'test/e2e/helpers/full-disk-writes.ts')}' '${mnt}'`], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `full-disk-writes failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { filled: number; results: { what: string; code?: string; intact: boolean; temps: string[] }[] };
    assert.ok(out.filled > 0 && out.filled <= 256 * 1024, `the tmpfs was not the tiny one: ${out.filled} bytes filled`);
    for (const x of out.results) {
      assert.equal(x.code, 'ENOSPC', `${x.what}: the write over a full disk did not fail with ENOSPC: ${JSON.stringify(x)}`);
      assert.equal(x.intact, true, `${x.what}: the old content was damaged by a failed write`);
      assert.deepEqual(x.temps, [], `${x.what}: temp files left behind`);
    }
    assert.equal(readFileSync('/proc/mounts', 'utf8').includes(mnt), false, 'the test tmpfs leaked into the machine\'s mount namespace');
    console.log(`F12 full disk: ${JSON.stringify(out)}`);
    passed++;
  });
});

