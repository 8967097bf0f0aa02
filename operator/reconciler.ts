/**
 * The operator's control loop, level-triggered: any change marks the world dirty; after a short coalescing
 * window (debounceMs, at most maxDelayMs after the first change) one reconcile recomputes everything from the
 * cache - compileMesh, computeNodeState for every node, computeStatuses - and writes only what differs from
 * what is stored. Changes arriving during a reconcile cause one more run after it. Errors retry with back-off;
 * a periodic resync re-checks everything even when nothing was heard.
 *
 * What it refuses to do: write anything as a non-leader (the fence is also checked before every request),
 * write anything before every informer has listed once, and write NodeStates from a stale view - while an
 * informer is failing the nodes keep their NodeStates, and after staleGraceMs the user objects' Programmed
 * turns Unknown (Unconfirmed) naming what cannot be confirmed.
 */
import type { NodeState } from '../crds/index.ts';
import { ExponentialBackoff, type BackoffOptions } from './backoff.ts';
import { systemRuntimeClock, type RuntimeClock } from './clock.ts';
import { compileMesh, type LastGood } from './compile-mesh.ts';
import { computeNodeState } from './compute-node-state.ts';
import { computeStatuses, type ObjectStatus } from './compute-status.ts';
import { describeError, type OperatorLogger } from './logger.ts';
import { applyNodeStatePlan, HashMemo, planNodeStateWrites, type NodeStateApi } from './reconcile-node-states.ts';
import type { ClusterCache } from './snapshot-cache.ts';
import { applyStatusWrites, markUnconfirmed, planStatusWrites, type StatusApi } from './status-writer.ts';

/** What the reconciler reads from the cluster cache (ClusterCache, or a fake in tests). */
export type ReconcilerCache = Pick<ClusterCache, 'allSynced' | 'unhealthy' | 'states' | 'snapshot' | 'nodeStates' | 'userObject'>;

/** Settings of the Reconciler. */
export interface ReconcilerOptions {
  cache: ReconcilerCache;
  nodeStateApi: NodeStateApi;
  statusApi: StatusApi;
  /** The leader fence (LeaderElector.isLeader). */
  isLeader: () => boolean;
  log: OperatorLogger;
  clock?: RuntimeClock;
  /** Coalescing window after a change. Default 100 ms. */
  debounceMs?: number;
  /** Longest a change waits under continuous churn. Default 1 s. */
  maxDelayMs?: number;
  /** Periodic full reconcile. Default 5 min. */
  resyncMs?: number;
  /** How long an informer may be failing before statuses say Unknown. Default 10 s. */
  staleGraceMs?: number;
  /** Back-off after a failed reconcile. Default 200 ms doubling to 30 s. */
  backoff?: BackoffOptions;
}

/** What /status shows of the loop. */
export interface ReconcilerStatus {
  reconciles: number;
  lastReconcileAt?: string;
  lastDurationMs?: number;
  /** From the first change a reconcile covered to the end of that reconcile. */
  lastLagMs?: number;
  /** Age of the oldest change not yet reconciled (0 when caught up). */
  pendingMs: number;
  /** Outcome of the last run: ok, not-leader, not-synced, unconfirmed, error. */
  lastOutcome?: string;
  lastError?: string;
  writes: { nodeStateCreates: number; nodeStateReplaces: number; nodeStateDeletes: number; statuses: number; conflicts: number; failures: number };
  nodes: number;
  nodeStates: number;
}

type Outcome = 'ok' | 'not-leader' | 'not-synced' | 'unconfirmed' | 'waiting-stale' | 'error';

/** Yields to the event loop when the current slice has run for a while, so I/O and timers stay responsive. */
class Slicer {
  #start = performance.now();
  async maybeYield(budgetMs = 20): Promise<void> {
    if (performance.now() - this.#start < budgetMs) return;
    await new Promise<void>((r) => setImmediate(r));
    this.#start = performance.now();
  }
}

/** The control loop. */
export class Reconciler {
  readonly #o: Required<Omit<ReconcilerOptions, 'backoff'>>;
  readonly #backoff: ExponentialBackoff;
  readonly #memo = new HashMemo();
  #lastGood: Map<string, LastGood> = new Map();
  #timer: unknown;
  #timerAt: number | undefined;
  #resyncTimer: unknown;
  #running: Promise<void> | undefined;
  #dirty = false;
  #pendingSince: number | undefined;
  #inBackoff = false;
  #stopped = false;
  #status: ReconcilerStatus = {
    reconciles: 0,
    pendingMs: 0,
    writes: { nodeStateCreates: 0, nodeStateReplaces: 0, nodeStateDeletes: 0, statuses: 0, conflicts: 0, failures: 0 },
    nodes: 0,
    nodeStates: 0,
  };

  constructor(opts: ReconcilerOptions) {
    this.#o = {
      clock: systemRuntimeClock,
      debounceMs: 100,
      maxDelayMs: 1_000,
      resyncMs: 300_000,
      staleGraceMs: 10_000,
      ...opts,
    };
    this.#backoff = new ExponentialBackoff({ initialMs: 200, ...opts.backoff });
  }

  /** Starts the periodic resync (changes are fed through notify). */
  start(): void {
    const tick = (): void => {
      this.notify();
      this.#resyncTimer = this.#o.clock.setTimeout(tick, this.#o.resyncMs);
    };
    this.#resyncTimer = this.#o.clock.setTimeout(tick, this.#o.resyncMs);
  }

  /** Stops the loop and waits for a reconcile in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#o.clock.clearTimeout(this.#timer);
    this.#o.clock.clearTimeout(this.#resyncTimer);
    await this.#running;
  }

  /**
   * Something changed. `urgent` (leadership gained, an informer healthy again) ends an error back-off: the
   * world the failed run saw is gone. Plain object changes wait it out, so a failing API is not hammered.
   */
  notify(opts: { urgent?: boolean } = {}): void {
    if (this.#stopped) return;
    const now = this.#o.clock.now();
    this.#dirty = true;
    this.#pendingSince ??= now;
    if (this.#running) return;
    if (this.#inBackoff && !opts.urgent) return;
    if (opts.urgent && this.#inBackoff) {
      this.#inBackoff = false;
      this.#o.clock.clearTimeout(this.#timer);
      this.#timerAt = undefined;
    }
    const at = Math.min(now + this.#o.debounceMs, this.#pendingSince + this.#o.maxDelayMs);
    this.#arm(Math.max(now, at));
  }

  /** For /status. */
  status(): ReconcilerStatus {
    return { ...this.#status, pendingMs: this.#pendingSince !== undefined ? this.#o.clock.now() - this.#pendingSince : 0, writes: { ...this.#status.writes } };
  }

  #arm(at: number): void {
    if (this.#timerAt !== undefined && this.#timerAt <= at) return;
    this.#o.clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timerAt = undefined;
      this.#running = this.#run().finally(() => {
        this.#running = undefined;
        if (this.#dirty && !this.#inBackoff && !this.#stopped) this.notify();
      });
    }, at - this.#o.clock.now());
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    this.#inBackoff = false;
    this.#dirty = false;
    const covered = this.#pendingSince;
    this.#pendingSince = undefined;
    const started = this.#o.clock.now();
    let outcome: Outcome;
    try {
      outcome = await this.#reconcile();
    } catch (err) {
      outcome = 'error';
      this.#status.lastError = describeError(err);
      this.#o.log.warn('reconcile failed; retrying', { error: this.#status.lastError });
    }
    const ended = this.#o.clock.now();
    this.#status.lastOutcome = outcome;
    if (outcome === 'ok' || outcome === 'unconfirmed') {
      this.#status.reconciles++;
      this.#status.lastReconcileAt = new Date(ended).toISOString();
      this.#status.lastDurationMs = ended - started;
      if (covered !== undefined) this.#status.lastLagMs = ended - covered;
      if (outcome === 'ok') this.#backoff.reset();
      return;
    }
    if (outcome === 'not-leader' || outcome === 'not-synced') return; // leadership/sync events notify again
    // error, or waiting for the stale grace period: run again later, keeping the changes pending.
    this.#pendingSince = Math.min(this.#pendingSince ?? covered ?? started, covered ?? started);
    this.#dirty = true;
    const delay = outcome === 'error' ? this.#backoff.next(ended) : this.#staleWaitMs(ended);
    this.#inBackoff = true;
    this.#arm(ended + delay);
  }

  #staleWaitMs(now: number): number {
    const since = this.#unhealthySince() ?? now;
    return Math.max(100, since + this.#o.staleGraceMs - now);
  }

  #unhealthySince(): number | undefined {
    const times = this.#o.cache.states().filter((s) => !s.healthy).map((s) => s.unhealthySince ?? this.#o.clock.now());
    return times.length ? Math.min(...times) : undefined;
  }

  async #reconcile(): Promise<Outcome> {
    const o = this.#o;
    if (!o.isLeader()) return 'not-leader';
    if (!o.cache.allSynced()) return 'not-synced';
    const slicer = new Slicer();
    const snapshot = o.cache.snapshot();
    const compiled = compileMesh(snapshot, this.#lastGood);
    this.#lastGood = compiled.lastGood;
    await slicer.maybeYield(0);
    const now = new Date(o.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const lookup = (kind: ObjectStatus['kind'], ns: string, name: string) => o.cache.userObject(kind, ns, name);
    const unhealthy = o.cache.unhealthy();
    if (unhealthy.length > 0) {
      const since = this.#unhealthySince() ?? o.clock.now();
      if (o.clock.now() - since < o.staleGraceMs) return 'waiting-stale';
      // NodeStates stay as they are; statuses say what cannot be confirmed.
      const why = `cannot confirm what the nodes have: the operator's watch of ${unhealthy.join(', ')} is failing since ${new Date(since).toISOString()}; nodes keep their last NodeState`;
      const statuses = computeStatuses(snapshot, compiled, o.cache.nodeStates(), { now }).map((s) => markUnconfirmed(s, lookup(s.kind, s.namespace, s.name)?.status, why, now));
      const sres = await applyStatusWrites(planStatusWrites(statuses, lookup), o.statusApi, { isLeader: o.isLeader, log: o.log });
      this.#countStatus(sres);
      if (sres.failed.length > 0) throw new Error(`${sres.failed.length} status write(s) failed, first: ${sres.failed[0]!.object}: ${sres.failed[0]!.error}`);
      return sres.aborted ? 'not-leader' : 'unconfirmed';
    }

    const existing = o.cache.nodeStates();
    const desired: NodeState[] = [];
    const nodeNames = [...new Set(snapshot.nodes.map((n) => n.metadata?.name ?? '').filter(Boolean))].sort();
    for (const node of nodeNames) {
      try {
        desired.push(...computeNodeState(snapshot, node, compiled));
      } catch (err) {
        // This node's state cannot be built (an entry larger than a shard): it keeps what it has.
        o.log.error('cannot compute NodeState; the node keeps its current one', { node, error: describeError(err) });
        desired.push(...existing.filter((s) => s.spec?.nodeName === node));
      }
      await slicer.maybeYield();
    }
    this.#status.nodes = nodeNames.length;
    const plan = planNodeStateWrites(desired, existing, this.#memo.storedHash);
    await slicer.maybeYield();
    const nres = await applyNodeStatePlan(plan, o.nodeStateApi, {
      isLeader: o.isLeader,
      log: o.log,
      storedHash: this.#memo.storedHash,
      onWrite: (verb) => {
        if (verb === 'create') this.#status.writes.nodeStateCreates++;
        else if (verb === 'replace') this.#status.writes.nodeStateReplaces++;
        else this.#status.writes.nodeStateDeletes++;
      },
    });
    this.#status.writes.conflicts += nres.conflicts;
    this.#status.writes.failures += nres.failed.length;
    if (nres.aborted) return 'not-leader';
    this.#memo.prune(new Set(desired.map((d) => d.metadata?.name ?? '')));

    // What the nodes have now: the cache with our confirmed writes laid over it.
    const stored = new Map(existing.map((s) => [s.metadata?.name ?? '', s]));
    for (const w of nres.written) stored.set(w.metadata?.name ?? '', w);
    for (const d of nres.deleted) stored.delete(d);
    this.#status.nodeStates = stored.size;
    const statuses = computeStatuses(snapshot, compiled, [...stored.values()], { now, desired });
    await slicer.maybeYield();
    const sres = await applyStatusWrites(planStatusWrites(statuses, lookup), o.statusApi, { isLeader: o.isLeader, log: o.log });
    this.#countStatus(sres);
    if (sres.aborted) return 'not-leader';
    const failures = [...nres.failed.map((f) => `NodeState ${f.name}: ${f.error}`), ...sres.failed.map((f) => `${f.object}: ${f.error}`)];
    if (failures.length > 0) throw new Error(`${failures.length} write(s) failed, first: ${failures[0]}`);
    this.#status.lastError = undefined;
    return 'ok';
  }

  #countStatus(s: { written: number; conflicts: number; failed: unknown[] }): void {
    this.#status.writes.statuses += s.written;
    this.#status.writes.conflicts += s.conflicts;
    this.#status.writes.failures += s.failed.length;
  }
}
