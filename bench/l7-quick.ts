/**
 * A quick, by-hand measurement of one nodemesh variant as `npm run bench:l7` runs it (same processes, pinning,
 * upstream and load generators), for iterating on the proxy: `node bench/l7-quick.ts --variant mesh|plain`.
 * Prints per phase (fixed rate, saturation): req/s, p50/p99, CPU µs per request of the proxy's process tree, RSS.
 * `--connections N` (default 64) for the saturation phase: 1 leaves nothing to batch, so CPU per request does not
 * drop when the machine is busy and the proxy falls behind (better for A/B comparisons on a loaded machine).
 * `--node-args=--cpu-prof` passes flags to the proxy's primary (workers: NM_BENCH_WORKER_ARGS, see bench/lib/nodemesh-proxy.ts);
 * `--compile-cache` starts it with Node's compile cache (bench/lib/nodemesh-env.ts); `--hold S` keeps it up for S seconds
 * to load it by hand; NM_BENCH_PROBE=1 (mesh) logs the workers' event-loop delay and GC pauses.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MeshCa } from '../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../agent/certs/workload-key.ts';
import type { FixedRateResult } from './lib/fixed-rate.ts';
import type { MeshBenchCerts } from './lib/nodemesh-mesh.ts';
import { runCommand, startProcess, stopAllProcesses, waitForPort, type ManagedProcess } from './lib/procs.ts';
import { findFreePort, readCpuSeconds, readMemory, readProcessTree } from './lib/system.ts';
import { runWrk, writeWrkScript } from './lib/wrk.ts';
import { computeNodemeshEnv, warmCompileCache } from './lib/nodemesh-env.ts';
import { PRIMARY_EXEC_ARGV } from '../l7proxy/process-memory.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const { values: argv } = parseArgs({
  options: {
    variant: { type: 'string', default: 'mesh' },
    seconds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '1000' },
    reps: { type: 'string', default: '2' },
    services: { type: 'string', default: '1' },
    'node-args': { type: 'string', default: '' },
    'no-sat': { type: 'boolean', default: false },
    'no-rate': { type: 'boolean', default: false },
    'no-warm': { type: 'boolean', default: false },
    hold: { type: 'string', default: '0' },
    'compile-cache': { type: 'boolean', default: false },
    connections: { type: 'string', default: '64' },
  },
});
const SECONDS = Number(argv.seconds);
const dir = mkdtempSync(path.join(os.tmpdir(), 'nm-l7quick-'));
const log = (m: string): void => { process.stderr.write(`${m}\n`); };

async function main(): Promise<void> {
  const nodemeshEnv = argv['compile-cache'] ? computeNodemeshEnv(dir) : process.env;
  if (argv['compile-cache']) await warmCompileCache(nodemeshEnv);
  const upstream = await findFreePort();
  mkdirSync(path.join(dir, 'ng'), { recursive: true });
  writeFileSync(path.join(dir, 'ng/nginx.conf'), `worker_processes 1;
pid ${dir}/ng/nginx.pid;
error_log ${dir}/ng/error.log crit;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/ng/b; proxy_temp_path ${dir}/ng/p; fastcgi_temp_path ${dir}/ng/f; uwsgi_temp_path ${dir}/ng/u; scgi_temp_path ${dir}/ng/s;
  server { listen 127.0.0.1:${upstream} backlog=4096; listen 127.0.0.3:${upstream} backlog=4096; location / { default_type text/plain; return 200 "${'x'.repeat(128)}"; } }
}
`);
  const logFile = path.join(dir, 'log');
  const ng = startProcess('upstream', 'nginx', ['-c', path.join(dir, 'ng/nginx.conf'), '-g', 'daemon off; master_process on;'], { cpus: '0', logFile });
  await waitForPort(upstream, ng, 10_000, logFile);
  const port = await findFreePort();
  const nodeArgs = argv['node-args'] ? argv['node-args'].split(' ') : [];
  let ready: () => void = () => {};
  const readyP = new Promise<void>((r) => { ready = r; });
  const onStdout = (line: string): void => { if (line.includes('"ready":true')) ready(); };
  let proc: ManagedProcess;
  let controlUrl: string | undefined;
  if (argv.variant === 'mesh') {
    const TD = 'cluster.local';
    const ca = await MeshCa.create({ trustDomain: TD });
    const issue = async (namespace: string, serviceAccount: string): Promise<{ certChainPem: string; keyPem: string }> => {
      const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://${TD}/ns/${namespace}/sa/${serviceAccount}`);
      return { certChainPem: (await ca.issue(csrPem, { namespace, serviceAccount })).certChainPem, keyPem };
    };
    const certs: MeshBenchCerts = { trustDomain: TD, bundlePem: ca.bundle().pem, web: await issue('shop', 'web'), proxyA: await issue('nodemesh-system', 'nodemesh-proxy'), proxyB: await issue('nodemesh-system', 'nodemesh-proxy') };
    writeFileSync(path.join(dir, 'certs.json'), JSON.stringify(certs), { mode: 0o600 });
    proc = startProcess('mesh', process.execPath, [...PRIMARY_EXEC_ARGV, ...nodeArgs, path.join(REPO, 'bench/lib/nodemesh-mesh.ts'), '--port', String(port), '--b-port', String(await findFreePort()), '--hbone', String(await findFreePort()), '--upstream', String(upstream), '--pod-ip', '127.0.0.3', '--certs', path.join(dir, 'certs.json')], { cpus: '1', logFile, onStdout, env: nodemeshEnv });
  } else {
    const control = await findFreePort();
    controlUrl = `http://127.0.0.1:${control}/stats`;
    proc = startProcess('plain', process.execPath, [...PRIMARY_EXEC_ARGV, ...nodeArgs, path.join(REPO, 'bench/lib/nodemesh-proxy.ts'), '--port', String(port), '--upstream', String(upstream), '--workers', '1', '--control', String(control), '--services', argv.services], { cpus: '1', logFile, onStdout, env: nodemeshEnv });
  }
  await Promise.race([readyP, new Promise<void>((_, rej) => setTimeout(() => rej(new Error(`not ready; see ${logFile}`)), 60_000))]);
  await waitForPort(port, proc, 10_000, logFile);
  const url = `http://127.0.0.1:${port}/`;
  const script = writeWrkScript(dir);
  const tree = (): number[] => readProcessTree(proc.pid);
  const perPid = (): string => tree().map((p) => { const st = readFileSync(`/proc/${p}/stat`, 'utf8'); const f = st.slice(st.lastIndexOf(')') + 2).split(' '); const ss = readFileSync(`/proc/${p}/schedstat`, 'utf8').split(' '); return `${p}:u${(Number(f[11]) / 100).toFixed(2)}/s${(Number(f[12]) / 100).toFixed(2)}/wait${(Number(ss[1]) / 1e9).toFixed(2)}/slices${ss[2]!.trim()}`; }).join(' ');
  await new Promise((r) => setTimeout(r, 1000));
  const i0 = readCpuSeconds(tree());
  await new Promise((r) => setTimeout(r, 2000));
  log(`idle: ${(((readCpuSeconds(tree()) - i0) / 2) * 100).toFixed(1)} % of a core`);
  if (!argv['no-warm']) await runWrk(url, { connections: 64, seconds: 1, cpus: '0', script });
  log(`after warm-up, CPU s per process: ${perPid()}`);
  for (let rep = 0; rep < Number(argv.reps); rep++) {
    if (!argv['no-rate']) {
      const c0 = readCpuSeconds(tree());
      const out = await runCommand(process.execPath, [path.join(REPO, 'bench/lib/fixed-rate.ts'), '--url', url, '--rate', argv.rate, '--connections', '16', '--seconds', String(SECONDS)], { cpus: '0', timeoutMs: (SECONDS + 30) * 1000 });
      const c1 = readCpuSeconds(tree());
      const r = JSON.parse(out.trim().split('\n').pop()!) as FixedRateResult;
      log(`  CPU s per process: ${perPid()}`);
      log(`fixed ${argv.rate}/s: p50 ${r.latencyUs.p50} µs p99 ${r.latencyUs.p99} µs p99.9 ${r.latencyUs.p999} max ${r.latencyUs.max} ok ${r.ok} err ${r.errors} queued ${r.queued}; CPU ${(((c1 - c0) * 1e6) / Math.max(1, r.ok)).toFixed(0)} µs/req`);
    }
    if (!argv['no-sat']) {
      const c0 = readCpuSeconds(tree());
      const w = await runWrk(url, { connections: Number(argv.connections), seconds: SECONDS, cpus: '0', script });
      const c1 = readCpuSeconds(tree());
      const mem = readMemory(tree());
      log(`wrk: ${w.rps.toFixed(0)} req/s p50 ${w.latencyUs.p50} p99 ${w.latencyUs.p99} µs errors ${JSON.stringify(w.errors)}; CPU ${(((c1 - c0) * 1e6) / Math.max(1, w.requests)).toFixed(1)} µs/req (${((c1 - c0) / SECONDS).toFixed(2)} cores); RSS ${mem.rssMb} MB [${mem.perProcess.map((p) => `${p.name}:${p.rssMb}`).join(' ')}]`);
    }
  }
  if (Number(argv.hold) > 0) {
    log(`holding ${argv.hold} s: ${url} pids ${tree().join(' ')}`);
    await new Promise((r) => setTimeout(r, Number(argv.hold) * 1000));
  }
  if (controlUrl) log(`control: ${await (await fetch(controlUrl)).text()}`);
  if (process.env.NM_BENCH_PROBE === '1') for (const l of readFileSync(logFile, 'utf8').split('\n')) if (l.startsWith('probe')) log(l);
  const mem = readMemory(tree());
  log(`final RSS ${mem.rssMb} MB (PSS ${mem.pssMb}) [${mem.perProcess.map((p) => `${p.name}:${p.rssMb}`).join(' ')}]`);
}

try {
  await main();
} finally {
  await stopAllProcesses();
  rmSync(dir, { recursive: true, force: true });
}
