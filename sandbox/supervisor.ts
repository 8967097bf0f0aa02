/**
 * Daemons the sandbox supervisor keeps running: each started by PID (in its own process group, inside a node
 * namespace when it belongs to a node), restarted with back-off when it dies, stopped by PID. Restart counts
 * appear in `nodemesh sandbox status`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';
import { readProcStat, stopOurProcess } from './process.ts';
import type { StateStore } from './state.ts';

/** One supervised daemon. */
export type DaemonSpec = {
  /** Unique name, e.g. `forwarder/node-1`, `agent/node-2`. */
  name: string;
  /** The node it belongs to, if any. */
  node?: string;
  /** Program and arguments. */
  argv: string[];
  /** Network namespace it runs in (via `ip netns exec`); the machine's own when unset. */
  netns?: string;
  env?: Record<string, string>;
  /** File its stdout and stderr go to. */
  logFile: string;
};

/** What `status` shows for a daemon. */
export type DaemonStatus = { name: string; node?: string; pid?: number; state: 'running' | 'backoff' | 'stopped'; restarts: number; lastExit?: string; since?: string };

/** Back-off before restart number n (0-based): 0.5 s doubling to 30 s. */
export function computeDaemonBackoffMs(consecutiveFailures: number): number {
  return Math.min(500 * 2 ** consecutiveFailures, 30_000);
}

/** Runs daemons with restart back-off. */
export class DaemonSupervisor {
  private readonly store: StateStore;
  private readonly log: Logger;
  private readonly daemons = new Map<string, Daemon>();

  constructor(store: StateStore, log: Logger) {
    this.store = store;
    this.log = log.child('daemons');
  }

  /** Adds and starts a daemon. */
  add(spec: DaemonSpec): void {
    if (this.daemons.has(spec.name)) throw new Error(`daemon ${spec.name} is already supervised`);
    const d = new Daemon(spec, this.store, this.log);
    this.daemons.set(spec.name, d);
    d.start();
  }

  /** Every daemon's status. */
  status(): DaemonStatus[] {
    return [...this.daemons.values()].map((d) => d.status());
  }

  /** Stops every daemon (SIGTERM to its group, SIGKILL after the grace period). */
  async stopAll(graceMs = 3000): Promise<void> {
    await Promise.all([...this.daemons.values()].map((d) => d.stop(graceMs)));
  }
}

class Daemon {
  private readonly spec: DaemonSpec;
  private readonly store: StateStore;
  private readonly log: Logger;
  private child: ChildProcess | undefined;
  private pid: number | undefined;
  private startTime: string | undefined;
  private restarts = 0;
  private failures = 0;
  private lastExit: string | undefined;
  private since: Date | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private out: WriteStream | undefined;

  constructor(spec: DaemonSpec, store: StateStore, log: Logger) {
    this.spec = spec;
    this.store = store;
    this.log = log;
  }

  start(): void {
    if (this.stopped) return;
    this.out ??= createWriteStream(this.spec.logFile, { flags: 'a' });
    const argv = this.spec.netns ? ['ip', 'netns', 'exec', this.spec.netns, ...this.spec.argv] : this.spec.argv;
    const child = spawn(argv[0] as string, argv.slice(1), { env: { ...process.env, ...this.spec.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    this.since = new Date();
    child.stdout?.pipe(this.out, { end: false });
    child.stderr?.pipe(this.out, { end: false });
    const pid = child.pid;
    this.pid = pid;
    if (pid !== undefined) {
      readProcStat(pid).then(async (st) => {
        if (!st || this.pid !== pid) return;
        this.startTime = st.startTime;
        await this.store.record({ kind: 'process', pid, startTime: st.startTime, role: `daemon:${this.spec.name}` });
      }).catch((err: unknown) => this.log.warn('could not record daemon pid', { daemon: this.spec.name, error: describeError(err) }));
    }
    child.on('error', (err) => this.exited(`could not start: ${err.message}`));
    child.on('exit', (code, signal) => this.exited(signal ? `signal ${signal}` : `exit ${code}`));
  }

  private exited(how: string): void {
    if (!this.child) return;
    const pid = this.pid;
    const ranMs = Date.now() - (this.since?.getTime() ?? Date.now());
    this.child = undefined;
    this.pid = undefined;
    this.lastExit = how;
    if (pid !== undefined) this.store.forget((e) => e.kind === 'process' && e.pid === pid).catch(() => {});
    if (this.stopped) return;
    this.failures = ranMs > 60_000 ? 0 : this.failures + 1;
    const delay = computeDaemonBackoffMs(Math.max(0, this.failures - 1));
    this.log.warn('daemon exited, restarting', { daemon: this.spec.name, how, inMs: delay });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.restarts++;
      this.start();
    }, delay);
  }

  status(): DaemonStatus {
    return {
      name: this.spec.name, node: this.spec.node, pid: this.pid, restarts: this.restarts, lastExit: this.lastExit,
      state: this.stopped ? 'stopped' : this.child ? 'running' : 'backoff', since: this.since?.toISOString(),
    };
  }

  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const pid = this.pid;
    const st = pid !== undefined ? (this.startTime ?? (await readProcStat(pid))?.startTime) : undefined;
    if (pid !== undefined && st !== undefined) await stopOurProcess(pid, st, graceMs);
    await new Promise<void>((r) => (this.out ? this.out.end(() => r()) : r()));
  }
}
