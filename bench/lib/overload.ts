/**
 * Open-loop HTTP/1.1 load in phases (reliability anchor L7): a baseline at a normal rate, an overload at a multiple
 * of capacity, then the normal rate again, each request counted in the one-second window it was scheduled in.
 * Requests go out on schedule over keep-alive connections (raw sockets, cheap enough to offer several times what
 * one proxy core serves); when every connection is waiting, a new one is opened up to `maxConnections`, beyond
 * which the request is not sent (counted: the client's own queue overflowed). Every request has a deadline; a
 * late one closes its connection, as a client giving up does. Run as a script it prints one JSON line.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { parseResponse } from './idle-connections.ts';
import { computePercentile } from './stats.ts';

/** One phase of the run. */
export type OverloadPhase = { name: string; rate: number; seconds: number };

/** Counters of one window (or a whole phase); latencies in microseconds, of answered requests only. */
export type OverloadWindow = {
  phase: string; startS: number; scheduled: number; sent: number;
  /** Not sent: all `maxConnections` connections were waiting for an answer. */
  notSent: number;
  byStatus: Record<string, number>;
  /** Answered with a 5xx/429 or refused at connect/reset: what the anchor counts as shedding (if fast). */
  timeouts: number; connectErrors: number; resets: number;
  latencyUs: { p50: number; p99: number; max: number };
};

export type OverloadResult = { phases: OverloadWindow[]; windows: OverloadWindow[]; maxOpenConnections: number };

type Req = { window: number; start: number };
type Conn = { socket: net.Socket; buf: Buffer; busy: Req | undefined; timer: NodeJS.Timeout | undefined; connected: boolean };

function emptyWindow(phase: string, startS: number): OverloadWindow & { lat: number[] } {
  return { phase, startS, scheduled: 0, sent: 0, notSent: 0, byStatus: {}, timeouts: 0, connectErrors: 0, resets: 0, latencyUs: { p50: NaN, p99: NaN, max: NaN }, lat: [] };
}

function finishWindow(w: OverloadWindow & { lat: number[] }): OverloadWindow {
  const lat = w.lat.sort((a, b) => a - b);
  const { lat: _drop, ...rest } = w;
  return { ...rest, latencyUs: { p50: Math.round(computePercentile(lat, 50)), p99: Math.round(computePercentile(lat, 99)), max: Math.round(lat.at(-1) ?? NaN) } };
}

/** Sum of windows (a phase), latencies recomputed from the merged samples. */
function mergeWindows(phase: string, ws: (OverloadWindow & { lat: number[] })[]): OverloadWindow {
  const m = emptyWindow(phase, ws[0]?.startS ?? 0);
  for (const w of ws) {
    m.scheduled += w.scheduled; m.sent += w.sent; m.notSent += w.notSent; m.timeouts += w.timeouts; m.connectErrors += w.connectErrors; m.resets += w.resets;
    for (const [k, v] of Object.entries(w.byStatus)) m.byStatus[k] = (m.byStatus[k] ?? 0) + v;
    for (const x of w.lat) m.lat.push(x);
  }
  return finishWindow(m);
}

export async function runOverload(opts: { host?: string; port: number; hostHeader?: string; phases: OverloadPhase[]; maxConnections: number; timeoutMs: number }): Promise<OverloadResult> {
  const host = opts.host ?? '127.0.0.1';
  const request = Buffer.from(`GET /load HTTP/1.1\r\nhost: ${opts.hostHeader ?? 'echo.default'}\r\n\r\n`, 'latin1');
  const windows: (OverloadWindow & { lat: number[] })[] = [];
  let t = 0;
  for (const p of opts.phases) for (let i = 0; i < p.seconds; i++) { windows.push(emptyWindow(p.name, t)); t++; }
  const all = new Set<Conn>();
  const idle: Conn[] = [];
  let maxOpen = 0;
  const now = (): number => performance.now();

  const settle = (c: Conn, f: (w: OverloadWindow & { lat: number[] }, r: Req) => void): void => {
    const r = c.busy;
    if (!r) return;
    c.busy = undefined;
    if (c.timer) { clearTimeout(c.timer); c.timer = undefined; }
    f(windows[r.window]!, r);
  };
  const drop = (c: Conn): void => {
    all.delete(c);
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
  };
  const send = (c: Conn, r: Req): void => {
    c.busy = r;
    windows[r.window]!.sent++;
    c.timer = setTimeout(() => { settle(c, (w) => { w.timeouts++; }); drop(c); c.socket.destroy(); }, opts.timeoutMs);
    if (c.connected) c.socket.write(request);
  };
  const open = (r: Req): void => {
    const socket = net.connect({ host, port: opts.port });
    socket.setNoDelay(true);
    const c: Conn = { socket, buf: Buffer.alloc(0), busy: undefined, timer: undefined, connected: false };
    all.add(c);
    maxOpen = Math.max(maxOpen, all.size);
    socket.once('connect', () => { c.connected = true; if (c.busy) socket.write(request); });
    socket.on('data', (d: Buffer) => {
      c.buf = c.buf.length ? Buffer.concat([c.buf, d]) : d;
      let parsed;
      try { parsed = parseResponse(c.buf); } catch { settle(c, (w) => { w.resets++; }); drop(c); socket.destroy(); return; }
      if (!parsed) return;
      c.buf = c.buf.subarray(parsed.length);
      settle(c, (w, req) => { w.byStatus[parsed.status] = (w.byStatus[parsed.status] ?? 0) + 1; w.lat.push((now() - req.start) * 1000); });
      if (all.has(c)) idle.push(c);
    });
    socket.on('error', () => { /* counted at close */ });
    socket.on('close', () => {
      settle(c, (w) => { if (c.connected) w.resets++; else w.connectErrors++; });
      drop(c);
    });
    send(c, r);
  };

  const t0 = now();
  const totalS = windows.length;
  let scheduled = 0;
  // Schedule from the cumulative plan: phase by phase, `rate` per second.
  const dueAt = (elapsedS: number): number => {
    let n = 0; let s = 0;
    for (const p of opts.phases) {
      if (elapsedS >= s + p.seconds) { n += p.rate * p.seconds; s += p.seconds; continue; }
      n += p.rate * Math.max(0, elapsedS - s);
      break;
    }
    return Math.floor(n);
  };
  const scheduleOf = (index: number): { window: number; atS: number } => {
    let acc = 0; let startS = 0;
    for (const p of opts.phases) {
      const n = p.rate * p.seconds;
      if (index < acc + n) { const atS = startS + (index - acc) / p.rate; return { window: Math.min(windows.length - 1, Math.floor(atS)), atS }; }
      acc += n; startS += p.seconds;
    }
    return { window: windows.length - 1, atS: startS };
  };
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const elapsed = (now() - t0) / 1000;
      const due = dueAt(Math.min(elapsed, totalS));
      for (; scheduled < due; scheduled++) {
        // The window and the time this request is scheduled for (not when the loop got to it).
        const { window, atS } = scheduleOf(scheduled);
        const w = windows[window]!;
        w.scheduled++;
        const r: Req = { window, start: t0 + atS * 1000 };
        // Latency counts from the scheduled time, so a generator that falls behind does not hide a slow server.
        const c = idle.pop();
        if (c) send(c, r);
        else if (all.size < opts.maxConnections) open(r);
        else w.notSent++;
      }
      if (elapsed < totalS) setTimeout(tick, 1); else resolve();
    };
    tick();
  });
  // Let the last requests finish or time out, then close everything.
  const until = now() + opts.timeoutMs + 500;
  while ([...all].some((c) => c.busy) && now() < until) await new Promise((r) => setTimeout(r, 20));
  for (const c of all) c.socket.destroy();
  const phases = opts.phases.map((p) => mergeWindows(p.name, windows.filter((w) => w.phase === p.name)));
  return { phases, windows: windows.map(finishWindow), maxOpenConnections: maxOpen };
}

/** A window "looks like the baseline": everything answered 2xx within the deadline and p99 within bounds. */
export function computeWindowGood(w: OverloadWindow, goodP99Us: number): boolean {
  const answered = Object.entries(w.byStatus).reduce((a, [, n]) => a + n, 0);
  const ok = Object.entries(w.byStatus).filter(([s]) => s.startsWith('2')).reduce((a, [, n]) => a + n, 0);
  return w.scheduled > 0 && w.notSent === 0 && w.timeouts === 0 && w.resets === 0 && w.connectErrors === 0 && ok === answered && answered === w.scheduled && w.latencyUs.p99 <= goodP99Us;
}

/** Seconds after the overload until every later recovery window is good (3 in a row at least); undefined if never. */
export function computeRecoveryS(windows: OverloadWindow[], goodP99Us: number): number | undefined {
  const rec = windows.filter((w) => w.phase === 'recovery');
  for (let i = 0; i + 3 <= rec.length; i++) if (rec.slice(i).every((w) => computeWindowGood(w, goodP99Us))) return i;
  return undefined;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, phases: { type: 'string' }, 'max-connections': { type: 'string', default: '1000' }, 'timeout-ms': { type: 'string', default: '2000' }, 'host-header': { type: 'string', default: 'echo.default' } } });
  if (!values.port || !values.phases) { console.error('usage: node bench/lib/overload.ts --port P --phases name:rate:seconds,... [--max-connections 1000] [--timeout-ms 2000]'); process.exit(2); }
  const phases = values.phases.split(',').map((s) => { const [name, rate, seconds] = s.split(':'); return { name: name!, rate: Number(rate), seconds: Number(seconds) }; });
  if (phases.some((p) => !p.name || !(p.rate > 0) || !Number.isInteger(p.seconds) || p.seconds < 1)) { console.error(`--phases: each phase is name:rate:seconds with rate > 0 and whole seconds ≥ 1 (got ${values.phases})`); process.exit(2); }
  const r = await runOverload({ host: values.host, port: Number(values.port), hostHeader: values['host-header'], phases, maxConnections: Number(values['max-connections']), timeoutMs: Number(values['timeout-ms']) });
  console.log(JSON.stringify(r));
  process.exit(0);
}
