/**
 * Background controllers that live in the server: the garbage collector (dependents of a deleted owner
 * are deleted, or lose the reference when another owner remains) and namespace termination (delete
 * every object of a terminating namespace, then the namespace). Both are driven by store events.
 */

import type { JsonObject } from './json.ts';
import { asArray, asObject, asString, isObject } from './json.ts';
import type { ObjectStore, StoreEvent } from './store.ts';

/** Where a stored object lives. */
export interface ObjectRef {
  storageKey: string;
  namespace: string;
  name: string;
}

/** What the collector needs from the REST layer (kept as callbacks to avoid an import cycle). */
export interface GcActions {
  /** Deletes an object as a client would, with the given propagation policy. */
  deleteObject(ref: ObjectRef, policy: 'Background' | 'Foreground' | 'Orphan'): void;
  /** Replaces the ownerReferences of an object (after an owner vanished or was orphaned). */
  setOwnerReferences(ref: ObjectRef, refs: JsonObject[]): void;
  /** Storage keys of namespaced resources, for namespace cleanup. */
  namespacedStorageKeys(): string[];
  /** Removes a namespace whose contents are gone (drops the `kubernetes` finalizer). */
  finalizeNamespace(name: string): void;
  log(line: string): void;
}

function refKey(r: ObjectRef): string {
  return `${r.storageKey}\n${r.namespace}\n${r.name}`;
}

function parseKey(k: string): ObjectRef {
  const [storageKey, namespace, name] = k.split('\n');
  return { storageKey: storageKey!, namespace: namespace!, name: name! };
}

function uidOf(obj: JsonObject | undefined): string | undefined {
  return asString(asObject(obj?.['metadata'])?.['uid']);
}

function ownerUids(obj: JsonObject | undefined): string[] {
  return asArray(asObject(obj?.['metadata'])?.['ownerReferences'])
    .map((r) => asString(asObject(r)?.['uid']))
    .filter((u): u is string => !!u);
}

/** The garbage collector and namespace lifecycle controller. */
export class GarbageCollector {
  private readonly store: ObjectStore;
  private readonly actions: GcActions;
  private readonly dependents = new Map<string, Set<string>>(); // owner uid -> dependent keys
  private readonly byUid = new Map<string, string>(); // uid -> key of every stored object
  private readonly pendingOwners = new Set<string>();
  private readonly terminating = new Set<string>();
  private scheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;

  constructor(store: ObjectStore, actions: GcActions) {
    this.store = store;
    this.actions = actions;
    this.unsubscribe = store.subscribe((ev) => this.observe(ev));
  }

  /** Stops timers and the store subscription. */
  close(): void {
    this.unsubscribe();
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  /** True when an object with this uid is stored. */
  exists(uid: string): boolean {
    return this.byUid.has(uid);
  }

  private observe(ev: StoreEvent): void {
    const key = refKey({ storageKey: ev.resource, namespace: ev.namespace, name: ev.name });
    const before = ev.previous ? ownerUids(ev.previous) : [];
    const after = ev.type === 'DELETED' ? [] : ownerUids(ev.object);
    for (const u of before) if (!after.includes(u)) this.dependents.get(u)?.delete(key);
    for (const u of after) {
      let s = this.dependents.get(u);
      if (!s) this.dependents.set(u, (s = new Set()));
      s.add(key);
    }
    const uid = uidOf(ev.object);
    if (ev.type === 'DELETED') {
      if (uid) {
        this.byUid.delete(uid);
        if (this.dependents.get(uid)?.size) {
          this.pendingOwners.add(uid);
          this.schedule();
        } else {
          this.dependents.delete(uid);
        }
      }
      if (ev.namespace && this.terminating.has(ev.namespace)) this.schedule();
    } else if (uid) {
      this.byUid.set(uid, key);
    }
    if (ev.resource === '/namespaces' && ev.type !== 'DELETED' && asString(asObject(ev.object['metadata'])?.['deletionTimestamp'])) {
      if (!this.terminating.has(ev.name)) {
        this.terminating.add(ev.name);
        this.schedule();
      }
    }
    if (ev.resource === '/namespaces' && ev.type === 'DELETED') this.terminating.delete(ev.name);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Deferred so the request that triggered it answers first, as the real (asynchronous) controllers do.
    setImmediate(() => {
      this.scheduled = false;
      this.run();
    });
  }

  private run(): void {
    const owners = [...this.pendingOwners];
    this.pendingOwners.clear();
    for (const uid of owners) this.collect(uid);
    for (const ns of [...this.terminating]) this.cleanNamespace(ns);
  }

  private collect(ownerUid: string): void {
    const deps = this.dependents.get(ownerUid);
    if (!deps) return;
    for (const key of [...deps]) {
      const ref = parseKey(key);
      const obj = this.store.get(ref.storageKey, ref.namespace, ref.name);
      if (!obj) continue;
      const refs = asArray(asObject(obj['metadata'])?.['ownerReferences']).filter(isObject);
      const remaining = refs.filter((r) => r['uid'] !== ownerUid && this.byUid.has(String(r['uid'])));
      try {
        if (remaining.length === 0) this.actions.deleteObject(ref, 'Background');
        else this.actions.setOwnerReferences(ref, refs.filter((r) => r['uid'] !== ownerUid));
      } catch (e) {
        this.actions.log(`garbage collector: ${ref.storageKey} ${ref.namespace}/${ref.name}: ${(e as Error).message}`);
      }
    }
    if (!this.dependents.get(ownerUid)?.size) this.dependents.delete(ownerUid);
  }

  /** Orphans the dependents of an owner (Orphan propagation): they keep running without the reference. */
  orphan(ownerUid: string): void {
    for (const key of [...(this.dependents.get(ownerUid) ?? [])]) {
      const ref = parseKey(key);
      const obj = this.store.get(ref.storageKey, ref.namespace, ref.name);
      if (!obj) continue;
      const refs = asArray(asObject(obj['metadata'])?.['ownerReferences']).filter(isObject);
      this.actions.setOwnerReferences(
        ref,
        refs.filter((r) => r['uid'] !== ownerUid),
      );
    }
  }

  /** Deletes the dependents of an owner now (Foreground propagation), depth first. */
  deleteDependentsNow(ownerUid: string): void {
    for (const key of [...(this.dependents.get(ownerUid) ?? [])]) {
      const ref = parseKey(key);
      if (!this.store.get(ref.storageKey, ref.namespace, ref.name)) continue;
      this.actions.deleteObject(ref, 'Foreground');
    }
  }

  private cleanNamespace(ns: string): void {
    let remaining = 0;
    for (const storageKey of this.actions.namespacedStorageKeys()) {
      for (const obj of this.store.list(storageKey, ns)) {
        remaining++;
        const meta = asObject(obj['metadata']);
        if (asString(meta?.['deletionTimestamp']) && asArray(meta?.['finalizers']).length > 0) continue;
        try {
          this.actions.deleteObject({ storageKey, namespace: ns, name: asString(meta?.['name']) ?? '' }, 'Background');
        } catch (e) {
          this.actions.log(`namespace ${ns} cleanup: ${storageKey} ${asString(meta?.['name'])}: ${(e as Error).message}`);
        }
      }
    }
    let left = 0;
    for (const storageKey of this.actions.namespacedStorageKeys()) left += this.store.count(storageKey, ns);
    if (left === 0) {
      this.terminating.delete(ns);
      this.actions.finalizeNamespace(ns);
    } else if (remaining > 0 && !this.retryTimer) {
      // Objects held by finalizers (or pods still terminating) keep the namespace; look again shortly.
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.schedule();
      }, 1000);
      this.retryTimer.unref();
    }
  }
}
