/**
 * Open-loop HTTP/1.1 load at a fixed rate over keep-alive connections, with microsecond latencies. Run as a script
 * (`node bench/lib/fixed-rate.ts --url U --rate R --connections C --seconds S`) it prints one JSON line.
 */
// Why not autocannon: it records latencies in whole milliseconds, too coarse for sub-millisecond added latency on
// loopback. Timing: a request starts its clock when it is written; when every connection is busy it waits in a
// queue and its clock starts at its scheduled time instead (coordinated-omission correction, as wrk2 does), so a
// stalled proxy shows up in the percentiles instead of slowing the generator down.
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { computePercentile } from './stats.ts';

/** What one fixed-rate run measured; latencies in microseconds. */
export type FixedRateResult = {
  rate: number;
  sent: number;
  ok: number;
  errors: number;
  non2xx: number;
  achievedRps: number;
  /** Requests that waited for a free connection (the target could not keep up). */
  queued: number;
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
};

/** Send `rate` requests per second for `seconds` over `connections` keep-alive connections. */
export async function runFixedRate(opts: { url: string; rate: number; connections: number; seconds: number; onSlow?: { overUs: number; report(startMs: number, latencyUs: number): void } }): Promise<FixedRateResult> {
  const u = new URL(opts.url);
  const pool = new Pool(u.origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 60_000 });
  const total = Math.round(opts.rate * opts.seconds);
  const lat = new Float64Array(total);
  let done = 0; let ok = 0; let errors = 0; let non2xx = 0; let queued = 0; let sent = 0; let inflight = 0;
  const queue: number[] = [];
  const now = (): number => Number(process.hrtime.bigint()) / 1000;
  const t0 = now();
  let finish: () => void = () => {};
  const finished = new Promise<void>((r) => { finish = r; });
  const fire = (startUs: number): void => {
    inflight++;
    pool.request({ path: u.pathname + u.search, method: 'GET', headers: { host: u.host } }).then(async (res) => {
      await res.body.dump();
      lat[done] = now() - startUs;
      if (opts.onSlow && lat[done]! > opts.onSlow.overUs) opts.onSlow.report((startUs - t0) / 1000, lat[done]!);
      if (res.statusCode >= 200 && res.statusCode < 300) ok++; else non2xx++;
    }, () => { lat[done] = now() - startUs; errors++; }).finally(() => {
      done++; inflight--;
      const next = queue.shift();
      if (next !== undefined) fire(next);
      if (done === total) finish();
    });
  };
  const tick = (): void => {
    const t = now();
    const due = Math.min(total, Math.floor(((t - t0) / 1e6) * opts.rate));
    while (sent < due) {
      sent++;
      if (inflight < opts.connections) fire(t);
      else { queued++; queue.push(t0 + (sent / opts.rate) * 1e6); }
    }
    if (sent < total) setTimeout(tick, 1);
  };
  tick();
  await finished;
  const elapsedS = (now() - t0) / 1e6;
  await pool.close();
  const sorted = lat.slice(0, done).sort();
  const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
  const r = (x: number): number => Math.round(x);
  return {
    rate: opts.rate, sent, ok, errors, non2xx, queued, achievedRps: done / elapsedS,
    latencyUs: { p50: r(computePercentile(sorted, 50)), p90: r(computePercentile(sorted, 90)), p99: r(computePercentile(sorted, 99)), p999: r(computePercentile(sorted, 99.9)), max: r(sorted[sorted.length - 1] ?? NaN), mean: r(mean) },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { url: { type: 'string' }, rate: { type: 'string', default: '1000' }, connections: { type: 'string', default: '16' }, seconds: { type: 'string', default: '5' }, 'slow-us': { type: 'string' } } });
  if (!values.url) { console.error('usage: node bench/lib/fixed-rate.ts --url http://127.0.0.1:PORT/ [--rate 1000] [--connections 16] [--seconds 5] [--slow-us N]'); process.exit(2); }
  const res = await runFixedRate({ url: values.url, rate: Number(values.rate), connections: Number(values.connections), seconds: Number(values.seconds),
    // By hand: which requests were slow, and when (stalls at a period point at a timer, at random at GC or load).
    ...(values['slow-us'] ? { onSlow: { overUs: Number(values['slow-us']), report: (t: number, l: number) => process.stderr.write(`slow: started at ${t.toFixed(1)} ms, took ${Math.round(l)} µs\n`) } } : {}) });
  console.log(JSON.stringify(res));
}
