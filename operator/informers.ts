/**
 * Informers over @kubernetes/client-node's ListWatch, made to survive what the bare one does not:
 *   - events arrive through KubeRest.watch (kube-rest.ts), which speaks client-node's Watch interface;
 *   - client-node's ListWatch relists by itself on 410 Gone (an ERROR event or an HTTP 410) and diffs the
 *     new list against its cache, so deletes missed while disconnected come out as delete events;
 *   - on any other error it emits `error` and stops for good: here it is restarted with client-go's back-off
 *     (800 ms doubling to 30 s, jitter, reset after 2 min healthy), resuming the watch from the last
 *     resourceVersion (a compacted one gives 410, hence a relist);
 *   - a watch that ends as soon as it starts (kubernetes-client/javascript#1933) counts as an error after 10
 *     reconnects in 10 s instead of spinning; a watch silent for longer than its server timeout is restarted
 *     (#301, #1496); lists have a deadline;
 *   - an InformerGroup probes the API server (/version) while informers wait in back-off and wakes them as soon
 *     as it answers again after an outage, so recovery does not wait out a 30 s back-off (still no storm: one
 *     probe per interval).
 * Informers report `synced` (a list completed at least once) and `healthy` (no error since the last list or
 * watch start), which the reconciler uses to decide what it may write.
 */
import { ListWatch, type KubernetesListObject, type KubernetesObject, type Watch } from '@kubernetes/client-node';
import { ExponentialBackoff, withTimeout, type BackoffOptions } from './backoff.ts';
import { systemRuntimeClock, type RuntimeClock } from './clock.ts';
import type { KubeRest } from './kube-rest.ts';
import { describeError, type OperatorLogger } from './logger.ts';

/** What to watch. */
export interface InformerSpec<T extends KubernetesObject> {
  /** Short name for logs and /status, e.g. "pods". */
  name: string;
  /** Collection path, e.g. /api/v1/pods or /apis/nodemesh.io/v1alpha1/nodestates. */
  path: string;
  /** The list call for the same collection (all namespaces). */
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
}

/** Settings shared by informers. */
export interface InformerOptions {
  log: OperatorLogger;
  clock?: RuntimeClock;
  backoff?: BackoffOptions;
  /** Server-side watch timeout; spread over [300, 600) s by default like client-go's reflector. */
  watchTimeoutSeconds?: number;
  /** Deadline of one list call. Default 60 s. */
  listTimeoutMs?: number;
}

/** One informer's health, for /status and the reconciler. */
export interface InformerState {
  name: string;
  synced: boolean;
  healthy: boolean;
  objects: number;
  resourceVersion: string;
  lists: number;
  restarts: number;
  errors: number;
  lastError?: string;
  lastErrorAt?: string;
  /** ms since epoch of the first error of the current unhealthy period. */
  unhealthySince?: number;
  waitingMs?: number;
}

/** Kind of change. */
export type ChangeType = 'add' | 'update' | 'delete';

/** A self-restarting list+watch cache of one collection. */
export class ResilientInformer<T extends KubernetesObject> {
  readonly name: string;
  readonly #rest: KubeRest;
  readonly #spec: InformerSpec<T>;
  readonly #log: OperatorLogger;
  readonly #clock: RuntimeClock;
  readonly #backoff: ExponentialBackoff;
  readonly #timeoutSeconds: number;
  readonly #listTimeoutMs: number;
  readonly #onChange: (type: ChangeType, obj: T) => void;
  readonly #onState: () => void;
  #lw: ListWatch<T> | undefined;
  #stopped = false;
  #synced = false;
  #healthy = false;
  #errors = 0;
  #lists = 0;
  #restarts = 0;
  #lastError: string | undefined;
  #lastErrorAt: number | undefined;
  #unhealthySince: number | undefined;
  #retryTimer: unknown;
  #retryAt: number | undefined;
  #connects: number[] = [];
  #lastActivity = 0;
  #watchdog: NodeJS.Timeout | undefined;

  constructor(rest: KubeRest, spec: InformerSpec<T>, opts: InformerOptions & { onChange: (type: ChangeType, obj: T) => void; onState?: () => void }) {
    this.name = spec.name;
    this.#rest = rest;
    this.#spec = spec;
    this.#log = opts.log;
    this.#clock = opts.clock ?? systemRuntimeClock;
    this.#backoff = new ExponentialBackoff(opts.backoff);
    this.#timeoutSeconds = opts.watchTimeoutSeconds ?? Math.floor(300 + Math.random() * 300);
    this.#listTimeoutMs = opts.listTimeoutMs ?? 60_000;
    this.#onChange = opts.onChange;
    this.#onState = opts.onState ?? (() => {});
  }

  /** Lists and starts watching; errors are retried with back-off from here on. */
  start(): void {
    if (this.#lw) return;
    // Query parameters on the path reach the watch request only (ListWatch adds watch, resourceVersion, selectors).
    const sep = this.#spec.path.includes('?') ? '&' : '?';
    const path = `${this.#spec.path}${sep}timeoutSeconds=${this.#timeoutSeconds}&allowWatchBookmarks=true`;
    // KubeRest speaks client-node's Watch interface (see kube-rest.ts for why it replaces client-node's Watch).
    const lw = new ListWatch<T>(path, this.#rest as unknown as Watch, () => this.#list(), false, this.#spec.labelSelector);
    lw.on('add', (o) => this.#event('add', o));
    lw.on('update', (o) => this.#event('update', o));
    lw.on('delete', (o) => this.#event('delete', o));
    lw.on('connect', () => this.#connected());
    lw.on('error', (err) => this.#failed(err));
    this.#lw = lw;
    this.#watchdog = setInterval(() => this.#checkSilence(), 30_000);
    this.#watchdog.unref();
    this.#begin();
  }

  /** Stops watching; the cache stays readable. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#retryTimer);
    if (this.#watchdog) clearInterval(this.#watchdog);
    await this.#lw?.stop();
  }

  /** Every cached object. */
  list(): readonly T[] {
    return this.#lw?.list() ?? [];
  }

  /** One cached object. */
  get(name: string, namespace?: string): T | undefined {
    return this.#lw?.get(name, namespace);
  }

  /** A list completed at least once. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Synced, and no error since the last list or watch start. */
  get healthy(): boolean {
    return this.#synced && this.#healthy;
  }

  /** Waiting in back-off before the next try. */
  get waiting(): boolean {
    return this.#retryAt !== undefined;
  }

  /** First error of the current unhealthy period (ms since epoch), undefined while healthy. */
  get unhealthySince(): number | undefined {
    return this.#unhealthySince;
  }

  /** For /status. */
  state(): InformerState {
    return {
      name: this.name,
      synced: this.#synced,
      healthy: this.healthy,
      objects: this.list().length,
      resourceVersion: this.#lw?.latestResourceVersion() ?? '',
      lists: this.#lists,
      restarts: this.#restarts,
      errors: this.#errors,
      ...(this.#lastError ? { lastError: this.#lastError, lastErrorAt: new Date(this.#lastErrorAt!).toISOString() } : {}),
      ...(this.#unhealthySince !== undefined ? { unhealthySince: this.#unhealthySince } : {}),
      ...(this.#retryAt !== undefined ? { waitingMs: Math.max(0, this.#retryAt - this.#clock.now()) } : {}),
    };
  }

  /** Ends a back-off wait now (the API server is answering again). */
  wake(): void {
    if (this.#retryAt === undefined || this.#stopped) return;
    this.#clock.clearTimeout(this.#retryTimer);
    this.#retryAt = undefined;
    this.#begin();
  }

  #begin(): void {
    if (this.#stopped || !this.#lw) return;
    const lw = this.#lw;
    const errorsBefore = this.#errors;
    this.#lastActivity = this.#clock.now();
    lw.start().then(
      () => {
        // start() resolves once the watch answered (or failed, which emitted `error`). With a resourceVersion
        // kept from before, a watch that answered means the cache is current again.
        if (!this.#stopped && this.#errors === errorsBefore && lw.latestResourceVersion()) this.#markHealthy();
      },
      (err: unknown) => this.#failed(err),
    );
  }

  async #list(): Promise<KubernetesListObject<T>> {
    this.#lists++;
    const result = await withTimeout(this.#spec.list(), this.#listTimeoutMs, `list ${this.name}`);
    // ListWatch applies the list (diff → delete events, adds, updates) right after this promise settles; check once it has.
    setImmediate(() => {
      if (!this.#stopped && this.#lw?.latestResourceVersion()) {
        if (this.#lists > 1) this.#log.info('relisted', { informer: this.name, objects: this.list().length, resourceVersion: this.#lw.latestResourceVersion() });
        this.#synced = true;
        this.#markHealthy();
      }
    });
    return result;
  }

  #markHealthy(): void {
    this.#lastActivity = this.#clock.now();
    if (this.#healthy && this.#unhealthySince === undefined) return;
    if (this.#unhealthySince !== undefined) this.#log.info('informer healthy again', { informer: this.name, afterMs: this.#clock.now() - this.#unhealthySince });
    this.#healthy = true;
    this.#unhealthySince = undefined;
    this.#onState();
  }

  #event(type: ChangeType, obj: T): void {
    this.#lastActivity = this.#clock.now();
    this.#onChange(type, obj);
  }

  #connected(): void {
    const now = this.#clock.now();
    this.#lastActivity = now;
    this.#connects = this.#connects.filter((t) => now - t < 10_000);
    this.#connects.push(now);
    if (this.#connects.length > 10) {
      this.#connects = [];
      // Calling stop() aborts the watch ListWatch is about to open; start() later clears its stopped flag.
      void this.#lw?.stop();
      this.#failed(new Error(`watch of ${this.name} ended as soon as it started 10 times in 10 s`));
    }
  }

  #checkSilence(): void {
    if (this.#stopped || this.#retryAt !== undefined || !this.#healthy) return;
    const silentMs = this.#clock.now() - this.#lastActivity;
    if (silentMs > (this.#timeoutSeconds + 90) * 1000) {
      void this.#lw?.stop();
      this.#failed(new Error(`watch of ${this.name} silent for ${Math.round(silentMs / 1000)} s, longer than its ${this.#timeoutSeconds} s timeout`));
    }
  }

  #failed(err: unknown): void {
    if (this.#stopped || this.#retryAt !== undefined) return;
    const now = this.#clock.now();
    this.#errors++;
    this.#healthy = false;
    this.#unhealthySince ??= now;
    this.#lastError = describeError(err);
    this.#lastErrorAt = now;
    const delay = this.#backoff.next(now);
    this.#retryAt = now + delay;
    this.#log.warn('informer failed; retrying', { informer: this.name, error: this.#lastError, inMs: delay });
    this.#retryTimer = this.#clock.setTimeout(() => {
      this.#retryAt = undefined;
      this.#restarts++;
      this.#begin();
    }, delay);
    this.#onState();
  }
}

/** Informers that share an API-server probe. */
export class InformerGroup {
  readonly #informers: ResilientInformer<KubernetesObject>[] = [];
  readonly #rest: KubeRest;
  readonly #log: OperatorLogger;
  readonly #clock: RuntimeClock;
  readonly #probeIntervalMs: number;
  #probeTimer: unknown;
  #lastProbeFailureAt = 0;
  readonly #wokenAt = new Map<ResilientInformer<KubernetesObject>, number>();
  #probing = false;
  #stopped = false;
  /** Probes sent (for tests and /status: must stay one per interval during an outage). */
  probes = 0;

  constructor(rest: KubeRest, opts: { log: OperatorLogger; clock?: RuntimeClock; probeIntervalMs?: number }) {
    this.#rest = rest;
    this.#log = opts.log;
    this.#clock = opts.clock ?? systemRuntimeClock;
    this.#probeIntervalMs = opts.probeIntervalMs ?? 2_000;
  }

  /** Adds an informer (before start). */
  add<T extends KubernetesObject>(informer: ResilientInformer<T>): ResilientInformer<T> {
    this.#informers.push(informer as unknown as ResilientInformer<KubernetesObject>);
    return informer;
  }

  /** Starts every informer and the probe loop. */
  start(): void {
    for (const i of this.#informers) i.start();
    this.#scheduleProbe();
  }

  /** Stops them. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#probeTimer);
    await Promise.all(this.#informers.map((i) => i.stop()));
  }

  /** Every informer completed a list at least once. */
  allSynced(): boolean {
    return this.#informers.every((i) => i.synced);
  }

  /** Names of informers that are not healthy now. */
  unhealthy(): string[] {
    return this.#informers.filter((i) => !i.healthy).map((i) => i.name);
  }

  /** Every informer's state. */
  states(): InformerState[] {
    return this.#informers.map((i) => i.state());
  }

  #scheduleProbe(): void {
    if (this.#stopped) return;
    this.#probeTimer = this.#clock.setTimeout(() => {
      void this.#probe().finally(() => this.#scheduleProbe());
    }, this.#probeIntervalMs);
  }

  async #probe(): Promise<void> {
    const waiting = this.#informers.filter((i) => i.waiting);
    if (waiting.length === 0 || this.#probing) return;
    this.#probing = true;
    this.probes++;
    try {
      await this.#rest.json('GET', '/version', { timeoutMs: Math.max(1_000, this.#probeIntervalMs) });
      // Wake informers whose failing period saw the API server down (a probe failed since they turned
      // unhealthy), once per outage: an informer failing for its own reason (forbidden, a broken CRD) keeps its
      // back-off instead of being retried on every probe.
      const woken = waiting.filter((i) => this.#lastProbeFailureAt >= (i.unhealthySince ?? Infinity) && this.#lastProbeFailureAt > (this.#wokenAt.get(i) ?? 0));
      if (woken.length > 0) {
        this.#log.info('API server answers again; restarting informers now', { informers: woken.map((i) => i.name) });
        for (const i of woken) {
          this.#wokenAt.set(i, this.#clock.now());
          i.wake();
        }
      }
    } catch (err) {
      this.#lastProbeFailureAt = this.#clock.now();
      this.#log.debug('API server probe failed', { error: describeError(err) });
    } finally {
      this.#probing = false;
    }
  }
}
