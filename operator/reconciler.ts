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
import { CompileMemo, compileMesh, type LastGood } from './compile-mesh.ts';
import { computeNodeState, NodeStateMemo } from './compute-node-state.ts';
import { computeStatuses, type ObjectStatus } from './compute-status.ts';
import { describeError, type OperatorLogger } from './logger.ts';
import { applyNodeStatePlan, HashMemo, planNodeStateWrites, type NodeStateApi } from './reconcile-node-states.ts';
import { planLastGoodRecord, restoreLastGood, type LastGoodStore } from './last-good-store.ts';
import { canonicalJson } from './canonical-json.ts';
import type { ClusterCache } from './snapshot-cache.ts';
import { applyStatusWrites, markUnconfirmed, planStatusWrites, sameStatus, type StatusApi, type UserObject } from './status-writer.ts';

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
  /** Coalescing window after a change. Default 25 ms. */
  debounceMs?: number;
  /** Longest a change waits under continuous churn. Default 1 s. */
  maxDelayMs?: number;
  /** Periodic full reconcile. Default 5 min. */
  resyncMs?: number;
  /** How long an informer may be failing before statuses say Unknown. Default 10 s. */
  staleGraceMs?: number;
  /** Back-off after a failed reconcile. Default 200 ms doubling to 30 s. */
  backoff?: BackoffOptions;
  /** Where the last good forms of invalid objects survive restarts (last-good-store.ts); none: memory only. */
  lastGoodStore?: LastGoodStore;
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
  /** Where the last completed run spent its time (ms): compile, per-node NodeStates, their writes, statuses. */
  lastPhasesMs?: { compile: number; nodeStates: number; nodeStateWrites: number; statuses: number; statusWrites: number; total: number; cpu: number };
  /** Outcome of the last run: ok, not-leader, not-synced, unconfirmed, error. */
  lastOutcome?: string;
  lastError?: string;
  writes: { nodeStateCreates: number; nodeStateReplaces: number; nodeStateDeletes: number; statuses: number; conflicts: number; failures: number };
  nodes: number;
  nodeStates: number;
}

/** Informers of the user kinds, whose status this operator writes. */
const USER_INFORMERS = new Set(['httpRoutes', 'meshTLSPolicies', 'trafficPolicies', 'authorizationPolicies']);

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
  readonly #o: Required<Omit<ReconcilerOptions, 'backoff' | 'lastGoodStore'>> & Pick<ReconcilerOptions, 'lastGoodStore'>;
  readonly #backoff: ExponentialBackoff;
  readonly #memo = new HashMemo();
  /** Compiled pieces and serialized NodeState entries kept between runs, so a change costs what it touches. */
  readonly #compileMemo = new CompileMemo();
  readonly #nodeStateMemo = new NodeStateMemo();
  #lastGood: Map<string, LastGood> = new Map();
  /** Updates of NodeStates and user objects heard during a run, possibly our own writes coming back. */
  #echoCandidates: Array<{ informer: string; obj: unknown }> = [];
  /** Statuses written by the last run that wrote any, by kind/namespace/name, until their watch event comes back. */
  #statusWritten = new Map<string, { uid: string | undefined; generation: number | undefined; status: unknown }>();
  /** The persisted last good record was read in this leadership term (reset when leadership is lost). */
  #lastGoodLoaded = false;
  /** Canonical JSON of the record as last saved (or loaded), so an unchanged record is not written again. */
  #lastGoodSaved: string | undefined;
  /** The store answered 403: persistence is off until restart (reported once). */
  #lastGoodForbidden = false;
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
      debounceMs: 25,
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

  /**
   * An informer event. The NodeState a reconcile just wrote comes back as a watch event at the version it
   * wrote: that is no news (the run already laid the write over its view), so it does not start another run
   * - at 10,000 Services that run would cost as much as the change itself. Deletes always count.
   */
  onInformerChange(informer: string, type: 'add' | 'update' | 'delete', obj?: unknown): void {
    if (type !== 'delete' && obj && (informer === 'nodeStates' || USER_INFORMERS.has(informer))) {
      // During a run our own writes come back before the run has recorded them: decide after the run.
      if (this.#running) {
        this.#echoCandidates.push({ informer, obj });
        return;
      }
      if (this.#isOwnEcho(informer, obj)) return;
    }
    this.notify();
  }

  #isOwnEcho(informer: string, obj: unknown): boolean {
    return informer === 'nodeStates' ? this.#memo.knows(obj as NodeState) : this.#isOwnStatusEcho(obj as UserObject);
  }

  /**
   * The same for a status this operator just wrote: same generation (so the same spec) and the very status we
   * wrote. Nothing the compile reads changed. Each write is recognised once.
   */
  #isOwnStatusEcho(o: UserObject): boolean {
    const key = `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
    const mine = this.#statusWritten.get(key);
    if (!mine || mine.uid !== o.metadata?.uid || mine.generation !== o.metadata?.generation || !sameStatus(o.status, mine.status)) return false;
    this.#statusWritten.delete(key);
    return true;
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
        const candidates = this.#echoCandidates;
        this.#echoCandidates = [];
        if (candidates.some((c) => !this.#isOwnEcho(c.informer, c.obj))) this.notify();
        else if (this.#dirty && !this.#inBackoff && !this.#stopped) this.notify();
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
    if (outcome === 'not-leader') this.#lastGoodLoaded = false; // another leader may have saved a newer record
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
    const t0 = performance.now();
    // CPU of the whole process over the run (GC threads and informer parsing interleaved with it included):
    // what the run cost, less sensitive to a busy machine than its wall time.
    const cpu0 = process.cpuUsage();
    const snapshot = o.cache.snapshot();
    if (!this.#lastGoodLoaded) await this.#loadLastGood(snapshot);
    const compiled = compileMesh(snapshot, this.#lastGood, this.#compileMemo);
    this.#lastGood = compiled.lastGood;
    // Saved before any NodeState is written from it, so a restart right after finds it.
    const lastGoodFailure = await this.#saveLastGood(compiled);
    const t1 = performance.now();
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
        desired.push(...computeNodeState(snapshot, node, compiled, this.#nodeStateMemo));
      } catch (err) {
        // This node's state cannot be built (an entry larger than a shard): it keeps what it has.
        o.log.error('cannot compute NodeState; the node keeps its current one', { node, error: describeError(err) });
        desired.push(...existing.filter((s) => s.spec?.nodeName === node));
      }
      await slicer.maybeYield();
    }
    this.#nodeStateMemo.retainNodes(new Set(nodeNames));
    this.#status.nodes = nodeNames.length;
    const plan = planNodeStateWrites(desired, existing, this.#memo.storedHash);
    const t2 = performance.now();
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
    for (const w of nres.written) if (w.spec?.contentHash) this.#memo.remember(w, w.spec.contentHash);

    const t3 = performance.now();
    // What the nodes have now: the cache with our confirmed writes laid over it.
    const stored = new Map(existing.map((s) => [s.metadata?.name ?? '', s]));
    for (const w of nres.written) stored.set(w.metadata?.name ?? '', w);
    for (const d of nres.deleted) stored.delete(d);
    this.#status.nodeStates = stored.size;
    const statuses = computeStatuses(snapshot, compiled, [...stored.values()], { now, desired });
    const statusWrites = planStatusWrites(statuses, lookup);
    const t4 = performance.now();
    await slicer.maybeYield();
    const sres = await applyStatusWrites(statusWrites, o.statusApi, { isLeader: o.isLeader, log: o.log });
    this.#countStatus(sres);
    if (statusWrites.length > 0) {
      this.#statusWritten = new Map(statusWrites.map((w) => [`${w.target.kind}/${w.target.namespace}/${w.target.name}`, { uid: w.current.metadata?.uid, generation: w.current.metadata?.generation, status: w.target.status }]));
    }
    const t5 = performance.now();
    const ms = (x: number): number => Math.round(x * 10) / 10;
    const cpu = process.cpuUsage(cpu0);
    this.#status.lastPhasesMs = { compile: ms(t1 - t0), nodeStates: ms(t2 - t1), nodeStateWrites: ms(t3 - t2), statuses: ms(t4 - t3), statusWrites: ms(t5 - t4), total: ms(t5 - t0), cpu: ms((cpu.user + cpu.system) / 1000) };
    o.log.debug('reconciled', { ...this.#status.lastPhasesMs, nodeStatesWritten: nres.written.length, statusesWritten: sres.written });
    if (sres.aborted) return 'not-leader';
    const failures = [...nres.failed.map((f) => `NodeState ${f.name}: ${f.error}`), ...sres.failed.map((f) => `${f.object}: ${f.error}`), ...(lastGoodFailure ? [lastGoodFailure] : [])];
    if (failures.length > 0) throw new Error(`${failures.length} write(s) failed, first: ${failures[0]}`);
    this.#status.lastError = undefined;
    return 'ok';
  }

  /**
   * Reads the persisted last good forms (once per leadership term). A read failure fails the run: compiling
   * without them could drop a last good form from the nodes, so nothing is written until it can be read.
   */
  async #loadLastGood(snapshot: ReturnType<ReconcilerCache['snapshot']>): Promise<void> {
    const store = this.#o.lastGoodStore;
    if (!store || this.#lastGoodForbidden) {
      this.#lastGoodLoaded = true;
      return;
    }
    let record: unknown;
    try {
      record = await store.load();
    } catch (err) {
      if ((err as { code?: number }).code === 403) {
        this.#forbidLastGood(err);
        this.#lastGoodLoaded = true;
        return;
      }
      throw new Error(`cannot read the persisted last good forms, so nothing is written yet: ${describeError(err)}`, { cause: err });
    }
    const { lastGood, ignored } = restoreLastGood(record, snapshot);
    for (const [uid, lg] of lastGood) {
      const mine = this.#lastGood.get(uid);
      if (!mine || mine.kind !== lg.kind || mine.generation < lg.generation) this.#lastGood.set(uid, lg);
    }
    if (lastGood.size > 0 || ignored.length > 0) this.#o.log.info('loaded the persisted last good forms', { restored: lastGood.size, ignored: ignored.slice(0, 10) });
    this.#lastGoodSaved = record === undefined ? undefined : canonicalJson(record);
    this.#lastGoodLoaded = true;
  }

  /** Persists the record when it changed; returns a failure to report (the run is then retried). */
  async #saveLastGood(compiled: ReturnType<typeof compileMesh>): Promise<string | undefined> {
    const store = this.#o.lastGoodStore;
    if (!store || this.#lastGoodForbidden) return undefined;
    const { record, dropped } = planLastGoodRecord(compiled);
    const text = canonicalJson(record);
    if (text === this.#lastGoodSaved || (this.#lastGoodSaved === undefined && record.entries.length === 0)) return undefined;
    if (!this.#o.isLeader()) return undefined;
    try {
      await store.save(record);
      this.#lastGoodSaved = text;
      if (dropped.length > 0) this.#o.log.warn('last good forms left out of the persisted record (over its size budget); a restart treats them as never compiled', { dropped: dropped.slice(0, 10) });
      return undefined;
    } catch (err) {
      if ((err as { code?: number }).code === 403) {
        this.#forbidLastGood(err);
        return undefined;
      }
      return `persisting the last good forms: ${describeError(err)}`;
    }
  }

  #forbidLastGood(err: unknown): void {
    this.#lastGoodForbidden = true;
    this.#o.log.error('the last good forms cannot be persisted (403: the operator may not use its ConfigMap); after a restart, objects invalid by then are compiled as never valid', { error: describeError(err) });
  }

  #countStatus(s: { written: number; conflicts: number; failed: unknown[] }): void {
    this.#status.writes.statuses += s.written;
    this.#status.writes.conflicts += s.conflicts;
    this.#status.writes.failures += s.failed.length;
  }
}
