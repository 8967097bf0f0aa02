/**
 * The reconciler: holds the desired entries of every service (from the planner, through
 * planServiceEntries) and what is in the maps, diffs the services marked dirty and applies the
 * difference in batches, in an order a concurrent connect() can never trip over:
 *
 *   write  backends → slots → services (counts) → counters → frontends
 *   delete frontends → services → slots → backends → counters
 *
 * A frontend is written only once its service is complete and deleted before anything it points at,
 * and a service's count is raised only after its slots exist, so a lookup never sees a
 * half-written service. What is in the maps is read once at start (adoption) and on every full
 * resync; in between the reconciler trusts its own record of what it wrote.
 */
import type { MapSet, NmLb4Key, NmLb6Key, NmLbBe, NmLbFe, NmLbSlot, NmLbSlotKey, NmLbStat, NmLbSvc, ServiceEntries } from '../bpf/index.ts';
import { possibleCpus } from '../bpf/index.ts';
import { frontendKey } from './service-ids.ts';

/** The entries of one service id, as tables keyed for diffing. */
interface SvcTables {
  svc: NmLbSvc | undefined;
  fe4: Map<string, [NmLb4Key, NmLbFe]>;
  fe6: Map<string, [NmLb6Key, NmLbFe]>;
  slots: Map<number, NmLbSlot>;
  be: Map<number, NmLbBe>;
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
  return { svc: undefined, fe4: new Map(), fe6: new Map(), slots: new Map(), be: new Map() };
}

function tablesOf(e: ServiceEntries): SvcTables {
  const t = emptyTables();
  t.svc = e.svc;
  for (const [k, v] of e.fe4) t.fe4.set(frontendKey(k.addr, k.port, k.proto), [k, v]);
  for (const [k, v] of e.fe6) t.fe6.set(frontendKey(k.addr, k.port, k.proto), [k, v]);
  for (const [k, v] of e.slots) t.slots.set(k.slot, v);
  for (const [id, v] of e.backends) t.be.set(id, v);
  return t;
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

function zeroStats(): NmLbStat[] {
  return Array.from({ length: possibleCpus }, () => ({ translations: 0n, no_backend: 0n, aff_hits: 0n, proxied: 0n }));
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
  #statsIds = new Set<number>();
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
    const keys = new Set<string>();
    for (const t of [prev, next]) {
      if (!t) continue;
      for (const k of t.fe4.keys()) keys.add(`4|${k}`);
      for (const k of t.fe6.keys()) keys.add(`6|${k}`);
    }
    for (const k of keys) {
      const fam = k.slice(0, 1);
      const fk = k.slice(2);
      const before = this.#owners.owner(k);
      const wants = next ? (fam === '4' ? next.fe4.has(fk) : next.fe6.has(fk)) : false;
      if (wants) this.#owners.claim(k, id);
      else this.#owners.unclaim(k, id);
      const after = this.#owners.owner(k);
      // A frontend that changes hands must be rewritten by its new owner.
      if (after !== undefined && after !== before) this.#dirty.add(after);
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
    for (const [k, v] of this.#maps.map('nm_lb4_fe').entries()) get(v.svc_id).fe4.set(frontendKey(k.addr, k.port, k.proto), [k, v]);
    for (const [k, v] of this.#maps.map('nm_lb6_fe').entries()) get(v.svc_id).fe6.set(frontendKey(k.addr, k.port, k.proto), [k, v]);
    for (const [id, v] of this.#maps.map('nm_lb_svc').entries()) get(id).svc = v;
    for (const [k, v] of this.#maps.map('nm_lb_slot').entries()) get(k.svc_id).slots.set(k.slot, v);
    for (const [id, v] of this.#maps.map('nm_lb_be').entries()) get(v.svc_id).be.set(id, v);
    this.#statsIds = new Set(this.#maps.map('nm_lb_stats').keys());
    this.#actual = actual;
    this.#actualFe = new Map();
    for (const [id, t] of actual) {
      for (const fk of t.fe4.keys()) this.#actualFe.set(`4|${fk}`, id);
      for (const fk of t.fe6.keys()) this.#actualFe.set(`6|${fk}`, id);
    }
    for (const id of actual.keys()) this.#dirty.add(id);
    for (const id of this.#statsIds) this.#dirty.add(id);
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
    const statsUp: number[] = [];
    const fe4Up: Array<[NmLb4Key, NmLbFe]> = [];
    const fe6Up: Array<[NmLb6Key, NmLbFe]> = [];
    const fe4Del: NmLb4Key[] = [];
    const fe6Del: NmLb6Key[] = [];
    const svcDel: number[] = [];
    const slotDel: NmLbSlotKey[] = [];
    const beDel: number[] = [];
    const statsDel: number[] = [];
    const after = new Map<number, SvcTables | undefined>();
    const moves: Array<{ fam: '4' | '6'; fk: string; from: number }> = [];
    let deferred = 0;
    const stillDirty = new Set<number>();
    const examined = this.#dirty.size;

    for (const id of this.#dirty) {
      const want = this.#desired.get(id);
      const have = this.#actual.get(id) ?? emptyTables();
      const result = emptyTables();
      let deletes = 0;
      if (want) {
        for (const [bid, v] of want.be) {
          if (!same(have.be.get(bid), v)) beUp.push([bid, v]);
          result.be.set(bid, v);
        }
        for (const [slot, v] of want.slots) {
          if (!same(have.slots.get(slot), v)) slotUp.push([{ svc_id: id, slot }, v]);
          result.slots.set(slot, v);
        }
        if (!same(have.svc, want.svc) && want.svc) svcUp.push([id, want.svc]);
        result.svc = want.svc;
        if (!this.#statsIds.has(id)) statsUp.push(id);
        for (const [fk, [k, v]] of want.fe4) {
          const owner = this.#owners.owner(`4|${fk}`);
          if (owner !== id) {
            conflicts.push(`${k.addr}:${k.port}/${k.proto} wanted by service ids ${this.#owners.claimants(`4|${fk}`).sort((a, b) => a - b).join(',')}; ${owner} keeps it`);
            continue;
          }
          if (!same(have.fe4.get(fk)?.[1], v)) fe4Up.push([k, v]);
          result.fe4.set(fk, [k, v]);
          const from = this.#actualFe.get(`4|${fk}`);
          if (from !== undefined && from !== id) moves.push({ fam: '4', fk, from });
        }
        for (const [fk, [k, v]] of want.fe6) {
          if (this.#owners.owner(`6|${fk}`) !== id) continue;
          if (!same(have.fe6.get(fk)?.[1], v)) fe6Up.push([k, v]);
          result.fe6.set(fk, [k, v]);
          const from = this.#actualFe.get(`6|${fk}`);
          if (from !== undefined && from !== id) moves.push({ fam: '6', fk, from });
        }
      }
      // Deletes: whatever this id has that it no longer wants. A frontend another id owns now is
      // left alone: that owner's write (earlier in this pass) has already replaced it.
      for (const [fk, [k]] of have.fe4) {
        if (result.fe4.has(fk) || this.#owners.owner(`4|${fk}`) !== undefined) continue;
        deletes++;
        if (opts.prune) fe4Del.push(k);
        else result.fe4.set(fk, have.fe4.get(fk) as [NmLb4Key, NmLbFe]);
      }
      for (const [fk, [k]] of have.fe6) {
        if (result.fe6.has(fk) || this.#owners.owner(`6|${fk}`) !== undefined) continue;
        deletes++;
        if (opts.prune) fe6Del.push(k);
        else result.fe6.set(fk, have.fe6.get(fk) as [NmLb6Key, NmLbFe]);
      }
      if (!want && have.svc) {
        deletes++;
        if (opts.prune) svcDel.push(id);
        else result.svc = have.svc;
      }
      for (const [slot, v] of have.slots) {
        if (result.slots.has(slot)) continue;
        deletes++;
        if (opts.prune) slotDel.push({ svc_id: id, slot });
        else result.slots.set(slot, v);
      }
      for (const [bid, v] of have.be) {
        if (result.be.has(bid)) continue;
        deletes++;
        if (opts.prune) beDel.push(bid);
        else result.be.set(bid, v);
      }
      if (!want && this.#statsIds.has(id)) {
        deletes++;
        if (opts.prune) statsDel.push(id);
      }
      if (deletes && !opts.prune) {
        deferred += deletes;
        stillDirty.add(id);
      }
      after.set(id, result.svc || result.fe4.size || result.fe6.size || result.slots.size || result.be.size ? result : undefined);
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
      if (statsUp.length) this.#maps.map('nm_lb_stats').setMany(statsUp.map((id) => [id, zeroStats()] as const), 'any');
      for (const id of statsUp) this.#statsIds.add(id);
      write('nm_lb4_fe', fe4Up);
      write('nm_lb6_fe', fe6Up);
      del('nm_lb4_fe', fe4Del);
      del('nm_lb6_fe', fe6Del);
      del('nm_lb_svc', svcDel);
      del('nm_lb_slot', slotDel);
      del('nm_lb_be', beDel);
      del('nm_lb_stats', statsDel);
      for (const id of statsDel) this.#statsIds.delete(id);
    } catch (err) {
      // Part of a batch may have landed: forget what we think is in the maps and read them again.
      this.#actualRead = false;
      throw err;
    }

    for (const [id, t] of after) {
      const prev = this.#actual.get(id);
      if (prev) {
        for (const fk of prev.fe4.keys()) if (this.#actualFe.get(`4|${fk}`) === id) this.#actualFe.delete(`4|${fk}`);
        for (const fk of prev.fe6.keys()) if (this.#actualFe.get(`6|${fk}`) === id) this.#actualFe.delete(`6|${fk}`);
      }
      if (t) {
        this.#actual.set(id, t);
        for (const fk of t.fe4.keys()) this.#actualFe.set(`4|${fk}`, id);
        for (const fk of t.fe6.keys()) this.#actualFe.set(`6|${fk}`, id);
      } else {
        this.#actual.delete(id);
      }
    }
    // A frontend that moved from an id not diffed in this pass leaves that id's record.
    for (const m of moves) {
      if (after.has(m.from)) continue;
      const t = this.#actual.get(m.from);
      if (m.fam === '4') t?.fe4.delete(m.fk);
      else t?.fe6.delete(m.fk);
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
