/**
 * By-hand diagnostics for the mesh bench (`NM_BENCH_PROBE=1 node bench/lib/nodemesh-mesh.ts ...`): the agent's mesh
 * plugin, plus an event-loop delay histogram and GC pauses of the worker written to stderr every 2 s, so a latency
 * spike can be told apart as a stalled worker (long loop delay or GC) or time spent between processes.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { createProxyPlugin as createMeshPlugin } from '../../agent/proxy/worker-plugin.ts';
import type { ProxyLogger } from '../../l7proxy/stats.ts';
import type { ProxyWorkerPlugin } from '../../l7proxy/workers.ts';

export function createProxyPlugin(init: unknown, logger: ProxyLogger): ProxyWorkerPlugin {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const gcs: number[] = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) gcs.push(e.duration); }).observe({ entryTypes: ['gc'] });
  const name = (init as { nodeName?: string }).nodeName ?? '?';
  setInterval(() => {
    const ms = (ns: number): string => (ns / 1e6).toFixed(1);
    const gcMax = gcs.length ? Math.max(...gcs).toFixed(1) : '0';
    const gcSum = gcs.reduce((a, b) => a + b, 0).toFixed(1);
    process.stderr.write(`probe ${name} pid ${process.pid}: loop delay p50 ${ms(h.percentile(50))} p99 ${ms(h.percentile(99))} max ${ms(h.max)} ms; gc ${gcs.length}× sum ${gcSum} max ${gcMax} ms\n`);
    h.reset(); gcs.length = 0;
  }, 2000).unref();
  return createMeshPlugin(init, logger);
}
