/**
 * Runs the nodemesh proxy for a benchmark: a ProxyWorkerPool with N workers on loopback, every connection's original
 * destination fixed to one service that forwards to `--upstream`. Prints one JSON line when listening; serves its
 * pool's counters as JSON on `--control` (GET /stats); stops the pool on SIGTERM.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import { DEFAULT_WORKER_EXEC_ARGV, ProxyWorkerPool } from '../../l7proxy/workers.ts';

const SERVICE = { ip: '10.96.0.10', port: 80 };

/** One HTTP service at SERVICE sending everything to the upstream, no routes, no policy (the plain forwarding cost). */
export function planBenchConfig(upstreamPort: number, extraServices = 0): ProxyConfig {
  const config: ProxyConfig = {
    version: 'bench',
    services: [{ name: 'bench/upstream', addresses: [SERVICE], protocol: 'http', defaultBackend: 'bench/upstream:80' }],
    backends: [{ name: 'bench/upstream:80', endpoints: [{ ip: '127.0.0.1', port: upstreamPort, ready: true }] }],
  };
  // More services (for the RSS goal): each its own address 10.100.x.y:80 and backend with one endpoint.
  for (let i = 0; i < extraServices; i++) {
    const name = `bench/svc-${i}`;
    config.services.push({ name, addresses: [{ ip: `10.100.${(i >> 8) & 255}.${i & 255}`, port: 80 }], protocol: 'http', defaultBackend: `${name}:80` });
    config.backends.push({ name: `${name}:80`, endpoints: [{ ip: `10.200.${(i >> 8) & 255}.${i & 255}`, port: 8080, ready: true }] });
  }
  return config;
}

/** Extra worker flags for profiling by hand (`NM_BENCH_WORKER_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p"`), added to the defaults. */
function workerArgs(): { execArgv?: string[] } {
  const extra = process.env.NM_BENCH_WORKER_ARGS?.split(' ').filter(Boolean) ?? [];
  return extra.length ? { execArgv: [...DEFAULT_WORKER_EXEC_ARGV, ...extra] } : {};
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, upstream: { type: 'string' }, workers: { type: 'string', default: '1' }, control: { type: 'string' }, scheduling: { type: 'string', default: 'round-robin' }, services: { type: 'string', default: '1' } } });
  if (!values.port || !values.upstream || !values.control) {
    console.error('usage: node bench/lib/nodemesh-proxy.ts --port P --upstream U --control C [--workers N] [--scheduling kernel|round-robin] [--services N]');
    process.exit(2);
  }
  const logger = {
    debug: () => {},
    info: (m: string, f?: Record<string, unknown>) => console.error('info', m, JSON.stringify(f ?? {})),
    warn: (m: string, f?: Record<string, unknown>) => console.error('warn', m, JSON.stringify(f ?? {})),
    error: (m: string, f?: Record<string, unknown>) => console.error('error', m, JSON.stringify(f ?? {})),
  };
  const pool = new ProxyWorkerPool({ workers: Number(values.workers), originalDst: { kind: 'fixed', ...SERVICE }, config: planBenchConfig(Number(values.upstream), Number(values.services) - 1), logger, scheduling: values.scheduling === 'round-robin' ? 'round-robin' : 'kernel', ...workerArgs() });
  const ports = await pool.start({ outboundPort: Number(values.port), host: '127.0.0.1' });
  const control = http.createServer((req, res) => {
    pool.stats().then((s) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ workers: s.workers.map((w) => ({ slot: w.slot, pid: w.pid, accepted: w.stats.connections.accepted, requests: w.stats.requests.total, byCode: w.stats.requests.byCode, rssMb: Math.round(w.memory.rss / 2 ** 20), heapUsedMb: Math.round(w.memory.heapUsed / 2 ** 20), heapTotalMb: Math.round(w.memory.heapTotal / 2 ** 20) })), status: pool.status(), primary: (({ rss, heapTotal, heapUsed, external, arrayBuffers }) => ({ rss, heapTotal, heapUsed, external, arrayBuffers }))(process.memoryUsage()) }));
    }, (err: unknown) => { res.writeHead(500); res.end(String(err)); });
  });
  await new Promise<void>((r) => control.listen(Number(values.control), '127.0.0.1', r));
  console.log(JSON.stringify({ ready: true, ...ports, pids: pool.status().map((s) => s.pid) }));
  const stop = (): void => {
    control.close();
    pool.stop({ drain: false }).then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
