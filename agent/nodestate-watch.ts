/**
 * This node's NodeState: a watch on the NodeState objects labelled `nodemesh.io/node=<node>`, and the pure rule
 * that turns them into one state. A set is applied only when shards 0..count-1 are all present, all with the same
 * count and trust domain; while the count changes (a shard split) or a shard is missing, the previous state stays
 * (nothing is pruned from a partial view, as crds/README.md requires).
 */
import { CustomObjectsApi, type KubeConfig, type KubernetesListObject, ListWatch, Watch } from '@kubernetes/client-node';
import { NODESTATE_NODE_LABEL, NodeStateResource, type NodeState, type NodeService, type NodeWorkload } from '../crds/index.ts';
import { describeError } from './errors.ts';
import { computeWatchBackoffMs } from './informers.ts';
import type { Logger } from './logger.ts';
import type { MergedNodeState } from './proxy/plan-proxy.ts';

/** The outcome of merging a node's shards. */
export type NodeStateSet =
  | { complete: true; state: MergedNodeState; shards: number }
  | { complete: false; reason: string };

const byNsName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }): number =>
  a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/**
 * Merges the shards of `nodeName` among `objects` (others are ignored). Complete only when every index of
 * 0..count-1 is there exactly once with the same count and trust domain; entries are self-contained, so the merge
 * is a concatenation (sorted, so the result does not depend on watch order).
 */
export function computeNodeStateSet(objects: readonly NodeState[], nodeName: string): NodeStateSet {
  const mine = objects.filter((o) => o.spec?.nodeName === nodeName);
  if (mine.length === 0) return { complete: false, reason: `no NodeState for node ${nodeName} yet (is the operator running?)` };
  const counts = new Set(mine.map((o) => o.spec.shard.count));
  if (counts.size !== 1) return { complete: false, reason: `shards disagree on count (${[...counts].sort().join(', ')}): a resharding is in progress` };
  const count = mine[0]!.spec.shard.count;
  const byIndex = new Map<number, NodeState>();
  for (const o of mine) {
    const i = o.spec.shard.index;
    if (!Number.isInteger(i) || i < 0 || i >= count) return { complete: false, reason: `shard ${o.metadata?.name} has index ${i} outside 0..${count - 1}` };
    if (byIndex.has(i)) return { complete: false, reason: `two shards with index ${i} (${byIndex.get(i)!.metadata?.name}, ${o.metadata?.name})` };
    byIndex.set(i, o);
  }
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length) return { complete: false, reason: `shard(s) ${missing.join(', ')} of ${count} missing` };
  const domains = new Set(mine.map((o) => o.spec.trustDomain));
  if (domains.size !== 1) return { complete: false, reason: `shards disagree on the trust domain (${[...domains].join(', ')})` };
  const ordered = Array.from({ length: count }, (_, i) => byIndex.get(i)!);
  const workloads: NodeWorkload[] = ordered.flatMap((o) => o.spec.workloads ?? []).sort(byNsName);
  const services: NodeService[] = ordered.flatMap((o) => o.spec.services ?? []).sort(byNsName);
  return {
    complete: true,
    shards: count,
    state: { nodeName, trustDomain: mine[0]!.spec.trustDomain, workloads, services, version: ordered.map((o) => o.spec.contentHash).join(','), ...specVersionOf(ordered) },
  };
}

/** The highest spec.version of the shards (what `kubectl mesh status` compares), when the writer sets one. */
function specVersionOf(shards: readonly NodeState[]): { specVersion?: number } {
  const vs = shards.map((o) => o.spec.version).filter((v): v is number => typeof v === 'number');
  return vs.length ? { specVersion: Math.max(...vs) } : {};
}

/** True when `name` can be a label value (else the operator labels with a hash, and we select by field). */
function isLabelValue(name: string): boolean {
  return name.length <= 63 && /^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$/.test(name);
}

/** Options of the watch. */
export interface NodeStateWatchOptions {
  kc: KubeConfig;
  nodeName: string;
  log: Logger;
  /** A new complete state (its `version` differs from the last one given). */
  onState(state: MergedNodeState): void;
}

/** What the watch reports (health endpoint). */
export interface NodeStateWatchStatus {
  synced: boolean;
  /** Version of the state last applied, if any. */
  applied: string | undefined;
  /** Why the current set is not applied (previous state kept), if it is not. */
  waiting: string | undefined;
  restarts: number;
}

/** Watches this node's NodeState shards and hands complete sets to `onState`. */
export class NodeStateWatch {
  readonly #o: NodeStateWatchOptions;
  readonly #lw: ListWatch<NodeState>;
  #applied: string | undefined;
  #waiting: string | undefined;
  #synced = false;
  #stopped = false;
  #failures = 0;
  #restarts = 0;
  #timer: NodeJS.Timeout | undefined;
  #pending = false;

  constructor(o: NodeStateWatchOptions) {
    this.#o = o;
    const api = o.kc.makeApiClient(CustomObjectsApi);
    const { group, version, plural } = NodeStateResource;
    const byLabel = isLabelValue(o.nodeName);
    const labelSelector = byLabel ? `${NODESTATE_NODE_LABEL}=${o.nodeName}` : undefined;
    const fieldSelector = byLabel ? undefined : `spec.nodeName=${o.nodeName}`;
    const list = async (): Promise<KubernetesListObject<NodeState>> => {
      const r = (await api.listClusterCustomObject({ group, version, plural, ...(labelSelector ? { labelSelector } : {}), ...(fieldSelector ? { fieldSelector } : {}) })) as KubernetesListObject<NodeState>;
      setImmediate(() => { this.#synced = true; this.#recompute(); });
      return r;
    };
    this.#lw = new ListWatch<NodeState>(`/apis/${group}/${version}/${plural}`, new Watch(o.kc), list, false, labelSelector, fieldSelector);
    const changed = (): void => this.#schedule();
    this.#lw.on('add', changed);
    this.#lw.on('update', changed);
    this.#lw.on('delete', changed);
    this.#lw.on('connect', () => { if (this.#lw.latestResourceVersion()) this.#failures = 0; });
    this.#lw.on('error', (err: unknown) => this.#restart(err));
  }

  /** Starts watching. */
  start(): void {
    this.#lw.start().catch((err: unknown) => this.#restart(err));
  }

  /** The watch's state. */
  status(): NodeStateWatchStatus {
    return { synced: this.#synced, applied: this.#applied, waiting: this.#waiting, restarts: this.#restarts };
  }

  /** The current set, merged (complete or not). */
  current(): NodeStateSet {
    return computeNodeStateSet(this.#lw.list(), this.#o.nodeName);
  }

  /** Stops watching. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#lw.stop();
  }

  // Shards of one write arrive as a burst of events: merge once per burst.
  #schedule(): void {
    if (this.#pending || !this.#synced) return;
    this.#pending = true;
    setImmediate(() => { this.#pending = false; this.#recompute(); });
  }

  #recompute(): void {
    if (this.#stopped) return;
    const set = this.current();
    if (!set.complete) {
      if (set.reason !== this.#waiting) this.#o.log.info('NodeState not applied, previous state kept', { reason: set.reason, applied: this.#applied ?? 'none' });
      this.#waiting = set.reason;
      return;
    }
    this.#waiting = undefined;
    if (set.state.version === this.#applied) return;
    this.#applied = set.state.version;
    this.#o.log.info('NodeState complete', { shards: set.shards, workloads: set.state.workloads.length, services: set.state.services.length });
    try {
      this.#o.onState(set.state);
    } catch (err) {
      this.#o.log.error('applying NodeState failed', { error: describeError(err) });
    }
  }

  #restart(err: unknown): void {
    if (this.#stopped || this.#timer) return;
    const ms = computeWatchBackoffMs(this.#failures++);
    this.#restarts++;
    this.#o.log.warn('NodeState watch failed, restarting', { error: describeError(err), inMs: ms });
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#stopped) this.start();
    }, ms);
    this.#timer.unref?.();
  }
}
