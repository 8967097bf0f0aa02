/**
 * The agent's side of the node proxy: starts the proxy process (agent/proxy/main.ts), replaces one a previous
 * agent left running, restarts it quickly when it dies (refused connects meanwhile: fail closed), and feeds it the
 * latest plan and certificates — also right after a restart, so a new proxy opens its listener with policy in
 * force. Health: the proxy's pid, state, restarts, the version it serves.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProxyConfig } from '../../l7proxy/config.ts';
import type { IdentityTable } from '../../l7proxy/workers.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { FromProxy, ToProxy } from './main.ts';
import type { TelemetryBatch } from './telemetry-relay.ts';
import type { MeshPluginData } from './worker-plugin.ts';

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
  /** The workers' telemetry batches (records for metrics and the access log). */
  onTelemetry?: (batch: TelemetryBatch) => void;
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
}

const ENTRY = fileURLToPath(new URL('./main.ts', import.meta.url));
const APPLY_TIMEOUT_MS = 20_000;

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

  constructor(o: ProxySupervisorOptions) {
    this.#o = o;
    this.#log = o.log;
  }

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
    return { ...this.#status };
  }

  /** Replaces a proxy a previous agent left, then starts ours (it listens once the first update arrives). */
  async start(): Promise<void> {
    await this.#replaceLeftover();
    this.#spawn();
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

  /** Stops the proxy (SIGTERM: drain), killing it if it has not gone after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    const child = this.#child;
    this.#status.state = 'stopped';
    for (const w of this.#waiters.values()) { clearTimeout(w.timer); w.reject(new Error('proxy supervisor stopped')); }
    this.#waiters.clear();
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.once('exit', () => { clearTimeout(kill); resolve(); });
      child.kill('SIGTERM');
    });
    rmSync(this.pidFile, { force: true });
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

  #spawn(): void {
    if (this.#stopped) return;
    const o = this.#o;
    const args = ['--node', o.nodeName, '--host', o.host, '--outbound-port', String(o.outboundPort), '--inbound-port', String(o.inboundPort), '--workers', String(o.workers), '--trust-domain', o.trustDomain];
    if (o.pinDir) args.push('--pin-dir', o.pinDir);
    if (o.fixedDst) args.push('--fixed-dst', o.fixedDst);
    if (o.mark) args.push('--mark', String(o.mark));
    const child = fork(o.entry ?? ENTRY, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced', execArgv: [] });
    this.#child = child;
    this.#startedAt = Date.now();
    this.#status = { ...this.#status, pid: child.pid, state: 'starting' };
    if (child.pid) {
      mkdirSync(dirname(this.pidFile), { recursive: true });
      writeFileSync(this.pidFile, `${child.pid}\n`);
    }
    this.#log.info('proxy started', { pid: child.pid });
    child.on('message', (m: FromProxy) => this.#onMessage(m));
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
        return;
      case 'nm-telemetry':
        try { this.#o.onTelemetry?.(m); } catch (err) { this.#log.warn('telemetry batch not recorded', { error: describeError(err) }); }
        return;
    }
  }

  #onExit(child: ChildProcess, code: number | null, signal: string | null): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    const why = signal ? `signal ${signal}` : `exit code ${code}`;
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

  /** A proxy from a previous agent still holds the ports: ask it to drain, then make sure it is gone. */
  async #replaceLeftover(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    } catch {
      return;
    }
    const cmd = Number.isInteger(pid) && pid > 1 ? cmdlineOf(pid) : undefined;
    // Only our own proxy (same entry point, same node): a recycled pid is someone else's process.
    if (!cmd || !cmd.includes(this.#o.entry ?? ENTRY) || !cmd.includes(`--node ${this.#o.nodeName} `) || (this.#o.pinDir && !cmd.includes(`--pin-dir ${this.#o.pinDir} `))) return;
    this.#log.info('replacing the proxy a previous agent left running', { pid });
    try { process.kill(pid, 'SIGTERM'); } catch { return; }
    const until = Date.now() + 5000;
    while (cmdlineOf(pid) !== undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    if (cmdlineOf(pid) !== undefined) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    while (cmdlineOf(pid) !== undefined && Date.now() < until + 2000) await new Promise((r) => setTimeout(r, 50));
  }
}
