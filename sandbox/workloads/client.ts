/**
 * nodemesh/client: sends HTTP requests in a loop and prints one line per answer (status, pod, node, latency),
 * then a summary of counts per pod, node and status. Several --url flags are taken in turn.
 * Check mode (`--expect-status N`, `--expect-body RE`, `--expect-error`): repeats one request until the answer
 * matches or `--deadline` passes, and exits 0 or 1 with a JSON line: `kubectl mesh connectivity test` runs its
 * checks as such pods and reads the verdict from the pod's phase. `--so-mark N` sends from a socket carrying that
 * SO_MARK (the node proxy's mark makes the kernel leave the connection alone: a pod bypassing the mesh).
 */
import { request, type ClientRequestArgs } from 'node:http';
import type { Socket } from 'node:net';
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

/** Sends one GET and reads the echo's JSON answer when there is one; `createConnection` replaces the socket (SO_MARK). */
export function sendOnce(url: string, timeoutMs: number, createConnection?: ClientRequestArgs['createConnection']): Promise<ClientResult & { body?: string }> {
  const started = performance.now();
  const elapsed = (): number => Math.round(performance.now() - started);
  return new Promise((resolve) => {
    // Node uses createConnection only without an agent (agent: false would make a fresh Agent and ignore it).
    const req = request(url, { method: 'GET', timeout: timeoutMs, ...(createConnection ? { createConnection } : { agent: false }) }, (res) => {
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
        resolve({ url, status: res.statusCode, pod: info.pod, node: info.node, version: info.version || undefined, latencyMs: elapsed(), body });
      });
      res.on('error', (err) => resolve({ url, error: (err as NodeJS.ErrnoException).code ?? err.message, latencyMs: elapsed() }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    // The socket timeout above never starts on a socket made by createConnection that is still connecting: a
    // whole-request deadline covers it (a dropped SYN would otherwise wait for the kernel's 2-minute retry).
    const deadline = createConnection ? setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })), timeoutMs + 100) : undefined;
    req.on('close', () => { if (deadline) clearTimeout(deadline); });
    req.on('error', (err) => resolve({ url, error: (err as NodeJS.ErrnoException).code ?? err.message, latencyMs: elapsed() }));
    req.end();
  });
}

/** What a check expects of the answer. */
export type CheckExpectation = { status?: number; body?: RegExp; error?: boolean };

/** Whether one result meets the expectation (pure). */
export function meetsExpectation(r: ClientResult & { body?: string }, e: CheckExpectation): boolean {
  // Only a refused, reset or unanswered connection counts as "the network said no"; anything else is a broken check.
  if (e.error) return r.error !== undefined && /^(TIMEOUT|ETIMEDOUT|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EPIPE|socket hang up)$/.test(r.error);
  if (r.error !== undefined) return false;
  if (e.status !== undefined && r.status !== e.status) return false;
  if (e.body && !e.body.test(r.body ?? '')) return false;
  return true;
}

/** Check mode: one request again and again until it meets `e` or the deadline passes; exit status is the verdict. */
async function runCheck(url: string, e: CheckExpectation, o: { timeoutMs: number; deadlineMs: number; intervalMs: number; mark?: number }): Promise<number> {
  let createConnection: ClientRequestArgs['createConnection'];
  if (o.mark !== undefined) {
    const mark = o.mark;
    // The mesh's own connect helper (libc socket + SO_MARK); loaded only for this mode.
    const { createMarkedSocket } = await import('../../agent/proxy/socket-mark.ts');
    try {
      createMarkedSocket(mark).destroy();
    } catch (err) {
      console.log(JSON.stringify({ check: 'cannot-run', error: (err as Error).message }));
      return 2;
    }
    const u = new URL(url);
    createConnection = (): Socket => createMarkedSocket(mark).connect(Number(u.port || 80), u.hostname);
  }
  const until = Date.now() + o.deadlineMs;
  let last: ClientResult & { body?: string };
  let tries = 0;
  // A refusal must hold: three in a row (a policy still being programmed can drop a connection once).
  const needed = e.error ? 3 : 1;
  let streak = 0;
  for (;;) {
    tries++;
    try {
      last = await sendOnce(url, o.timeoutMs, createConnection);
    } catch (err) {
      last = { url, error: (err as Error).message, latencyMs: 0 };
    }
    streak = meetsExpectation(last, e) ? streak + 1 : 0;
    const ok = streak >= needed;
    if (ok || Date.now() >= until) {
      const { body, ...rest } = last;
      console.log(JSON.stringify({ check: ok ? 'pass' : 'fail', tries, ...rest, ...(body !== undefined ? { body: body.slice(0, 2000) } : {}) }));
      return ok ? 0 : 1;
    }
    await new Promise((res) => setTimeout(res, o.intervalMs));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'expect-status': { type: 'string' },
      'expect-body': { type: 'string' },
      'expect-error': { type: 'boolean', default: false },
      deadline: { type: 'string', default: '30s' },
      'so-mark': { type: 'string' },
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
  if (values['expect-status'] !== undefined || values['expect-body'] !== undefined || values['expect-error']) {
    const mark = values['so-mark'] !== undefined ? Number(values['so-mark']) : undefined;
    if (mark !== undefined && !Number.isInteger(mark)) throw new Error(`--so-mark ${values['so-mark']}: not an integer (0x4e4d is accepted)`);
    const code = await runCheck(urls[0] as string, {
      ...(values['expect-status'] !== undefined ? { status: Number(values['expect-status']) } : {}),
      ...(values['expect-body'] !== undefined ? { body: new RegExp(values['expect-body']) } : {}),
      error: values['expect-error'],
    }, { timeoutMs, deadlineMs: parseDurationMs(values.deadline) ?? 30_000, intervalMs: Math.min(intervalMs, 1000), ...(mark !== undefined ? { mark } : {}) });
    process.exit(code);
  }
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
