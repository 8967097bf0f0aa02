/**
 * `npm run bench:l4`: the L4 benchmark of issue 3 in one command and one run. Builds its own node
 * from `nmb-` namespaces, loads the nodemesh datapath on the node's cgroup, and for N = 100, 1,000,
 * 10,000 services × 4 endpoints runs every variant (direct, kube-proxy iptables, kube-proxy
 * nftables, nodemesh, nodemesh with sockmap) in a seeded shuffled order per repetition, then the
 * end-to-end add-one through the API server. Writes bench/results/l4-<date>.json and
 * docs/bench-l4.md, prints the tables, and removes everything it made, also on failure or ^C.
 *
 *   npm run bench:l4 -- [--reps 5] [--n 100,1000,10000] [--seed N] [--no-e2e] [--quick]
 *   npm run bench:l4 -- --render bench/results/l4-<date>.json    (re-render the Markdown only)
 */
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath, writeDatapathConfig } from '../bpf/index.ts';
import { silentLogger } from '../agent/logger.ts';
import { SyncLoop } from '../agent/sync-loop.ts';
import { type ProxyService, renderIptablesAddOne, renderIptablesRestore, renderNftables, renderNftablesAddOne } from './kube-proxy-rules.ts';
import { measureEndToEnd, benchObjects } from './l4-e2e.ts';
import { type Cell, type EndToEnd, type RunMeta, type Variant, VARIANTS, renderMarkdown } from './l4-report.ts';
import { type BenchTopology, buildBenchTopology, computeBenchTopology, destroyBenchTopology, runClient, sh, startBackends, writeTemp } from './l4-topology.ts';
import { computeShuffled, createRandom } from './lib/stats.ts';

const ROOT = resolve(import.meta.dirname, '..');
const TOOL = join(ROOT, 'bench/build/l4-tool');

/** ClusterIP of benchmark service i: 10.96.0.10 + i (a /12 holds a million). */
export function vipOf(i: number): string {
  const n = 0x0a600000 + 10 + i;
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function now(): number {
  return performance.now();
}

function cpuBusyJiffies(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return user + nice + system + irq + softirq + steal;
}

function slabBytes(): number {
  const m = /^Slab:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

function bpfMemlock(pinDir: string): number {
  let total = 0;
  for (const name of ['nm_lb4_fe', 'nm_lb_svc', 'nm_lb_slot', 'nm_lb_be', 'nm_lb_stats']) {
    const j = JSON.parse(sh('bpftool', ['-j', 'map', 'show', 'pinned', join(pinDir, 'maps', name)])) as { bytes_memlock?: number };
    total += j.bytes_memlock ?? 0;
  }
  return total;
}

interface Ctx {
  t: BenchTopology;
  dp: Datapath;
  tmp: string;
  crr: number;
  seconds: number;
  log: (line: string) => void;
}

function measure(c: Ctx, cgroup: string, first: string[], last: string[], port: number): Pick<Cell, 'crrFirst' | 'crrLast' | 'rr' | 'cps'> {
  type Crr = { p50us: number; p99us: number; errors: number; lastError: string };
  runClient<Crr>(c.t, cgroup, TOOL, ['crr', '200', String(port), ...first]);
  const crrFirst = runClient<Crr>(c.t, cgroup, TOOL, ['crr', String(c.crr), String(port), ...first]);
  const crrLast = runClient<Crr>(c.t, cgroup, TOOL, ['crr', String(c.crr), String(port), ...last]);
  const rr = runClient<{ p50us: number; p99us: number; rps: number; errors: number }>(c.t, cgroup, TOOL, ['rr', String(c.seconds), '4', String(port), ...first]);
  const j0 = cpuBusyJiffies();
  const cps = runClient<{ connections: number; cps: number; errors: number; seconds: number }>(c.t, cgroup, TOOL, ['cps', String(c.seconds), '4', String(port), ...first]);
  const busyUs = ((cpuBusyJiffies() - j0) * 1e6) / 100; // USER_HZ = 100
  for (const [what, r] of [['connect', crrFirst], ['connect (last)', crrLast]] as const) if (r.errors) c.log(`    ! ${r.errors} failed connects (${what}): ${r.lastError}`);
  return {
    crrFirst: { p50us: crrFirst.p50us, p99us: crrFirst.p99us, errors: crrFirst.errors },
    crrLast: { p50us: crrLast.p50us, p99us: crrLast.p99us, errors: crrLast.errors },
    rr,
    cps: { cps: cps.cps, cpuUsPerConn: cps.connections ? busyUs / cps.connections : Number.NaN, errors: cps.errors },
  };
}

function timed(fn: () => void): number {
  const t0 = now();
  fn();
  return now() - t0;
}

function proxyServices(t: BenchTopology, n: number): ProxyService[] {
  return Array.from({ length: n }, (_, i) => ({ namespace: 'bench', name: `s${i}`, portName: 'http', clusterIP: vipOf(i), port: 80, endpoints: t.backendAddrs.map((ip) => ({ ip, port: t.backendPort })) }));
}

function removeNetfilter(t: BenchTopology): void {
  // iptables-nft keeps its tables in nftables: drop them whole so the next variant starts clean.
  const tables = sh('ip', ['netns', 'exec', t.nodeNs, 'nft', 'list', 'tables']);
  for (const line of tables.split('\n')) {
    const m = /^table ip (\S+)$/.exec(line.trim());
    if (m && m[1] !== 'nmb_ct') sh('ip', ['netns', 'exec', t.nodeNs, 'nft', 'delete', 'table', 'ip', m[1] as string]);
  }
}

async function runVariant(c: Ctx, v: Variant, n: number, rep: number, order: number): Promise<Cell> {
  const { t } = c;
  const firstVip = [vipOf(0)];
  const lastVip = [vipOf(n - 1)];
  const base = { n, rep, variant: v, order };
  if (v === 'direct') return { ...base, ...measure(c, t.plainCgroup, t.backendAddrs, [...t.backendAddrs].reverse(), t.backendPort) };
  if (v === 'iptables' || v === 'nftables') {
    const svcs = proxyServices(t, n);
    const extra = { namespace: 'bench', name: `s${n}`, portName: 'http', clusterIP: vipOf(n), port: 80, endpoints: t.backendAddrs.map((ip) => ({ ip, port: t.backendPort })) };
    const full = writeTemp(c.tmp, `${v}-${n}.rules`, v === 'iptables' ? renderIptablesRestore(svcs) : renderNftables(svcs));
    const add = writeTemp(c.tmp, `${v}-${n}-add.rules`, v === 'iptables' ? renderIptablesAddOne(svcs, extra) : renderNftablesAddOne(extra));
    const slab0 = slabBytes();
    const allMs = timed(() => sh('ip', ['netns', 'exec', t.nodeNs, ...(v === 'iptables' ? ['iptables-restore', full] : ['nft', '-f', full])]));
    const bytes = (slabBytes() - slab0) / n;
    const m = measure(c, t.plainCgroup, firstVip, lastVip, 80);
    const addOneMs = timed(() => sh('ip', ['netns', 'exec', t.nodeNs, ...(v === 'iptables' ? ['iptables-restore', '--noflush', add] : ['nft', '-f', add])]));
    const deleteAllMs = timed(() => (v === 'iptables' ? (sh('ip', ['netns', 'exec', t.nodeNs, 'iptables', '-t', 'nat', '-F']), sh('ip', ['netns', 'exec', t.nodeNs, 'iptables', '-t', 'nat', '-X'])) : sh('ip', ['netns', 'exec', t.nodeNs, 'nft', 'delete', 'table', 'ip', 'kube-proxy'])));
    removeNetfilter(t);
    return { ...base, ...m, program: { allMs, addOneMs, deleteAllMs }, bytesPerService: bytes };
  }
  // nodemesh: the agent's own sync loop programs the pinned maps.
  writeDatapathConfig(c.dp, { sockmap: v === 'nodemesh-sockmap' });
  const mem0 = bpfMemlock(t.pinDir);
  const loop = new SyncLoop({ maps: c.dp, nodeName: 'bench-node', log: silentLogger });
  const objs: Array<{ svc: V1Service; slice: V1EndpointSlice }> = Array.from({ length: n + 1 }, (_, i) => benchObjects(t, i, vipOf(i)));
  for (const o of objs.slice(0, n)) {
    loop.onService('add', o.svc);
    loop.onEndpointSlice('add', o.slice);
  }
  let t0 = now();
  loop.markSynced();
  await loop.whenReady();
  await loop.idle();
  const allMs = now() - t0;
  const full = loop.status().lastPass as { planMs: number; ms: number };
  const bytes = (bpfMemlock(t.pinDir) - mem0) / n;
  const m = measure(c, t.clientCgroup, firstVip, lastVip, 80);
  const extra = objs[n] as { svc: V1Service; slice: V1EndpointSlice };
  t0 = now();
  loop.onEndpointSlice('add', extra.slice);
  loop.onService('add', extra.svc);
  await loop.idle();
  const addOneMs = now() - t0;
  t0 = now();
  for (const o of objs) loop.onService('delete', o.svc);
  await loop.idle();
  const deleteAllMs = now() - t0;
  await loop.stop();
  writeDatapathConfig(c.dp, {});
  return { ...base, ...m, program: { allMs, addOneMs, deleteAllMs, planMs: full.planMs, applyMs: full.ms }, bytesPerService: bytes };
}

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0] ?? '?';
  } catch {
    return '?';
  }
}

function collectMeta(seed: number, reps: number, ns: number[]): RunMeta {
  const cpuModel = cpus()[0]?.model ?? '?';
  const gov = existsSync('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor') ? readFileSync('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor', 'utf8').trim() : 'n/a (no cpufreq: a VM)';
  const sha = version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = version('git', ['-C', ROOT, 'status', '--porcelain', '--', 'agent', 'bpf', 'bench']) !== '' ? ' + uncommitted changes in agent/, bpf/ or bench/' : '';
  return {
    date: new Date().toISOString(),
    seed,
    reps,
    ns,
    kernel: version('uname', ['-r']),
    cpu: cpuModel,
    cpus: cpus().length,
    governor: gov,
    node: process.versions.node,
    openssl: process.versions.openssl,
    iptables: version('iptables', ['-V']),
    nft: version('nft', ['-v']).replace(/^nftables /, ''),
    clang: version('clang', ['--version']),
    bpftool: version('bpftool', ['version']).replace(/^bpftool /, ''),
    git: `${sha}${dirty}`,
    notes: [],
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string' },
      n: { type: 'string' },
      seed: { type: 'string' },
      crr: { type: 'string' },
      seconds: { type: 'string' },
      'no-e2e': { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      render: { type: 'string' },
    },
  });
  if (values.render) {
    // Re-render docs/bench-l4.md from a results file (after a change to the report, without a new run).
    const r = JSON.parse(readFileSync(resolve(values.render), 'utf8')) as { meta: RunMeta; cells: Cell[]; e2e: EndToEnd[] };
    writeFileSync(join(ROOT, 'docs/bench-l4.md'), renderMarkdown(r.meta, r.cells, r.e2e));
    console.log(`docs/bench-l4.md rendered from ${values.render}`);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('the L4 benchmark needs root (network namespaces, cgroups, BPF, netfilter): run it with sudo');
  for (const tool of ['iptables-restore', 'nft', 'bpftool', 'clang']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${tool} is missing: apt-get install iptables nftables bpftool clang`);
    }
  }
  const quick = values.quick ?? false;
  const reps = Number(values.reps ?? (quick ? 2 : 5));
  const ns = (values.n ?? (quick ? '100,1000' : '100,1000,10000')).split(',').map(Number);
  const seed = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
  const crr = Number(values.crr ?? (quick ? 500 : 2000));
  const seconds = Number(values.seconds ?? (quick ? 1 : 2));
  const log = (l: string): void => console.log(l);
  log(`bench:l4 seed=${seed} reps=${reps} N=${ns.join(',')} (replay with --seed ${seed})`);

  execFileSync('make', ['-s', '-C', join(ROOT, 'bpf')], { stdio: 'inherit' });
  mkdirSync(join(ROOT, 'bench/build'), { recursive: true });
  execFileSync('clang', ['-O2', '-Wall', '-o', TOOL, join(ROOT, 'bench/l4-tool.c')], { stdio: 'inherit' });

  const t = computeBenchTopology();
  const tmp = mkdtempSync(join(tmpdir(), 'nmb-'));
  let dp: Datapath | undefined;
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    try {
      dp?.close();
    } catch {
      // closing fds cannot fail in a way that matters here
    }
    if (existsSync(t.pinDir)) Datapath.destroy(t.pinDir);
    const problems = destroyBenchTopology(t);
    rmSync(tmp, { recursive: true, force: true });
    for (const p of problems) console.error(`cleanup: ${p}`);
  };
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  process.once('SIGTERM', () => {
    cleanup();
    process.exit(143);
  });
  // Leftovers of a crashed run carry our nmb- names: remove them first.
  destroyBenchTopology(t);
  if (existsSync(t.pinDir)) Datapath.destroy(t.pinDir);
  try {
    buildBenchTopology(t);
    await startBackends(t, TOOL);
    dp = Datapath.open({ pinDir: t.pinDir, cgroupPath: t.nodeCgroup });
    const c: Ctx = { t, dp, tmp, crr, seconds, log };
    const loadBefore = loadavg().map((x) => x.toFixed(2)).join(' ');
    const random = createRandom(seed);
    const cells: Cell[] = [];
    for (const n of ns) {
      for (let rep = 0; rep < reps; rep++) {
        const order = computeShuffled(VARIANTS, random);
        log(`N=${n} rep ${rep + 1}/${reps}: ${order.join(' → ')}`);
        for (const [i, v] of order.entries()) {
          const cell = await runVariant(c, v, n, rep, i);
          cells.push(cell);
          log(`  ${v.padEnd(17)} connect p50 ${cell.crrFirst.p50us.toFixed(1)} µs (last ${cell.crrLast.p50us.toFixed(1)}), RTT p50 ${cell.rr.p50us.toFixed(1)} µs, ${Math.round(cell.cps.cps)} conn/s${cell.program ? `, program ${cell.program.allMs.toFixed(1)} ms, add one ${cell.program.addOneMs.toFixed(2)} ms` : ''}`);
        }
      }
    }
    let e2e: EndToEnd[] = [];
    if (!values['no-e2e']) {
      log('end to end: API server → agent → connect');
      e2e = await measureEndToEnd({ t, maps: dp, tool: TOOL, ns, samples: quick ? 3 : 5, vip: vipOf, log });
    }
    const meta = collectMeta(seed, reps, ns);
    meta.notes.push(`Load average (1/5/15 min) at the start ${loadBefore}, at the end ${loadavg().map((x) => x.toFixed(2)).join(' ')}: other work on this shared machine adds noise to every variant alike.`);
    meta.notes.push('No CPU pinning: the machine has 2 vCPUs shared by the load generator, the backends and the kernel work; ratios pair each variant with the baseline of the same repetition to cancel drift.');
    meta.notes.push('CPU per connection is the whole machine\'s busy time: anything else running at the time is included.');
    meta.notes.push('iptables variant: nat table only (kube-proxy also writes filter-table chains, which no packet measured here traverses for a service with endpoints).');
    const day = meta.date.slice(0, 10);
    const jsonPath = values.out ? resolve(values.out) : join(ROOT, 'bench/results', `l4-${day}.json`);
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(jsonPath, `${JSON.stringify({ meta, cells, e2e }, null, 2)}\n`);
    const md = renderMarkdown(meta, cells, e2e);
    if (!values.out) {
      mkdirSync(join(ROOT, 'docs'), { recursive: true });
      writeFileSync(join(ROOT, 'docs/bench-l4.md'), md);
    }
    log('');
    log(md);
    log(`results: ${jsonPath}${values.out ? '' : ' and docs/bench-l4.md'}`);
  } finally {
    cleanup();
  }
}

if (import.meta.main) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`bench:l4: ${(err as Error).stack ?? String(err)}`);
      process.exit(1);
    },
  );
}
