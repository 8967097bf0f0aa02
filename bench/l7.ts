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
import { type ManagedProcess, requireL7BenchTools, runCommand, startProcess, stopAllProcesses, stopProcess, waitForPort } from './lib/procs.ts';
import { computeCv, computePairedRatios, computeShuffled, computeSpread, createRandom } from './lib/stats.ts';
import { computeCpuBusy, findFreePort, readCpuSeconds, readCpuTimes, readMachineInfo, readMemory, readProcessTree, type MachineInfo } from './lib/system.ts';
import { runWrk, writeWrkScript, type WrkResult } from './lib/wrk.ts';
import type { MeshBenchCerts } from './lib/nodemesh-mesh.ts';
import type { HandshakeResult } from './lib/tls-handshakes.ts';
import { MeshCa } from '../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../agent/certs/workload-key.ts';
import { computeNodemeshEnv, warmCompileCache } from './lib/nodemesh-env.ts';
import { PRIMARY_EXEC_ARGV } from '../l7proxy/process-memory.ts';

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
    'handshake-seconds': { type: 'string', default: '2' },
    'rss-services': { type: 'string', default: '10000' },
    'no-mesh': { type: 'boolean', default: false },
    'compile-cache': { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (argv.help) {
  console.log(`usage: npm run bench:l7 -- [--reps 3] [--seconds 3] [--rate 1000] [--rate-seconds 3] [--connections 64]
  [--rate-connections 16] [--workers N] [--body-bytes 128] [--warmup 1.5] [--seed S] [--rate-all] [--no-docs] [--quick]
  [--handshake-seconds 2] [--rss-services 10000 (0: skip)] [--no-mesh] [--compile-cache]`);
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
const HS_SECONDS = QUICK ? 1 : Number(argv['handshake-seconds']);
const RSS_SERVICES = Number(argv['rss-services']);
const MESH = !argv['no-mesh'];
const TD = 'cluster.local';
const SEED = argv.seed !== undefined ? Number(argv.seed) : Math.floor(Math.random() * 2 ** 31);

// Pinning: the generator and the upstream share CPU 0; one-core variants own the last CPU; N-core variants use all.
const GEN_CPU = '0';
const SUT1_CPU = String(CPUS - 1);
const SUTN_CPU = CPUS > 1 ? `0-${CPUS - 1}` : '0';

type Kind = 'direct' | 'nginx' | 'haproxy' | 'nodemesh';
/** `mesh`: the two-proxy path (source proxy → mTLS → destination proxy → upstream); `tlsPort`/`tlsHost`: the
 *  destination proxy's mTLS listener; `proc2`: the destination process when it is a process of its own. */
type Variant = { id: string; kind: Kind; cores: number; label: string; port: number; scheduling?: 'kernel' | 'round-robin'; proc?: ManagedProcess; control?: number; mesh?: boolean; tlsPort?: number; tlsHost?: string; proc2?: ManagedProcess };
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
/** nodemesh processes run as the agent starts them; `--compile-cache` adds Node's compile cache, warmed once
 *  (bench/lib/nodemesh-env.ts: the agent does not set it yet). */
const nodemeshEnv = argv['compile-cache'] ? computeNodemeshEnv(dir) : process.env;
const log = (m: string): void => { process.stderr.write(`[bench:l7] ${m}\n`); };

function nginxConf(name: string, port: number, workers: number, body: string): string {
  const http = body.startsWith('upstream:')
    ? `upstream up { server 127.0.0.1:${body.slice(9)}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
    server {
      listen 127.0.0.1:${port} backlog=4096;
      location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }`
    : `server {
      listen 127.0.0.1:${port} backlog=4096;
      listen 127.0.0.3:${port} backlog=4096;
      location / { default_type text/plain; return 200 "${body}"; }
    }`;
  return nginxConfRaw(name, workers, http);
}

function nginxConfRaw(name: string, workers: number, http: string): string {
  const base = path.join(dir, name);
  mkdirSync(base, { recursive: true });
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

/** PEM files of the mesh CA's certificates for nginx and HAProxy (HAProxy's `crt` wants chain + key in one file). */
type CertFiles = { json: string; bundle: string; webCrt: string; webKey: string; webPem: string; dstCrt: string; dstKey: string; dstPem: string };

/** A mesh CA (operator/ca MeshCa) and the SVIDs of the run: the source workload "web" and two node proxies. */
async function issueMeshCerts(): Promise<CertFiles> {
  const ca = await MeshCa.create({ trustDomain: TD });
  const issue = async (namespace: string, serviceAccount: string): Promise<{ certChainPem: string; keyPem: string }> => {
    const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://${TD}/ns/${namespace}/sa/${serviceAccount}`);
    return { certChainPem: (await ca.issue(csrPem, { namespace, serviceAccount })).certChainPem, keyPem };
  };
  const certs: MeshBenchCerts = { trustDomain: TD, bundlePem: ca.bundle().pem, web: await issue('shop', 'web'), proxyA: await issue('nodemesh-system', 'nodemesh-proxy'), proxyB: await issue('nodemesh-system', 'nodemesh-proxy') };
  const base = path.join(dir, 'certs');
  mkdirSync(base, { recursive: true });
  const f = (name: string, text: string): string => { const file = path.join(base, name); writeFileSync(file, text, { mode: 0o600 }); return file; };
  return {
    json: f('certs.json', JSON.stringify(certs)), bundle: f('bundle.pem', certs.bundlePem),
    webCrt: f('web.crt', certs.web.certChainPem), webKey: f('web.key', certs.web.keyPem), webPem: f('web.pem', certs.web.certChainPem + certs.web.keyPem),
    dstCrt: f('dst.crt', certs.proxyB.certChainPem), dstKey: f('dst.key', certs.proxyB.keyPem), dstPem: f('dst.pem', certs.proxyB.certChainPem + certs.proxyB.keyPem),
  };
}

let certFiles: CertFiles | undefined;

/** nginx on the mesh path: a source nginx (plain in, HTTPS with a client certificate out, TLS 1.3, keep-alive) and a
 *  destination nginx (`ssl_verify_client on` against the bundle) forwarding to the upstream. */
function nginxMeshConfs(v: Variant, upstream: number, c: CertFiles): { src: string; dst: string } {
  const src = nginxConfRaw(`${v.id}-src`, 1, `upstream dst { server 127.0.0.1:${v.tlsPort}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
    server {
      listen 127.0.0.1:${v.port} backlog=4096;
      location / {
        proxy_pass https://dst; proxy_http_version 1.1; proxy_set_header Connection "";
        proxy_ssl_certificate ${c.webCrt}; proxy_ssl_certificate_key ${c.webKey};
        proxy_ssl_trusted_certificate ${c.bundle}; proxy_ssl_verify off; proxy_ssl_verify_depth 3;
        proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
      }
    }`);
  const dst = nginxConfRaw(`${v.id}-dst`, 1, `upstream up { server 127.0.0.1:${upstream}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 60s; }
    ssl_session_cache shared:nmb7:10m;
    server {
      listen 127.0.0.1:${v.tlsPort} ssl backlog=4096;
      ssl_certificate ${c.dstCrt}; ssl_certificate_key ${c.dstKey};
      ssl_client_certificate ${c.bundle}; ssl_verify_client on; ssl_verify_depth 3;
      ssl_protocols TLSv1.3; ssl_session_tickets on;
      location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }`);
  return { src, dst };
}

/** HAProxy on the mesh path: `server ... ssl crt ... ca-file ... verify required` to a second HAProxy whose
 *  `bind ... ssl crt ... ca-file ... verify required` forwards to the upstream. */
function haproxyMeshConfs(v: Variant, upstream: number, c: CertFiles): { src: string; dst: string } {
  const head = `global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
`;
  const src = path.join(dir, `${v.id}-src.cfg`);
  writeFileSync(src, `${head}frontend fe
    bind 127.0.0.1:${v.port}
    default_backend be
backend be
    server dst 127.0.0.1:${v.tlsPort} ssl crt ${c.webPem} ca-file ${c.bundle} verify required ssl-min-ver TLSv1.3 alpn http/1.1
`);
  const dst = path.join(dir, `${v.id}-dst.cfg`);
  writeFileSync(dst, `${head}frontend fe
    bind 127.0.0.1:${v.tlsPort} ssl crt ${c.dstPem} ca-file ${c.bundle} verify required ssl-min-ver TLSv1.3 alpn http/1.1
    default_backend be
backend be
    server up 127.0.0.1:${upstream}
`);
  return { src, dst };
}

async function startMeshVariant(v: Variant, upstream: number): Promise<void> {
  const c = certFiles!;
  const logFile = path.join(dir, `${v.id}.log`);
  const cpus = SUT1_CPU; // both hops on the one-core CPU
  if (v.kind === 'nginx') {
    const { src, dst } = nginxMeshConfs(v, upstream, c);
    v.proc2 = startProcess(`${v.id}-dst`, 'nginx', ['-c', dst, '-e', path.join(dir, `${v.id}-dst`, 'error.log'), '-g', 'daemon off; master_process on;'], { cpus, logFile });
    await waitForPort(v.tlsPort!, v.proc2, 10_000, logFile);
    v.proc = startProcess(`${v.id}-src`, 'nginx', ['-c', src, '-e', path.join(dir, `${v.id}-src`, 'error.log'), '-g', 'daemon off; master_process on;'], { cpus, logFile });
  } else if (v.kind === 'haproxy') {
    const { src, dst } = haproxyMeshConfs(v, upstream, c);
    v.proc2 = startProcess(`${v.id}-dst`, 'haproxy', ['-f', dst, '-db'], { cpus, logFile });
    await waitForPort(v.tlsPort!, v.proc2, 10_000, logFile);
    v.proc = startProcess(`${v.id}-src`, 'haproxy', ['-f', src, '-db'], { cpus, logFile });
  } else if (v.kind === 'nodemesh') {
    let ready: () => void = () => {};
    const readyP = new Promise<void>((r) => { ready = r; });
    v.proc = startProcess(v.id, process.execPath, [...PRIMARY_EXEC_ARGV, path.join(REPO, 'bench/lib/nodemesh-mesh.ts'), '--port', String(v.port), '--b-port', String(await findFreePort()), '--hbone', String(v.tlsPort), '--upstream', String(upstream), '--pod-ip', '127.0.0.3', '--certs', c.json], {
      cpus, logFile, env: nodemeshEnv, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
    });
    await Promise.race([readyP, new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`${v.id} not ready after 30 s; see ${logFile}`)), 30_000))]);
  }
  if (v.proc) await waitForPort(v.port, v.proc, 10_000, logFile);
}

async function startVariant(v: Variant, upstream: number): Promise<void> {
  if (v.mesh) return startMeshVariant(v, upstream);
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
    v.proc = startProcess(v.id, process.execPath, [...PRIMARY_EXEC_ARGV, path.join(REPO, 'bench/lib/nodemesh-proxy.ts'), '--port', String(v.port), '--upstream', String(upstream), '--workers', String(v.cores), '--control', String(v.control), '--scheduling', v.scheduling ?? 'round-robin'], {
      cpus, logFile, env: nodemeshEnv, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
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
  const treeOf = (): number[] => [...(v.proc ? readProcessTree(v.proc.pid) : []), ...(v.proc2 ? readProcessTree(v.proc2.pid) : [])];
  const tree = treeOf();
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
  const mem = v.proc ? readMemory(treeOf()) : undefined;
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

type Summary = { saturation: string; fixed: string; goals: string[]; distribution: string; handshakes: string };
type HandshakeCell = { variant: string; label: string; target: string; resume: boolean; result: HandshakeResult; serverCpuS: number | undefined };
type Rss10k = { services: number; rssMb: number; pssMb: number; workerRssMb: number; readyS: number; status: number } | undefined;
type Extra = { handshakes: HandshakeCell[]; rss10k: Rss10k };

/** Requests per CPU-second of the proxy's processes: what one fully available core would serve. */
const perCpu = (c: Cell): number => (c.vcpuPer1000Rps !== undefined && c.vcpuPer1000Rps > 0 ? 1000 / c.vcpuPer1000Rps : NaN);

function summarize(variants: Variant[], cells: Cell[], extra: Extra): Summary {
  const byRep = (id: string, mode: Mode, pick: (c: Cell) => number): Map<number, number> =>
    new Map(cells.filter((c) => c.variant === id && c.mode === mode).map((c) => [c.rep, pick(c)]));
  const values = (id: string, mode: Mode, pick: (c: Cell) => number | undefined): number[] =>
    cells.filter((c) => c.variant === id && c.mode === mode).map(pick).filter((x): x is number => x !== undefined);
  const peer = (v: Variant, kind: Kind): Variant | undefined => variants.find((p) => p.kind === kind && p.cores === v.cores && !!p.mesh === !!v.mesh);
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
  const nm1 = variants.find((v) => v.kind === 'nodemesh' && v.cores === 1 && !v.mesh);
  if (nm1) {
    const best = new Map<number, number>();
    for (const k of ['nginx', 'haproxy'] as const) {
      const p = variants.find((v) => v.kind === k && v.cores === 1 && !v.mesh);
      if (!p) continue;
      for (const [rep, x] of byRep(p.id, 'saturation', (c) => c.rps)) best.set(rep, Math.max(best.get(rep) ?? 0, x));
    }
    const r = computePairedRatios(byRep(nm1.id, 'saturation', (c) => c.rps), best);
    goals.push(`- Requests/s on one core ÷ the best C proxy on the same core (same repetition): **${fmtRatio(r)}** — goal ≥ 0.50: ${r.n === 0 ? 'not measured' : r.median >= 0.5 ? 'met' : 'not met'}.`);
    const bestEff = new Map<number, number>();
    for (const k of ['nginx', 'haproxy'] as const) {
      const p = variants.find((v) => v.kind === k && v.cores === 1 && !v.mesh);
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
    goals.push(`- Added latency at ${RATE} req/s, plain HTTP/1.1, one proxy hop (the < 1 ms goal is about the two-hop mTLS path, below): p50 **+${fmtSpread(computeSpread(added50))} µs**, p99 **+${fmtSpread(a)} µs**. On a loaded machine the p99 of the no-proxy run itself is milliseconds: compare p99s only within a repetition.`);
    const rss = computeSpread(values(nm1.id, 'saturation', (c) => c.rssMb));
    const r10 = extra.rss10k;
    goals.push(r10
      ? `- RSS of nodemesh ×1 with ${r10.services.toLocaleString('en')} services configured (after ${WARMUP} s of wrk traffic): **${r10.rssMb.toFixed(1)} MB** (primary + worker; worker ${r10.workerRssMb.toFixed(1)} MB; PSS ${r10.pssMb.toFixed(1)} MB; ready in ${r10.readyS.toFixed(1)} s) — goal < 100 MB: ${r10.rssMb < 100 ? 'met' : 'not met'}${r10.workerRssMb < 100 && r10.rssMb >= 100 ? ' (the worker alone is under 100 MB; the primary is the rest)' : ''}. With one service: ${fmtSpread(rss, 1)} MB.`
      : `- RSS of nodemesh ×1 with one service configured: ${fmtSpread(rss, 1)} MB (primary + worker); the goal (< 100 MB with 10,000 services) was not measured in this run.`);
  }
  // The mesh path (two proxies, mTLS between them).
  const nmMesh = variants.find((v) => v.kind === 'nodemesh' && v.mesh);
  if (nmMesh) {
    const best = new Map<number, number>();
    for (const k of ['nginx', 'haproxy'] as const) {
      const p = variants.find((v) => v.kind === k && v.mesh);
      if (!p) continue;
      for (const [rep, x] of byRep(p.id, 'saturation', (c) => c.rps)) best.set(rep, Math.max(best.get(rep) ?? 0, x));
    }
    const r = computePairedRatios(byRep(nmMesh.id, 'saturation', (c) => c.rps), best);
    goals.push(`- Mesh path (both proxies on one core): requests/s ÷ the best C proxy pair on the same core: **${fmtRatio(r)}** — goal ≥ 0.50: ${r.n === 0 ? 'not measured' : r.median >= 0.5 ? 'met' : 'not met'}.`);
    for (const v of variants.filter((x) => x.mesh)) {
      const added: number[] = [];
      for (const [rep, x] of byRep(v.id, 'fixed', (c) => c.latencyUs.p99)) { const d = byRep(direct.id, 'fixed', (c) => c.latencyUs.p99).get(rep); if (d !== undefined) added.push(x - d); }
      const a = computeSpread(added);
      const added50: number[] = [];
      for (const [rep, x] of byRep(v.id, 'fixed', (c) => c.latencyUs.p50)) { const d = byRep(direct.id, 'fixed', (c) => c.latencyUs.p50).get(rep); if (d !== undefined) added50.push(x - d); }
      goals.push(`- ${v.label}: added latency at ${RATE} req/s vs no proxy (same repetition): p50 **+${fmtSpread(computeSpread(added50))} µs**, p99 **+${fmtSpread(a)} µs** — goal added p99 < 1 ms: ${a.n === 0 ? 'not measured' : a.median < 1000 ? 'met' : 'not met'}${v.kind === 'nodemesh' ? '' : ' (reference)'}.`);
    }
  }
  const hs: string[] = [
    `| destination listener | full handshakes/s | resumed handshakes/s | resumed ÷ full | resumed share | server CPU ms per full / resumed | errors |`,
    `|---|---|---|---|---|---|---|`,
  ];
  for (const v of variants.filter((x) => x.mesh)) {
    const full = extra.handshakes.find((h) => h.variant === v.id && !h.resume);
    const res = extra.handshakes.find((h) => h.variant === v.id && h.resume);
    if (!full || !res) continue;
    const per = (h: HandshakeCell): string => (h.serverCpuS !== undefined && h.result.handshakes > 0 ? ((h.serverCpuS * 1000) / h.result.handshakes).toFixed(2) : '–');
    hs.push(`| ${v.label} (${full.target}) | ${full.result.perSecond.toFixed(0)} | ${res.result.perSecond.toFixed(0)} | ${full.result.perSecond > 0 ? (res.result.perSecond / full.result.perSecond).toFixed(2) : '–'} | ${res.result.handshakes > 0 ? ((100 * res.result.resumed) / res.result.handshakes).toFixed(0) + ' %' : '–'} | ${per(full)} / ${per(res)} | ${full.result.errors + res.result.errors}${full.result.firstError ?? res.result.firstError ? ` (${full.result.firstError ?? res.result.firstError})` : ''} |`);
  }
  const dist = variants.filter((v) => v.kind === 'nodemesh' && v.cores > 1).map((v) => `${v.label}: ${cells.filter((c) => c.variant === v.id && c.perWorkerAccepted).map((c) => `[${c.perWorkerAccepted!.join(', ')}]`).join(' ')}`).join('; ');
  return { saturation: sat.join('\n'), fixed: fixed.join('\n'), goals, distribution: dist, handshakes: hs.length > 2 ? hs.join('\n') : '' };
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

${MESH ? `## Mesh path (client → source proxy → mTLS → destination proxy → upstream)

The rows "… mesh (2 hops, mTLS)" above. Certificates come from a mesh CA created for the run (operator/ca \`MeshCa\`,
ECDSA P-256 SVIDs): the source side presents the "web" workload's SVID (\`spiffe://cluster.local/ns/shop/sa/web\`),
the destination its node proxy SVID; both trust the CA bundle (root + intermediate). Both hops run on CPU ${SUT1_CPU}
(one core for the whole path); load and upstream as above.

- nodemesh: two \`ProxyWorkerPool\`s, one worker each, with the agent's mesh plugin (agent/proxy/worker-plugin.ts),
  configured by \`planProxy\` from NodeState (\`bench/lib/nodemesh-mesh.ts\`): node A's outbound listener → HBONE
  (TLS 1.3, ALPN h2, one HTTP/2 CONNECT stream per client connection, SPIFFE checks both ways) → node B
  (127.0.0.2) inbound → the upstream (127.0.0.3). One process holds both pools' primaries, so the RSS column is
  one primary + two workers.
- nginx: source \`proxy_pass https://\` with \`proxy_ssl_certificate\`/\`_key\`, \`proxy_ssl_trusted_certificate\`,
  \`proxy_ssl_protocols TLSv1.3\`, \`proxy_ssl_session_reuse on\`, keep-alive 64 → destination nginx \`listen … ssl\`,
  \`ssl_client_certificate\` + \`ssl_verify_client on\`, TLS 1.3. **\`proxy_ssl_verify off\`**: nginx can only check a
  DNS name/IP against the server certificate and SVIDs have a URI SAN only, so with verification on no handshake
  completes; the source nginx therefore does not authenticate the destination (nodemesh and HAProxy do).
- HAProxy: \`server … ssl crt … ca-file … verify required ssl-min-ver TLSv1.3\` (chain verified, no name check) →
  \`bind … ssl crt … ca-file … verify required\`, \`http-reuse always\`.
- nginx and HAProxy carry HTTP/1.1 over the TLS connections (pooled, keep-alive); nodemesh carries HTTP/1.1 inside
  HTTP/2 CONNECT streams (HBONE), one per client connection.

## TLS 1.3 handshakes (mTLS, client certificate)

Against each destination listener: back-to-back connections (4 parallel loops in one Node process on CPU ${GEN_CPU}) that
present the web SVID, verify the server chain and close after the handshake (\`bench/lib/tls-handshakes.ts\`); full =
no session offered, resumed = every connection offers a TLS 1.3 ticket from an earlier one. ${HS_SECONDS} s each. The client
process (one core, shared with the upstream) limits these rates, so handshakes/s are a floor and the **server CPU per
handshake** (CPU time of the proxy processes ÷ handshakes) is the better comparison.

${summary.handshakes || '–'}

` : ''}## Against the goals of issue 5

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
  (round-robin), which with ${CONNS} keep-alive connections per cell is a handful of accepts. It runs with
  \`--max-semi-space-size=1\` (\`PRIMARY_EXEC_ARGV\` in l7proxy/process-memory.ts, as the agent starts it): with
  10,000 services its RSS went ~124 → ~116 MB (~95 → ~82 with the compile cache below; bench/l7-quick.ts). Backends make their retry budget on first use
  (l7proxy/snapshot.ts): ~10 MB of worker heap and backing stores with 10,000 idle backends.
- What the RSS column is made of: every Node process maps ~50-57 MB of the \`node\` binary (shared, file-backed: PSS
  counts it once), so two processes (primary + one worker) start near 90 MB of summed RSS before any proxy code; an
  idle bare \`node\` is ~44 MB. Type stripping costs ~20-25 MB more per process (Node loads its stripper, ~4 MB of JS
  and a WebAssembly instance, for the life of the process); Node's compile cache removes that
  (\`npm run bench:l7 -- --compile-cache\`; by hand: 10,000 services, primary + worker 252 → 210 MB, PSS 144 → 108 MB). The agent
  does not turn it on yet (\`computeCompileCacheEnv\` in l7proxy/process-memory.ts is ready for proxy-supervisor.ts).
- Added p99 on the mesh path at 1000 req/s: on this shared machine it is set by waiting for a CPU, not by the proxy
  stalling. With \`NM_BENCH_PROBE=1 node bench/l7-quick.ts\` (load average 3-5): the two workers' main threads each
  waited on the run queue about as long as they ran (~0.9 s per 4 s, /proc/<pid>/schedstat), event-loop delay
  maxima of 30-70 ms in intervals whose GC pauses stayed under 15 ms, and TCP_NODELAY is set on every socket
  (Node 24 default, checked with strace). Each request wakes the source worker twice and the destination worker
  twice on one core at ~0.4 ms of CPU each time at this rate (vs ~0.18 ms at saturation), so CPU per request is
  what moves the p99 here.
- Where a request's CPU goes (\`bench/l7-micro.ts\`: one in-process \`NodeProxy\`, the same upstream and wrk, by hand on
  the same machine): ~50-70 µs per request, ~20 of them system time for the four socket calls. On that stack
  node:http answering from memory costs ~18 µs and node:http + undici \`dispatch\` forwarding with no checks at all
  ~40-45 µs: the proxy's own work (strict checks, normalization, routing, policy, header hygiene) is ~10 µs and the
  rest is the two HTTP/1 libraries; nginx and HAProxy spend 16-17 µs in all.

## Not measured yet

- Handshakes per second with a client that is not the bottleneck (see above), and on more than one core.
- The mesh path on N cores.
- A quiet machine: these figures come from a machine shared with other builds and tests.
`;
}

async function main(): Promise<void> {
  await requireL7BenchTools('bench:l7');
  const started = new Date();
  const info = readMachineInfo({ nginx: ['nginx', ['-v']], haproxy: ['haproxy', ['-v']], wrk: ['wrk', ['--version']] }, REPO);
  log(`seed ${SEED}; ${CPUS} CPUs; load average ${info.loadAvg.join(' ')}; temp dir ${dir}`);
  if (CPUS < 2) log('warning: one CPU only: the generator, the upstream and the proxies share it');

  if (argv['compile-cache']) await warmCompileCache(nodemeshEnv);
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
  if (MESH) {
    certFiles = await issueMeshCerts();
    for (const kind of ['nginx', 'haproxy', 'nodemesh'] as const) {
      const name = kind === 'haproxy' ? 'HAProxy' : kind;
      variants.push({ id: `${kind}-mesh`, kind, cores: 1, mesh: true, label: `${name} mesh (2 hops, mTLS)`, port: await findFreePort(), tlsPort: await findFreePort(), tlsHost: kind === 'nodemesh' ? '127.0.0.2' : '127.0.0.1' });
    }
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
  // Full vs resumed TLS handshakes against each destination proxy's mTLS listener (client on the generator CPU).
  const handshakes: HandshakeCell[] = [];
  for (const v of variants.filter((x) => x.mesh)) {
    for (const resume of [false, true]) {
      const tree = [...(v.proc ? readProcessTree(v.proc.pid) : []), ...(v.proc2 ? readProcessTree(v.proc2.pid) : [])];
      const cpu0 = readCpuSeconds(tree);
      let result: HandshakeResult;
      try {
        const out = await runCommand(process.execPath, [path.join(REPO, 'bench/lib/tls-handshakes.ts'), '--host', v.tlsHost!, '--port', String(v.tlsPort), '--certs', certFiles!.json, '--seconds', String(HS_SECONDS), '--alpn', v.kind === 'nodemesh' ? 'h2' : 'http/1.1', ...(resume ? ['--resume'] : [])], { cpus: GEN_CPU, timeoutMs: (HS_SECONDS + 20) * 1000 });
        result = JSON.parse(out.trim().split('\n').pop()!) as HandshakeResult;
      } catch (err) {
        result = { handshakes: 0, perSecond: 0, resumed: 0, errors: 1, firstError: err instanceof Error ? err.message.slice(0, 200) : String(err), seconds: 0 };
      }
      const serverCpuS = readCpuSeconds(tree) - cpu0;
      handshakes.push({ variant: v.id, label: v.label, target: `${v.tlsHost}:${v.tlsPort}`, resume, result, serverCpuS });
      log(`  ${v.id.padEnd(14)} ${resume ? 'resumed' : 'full'} handshakes ${result.perSecond.toFixed(0)}/s (resumed ${result.resumed}/${result.handshakes}, errors ${result.errors})`);
    }
  }
  // RSS with many services configured (the goal's 10,000): one nodemesh ×1 with that config, after a short load.
  let rss10k: Rss10k;
  if (RSS_SERVICES > 1) {
    const port = await findFreePort(); const control = await findFreePort();
    const logFile = path.join(dir, 'nodemesh-rss.log');
    let ready: () => void = () => {};
    const readyP = new Promise<void>((r) => { ready = r; });
    const t0 = Date.now();
    const p = startProcess('nodemesh-rss', process.execPath, [...PRIMARY_EXEC_ARGV, path.join(REPO, 'bench/lib/nodemesh-proxy.ts'), '--port', String(port), '--upstream', String(upPort), '--workers', '1', '--control', String(control), '--services', String(RSS_SERVICES)], {
      cpus: SUT1_CPU, logFile, env: nodemeshEnv, onStdout: (line) => { if (line.includes('"ready":true')) ready(); },
    });
    try {
      await Promise.race([readyP, new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`nodemesh-rss not ready after 60 s; see ${logFile}`)), 60_000))]);
      const readyS = (Date.now() - t0) / 1000;
      const res = await fetch(`http://127.0.0.1:${port}/`); await res.text();
      await runWrk(`http://127.0.0.1:${port}/`, { connections: CONNS, seconds: WARMUP, cpus: GEN_CPU, script });
      const mem = readMemory(readProcessTree(p.pid));
      rss10k = { services: RSS_SERVICES, rssMb: mem.rssMb, pssMb: mem.pssMb, workerRssMb: mem.perProcess.filter((x) => x.pid !== p.pid).reduce((a, x) => a + x.rssMb, 0), readyS, status: res.status };
      log(`  nodemesh ×1 with ${RSS_SERVICES} services: RSS ${mem.rssMb.toFixed(1)} MB (worker ${rss10k.workerRssMb.toFixed(1)} MB), ready in ${readyS.toFixed(1)} s, GET / → ${res.status}`);
    } catch (err) {
      log(`  RSS with ${RSS_SERVICES} services not measured: ${err instanceof Error ? err.message : String(err)}`);
    } finally { await stopProcess(p); }
  }
  const endLoad = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const durationS = (Date.now() - started.getTime()) / 1000;
  const summary = summarize(variants, cells, { handshakes, rss10k });

  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..+$/, '');
  const resultsDir = path.join(REPO, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = path.join(resultsDir, `l7-${stamp}.json`);
  writeFileSync(jsonFile, JSON.stringify({
    benchmark: 'l7', started: started.toISOString(), durationS, seed: SEED, machine: info, loadAvgEnd: endLoad,
    params: { reps: REPS, seconds: SECONDS, rateSeconds: RATE_SECONDS, rate: RATE, connections: CONNS, rateConnections: RATE_CONNS, workers: WORKERS, bodyBytes: BODY_BYTES, warmupS: WARMUP, cpus: { generator: GEN_CPU, oneCore: SUT1_CPU, nCores: SUTN_CPU } },
    variants: variants.map((v) => ({ id: v.id, kind: v.kind, cores: v.cores, label: v.label })),
    cells, handshakes, rss10k, summary,
  }, null, 2));
  const doc = renderDoc(info, endLoad, summary, jsonFile, started, durationS);
  if (!argv['no-docs']) writeFileSync(path.join(REPO, 'docs', 'bench-l7.md'), doc);

  console.log(`\n## Saturation (wrk -t1 -c${CONNS}, ${SECONDS} s × ${REPS}; seed ${SEED}; load average ${info.loadAvg.join('/')} → ${endLoad.join('/')})\n`);
  console.log(summary.saturation);
  console.log(`\n## Fixed rate (${RATE} req/s, ${RATE_CONNS} connections, ${RATE_SECONDS} s × ${REPS})\n`);
  console.log(summary.fixed);
  if (summary.handshakes) { console.log(`\n## TLS 1.3 handshakes with client certificates (${HS_SECONDS} s each, 4 parallel loops on CPU ${GEN_CPU})\n`); console.log(summary.handshakes); }
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
