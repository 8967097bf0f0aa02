/**
 * `npm run bench:l7-load`: the held-load categories of the reliability anchors (§3.1) that bench:l7 does not cover,
 * on loopback, one run:
 * - L3: N idle keep-alive connections (default 5,000) and a 200 req/s canary against the nodemesh proxy (one worker),
 *   nginx and HAProxy configured as bench:l7 does: canary errors, memory per idle connection (RSS and PSS deltas of
 *   the process tree), file descriptors before / held / after close.
 * - L2: connection churn on the mesh path at 200/s: a new client connection per request to the source proxy, then a
 *   new mTLS (HBONE) connection per request to the destination proxy; handshake failures; RSS before, after and
 *   after a settle time.
 * - L7: capacity found with wrk, then 3× capacity offered open loop, then the normal rate again: status codes, time
 *   outs, latency of the answered requests, memory, worker restarts, time until one-second windows look like the
 *   baseline again.
 * Prints a summary, writes bench/results/l7-load-<date>.json and docs/bench-l7-load.md.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { MeshCa } from '../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../agent/certs/workload-key.ts';
import { PRIMARY_EXEC_ARGV } from '../l7proxy/process-memory.ts';
import type { ChurnResult } from './lib/churn.ts';
import type { FixedRateResult } from './lib/fixed-rate.ts';
import type { IdleProbeResult } from './lib/idle-connections.ts';
import type { MeshBenchCerts } from './lib/nodemesh-mesh.ts';
import { computeRecoveryS, computeWindowGood, type OverloadResult } from './lib/overload.ts';
import { type ManagedProcess, requireL7BenchTools, runCommand, startProcess, stopAllProcesses, stopProcess, waitForPort } from './lib/procs.ts';
import { findFreePort, readCpuSeconds, readFdCount, readMachineInfo, readTcpSockets, readMemory, readProcessTree, type MachineInfo } from './lib/system.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const { values: argv } = parseArgs({
  options: {
    idle: { type: 'string', default: '5000' },
    hold: { type: 'string', default: '15' },
    'canary-rate': { type: 'string', default: '200' },
    'churn-rate': { type: 'string', default: '200' },
    'churn-seconds': { type: 'string', default: '30' },
    settle: { type: 'string', default: '30' },
    factor: { type: 'string', default: '3' },
    'overload-seconds': { type: 'string', default: '10' },
    'recovery-seconds': { type: 'string', default: '30' },
    'max-connections': { type: 'string', default: '1000' },
    'cpu-limit': { type: 'string', default: '0.25' },
    only: { type: 'string', default: 'l3,l2,l7' },
    'no-peers': { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (argv.help) {
  console.log(`usage: npm run bench:l7-load -- [--idle 5000] [--hold 15] [--canary-rate 200] [--churn-rate 200] [--churn-seconds 30]
  [--settle 30 (the anchor says 60)] [--factor 3] [--overload-seconds 10] [--recovery-seconds 30] [--max-connections 1000]
  [--cpu-limit 0.25 (L7: cores for the proxy; 0 = its whole CPU)]
  [--only l3,l2,l7] [--no-peers] [--no-docs] [--quick]`);
  process.exit(0);
}
const QUICK = argv.quick;
const IDLE = QUICK ? 1000 : Number(argv.idle);
const HOLD = QUICK ? 5 : Number(argv.hold);
const CANARY_RATE = Number(argv['canary-rate']);
const CHURN_RATE = Number(argv['churn-rate']);
const CHURN_S = QUICK ? 5 : Number(argv['churn-seconds']);
const SETTLE_S = QUICK ? 5 : Number(argv.settle);
const FACTOR = Number(argv.factor);
const OVERLOAD_S = QUICK ? 5 : Number(argv['overload-seconds']);
const RECOVERY_S = QUICK ? 10 : Number(argv['recovery-seconds']);
const MAX_CONNS = Number(argv['max-connections']);
const CPU_LIMIT = Number(argv['cpu-limit']);
const ONLY = new Set(argv.only.split(','));
const PEERS = !argv['no-peers'];
const TD = 'cluster.local';
const CPUS = os.availableParallelism();
// The generators and the upstream share CPU 0; the proxy under test owns the last CPU.
const GEN_CPU = '0';
const SUT_CPU = String(CPUS - 1);
const BODY_BYTES = 128;
/** Idle-connection memory goal of the anchors (L3, "calibrate"). */
const GOAL_KIB_PER_CONN = 64;

const dir = mkdtempSync(path.join(os.tmpdir(), 'nmb7-load-'));
const log = (m: string): void => { process.stderr.write(`[bench:l7-load] ${m}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Kind = 'nodemesh' | 'nginx' | 'haproxy';
type Variant = { kind: Kind; label: string; port: number; proc: ManagedProcess; control?: number };

function nginxConf(name: string, http: string): string {
  const base = path.join(dir, name);
  mkdirSync(base, { recursive: true });
  writeFileSync(path.join(base, 'nginx.conf'), `worker_processes 1;
worker_rlimit_nofile 65536;
pid ${base}/nginx.pid;
error_log ${base}/error.log crit;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path ${base}/body; proxy_temp_path ${base}/proxy; fastcgi_temp_path ${base}/fastcgi;
    uwsgi_temp_path ${base}/uwsgi; scgi_temp_path ${base}/scgi;
    ${http}
}
`);
  return path.join(base, 'nginx.conf');
}

/** Upstream: nginx answering 200 with a fixed body, on 127.0.0.1 and on the mesh "pod" address 127.0.0.3. */
async function startUpstream(): Promise<number> {
  const port = await findFreePort();
  const conf = nginxConf('upstream', `server { listen 127.0.0.1:${port} backlog=4096; listen 127.0.0.3:${port} backlog=4096;
      location / { default_type text/plain; return 200 "${'x'.repeat(BODY_BYTES)}"; } }`);
  const p = startProcess('upstream', 'nginx', ['-c', conf, '-g', 'daemon off; master_process on;'], { cpus: GEN_CPU, logFile: path.join(dir, 'upstream.log') });
  await waitForPort(port, p, 10_000, path.join(dir, 'upstream.log'));
  return port;
}

/** One proxy on SUT_CPU forwarding plain HTTP/1.1 keep-alive to the upstream, configured as bench:l7 does; the
 *  connection limits are raised so that they admit the idle connections (nginx worker_connections, HAProxy maxconn). */
async function startVariant(kind: Kind, upstream: number): Promise<Variant> {
  const port = await findFreePort();
  const logFile = path.join(dir, `${kind}.log`);
  let proc: ManagedProcess; let control: number | undefined;
  if (kind === 'nginx') {
    const conf = nginxConf('nginx', `upstream up { server 127.0.0.1:${upstream}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
    server { listen 127.0.0.1:${port} backlog=4096; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }`);
    proc = startProcess('nginx', 'nginx', ['-c', conf, '-g', 'daemon off; master_process on;'], { cpus: SUT_CPU, logFile });
  } else if (kind === 'haproxy') {
    const cfg = path.join(dir, 'haproxy.cfg');
    writeFileSync(cfg, `global
    nbthread 1
    maxconn 9000
defaults
    mode http
    maxconn 9000
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:${port}
    default_backend be
backend be
    server up 127.0.0.1:${upstream}
`);
    proc = startProcess('haproxy', 'haproxy', ['-f', cfg, '-db'], { cpus: SUT_CPU, logFile });
  } else {
    control = await findFreePort();
    let ready: () => void = () => {};
    const readyP = new Promise<void>((r) => { ready = r; });
    proc = startProcess('nodemesh', process.execPath, [...PRIMARY_EXEC_ARGV, path.join(REPO, 'bench/lib/nodemesh-proxy.ts'), '--port', String(port), '--upstream', String(upstream), '--workers', '1', '--control', String(control)], {
      cpus: SUT_CPU, logFile, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
    });
    await Promise.race([readyP, sleep(30_000).then(() => { throw new Error(`nodemesh not ready after 30 s; see ${logFile}`); })]);
  }
  await waitForPort(port, proc, 10_000, logFile);
  // connection: close, so this check does not leave a keep-alive connection of its own in the counts.
  const res = await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: 'close' } });
  const body = await res.text();
  if (res.status !== 200 || body.length !== BODY_BYTES) throw new Error(`${kind}: GET / answered ${res.status} with ${body.length} bytes; see ${logFile}`);
  return { kind, label: kind === 'haproxy' ? 'HAProxy ×1' : `${kind} ×1`, port, proc, ...(control ? { control } : {}) };
}

type WorkerView = { pid: number | undefined; restarts: number; state: string };
async function nodemeshWorkers(v: Variant): Promise<WorkerView[] | undefined> {
  if (!v.control) return undefined;
  try {
    const j = await (await fetch(`http://127.0.0.1:${v.control}/stats`)).json() as { status: WorkerView[] };
    return j.status.map((s) => ({ pid: s.pid, restarts: s.restarts, state: s.state }));
  } catch { return undefined; }
}

function fixedRate(url: string, rate: number, seconds: number, connections: number): Promise<FixedRateResult> {
  return runCommand(process.execPath, [path.join(REPO, 'bench/lib/fixed-rate.ts'), '--url', url, '--rate', String(rate), '--connections', String(connections), '--seconds', String(seconds)], { cpus: GEN_CPU, timeoutMs: (seconds + 60) * 1000 })
    .then((out) => JSON.parse(out.trim().split('\n').pop()!) as FixedRateResult);
}

/** A child process speaking JSON lines: resolves each line we wait for in order. */
function jsonLines(p: ManagedProcess): { next(): Promise<Record<string, unknown>>; send(line: string): void } {
  const queue: Record<string, unknown>[] = []; const waiters: ((v: Record<string, unknown>) => void)[] = [];
  createInterface({ input: p.child.stdout! }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const v = JSON.parse(line) as Record<string, unknown>;
    const w = waiters.shift();
    if (w) w(v); else queue.push(v);
  });
  return {
    next: () => {
      const v = queue.shift();
      if (v) return Promise.resolve(v);
      return Promise.race([new Promise<Record<string, unknown>>((r) => waiters.push(r)), p.exited.then(() => { throw new Error(`${p.name} exited`); })]);
    },
    send: (line) => { p.child.stdin!.write(`${line}\n`); },
  };
}

// ---------------------------------------------------------------- L3

/** Memory and descriptors of a process tree; `sockets` splits its TCP sockets by peer (L3 only). */
type Mem = { rssMb: number; pssMb: number; fds: number; sockets?: { downstream: number; upstream: number; other: number } };
type L3Cell = {
  variant: string; idle: number; opened: IdleProbeResult; openS: number;
  before: Mem; held: Mem; afterClose: Mem & { afterS: number };
  kibPerConnRss: number; kibPerConnPss: number;
  canary: FixedRateResult; probe: IdleProbeResult; closedByPeer: number;
  workers?: { before: WorkerView[] | undefined; after: WorkerView[] | undefined };
};

const readMem = (pid: number, ports?: { listen: number; upstream: number }): Mem => {
  const tree = readProcessTree(pid); const m = readMemory(tree);
  return { rssMb: m.rssMb, pssMb: m.pssMb, fds: readFdCount(tree), ...(ports ? { sockets: readTcpSockets(tree, ports.listen, ports.upstream) } : {}) };
};
/** Descriptors that are not connections to the upstream (whose pool keeps idle connections for a while by design). */
const ownFds = (m: Mem): number => m.fds - (m.sockets?.upstream ?? 0);

async function runL3(kind: Kind, upstream: number, script: string): Promise<L3Cell> {
  const v = await startVariant(kind, upstream);
  try {
    // Warm the request path (code, pools, heap) so the deltas are the connections', not the first requests'.
    await runWrk(`http://127.0.0.1:${v.port}/`, { connections: 64, seconds: 1, cpus: GEN_CPU, script });
    await sleep(2000);
    const workersBefore = await nodemeshWorkers(v);
    const ports = { listen: v.port, upstream };
    const before = readMem(v.proc.pid, ports);
    const holder = startProcess(`idle-${kind}`, process.execPath, [path.join(REPO, 'bench/lib/idle-connections.ts'), '--port', String(v.port), '--count', String(IDLE)], { cpus: GEN_CPU, logFile: path.join(dir, `idle-${kind}.log`), stdin: true });
    const lines = jsonLines(holder);
    const t0 = Date.now();
    // The canary runs while the connections open and while they are held.
    const canaryP = fixedRate(`http://127.0.0.1:${v.port}/`, CANARY_RATE, HOLD, 4);
    const opened = (await lines.next()).opened as IdleProbeResult;
    const openS = (Date.now() - t0) / 1000;
    const canary = await canaryP;
    await sleep(1000);
    const held = readMem(v.proc.pid, ports);
    lines.send('probe');
    const pr = await lines.next();
    lines.send('close');
    const closed = await lines.next();
    await holder.exited;
    const c0 = Date.now();
    let afterClose = readMem(v.proc.pid, ports);
    while ((afterClose.sockets!.downstream > 0 || ownFds(afterClose) > ownFds(before)) && Date.now() - c0 < 15_000) { await sleep(250); afterClose = readMem(v.proc.pid, ports); }
    const afterS = (Date.now() - c0) / 1000;
    const n = Math.max(1, opened.connections);
    const cell: L3Cell = {
      variant: v.label, idle: IDLE, opened, openS, before, held, afterClose: { ...afterClose, afterS },
      kibPerConnRss: ((held.rssMb - before.rssMb) * 1024) / n, kibPerConnPss: ((held.pssMb - before.pssMb) * 1024) / n,
      canary, probe: pr.probe as IdleProbeResult, closedByPeer: Number(closed.closedByPeer ?? 0),
      ...(v.control ? { workers: { before: workersBefore, after: await nodemeshWorkers(v) } } : {}),
    };
    log(`  L3 ${v.label.padEnd(12)} ${opened.connections} open (${opened.failed} failed) in ${openS.toFixed(1)} s; RSS ${before.rssMb} → ${held.rssMb} MB (${cell.kibPerConnRss.toFixed(1)} KiB/conn), PSS ${before.pssMb} → ${held.pssMb} MB (${cell.kibPerConnPss.toFixed(1)} KiB/conn); fds ${before.fds} → ${held.fds} → ${afterClose.fds} (${afterS.toFixed(1)} s; client sockets ${held.sockets?.downstream} → ${afterClose.sockets?.downstream}, upstream ${before.sockets?.upstream}/${held.sockets?.upstream}/${afterClose.sockets?.upstream}); canary ok ${canary.ok} err ${canary.errors + canary.non2xx} p99 ${(canary.latencyUs.p99 / 1000).toFixed(1)} ms; probe ${cell.probe.ok}/${cell.probe.connections}`);
    return cell;
  } finally { await stopProcess(v.proc); }
}

// ---------------------------------------------------------------- L2

type L2Result = { pre: Mem; coldRssMb: number; tcp: ChurnResult; afterTcp: Mem; hbone: ChurnResult; afterHbone: Mem; settled: Mem; settleS: number; peakRssMb: number };

async function issueCerts(): Promise<string> {
  const ca = await MeshCa.create({ trustDomain: TD });
  const issue = async (namespace: string, serviceAccount: string): Promise<{ certChainPem: string; keyPem: string }> => {
    const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://${TD}/ns/${namespace}/sa/${serviceAccount}`);
    return { certChainPem: (await ca.issue(csrPem, { namespace, serviceAccount })).certChainPem, keyPem };
  };
  const certs: MeshBenchCerts = { trustDomain: TD, bundlePem: ca.bundle().pem, web: await issue('shop', 'web'), proxyA: await issue('nodemesh-system', 'nodemesh-proxy'), proxyB: await issue('nodemesh-system', 'nodemesh-proxy') };
  const file = path.join(dir, 'certs.json');
  writeFileSync(file, JSON.stringify(certs), { mode: 0o600 });
  return file;
}

function churn(mode: 'tcp' | 'hbone', port: number, host: string, target: string, seconds: number, certs: string): Promise<ChurnResult> {
  return runCommand(process.execPath, [path.join(REPO, 'bench/lib/churn.ts'), '--mode', mode, '--host', host, '--port', String(port), '--target', target, '--rate', String(CHURN_RATE), '--seconds', String(seconds), ...(mode === 'hbone' ? ['--certs', certs] : [])], { cpus: GEN_CPU, timeoutMs: (seconds + 60) * 1000 })
    .then((out) => JSON.parse(out.trim().split('\n').pop()!) as ChurnResult);
}

async function runL2(upstream: number): Promise<L2Result> {
  const certs = await issueCerts();
  const port = await findFreePort(); const hbone = await findFreePort();
  const logFile = path.join(dir, 'mesh.log');
  let ready: () => void = () => {};
  const readyP = new Promise<void>((r) => { ready = r; });
  const proc = startProcess('mesh', process.execPath, [...PRIMARY_EXEC_ARGV, path.join(REPO, 'bench/lib/nodemesh-mesh.ts'), '--port', String(port), '--b-port', String(await findFreePort()), '--hbone', String(hbone), '--upstream', String(upstream), '--pod-ip', '127.0.0.3', '--certs', certs], {
    cpus: SUT_CPU, logFile, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
  });
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, readMemory(readProcessTree(proc.pid)).rssMb); }, 500);
  try {
    await Promise.race([readyP, sleep(30_000).then(() => { throw new Error(`mesh not ready after 30 s; see ${logFile}`); })]);
    await waitForPort(port, proc, 10_000, logFile);
    const coldRssMb = readMem(proc.pid).rssMb;
    // Warm-up: both paths once at the test rate, so "pre" is a proxy that has served this kind of traffic.
    await churn('tcp', port, '127.0.0.1', 'echo.shop', 2, certs);
    await churn('hbone', hbone, '127.0.0.2', `127.0.0.3:${upstream}`, 2, certs);
    await sleep(3000);
    const pre = readMem(proc.pid);
    const tcp = await churn('tcp', port, '127.0.0.1', 'echo.shop', CHURN_S, certs);
    const afterTcp = readMem(proc.pid);
    log(`  L2 new client connection per request: ${tcp.ok}/${tcp.sent} ok, connect ${tcp.connectFailures}, request ${tcp.requestFailures}, non-2xx ${tcp.non2xx}; p99 ${(tcp.latencyUs.p99 / 1000).toFixed(1)} ms; RSS ${pre.rssMb} → ${afterTcp.rssMb} MB`);
    const hb = await churn('hbone', hbone, '127.0.0.2', `127.0.0.3:${upstream}`, CHURN_S, certs);
    const afterHbone = readMem(proc.pid);
    log(`  L2 new mTLS connection per request: ${hb.ok}/${hb.sent} ok, handshake failures ${hb.handshakeFailures}, request ${hb.requestFailures}; p99 ${(hb.latencyUs.p99 / 1000).toFixed(1)} ms; RSS → ${afterHbone.rssMb} MB`);
    await sleep(SETTLE_S * 1000);
    const settled = readMem(proc.pid);
    log(`  L2 RSS ${SETTLE_S} s later: ${settled.rssMb} MB (pre ${pre.rssMb} MB, ${(((settled.rssMb - pre.rssMb) / pre.rssMb) * 100).toFixed(1)} %)`);
    return { pre, coldRssMb, tcp, afterTcp, hbone: hb, afterHbone, settled, settleS: SETTLE_S, peakRssMb: peak };
  } finally { clearInterval(sampler); await stopProcess(proc); }
}

// ---------------------------------------------------------------- L7

type L7Result = {
  capacityRps: number; capacityErrors: number; baseRate: number; overloadRate: number;
  run: OverloadResult; rssBeforeMb: number; peakRssMb: number; rssAfterMb: number;
  workersBefore: WorkerView[] | undefined; workersAfter: WorkerView[] | undefined;
  recoveryS: number | undefined; baselineP99Us: number; goodP99Us: number;
  cpuLimit: { cores: number; where: string } | undefined; overloadCores: number; generatorBound: boolean;
};

/**
 * Limits a process tree to `cores` of CPU with a cgroup of its own (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), as a
 * DaemonSet's `resources.limits.cpu` does, with a 10 ms period so throttling stalls stay short. Returns a function
 * that moves nothing back (the processes end with the run) and removes the cgroup; undefined when no cgroup can be
 * made (not root, no cpu controller): the run goes on unlimited and says so.
 */
function limitCpu(pids: number[], cores: number): { remove(): void; where: string } | undefined {
  const period = 10_000;
  const quota = Math.max(1000, Math.round(cores * period));
  const name = `nmb7-load-${process.pid}`;
  const candidates = [
    { base: '/sys/fs/cgroup', file: 'cpu.max', value: `${quota} ${period}` },
    { base: '/sys/fs/cgroup/cpu', file: 'cpu.cfs_quota_us', value: String(quota), period: 'cpu.cfs_period_us' },
  ];
  for (const c of candidates) {
    const cg = path.join(c.base, name);
    try {
      if (!existsSync(path.join(c.base, c.file.startsWith('cpu.max') ? 'cgroup.controllers' : 'cpu.cfs_quota_us'))) continue;
      if (c.file === 'cpu.max' && !readFileSync(path.join(c.base, 'cgroup.subtree_control'), 'utf8').includes('cpu')) continue;
      mkdirSync(cg);
      if (c.period) writeFileSync(path.join(cg, c.period), String(period));
      writeFileSync(path.join(cg, c.file), c.value);
      for (const pid of pids) writeFileSync(path.join(cg, 'cgroup.procs'), String(pid));
      return { where: `${cg} (${c.file} ${c.value}${c.period ? `, period ${period}` : ''})`, remove: () => { try { rmdirSync(cg); } catch { /* still has tasks: removed once they exit */ } } };
    } catch (err) {
      log(`  could not limit the proxy's CPU with ${cg}: ${(err as Error).message}`);
      try { rmdirSync(cg); } catch { /* not made */ }
    }
  }
  return undefined;
}

async function runL7(upstream: number, script: string): Promise<L7Result> {
  const v = await startVariant('nodemesh', upstream);
  let peak = 0;
  // CPU of the proxy per second: whether the overload reached it (a saturated proxy uses all the CPU it may).
  const cpuSamples: { t: number; s: number }[] = [];
  const sampler = setInterval(() => {
    const tree = readProcessTree(v.proc.pid);
    peak = Math.max(peak, readMemory(tree).rssMb);
    cpuSamples.push({ t: Date.now(), s: readCpuSeconds(tree) });
  }, 250);
  const limit = CPU_LIMIT > 0 ? limitCpu(readProcessTree(v.proc.pid), CPU_LIMIT) : undefined;
  if (limit) log(`  L7 proxy limited to ${CPU_LIMIT} cores: ${limit.where}`);
  else if (CPU_LIMIT > 0) log(`  L7 proxy NOT CPU-limited (no cgroup could be made): the generator may not reach ${FACTOR}× capacity`);
  try {
    await runWrk(`http://127.0.0.1:${v.port}/`, { connections: 64, seconds: 2, cpus: GEN_CPU, script });
    // The better of two runs: on a shared machine one run can land in someone else's burst and understate it.
    const caps = [await runWrk(`http://127.0.0.1:${v.port}/`, { connections: 64, seconds: 3, cpus: GEN_CPU, script }), await runWrk(`http://127.0.0.1:${v.port}/`, { connections: 64, seconds: 3, cpus: GEN_CPU, script })];
    const cap = caps[0]!.rps >= caps[1]!.rps ? caps[0]! : caps[1]!;
    const capacityErrors = cap.errors.connect + cap.errors.read + cap.errors.write + cap.errors.status + cap.errors.timeout;
    const capacityRps = Math.round(cap.rps);
    // The normal rate: the anchors' L1 (1,000 req/s), or 30 % of capacity on a machine where that is less.
    const baseRate = Math.max(50, Math.min(1000, Math.round(capacityRps * 0.3)));
    const overloadRate = Math.round(capacityRps * FACTOR);
    log(`  L7 capacity ${capacityRps} req/s (wrk -c64 3 s, errors ${capacityErrors}); baseline ${baseRate}/s, overload ${overloadRate}/s for ${OVERLOAD_S} s`);
    await sleep(1000);
    const workersBefore = await nodemeshWorkers(v);
    const rssBeforeMb = readMem(v.proc.pid).rssMb;
    const phases = `baseline:${baseRate}:5,overload:${overloadRate}:${OVERLOAD_S},recovery:${baseRate}:${RECOVERY_S}`;
    const runT0 = Date.now();
    const out = await runCommand(process.execPath, [path.join(REPO, 'bench/lib/overload.ts'), '--port', String(v.port), '--phases', phases, '--max-connections', String(MAX_CONNS), '--timeout-ms', '2000'], { cpus: GEN_CPU, timeoutMs: (5 + OVERLOAD_S + RECOVERY_S + 60) * 1000 });
    const run = JSON.parse(out.trim().split('\n').pop()!) as OverloadResult;
    const rssAfterMb = readMem(v.proc.pid).rssMb;
    const workersAfter = await nodemeshWorkers(v);
    const base = run.phases.find((p) => p.phase === 'baseline')!;
    const goodP99Us = Math.max(3 * base.latencyUs.p99, base.latencyUs.p99 + 5000);
    const recoveryS = computeRecoveryS(run.windows, goodP99Us);
    const ov = run.phases.find((p) => p.phase === 'overload')!;
    log(`  L7 overload: scheduled ${ov.scheduled}, sent ${ov.sent}, not sent ${ov.notSent}, statuses ${JSON.stringify(ov.byStatus)}, timeouts ${ov.timeouts}, resets ${ov.resets}, connect errors ${ov.connectErrors}; answered p50 ${(ov.latencyUs.p50 / 1000).toFixed(1)} ms p99 ${(ov.latencyUs.p99 / 1000).toFixed(1)} ms; RSS ${rssBeforeMb} → peak ${peak} MB; recovered after ${recoveryS ?? `> ${RECOVERY_S - 3}`} s`);
    // Busiest second of the proxy while the overload ran (its phase starts ~5 s after the generator, plus start-up).
    let overloadCores = 0;
    for (let i = 0; i < cpuSamples.length; i++) {
      const a = cpuSamples[i]!;
      if (a.t < runT0 + 5000 || a.t > runT0 + (6 + OVERLOAD_S) * 1000) continue;
      const b = cpuSamples.find((x) => x.t >= a.t + 1000);
      if (b) overloadCores = Math.max(overloadCores, (b.s - a.s) / ((b.t - a.t) / 1000));
    }
    const allowed = limit ? CPU_LIMIT : 1;
    const generatorBound = overloadCores < 0.85 * allowed;
    log(`  L7 proxy CPU in its busiest overload second: ${overloadCores.toFixed(2)} cores of ${allowed}${generatorBound ? ' — the overload did not saturate it (generator-bound)' : ''}`);
    return { capacityRps, capacityErrors, baseRate, overloadRate, run, rssBeforeMb, peakRssMb: peak, rssAfterMb, workersBefore, workersAfter, recoveryS, baselineP99Us: base.latencyUs.p99, goodP99Us, cpuLimit: limit ? { cores: CPU_LIMIT, where: limit.where } : undefined, overloadCores, generatorBound };
  } finally {
    clearInterval(sampler);
    await stopProcess(v.proc);
    limit?.remove();
  }
}

// ---------------------------------------------------------------- report

const f = (x: number | undefined, d = 1): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const ms = (us: number | undefined): string => f(us === undefined ? undefined : us / 1000, 1);
const pct = (a: number, b: number): string => `${(((a - b) / b) * 100).toFixed(1)} %`;
const met = (ok: boolean): string => (ok ? '**met**' : '**not met**');

function renderL3(cells: L3Cell[]): string {
  const rows = cells.map((c) => `| ${c.variant} | ${c.opened.connections} (${c.opened.failed} failed) in ${f(c.openS)} s | ${f(c.before.rssMb)} → ${f(c.held.rssMb)} | **${f(c.kibPerConnRss)}** | ${f(c.before.pssMb)} → ${f(c.held.pssMb)} | **${f(c.kibPerConnPss)}** | ${c.before.fds} → ${c.held.fds} → ${c.afterClose.fds} (${f(c.afterClose.afterS)} s) | ${c.held.sockets?.downstream ?? '–'} → ${c.afterClose.sockets?.downstream ?? '–'} | ${c.before.sockets?.upstream ?? '–'} / ${c.held.sockets?.upstream ?? '–'} / ${c.afterClose.sockets?.upstream ?? '–'} | ${c.canary.ok}/${c.canary.sent}, ${c.canary.errors + c.canary.non2xx} errors, p99 ${ms(c.canary.latencyUs.p99)} ms | ${c.probe.ok}/${c.probe.connections} | ${c.closedByPeer} |`);
  return [
    '| proxy | idle connections opened | RSS MB before → held | KiB per connection (RSS) | PSS MB before → held | KiB per connection (PSS) | fds before → held → after close (wait) | client sockets held → after close | upstream sockets before / held / after | canary ok/sent, errors, p99 | idle connections answering afterwards | closed by the proxy while idle |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

function renderOverloadWindows(r: L7Result): string {
  const rows = r.run.windows.map((w) => `| ${w.startS} | ${w.phase} | ${w.scheduled} | ${w.sent} | ${w.notSent} | ${Object.entries(w.byStatus).map(([s, n]) => `${s}: ${n}`).join(', ') || '–'} | ${w.timeouts} | ${w.resets + w.connectErrors} | ${ms(w.latencyUs.p50)} | ${ms(w.latencyUs.p99)} | ${computeWindowGood(w, r.goodP99Us) ? 'yes' : 'no'} |`);
  return ['| s | phase | scheduled | sent | not sent (client at its connection cap) | answers | timeouts (2 s) | resets / refused | p50 ms | p99 ms | like baseline |', '|---|---|---|---|---|---|---|---|---|---|---|', ...rows].join('\n');
}

type Results = { l3: L3Cell[]; l2: L2Result | undefined; l7: L7Result | undefined };

function computeGoals(r: Results): string[] {
  const goals: string[] = [];
  const nm = r.l3.find((c) => c.variant.startsWith('nodemesh'));
  if (nm) {
    const canaryErr = nm.canary.errors + nm.canary.non2xx;
    goals.push(`- L3 canary errors with ${nm.idle.toLocaleString('en')} idle connections held: **${canaryErr}** — goal 0: ${met(canaryErr === 0 && nm.opened.failed === 0)}.`);
    goals.push(`- L3 memory per idle connection (nodemesh, RSS delta of primary + worker ÷ connections): **${f(nm.kibPerConnRss)} KiB** (PSS ${f(nm.kibPerConnPss)} KiB) — goal ≤ ${GOAL_KIB_PER_CONN} KiB: ${met(nm.kibPerConnRss <= GOAL_KIB_PER_CONN)}.${r.l3.filter((c) => c !== nm).map((c) => ` ${c.variant}: ${f(c.kibPerConnRss)} KiB.`).join('')}`);
    const freed = nm.afterClose.sockets?.downstream === 0 && ownFds(nm.afterClose) <= ownFds(nm.before);
    goals.push(`- L3 file descriptors freed on close (nodemesh): client sockets ${nm.held.sockets?.downstream} → **${nm.afterClose.sockets?.downstream}**; descriptors other than upstream connections ${ownFds(nm.before)} → ${ownFds(nm.held)} → **${ownFds(nm.afterClose)}** after ${f(nm.afterClose.afterS)} s (all descriptors ${nm.before.fds} → ${nm.held.fds} → ${nm.afterClose.fds}; the upstream pool keeps idle connections up to its idle timeout, 30 s by default) — ${met(freed)}.`);
  }
  if (r.l2) {
    const hsFail = r.l2.hbone.handshakeFailures + r.l2.hbone.connectFailures;
    const drift = (r.l2.settled.rssMb - r.l2.pre.rssMb) / r.l2.pre.rssMb;
    goals.push(`- L2 handshake failures, ${r.l2.hbone.sent.toLocaleString('en')} new mTLS connections at ${CHURN_RATE}/s: **${hsFail}** (requests failed after the handshake: ${r.l2.hbone.requestFailures + r.l2.hbone.non2xx}; new client connections through the mesh path: ${r.l2.tcp.sent - r.l2.tcp.ok} failed of ${r.l2.tcp.sent.toLocaleString('en')}) — goal 0: ${met(hsFail === 0 && r.l2.hbone.requestFailures + r.l2.hbone.non2xx === 0 && r.l2.tcp.ok === r.l2.tcp.sent)}.`);
    goals.push(`- L2 RSS ${r.l2.settleS} s after the churn vs before: ${f(r.l2.pre.rssMb)} → ${f(r.l2.settled.rssMb)} MB (**${pct(r.l2.settled.rssMb, r.l2.pre.rssMb)}**) — goal within 10 % ${r.l2.settleS < 60 ? `(the anchor waits 60 s; \`--settle 60\`)` : ''}: ${met(Math.abs(drift) <= 0.1)}.`);
  }
  if (r.l7) {
    const ov = r.l7.run.phases.find((p) => p.phase === 'overload')!;
    const shed = Object.entries(ov.byStatus).filter(([s]) => s === '503' || s === '429').reduce((a, [, n]) => a + n, 0);
    const restarted = JSON.stringify(r.l7.workersBefore) !== JSON.stringify(r.l7.workersAfter);
    const served = Math.max(...r.l7.run.windows.filter((w) => w.phase === 'overload').map((w) => Object.entries(w.byStatus).reduce((x, [, n]) => x + n, 0)));
    goals.push(`- L7 offered ${r.l7.overloadRate} req/s = ${FACTOR}× the measured capacity (${r.l7.capacityRps} req/s); the proxy answered at most ${served} requests scheduled in one overload second, so the offered load was **${f(r.l7.overloadRate / Math.max(1, served), 1)}×** what it served at best.`);
    goals.push(`- L7 at ${FACTOR}× capacity: answered by the proxy with 503/429 **${shed}**, timed out **${ov.timeouts}**, not sent because the client's ${MAX_CONNS} connections were all waiting **${ov.notSent}** of ${ov.scheduled}; answered p99 **${ms(ov.latencyUs.p99)} ms** — goal "fast 503/refusal": ${met(shed + ov.connectErrors > 0 && ov.timeouts === 0)}; no hang/OOM (every request answered within 2 s, no worker restart): ${met(!restarted && ov.timeouts === 0)} (worker ${restarted ? 'restarted or changed' : 'unchanged'}, RSS peak ${f(r.l7.peakRssMb)} MB).${r.l7.generatorBound ? ` **The overload did not saturate the proxy (busiest second ${f(r.l7.overloadCores, 2)} cores): generator-bound, not a measurement of overload.**` : ''}`);
    goals.push(`- L7 back to baseline after the overload (3+ consecutive one-second windows all 2xx, p99 ≤ ${ms(r.l7.goodP99Us)} ms): **${r.l7.recoveryS === undefined ? `not within ${RECOVERY_S} s` : `${r.l7.recoveryS} s`}** — goal ≤ 30 s: ${met(r.l7.recoveryS !== undefined && r.l7.recoveryS <= 30)}.`);
  }
  return goals;
}

function renderDoc(info: MachineInfo, endLoad: number[], r: Results, jsonFile: string, started: Date, durationS: number): string {
  const l2 = r.l2; const l7 = r.l7;
  return `# Held-load benchmark: idle connections, connection churn, overload (latest run)

Generated by \`npm run bench:l7-load\` (\`bench/l7-load.ts\`) on ${started.toISOString()}; raw data in \`${path.relative(REPO, jsonFile)}\`.
Re-running the command overwrites this page. Categories L3, L2 and L7 of the reliability anchors (§3.1); L4 (h2load,
32 connections × 100 streams) is a CI test: \`test/integration/l7-load.test.ts\`.

## Machine

| | |
|---|---|
| kernel | ${info.kernel} |
| CPU | ${info.cpuModel} × ${info.cpus}${info.governor ? ` (governor ${info.governor})` : ''} |
| memory | ${info.memTotalMb} MiB |
| Node / OpenSSL | ${info.node} / ${info.openssl} |
| nginx / HAProxy / wrk | ${info.tools.nginx} / ${info.tools.haproxy} / ${info.tools.wrk} |
| nodemesh | ${info.gitSha ?? 'unknown'}${info.gitDirty ? ' (with uncommitted changes)' : ''} |
| load average (1/5/15 min) | start ${info.loadAvg.join(' / ')}, end ${endLoad.join(' / ')} |
| run | ${durationS.toFixed(0)} s${QUICK ? ' (--quick)' : ''} |

**The machine is shared** with other work (on ${info.cpus} CPUs a load average above ~${info.cpus} means processes waited
for a CPU): latencies and capacity are noisy; memory and file-descriptor counts, error counts and the shape of the
overload are what this page is for.

## Against the goals

${computeGoals(r).join('\n') || '–'}

## Set-up

- Loopback only. Upstream: nginx \`return 200\` with a ${BODY_BYTES}-byte body, 1 worker, on CPU ${GEN_CPU}, shared with every
  load generator. The proxy under test is pinned to CPU ${SUT_CPU} (taskset).
- nodemesh: \`bench/lib/nodemesh-proxy.ts\` (a \`ProxyWorkerPool\`, one worker, round-robin hand-off by the primary; the
  primary is counted in RSS/PSS/fds) and, for L2, \`bench/lib/nodemesh-mesh.ts\` (two pools with the agent's mesh plugin
  and mesh CA certificates, as in bench:l7).
- nginx and HAProxy as bench:l7 configures them (keep-alive to the upstream, no logs), with the connection limits
  raised to admit the idle connections: nginx \`worker_connections 16384\`, HAProxy \`maxconn 9000\` (its fd need, 2 per connection, fits the 20,000 fd limit) and
  \`timeout http-keep-alive 60s\`.
- Memory: RSS (VmRSS) and PSS (smaps_rollup) summed over the proxy's process tree; file descriptors = entries of
  /proc/<pid>/fd of the tree.

## L3: ${IDLE.toLocaleString('en')} idle keep-alive connections + a ${CANARY_RATE} req/s canary

Each connection sends one request, reads the answer and then stays open and silent (\`bench/lib/idle-connections.ts\`,
100 opening at a time, one Node process on CPU ${GEN_CPU}). A canary (\`bench/lib/fixed-rate.ts\`, open loop, 4 keep-alive
connections) runs for ${HOLD} s from the moment the connections start opening. Held = ~1 s after the canary; then one more
request on every idle connection (were they really kept alive?), then all close and the descriptors are watched
until no client socket is left and the descriptors other than upstream connections are back at the "before" count
(at most 15 s; the proxies' upstream pools keep idle connections by design, so those are shown apart). Before = after a 1 s wrk warm-up and 2 s of rest. The
per-connection figures include whatever else grew in that time (the canary's requests, heap growth the garbage
collector had not yet given back).

${r.l3.length ? renderL3(r.l3) : '– (not run)'}

${l2 ? `## L2: connection churn on the mesh path, ${CHURN_RATE} new connections per second, ${CHURN_S} s each

Two proxies (source and destination "nodes") in one process tree on CPU ${SUT_CPU}, HBONE between them (TLS 1.3, ALPN h2,
HTTP/2 CONNECT), certificates from a mesh CA made for the run (\`bench/lib/churn.ts\` is the client, on CPU ${GEN_CPU}, open
loop, 5 s deadline per request):

1. **new client connection per request** → source proxy → (mTLS) → destination proxy → upstream. The source proxy keeps
   its HBONE connection to the destination node and its pooled upstream connections inside it (one TLS handshake per
   (source identity, node), by design: l7proxy/hbone/README.md), so this exercises accept/close churn and CONNECT
   streams, not TLS handshakes.
2. **new mTLS connection per request** to the destination proxy's HBONE listener, as a source proxy with nothing to
   reuse: full TLS 1.3 handshake presenting the web workload's SVID (chain checked against the bundle), HTTP/2,
   CONNECT to the pod, one GET inside, close. This is the anchor's handshake churn.

| | sent | ok | connect failures | handshake failures | failures after connecting | non-2xx | p50 ms | p99 ms | max ms | RSS MB after |
|---|---|---|---|---|---|---|---|---|---|---|
| new client connection per request (mesh path) | ${l2.tcp.sent} | ${l2.tcp.ok} | ${l2.tcp.connectFailures} | – | ${l2.tcp.requestFailures} | ${l2.tcp.non2xx} | ${ms(l2.tcp.latencyUs.p50)} | ${ms(l2.tcp.latencyUs.p99)} | ${ms(l2.tcp.latencyUs.max)} | ${f(l2.afterTcp.rssMb)} |
| new mTLS connection per request (HBONE) | ${l2.hbone.sent} | ${l2.hbone.ok} | ${l2.hbone.connectFailures} | ${l2.hbone.handshakeFailures} | ${l2.hbone.requestFailures} | ${l2.hbone.non2xx} | ${ms(l2.hbone.latencyUs.p50)} | ${ms(l2.hbone.latencyUs.p99)} | ${ms(l2.hbone.latencyUs.max)} | ${f(l2.afterHbone.rssMb)} |

${Object.keys({ ...l2.tcp.errors, ...l2.hbone.errors }).length ? `Failures by kind: ${JSON.stringify({ ...l2.tcp.errors, ...l2.hbone.errors })}\n\n` : ''}RSS of the mesh process tree (primary + 2 workers): ${f(l2.coldRssMb)} MB when ready; **${f(l2.pre.rssMb)} MB** before the churn (after 2 s of
each kind of churn as warm-up and 3 s of rest); ${f(l2.afterHbone.rssMb)} MB right after; peak ${f(l2.peakRssMb)} MB; **${f(l2.settled.rssMb)} MB** ${l2.settleS} s
later (${pct(l2.settled.rssMb, l2.pre.rssMb)}). PSS ${f(l2.pre.pssMb)} → ${f(l2.settled.pssMb)} MB; fds ${l2.pre.fds} → ${l2.settled.fds}. The anchor runs 2 minutes and waits 60 s:
\`npm run bench:l7-load -- --only l2 --churn-seconds 120 --settle 60\`.

` : ''}${l7 ? `## L7: ${FACTOR}× capacity

nodemesh ×1 (plain config: one service, no circuit breaker, no rate limit)${l7.cpuLimit ? `, **limited to ${l7.cpuLimit.cores} of a core** by a cgroup
(${l7.cpuLimit.where}; what a DaemonSet's \`resources.limits.cpu\` does, with a 10 ms period so throttling stalls stay
short). The limit is there so that the generator, one Node process on the other core, can offer ${FACTOR}× what the proxy
serves: unlimited, the proxy's core serves more than the generator can send. \`--cpu-limit 0\` runs it unlimited` : ', unlimited on its core'}.
Capacity = the better of two wrk \`-c64\` runs of 3 s after a 2 s warm-up: **${l7.capacityRps} req/s**. Proxy CPU in the busiest second of the overload:
${f(l7.overloadCores, 2)} cores${l7.generatorBound ? ' — **not saturated: the figures below are generator-bound**' : ' (saturated)'}. Then \`bench/lib/overload.ts\` (open loop, HTTP/1.1 keep-alive, up to ${MAX_CONNS} connections, 2 s
deadline per request, latency from the scheduled send time) offers ${l7.baseRate} req/s for 5 s (baseline: the anchors' L1 rate,
or 30 % of capacity if that is less), **${l7.overloadRate} req/s for ${OVERLOAD_S} s**, then ${l7.baseRate} req/s for ${RECOVERY_S} s. Each request counts in
the one-second window it was scheduled in. "Like baseline": everything scheduled was sent and answered 2xx within
the deadline and p99 ≤ max(3 × baseline p99, baseline p99 + 5 ms) = ${ms(l7.goodP99Us)} ms.

${renderOverloadWindows(l7)}

RSS of primary + worker: ${f(l7.rssBeforeMb)} MB before, peak ${f(l7.peakRssMb)} MB, ${f(l7.rssAfterMb)} MB after. Workers before/after:
\`${JSON.stringify(l7.workersBefore)}\` / \`${JSON.stringify(l7.workersAfter)}\`. The most connections the generator had open: ${l7.run.maxOpenConnections}.

What happens: the proxy has no overload shedding of its own (no admission by event-loop delay, memory or a global
connection/request limit; the circuit breaker is per backend and counts requests in flight *to the backend*, which
stay few when the proxy's own CPU is the bottleneck). Requests above capacity wait in the kernel's socket buffers
and the client's connections fill up; latency grows to about (connections in flight ÷ capacity) and the client's
own cap, not the proxy, turns the excess away. nginx and HAProxy are not run here: their capacity on one core is a
multiple of nodemesh's and three times it is beyond what this generator offers on one shared core.

` : ''}## Notes

- Re-run one part: \`npm run bench:l7-load -- --only l3\` (or \`l2\`, \`l7\`); \`--quick\` for a short smoke run (1,000
  idle connections, 5 s phases) that still writes this page unless \`--no-docs\`.
- The figures come from one run on a shared machine; compare within this page, not across runs.
`;
}

async function main(): Promise<void> {
  await requireL7BenchTools('bench:l7-load');
  const started = new Date();
  const info = readMachineInfo({ nginx: ['nginx', ['-v']], haproxy: ['haproxy', ['-v']], wrk: ['wrk', ['--version']] }, REPO);
  log(`${CPUS} CPUs; load average ${info.loadAvg.join(' ')}; temp dir ${dir}`);
  const upstream = await startUpstream();
  const script = writeWrkScript(dir);
  const results: Results = { l3: [], l2: undefined, l7: undefined };
  if (ONLY.has('l3')) {
    log(`L3: ${IDLE} idle connections, canary ${CANARY_RATE}/s for ${HOLD} s`);
    for (const kind of (PEERS ? ['nodemesh', 'nginx', 'haproxy'] : ['nodemesh']) as Kind[]) results.l3.push(await runL3(kind, upstream, script));
  }
  if (ONLY.has('l2')) { log(`L2: churn ${CHURN_RATE}/s for ${CHURN_S} s, settle ${SETTLE_S} s`); results.l2 = await runL2(upstream); }
  if (ONLY.has('l7')) { log(`L7: ${FACTOR}× capacity for ${OVERLOAD_S} s`); results.l7 = await runL7(upstream, script); }

  const endLoad = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const durationS = (Date.now() - started.getTime()) / 1000;
  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..+$/, '');
  const resultsDir = path.join(REPO, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = path.join(resultsDir, `l7-load-${stamp}.json`);
  writeFileSync(jsonFile, JSON.stringify({ benchmark: 'l7-load', started: started.toISOString(), durationS, machine: info, loadAvgEnd: endLoad, params: { idle: IDLE, holdS: HOLD, canaryRate: CANARY_RATE, churnRate: CHURN_RATE, churnS: CHURN_S, settleS: SETTLE_S, factor: FACTOR, overloadS: OVERLOAD_S, recoveryS: RECOVERY_S, maxConnections: MAX_CONNS, cpus: { generator: GEN_CPU, sut: SUT_CPU } }, results }, null, 2));
  if (!argv['no-docs']) writeFileSync(path.join(REPO, 'docs', 'bench-l7-load.md'), renderDoc(info, endLoad, results, jsonFile, started, durationS));
  console.log(`\n${computeGoals(results).join('\n')}\n\nJSON: ${path.relative(REPO, jsonFile)}${argv['no-docs'] ? '' : '; docs/bench-l7-load.md updated'}; ${durationS.toFixed(0)} s`);
}

let exitCode = 0;
process.once('SIGINT', () => { log('interrupted: stopping everything this run started'); void stopAllProcesses().finally(() => process.exit(130)); });
try {
  await main();
} catch (err) {
  log(`failed: ${err instanceof Error ? err.stack ?? err.message : String(err)} (logs kept in ${dir})`);
  exitCode = 1;
} finally {
  await stopAllProcesses();
  if (exitCode === 0) rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
