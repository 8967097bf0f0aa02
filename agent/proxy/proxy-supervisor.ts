/**
 * The agent's side of the node proxy: starts the proxy process (agent/proxy/main.ts), replaces one a previous
 * agent left running, restarts it quickly when it dies (refused connects meanwhile: fail closed), and feeds it the
 * latest plan and certificates — also right after a restart, so a new proxy opens its listener with policy in
 * force. Health: the proxy's pid, state, restarts, the version it serves.
 * Graceful restart (`restart({ graceful: true })`, a changed launch setting, the restart signal, or the leftover of a
 * previous agent): the new proxy starts next to the old one on the same ports (SO_REUSEPORT), gets the latest plan,
 * registers its listener in the datapath and reports ready; only then is the old one sent SIGTERM, and it drains
 * (planProxyHandover). The redirect never points at a port nobody listens on: one of the two always does.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { DEFAULT_DRAIN_TIMEOUT_MS } from '../../l7proxy/drain.ts';
import { PRIMARY_EXEC_ARGV } from '../../l7proxy/process-memory.ts';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import type { IdentityTable } from '../../l7proxy/workers.ts';
import { writeFileAtomicSync } from '../atomic-file.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { FromProxy, ToProxy } from './main.ts';
import type { TelemetryBatch } from './telemetry-relay.ts';
import type { MeshPluginData } from './worker-plugin.ts';
import { applyProxyCgroup, moveIntoProxyCgroup, planProxyCgroup, proxyCgroupPids, readOomKills, readProxyMemory, removeProxyCgroup, type ProxyCgroupPlan } from './proxy-cgroup.ts';

/** What one push to the proxy carries. */
export interface ProxyUpdate {
  version: string;
  config: ProxyConfig;
  identities: IdentityTable;
  pluginData: MeshPluginData;
}

/** Options of the supervisor. */
export interface ProxySupervisorOptions {
  nodeName: string;
  /** The node proxy's address (listeners, and the source of connections to local pods). */
  host: string;
  outboundPort: number;
  inboundPort: number;
  workers: number;
  /** The node's bpffs directory (original destinations, listener registration); absent in tests (`fixedDst`). */
  pinDir?: string;
  /** Tests without a datapath: every accepted connection goes to this destination. */
  fixedDst?: string;
  /** SO_MARK of the proxy's upstream connects (the datapath's proxy_mark). */
  mark?: number;
  trustDomain: string;
  /** Where the pid file lives (one proxy per node). */
  runDir: string;
  log: Logger;
  /** Restart delay after a crash: doubles from min to max, reset after a stable minute. */
  restartMinMs?: number;
  restartMaxMs?: number;
  /** Proxy entry point (tests may substitute). */
  entry?: string;
  /** How long a stopping or replaced proxy may drain before the rest is cut; default 15 s. */
  drainTimeoutMs?: number;
  /** A signal to this process that restarts the proxy gracefully (e.g. SIGUSR2); absent = none. */
  restartSignal?: NodeJS.Signals;
  /** The workers' telemetry batches (records for metrics and the access log). */
  onTelemetry?: (batch: TelemetryBatch) => void;
  /**
   * A memory limit for the proxy and its workers, in bytes: they run in a cgroup of their own (proxy-cgroup.ts) and an
   * OOM kill restarts the whole proxy, as a crash does. Absent: the proxy stays in the agent's cgroup.
   */
  memoryMaxBytes?: number;
  /** The node's cgroup v2 directory (the agent's --cgroup): where the proxy's own cgroup goes on cgroup v2. */
  nodeCgroup?: string;
  /** How often the cgroup's OOM-kill counter is read (default 250 ms). */
  oomPollMs?: number;
}

/** The proxy's memory cgroup as the supervisor sees it. */
export interface ProxyMemoryStatus {
  cgroup?: string;
  hierarchy?: ProxyCgroupPlan['hierarchy'];
  limitBytes: number;
  usageBytes?: number;
  /** OOM kills in the proxy's cgroup since this agent started. */
  oomKills: number;
  lastOomKill?: string;
  /** Why the limit is not in force (no memory controller, a write refused). */
  problem?: string;
}

/** The supervisor's view of the proxy. */
export interface ProxyStatus {
  pid: number | undefined;
  state: 'starting' | 'serving' | 'down' | 'stopped';
  restarts: number;
  /** Version of the last plan the proxy acknowledged. */
  applied: string | undefined;
  /** Version handed to the proxy and not acknowledged yet. */
  pending: string | undefined;
  lastError: string | undefined;
  lastExit: string | undefined;
  /** Worker processes and listening addresses, once serving. */
  workers?: number;
  listeners?: string[];
  /** A graceful restart under way: why, since when, the pid being replaced. */
  handover?: { reason: string; since: string; oldPid: number | undefined };
  /** The last graceful restart: why, how long until the new proxy served and until the old one was gone. */
  lastHandover?: { reason: string; oldPid: number | undefined; newPid: number | undefined; readyMs: number; drainedMs: number; outcome: 'graceful' | 'fell-back' | 'failed' };
  /** With a memory limit: the proxy's cgroup, its use and its OOM kills. */
  memory?: ProxyMemoryStatus;
}

/** What a proxy process is started with: changing any of it needs a new process. */
export interface ProxyLaunch {
  args: string[];
  entry: string;
}

/** A proxy being replaced: a child of ours, or a leftover of a previous agent (a pid only). */
type Retiring = { pid: number; exited: Promise<void> };

/**
 * Whether a proxy started as `running` must be replaced to get `wanted`, and why (for the log). Every launch setting
 * (ports, workers, trust domain, mark, drain deadline, entry point) is read once at start: none is hot-reloadable.
 */
export function planProxyRestart(running: ProxyLaunch | undefined, wanted: ProxyLaunch): { restart: boolean; reasons: string[] } {
  if (!running) return { restart: false, reasons: [] };
  const reasons: string[] = [];
  if (running.entry !== wanted.entry) reasons.push(`entry point ${running.entry} → ${wanted.entry}`);
  const flags = (args: string[]): Map<string, string> => {
    const m = new Map<string, string>();
    for (let i = 0; i < args.length; i++) if (args[i]!.startsWith('--')) m.set(args[i]!, args[i + 1]?.startsWith('--') === false ? args[i + 1]! : '');
    return m;
  };
  const a = flags(running.args);
  const b = flags(wanted.args);
  for (const k of new Set([...a.keys(), ...b.keys()])) if (a.get(k) !== b.get(k)) reasons.push(`${k} ${a.get(k) ?? '(unset)'} → ${b.get(k) ?? '(unset)'}`);
  return { restart: reasons.length > 0, reasons };
}

/** One answer of a proxy to a status query, at `atMs`. */
export type ProxySample = { atMs: number; workers: { state: string; restarts: number; silentMs?: number }[] };

/**
 * Whether a new proxy has settled: for the last `settleMs`, every worker served, none restarted, and each answered
 * its heartbeats within `maxSilentMs`. A just-started worker can still be busy compiling code and loading what its
 * first config needs (on a small node, for seconds); the old proxy keeps serving until the new one is past that,
 * as a worker blocked or killed right after the handover would cost the connections it holds.
 */
export function computeProxySettled(samples: readonly ProxySample[], o: { settleMs: number; maxSilentMs: number }): boolean {
  const last = samples.at(-1);
  if (!last || last.workers.length === 0) return false;
  // The window starts at the latest sample at least `settleMs` older than the last one.
  let start = -1;
  for (let i = samples.length - 1; i >= 0; i--) if (samples[i]!.atMs <= last.atMs - o.settleMs) { start = i; break; }
  if (start < 0) return false;
  const window = samples.slice(start);
  const restarts = window[0]!.workers.map((w) => w.restarts).join(',');
  return window.every((x) => x.workers.length === last.workers.length
    && x.workers.map((w) => w.restarts).join(',') === restarts
    && x.workers.every((w) => w.state === 'serving' && (w.silentMs ?? Infinity) <= o.maxSilentMs));
}

/**
 * The steps of replacing a serving proxy without losing a connection, in order, with their time limits (pure, so
 * the order is testable): start the new one next to the old one; wait until it serves the latest plan (its
 * listener registered in nm_pxy_sock); only then SIGTERM the old one, which closes its sockets and drains; kill it
 * if it outlives the drain deadline plus a grace. If the new one fails to start (an old proxy without SO_REUSEPORT
 * holds the ports), the old one is stopped first and a fresh one started: refused connects for that moment.
 */
export function planProxyHandover(o: { drainTimeoutMs: number; readyTimeoutMs: number }): {
  steps: ('spawn-new' | 'await-new-serving' | 'await-new-settled' | 'sigterm-old' | 'await-old-exit' | 'sigkill-old')[];
  readyTimeoutMs: number;
  killOldAfterMs: number;
  onNewFailed: ('sigterm-old' | 'await-old-exit' | 'spawn-new')[];
} {
  return {
    steps: ['spawn-new', 'await-new-serving', 'await-new-settled', 'sigterm-old', 'await-old-exit', 'sigkill-old'],
    readyTimeoutMs: o.readyTimeoutMs,
    // The proxy's own pool cuts what is left at the deadline and its workers 2 s later; this is the last resort.
    killOldAfterMs: o.drainTimeoutMs + 5000,
    onNewFailed: ['sigterm-old', 'await-old-exit', 'spawn-new'],
  };
}

const ENTRY = fileURLToPath(new URL('./main.ts', import.meta.url));
const APPLY_TIMEOUT_MS = 20_000;
/** A new proxy must serve the latest plan this soon during a graceful restart, else it is given up. */
const HANDOVER_READY_TIMEOUT_MS = 60_000;
/** How long a new proxy's workers must have been responsive before the old proxy is told to drain. */
const SETTLE_MS = 1500;

function sleep(ms: number): Promise<void> { return new Promise((r) => setTimeout(r, ms)); }

/** Resolves when `pid` is gone (polls /proc); the process need not be our child. */
async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (cmdlineOf(pid) !== undefined) {
    if (Date.now() >= until) return false;
    await sleep(50);
  }
  return true;
}

/** The pid file's name without `.pid`: unique per node and bpffs directory (so per sandbox instance). */
function basenameOfPid(pidFile: string): string {
  return (pidFile.split('/').pop() ?? 'proxy').replace(/^proxy-/, '').replace(/\.pid$/, '');
}

/** The parent pid of `pid` (/proc/<pid>/stat, after the command name); undefined when it is gone. */
function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** Reads `/proc/<pid>/cmdline`; undefined when the process is gone. */
function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** Keeps one proxy process running for this node and up to date. */
export class ProxySupervisor {
  readonly #o: ProxySupervisorOptions;
  readonly #log: Logger;
  #child: ChildProcess | undefined;
  #status: ProxyStatus = { pid: undefined, state: 'down', restarts: 0, applied: undefined, pending: undefined, lastError: undefined, lastExit: undefined };
  #latest: ProxyUpdate | undefined;
  #seq = 0;
  #waiters = new Map<number, { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout; version: string }>();
  #stopped = false;
  #delayMs = 0;
  #startedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #readyWaiters: Array<() => void> = [];
  /** Launch settings of the running proxy. */
  #launched: ProxyLaunch | undefined;
  /** Proxies draining after a handover (ours, or a previous agent's). */
  #retiring = new Set<Retiring>();
  /** A graceful restart in progress (one at a time; a second request joins it). */
  #handover: Promise<void> | undefined;
  /** Set while a handover waits for its new proxy: that proxy's exit goes here instead of the crash path. */
  #onHandoverExit: ((why: string) => void) | undefined;
  #signalHandler: (() => void) | undefined;
  #statusWaiters = new Map<number, (workers: ProxySample['workers']) => void>();
  /** The proxy's memory cgroup, when a limit is configured and could be applied. */
  #cgroup: ProxyCgroupPlan | undefined;
  #oomSeen = 0;
  #oomTimer: NodeJS.Timeout | undefined;

  constructor(o: ProxySupervisorOptions) {
    this.#o = { ...o };
    this.#log = o.log;
  }

  get #drainTimeoutMs(): number { return this.#o.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS; }

  /**
   * Path of the pid file (tests and `kill -9` drills read it). Keyed by node and bpffs directory: two sandbox
   * instances both have a node-1, and one agent must never take the other's proxy for its own leftover.
   */
  get pidFile(): string {
    const scope = this.#o.pinDir ? `-${createHash('sha256').update(this.#o.pinDir).digest('hex').slice(0, 8)}` : '';
    return join(this.#o.runDir, `proxy-${this.#o.nodeName}${scope}.pid`);
  }

  /** The proxy's state. */
  status(): ProxyStatus {
    const s = { ...this.#status };
    if (s.memory && this.#cgroup) {
      const usage = readProxyMemory(this.#cgroup);
      s.memory = { ...s.memory, ...(usage !== undefined ? { usageBytes: usage } : {}) };
    }
    return s;
  }

  /**
   * Starts our proxy (it listens once the first update arrives). A proxy a previous agent left keeps serving until
   * ours serves, then drains (a graceful handover: an agent upgrade loses no connection).
   */
  async start(): Promise<void> {
    this.#setUpCgroup();
    const leftover = this.#findLeftover();
    if (this.#o.restartSignal) {
      this.#signalHandler = () => { void this.restart({ graceful: true, reason: `signal ${this.#o.restartSignal}` }).catch((err: unknown) => this.#log.error('graceful proxy restart failed', { error: describeError(err) })); };
      process.on(this.#o.restartSignal, this.#signalHandler);
    }
    if (!leftover) { this.#spawn(); return; }
    this.#log.info('a proxy a previous agent left is serving: starting ours next to it, then draining it', { pid: leftover });
    const old: Retiring = { pid: leftover, exited: waitGone(leftover, Number.MAX_SAFE_INTEGER).then(() => {}) };
    this.#retiring.add(old);
    void old.exited.then(() => this.#retiring.delete(old));
    // Not awaited: the new proxy serves only after the first apply, which comes after start() returns; the old one
    // serves as long as that takes (no ready timeout).
    this.#handover = this.#replace(old, 'previous agent\'s proxy', Infinity).finally(() => { this.#handover = undefined; });
  }

  /**
   * Replaces the proxy process. Graceful: the new one starts next to the old one and the old one drains only once
   * the new one serves (planProxyHandover); resolves when the old one is gone. Not graceful: SIGTERM (drain), then
   * a new one (refused connects in between). Needs a started supervisor.
   */
  async restart(opts: { graceful: boolean; reason?: string }): Promise<void> {
    if (this.#stopped) throw new Error('proxy supervisor stopped: nothing to restart');
    const reason = opts.reason ?? 'requested';
    if (this.#handover) { await this.#handover; return; }
    const child = this.#child;
    if (!opts.graceful || !child?.pid || child.exitCode !== null || child.signalCode !== null) {
      this.#log.info('restarting the proxy (not graceful)', { reason, pid: child?.pid });
      if (child?.pid) { this.#retire(child); await this.#terminate(this.#retiringOf(child)); }
      if (!this.#child || this.#child === child) { this.#child = undefined; this.#spawn(); }
      return;
    }
    this.#handover = this.#replace(this.#retire(child), reason).finally(() => { this.#handover = undefined; });
    await this.#handover;
  }

  /**
   * New launch settings (workers, trust domain, drain deadline): applied by a graceful restart when they differ from
   * what the running proxy was started with (planProxyRestart); resolves when done.
   */
  async reconfigure(changes: Partial<Pick<ProxySupervisorOptions, 'workers' | 'trustDomain' | 'drainTimeoutMs' | 'mark'>>): Promise<void> {
    Object.assign(this.#o, changes);
    const plan = planProxyRestart(this.#launched, this.#launch());
    if (!plan.restart || this.#stopped) return;
    await this.restart({ graceful: true, reason: plan.reasons.join(', ') });
  }

  /** Resolves when the proxy serves (after its first update). */
  whenServing(): Promise<void> {
    if (this.#status.state === 'serving') return Promise.resolve();
    return new Promise((r) => this.#readyWaiters.push(r));
  }

  /**
   * Hands `u` to the proxy; resolves once every worker has it. A proxy that restarts later gets the latest update
   * at once. Rejects when the proxy refuses it (its previous config stays) or does not answer in time.
   */
  apply(u: ProxyUpdate): Promise<void> {
    this.#latest = u;
    this.#status.pending = u.version;
    return this.#send(u);
  }

  /**
   * Stops the proxy: SIGTERM, and it drains (open requests finish, up to its drain deadline); killed if it has not
   * gone `graceMs` later (default: the drain deadline + 5 s). Proxies still draining from a handover are waited for.
   */
  async stop(graceMs = this.#drainTimeoutMs + 5000): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#oomTimer) clearInterval(this.#oomTimer);
    if (this.#signalHandler && this.#o.restartSignal) process.off(this.#o.restartSignal, this.#signalHandler);
    this.#onHandoverExit?.('supervisor stopped');
    const child = this.#child;
    this.#status.state = 'stopped';
    for (const w of this.#waiters.values()) { clearTimeout(w.timer); w.reject(new Error('proxy supervisor stopped')); }
    this.#waiters.clear();
    const draining = [...this.#retiring].map((r) => this.#terminate(r, graceMs));
    if (child && child.exitCode === null && child.signalCode === null) draining.push(this.#terminate(this.#retire(child), graceMs));
    await Promise.all(draining);
    rmSync(this.pidFile, { force: true });
    if (this.#cgroup && proxyCgroupPids(this.#cgroup).length === 0) removeProxyCgroup(this.#cgroup);
  }

  /**
   * Makes the proxy's memory cgroup when a limit is configured (proxy-cgroup.ts) and starts watching its OOM-kill
   * counter. A limit that cannot be applied is reported (status, log) and the proxy runs without it: refusing to run
   * the proxy would take the mesh down over a resource setting.
   */
  #setUpCgroup(): void {
    const limit = this.#o.memoryMaxBytes;
    if (limit === undefined) return;
    const read = (f: string): string | undefined => { try { return readFileSync(f, 'utf8'); } catch { return undefined; } };
    const nodeCgroup = this.#o.nodeCgroup ?? '';
    const planned = planProxyCgroup({
      nodeCgroup, nodeControllers: nodeCgroup ? read(join(nodeCgroup, 'cgroup.controllers')) : undefined,
      procSelfCgroup: read('/proc/self/cgroup') ?? '', procMounts: read('/proc/mounts') ?? '',
      scope: basenameOfPid(this.pidFile),
    }, limit);
    if ('problem' in planned) {
      this.#status.memory = { limitBytes: limit, oomKills: 0, problem: planned.problem };
      this.#log.error('proxy memory limit not applied', { problem: planned.problem });
      return;
    }
    try {
      applyProxyCgroup(planned.plan);
    } catch (err) {
      this.#status.memory = { limitBytes: limit, oomKills: 0, problem: describeError(err) };
      this.#log.error('proxy memory limit not applied', { cgroup: planned.plan.dir, error: describeError(err) });
      return;
    }
    this.#cgroup = planned.plan;
    this.#oomSeen = readOomKills(planned.plan) ?? 0;
    this.#status.memory = { cgroup: planned.plan.dir, hierarchy: planned.plan.hierarchy, limitBytes: limit, oomKills: 0 };
    this.#log.info('proxy memory limit in force', { cgroup: planned.plan.dir, hierarchy: planned.plan.hierarchy, limitBytes: limit });
    this.#oomTimer = setInterval(() => this.#checkOom(), this.#o.oomPollMs ?? 250);
    this.#oomTimer.unref();
  }

  /**
   * Reads the cgroup's OOM-kill counter; on a new kill the whole proxy goes (SIGKILL to the proxy processes in its
   * cgroup and their workers) and is restarted as after a crash. cgroup v2 does that itself (memory.oom.group); on v1 the
   * kernel kills one process, often a worker, and a proxy left restarting a worker under the same memory pressure
   * would serve some connections and drop others: one clear restart is easier to reason about and to alert on.
   */
  #checkOom(): void {
    const cg = this.#cgroup;
    if (!cg) return;
    const n = readOomKills(cg);
    if (n === undefined || n <= this.#oomSeen) return;
    const delta = n - this.#oomSeen;
    this.#oomSeen = n;
    const mem = this.#status.memory!;
    this.#status.memory = { ...mem, oomKills: mem.oomKills + delta, lastOomKill: new Date().toISOString() };
    // Only proxies (ours, or a previous agent's being replaced) and their workers: never whatever else was put there.
    const proxies = new Set([...(this.#child?.pid ? [this.#child.pid] : []), ...[...this.#retiring].map((r) => r.pid)]);
    const pids = proxyCgroupPids(cg).filter((pid) => proxies.has(pid) || proxies.has(parentPid(pid) ?? -1));
    this.#log.error('proxy OOM-killed at its cgroup memory limit: restarting it; mesh flows are refused until it is back', { cgroup: cg.dir, limitBytes: cg.limitBytes, oomKills: n, killing: pids.join(',') });
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }

  /** Moves `child` from "the proxy" to "draining": its exit no longer counts as a crash. */
  #retire(child: ChildProcess): Retiring {
    const r: Retiring = {
      pid: child.pid!,
      exited: child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((res) => child.once('exit', () => res())),
    };
    this.#retiring.add(r);
    void r.exited.then(() => this.#retiring.delete(r));
    if (this.#child === child) this.#child = undefined;
    this.#retiredChildren.set(child, r);
    return r;
  }

  #retiredChildren = new WeakMap<ChildProcess, Retiring>();
  #retiringOf(child: ChildProcess): Retiring { return this.#retiredChildren.get(child)!; }

  /** SIGTERM (the proxy drains), then SIGKILL after `graceMs`; resolves when it is gone. */
  async #terminate(r: Retiring, graceMs = this.#drainTimeoutMs + 5000): Promise<void> {
    try { process.kill(r.pid, 'SIGTERM'); } catch { return; }
    const killer = setTimeout(() => { try { process.kill(r.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
    await r.exited;
    clearTimeout(killer);
  }

  /** The graceful handover (planProxyHandover): new proxy serving first, then the old one drains. */
  async #replace(old: Retiring, reason: string, readyTimeoutMs = HANDOVER_READY_TIMEOUT_MS): Promise<void> {
    const plan = planProxyHandover({ drainTimeoutMs: this.#drainTimeoutMs, readyTimeoutMs });
    const t0 = Date.now();
    this.#status.handover = { reason, since: new Date(t0).toISOString(), oldPid: old.pid };
    this.#log.info('graceful proxy restart: starting the new proxy next to the old one', { reason, oldPid: old.pid });
    let outcome: 'graceful' | 'fell-back' | 'failed' = 'graceful';
    let readyMs = 0;
    try {
      const failed = await this.#spawnAndAwaitServing(plan.readyTimeoutMs);
      readyMs = Date.now() - t0;
      if (failed !== undefined) {
        if (this.#stopped) { outcome = 'failed'; return; }
        // Most likely an old proxy without SO_REUSEPORT holds the ports: it has to go first.
        outcome = 'fell-back';
        this.#log.warn('the new proxy could not start next to the old one; stopping the old one first (mesh connects are refused until the new one serves)', { why: failed, oldPid: old.pid });
        await this.#terminate(old, plan.killOldAfterMs);
        if (!this.#stopped) { this.#spawn(); await this.whenServing(); }
        return;
      }
      this.#log.info('new proxy serving; draining the old one', { newPid: this.#child?.pid, oldPid: old.pid, readyMs });
      await this.#terminate(old, plan.killOldAfterMs);
    } finally {
      const drainedMs = Date.now() - t0;
      this.#status.handover = undefined;
      this.#status.lastHandover = { reason, oldPid: old.pid, newPid: this.#child?.pid, readyMs, drainedMs, outcome };
      this.#log.info('graceful proxy restart done', { ...this.#status.lastHandover });
    }
  }

  /** The workers of `child` as its pool reports them; undefined when it does not answer within `timeoutMs`. */
  #queryWorkers(child: ChildProcess, timeoutMs: number): Promise<ProxySample['workers'] | undefined> {
    if (!child.connected) return Promise.resolve(undefined);
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.#statusWaiters.delete(seq); resolve(undefined); }, timeoutMs);
      this.#statusWaiters.set(seq, (w) => { clearTimeout(timer); resolve(w); });
      const msg: ToProxy = { t: 'status', seq };
      child.send(msg, (err) => { if (err) { clearTimeout(timer); this.#statusWaiters.delete(seq); resolve(undefined); } });
    });
  }

  /** Spawns a proxy and waits until it serves the latest update; undefined on success, else why it did not. */
  async #spawnAndAwaitServing(timeoutMs: number): Promise<string | undefined> {
    this.#status.state = 'starting';
    const exited = new Promise<string>((resolve) => { this.#onHandoverExit = resolve; });
    this.#spawn();
    const child = this.#child;
    const timer = new Promise<string>((resolve) => { if (Number.isFinite(timeoutMs)) setTimeout(() => resolve(`not serving ${timeoutMs} ms after start`), timeoutMs).unref(); });
    const served = (async () => {
      await this.whenServing();
      // Serving means listening with the first update; the latest one must be in force too before the old one goes.
      if (this.#latest && this.#status.pending !== undefined) {
        while (this.#status.pending !== undefined && this.#child === child) await sleep(20);
      }
      // And its workers must be responsive (computeProxySettled).
      const samples: ProxySample[] = [];
      while (this.#child === child) {
        const workers = await this.#queryWorkers(child!, 2000);
        if (workers) samples.push({ atMs: Date.now(), workers });
        if (computeProxySettled(samples, { settleMs: SETTLE_MS, maxSilentMs: 1500 })) break;
        await sleep(250);
      }
      return undefined;
    })();
    try {
      const r = await Promise.race([served, exited, timer]);
      if (r !== undefined && child && this.#child === child) { this.#retire(child); await this.#terminate(this.#retiringOf(child), 2000); }
      return r;
    } finally {
      this.#onHandoverExit = undefined;
    }
  }

  #send(u: ProxyUpdate): Promise<void> {
    const child = this.#child;
    if (!child?.connected) return Promise.resolve(); // sent on the next start
    const seq = ++this.#seq;
    const msg: ToProxy = { t: 'apply', seq, config: u.config, identities: u.identities, pluginData: u.pluginData };
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(seq);
        reject(new Error(`proxy (pid ${child.pid}) did not acknowledge version ${u.version} within ${APPLY_TIMEOUT_MS} ms`));
      }, APPLY_TIMEOUT_MS);
      this.#waiters.set(seq, { resolve, reject, timer, version: u.version });
      child.send(msg, (err) => {
        if (!err) return;
        clearTimeout(timer);
        this.#waiters.delete(seq);
        reject(new Error(`sending version ${u.version} to the proxy failed: ${err.message}`));
      });
    });
  }

  /** What a proxy would be started with now. */
  #launch(): ProxyLaunch {
    const o = this.#o;
    const args = ['--node', o.nodeName, '--host', o.host, '--outbound-port', String(o.outboundPort), '--inbound-port', String(o.inboundPort), '--workers', String(o.workers), '--trust-domain', o.trustDomain, '--drain-timeout-ms', String(this.#drainTimeoutMs)];
    if (o.pinDir) args.push('--pin-dir', o.pinDir);
    if (o.fixedDst) args.push('--fixed-dst', o.fixedDst);
    if (o.mark) args.push('--mark', String(o.mark));
    return { args, entry: o.entry ?? ENTRY };
  }

  #spawn(): void {
    if (this.#stopped) return;
    const launch = this.#launch();
    // Heap flags of the primary (l7proxy/process-memory.ts): ~10-14 MB less RSS with a 10,000-service config.
    const child = fork(launch.entry, launch.args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced', execArgv: [...PRIMARY_EXEC_ARGV] });
    this.#launched = launch;
    this.#child = child;
    if (this.#latest) this.#status.pending = this.#latest.version;
    this.#startedAt = Date.now();
    this.#status = { ...this.#status, pid: child.pid, state: 'starting' };
    if (child.pid && this.#cgroup) {
      // Before its workers fork (once the first config arrives): they start in the cgroup too.
      try { moveIntoProxyCgroup(this.#cgroup, child.pid); } catch (err) { this.#log.error('proxy not moved into its memory cgroup', { pid: child.pid, cgroup: this.#cgroup.dir, error: describeError(err) }); }
    }
    if (child.pid) {
      // Atomic: a restarted agent reads it to find the proxy to hand over from; a torn pid names a wrong process.
      try { writeFileAtomicSync(this.pidFile, `${child.pid}\n`, { mode: 0o644, dirMode: 0o755 }); } catch (err) { this.#log.error('proxy pid file not written (a restarted agent will not find this proxy)', { error: describeError(err) }); }
    }
    this.#log.info('proxy started', { pid: child.pid });
    child.on('message', (m: FromProxy) => {
      if (this.#child === child || m.t === 'nm-telemetry') { this.#onMessage(m); return; }
      // A proxy being replaced still answers pushes sent to it before the handover: settle those, nothing else.
      if (m.t !== 'applied' && m.t !== 'apply-failed') return;
      const w = this.#waiters.get(m.seq);
      if (!w) return;
      this.#waiters.delete(m.seq);
      clearTimeout(w.timer);
      if (m.t === 'applied') w.resolve(); else w.reject(new Error(`proxy refused version ${w.version}: ${m.error}`));
    });
    child.on('error', (err) => this.#log.warn('proxy process error', { error: describeError(err) }));
    child.once('exit', (code, signal) => this.#onExit(child, code, signal));
    if (this.#latest) this.#send(this.#latest).catch((err: unknown) => this.#log.warn('proxy update after start failed', { error: describeError(err) }));
  }

  #onMessage(m: FromProxy): void {
    switch (m.t) {
      case 'ready':
        this.#status.state = 'serving';
        this.#status.workers = m.workers.length;
        this.#status.listeners = [`${this.#o.host}:${m.outboundPort}`, `${this.#o.host}:${this.#o.inboundPort}`];
        this.#log.info('proxy serving', { pid: m.pid, outboundPort: m.outboundPort, workers: m.workers.join(',') });
        for (const r of this.#readyWaiters.splice(0)) r();
        return;
      case 'applied': {
        const w = this.#waiters.get(m.seq);
        if (!w) return;
        this.#waiters.delete(m.seq);
        clearTimeout(w.timer);
        this.#status.applied = w.version;
        if (this.#status.pending === w.version) this.#status.pending = undefined;
        this.#status.lastError = undefined;
        w.resolve();
        return;
      }
      case 'apply-failed': {
        const w = this.#waiters.get(m.seq);
        this.#status.lastError = m.error;
        if (!w) return;
        this.#waiters.delete(m.seq);
        clearTimeout(w.timer);
        w.reject(new Error(`proxy refused version ${w.version}: ${m.error}`));
        return;
      }
      case 'fatal':
        this.#status.lastError = m.error;
        this.#log.error('proxy cannot run', { error: m.error });
        return;
      case 'status':
        this.#statusWaiters.get(m.seq)?.(m.workers);
        this.#statusWaiters.delete(m.seq);
        return;
      case 'nm-telemetry':
        try { this.#o.onTelemetry?.(m); } catch (err) { this.#log.warn('telemetry batch not recorded', { error: describeError(err) }); }
        return;
    }
  }

  #onExit(child: ChildProcess, code: number | null, signal: string | null): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    let why = signal ? `signal ${signal}` : `exit code ${code}`;
    // An OOM kill the poll has not seen yet is read now, so the exit is reported as what it was.
    this.#checkOom();
    const mem = this.#status.memory;
    if (mem?.lastOomKill && Date.now() - Date.parse(mem.lastOomKill) < 5000) why += ` (OOM-killed: cgroup memory limit ${mem.limitBytes} bytes)`;
    if (this.#onHandoverExit) {
      // A handover's new proxy died before serving: the handover decides what comes next (the old one still serves).
      this.#status = { ...this.#status, pid: undefined, state: 'down', lastExit: why };
      this.#onHandoverExit(`the new proxy exited (${why}) before serving`);
      return;
    }
    this.#status = { ...this.#status, pid: undefined, state: this.#stopped ? 'stopped' : 'down', lastExit: why };
    for (const [seq, w] of this.#waiters) { clearTimeout(w.timer); w.reject(new Error(`proxy exited (${why}) before acknowledging version ${w.version}`)); this.#waiters.delete(seq); }
    if (this.#stopped) return;
    const lived = Date.now() - this.#startedAt;
    const min = this.#o.restartMinMs ?? 200;
    this.#delayMs = lived > 60_000 || this.#delayMs === 0 ? min : Math.min(this.#delayMs * 2, this.#o.restartMaxMs ?? 2000);
    this.#status.restarts++;
    this.#log.warn('proxy exited; mesh flows are refused until it is back', { why, restartInMs: this.#delayMs });
    this.#timer = setTimeout(() => { this.#timer = undefined; this.#spawn(); }, this.#delayMs);
  }

  /** The pid of a proxy a previous agent left running for this node, if any (checked against its command line). */
  #findLeftover(): number | undefined {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    } catch {
      return undefined;
    }
    const cmd = Number.isInteger(pid) && pid > 1 ? cmdlineOf(pid) : undefined;
    // Only our own proxy (same entry point, same node): a recycled pid is someone else's process.
    if (!cmd || !cmd.includes(this.#o.entry ?? ENTRY) || !cmd.includes(`--node ${this.#o.nodeName} `) || (this.#o.pinDir && !cmd.includes(`--pin-dir ${this.#o.pinDir} `))) return undefined;
    return pid;
  }
}
