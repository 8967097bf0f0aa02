/** h2load (Debian nghttp2-client): run it, read its summary. */
import { spawn } from 'node:child_process';

/** The counters of one h2load run. */
export type H2loadResult = {
  total: number; started: number; done: number; succeeded: number; failed: number; errored: number; timeout: number;
  status: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** What ALPN/prior knowledge gave ("h2c" for http:// URIs), undefined when no connection was made. */
  protocol: string | undefined;
  reqPerSec: number;
  /** Request time: min / max / mean in milliseconds. */
  requestMs: { min: number; max: number; mean: number } | undefined;
};

const MISSING = 'h2load is not installed: it comes with Debian\'s nghttp2-client (scripts/setup.sh installs it, or apt-get install nghttp2-client)';

const toMs = (v: string, unit: string): number => Number(v) * (unit === 'us' ? 1e-3 : unit === 's' ? 1000 : 1);

/** The summary h2load prints at the end; throws naming the missing line when the output is not a summary. */
export function parseH2loadOutput(out: string): H2loadResult {
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!req || !codes) throw new Error(`h2load printed no summary (no "requests:"/"status codes:" line): ${out.trim().slice(0, 400)}`);
  const n = (i: number, m: RegExpExecArray): number => Number(m[i]);
  const time = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  return {
    total: n(1, req), started: n(2, req), done: n(3, req), succeeded: n(4, req), failed: n(5, req), errored: n(6, req), timeout: n(7, req),
    status: { '2xx': n(1, codes), '3xx': n(2, codes), '4xx': n(3, codes), '5xx': n(4, codes) },
    protocol: /Application protocol: (\S+)/.exec(out)?.[1],
    reqPerSec: Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN),
    requestMs: time ? { min: toMs(time[1]!, time[2]!), max: toMs(time[3]!, time[4]!), mean: toMs(time[5]!, time[6]!) } : undefined,
  };
}

/**
 * Runs `h2load args` without blocking the event loop (a proxy pool's primary in the same process hands connections
 * over); fails with a clear message when h2load is missing or does not finish within `timeoutMs`.
 */
export function runH2load(args: string[], opts: { timeoutMs: number; cpus?: string }): Promise<H2loadResult & { output: string }> {
  const argv = opts.cpus ? ['taskset', '-c', opts.cpus, 'h2load', ...args] : ['h2load', ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, opts.timeoutMs);
    child.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); reject(err.code === 'ENOENT' ? new Error(MISSING, { cause: err }) : err); });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // taskset exits 127 ("failed to execute h2load") when h2load is missing.
      if (code === 127 && /h2load/.test(out)) { reject(new Error(`${MISSING}: ${out.trim()}`)); return; }
      if (signal) { reject(new Error(`h2load ${args.join(' ')} did not finish within ${opts.timeoutMs} ms (killed); output so far: ${out.trim().slice(-400)}`)); return; }
      try { resolve({ ...parseH2loadOutput(out), output: out }); } catch (err) { reject(err as Error); }
    });
  });
}
