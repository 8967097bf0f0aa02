/** Closed-loop saturation load with wrk (C, one thread), latency percentiles through a Lua `done` hook. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCommand } from './procs.ts';

/** What one wrk run measured; latencies in microseconds. */
export type WrkResult = {
  requests: number;
  durationS: number;
  rps: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
};

const LUA = `done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"lat":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
`;

/** Write the Lua hook once into `dir`; returns its path. */
export function writeWrkScript(dir: string): string {
  const file = path.join(dir, 'wrk-json.lua');
  writeFileSync(file, LUA);
  return file;
}

/** `wrk -t1 -c<connections> -d<seconds>` against `url`, pinned to `cpus` (wrk takes whole seconds: rounded, at least 1). */
export async function runWrk(url: string, opts: { connections: number; seconds: number; cpus?: string; script: string }): Promise<WrkResult> {
  const out = await runCommand('wrk', ['-t1', `-c${opts.connections}`, `-d${Math.max(1, Math.round(opts.seconds))}s`, '--timeout', '5s', '-s', opts.script, url], { ...(opts.cpus ? { cpus: opts.cpus } : {}), timeoutMs: (opts.seconds + 15) * 1000 });
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`wrk printed no JSON summary for ${url}: ${out.slice(0, 300)}`);
  const j = JSON.parse(line) as { requests: number; duration_us: number; errors: WrkResult['errors']; lat: WrkResult['latencyUs'] };
  const durationS = j.duration_us / 1e6;
  return { requests: j.requests, durationS, rps: j.requests / durationS, errors: j.errors, latencyUs: j.lat };
}
