/**
 * The reconciler: holds the desired entries of every service (from the planner, through
 * planServiceEntries) and what is in the maps, diffs the services marked dirty and applies the
 * difference in batches, in an order a concurrent connect() can never trip over:
 *
 *   write  backends → slots → services (counts) → frontends
 *   delete frontends → counters (zeroed) → services → slots → backends
 *
 * A frontend is written only once its service is complete and deleted before anything it points at,
 * and a service's count is raised only after its slots exist, so a lookup never sees a
 * half-written service. What is in the maps is read once at start (adoption) and on every full
 * resync; in between the reconciler trusts its own record of what it wrote.
 *
 * Counters (nm_lb_stats) are a preallocated per-CPU array indexed by service id: a new service
 * costs no write. A released id's slot is zeroed in the pass that removes the service, after its
 * frontends are gone (no new connect counts) and before its service entry: an agent that dies in
 * between still finds the service entry, adopts the id and zeroes it again when it removes it, so
 * a reused id never inherits old counts.
 */
import type { MapSet, NmLb4Key, NmLb6Key, NmLbBe, NmLbFe, NmLbSlot, NmLbSlotKey, NmLbSvc, ServiceEntries } from '../bpf/index.ts';
import { zeroServiceCounters } from '../bpf/index.ts';
import { frontendKey } from './service-ids.ts';

/**
 * The entries of one service id. Arrays, not maps: a full sync of 10,000 services would otherwise
 * build 40,000 small Maps; lookups are built per id only when there is something to diff against.
 */
interface SvcTables {
  svc: NmLbSvc | undefined;
  fe4: Array<[string, NmLb4Key, NmLbFe]>;
  fe6: Array<[string, NmLb6Key, NmLbFe]>;
  slots: Array<[number, NmLbSlot]>;
  be: Array<[number, NmLbBe]>;
}

/** What one reconcile pass changed, by map. */
export interface ReconcileCounts {
  servicesWritten: number;
  servicesRemoved: number;
  frontendsWritten: number;
  frontendsDeleted: number;
  slotsWritten: number;
  slotsDeleted: number;
  backendsWritten: number;
  backendsDeleted: number;
}

/** The result of a pass: counts, how many service ids were looked at, how long it took. */
export interface ReconcileResult extends ReconcileCounts {
  /** Service ids diffed in this pass. */
  examined: number;
  /** Deletes held back because pruning was not allowed yet. */
  deferredDeletes: number;
  /** Wall-clock milliseconds of the pass (diff and map writes). */
  ms: number;
  /** Frontends claimed by two service ports; the lower id keeps them. */
  conflicts: string[];
}

/** True when a pass changed nothing. */
export function isNoop(r: ReconcileCounts): boolean {
  return r.servicesWritten + r.servicesRemoved + r.frontendsWritten + r.frontendsDeleted + r.slotsWritten + r.slotsDeleted + r.backendsWritten + r.backendsDeleted === 0;
}

function emptyTables(): SvcTables {
  return { svc: undefined, fe4: [], fe6: [], slots: [], be: [] };
}

function isEmpty(t: SvcTables): boolean {
  return !t.svc && t.fe4.length === 0 && t.fe6.length === 0 && t.slots.length === 0 && t.be.length === 0;
}

function tablesOf(e: ServiceEntries): SvcTables {
  return {
    svc: e.svc,
    fe4: e.fe4.map(([k, v]) => [frontendKey(k.addr, k.port, k.proto), k, v]),
    fe6: e.fe6.map(([k, v]) => [frontendKey(k.addr, k.port, k.proto), k, v]),
    slots: e.slots.map(([k, v]) => [k.slot, v]),
    be: e.backends.map(([id, v]) => [id, v]),
  };
}

function same(a: object | undefined, b: object | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  for (const k of Object.keys(ra)) if (ra[k] !== rb[k]) return false;
  for (const k of Object.keys(rb)) if (!(k in ra)) return false;
  return true;
}

/** Which service id owns a frontend key: the lowest id among those that want it. */
class FrontendOwners {
  readonly #claims = new Map<string, Set<number>>();

  claim(key: string, id: number): void {
    let s = this.#claims.get(key);
    if (!s) this.#claims.set(key, (s = new Set()));
    s.add(id);
  }

  unclaim(key: string, id: number): void {
    const s = this.#claims.get(key);
    if (!s) return;
    s.delete(id);
    if (s.size === 0) this.#claims.delete(key);
  }

  owner(key: string): number | undefined {
    const s = this.#claims.get(key);
    if (!s) return undefined;
    let min: number | undefined;
    for (const id of s) if (min === undefined || id < min) min = id;
    return min;
  }

  claimants(key: string): number[] {
    return [...(this.#claims.get(key) ?? [])];
  }
}

/** Diffs desired against actual and applies the difference to a MapSet (real or fake maps). */
export class MapReconciler {
  readonly #maps: MapSet;
  readonly #desired = new Map<number, SvcTables>();
  #actual = new Map<number, SvcTables>();
  readonly #dirty = new Set<number>();
  readonly #owners = new FrontendOwners();
  // Which service id's record holds a frontend ('4|key' / '6|key'), to move it when it changes hands.
  #actualFe = new Map<string, number>();
  #actualRead = false;

  constructor(maps: MapSet) {
    this.#maps = maps;
  }

  /** Service ids whose desired entries are set. */
  get desiredIds(): number[] {
    return [...this.#desired.keys()];
  }

  /** Whether there is work for reconcile(). */
  get pending(): boolean {
    return this.#dirty.size > 0 || !this.#actualRead;
  }

  #setClaims(id: number, prev: SvcTables | undefined, next: SvcTables | undefined): void {
    const wanted = new Set<string>();
    for (const [fk] of next?.fe4 ?? []) wanted.add(`4|${fk}`);
    for (const [fk] of next?.fe6 ?? []) wanted.add(`6|${fk}`);
    const keys = new Set(wanted);
    for (const [fk] of prev?.fe4 ?? []) keys.add(`4|${fk}`);
    for (const [fk] of prev?.fe6 ?? []) keys.add(`6|${fk}`);
    for (const k of keys) {
      const before = this.#owners.owner(k);
      if (wanted.has(k)) this.#owners.claim(k, id);
      else this.#owners.unclaim(k, id);
      const after = this.#owners.owner(k);
      // A frontend that changes hands must be rewritten by its new owner.
      if (after !== undefined && after !== before && after !== id) this.#dirty.add(after);
    }
  }

  /** Sets (or replaces) the desired entries of one service id and marks it dirty. */
  setService(entries: ServiceEntries): void {
    const next = tablesOf(entries);
    this.#setClaims(entries.id, this.#desired.get(entries.id), next);
    this.#desired.set(entries.id, next);
    this.#dirty.add(entries.id);
  }

  /** Drops a service id from the desired state and marks it dirty (its entries go on the next pass). */
  removeService(id: number): void {
    const prev = this.#desired.get(id);
    if (!prev) return;
    this.#setClaims(id, prev, undefined);
    this.#desired.delete(id);
    this.#dirty.add(id);
  }

  /** Replaces the whole desired state (a full plan); every id desired now or before becomes dirty. */
  replaceAll(all: readonly ServiceEntries[]): void {
    const want = new Set(all.map((e) => e.id));
    for (const id of [...this.#desired.keys()]) if (!want.has(id)) this.removeService(id);
    for (const e of all) this.setService(e);
  }

  /**
   * Reads the maps into the record of what is there (adoption at start, and every full resync):
   * entries are grouped by the service id they belong to, and every id found becomes dirty.
   */
  readActual(): void {
    const actual = new Map<number, SvcTables>();
    const get = (id: number): SvcTables => {
      let t = actual.get(id);
      if (!t) actual.set(id, (t = emptyTables()));
      return t;
    };
    for (const [k, v] of this.#maps.map('nm_lb4_fe').entries()) get(v.svc_id).fe4.push([frontendKey(k.addr, k.port, k.proto), k, v]);
    for (const [k, v] of this.#maps.map('nm_lb6_fe').entries()) get(v.svc_id).fe6.push([frontendKey(k.addr, k.port, k.proto), k, v]);
    for (const [id, v] of this.#maps.map('nm_lb_svc').entries()) get(id).svc = v;
    for (const [k, v] of this.#maps.map('nm_lb_slot').entries()) get(k.svc_id).slots.push([k.slot, v]);
    for (const [id, v] of this.#maps.map('nm_lb_be').entries()) get(v.svc_id).be.push([id, v]);
    this.#actual = actual;
    this.#actualFe = new Map();
    for (const [id, t] of actual) {
      for (const [fk] of t.fe4) this.#actualFe.set(`4|${fk}`, id);
      for (const [fk] of t.fe6) this.#actualFe.set(`6|${fk}`, id);
    }
    for (const id of actual.keys()) this.#dirty.add(id);
    for (const id of this.#desired.keys()) this.#dirty.add(id);
    this.#actualRead = true;
  }

  /** Marks every known id dirty: the next pass diffs everything (without re-reading the maps). */
  markAllDirty(): void {
    for (const id of this.#desired.keys()) this.#dirty.add(id);
    for (const id of this.#actual.keys()) this.#dirty.add(id);
  }

  /**
   * Applies the difference for every dirty id. With `prune: false` (before every informer has
   * listed once) nothing is deleted and ids that still need deletes stay dirty. On a failed map
   * write the record of the maps is dropped, so the next pass re-reads them before diffing.
   */
  reconcile(opts: { prune: boolean }): ReconcileResult {
    const started = performance.now();
    if (!this.#actualRead) this.readActual();
    const conflicts: string[] = [];
    const beUp: Array<[number, NmLbBe]> = [];
    const slotUp: Array<[NmLbSlotKey, NmLbSlot]> = [];
    const svcUp: Array<[number, NmLbSvc]> = [];
    const fe4Up: Array<[NmLb4Key, NmLbFe]> = [];
    const fe6Up: Array<[NmLb6Key, NmLbFe]> = [];
    const fe4Del: NmLb4Key[] = [];
    const fe6Del: NmLb6Key[] = [];
    const svcDel: number[] = [];
    const slotDel: NmLbSlotKey[] = [];
    const beDel: number[] = [];
    const statsZero: number[] = [];
    const after = new Map<number, SvcTables | undefined>();
    const moves: Array<{ fam: '4' | '6'; fk: string; from: number }> = [];
    let deferred = 0;
    const stillDirty = new Set<number>();
    const examined = this.#dirty.size;

    for (const id of this.#dirty) {
      const want = this.#desired.get(id);
      const have = this.#actual.get(id);
      const result = emptyTables();
      let deletes = 0;
      // Lookups over what is there, only when something is (a new service diffs against nothing).
      const haveBe = have?.be.length ? new Map(have.be) : undefined;
      const haveSlots = have?.slots.length ? new Map(have.slots) : undefined;
      const haveFe4 = have?.fe4.length ? new Map(have.fe4.map(([fk, , v]) => [fk, v])) : undefined;
      const haveFe6 = have?.fe6.length ? new Map(have.fe6.map(([fk, , v]) => [fk, v])) : undefined;
      if (want) {
        for (const e of want.be) {
          if (!same(haveBe?.get(e[0]), e[1])) beUp.push(e);
          result.be.push(e);
        }
        for (const [slot, v] of want.slots) {
          if (!same(haveSlots?.get(slot), v)) slotUp.push([{ svc_id: id, slot }, v]);
          result.slots.push([slot, v]);
        }
        if (want.svc && !same(have?.svc, want.svc)) svcUp.push([id, want.svc]);
        result.svc = want.svc;
        for (const e of want.fe4) {
          const [fk, k, v] = e;
          const owner = this.#owners.owner(`4|${fk}`);
          if (owner !== id) {
            conflicts.push(`${k.addr}:${k.port}/${k.proto} wanted by service ids ${this.#owners.claimants(`4|${fk}`).sort((a, b) => a - b).join(',')}; ${owner} keeps it`);
            continue;
          }
          if (!same(haveFe4?.get(fk), v)) fe4Up.push([k, v]);
          result.fe4.push(e);
          const from = this.#actualFe.get(`4|${fk}`);
          if (from !== undefined && from !== id) moves.push({ fam: '4', fk, from });
        }
        for (const e of want.fe6) {
          const [fk, k, v] = e;
          if (this.#owners.owner(`6|${fk}`) !== id) continue;
          if (!same(haveFe6?.get(fk), v)) fe6Up.push([k, v]);
          result.fe6.push(e);
          const from = this.#actualFe.get(`6|${fk}`);
          if (from !== undefined && from !== id) moves.push({ fam: '6', fk, from });
        }
      }
      if (have) {
        // Deletes: whatever this id has that it no longer wants. A frontend another id owns now is
        // left alone: that owner's write (earlier in this pass) has already replaced it.
        const keep4 = new Set(result.fe4.map(([fk]) => fk));
        const keep6 = new Set(result.fe6.map(([fk]) => fk));
        const keepSlots = new Set(result.slots.map(([s]) => s));
        const keepBe = new Set(result.be.map(([b]) => b));
        for (const e of have.fe4) {
          if (keep4.has(e[0]) || this.#owners.owner(`4|${e[0]}`) !== undefined) continue;
          deletes++;
          if (opts.prune) fe4Del.push(e[1]);
          else result.fe4.push(e);
        }
        for (const e of have.fe6) {
          if (keep6.has(e[0]) || this.#owners.owner(`6|${e[0]}`) !== undefined) continue;
          deletes++;
          if (opts.prune) fe6Del.push(e[1]);
          else result.fe6.push(e);
        }
        if (!want && have.svc) {
          deletes++;
          if (opts.prune) svcDel.push(id);
          else result.svc = have.svc;
        }
        for (const e of have.slots) {
          if (keepSlots.has(e[0])) continue;
          deletes++;
          if (opts.prune) slotDel.push({ svc_id: id, slot: e[0] });
          else result.slots.push(e);
        }
        for (const e of have.be) {
          if (keepBe.has(e[0])) continue;
          deletes++;
          if (opts.prune) beDel.push(e[0]);
          else result.be.push(e);
        }
      }
      // The id is released: its counters go back to zero (the slot itself cannot be deleted).
      if (!want && have && opts.prune) statsZero.push(id);
      if (deletes && !opts.prune) {
        deferred += deletes;
        stillDirty.add(id);
      }
      after.set(id, isEmpty(result) ? undefined : result);
    }

    try {
      const write = <K, V>(name: Parameters<MapSet['map']>[0], list: Array<[K, V]>): void => {
        if (list.length) (this.#maps.map(name) as unknown as { setMany(e: Array<[K, V]>): number }).setMany(list);
      };
      const del = <K>(name: Parameters<MapSet['map']>[0], list: K[]): void => {
        if (list.length) (this.#maps.map(name) as unknown as { deleteMany(k: K[]): number }).deleteMany(list);
      };
      write('nm_lb_be', beUp);
      write('nm_lb_slot', slotUp);
      write('nm_lb_svc', svcUp);
      write('nm_lb4_fe', fe4Up);
      write('nm_lb6_fe', fe6Up);
      del('nm_lb4_fe', fe4Del);
      del('nm_lb6_fe', fe6Del);
      zeroServiceCounters(this.#maps, statsZero);
      del('nm_lb_svc', svcDel);
      del('nm_lb_slot', slotDel);
      del('nm_lb_be', beDel);
    } catch (err) {
      // Part of a batch may have landed: forget what we think is in the maps and read them again.
      this.#actualRead = false;
      throw err;
    }

    for (const [id, t] of after) {
      const prev = this.#actual.get(id);
      if (prev) {
        for (const [fk] of prev.fe4) if (this.#actualFe.get(`4|${fk}`) === id) this.#actualFe.delete(`4|${fk}`);
        for (const [fk] of prev.fe6) if (this.#actualFe.get(`6|${fk}`) === id) this.#actualFe.delete(`6|${fk}`);
      }
      if (t) {
        this.#actual.set(id, t);
        for (const [fk] of t.fe4) this.#actualFe.set(`4|${fk}`, id);
        for (const [fk] of t.fe6) this.#actualFe.set(`6|${fk}`, id);
      } else {
        this.#actual.delete(id);
      }
    }
    // A frontend that moved from an id not diffed in this pass leaves that id's record.
    for (const m of moves) {
      if (after.has(m.from)) continue;
      const t = this.#actual.get(m.from);
      if (!t) continue;
      if (m.fam === '4') t.fe4 = t.fe4.filter(([fk]) => fk !== m.fk);
      else t.fe6 = t.fe6.filter(([fk]) => fk !== m.fk);
    }
    this.#dirty.clear();
    for (const id of stillDirty) this.#dirty.add(id);
    return {
      servicesWritten: svcUp.length,
      servicesRemoved: svcDel.length,
      frontendsWritten: fe4Up.length + fe6Up.length,
      frontendsDeleted: fe4Del.length + fe6Del.length,
      slotsWritten: slotUp.length,
      slotsDeleted: slotDel.length,
      backendsWritten: beUp.length,
      backendsDeleted: beDel.length,
      examined,
      deferredDeletes: deferred,
      ms: performance.now() - started,
      conflicts: [...new Set(conflicts)],
    };
  }
}
