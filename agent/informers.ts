/**
 * The agent's watches: Services, EndpointSlices and Nodes of the cluster, and the Pods of this node
 * (fieldSelector spec.nodeName). Each is a client-node ListWatch (what makeInformer builds; made
 * directly for the field selector and the resourceVersion). client-node relists by itself after a
 * 410 Gone but stops on any other error (a dropped connection, a 500, its own 30 s request
 * timeout); here every error restarts the watch after a back-off with jitter, from the last
 * resourceVersion, which falls back to a full relist when the server answers 410.
 */
import { CoreV1Api, DiscoveryV1Api, type KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, type V1EndpointSlice, type V1Node, type V1Pod, type V1Service, Watch } from '@kubernetes/client-node';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';

/** What a watch reports. */
export type WatchEvent = 'add' | 'update' | 'delete';

/** One resource kind being watched. */
export interface WatchedKind<T extends KubernetesObject> {
  readonly name: string;
  /** Current cache. */
  list(): readonly T[];
  /** Whether the first list has completed (the cache is a complete picture, kpng's Sync). */
  readonly synced: boolean;
  /** Restarts after errors so far. */
  readonly restarts: number;
}

/** Back-off before restart n (0-based): 200 ms doubling to 10 s, ±20 % jitter so agents do not relist in step. */
export function computeWatchBackoffMs(failures: number, random = Math.random()): number {
  const base = Math.min(200 * 2 ** failures, 10_000);
  return Math.round(base * (0.8 + 0.4 * random));
}

class Watched<T extends KubernetesObject> implements WatchedKind<T> {
  readonly name: string;
  readonly #lw: ListWatch<T>;
  readonly #log: Logger;
  readonly #onSynced: () => void;
  #synced = false;
  #stopped = false;
  #failures = 0;
  #restarts = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: {
    name: string;
    kc: KubeConfig;
    path: string;
    list: () => Promise<KubernetesListObject<T>>;
    fieldSelector?: string;
    onEvent: (type: WatchEvent, obj: T) => void;
    onSynced: () => void;
    log: Logger;
  }) {
    this.name = opts.name;
    this.#log = opts.log;
    this.#onSynced = opts.onSynced;
    // The list lands in the cache synchronously once this promise resolves; checking on the next
    // turn announces sync without waiting for the watch request that follows it to be answered.
    const list = async (): Promise<KubernetesListObject<T>> => {
      const r = await opts.list();
      setImmediate(() => this.#checkSynced());
      return r;
    };
    this.#lw = new ListWatch<T>(opts.path, new Watch(opts.kc), list, false, undefined, opts.fieldSelector);
    this.#lw.on('add', (o) => opts.onEvent('add', o));
    this.#lw.on('update', (o) => opts.onEvent('update', o));
    this.#lw.on('delete', (o) => opts.onEvent('delete', o));
    // A connect that got as far as a watch resets the back-off.
    this.#lw.on('connect', () => {
      if (this.#lw.latestResourceVersion()) this.#failures = 0;
    });
    this.#lw.on('error', (err: unknown) => this.#restart(err));
  }

  get synced(): boolean {
    return this.#synced;
  }

  get restarts(): number {
    return this.#restarts;
  }

  list(): readonly T[] {
    return this.#lw.list();
  }

  start(): void {
    this.#lw.start().then(
      () => this.#checkSynced(),
      (err: unknown) => {
        this.#checkSynced();
        this.#restart(err);
      },
    );
  }

  #checkSynced(): void {
    // The resourceVersion is set only once a list has landed in the cache.
    if (this.#synced || !this.#lw.latestResourceVersion()) return;
    this.#synced = true;
    this.#log.info('initial list complete', { kind: this.name, objects: this.#lw.list().length });
    this.#onSynced();
  }

  #restart(err: unknown): void {
    if (this.#stopped || this.#timer) return;
    const ms = computeWatchBackoffMs(this.#failures++);
    this.#restarts++;
    this.#log.warn('watch failed, restarting', { kind: this.name, error: describeError(err), inMs: ms, fromResourceVersion: this.#lw.latestResourceVersion() || 'relist' });
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#stopped) this.start();
    }, ms);
    this.#timer.unref?.();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#lw.stop();
  }
}

/** Callbacks of the cluster watch. */
export interface ClusterWatchHandlers {
  service(type: WatchEvent, s: V1Service): void;
  endpointSlice(type: WatchEvent, s: V1EndpointSlice): void;
  node(type: WatchEvent, n: V1Node): void;
  pod(type: WatchEvent, p: V1Pod): void;
  /** Every kind has listed once. Called once. */
  synced(): void;
}

/** The four watches of one agent. */
export class ClusterWatch {
  readonly kinds: ReadonlyArray<WatchedKind<KubernetesObject>>;
  readonly #all: Array<Watched<KubernetesObject>>;
  #announced = false;

  constructor(kc: KubeConfig, nodeName: string, h: ClusterWatchHandlers, log: Logger) {
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const onSynced = (): void => {
      if (this.#announced || !this.#all.every((w) => w.synced)) return;
      this.#announced = true;
      h.synced();
    };
    const podSelector = `spec.nodeName=${nodeName}`;
    const make = <T extends KubernetesObject>(o: ConstructorParameters<typeof Watched<T>>[0]): Watched<KubernetesObject> => new Watched<T>(o) as unknown as Watched<KubernetesObject>;
    this.#all = [
      make<V1Service>({ name: 'services', kc, path: '/api/v1/services', list: () => core.listServiceForAllNamespaces(), onEvent: h.service, onSynced, log }),
      make<V1EndpointSlice>({ name: 'endpointslices', kc, path: '/apis/discovery.k8s.io/v1/endpointslices', list: () => discovery.listEndpointSliceForAllNamespaces(), onEvent: h.endpointSlice, onSynced, log }),
      make<V1Node>({ name: 'nodes', kc, path: '/api/v1/nodes', list: () => core.listNode(), onEvent: h.node, onSynced, log }),
      make<V1Pod>({ name: 'pods', kc, path: '/api/v1/pods', list: () => core.listPodForAllNamespaces({ fieldSelector: podSelector }), fieldSelector: podSelector, onEvent: h.pod, onSynced, log }),
    ];
    this.kinds = this.#all;
  }

  /** Starts every watch. */
  start(): void {
    for (const w of this.#all) w.start();
  }

  /** Kinds whose first list has not completed yet. */
  unsynced(): string[] {
    return this.#all.filter((w) => !w.synced).map((w) => w.name);
  }

  /** Stops every watch. */
  async stop(): Promise<void> {
    await Promise.all(this.#all.map((w) => w.stop()));
  }
}
