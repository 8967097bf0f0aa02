/**
 * A list+watch cache over client-node's ListWatch that survives errors. ListWatch stops for good on the
 * first non-410 error (a dropped connection, a restarted API server); this one starts it again with
 * backoff, resuming from the last resourceVersion, relisting after 410 Gone. `synced` resolves once the
 * first list has been loaded: controllers act on nothing before every cache they read is synced.
 */
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { computeBackoffMs } from './work-queue.ts';
import { describeApiError } from './kube-api.ts';

/** What an event handler is told. */
export type CacheEvent = 'add' | 'update' | 'delete';

/** Read access to a synced cache. */
export interface ObjectCache<T> {
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): readonly T[];
}

/** Computes the index values of an object (client-go's IndexFunc); an object may have several. */
export type IndexFunc<T> = (obj: T) => readonly string[];

interface Index<T> {
  fn: IndexFunc<T>;
  /** value -> object keys */
  byValue: Map<string, Set<string>>;
  /** object key -> the values it was indexed under, to unindex it when it changes or goes */
  byObject: Map<string, readonly string[]>;
}

function cacheKey(obj: KubernetesObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

/** Options of InformerCache. */
export interface InformerCacheOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** Collection path to watch, e.g. `/api/v1/pods`. */
  path: string;
  /** The typed list call for the same collection. */
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  /** Where reconnects and errors are reported. */
  log: (line: string) => void;
}

/** A resilient informer: cache, handlers, synced promise. */
export class InformerCache<T extends KubernetesObject> implements ObjectCache<T> {
  readonly synced: Promise<void>;
  private readonly lw: ListWatch<T>;
  private readonly opts: InformerCacheOptions<T>;
  private markSynced: () => void = () => {};
  private listedOnce = false;
  private isSynced = false;
  private stopped = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly indexes = new Map<string, Index<T>>();

  constructor(opts: InformerCacheOptions<T>) {
    this.opts = opts;
    this.synced = new Promise((resolve) => {
      this.markSynced = resolve;
    });
    const list = async (): Promise<KubernetesListObject<T>> => {
      const result = await opts.list();
      this.listedOnce = true;
      return result;
    };
    this.lw = new ListWatch<T>(opts.path, new Watch(opts.kc), list, false, opts.labelSelector);
    // Registered first, so every handler registered later sees the indexes already updated.
    this.lw.on('add', (o) => this.reindex(o, false));
    this.lw.on('update', (o) => this.reindex(o, false));
    this.lw.on('delete', (o) => this.reindex(o, true));
    this.lw.on('error', (err) => this.onError(err));
    this.lw.on('connect', () => {
      if (this.isSynced) this.failures = 0;
    });
  }

  /** Adds an index; call before start(). Lookups with byIndex return the objects with that value. */
  addIndex(name: string, fn: IndexFunc<T>): void {
    this.indexes.set(name, { fn, byValue: new Map(), byObject: new Map() });
  }

  /** Objects indexed under `value` by the index `name` (client-go's ByIndex). */
  byIndex(name: string, value: string): T[] {
    const keys = this.indexes.get(name)?.byValue.get(value);
    if (!keys) return [];
    const out: T[] = [];
    for (const key of keys) {
      const slash = key.indexOf('/');
      const obj = this.lw.get(key.slice(slash + 1), key.slice(0, slash) || undefined);
      if (obj) out.push(obj);
    }
    return out;
  }

  /** How many objects are indexed under `value` (to pick the narrowest of several lookups). */
  indexSize(name: string, value: string): number {
    return this.indexes.get(name)?.byValue.get(value)?.size ?? 0;
  }

  private reindex(obj: T, deleted: boolean): void {
    const key = cacheKey(obj);
    for (const index of this.indexes.values()) {
      for (const v of index.byObject.get(key) ?? []) {
        const set = index.byValue.get(v);
        set?.delete(key);
        if (set?.size === 0) index.byValue.delete(v);
      }
      if (deleted) {
        index.byObject.delete(key);
        continue;
      }
      const values = index.fn(obj);
      index.byObject.set(key, values);
      for (const v of values) {
        let set = index.byValue.get(v);
        if (!set) index.byValue.set(v, (set = new Set()));
        set.add(key);
      }
    }
  }

  /** Registers a handler for add, update and delete events (called from the initial list too). */
  on(handler: (event: CacheEvent, obj: T) => void): void {
    this.lw.on('add', (o) => handler('add', o));
    this.lw.on('update', (o) => handler('update', o));
    this.lw.on('delete', (o) => handler('delete', o));
  }

  /** Starts listing and watching; returns at once, `synced` tells when the cache is complete. */
  start(): void {
    this.begin();
  }

  get(name: string, namespace?: string): T | undefined {
    return this.lw.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.lw.list(namespace);
  }

  /** True once the first list is in. */
  hasSynced(): boolean {
    return this.isSynced;
  }

  /** Stops the watch; pending restarts are cancelled. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.lw.stop();
    // A start still opening its watch would install the request after our stop: stop it again then.
    await this.running?.catch(() => undefined);
    await this.lw.stop();
  }

  private begin(): void {
    if (this.stopped) return;
    const run = this.lw.start().then(
      () => {
        if (this.listedOnce && !this.isSynced && !this.stopped) {
          this.isSynced = true;
          this.markSynced();
        }
      },
      (err: unknown) => this.onError(err),
    );
    this.running = run;
  }

  private onError(err: unknown): void {
    // Aborting the watch on stop surfaces as an error; it is not one.
    if (this.stopped) return;
    if (this.timer) return;
    const delay = computeBackoffMs(this.failures++, { baseDelayMs: 200, maxDelayMs: 30_000, jitter: 0.2 });
    this.opts.log(`watch ${this.opts.path} failed (${describeApiError(err)}); retrying in ${delay} ms`);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.begin();
    }, delay);
  }
}
