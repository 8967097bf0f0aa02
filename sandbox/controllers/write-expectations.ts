/**
 * Writes a controller made that its informer cache has not shown yet (client-go's "expectations").
 * Without them a sync that runs between a create and the cache seeing it would create the object again:
 * creates with generateName carry no precondition the API server could reject.
 */
import type { HasMeta } from './object-meta.ts';
import { isTerminating, keyOf } from './object-meta.ts';

interface Expectation {
  owner: string;
  /** 'present': created or updated, wait until the cache holds at least `resourceVersion`. */
  kind: 'present' | 'absent';
  resourceVersion: string | undefined;
  atMs: number;
}

/**
 * Compares resourceVersions. They are opaque by contract, but every API server we talk to (the real one
 * and the sandbox's) uses one cluster-wide increasing integer; for anything else only equality counts.
 */
export function isResourceVersionAtLeast(seen: string | undefined, wanted: string | undefined): boolean {
  if (wanted === undefined || wanted === '') return true;
  if (seen === undefined || seen === '') return false;
  if (/^\d+$/.test(seen) && /^\d+$/.test(wanted)) return BigInt(seen) >= BigInt(wanted);
  return seen === wanted;
}

/** Pending writes per owner key; an expectation that the cache never confirms expires after `ttlMs`. */
export class WriteExpectations {
  /** owner -> object key -> expectation; one object is expected by one owner at a time. */
  private readonly byOwner = new Map<string, Map<string, Expectation>>();
  private readonly ownerOf = new Map<string, string>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: { ttlMs?: number; now?: () => number } = {}) {
    // Client-go waits 5 minutes; the sandbox relists rarely, so 30 s bounds a lost event's cost.
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.now = opts.now ?? Date.now;
  }

  /** Records that `owner` created or updated `obj` (the API server's answer, with its resourceVersion). */
  expectPresent(owner: string, obj: HasMeta): void {
    this.set(owner, keyOf(obj), { owner, kind: 'present', resourceVersion: obj.metadata?.resourceVersion, atMs: this.now() });
  }

  /** Records that `owner` deleted the object with key `objKey`. */
  expectAbsent(owner: string, objKey: string): void {
    this.set(owner, objKey, { owner, kind: 'absent', resourceVersion: undefined, atMs: this.now() });
  }

  /** Feeds an informer event: an add/update at or past the written version, or a delete, settles it. */
  observe(obj: HasMeta, deleted: boolean): void {
    const key = keyOf(obj);
    const owner = this.ownerOf.get(key);
    const exp = owner === undefined ? undefined : this.byOwner.get(owner)?.get(key);
    if (!exp) return;
    const settled = exp.kind === 'absent' ? deleted || isTerminating(obj) : deleted || isResourceVersionAtLeast(obj.metadata?.resourceVersion, exp.resourceVersion);
    if (settled) this.remove(exp.owner, key);
  }

  /**
   * Keys of `owner`'s writes the cache (`lookup`) does not reflect yet. Settled and expired ones are
   * dropped on the way, so a lost watch event delays a sync by at most the TTL.
   */
  pending(owner: string, lookup: (objKey: string) => HasMeta | undefined): string[] {
    const mine = this.byOwner.get(owner);
    if (!mine) return [];
    const out: string[] = [];
    const now = this.now();
    for (const [key, exp] of mine) {
      const cached = lookup(key);
      const settled =
        exp.kind === 'absent'
          ? cached === undefined || isTerminating(cached)
          : cached !== undefined && isResourceVersionAtLeast(cached.metadata?.resourceVersion, exp.resourceVersion);
      if (settled || now - exp.atMs > this.ttlMs) this.remove(owner, key);
      else out.push(key);
    }
    return out;
  }

  /** Drops everything recorded for `owner` (the owner is gone). */
  forgetOwner(owner: string): void {
    for (const key of this.byOwner.get(owner)?.keys() ?? []) this.ownerOf.delete(key);
    this.byOwner.delete(owner);
  }

  private set(owner: string, key: string, exp: Expectation): void {
    const previous = this.ownerOf.get(key);
    if (previous !== undefined && previous !== owner) this.remove(previous, key);
    let mine = this.byOwner.get(owner);
    if (!mine) this.byOwner.set(owner, (mine = new Map()));
    mine.set(key, exp);
    this.ownerOf.set(key, owner);
  }

  private remove(owner: string, key: string): void {
    const mine = this.byOwner.get(owner);
    mine?.delete(key);
    if (mine && mine.size === 0) this.byOwner.delete(owner);
    if (this.ownerOf.get(key) === owner) this.ownerOf.delete(key);
  }
}
