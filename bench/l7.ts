/**
 * `npm run bench:l7`: one run, side by side on loopback, of no proxy (the limit), nginx, HAProxy and the nodemesh proxy
 * (1 worker and N workers) forwarding plain HTTP/1.1 keep-alive to the same static upstream. Saturation with wrk and
 * latency at a fixed rate; variants shuffled per repetition (seeded); ratios paired within a repetition. Prints a
 * Markdown table, writes bench/results/l7-<date>.json and docs/bench-l7.md.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { FixedRateResult } from './lib/fixed-rate.ts';
import { type ManagedProcess, runCommand, startProcess, stopAllProcesses, waitForPort } from './lib/procs.ts';
import { computeCv, computePairedRatios, computeShuffled, computeSpread, createRandom } from './lib/stats.ts';
import { computeCpuBusy, findFreePort, readCpuSeconds, readCpuTimes, readMachineInfo, readMemory, readProcessTree, type MachineInfo } from './lib/system.ts';
import { runWrk, writeWrkScript, type WrkResult } from './lib/wrk.ts';

const REPO = path.resolve(import.meta.dirname, '..');

const { values: argv } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
    'rate-seconds': { type: 'string', default: '3' },
    rate: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '64' },
    'rate-connections': { type: 'string', default: '16' },
    workers: { type: 'string' },
    'body-bytes': { type: 'string', default: '128' },
    warmup: { type: 'string', default: '1' },
    seed: { type: 'string' },
    'rate-all': { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (argv.help) {
  console.log(`usage: npm run bench:l7 -- [--reps 3] [--seconds 3] [--rate 1000] [--rate-seconds 3] [--connections 64]
  [--rate-connections 16] [--workers N] [--body-bytes 128] [--warmup 1.5] [--seed S] [--rate-all] [--no-docs] [--quick]`);
  process.exit(0);
}

const QUICK = argv.quick;
const REPS = QUICK ? 1 : Number(argv.reps);
const SECONDS = QUICK ? 2 : Number(argv.seconds);
const RATE_SECONDS = QUICK ? 2 : Number(argv['rate-seconds']);
const RATE = Number(argv.rate);
const CONNS = Number(argv.connections);
const RATE_CONNS = Number(argv['rate-connections']);
const CPUS = os.availableParallelism();
const WORKERS = Number(argv.workers ?? CPUS);
const BODY_BYTES = Number(argv['body-bytes']);
const WARMUP = QUICK ? 1 : Number(argv.warmup);
const SEED = argv.seed !== undefined ? Number(argv.seed) : Math.floor(Math.random() * 2 ** 31);

// Pinning: the generator and the upstream share CPU 0; one-core variants own the last CPU; N-core variants use all.
const GEN_CPU = '0';
const SUT1_CPU = String(CPUS - 1);
const SUTN_CPU = CPUS > 1 ? `0-${CPUS - 1}` : '0';

type Kind = 'direct' | 'nginx' | 'haproxy' | 'nodemesh';
type Variant = { id: string; kind: Kind; cores: number; label: string; port: number; scheduling?: 'kernel' | 'round-robin'; proc?: ManagedProcess; control?: number };
type Mode = 'saturation' | 'fixed';
type Cell = {
  rep: number; order: number; variant: string; mode: Mode;
  rps: number; latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number };
  errors: number; requests: number;
  sutCpuCores: number | undefined; vcpuPer1000Rps: number | undefined;
  cpuBusyPct: number[]; generatorBound: boolean;
  rssMb: number | undefined; pssMb: number | undefined; workerRssMb: number | undefined;
  perWorkerAccepted?: number[];
  raw: WrkResult | FixedRateResult;
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'nmb7-l7-'));
const log = (m: string): void => { process.stderr.write(`[bench:l7] ${m}\n`); };

function nginxConf(name: string, port: number, workers: number, body: string): string {
  const base = path.join(dir, name);
  mkdirSync(base, { recursive: true });
  const http = body.startsWith('upstream:')
    ? `upstream up { server 127.0.0.1:${body.slice(9)}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
    server {
      listen 127.0.0.1:${port} backlog=4096;
      location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }`
    : `server {
      listen 127.0.0.1:${port} backlog=4096;
      location / { default_type text/plain; return 200 "${body}"; }
    }`;
  const conf = `worker_processes ${workers};
pid ${base}/nginx.pid;
error_log ${base}/error.log crit;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path ${base}/body;
    proxy_temp_path ${base}/proxy;
    fastcgi_temp_path ${base}/fastcgi;
    uwsgi_temp_path ${base}/uwsgi;
    scgi_temp_path ${base}/scgi;
    ${http}
}
`;
  const file = path.join(base, 'nginx.conf');
  writeFileSync(file, conf);
  return file;
}

function haproxyConf(name: string, port: number, threads: number, upstream: number): string {
  const conf = `global
    nbthread ${threads}
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:${port}
    default_backend be
backend be
    server up 127.0.0.1:${upstream}
`;
  const file = path.join(dir, `${name}.cfg`);
  writeFileSync(file, conf);
  return file;
}

async function startVariant(v: Variant, upstream: number): Promise<void> {
  const cpus = v.cores === 1 ? SUT1_CPU : SUTN_CPU;
  const logFile = path.join(dir, `${v.id}.log`);
  if (v.kind === 'nginx') {
    const conf = nginxConf(v.id, v.port, v.cores, `upstream:${upstream}`);
    v.proc = startProcess(v.id, 'nginx', ['-c', conf, '-e', path.join(dir, v.id, 'error.log'), '-g', 'daemon off; master_process on;'], { cpus, logFile });
  } else if (v.kind === 'haproxy') {
    v.proc = startProcess(v.id, 'haproxy', ['-f', haproxyConf(v.id, v.port, v.cores, upstream), '-db'], { cpus, logFile });
  } else if (v.kind === 'nodemesh') {
    v.control = await findFreePort();
    let ready: () => void = () => {};
    const readyP = new Promise<void>((r) => { ready = r; });
    v.proc = startProcess(v.id, process.execPath, [path.join(REPO, 'bench/lib/nodemesh-proxy.ts'), '--port', String(v.port), '--upstream', String(upstream), '--workers', String(v.cores), '--control', String(v.control), '--scheduling', v.scheduling ?? 'round-robin'], {
      cpus, logFile, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
    });
    await Promise.race([readyP, new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`${v.id} not ready after 20 s; see ${logFile}`)), 20_000))]);
  }
  if (v.proc) await waitForPort(v.port, v.proc, 10_000, logFile);
}

async function nodemeshAccepted(v: Variant): Promise<number[] | undefined> {
  if (v.kind !== 'nodemesh' || !v.control) return undefined;
  const res = await fetch(`http://127.0.0.1:${v.control}/stats`);
  const j = (await res.json()) as { workers: { slot: number; accepted: number }[] };
  return j.workers.sort((a, b) => a.slot - b.slot).map((w) => w.accepted);
}

async function measure(v: Variant, mode: Mode, rep: number, order: number, script: string): Promise<Cell> {
  const tree = v.proc ? readProcessTree(v.proc.pid) : [];
  const cpu0 = readCpuTimes();
  const sut0 = readCpuSeconds(tree);
  const acc0 = await nodemeshAccepted(v);
  const url = `http://127.0.0.1:${v.port}/`;
  let raw: WrkResult | FixedRateResult;
  let rps: number; let requests: number; let errors: number;
  const t0 = Date.now();
  if (mode === 'saturation') {
    const w = await runWrk(url, { connections: CONNS, seconds: SECONDS, cpus: GEN_CPU, script });
    raw = w; rps = w.rps; requests = w.requests;
    errors = w.errors.connect + w.errors.read + w.errors.write + w.errors.status + w.errors.timeout;
  } else {
    const out = await runCommand(process.execPath, [path.join(REPO, 'bench/lib/fixed-rate.ts'), '--url', url, '--rate', String(RATE), '--connections', String(RATE_CONNS), '--seconds', String(RATE_SECONDS)], { cpus: GEN_CPU, timeoutMs: (RATE_SECONDS + 30) * 1000 });
    const f = JSON.parse(out.trim().split('\n').pop()!) as FixedRateResult;
    raw = f; rps = f.achievedRps; requests = f.ok + f.non2xx + f.errors; errors = f.errors + f.non2xx;
  }
  const wallS = (Date.now() - t0) / 1000;
  const busy = computeCpuBusy(cpu0, readCpuTimes());
  const sutCpu = v.proc ? readCpuSeconds(tree) - sut0 : undefined;
  const mem = v.proc ? readMemory(readProcessTree(v.proc.pid)) : undefined;
  const acc1 = await nodemeshAccepted(v);
  const genBusy = busy[Number(GEN_CPU)] ?? 0;
  return {
    rep, order, variant: v.id, mode, rps, requests, errors,
    latencyUs: { p50: raw.latencyUs.p50, p90: raw.latencyUs.p90, p99: raw.latencyUs.p99, p999: raw.latencyUs.p999, max: raw.latencyUs.max },
    sutCpuCores: sutCpu !== undefined ? sutCpu / (mode === 'saturation' ? SECONDS : wallS) : undefined,
    vcpuPer1000Rps: sutCpu !== undefined && requests > 0 ? (sutCpu * 1000) / requests : undefined,
    cpuBusyPct: busy, generatorBound: mode === 'saturation' && genBusy >= 95,
    rssMb: mem?.rssMb, pssMb: mem?.pssMb,
    workerRssMb: v.kind === 'nodemesh' && mem ? mem.perProcess.filter((p) => p.pid !== v.proc!.pid).reduce((a, p) => a + p.rssMb, 0) : undefined,
    ...(acc0 && acc1 ? { perWorkerAccepted: acc1.map((a, i) => a - (acc0[i] ?? 0)) } : {}),
    raw,
  };
}

const fmt = (x: number | undefined, digits = 0): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits));
const fmtSpread = (s: { median: number; min: number; max: number; n: number }, digits = 0, scale = 1): string =>
  s.n === 0 ? '–' : s.n === 1 ? fmt(s.median * scale, digits) : `${fmt(s.median * scale, digits)} (${fmt(s.min * scale, digits)}–${fmt(s.max * scale, digits)})`;
const fmtRatio = (s: { median: number; min: number; max: number; n: number }): string => (s.n === 0 ? '–' : s.n === 1 ? s.median.toFixed(2) : `${s.median.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})`);

type Summary = { saturation: string; fixed: string; goals: string[]; distribution: string };

/** Requests per CPU-second of the proxy's processes: what one fully available core would serve. */
const perCpu = (c: Cell): number => (c.vcpuPer1000Rps !== undefined && c.vcpuPer1000Rps > 0 ? 1000 / c.vcpuPer1000Rps : NaN);

function summarize(variants: Variant[], cells: Cell[]): Summary {
  const byRep = (id: string, mode: Mode, pick: (c: Cell) => number): Map<number, number> =>
    new Map(cells.filter((c) => c.variant === id && c.mode === mode).map((c) => [c.rep, pick(c)]));
  const values = (id: string, mode: Mode, pick: (c: Cell) => number | undefined): number[] =>
    cells.filter((c) => c.variant === id && c.mode === mode).map(pick).filter((x): x is number => x !== undefined);
  const peer = (v: Variant, kind: Kind): Variant | undefined => variants.find((p) => p.kind === kind && p.cores === v.cores);
  const sat: string[] = [
    `| variant | req/s | p50 ms | p99 ms | proxy CPU (cores) | CPU µs/req | req/s per CPU-s | RSS MB (PSS) | ÷ nginx: req/s, per CPU-s | ÷ HAProxy: req/s, per CPU-s | errors | gen-bound |`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|`,
  ];
  for (const v of variants) {
    const cs = cells.filter((c) => c.variant === v.id && c.mode === 'saturation');
    if (cs.length === 0) continue;
    const ng = peer(v, 'nginx'); const hp = peer(v, 'haproxy');
    const rpsMap = byRep(v.id, 'saturation', (c) => c.rps);
    const effMap = byRep(v.id, 'saturation', perCpu);
    const ratio = (p: Variant | undefined, m: Map<number, number>, pick: (c: Cell) => number): string =>
      v.kind === 'direct' || !p ? '–' : fmtRatio(computePairedRatios(m, byRep(p.id, 'saturation', pick)));
    const cv = computeCv(values(v.id, 'saturation', (c) => c.rps));
    const mem = `${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.rssMb)), 1)}${v.kind === 'direct' ? '' : ` (${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.pssMb)), 1)})`}`;
    sat.push(`| ${v.label} | ${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.rps)))}${Number.isFinite(cv) && cv > 0.1 ? ' ⚠CV ' + (cv * 100).toFixed(0) + '%' : ''} | ${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.latencyUs.p50)), 2, 1e-3)} | ${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.latencyUs.p99)), 2, 1e-3)} | ${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.sutCpuCores)), 2)} | ${fmtSpread(computeSpread(values(v.id, 'saturation', (c) => c.vcpuPer1000Rps)), 0, 1000)} | ${fmtSpread(computeSpread(values(v.id, 'saturation', perCpu)))} | ${mem} | ${ratio(ng, rpsMap, (c) => c.rps)}; ${ratio(ng, effMap, perCpu)} | ${ratio(hp, rpsMap, (c) => c.rps)}; ${ratio(hp, effMap, perCpu)} | ${cs.reduce((a, c) => a + c.errors, 0)} | ${cs.filter((c) => c.generatorBound).length}/${cs.length} |`);
  }
  const direct = variants.find((v) => v.kind === 'direct')!;
  const fixed: string[] = [
    `| variant | p50 µs | p99 µs | p99.9 µs | added p99 vs no proxy µs | vCPU per 1000 req/s | RSS MB | p99 ÷ nginx | p99 ÷ HAProxy | achieved req/s | errors |`,
    `|---|---|---|---|---|---|---|---|---|---|---|`,
  ];
  for (const v of variants) {
    const cs = cells.filter((c) => c.variant === v.id && c.mode === 'fixed');
    if (cs.length === 0) continue;
    const ng = peer(v, 'nginx'); const hp = peer(v, 'haproxy');
    const p99 = byRep(v.id, 'fixed', (c) => c.latencyUs.p99);
    const added: number[] = [];
    for (const [rep, x] of p99) { const d = byRep(direct.id, 'fixed', (c) => c.latencyUs.p99).get(rep); if (d !== undefined && v.kind !== 'direct') added.push(x - d); }
    const rn = v.kind === 'direct' || !ng ? undefined : computePairedRatios(p99, byRep(ng.id, 'fixed', (c) => c.latencyUs.p99));
    const rh = v.kind === 'direct' || !hp ? undefined : computePairedRatios(p99, byRep(hp.id, 'fixed', (c) => c.latencyUs.p99));
    fixed.push(`| ${v.label} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.latencyUs.p50)))} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.latencyUs.p99)))} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.latencyUs.p999)))} | ${v.kind === 'direct' ? '–' : fmtSpread(computeSpread(added))} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.vcpuPer1000Rps)), 3)} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.rssMb)), 1)} | ${rn ? fmtRatio(rn) : '–'} | ${rh ? fmtRatio(rh) : '–'} | ${fmtSpread(computeSpread(values(v.id, 'fixed', (c) => c.rps)))} | ${cs.reduce((a, c) => a + c.errors, 0)} |`);
  }
  // Goals of issue 5 that this run can judge.
  const goals: string[] = [];
  const nm1 = variants.find((v) => v.kind === 'nodemesh' && v.cores === 1);
  if (nm1) {
    const best = new Map<number, number>();
    for (const k of ['nginx', 'haproxy'] as const) {
      const p = variants.find((v) => v.kind === k && v.cores === 1);
      if (!p) continue;
      for (const [rep, x] of byRep(p.id, 'saturation', (c) => c.rps)) best.set(rep, Math.max(best.get(rep) ?? 0, x));
    }
    const r = computePairedRatios(byRep(nm1.id, 'saturation', (c) => c.rps), best);
    goals.push(`- Requests/s on one core ÷ the best C proxy on the same core (same repetition): **${fmtRatio(r)}** — goal ≥ 0.50: ${r.n === 0 ? 'not measured' : r.median >= 0.5 ? 'met' : 'not met'}.`);
    const bestEff = new Map<number, number>();
    for (const k of ['nginx', 'haproxy'] as const) {
      const p = variants.find((v) => v.kind === k && v.cores === 1);
      if (!p) continue;
      for (const [rep, x] of byRep(p.id, 'saturation', perCpu)) bestEff.set(rep, Math.max(bestEff.get(rep) ?? 0, x));
    }
    const re = computePairedRatios(byRep(nm1.id, 'saturation', perCpu), bestEff);
    goals.push(`- The same from CPU time (requests per CPU-second of the proxy's processes, less sensitive to other load on the machine): **${fmtRatio(re)}** — ${re.n === 0 ? 'not measured' : re.median >= 0.5 ? 'met' : 'not met'}.`);
    const p99 = byRep(nm1.id, 'fixed', (c) => c.latencyUs.p99);
    const added: number[] = [];
    for (const [rep, x] of p99) { const d = byRep(direct.id, 'fixed', (c) => c.latencyUs.p99).get(rep); if (d !== undefined) added.push(x - d); }
    const a = computeSpread(added);
    const added50: number[] = [];
    for (const [rep, x] of byRep(nm1.id, 'fixed', (c) => c.latencyUs.p50)) { const d = byRep(direct.id, 'fixed', (c) => c.latencyUs.p50).get(rep); if (d !== undefined) added50.push(x - d); }
    goals.push(`- Added latency at ${RATE} req/s, plain HTTP/1.1, one proxy hop (not the two-hop mTLS path the < 1 ms goal is about, which is not measured here): p50 **+${fmtSpread(computeSpread(added50))} µs**, p99 **+${fmtSpread(a)} µs**. On a loaded machine the p99 of the no-proxy run itself is milliseconds: compare p99s only within a repetition.`);
    const rss = computeSpread(values(nm1.id, 'saturation', (c) => c.rssMb));
    goals.push(`- RSS of nodemesh ×1 with one service configured: ${fmtSpread(rss, 1)} MB (primary + worker); the goal (< 100 MB with 10,000 services) is not measured here.`);
  }
  const dist = variants.filter((v) => v.kind === 'nodemesh' && v.cores > 1).map((v) => `${v.label}: ${cells.filter((c) => c.variant === v.id && c.perWorkerAccepted).map((c) => `[${c.perWorkerAccepted!.join(', ')}]`).join(' ')}`).join('; ');
  return { saturation: sat.join('\n'), fixed: fixed.join('\n'), goals, distribution: dist };
}

function renderDoc(info: MachineInfo, endLoad: number[], summary: Summary, jsonFile: string, started: Date, durationS: number): string {
  return `# L7 benchmark: nodemesh proxy vs nginx vs HAProxy (latest run)

Generated by \`npm run bench:l7\` (\`bench/l7.ts\`) on ${started.toISOString()}; raw data in \`${path.relative(REPO, jsonFile)}\`.
Re-running the command overwrites this page. Seed ${SEED} (\`npm run bench:l7 -- --seed ${SEED}\` replays the order).

## Machine

| | |
|---|---|
| kernel | ${info.kernel} |
| CPU | ${info.cpuModel} × ${info.cpus}${info.governor ? ` (governor ${info.governor})` : ''} |
| memory | ${info.memTotalMb} MiB |
| Node / OpenSSL | ${info.node} / ${info.openssl} |
| nginx | ${info.tools.nginx} |
| HAProxy | ${info.tools.haproxy} |
| wrk | ${info.tools.wrk} |
| nodemesh | ${info.gitSha ?? 'unknown'}${info.gitDirty ? ' (with uncommitted changes)' : ''} |
| load average (1/5/15 min) | start ${info.loadAvg.join(' / ')}, end ${endLoad.join(' / ')} |
| run | ${REPS} repetitions, ${durationS.toFixed(0)} s |

**The machine is shared** with other work (see the load average: on ${info.cpus} CPUs anything above ~${info.cpus} means
processes were waiting for a CPU). Absolute numbers are noisy; the ratios are paired inside one repetition, where
every variant ran within seconds of the others, which cancels slow drifts but not bursts.

## Set-up

- Everything on loopback (127.0.0.1). Upstream: nginx \`return 200\` with a ${BODY_BYTES}-byte body, 1 worker, on CPU ${GEN_CPU}.
- Load: \`wrk -t1 -c${CONNS} -d${SECONDS}s\` (saturation) and an open-loop generator at ${RATE} req/s over ${RATE_CONNS}
  keep-alive connections for ${RATE_SECONDS} s (\`bench/lib/fixed-rate.ts\`, microsecond latencies, coordinated-omission
  corrected); both on CPU ${GEN_CPU}.
- ×1 variants are pinned to CPU ${SUT1_CPU} (taskset): nginx \`worker_processes 1\`, HAProxy \`nbthread 1\`, nodemesh
  1 worker (+ its primary, which only accepts connections and hands them over). ×N variants (N = ${WORKERS}) may use CPUs ${SUTN_CPU}, shared with the generator
  and the upstream.
- Comparable configs: keep-alive to the upstream (nginx \`keepalive 64\` + HTTP/1.1, HAProxy \`http-reuse always\`,
  nodemesh undici pool), no access logs, no routes or policy (one service, one endpoint). nodemesh adds its
  forwarding headers (\`x-request-id\`, \`x-forwarded-*\`) as it does in production.
- Each repetition runs every (variant, mode) cell in a shuffled order; after a warm-up of ${WARMUP} s per variant.
- RSS is the whole process tree (nginx master + workers; nodemesh primary + workers) after the cell, PSS in
  parentheses (shared pages counted once). "proxy CPU" is user + system time of that tree ÷ the run time; CPU µs/req
  and vCPU per 1000 req/s = CPU time ÷ requests; req/s per CPU-s = requests ÷ CPU seconds (what a whole core would
  serve; loopback delivery is charged to the sending process, the same way for every proxy).
- "gen-bound": CPU ${GEN_CPU} (generator + upstream) was ≥ 95 % busy, so the figure is a floor for the proxy, not its limit.

## Saturation (closed loop, ${CONNS} connections)

Medians over repetitions, (min–max). Ratios are nodemesh ÷ peer with the same number of cores, paired per repetition.

${summary.saturation}

## Fixed rate (${RATE} req/s, ${RATE_CONNS} connections)

${summary.fixed}

## Against the goals of issue 5

${summary.goals.join('\n')}

Connections accepted per worker, one bracket per saturation cell (${CONNS} connections opened at once by wrk):
${summary.distribution || '–'}. kernel accept: every worker accepts on the shared socket (whoever the scheduler wakes
first takes the burst); round-robin (the default, the plain "nodemesh ×N" rows): the primary accepts and hands each
connection to the next worker over IPC.

## Notes

- nodemesh workers run with \`--max-semi-space-size=8\` (\`DEFAULT_WORKER_EXEC_ARGV\` in l7proxy/workers.ts): the young
  generation is otherwise sized from the machine's memory (heapTotal ~90 MB under this load for ~25-45 MB used).
  Measured separately (same machine, one worker at saturation): worker RSS ~150-175 → ~125-140 MB for ~1 µs more GC
  per request; 4 MB saved ~10 MB more for +2-5 µs. An idle worker is ~105 MB, of which ~45 MB come from Node's
  TypeScript stripping and loading the sources and undici (plain \`node\` is ~41 MB); the primary (~100 MB) no longer
  loads the request path.
- The nodemesh primary is counted in the RSS and CPU columns; it accepts each connection and passes it to a worker
  (round-robin), which with ${CONNS} keep-alive connections per cell is a handful of accepts.
- Where a request's CPU goes (\`bench/l7-micro.ts\`: one in-process \`NodeProxy\`, the same upstream and wrk, by hand on
  the same machine): ~50-70 µs per request, ~20 of them system time for the four socket calls. On that stack
  node:http answering from memory costs ~18 µs and node:http + undici \`dispatch\` forwarding with no checks at all
  ~40-45 µs: the proxy's own work (strict checks, normalization, routing, policy, header hygiene) is ~10 µs and the
  rest is the two HTTP/1 libraries; nginx and HAProxy spend 16-17 µs in all.

## Not measured yet

- The mesh path with mTLS between two proxies (client → source proxy → mTLS → destination proxy → server) for all
  three proxies, and full vs resumed TLS handshakes per second: they need the tunnel/HBONE work in progress.
- RSS with 10,000 services configured.
- A quiet machine: these figures come from a machine shared with other builds and tests.
`;
}

async function main(): Promise<void> {
  if (process.platform !== 'linux') throw new Error('bench:l7 runs on Linux only (taskset, /proc)');
  for (const [tool, args] of [['nginx', ['-v']], ['haproxy', ['-v']], ['wrk', ['--version']], ['taskset', ['--version']]] as const) {
    try { await runCommand(tool, [...args], { timeoutMs: 5000 }); } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${tool} is not installed; run scripts/setup.sh (it installs nginx-light, haproxy and wrk)`, { cause: err });
    }
  }
  const started = new Date();
  const info = readMachineInfo({ nginx: ['nginx', ['-v']], haproxy: ['haproxy', ['-v']], wrk: ['wrk', ['--version']] }, REPO);
  log(`seed ${SEED}; ${CPUS} CPUs; load average ${info.loadAvg.join(' ')}; temp dir ${dir}`);
  if (CPUS < 2) log('warning: one CPU only: the generator, the upstream and the proxies share it');

  const upPort = await findFreePort();
  const upstream = startProcess('upstream', 'nginx', ['-c', nginxConf('upstream', upPort, 1, 'x'.repeat(BODY_BYTES)), '-e', path.join(dir, 'upstream', 'error.log'), '-g', 'daemon off; master_process on;'], { cpus: GEN_CPU, logFile: path.join(dir, 'upstream.log') });
  await waitForPort(upPort, upstream, 10_000, path.join(dir, 'upstream.log'));

  const variants: Variant[] = [{ id: 'direct', kind: 'direct', cores: 0, label: 'no proxy (limit)', port: upPort }];
  for (const cores of WORKERS > 1 ? [1, WORKERS] : [1]) {
    for (const kind of ['nginx', 'haproxy', 'nodemesh'] as const) {
      const name = kind === 'haproxy' ? 'HAProxy' : kind;
      variants.push({ id: `${kind}-${cores}`, kind, cores, label: `${name} ×${cores}`, port: await findFreePort(), ...(kind === 'nodemesh' ? { scheduling: 'round-robin' as const } : {}) });
    }
    // The other way to share the listener: every worker accepts on the shared socket (no hop through the primary).
    if (cores > 1) variants.push({ id: `nodemesh-${cores}-kernel`, kind: 'nodemesh', cores, label: `nodemesh ×${cores} kernel accept`, port: await findFreePort(), scheduling: 'kernel' });
  }
  for (const v of variants) if (v.kind !== 'direct') await startVariant(v, upPort);
  // Sanity: every variant answers 200 with the upstream's body.
  for (const v of variants) {
    const res = await fetch(`http://127.0.0.1:${v.port}/`);
    const body = await res.text();
    if (res.status !== 200 || body.length !== BODY_BYTES) throw new Error(`${v.id}: GET / answered ${res.status} with ${body.length} bytes, expected 200 with ${BODY_BYTES}; see ${dir}/${v.id}.log`);
  }
  const script = writeWrkScript(dir);
  log(`warm-up ${WARMUP} s per variant`);
  for (const v of variants) await runWrk(`http://127.0.0.1:${v.port}/`, { connections: CONNS, seconds: WARMUP, cpus: GEN_CPU, script });

  const rand = createRandom(SEED);
  const cells: Cell[] = [];
  const fixedFor = (v: Variant): boolean => argv['rate-all'] || v.cores <= 1;
  for (let rep = 0; rep < REPS; rep++) {
    const plan = computeShuffled(variants.flatMap((v) => [{ v, mode: 'saturation' as Mode }, ...(fixedFor(v) ? [{ v, mode: 'fixed' as Mode }] : [])]), rand);
    log(`repetition ${rep + 1}/${REPS}: ${plan.map((p) => `${p.v.id}/${p.mode === 'saturation' ? 'sat' : 'fixed'}`).join(' ')}`);
    for (const [order, { v, mode }] of plan.entries()) {
      const c = await measure(v, mode, rep, order, script);
      cells.push(c);
      log(`  ${v.id.padEnd(12)} ${mode.padEnd(10)} ${c.rps.toFixed(0).padStart(7)} req/s  p50 ${(c.latencyUs.p50 / 1000).toFixed(2)} ms  p99 ${(c.latencyUs.p99 / 1000).toFixed(2)} ms  cpu ${c.cpuBusyPct.join('/')}%${c.errors ? `  errors ${c.errors}` : ''}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const endLoad = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const durationS = (Date.now() - started.getTime()) / 1000;
  const summary = summarize(variants, cells);

  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..+$/, '');
  const resultsDir = path.join(REPO, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = path.join(resultsDir, `l7-${stamp}.json`);
  writeFileSync(jsonFile, JSON.stringify({
    benchmark: 'l7', started: started.toISOString(), durationS, seed: SEED, machine: info, loadAvgEnd: endLoad,
    params: { reps: REPS, seconds: SECONDS, rateSeconds: RATE_SECONDS, rate: RATE, connections: CONNS, rateConnections: RATE_CONNS, workers: WORKERS, bodyBytes: BODY_BYTES, warmupS: WARMUP, cpus: { generator: GEN_CPU, oneCore: SUT1_CPU, nCores: SUTN_CPU } },
    variants: variants.map((v) => ({ id: v.id, kind: v.kind, cores: v.cores, label: v.label })),
    cells, summary,
  }, null, 2));
  const doc = renderDoc(info, endLoad, summary, jsonFile, started, durationS);
  if (!argv['no-docs']) writeFileSync(path.join(REPO, 'docs', 'bench-l7.md'), doc);

  console.log(`\n## Saturation (wrk -t1 -c${CONNS}, ${SECONDS} s × ${REPS}; seed ${SEED}; load average ${info.loadAvg.join('/')} → ${endLoad.join('/')})\n`);
  console.log(summary.saturation);
  console.log(`\n## Fixed rate (${RATE} req/s, ${RATE_CONNS} connections, ${RATE_SECONDS} s × ${REPS})\n`);
  console.log(summary.fixed);
  console.log(`\n${summary.goals.join('\n')}`);
  if (summary.distribution) console.log(`\nconnections per worker: ${summary.distribution}`);
  console.log(`\nJSON: ${path.relative(REPO, jsonFile)}${argv['no-docs'] ? '' : '; docs/bench-l7.md updated'}; ${durationS.toFixed(0)} s`);
}

let exitCode = 0;
process.once('SIGINT', () => { log('interrupted: stopping everything this run started'); void stopAllProcesses().finally(() => process.exit(130)); });
try {
  await main();
} catch (err) {
  log(`failed: ${err instanceof Error ? err.message : String(err)} (logs kept in ${dir})`);
  exitCode = 1;
} finally {
  await stopAllProcesses();
  if (exitCode === 0) rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
