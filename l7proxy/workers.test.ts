// The proxy over several worker processes on loopback: shared listeners, versioned config push with
// acknowledgements, restart of a dead or hung worker while the others serve, drain on stop, original-destination
// sources. Pure helpers (restart backoff, stats sum, laggards) first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ProxyConfigError } from './errors.ts';
import { createStats } from './stats.ts';
import { request, SERVICE_IP, SERVICE_PORT, simpleConfig, startEcho } from './testing/harness.ts';
import { ProxyWorkerPool, WorkerPoolError, computeLaggards, computeRestartDelayMs, computeStatsSum, type WorkerPoolEvent, type WorkerPoolOptions } from './workers.ts';

const FIXED = { kind: 'fixed' as const, ip: SERVICE_IP, port: SERVICE_PORT };
// Node fixes the cluster scheduling per process: the default runs here; NODEMESH_TEST_SCHEDULING=kernel runs the rest.
const SCHEDULING = process.env.NODEMESH_TEST_SCHEDULING === 'kernel' ? 'kernel' as const : 'round-robin' as const;

test('computeRestartDelayMs: doubles from min, caps at max, resets after a stable run', () => {
  const o = { minMs: 100, maxMs: 1000, stableMs: 10_000 };
  assert.equal(computeRestartDelayMs(0, 50, o), 100);
  assert.equal(computeRestartDelayMs(100, 50, o), 200);
  assert.equal(computeRestartDelayMs(800, 50, o), 1000);
  assert.equal(computeRestartDelayMs(1000, 50, o), 1000);
  assert.equal(computeRestartDelayMs(1000, 10_000, o), 100);
});

test('computeStatsSum adds counters key by key, including records only one worker has', () => {
  const a = createStats(); const b = createStats();
  a.requests.total = 3; a.requests.byCode['200'] = 3; a.connections.accepted = 2;
  b.requests.total = 4; b.requests.byCode['200'] = 1; b.requests.byCode['503'] = 3; b.connections.accepted = 1;
  const s = computeStatsSum([a, b])!;
  assert.equal(s.requests.total, 7);
  assert.deepEqual(s.requests.byCode, { '200': 4, '503': 3 });
  assert.equal(s.connections.accepted, 3);
  assert.equal(a.requests.total, 3, 'inputs are not modified');
  assert.equal(computeStatsSum([]), undefined);
});

test('computeLaggards names the serving workers below the generation only', () => {
  const slots = [
    { index: 0, state: 'serving' as const, generation: 2, pid: 10 },
    { index: 1, state: 'serving' as const, generation: 1, pid: 11 },
    { index: 2, state: 'down' as const, generation: 0, pid: undefined },
  ];
  assert.deepEqual(computeLaggards(slots, 2), [{ slot: 1, pid: 11 }]);
});

/** Start a pool on loopback with test-friendly timings; events are recorded. */
async function startPool(opts: Partial<WorkerPoolOptions> & Pick<WorkerPoolOptions, 'config'>): Promise<{ pool: ProxyWorkerPool; port: number; events: WorkerPoolEvent[]; waitFor: (pred: (e: WorkerPoolEvent) => boolean, ms?: number) => Promise<WorkerPoolEvent> }> {
  const events: WorkerPoolEvent[] = [];
  const listeners = new Set<(e: WorkerPoolEvent) => void>();
  const pool = new ProxyWorkerPool({
    workers: 2, originalDst: FIXED, restartMinMs: 100, heartbeatMs: 200, heartbeatTimeoutMs: 1500, applyTimeoutMs: 5000, scheduling: SCHEDULING,
    onEvent: (e) => { events.push(e); for (const l of listeners) l(e); },
    ...opts,
  });
  const { outboundPort } = await pool.start({ outboundPort: 0, host: '127.0.0.1' });
  const waitFor = (pred: (e: WorkerPoolEvent) => boolean, ms = 10_000): Promise<WorkerPoolEvent> => new Promise((resolve, reject) => {
    const hit = events.find(pred);
    if (hit) { resolve(hit); return; }
    const timer = setTimeout(() => { listeners.delete(l); reject(new Error(`no matching pool event within ${ms} ms; seen ${JSON.stringify(events)}`)); }, ms);
    const l = (e: WorkerPoolEvent): void => { if (pred(e)) { clearTimeout(timer); listeners.delete(l); resolve(e); } };
    listeners.add(l);
  });
  return { pool, port: outboundPort, events, waitFor };
}

/** `n` requests, each on a fresh connection, `conc` at a time; returns the JSON bodies' `name` and the statuses. */
async function burst(port: number, n: number, conc = 8): Promise<{ statuses: number[]; names: string[] }> {
  const statuses: number[] = []; const names: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) {
      next++;
      const r = await request(port);
      statuses.push(r.status);
      if (r.status === 200) names.push((JSON.parse(r.body) as { name: string }).name);
    }
  }));
  return { statuses, names };
}

test('two workers share one port and serve; stats are summed over workers', async () => {
  const echo = await startEcho('one');
  const { pool, port } = await startPool({ config: simpleConfig([echo.port]) });
  try {
    const st = pool.status();
    assert.equal(st.length, 2);
    assert.ok(st.every((s) => s.state === 'serving' && s.pid !== undefined && s.pid !== process.pid));
    assert.notEqual(st[0]!.pid, st[1]!.pid);
    const { statuses } = await burst(port, 40);
    assert.deepEqual([...new Set(statuses)], [200]);
    const stats = await pool.stats();
    assert.equal(stats.workers.length, 2);
    assert.equal(stats.total?.requests.total, 40);
    assert.equal(stats.total?.connections.accepted, 40);
    if (SCHEDULING === 'round-robin') assert.ok(stats.workers.every((w) => w.stats.connections.accepted >= 10), `round-robin spreads connections: ${stats.workers.map((w) => w.stats.connections.accepted).join('/')}`);
  } finally { await pool.stop({ drain: false }); await echo.close(); }
});

test('applyConfig reaches every worker before it resolves; an invalid config is refused and the old one stays', async () => {
  const one = await startEcho('one'); const two = await startEcho('two');
  const { pool, port } = await startPool({ config: simpleConfig([one.port]) });
  try {
    assert.deepEqual((await burst(port, 10)).names, Array(10).fill('one'));
    const res = await pool.applyConfig({ ...simpleConfig([two.port]), version: 'v2' });
    assert.deepEqual(res, { generation: 1, workers: 2 });
    assert.ok(pool.status().every((s) => s.generation === 1));
    // Every new connection, whichever worker accepts it, sees the new config.
    assert.deepEqual((await burst(port, 30)).names, Array(30).fill('two'));
    const stats = await pool.stats();
    assert.deepEqual(stats.workers.map((w) => w.configVersion), ['v2', 'v2']);

    const bad = { ...simpleConfig([two.port]), version: 'v3', backends: [] };
    await assert.rejects(pool.applyConfig(bad), ProxyConfigError);
    assert.equal(pool.generation, 1, 'nothing was pushed');
    assert.deepEqual((await burst(port, 6)).names, Array(6).fill('two'));
  } finally { await pool.stop({ drain: false }); await one.close(); await two.close(); }
});

test('a killed worker is restarted with the latest config; while it is down the other keeps serving', async () => {
  const one = await startEcho('one'); const two = await startEcho('two');
  const { pool, port, waitFor } = await startPool({ config: simpleConfig([one.port]), restartMinMs: 1500 });
  try {
    const victim = pool.status()[0]!.pid!;
    process.kill(victim, 'SIGKILL');
    const exit = await waitFor((e) => e.type === 'worker-exit' && e.pid === victim);
    assert.equal(exit.type === 'worker-exit' && exit.signal, 'SIGKILL');
    assert.equal(pool.status()[0]!.state, 'down');
    // Down: every request is served by the survivor on the same socket, and a config push still completes.
    assert.deepEqual([...new Set((await burst(port, 20)).statuses)], [200]);
    await pool.applyConfig({ ...simpleConfig([two.port]), version: 'v2' });
    assert.equal(pool.status()[0]!.state, 'down', 'the push did not wait for the dead worker');
    const back = await waitFor((e) => e.type === 'worker-listening' && e.slot === 0 && e.pid !== victim);
    assert.equal(back.type === 'worker-listening' && back.generation, 1, 'the new worker booted with the latest config');
    assert.equal(pool.status()[0]!.restarts, 1);
    assert.deepEqual((await burst(port, 20)).names, Array(20).fill('two'));
    const stats = await pool.stats();
    assert.deepEqual(stats.workers.map((w) => w.configVersion).sort(), ['v2', 'v2']);
  } finally { await pool.stop({ drain: false }); await one.close(); await two.close(); }
});

test('a hung worker (SIGSTOP) misses its heartbeats, is killed and replaced', async () => {
  const echo = await startEcho('one');
  const { pool, waitFor } = await startPool({ config: simpleConfig([echo.port]), heartbeatMs: 100, heartbeatTimeoutMs: 600 });
  try {
    const victim = pool.status()[1]!.pid!;
    process.kill(victim, 'SIGSTOP');
    const killed = await waitFor((e) => e.type === 'worker-killed' && e.pid === victim, 5000);
    assert.match(killed.type === 'worker-killed' ? killed.reason : '', /heartbeat/);
    await waitFor((e) => e.type === 'worker-listening' && e.slot === 1 && e.pid !== victim, 5000);
  } finally { await pool.stop({ drain: false }); await echo.close(); }
});

test('stop with drain lets an in-flight request finish, then the port refuses connections', async () => {
  const echo = await startEcho('one');
  const { pool, port } = await startPool({ config: simpleConfig([echo.port]) });
  try {
    const slow = request(port, { headers: { 'x-echo-delay': '400' } });
    await new Promise((r) => setTimeout(r, 100));
    const stopping = pool.stop({ drain: true, timeoutMs: 3000 });
    const r = await slow;
    assert.equal(r.status, 200);
    await stopping;
    assert.deepEqual(pool.status().map((s) => s.state), ['down', 'down']);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve('connected'); });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    assert.equal(refused, 'ECONNREFUSED');
  } finally { await pool.stop({ drain: false }); await echo.close(); }
});

test('originalDst from a module: the worker loads it by path with its init value', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nmb7-workers-'));
  const echo = await startEcho('one');
  const mod = path.join(dir, 'odst.mjs');
  // Known destination only for the first 5 connections (per worker), then fail closed.
  await writeFile(mod, 'export function createOriginalDst(init) { let n = 0; return () => (n++ < init.limit ? { ip: init.ip, port: init.port } : undefined); }\n');
  const { pool, port } = await startPool({ workers: 1, config: simpleConfig([echo.port]), originalDst: { kind: 'module', path: mod, init: { ip: SERVICE_IP, port: SERVICE_PORT, limit: 5 } } });
  try {
    for (let i = 0; i < 5; i++) assert.equal((await request(port)).status, 200);
    await assert.rejects(request(port), /ECONNRESET|socket hang up/);
    const stats = await pool.stats();
    assert.equal(stats.total?.connections.noOriginalDst, 1);
  } finally { await pool.stop({ drain: false }); await echo.close(); await rm(dir, { recursive: true, force: true }); }
});

test('a config pushed while a worker is still starting is applied after its init, not lost', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nmb7-workers-'));
  const one = await startEcho('one'); const two = await startEcho('two');
  const mod = path.join(dir, 'slow.mjs');
  const marker = path.join(dir, 'init-started');
  // The worker has its init (and the old config) when this runs; it then takes 800 ms to finish starting.
  await writeFile(mod, "import { writeFileSync } from 'node:fs';\nexport async function createOriginalDst(init) { writeFileSync(init.marker, 'x'); await new Promise((r) => setTimeout(r, 800)); return () => ({ ip: init.ip, port: init.port }); }\n");
  const pool = new ProxyWorkerPool({ workers: 1, scheduling: SCHEDULING, config: simpleConfig([one.port]), originalDst: { kind: 'module', path: mod, init: { ip: SERVICE_IP, port: SERVICE_PORT, marker } } });
  try {
    const starting = pool.start({ outboundPort: 0, host: '127.0.0.1' });
    for (let i = 0; i < 200 && !(await stat(marker).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 25));
    const applying = pool.applyConfig({ ...simpleConfig([two.port]), version: 'v2' });
    const { outboundPort } = await starting;
    await applying;
    assert.deepEqual((await burst(outboundPort, 5)).names, Array(5).fill('two'));
    assert.deepEqual((await pool.stats()).workers.map((w) => w.configVersion), ['v2']);
  } finally { await pool.stop({ drain: false }); await one.close(); await two.close(); await rm(dir, { recursive: true, force: true }); }
});

test('a worker that cannot start fails start() with the cause, and no worker is left behind', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const taken = (blocker.address() as net.AddressInfo).port;
  const pool = new ProxyWorkerPool({ workers: 2, originalDst: FIXED, scheduling: SCHEDULING });
  try {
    await assert.rejects(pool.start({ outboundPort: taken, host: '127.0.0.1' }), (err: unknown) => err instanceof WorkerPoolError && err.code === 'NM_ERR_PROXY_WORKERS_START_FAILED' && /EADDRINUSE|another proxy/.test(err.message));
    assert.ok(pool.status().every((s) => s.pid === undefined));
  } finally { await pool.stop({ drain: false }); await new Promise<void>((r) => blocker.close(() => r())); }
});
