/**
 * Writing NodeStates: `planNodeStateWrites` (pure) compares the desired shards with the stored ones by content
 * hash - a stored shard counts only if its hash matches its own content, so a hand-edited one is rewritten -
 * and lists the shards to create or replace and the ones to delete (a node's surplus shards after its count
 * shrank, every shard of a node that is gone). `applyNodeStatePlan` carries a plan out: upserts first, then
 * deletes (the agent keeps its previous set until all shards agree), a 409 re-reads and retries, and the leader
 * fence is checked before every single write.
 */
import { NodeStateResource, type NodeState } from '../crds/index.ts';
import { isConflict, retryOnConflict } from './backoff.ts';
import { hashOfSpec } from './compute-node-state.ts';
import type { KubeRest } from './kube-rest.ts';
import { describeError, type OperatorLogger } from './logger.ts';

/** What to write. */
export interface NodeStatePlan {
  /** Shards to create (existing undefined) or replace, in name order. */
  upserts: Array<{ desired: NodeState; existing: NodeState | undefined }>;
  /** Stored shards no longer wanted, in name order. */
  deletes: NodeState[];
  /** Names of shards already as desired. */
  unchanged: string[];
}

/** The hash a stored NodeState really has: its contentHash when that matches its content, else undefined. */
export type StoredHash = (state: NodeState) => string | undefined;

/** Recomputes the stored shard's hash every time (see HashMemo for the cached form). */
export const verifiedHash: StoredHash = (state) => {
  const claimed = state.spec?.contentHash;
  if (!claimed || !state.spec) return undefined;
  try {
    return hashOfSpec(state.spec) === claimed ? claimed : undefined;
  } catch {
    return undefined;
  }
};

/** verifiedHash cached by uid + resourceVersion, so an unchanged stored shard is hashed once. */
export class HashMemo {
  readonly #memo = new Map<string, { rv: string; hash: string | undefined }>();

  /** The StoredHash function backed by this memo. */
  readonly storedHash: StoredHash = (state) => {
    const name = state.metadata?.name ?? '';
    const rv = `${state.metadata?.uid ?? ''}/${state.metadata?.resourceVersion ?? ''}`;
    const hit = this.#memo.get(name);
    if (hit && hit.rv === rv && rv !== '/') return hit.hash;
    const hash = verifiedHash(state);
    this.#memo.set(name, { rv, hash });
    return hash;
  };

  /**
   * Records the hash of a shard this operator just wrote (the API server's answer to our create/replace):
   * the stored content is what we sent, so its informer echo at the same resourceVersion needs no rehash.
   */
  remember(state: NodeState, hash: string): void {
    const name = state.metadata?.name ?? '';
    const rv = `${state.metadata?.uid ?? ''}/${state.metadata?.resourceVersion ?? ''}`;
    if (rv !== '/') this.#memo.set(name, { rv, hash });
  }

  /** True when this exact stored version (name, uid, resourceVersion) was already hashed or written by us. */
  knows(state: NodeState): boolean {
    const rv = `${state.metadata?.uid ?? ''}/${state.metadata?.resourceVersion ?? ''}`;
    return rv !== '/' && this.#memo.get(state.metadata?.name ?? '')?.rv === rv;
  }

  /** Drops entries of names not in `keep` (deleted shards). */
  prune(keep: ReadonlySet<string>): void {
    for (const name of this.#memo.keys()) if (!keep.has(name)) this.#memo.delete(name);
  }
}

function labelsMatch(existing: NodeState, desired: NodeState): boolean {
  const want = desired.metadata?.labels ?? {};
  const have = existing.metadata?.labels ?? {};
  return Object.entries(want).every(([k, v]) => have[k] === v);
}

/**
 * The writes that turn `existing` (what is stored: the informer cache) into `desired` (every shard of every
 * current node). The operator owns the NodeState kind: any stored NodeState not desired is deleted.
 */
export function planNodeStateWrites(desired: readonly NodeState[], existing: readonly NodeState[], storedHash: StoredHash = verifiedHash): NodeStatePlan {
  const byName = new Map(existing.map((s) => [s.metadata?.name ?? '', s]));
  const wanted = new Set<string>();
  const plan: NodeStatePlan = { upserts: [], deletes: [], unchanged: [] };
  for (const d of [...desired].sort((a, b) => cmp(a.metadata?.name, b.metadata?.name))) {
    const name = d.metadata?.name ?? '';
    wanted.add(name);
    const e = byName.get(name);
    if (e && storedHash(e) === d.spec.contentHash && e.spec.nodeName === d.spec.nodeName && labelsMatch(e, d)) plan.unchanged.push(name);
    else plan.upserts.push({ desired: d, existing: e });
  }
  for (const e of [...existing].sort((a, b) => cmp(a.metadata?.name, b.metadata?.name))) {
    if (!wanted.has(e.metadata?.name ?? '')) plan.deletes.push(e);
  }
  return plan;
}

function cmp(a: string | undefined, b: string | undefined): number {
  const x = a ?? '';
  const y = b ?? '';
  return x < y ? -1 : x > y ? 1 : 0;
}

/** NodeState storage (the API server, or a fake in tests). Errors carry the HTTP status in `code`. */
export interface NodeStateApi {
  get(name: string): Promise<NodeState | undefined>;
  create(body: NodeState): Promise<NodeState>;
  /** Replace; body.metadata.resourceVersion is the precondition. */
  replace(body: NodeState): Promise<NodeState>;
  delete(name: string): Promise<void>;
}

/** NodeStateApi over the API server. */
export function createKubeNodeStateApi(rest: KubeRest, timeoutMs = 30_000): NodeStateApi {
  const base = `/apis/${NodeStateResource.group}/${NodeStateResource.version}/${NodeStateResource.plural}`;
  const at = (name: string): string => `${base}/${encodeURIComponent(name)}`;
  return {
    get: (name) => rest.getOrUndefined<NodeState>(at(name), timeoutMs),
    create: (body) => rest.json<NodeState>('POST', base, { body, timeoutMs }),
    replace: (body) => rest.json<NodeState>('PUT', at(body.metadata!.name!), { body, timeoutMs }),
    delete: async (name) => {
      const r = await rest.raw('DELETE', at(name), { timeoutMs, parse: false });
      if (r.status === 404 || (r.status >= 200 && r.status < 300)) return;
      throw Object.assign(new Error(`delete NodeState ${name}: HTTP ${r.status}: ${r.text.slice(0, 300)}`), { code: r.status, body: r.text });
    },
  };
}

/** Thrown inside a plan when the leader fence closed: nothing more is written. */
export class NotLeaderError extends Error {
  constructor() {
    super('no longer the leader: writes stopped');
    this.name = 'NotLeaderError';
  }
}

/** Outcome of applyNodeStatePlan. */
export interface NodeStateApplyResult {
  /** Objects as stored after our writes (create/replace answers). */
  written: NodeState[];
  deleted: string[];
  failed: Array<{ name: string; error: string }>;
  conflicts: number;
  /** Stopped because the leader fence closed. */
  aborted: boolean;
}

/** The object to store for a desired shard, on top of what is stored now. */
function bodyFor(desired: NodeState, base: NodeState | undefined): NodeState {
  return {
    apiVersion: desired.apiVersion,
    kind: desired.kind,
    metadata: {
      name: desired.metadata!.name!,
      labels: { ...(base?.metadata?.labels ?? {}), ...(desired.metadata?.labels ?? {}) },
      ...(base?.metadata?.resourceVersion ? { resourceVersion: base.metadata.resourceVersion } : {}),
    },
    spec: { ...desired.spec, version: (base?.spec?.version ?? 0) + 1 },
  };
}

/** Runs `tasks` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await run(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Carries out a plan. `isLeader` is checked before every request; once it is false nothing more is sent.
 * Upserts all finish before any delete starts.
 */
export async function applyNodeStatePlan(
  plan: NodeStatePlan,
  api: NodeStateApi,
  opts: { isLeader: () => boolean; log: OperatorLogger; concurrency?: number; storedHash?: StoredHash; onWrite?: (verb: 'create' | 'replace' | 'delete', name: string) => void },
): Promise<NodeStateApplyResult> {
  const result: NodeStateApplyResult = { written: [], deleted: [], failed: [], conflicts: 0, aborted: false };
  const storedHash = opts.storedHash ?? verifiedHash;
  const fence = (): void => {
    if (!opts.isLeader()) throw new NotLeaderError();
  };
  const upsert = async ({ desired, existing }: NodeStatePlan['upserts'][number]): Promise<void> => {
    const name = desired.metadata!.name!;
    const stored = await retryOnConflict(async (attempt) => {
      let base = existing;
      if (attempt > 0) {
        result.conflicts++;
        base = await api.get(name);
      }
      if (base && storedHash(base) === desired.spec.contentHash && labelsMatch(base, desired)) return base;
      fence();
      if (!base) {
        opts.onWrite?.('create', name);
        // AlreadyExists is a 409 too: the retry re-reads and replaces.
        return api.create(bodyFor(desired, undefined));
      }
      opts.onWrite?.('replace', name);
      return api.replace(bodyFor(desired, base));
    });
    result.written.push(stored);
  };
  const remove = async (state: NodeState): Promise<void> => {
    const name = state.metadata!.name!;
    fence();
    opts.onWrite?.('delete', name);
    await api.delete(name);
    result.deleted.push(name);
  };
  const guard = (name: string, fn: () => Promise<void>) => async (): Promise<void> => {
    if (result.aborted) return;
    try {
      await fn();
    } catch (err) {
      if (err instanceof NotLeaderError) {
        result.aborted = true;
        return;
      }
      if (isConflict(err)) result.conflicts++;
      result.failed.push({ name, error: describeError(err) });
      opts.log.warn('NodeState write failed', { name, error: describeError(err) });
    }
  };
  await pool(plan.upserts, opts.concurrency ?? 8, (u) => guard(u.desired.metadata!.name!, () => upsert(u))());
  // A node's surplus shards go only once its new set is complete; failed upserts keep the old ones around.
  const failedNodes = new Set(plan.upserts.filter((u) => result.failed.some((f) => f.name === u.desired.metadata?.name)).map((u) => u.desired.spec.nodeName));
  const deletes = plan.deletes.filter((d) => !failedNodes.has(d.spec?.nodeName ?? ''));
  await pool(deletes, opts.concurrency ?? 8, (d) => guard(d.metadata!.name!, () => remove(d))());
  return result;
}
