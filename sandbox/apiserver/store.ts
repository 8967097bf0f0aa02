/**
 * The versioned object store: objects per resource and namespace, one cluster-wide revision counter,
 * and per resource a ring buffer of its last events so watches can resume from a resourceVersion (as the
 * real server's watch cache: churn in one resource does not expire the history of another).
 *
 * Objects handed in and out are never mutated afterwards (writers copy first), so a list can hand out
 * references and a watch event can share one serialisation between watchers. `ObjectStore` is the
 * interface a later file-backed mode implements; `MemoryStore` keeps everything in memory.
 */

import type { JsonObject } from './json.ts';
import { asObject, asString } from './json.ts';

/** What happened to an object. */
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One committed change; `rv` is the revision the change produced. */
export interface StoreEvent {
  rv: number;
  type: EventType;
  resource: string; // storage key, `<group>/<plural>`
  namespace: string; // '' for cluster-scoped
  name: string;
  object: JsonObject; // state after the change (for DELETED: the last state, with the deletion revision)
  previous: JsonObject | undefined; // state before (MODIFIED and DELETED)
  /** Cache of serialisations of `object` keyed by rendering (apiVersion); filled by watch fan-out. */
  encoded?: Map<string, string>;
}

/** Answer of `eventsAfter` when the revision cannot be served. */
export type ReplayGap = { gap: 'expired'; oldest: number } | { gap: 'future'; current: number };

/** The storage interface the REST layer uses. Implementations must keep revisions contiguous: one per write. */
export interface ObjectStore {
  /** The revision of the last write (a list returns it as its resourceVersion). */
  currentRevision(): number;
  get(resource: string, namespace: string, name: string): JsonObject | undefined;
  /** Objects of a resource, sorted by namespace then name; `namespace` undefined means all. */
  list(resource: string, namespace?: string): JsonObject[];
  /** Like list, but only keys after `afterKey` (`ns/name`), at most `limit`, for continue tokens. */
  listPage(resource: string, namespace: string | undefined, afterKey: string | undefined, limit: number): { items: JsonObject[]; more: boolean; remaining: number };
  count(resource: string, namespace?: string): number;
  /** Stores a new object, stamping metadata.resourceVersion; the caller checked it does not exist. */
  create(resource: string, obj: JsonObject): JsonObject;
  /** Replaces an existing object, stamping metadata.resourceVersion. */
  update(resource: string, obj: JsonObject): JsonObject;
  /** Removes an object for good; returns its last state stamped with the deletion revision. */
  remove(resource: string, namespace: string, name: string): JsonObject | undefined;
  /** Events of `resource` with rv > `rv`, in order, or why they cannot be given. */
  eventsAfter(resource: string, rv: number): StoreEvent[] | ReplayGap;
  /** Registers a listener called synchronously after every commit; returns the unsubscribe function. */
  subscribe(listener: (ev: StoreEvent) => void): () => void;
  /** The storage keys that hold at least one object. */
  resources(): string[];
}

/** The map key of an object inside one resource. */
export function objectKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** metadata.name of a stored object. */
export function nameOf(obj: JsonObject): string {
  return asString(asObject(obj['metadata'])?.['name']) ?? '';
}

/** metadata.namespace of a stored object ('' when cluster-scoped). */
export function namespaceOf(obj: JsonObject): string {
  return asString(asObject(obj['metadata'])?.['namespace']) ?? '';
}

interface NamespaceBucket {
  objects: Map<string, JsonObject>; // by name
  sorted: string[] | null; // names in order, rebuilt lazily after inserts and removals
}

interface ResourceBucket {
  namespaces: Map<string, NamespaceBucket>;
  sortedNamespaces: string[] | null;
  size: number;
}

/** The last `window` events of one resource, oldest first once it wraps. */
interface History {
  events: StoreEvent[];
  next: number; // where the next event goes once the ring is full
  /** Highest revision whose successors are all retained: a watch from here or later can be served. */
  floor: number;
}

/** Options of the in-memory store. */
export interface MemoryStoreOptions {
  /** Events kept per resource for watch resume; a watch from an older revision gets 410 Gone. */
  historyWindow: number;
}

/** The in-memory ObjectStore. */
export class MemoryStore implements ObjectStore {
  private rv = 0;
  private readonly buckets = new Map<string, ResourceBucket>();
  private readonly history = new Map<string, History>();
  private readonly window: number;
  private readonly listeners = new Set<(ev: StoreEvent) => void>();

  constructor(opts: MemoryStoreOptions) {
    this.window = Math.max(1, Math.floor(opts.historyWindow));
  }

  currentRevision(): number {
    return this.rv;
  }

  get(resource: string, namespace: string, name: string): JsonObject | undefined {
    return this.buckets.get(resource)?.namespaces.get(namespace)?.objects.get(name);
  }

  private sortedNamespaces(b: ResourceBucket): string[] {
    if (!b.sortedNamespaces) b.sortedNamespaces = [...b.namespaces.keys()].sort();
    return b.sortedNamespaces;
  }

  private sortedNames(nb: NamespaceBucket): string[] {
    if (!nb.sorted) nb.sorted = [...nb.objects.keys()].sort();
    return nb.sorted;
  }

  list(resource: string, namespace?: string): JsonObject[] {
    return this.listPage(resource, namespace, undefined, Number.MAX_SAFE_INTEGER).items;
  }

  listPage(resource: string, namespace: string | undefined, afterKey: string | undefined, limit: number): { items: JsonObject[]; more: boolean; remaining: number } {
    const b = this.buckets.get(resource);
    const items: JsonObject[] = [];
    if (!b) return { items, more: false, remaining: 0 };
    const namespaces = namespace === undefined ? this.sortedNamespaces(b) : b.namespaces.has(namespace) ? [namespace] : [];
    let afterNs: string | undefined;
    let afterName: string | undefined;
    if (afterKey !== undefined) {
      const slash = afterKey.indexOf('/');
      afterNs = afterKey.slice(0, slash);
      afterName = afterKey.slice(slash + 1);
    }
    let more = false;
    let remaining = 0;
    for (let n = 0; n < namespaces.length; n++) {
      const ns = namespaces[n]!;
      if (afterNs !== undefined && ns < afterNs) continue;
      const nb = b.namespaces.get(ns)!;
      const names = this.sortedNames(nb);
      const start = afterNs !== undefined && ns === afterNs && afterName !== undefined ? upperBound(names, afterName) : 0;
      for (let i = start; i < names.length; i++) {
        if (items.length >= limit) {
          more = true;
          remaining += names.length - i;
          break;
        }
        items.push(nb.objects.get(names[i]!)!);
      }
      if (more) {
        // Count what is left in later namespaces for remainingItemCount.
        for (const later of namespaces.slice(n + 1)) remaining += b.namespaces.get(later)!.objects.size;
        break;
      }
    }
    return { items, more, remaining };
  }

  count(resource: string, namespace?: string): number {
    const b = this.buckets.get(resource);
    if (!b) return 0;
    if (namespace === undefined) return b.size;
    return b.namespaces.get(namespace)?.objects.size ?? 0;
  }

  private stamp(obj: JsonObject, rv: number): JsonObject {
    const meta = { ...(asObject(obj['metadata']) ?? {}), resourceVersion: String(rv) };
    return { ...obj, metadata: meta };
  }

  create(resource: string, obj: JsonObject): JsonObject {
    const ns = namespaceOf(obj);
    const name = nameOf(obj);
    let b = this.buckets.get(resource);
    if (!b) {
      b = { namespaces: new Map(), sortedNamespaces: null, size: 0 };
      this.buckets.set(resource, b);
    }
    let nb = b.namespaces.get(ns);
    if (!nb) {
      nb = { objects: new Map(), sorted: null };
      b.namespaces.set(ns, nb);
      b.sortedNamespaces = null;
    }
    const rv = ++this.rv;
    const stored = this.stamp(obj, rv);
    nb.objects.set(name, stored);
    nb.sorted = null;
    b.size++;
    this.commit({ rv, type: 'ADDED', resource, namespace: ns, name, object: stored, previous: undefined });
    return stored;
  }

  update(resource: string, obj: JsonObject): JsonObject {
    const ns = namespaceOf(obj);
    const name = nameOf(obj);
    const nb = this.buckets.get(resource)?.namespaces.get(ns);
    const previous = nb?.objects.get(name);
    if (!nb || !previous) return this.create(resource, obj);
    const rv = ++this.rv;
    const stored = this.stamp(obj, rv);
    nb.objects.set(name, stored);
    this.commit({ rv, type: 'MODIFIED', resource, namespace: ns, name, object: stored, previous });
    return stored;
  }

  remove(resource: string, namespace: string, name: string): JsonObject | undefined {
    const b = this.buckets.get(resource);
    const nb = b?.namespaces.get(namespace);
    const previous = nb?.objects.get(name);
    if (!b || !nb || !previous) return undefined;
    nb.objects.delete(name);
    nb.sorted = null;
    b.size--;
    if (nb.objects.size === 0) {
      b.namespaces.delete(namespace);
      b.sortedNamespaces = null;
    }
    const rv = ++this.rv;
    const last = this.stamp(previous, rv);
    this.commit({ rv, type: 'DELETED', resource, namespace, name, object: last, previous });
    return last;
  }

  private commit(ev: StoreEvent): void {
    let h = this.history.get(ev.resource);
    if (!h) this.history.set(ev.resource, (h = { events: [], next: 0, floor: 0 }));
    if (h.events.length < this.window) {
      h.events.push(ev);
    } else {
      h.floor = h.events[h.next]!.rv; // the evicted event: watches must start at or after it
      h.events[h.next] = ev;
      h.next = (h.next + 1) % this.window;
    }
    for (const l of this.listeners) l(ev);
  }

  eventsAfter(resource: string, rv: number): StoreEvent[] | ReplayGap {
    if (rv > this.rv) return { gap: 'future', current: this.rv };
    const h = this.history.get(resource);
    if (!h) return [];
    if (rv < h.floor) return { gap: 'expired', oldest: h.floor + 1 };
    const out: StoreEvent[] = [];
    const n = h.events.length;
    for (let i = 0; i < n; i++) {
      const ev = h.events[(h.next + i) % n]!;
      if (ev.rv > rv) out.push(ev);
    }
    return out;
  }

  subscribe(listener: (ev: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  resources(): string[] {
    return [...this.buckets.entries()].filter(([, b]) => b.size > 0).map(([k]) => k);
  }
}

function upperBound(sorted: string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
