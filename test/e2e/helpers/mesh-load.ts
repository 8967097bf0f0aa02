/**
 * A steady HTTP load for the reliability tests, run inside a pod (`nodemesh sandbox exec <pod> -- node mesh-load.ts`):
 * requests start at a fixed rate over the given URLs in turn (open loop: a slow answer does not slow the load),
 * most on a pool of keep-alive connections and every Nth on a new connection. It stops when --stop-file appears
 * (or after --seconds) and prints one JSON line: counts, failures by reason with their times, answers per pod.
 * A failure is anything but a 2xx answer: a refused or reset connection, a timeout, or a 5xx.
 */
import http from 'node:http';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';

/** What a run reports. */
export type LoadSummary = {
  total: number;
  ok: number;
  failed: number;
  /** Failures by reason (`status 503`, `keep-alive ECONNRESET`, `new ECONNREFUSED`, `timeout`). */
  byReason: Record<string, number>;
  /** The first failures, with milliseconds since the start. */
  failures: { atMs: number; url: string; reason: string }[];
  byPod: Record<string, number>;
  /** Answers per pod per second since the start (`<second>`: { pod: count }), to see when a pod stopped answering. */
  podTimeline: Record<string, Record<string, number>>;
  durationMs: number;
  ratePerSecond: number;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', multiple: true },
      rate: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '600' },
      'stop-file': { type: 'string' },
      connections: { type: 'string', default: '16' },
      'fresh-every': { type: 'string', default: '5' },
      'timeout-ms': { type: 'string', default: '10000' },
    },
  });
  const urls = values.url ?? [];
  if (urls.length === 0) throw new Error('give at least one --url');
  const rate = Number(values.rate);
  const freshEvery = Number(values['fresh-every']);
  const timeoutMs = Number(values['timeout-ms']);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(values.connections), scheduling: 'lifo' });
  const s: LoadSummary = { total: 0, ok: 0, failed: 0, byReason: {}, failures: [], byPod: {}, podTimeline: {}, durationMs: 0, ratePerSecond: rate };
  const t0 = Date.now();
  const fail = (url: string, reason: string): void => {
    s.failed++;
    s.byReason[reason] = (s.byReason[reason] ?? 0) + 1;
    if (s.failures.length < 50) s.failures.push({ atMs: Date.now() - t0, url, reason });
  };
  const one = (url: string, fresh: boolean): Promise<void> => new Promise((resolve) => {
    s.total++;
    let done = false;
    const finish = (): void => { if (!done) { done = true; resolve(); } };
    const req = http.get(url, { agent: fresh ? false : agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        if (res.statusCode !== undefined && res.statusCode < 300) {
          s.ok++;
          const pod = (res.headers['x-echo-pod'] as string | undefined) ?? '?';
          s.byPod[pod] = (s.byPod[pod] ?? 0) + 1;
          const sec = String(Math.floor((Date.now() - t0) / 1000));
          const bucket = (s.podTimeline[sec] ??= {});
          bucket[pod] = (bucket[pod] ?? 0) + 1;
        } else {
          fail(url, `status ${res.statusCode}: ${body.trim().slice(0, 120)}`);
        }
        finish();
      });
      res.on('error', (e) => { fail(url, `response ${e.message}`); finish(); });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => { fail(url, `${fresh ? 'new' : 'keep-alive'} ${e.code ?? e.message}`); finish(); });
  });
  const inflight = new Set<Promise<void>>();
  const until = t0 + Number(values.seconds) * 1000;
  const stopFile = values['stop-file'];
  for (let n = 0; Date.now() < until && !(stopFile && existsSync(stopFile)); n++) {
    const due = t0 + (n * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const p = one(urls[n % urls.length]!, freshEvery > 0 && n % freshEvery === 0);
    inflight.add(p);
    void p.then(() => inflight.delete(p));
  }
  await Promise.all(inflight);
  agent.destroy();
  s.durationMs = Date.now() - t0;
  process.stdout.write(`${JSON.stringify(s)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`mesh-load: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
});
