/**
 * nodemesh/client: sends HTTP requests in a loop and prints one line per answer (status, pod, node, latency),
 * then a summary of counts per pod, node and status. Several --url flags are taken in turn.
 */
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { parseDurationMs } from './duration.ts';

/** What one request got. */
export type ClientResult = { url: string; status?: number; pod?: string; node?: string; version?: string; latencyMs: number; error?: string };

/** Counts over a run. */
export type ClientSummary = { total: number; ok: number; failed: number; byStatus: Record<string, number>; byPod: Record<string, number>; byNode: Record<string, number> };

/** Adds one result to a summary (pure). */
export function addToSummary(s: ClientSummary, r: ClientResult): ClientSummary {
  const inc = (m: Record<string, number>, k: string | undefined): Record<string, number> => (k === undefined ? m : { ...m, [k]: (m[k] ?? 0) + 1 });
  const ok = r.status !== undefined && r.status < 400;
  return {
    total: s.total + 1,
    ok: s.ok + (ok ? 1 : 0),
    failed: s.failed + (ok ? 0 : 1),
    byStatus: inc(s.byStatus, r.error ? `error:${r.error}` : String(r.status)),
    byPod: inc(s.byPod, r.pod),
    byNode: inc(s.byNode, r.node),
  };
}

/** An empty summary. */
export function emptySummary(): ClientSummary {
  return { total: 0, ok: 0, failed: 0, byStatus: {}, byPod: {}, byNode: {} };
}

/** One result as a line: `200 pod=echo-1 node=node-2 3ms http://...`. */
export function formatResult(r: ClientResult): string {
  if (r.error) return `ERR ${r.error} ${r.latencyMs}ms ${r.url}`;
  return `${r.status} pod=${r.pod ?? '?'} node=${r.node ?? '?'}${r.version ? ` version=${r.version}` : ''} ${r.latencyMs}ms ${r.url}`;
}

/** The summary as a line. */
export function formatSummary(s: ClientSummary): string {
  const f = (m: Record<string, number>): string => Object.entries(m).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
  return `summary: ${s.total} requests, ${s.ok} ok, ${s.failed} failed | status: ${f(s.byStatus)} | pods: ${f(s.byPod)} | nodes: ${f(s.byNode)}`;
}

/** Sends one GET and reads the echo's JSON answer when there is one. */
export function sendOnce(url: string, timeoutMs: number): Promise<ClientResult> {
  const started = performance.now();
  const elapsed = (): number => Math.round(performance.now() - started);
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        let info: { pod?: string; node?: string; version?: string } = {};
        try {
          info = JSON.parse(body) as typeof info;
        } catch {
          // Not an echo server; status alone is still worth reporting.
        }
        resolve({ url, status: res.statusCode, pod: info.pod, node: info.node, version: info.version || undefined, latencyMs: elapsed() });
      });
      res.on('error', (err) => resolve({ url, error: (err as NodeJS.ErrnoException).code ?? err.message, latencyMs: elapsed() }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (err) => resolve({ url, error: (err as NodeJS.ErrnoException).code ?? err.message, latencyMs: elapsed() }));
    req.end();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', multiple: true },
      interval: { type: 'string', default: '1s' },
      count: { type: 'string', default: '0' },
      concurrency: { type: 'string', default: '1' },
      timeout: { type: 'string', default: '2s' },
      'summary-json': { type: 'boolean', default: false },
    },
  });
  const urls = values.url ?? (process.env.CLIENT_URL ? process.env.CLIENT_URL.split(',') : []);
  if (urls.length === 0) throw new Error('give at least one --url (or CLIENT_URL)');
  const intervalMs = parseDurationMs(values.interval) ?? 1000;
  const timeoutMs = parseDurationMs(values.timeout) ?? 2000;
  const count = Number(values.count);
  const concurrency = Math.max(1, Number(values.concurrency));
  let summary = emptySummary();
  let sent = 0;
  let stopping = false;
  const finish = (): void => {
    console.log(values['summary-json'] ? JSON.stringify(summary) : formatSummary(summary));
    process.exit(summary.total > 0 && summary.failed === summary.total ? 1 : 0);
  };
  process.on('SIGTERM', () => { stopping = true; finish(); });
  process.on('SIGINT', () => { stopping = true; finish(); });
  const worker = async (): Promise<void> => {
    while (!stopping && (count <= 0 || sent < count)) {
      const url = urls[sent % urls.length] as string;
      sent++;
      const r = await sendOnce(url, timeoutMs);
      summary = addToSummary(summary, r);
      console.log(formatResult(r));
      if (count <= 0 || sent < count) await new Promise((res) => setTimeout(res, intervalMs));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  finish();
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(`client: ${(err as Error).message}`);
    process.exit(2);
  });
}
