/**
 * A controlled micro-run of the L7 request path: one in-process NodeProxy (no worker pool, no primary) forwarding
 * to an nginx upstream over loopback, loaded by wrk. Prints CPU µs per request of this process, req/s, RSS and heap.
 * Run it pinned, with the generator and the upstream on another CPU, e.g.
 *   taskset -c 1 node bench/l7-micro.ts --seconds 5           (add --cpu-prof to node for a profile of the run)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { NodeProxy } from '../l7proxy/proxy.ts';
import { planBenchConfig } from './lib/nodemesh-proxy.ts';
import { findFreePort } from './lib/system.ts';

const { values: argv } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '64' },
    'gen-cpu': { type: 'string', default: '0' },
    reps: { type: 'string', default: '1' },
    'body-bytes': { type: 'string', default: '128' },
  },
});

const SERVICE = { ip: '10.96.0.10', port: 80 };

/** Run a command to completion; resolves with its stdout. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}: ${out.slice(0, 300)}`))));
  });
}

async function wrk(port: number, seconds: number, conns: number): Promise<{ requests: number; rps: number; p50: string; p99: string }> {
  const out = await run('taskset', ['-c', argv['gen-cpu'], 'wrk', '-t1', `-c${conns}`, `-d${seconds}s`, '--latency', `http://127.0.0.1:${port}/`]);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const p50 = /\s50%\s+(\S+)/.exec(out)?.[1] ?? '?';
  const p99 = /\s99%\s+(\S+)/.exec(out)?.[1] ?? '?';
  if (/Non-2xx|Socket errors/.test(out)) process.stderr.write(out);
  return { requests, rps, p50, p99 };
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'nm-l7micro-'));
const upstreamPort = await findFreePort();
mkdirSync(path.join(dir, 'ng'), { recursive: true });
const body = 'x'.repeat(Number(argv['body-bytes']));
writeFileSync(path.join(dir, 'ng/nginx.conf'), `worker_processes 1;
pid ${dir}/ng/nginx.pid;
error_log ${dir}/ng/error.log crit;
events { worker_connections 8192; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  client_body_temp_path ${dir}/ng/body; proxy_temp_path ${dir}/ng/proxy; fastcgi_temp_path ${dir}/ng/f; uwsgi_temp_path ${dir}/ng/u; scgi_temp_path ${dir}/ng/s;
  server { listen 127.0.0.1:${upstreamPort} backlog=4096; location / { default_type text/plain; return 200 "${body}"; } }
}
`);
const nginx = spawn('taskset', ['-c', argv['gen-cpu'], 'nginx', '-c', path.join(dir, 'ng/nginx.conf'), '-e', path.join(dir, 'ng/error.log'), '-g', 'daemon off; master_process on;'], { stdio: 'inherit' });
await new Promise((r) => setTimeout(r, 300));

// Time spent in GC pauses (scavenges and mark-compact), to weigh heap settings apart from the noise of the rest.
let gcMs = 0;
let gcCount = 0;
new PerformanceObserver((list) => { for (const e of list.getEntries()) { gcMs += e.duration; gcCount++; } }).observe({ entryTypes: ['gc'] });

const proxy = new NodeProxy({ originalDst: () => SERVICE, identifySource: () => undefined, config: planBenchConfig(upstreamPort) });
const { outboundPort } = await proxy.start({ outboundPort: 0, host: '127.0.0.1' });
try {
  const conns = Number(argv.connections);
  await wrk(outboundPort, Number(argv.warmup), conns);
  for (let i = 0; i < Number(argv.reps); i++) {
    const req0 = proxy.stats.requests.total;
    const gc0 = gcMs;
    const gcn0 = gcCount;
    const codes0 = { ...proxy.stats.requests.byCode };
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const w = await wrk(outboundPort, Number(argv.seconds), conns);
    const cpu = process.cpuUsage(cpu0);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const reqs = proxy.stats.requests.total - req0;
    const mem = process.memoryUsage();
    const codes: Record<string, number> = {};
    for (const [k, v] of Object.entries(proxy.stats.requests.byCode)) if (v - (codes0[k] ?? 0) > 0) codes[k] = v - (codes0[k] ?? 0);
    console.log(JSON.stringify({
      rps: Math.round(w.rps), requests: reqs, cpuUsPerReq: +((cpu.user + cpu.system) / reqs).toFixed(1),
      userUs: +(cpu.user / reqs).toFixed(1), sysUs: +(cpu.system / reqs).toFixed(1), cpuCores: +((cpu.user + cpu.system) / 1e6 / wall).toFixed(2),
      gcUsPerReq: +(((gcMs - gc0) * 1000) / reqs).toFixed(2), gcs: gcCount - gcn0, p50: w.p50, p99: w.p99, rssMb: Math.round(mem.rss / 2 ** 20), heapUsedMb: Math.round(mem.heapUsed / 2 ** 20), heapTotalMb: Math.round(mem.heapTotal / 2 ** 20), codes,
      load: os.loadavg().map((l) => l.toFixed(2)).join('/'),
    }));
  }
  process.stderr.write(`total requests served (warm-up included): ${proxy.stats.requests.total}\n`);
} finally {
  await proxy.stop({ drain: false });
  nginx.kill('SIGTERM');
  await new Promise((r) => nginx.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
