/**
 * Memoisation for the operator's compile, kept by the runtime between reconciles so that one changed object
 * recompiles only what depends on it. The pure functions (compileMesh, computeNodeState) stay the only
 * definition of the result: a memoised piece is the value they computed earlier from the same inputs, and it
 * is reused only when every input it read is provably unchanged:
 *   - a Kubernetes object by identity: informer caches replace an object on every change and never edit one
 *     in place (callers that build snapshots by hand must do the same);
 *   - a spec by (uid, generation) when the object has both - the API server bumps generation on every spec
 *     change, so a status write (a new object, same spec) does not force a recompile - else by identity;
 *   - everything else a piece read (another Service's ports, the pods behind a Service, a policy it merges)
 *     is part of its signature and compared on every use.
 * Entries a compile did not use are dropped at its end (`sweep`), so memory follows the cluster, not its
 * history.
 */

/** Small numbers naming objects by identity, for signatures (never reused while the object lives). */
export class ObjectIds {
  readonly #ids = new WeakMap<object, number>();
  #next = 1;

  /** The id of `o` (assigned on first sight). */
  of(o: object): number {
    let id = this.#ids.get(o);
    if (id === undefined) {
      id = this.#next++;
      this.#ids.set(o, id);
    }
    return id;
  }
}

/** A map from key to (signature, value) whose unused entries are swept after each compile. */
export class SignedMemo<V> {
  readonly #entries = new Map<string, { sig: string; value: V }>();
  #used = new Set<string>();
  hits = 0;
  misses = 0;

  /** The value stored under `key` when it was computed with signature `sig`; else computes and stores it. */
  get(key: string, sig: string, compute: () => V): V {
    this.#used.add(key);
    const hit = this.#entries.get(key);
    if (hit && hit.sig === sig) {
      this.hits++;
      return hit.value;
    }
    this.misses++;
    const value = compute();
    this.#entries.set(key, { sig, value });
    return value;
  }

  /** Drops entries not read since the last sweep. */
  sweep(): void {
    for (const key of this.#entries.keys()) if (!this.#used.has(key)) this.#entries.delete(key);
    this.#used = new Set();
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** How a spec is named in signatures: its object's (uid, generation) when both are known, else its identity. */
export function specSignature(ids: ObjectIds, spec: unknown, uid: string | undefined, generation: number | undefined): string {
  if (uid && typeof generation === 'number') return `g${generation}`;
  return spec !== null && typeof spec === 'object' ? `#${ids.of(spec)}` : `=${JSON.stringify(spec ?? null)}`;
}
