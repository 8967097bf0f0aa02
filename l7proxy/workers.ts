/** Runs the node proxy over several worker processes that share its listening sockets (node:cluster). */
// Why node:cluster rather than SO_REUSEPORT (both verified on Node 24.21, Linux):
// - the primary holds ONE listening socket per port for all workers. When a worker dies, nothing waiting to be
//   accepted is lost and the others keep serving; with SO_REUSEPORT each worker owns a socket and the connections
//   queued on a dead worker's socket are reset.
// - the datapath's fail-closed check (nm_pxy_sock) holds one listener per family: one shared socket stays valid
//   while any worker lives; N reuseport sockets would need N registrations and a re-registration per restart.
// - NodeProxy.start() listens by port; in a cluster worker that listen() is served by the primary's handle, so
//   proxy.ts needs no change. (In a cluster worker `reusePort: true` bypasses the primary: each worker binds
//   its own socket, and port 0 gives each worker a different port.)
// With `listenSockets: 'reuseport'` (the node proxy) the primary binds each socket itself with SO_REUSEPORT and the
// workers listen on its descriptor (listen-socket.ts): still one socket shared by every worker, and a second proxy
// process can bind the same ports during a graceful restart.
// Scheduling, measured with `npm run bench:l7` (2 busy CPUs, 64 connections opened at once; bench/results/
// l7-2026-11-21T12-51-20.json): with `kernel` (SCHED_NONE, every worker accept()s on the shared socket) the split over
// 2 workers was [35, 30], [64, 1], [44, 21] (and [4, 61] .. [62, 3] by hand): whichever
// worker the scheduler runs first drains the whole backlog, and a keep-alive connection stays where it landed.
// `round-robin` (SCHED_RR: the primary accepts and hands each connection to the next worker over IPC) gave
// [30, 35], [28, 37], [30, 35] at the same throughput, so it is the default. Its cost is the primary on every new
// connection's path (one accept + one fd passed per connection): run the pool in a small dedicated process, not in
// the agent's event loop, when the agent has long synchronous work (map reconciles).
//
// Original destination: each worker opens the datapath's pinned map itself (`{ kind: 'pinned-map', pinDir }`)
// and looks up each accepted connection with one bpf() syscall (a few µs), instead of asking the primary over
// IPC (a round trip through the primary's event loop per connection, ~50-100 µs, which also serializes every
// worker's accepts on one process). Source identities change only with pods, so they travel with the config,
// versioned, and every lookup is a local Map read.
import cluster, { type Worker } from 'node:cluster';
import net, { type Socket } from 'node:net';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ProxyConfig } from './config.ts';
import { ProxyConfigError, describeError } from './errors.ts';
import { closeListenSocket, openListenSocket, shutdownListener, type ListenSocket } from './listen-socket.ts';
import { setSharedListeners, sharedListenerKey } from './shared-listeners.ts';
// Types only: the primary never runs a proxy, so it does not load the request path (proxy.ts pulls in undici and
// the HTTP servers, ~20 MB of RSS); the worker imports it when it starts.
import type { ListenOptions, NodeProxy, OriginalDestination, SourceIdentity } from './proxy.ts';
import { compileSnapshot } from './snapshot.ts';
import { silentLogger, type ProxyLogger, type ProxyStats } from './stats.ts';
import type { UpstreamConnector } from './upstream.ts';

/** Where a worker gets the original destination of each accepted connection. */
export type OriginalDstSource =
  /** Every connection was going to one destination (tests, benchmarks: no datapath). */
  | { kind: 'fixed'; ip: string; port: number }
  /** The datapath's maps pinned under `pinDir` (`<pinDir>/maps/nm_pxy4_odst`); each worker opens them itself. */
  | { kind: 'pinned-map'; pinDir: string }
  /** A module exporting `createOriginalDst(init)` (or `exportName`) → `(socket) => OriginalDestination | undefined`. */
  | { kind: 'module'; path: string; exportName?: string; init?: unknown };

/** Source identities by pod address, as the agent knows them. */
export type IdentityTable = Record<string, SourceIdentity>;

/**
 * A module each worker loads to extend its proxy (the agent's mesh plumbing: the HBONE tunnel, certificates, the
 * inbound side). It exports `createProxyPlugin(init, logger)` (or `exportName`) returning a ProxyWorkerPlugin.
 */
export type WorkerPluginSource = { path: string; exportName?: string; init?: unknown };

/** What a worker plugin adds to the worker's proxy. */
export type ProxyWorkerPlugin = {
  /** Opens upstream connections for the worker's proxy (see ProxyOptions.connectUpstream). */
  connectUpstream?: UpstreamConnector;
  /** Plugin data pushed with a config (`applyConfig(config, identities, pluginData)`), before the config applies. */
  update?(data: unknown): void | Promise<void>;
  /** The worker's proxy is listening. */
  started?(proxy: NodeProxy): void | Promise<void>;
  /**
   * The worker is stopping; called at the same time as its proxy's stop: close the plugin's listeners, and with
   * `drain` let what is open finish until `timeoutMs` (the pool's drain deadline).
   */
  drain?(opts: { drain: boolean; timeoutMs: number }): void | Promise<void>;
  /** The worker is stopping (after its proxy and `drain` finished): release what outbound requests needed. */
  stop?(): void | Promise<void>;
};

/** Codes of worker-pool errors (NM_ERR_PROXY_WORKERS_*). */
export type WorkerPoolErrorCode =
  | 'NM_ERR_PROXY_WORKERS_ALREADY_STARTED'
  | 'NM_ERR_PROXY_WORKERS_NOT_STARTED'
  | 'NM_ERR_PROXY_WORKERS_START_FAILED'
  | 'NM_ERR_PROXY_WORKERS_APPLY_TIMEOUT'
  | 'NM_ERR_PROXY_WORKERS_APPLY_FAILED'
  | 'NM_ERR_PROXY_WORKERS_STOPPED'
  | 'NM_ERR_PROXY_WORKERS_SCHEDULING';

/** An error of the worker pool; the message names the worker (slot, pid) and the likely cause. */
export class WorkerPoolError extends Error {
  readonly code: WorkerPoolErrorCode;
  constructor(code: WorkerPoolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WorkerPoolError';
    this.code = code;
  }
}

/** What happened to a worker, for the host's logs and metrics (and tests waiting for a restart). */
export type WorkerPoolEvent =
  | { type: 'worker-listening'; slot: number; pid: number; generation: number }
  | { type: 'worker-exit'; slot: number; pid: number; code: number | null; signal: string | null; restartInMs: number | undefined }
  | { type: 'worker-killed'; slot: number; pid: number; reason: string };

/** Options of the pool; everything but `originalDst` has a default. */
export type WorkerPoolOptions = {
  /** Worker processes; default `os.availableParallelism()`. */
  workers?: number;
  originalDst: OriginalDstSource;
  /** Config to start with; without one workers refuse every connection until `applyConfig`. */
  config?: ProxyConfig;
  identities?: IdentityTable;
  /** Lines from the workers arrive here with `worker` (pid) and `slot` added. */
  logger?: ProxyLogger;
  /** Forward the workers' debug lines too (one IPC message each); default false. */
  debugLogs?: boolean;
  onEvent?: (event: WorkerPoolEvent) => void;
  /** Loaded by every worker before its proxy starts; its data travels with each config push. */
  plugin?: WorkerPluginSource;
  /** Plugin data to start with. */
  pluginData?: unknown;
  /** `round-robin` (default): the primary accepts and hands each connection to the next worker over IPC (even
   *  split; the primary is on every new connection's path). `kernel`: every worker accepts on the shared socket
   *  (no hop, uneven split). Process-wide in Node: the first pool to start decides. */
  scheduling?: 'kernel' | 'round-robin';
  /**
   * `cluster` (default): the cluster module binds each listening socket. `reuseport`: the primary opens them itself
   * with SO_REUSEPORT (listen-socket.ts) and the workers listen on its descriptors, so a second pool (a new proxy
   * process during a graceful restart) can bind the same ports while this one drains.
   */
  listenSockets?: 'cluster' | 'reuseport';
  /**
   * Addresses the plugin listens on (its own servers, e.g. the HBONE listener); with `reuseport` the primary opens
   * these too and the plugin's `listen` finds them through shared-listeners.ts.
   */
  pluginListeners?: { host: string; port: number }[];
  /** How long `applyConfig` waits for every serving worker's acknowledgement; default 10000. */
  applyTimeoutMs?: number;
  /** A worker must be listening this soon after its fork, else it is killed and restarted; default 15000. */
  startTimeoutMs?: number;
  /** Ping period, and the silence after which a worker counts as hung and is killed; defaults 1000 / 5000. */
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  /** Restart backoff after a crash: first delay, cap; a worker that lived `stableMs` resets it. Defaults 100 / 5000 / 10000. */
  restartMinMs?: number;
  restartMaxMs?: number;
  stableMs?: number;
  /**
   * Node flags for the workers (the primary's own execArgv is not inherited: `node --test` flags would be). Default
   * DEFAULT_WORKER_EXEC_ARGV; a list given here replaces it.
   */
  execArgv?: string[];
};

/** One worker's view, from `status()`. */
export type WorkerStatus = {
  slot: number; pid: number | undefined; state: SlotState; restarts: number; generation: number;
  /** While serving: ms since the worker last answered a heartbeat (its event loop is that far behind, at most). */
  silentMs?: number;
};

/** Counters of one worker and the sum over all, from `stats()`. */
export type PoolStats = {
  workers: { slot: number; pid: number; generation: number; configVersion: string; stats: ProxyStats; memory: NodeJS.MemoryUsage }[];
  total: ProxyStats | undefined;
};

type SlotState = 'starting' | 'serving' | 'stopping' | 'down';

type Slot = {
  index: number;
  worker: Worker | undefined;
  state: SlotState;
  restarts: number;
  /** Highest config generation the worker acknowledged (or started with). */
  generation: number;
  initSent: boolean;
  forkedAt: number;
  lastPong: number;
  backoffMs: number;
  startTimer: NodeJS.Timeout | undefined;
  restartTimer: NodeJS.Timeout | undefined;
  /** The worker's last refusal of a config push, cleared by its next good ack. */
  applyError: string | undefined;
  /** The listen spec the worker was forked with: one made before the sockets were reopened is stale. */
  spec: ListenOptions | undefined;
};

type ApplyWaiter = { generation: number; resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout };

// Messages over the cluster IPC channel (structured clone: `serialization: 'advanced'`).
type ToWorker =
  | { t: 'init'; generation: number; config: ProxyConfig | undefined; identities: IdentityTable; listen: ListenOptions; originalDst: OriginalDstSource; debugLogs: boolean; plugin?: WorkerPluginSource; pluginData?: unknown; sharedListeners?: Record<string, number> }
  | { t: 'config'; generation: number; config: ProxyConfig; identities: IdentityTable; pluginData?: unknown }
  | { t: 'ping'; seq: number }
  | { t: 'stats'; seq: number }
  | { t: 'stop'; drain: boolean; timeoutMs: number };
type FromWorker =
  | { t: 'ready' }
  | { t: 'listening'; generation: number; outboundPort: number; inboundPort: number | undefined }
  | { t: 'start-failed'; error: string }
  | { t: 'ack'; generation: number; error?: string }
  | { t: 'pong'; seq: number }
  | { t: 'stats'; seq: number; generation: number; configVersion: string; stats: ProxyStats; memory: NodeJS.MemoryUsage }
  | { t: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> }
  | { t: 'stopped' };

/**
 * Workers' default V8 flags. `--max-semi-space-size=8` caps the young generation (sized from the machine's memory
 * otherwise: 16 MB semi-spaces, heapTotal ~90 MB under load). Measured with one worker at saturation (bench/l7-micro.ts
 * and a pool run, 2-CPU VM): worker RSS ~150-175 → ~125-140 MB, GC pauses +~1 µs per request (≈2 % of the ~50 µs a
 * request costs, inside the run-to-run noise); 4 MB saved ~10 MB more for +2-5 µs per request.
 */
export const DEFAULT_WORKER_EXEC_ARGV: readonly string[] = ['--max-semi-space-size=8'];

const WORKER_ENV = 'NODEMESH_PROXY_WORKER';
const THIS_FILE = fileURLToPath(import.meta.url);

/**
 * Next restart delay after a worker exit: doubled from the previous one (from `minMs`), capped at `maxMs`; a worker
 * that had been up for `stableMs` or longer crashed "for the first time" again and restarts after `minMs`.
 */
export function computeRestartDelayMs(prevMs: number, livedMs: number, opts: { minMs: number; maxMs: number; stableMs: number }): number {
  if (livedMs >= opts.stableMs || prevMs <= 0) return opts.minMs;
  return Math.min(opts.maxMs, Math.max(opts.minMs, prevMs * 2));
}

/** Sum of counter trees of the same shape (numbers add, records merge key by key); undefined for none. */
export function computeStatsSum<T>(items: readonly T[]): T | undefined {
  if (items.length === 0) return undefined;
  const add = (a: unknown, b: unknown): unknown => {
    if (typeof a === 'number' && typeof b === 'number') return a + b;
    if (a === undefined) return structuredClone(b);
    if (b === undefined) return a;
    if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
      const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
      for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = add(out[k], v);
      return out;
    }
    return a;
  };
  let sum: unknown = structuredClone(items[0]);
  for (const it of items.slice(1)) sum = add(sum, it);
  return sum as T;
}

/** Which serving workers still lack `generation` (slot and pid, for the timeout message). */
export function computeLaggards(slots: readonly { index: number; state: SlotState; generation: number; pid: number | undefined }[], generation: number): { slot: number; pid: number | undefined }[] {
  return slots.filter((s) => s.state === 'serving' && s.generation < generation).map((s) => ({ slot: s.index, pid: s.pid }));
}

/**
 * The proxy over several processes. `start` forks the workers and resolves once all listen; `applyConfig` validates
 * here first (an invalid config never reaches a worker), then pushes it with a new generation number and resolves
 * when every serving worker has acknowledged it; a worker started or restarted later boots with the latest one.
 * A dead or hung worker is restarted with backoff while the others keep accepting on the shared sockets.
 */
export class ProxyWorkerPool {
  #opts: WorkerPoolOptions;
  #log: ProxyLogger;
  #slots: Slot[] = [];
  #config: ProxyConfig | undefined;
  #identities: IdentityTable;
  #pluginData: unknown;
  #generation = 0;
  #waiters: ApplyWaiter[] = [];
  #listen: ListenOptions | undefined;
  /** Ports the shared sockets are bound to, once the first worker listens. */
  #ports: { outboundPort: number; inboundPort: number | undefined } | undefined;
  /** The ports workers pass to listen(): the cluster finds the shared handle by (host, port as requested, index). */
  #listenSpec: ListenOptions | undefined;
  #running = false;
  #stopping = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #seq = 0;
  #pendingStats = new Map<number, (m: Extract<FromWorker, { t: 'stats' }>) => void>();
  #listeningWaiters = new Set<() => void>();
  /** Sockets the primary opened (`listenSockets: 'reuseport'`), by the address workers ask for; and whether a worker took them. */
  #shared: { byKey: Record<string, number>; sockets: ListenSocket[]; adopted: boolean } | undefined;

  constructor(opts: WorkerPoolOptions) {
    this.#opts = opts;
    this.#log = opts.logger ?? silentLogger;
    this.#config = opts.config;
    this.#identities = opts.identities ?? {};
    this.#pluginData = opts.pluginData;
    if (opts.config) compileOrThrow(opts.config);
  }

  /** Config generation last pushed (0 = the one given at construction). */
  get generation(): number { return this.#generation; }

  /** Bound ports (after `start`). */
  get ports(): { outboundPort: number; inboundPort: number | undefined } | undefined { return this.#ports; }

  /** Every slot: its current worker, state, restarts and acknowledged config generation. */
  status(): WorkerStatus[] {
    const now = Date.now();
    return this.#slots.map((s) => ({ slot: s.index, pid: s.worker?.process.pid, state: s.state, restarts: s.restarts, generation: s.generation, ...(s.state === 'serving' ? { silentMs: now - s.lastPong } : {}) }));
  }

  /** Fork the workers; resolves with the bound ports once every worker is listening. */
  async start(listen: ListenOptions): Promise<{ outboundPort: number; inboundPort: number | undefined }> {
    if (this.#running) throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_ALREADY_STARTED', 'proxy worker pool already started; stop it first');
    const count = this.#opts.workers ?? os.availableParallelism();
    if (!Number.isInteger(count) || count < 1) throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_START_FAILED', `workers: ${count} is not a positive integer`);
    setupCluster(this.#opts.scheduling ?? 'round-robin', this.#opts.execArgv ?? [...DEFAULT_WORKER_EXEC_ARGV]);
    this.#running = true;
    this.#stopping = false;
    this.#listen = listen;
    this.#listenSpec = listen;
    this.#ports = undefined;
    this.#slots = Array.from({ length: count }, (_, index) => ({
      index, worker: undefined, state: 'down' as SlotState, restarts: 0, generation: 0, initSent: false, forkedAt: 0, lastPong: 0,
      backoffMs: 0, startTimer: undefined, restartTimer: undefined, applyError: undefined, spec: undefined,
    }));
    try {
      this.#openSharedSockets();
      // The first worker alone: with port 0 it picks the port, and a bind error shows up once, not N times.
      this.#fork(this.#slots[0]!);
      await this.#waitListening([0]);
      for (const s of this.#slots.slice(1)) this.#fork(s);
      await this.#waitListening(this.#slots.map((s) => s.index));
    } catch (err) {
      await this.stop({ drain: false });
      throw err;
    }
    const hb = this.#opts.heartbeatMs ?? 1000;
    this.#heartbeat = setInterval(() => this.#tick(), hb);
    this.#heartbeat.unref();
    return this.#ports!;
  }

  /**
   * Validate, then push to every worker with a new generation; resolves when every serving worker has it. Throws
   * ProxyConfigError (nothing pushed) for an invalid config, WorkerPoolError on a timeout or a worker's refusal.
   * `identities`, when given, replace the table in the same push.
   */
  async applyConfig(config: ProxyConfig, identities?: IdentityTable, pluginData?: unknown): Promise<{ generation: number; workers: number }> {
    if (!this.#running || this.#stopping) throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_NOT_STARTED', 'proxy worker pool is not running; call start() first');
    compileOrThrow(config);
    const generation = ++this.#generation;
    this.#config = config;
    if (identities) this.#identities = identities;
    if (pluginData !== undefined) this.#pluginData = pluginData;
    const msg: ToWorker = { t: 'config', generation, config, identities: this.#identities, ...(pluginData !== undefined ? { pluginData } : {}) };
    for (const s of this.#slots) if (s.worker && s.initSent && s.state !== 'stopping') this.#send(s, msg);
    const timeoutMs = this.#opts.applyTimeoutMs ?? 10_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        const late = computeLaggards(this.status().map((s) => ({ index: s.slot, state: s.state, generation: s.generation, pid: s.pid })), generation);
        reject(new WorkerPoolError('NM_ERR_PROXY_WORKERS_APPLY_TIMEOUT',
          `config generation ${generation} (version ${config.version}) not acknowledged within ${timeoutMs} ms by ${late.map((l) => `worker ${l.slot} (pid ${l.pid})`).join(', ')}; is the worker's event loop blocked?`));
      }, timeoutMs);
      const waiter: ApplyWaiter = { generation, resolve, reject, timer };
      this.#waiters.push(waiter);
      this.#checkWaiters();
    });
    return { generation, workers: this.#slots.filter((s) => s.state === 'serving').length };
  }

  /** Counters and memory of every serving worker, and the counters' sum (workers silent for `timeoutMs` are left out). */
  async stats(timeoutMs = 2000): Promise<PoolStats> {
    const serving = this.#slots.filter((s) => s.state === 'serving' && s.worker);
    const answers = await Promise.all(serving.map((s) => new Promise<PoolStats['workers'][number] | undefined>((resolve) => {
      const seq = ++this.#seq;
      const timer = setTimeout(() => { this.#pendingStats.delete(seq); resolve(undefined); }, timeoutMs);
      this.#pendingStats.set(seq, (m) => {
        clearTimeout(timer);
        resolve({ slot: s.index, pid: s.worker?.process.pid ?? 0, generation: m.generation, configVersion: m.configVersion, stats: m.stats, memory: m.memory });
      });
      this.#send(s, { t: 'stats', seq });
    })));
    const workers = answers.filter((a) => a !== undefined);
    return { workers, total: computeStatsSum(workers.map((w) => w.stats)) };
  }

  /**
   * Stop restarting, then stop every worker: with `drain` each closes its listeners and lets in-flight requests
   * finish (up to `timeoutMs`); workers still alive `timeoutMs` + 2 s later are killed.
   */
  async stop(opts: { drain?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (!this.#running) return;
    this.#stopping = true;
    const drain = opts.drain ?? true;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    for (const w of this.#waiters) { clearTimeout(w.timer); w.reject(new WorkerPoolError('NM_ERR_PROXY_WORKERS_STOPPED', `proxy worker pool stopped before config generation ${w.generation} reached every worker`)); }
    this.#waiters = [];
    const exits: Promise<void>[] = [];
    for (const s of this.#slots) {
      if (s.restartTimer) clearTimeout(s.restartTimer);
      if (s.startTimer) clearTimeout(s.startTimer);
      s.restartTimer = undefined;
      s.startTimer = undefined;
      const w = s.worker;
      if (!w) continue;
      s.state = 'stopping';
      exits.push(new Promise<void>((resolve) => {
        if (w.process.exitCode !== null || w.process.signalCode !== null) { resolve(); return; }
        const kill = setTimeout(() => { w.process.kill('SIGKILL'); }, drain ? timeoutMs + 2000 : 2000);
        w.process.once('exit', () => { clearTimeout(kill); resolve(); });
      }));
      // A worker that has not had its init yet has nothing to drain.
      if (s.initSent) this.#send(s, { t: 'stop', drain, timeoutMs }); else w.process.kill('SIGKILL');
    }
    await Promise.all(exits);
    for (const s of this.#slots) { s.worker = undefined; s.state = 'down'; }
    this.#releaseSharedSockets();
    this.#running = false;
  }

  /**
   * With `listenSockets: 'reuseport'`: opens the listening sockets for the current listen spec (ports as workers will
   * ask for them) and the plugin's addresses. Throws WorkerPoolError naming the address when one cannot be bound.
   */
  #openSharedSockets(): void {
    if (this.#opts.listenSockets !== 'reuseport') return;
    this.#releaseSharedSockets();
    const spec = this.#listenSpec!;
    const wanted = [
      { host: spec.host, port: spec.outboundPort },
      ...(spec.inboundPort !== undefined ? [{ host: spec.host, port: spec.inboundPort }] : []),
      ...(this.#opts.pluginListeners ?? []),
    ];
    const sockets: ListenSocket[] = [];
    const byKey: Record<string, number> = {};
    try {
      for (const w of wanted) {
        const s = openListenSocket(w.host, w.port);
        sockets.push(s);
        byKey[sharedListenerKey(w.host, w.port)] = s.fd;
      }
    } catch (err) {
      for (const s of sockets) closeListenSocket(s);
      throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_START_FAILED', describeError(err), { cause: err });
    }
    this.#shared = { byKey, sockets, adopted: false };
  }

  /** Closes sockets no worker ever listened on (the cluster module owns and closes the others). */
  #releaseSharedSockets(): void {
    if (this.#shared && !this.#shared.adopted) for (const s of this.#shared.sockets) closeListenSocket(s);
    this.#shared = undefined;
  }

  #fork(slot: Slot): void {
    // While another worker holds the shared socket, listen exactly as it did (the cluster matches the request);
    // with none left, the socket is gone and the ports already handed out are the ones to bind again.
    if (this.#ports && !this.#slots.some((s) => s !== slot && s.state === 'serving')) {
      this.#listenSpec = { ...this.#listen!, outboundPort: this.#ports.outboundPort, ...(this.#ports.inboundPort !== undefined ? { inboundPort: this.#ports.inboundPort } : {}) };
      // The cluster module closed the primary's sockets with the last worker: open them again (same ports).
      if (this.#opts.listenSockets === 'reuseport') {
        try {
          this.#openSharedSockets();
        } catch (err) {
          this.#log.error('proxy listening sockets could not be opened again; retrying with the next restart', { err: describeError(err) });
        }
      }
    }
    slot.spec = this.#listenSpec;
    const worker = cluster.fork({ [WORKER_ENV]: '1' });
    slot.worker = worker;
    slot.state = 'starting';
    slot.initSent = false;
    slot.forkedAt = Date.now();
    slot.lastPong = Date.now();
    slot.applyError = undefined;
    const startTimeoutMs = this.#opts.startTimeoutMs ?? 15_000;
    slot.startTimer = setTimeout(() => {
      slot.startTimer = undefined;
      if (slot.worker === worker && slot.state === 'starting') this.#kill(slot, `not listening ${startTimeoutMs} ms after fork`);
    }, startTimeoutMs);
    worker.on('message', (m: FromWorker) => this.#onMessage(slot, worker, m));
    worker.on('error', (err: Error) => this.#log.warn('proxy worker IPC error', { slot: slot.index, pid: worker.process.pid, err: describeError(err) }));
    worker.process.once('exit', (code, signal) => this.#onExit(slot, worker, code, signal));
  }

  #onMessage(slot: Slot, worker: Worker, m: FromWorker): void {
    if (slot.worker !== worker) return;
    const pid = worker.process.pid ?? 0;
    switch (m.t) {
      case 'ready':
        slot.initSent = true;
        slot.generation = this.#generation;
        this.#send(slot, {
          t: 'init', generation: this.#generation, config: this.#config, identities: this.#identities, listen: this.#listenSpec!, originalDst: this.#opts.originalDst, debugLogs: this.#opts.debugLogs ?? false,
          ...(this.#opts.plugin ? { plugin: this.#opts.plugin, pluginData: this.#pluginData } : {}),
          ...(this.#shared ? { sharedListeners: this.#shared.byKey } : {}),
        });
        return;
      case 'listening': {
        if (slot.startTimer) clearTimeout(slot.startTimer);
        slot.startTimer = undefined;
        if (slot.spec !== this.#listenSpec) {
          this.#kill(slot, 'listening on sockets the pool has replaced since this worker started');
          return;
        }
        if (this.#shared) this.#shared.adopted = true;
        if (this.#ports && (m.outboundPort !== this.#ports.outboundPort || m.inboundPort !== this.#ports.inboundPort)) {
          // Only when every worker died at once while this one was starting: its socket is not the one handed out.
          this.#kill(slot, `listening on ${m.outboundPort}/${m.inboundPort}, not on the pool's ${this.#ports.outboundPort}/${this.#ports.inboundPort}`);
          return;
        }
        this.#ports ??= { outboundPort: m.outboundPort, inboundPort: m.inboundPort };
        slot.state = 'serving';
        slot.generation = Math.max(slot.generation, m.generation);
        slot.lastPong = Date.now();
        this.#opts.onEvent?.({ type: 'worker-listening', slot: slot.index, pid, generation: slot.generation });
        for (const w of [...this.#listeningWaiters]) w();
        this.#checkWaiters();
        return;
      }
      case 'start-failed':
        this.#log.error('proxy worker failed to start', { slot: slot.index, pid, err: m.error });
        this.#startError = new WorkerPoolError('NM_ERR_PROXY_WORKERS_START_FAILED', `proxy worker ${slot.index} (pid ${pid}) failed to start: ${m.error}`);
        for (const w of [...this.#listeningWaiters]) w();
        return;
      case 'ack':
        if (m.error) {
          slot.applyError = m.error;
          this.#log.error('proxy worker refused a config the primary accepted', { slot: slot.index, pid, generation: m.generation, err: m.error });
          for (const w of this.#waiters.filter((x) => x.generation <= m.generation)) {
            clearTimeout(w.timer);
            w.reject(new WorkerPoolError('NM_ERR_PROXY_WORKERS_APPLY_FAILED', `proxy worker ${slot.index} (pid ${pid}) refused config generation ${m.generation}: ${m.error}`));
          }
          this.#waiters = this.#waiters.filter((x) => x.generation > m.generation);
          return;
        }
        slot.applyError = undefined;
        slot.generation = Math.max(slot.generation, m.generation);
        this.#checkWaiters();
        return;
      case 'pong':
        slot.lastPong = Date.now();
        return;
      case 'stats':
        this.#pendingStats.get(m.seq)?.(m);
        this.#pendingStats.delete(m.seq);
        return;
      case 'log': {
        const fields = { ...m.fields, slot: slot.index, worker: pid };
        this.#log[m.level](m.msg, fields);
        return;
      }
      case 'stopped':
        return;
    }
  }

  #startError: WorkerPoolError | undefined;

  #onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    const pid = worker.process.pid ?? 0;
    if (slot.startTimer) clearTimeout(slot.startTimer);
    slot.startTimer = undefined;
    slot.worker = undefined;
    const wasStopping = this.#stopping || slot.state === 'stopping';
    slot.state = 'down';
    for (const w of [...this.#listeningWaiters]) w();
    if (wasStopping) return;
    const lived = Date.now() - slot.forkedAt;
    slot.backoffMs = computeRestartDelayMs(slot.backoffMs, lived, {
      minMs: this.#opts.restartMinMs ?? 100, maxMs: this.#opts.restartMaxMs ?? 5000, stableMs: this.#opts.stableMs ?? 10_000,
    });
    const restartInMs = this.#ports ? slot.backoffMs : undefined;
    this.#log.warn('proxy worker exited; the others keep serving', { slot: slot.index, pid, code, signal, restartInMs });
    this.#opts.onEvent?.({ type: 'worker-exit', slot: slot.index, pid, code, signal, restartInMs });
    this.#checkWaiters();
    // Before the pool ever listened, a dying worker is a failed start, reported by start(), not a crash loop.
    if (restartInMs === undefined) return;
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (!this.#running || this.#stopping) return;
      slot.restarts++;
      this.#fork(slot);
    }, restartInMs);
  }

  #kill(slot: Slot, reason: string): void {
    const w = slot.worker;
    if (!w) return;
    const pid = w.process.pid ?? 0;
    this.#log.error('proxy worker killed', { slot: slot.index, pid, reason });
    this.#opts.onEvent?.({ type: 'worker-killed', slot: slot.index, pid, reason });
    w.process.kill('SIGKILL');
  }

  #tick(): void {
    const now = Date.now();
    const limit = this.#opts.heartbeatTimeoutMs ?? 5000;
    for (const s of this.#slots) {
      if (s.state !== 'serving' || !s.worker) continue;
      if (now - s.lastPong > limit) { this.#kill(s, `no heartbeat answer for ${now - s.lastPong} ms (event loop blocked or process stopped)`); continue; }
      this.#send(s, { t: 'ping', seq: ++this.#seq });
    }
  }

  #send(slot: Slot, msg: ToWorker): void {
    const w = slot.worker;
    if (!w || !w.isConnected()) return;
    try {
      w.send(msg, undefined, (err: Error | null) => {
        if (err) this.#log.warn('proxy worker IPC send failed', { slot: slot.index, pid: w.process.pid, msg: msg.t, err: describeError(err) });
      });
    } catch (err) {
      this.#log.warn('proxy worker IPC send failed', { slot: slot.index, pid: w.process.pid, msg: msg.t, err: describeError(err) });
    }
  }

  #checkWaiters(): void {
    if (this.#waiters.length === 0) return;
    const serving = this.#slots.filter((s) => s.state === 'serving');
    const min = serving.length === 0 ? Infinity : Math.min(...serving.map((s) => s.generation));
    const done = this.#waiters.filter((w) => w.generation <= min);
    this.#waiters = this.#waiters.filter((w) => w.generation > min);
    for (const w of done) { clearTimeout(w.timer); w.resolve(); }
  }

  /** Resolves once every slot in `indices` serves; rejects when a start fails or a worker dies before listening. */
  #waitListening(indices: number[]): Promise<void> {
    this.#startError = undefined;
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        const slots = indices.map((i) => this.#slots[i]!);
        if (this.#startError) { done(); reject(this.#startError); return; }
        const dead = slots.find((s) => s.state === 'down');
        if (dead) { done(); reject(new WorkerPoolError('NM_ERR_PROXY_WORKERS_START_FAILED', `proxy worker ${dead.index} exited before listening (see the log for its error; is the port taken or the worker module broken?)`)); return; }
        if (slots.every((s) => s.state === 'serving')) { done(); resolve(); }
      };
      const done = (): void => { this.#listeningWaiters.delete(check); };
      this.#listeningWaiters.add(check);
      check();
    });
  }
}

function compileOrThrow(config: ProxyConfig): void {
  try {
    compileSnapshot(config);
  } catch (err) {
    if (err instanceof ProxyConfigError) throw err;
    throw new ProxyConfigError([{ path: '', message: describeError(err) }]);
  }
}

let clusterScheduling: 'kernel' | 'round-robin' | undefined;

function setupCluster(scheduling: 'kernel' | 'round-robin', execArgv: string[]): void {
  if (!cluster.isPrimary) throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_START_FAILED', 'a proxy worker pool can only run in a primary process, not inside a cluster worker');
  if (clusterScheduling === undefined) {
    // Node freezes the policy at the first setupPrimary/fork of the process.
    cluster.schedulingPolicy = scheduling === 'kernel' ? cluster.SCHED_NONE : cluster.SCHED_RR;
    clusterScheduling = scheduling;
  } else if (clusterScheduling !== scheduling) {
    throw new WorkerPoolError('NM_ERR_PROXY_WORKERS_SCHEDULING', `scheduling '${scheduling}' requested, but this process already runs proxy workers with '${clusterScheduling}' (Node fixes it per process)`);
  }
  cluster.setupPrimary({ exec: THIS_FILE, args: [], execArgv, serialization: 'advanced', silent: false });
}

// ---------------------------------------------------------------------------------------------------------------
// Worker side: this same file, run by cluster.fork() with NODEMESH_PROXY_WORKER=1.

type LookupFn = (socket: Socket) => OriginalDestination | undefined;

/** `::ffff:10.0.0.1` → `10.0.0.1` (the datapath keys IPv4 clients by their IPv4 address). */
function plainAddress(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

async function loadOriginalDst(src: OriginalDstSource): Promise<{ lookup: LookupFn; close: () => void }> {
  switch (src.kind) {
    case 'fixed': {
      const dst = { ip: src.ip, port: src.port };
      return { lookup: () => dst, close: () => {} };
    }
    case 'pinned-map': {
      // Loaded only here, so workers without a datapath never load libbpf.
      const bpf = await import('../bpf/index.ts');
      const maps = new bpf.PinnedMaps(src.pinDir, ['nm_pxy4_odst']);
      return {
        lookup: (socket) => {
          const addr = plainAddress(socket.remoteAddress ?? '');
          if (!net.isIPv4(addr)) return undefined;
          const o = bpf.lookupOriginalDst(maps, { addr, port: socket.remotePort ?? 0 }, true);
          return o ? { ip: o.addr, port: o.port } : undefined;
        },
        close: () => maps.close(),
      };
    }
    case 'module': {
      const mod = (await import(pathToFileURL(src.path).href)) as Record<string, unknown>;
      const name = src.exportName ?? 'createOriginalDst';
      const factory = mod[name];
      if (typeof factory !== 'function') throw new Error(`originalDst module ${src.path} has no function export '${name}'`);
      const lookup = (await (factory as (init: unknown) => unknown)(src.init)) as LookupFn;
      if (typeof lookup !== 'function') throw new Error(`originalDst module ${src.path}: ${name}(init) did not return a function`);
      return { lookup, close: () => {} };
    }
  }
}

async function loadPlugin(src: WorkerPluginSource, logger: ProxyLogger): Promise<ProxyWorkerPlugin> {
  const mod = (await import(pathToFileURL(src.path).href)) as Record<string, unknown>;
  const name = src.exportName ?? 'createProxyPlugin';
  const factory = mod[name];
  if (typeof factory !== 'function') throw new Error(`proxy worker plugin ${src.path} has no function export '${name}'`);
  return (await (factory as (init: unknown, logger: ProxyLogger) => unknown)(src.init, logger)) as ProxyWorkerPlugin;
}

async function runWorker(): Promise<void> {
  const send = (m: FromWorker): void => { if (process.connected) process.send!(m); };
  let proxy: NodeProxy | undefined;
  let plugin: ProxyWorkerPlugin | undefined;
  // Config pushes run one after another: a plugin update may be async and must land before its config.
  let queue: Promise<void> = Promise.resolve();
  let identities = new Map<string, SourceIdentity>();
  let generation = 0;
  let closeLookup: () => void = () => {};
  let stopping = false;
  let sharedSockets = false;
  let debugLogs = false;
  const logger: ProxyLogger = {
    debug: (msg, fields) => { if (debugLogs) send({ t: 'log', level: 'debug', msg, ...(fields ? { fields } : {}) }); },
    info: (msg, fields) => send({ t: 'log', level: 'info', msg, ...(fields ? { fields } : {}) }),
    warn: (msg, fields) => send({ t: 'log', level: 'warn', msg, ...(fields ? { fields } : {}) }),
    error: (msg, fields) => send({ t: 'log', level: 'error', msg, ...(fields ? { fields } : {}) }),
  };
  const onInit = async (m: Extract<ToWorker, { t: 'init' }>): Promise<void> => {
    generation = m.generation;
    debugLogs = m.debugLogs;
    identities = new Map(Object.entries(m.identities));
    setSharedListeners(m.sharedListeners);
    sharedSockets = m.sharedListeners !== undefined;
    const { lookup, close } = await loadOriginalDst(m.originalDst);
    closeLookup = close;
    if (m.plugin) {
      plugin = await loadPlugin(m.plugin, logger);
      if (m.pluginData !== undefined) await plugin.update?.(m.pluginData);
    }
    const { NodeProxy } = await import('./proxy.ts');
    proxy = new NodeProxy({
      ...(m.config ? { config: m.config } : {}), originalDst: lookup, identifySource: (addr) => identities.get(addr), logger,
      ...(plugin?.connectUpstream ? { connectUpstream: plugin.connectUpstream } : {}),
    });
    const ports = await proxy.start(m.listen);
    await plugin?.started?.(proxy);
    send({ t: 'listening', generation, outboundPort: ports.outboundPort, inboundPort: ports.inboundPort });
  };
  // The primary died (kill -9): the cluster module exits this worker on 'disconnect'; first stop the listening
  // sockets, so connects are refused now (fail closed), not once the kernel has released this process's files.
  process.prependOnceListener('disconnect', () => {
    if (!stopping && sharedSockets) for (const fd of proxy?.listenerFds() ?? []) shutdownListener(fd);
  });
  process.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'init':
        // In the queue: a config pushed while the worker is still loading lands on the proxy init builds, after it.
        queue = queue.then(() => onInit(m)).catch((err: unknown) => {
          send({ t: 'start-failed', error: describeError(err) });
          // Exit through the IPC close: the primary sees the exit and reports the start failure.
          cluster.worker?.disconnect();
        });
        return;
      case 'config':
        queue = queue.then(async () => {
          // No proxy: the start failed and the worker is going away; the primary stops waiting for it on its exit.
          if (!proxy) return;
          try {
            if (m.pluginData !== undefined) await plugin?.update?.(m.pluginData);
            proxy?.applyConfig(m.config);
            identities = new Map(Object.entries(m.identities));
            generation = Math.max(generation, m.generation);
            send({ t: 'ack', generation: m.generation });
          } catch (err) {
            send({ t: 'ack', generation: m.generation, error: describeError(err) });
          }
        });
        return;
      case 'ping':
        send({ t: 'pong', seq: m.seq });
        return;
      case 'stats':
        if (proxy) send({ t: 'stats', seq: m.seq, generation, configVersion: proxy.configVersion, stats: proxy.stats, memory: process.memoryUsage() });
        return;
      case 'stop':
        stopping = true;
        // The proxy and the plugin's listeners stop together: one drain deadline for every listener of the worker.
        Promise.all([
          proxy ? proxy.stop({ drain: m.drain, timeoutMs: m.timeoutMs }) : undefined,
          plugin?.drain?.({ drain: m.drain, timeoutMs: m.timeoutMs }),
        ])
          .then(() => plugin?.stop?.())
          .catch((err: unknown) => logger.error('proxy stop failed', { err: describeError(err) }))
          .finally(() => {
            closeLookup();
            send({ t: 'stopped' });
            // Closing the channel lets the process end once nothing else holds it open.
            cluster.worker?.disconnect();
          });
        return;
    }
  });
  send({ t: 'ready' });
}

if (cluster.isWorker && process.env[WORKER_ENV] === '1') {
  runWorker().catch((err: unknown) => {
    process.stderr.write(`proxy worker ${process.pid}: ${describeError(err)}\n`);
    process.exitCode = 1;
    cluster.worker?.disconnect();
  });
}
