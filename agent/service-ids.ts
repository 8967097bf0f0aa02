/**
 * Stable service and backend ids. The kernel's tables are keyed by ids (nm_lb_svc, nm_lb_be), and
 * sessionAffinity entries and per-service counters hang off them, so an id must keep meaning the
 * same service port across agent restarts. Rather than persisting a second copy that can drift, a
 * restarted agent derives the table from the pinned maps themselves: a frontend (address, port,
 * protocol) names its service id, and a backend entry carries (service id, address, port).
 */
import { type MapSet } from '../bpf/index.ts';
import { MAX_SERVICE_ID } from '../bpf/index.ts';
import { AgentError } from './errors.ts';

/** Highest backend id (nm_lb_be keys are __u32, 0 = none). */
export const MAX_BACKEND_ID = 0xffffffff;

/** The frontend key the maps and the planner share: `addr|port|proto`. */
export function frontendKey(addr: string, port: number, proto: number): string {
  return `${addr}|${port}|${proto}`;
}

/** A backend's key within its service: one id per (service id, endpoint address, target port). */
export function backendKey(addr: string, port: number): string {
  return `${addr}|${port}`;
}

const ADOPTED = 'adopted:';

/**
 * Service ids by service-port key and backend ids by backendKey. Allocation walks a cursor upwards
 * (wrapping), so an id freed now is not handed out again soon: a counter or affinity entry that
 * outlives its service cannot be mistaken for a new one's.
 */
export class ServiceIds {
  readonly #svcByKey = new Map<string, number>();
  readonly #svcOwner = new Map<number, string>();
  // service id → (backendKey → backend id)
  readonly #beBySvc = new Map<number, Map<string, number>>();
  readonly #beUsed = new Set<number>();
  readonly #hints = new Map<string, number>();
  #nextSvc = 1;
  #nextBe = 1;

  /** Seeds the table from a node's maps: what an earlier agent wrote keeps its ids. */
  static fromMaps(maps: MapSet): ServiceIds {
    const ids = new ServiceIds();
    const reserve = (svcId: number): void => {
      if (!ids.#svcOwner.has(svcId)) ids.#svcOwner.set(svcId, `${ADOPTED}${svcId}`);
      ids.#nextSvc = Math.max(ids.#nextSvc, (svcId % MAX_SERVICE_ID) + 1);
    };
    for (const [k, v] of maps.map('nm_lb4_fe').entries()) {
      ids.#hints.set(frontendKey(k.addr, k.port, k.proto), v.svc_id);
      reserve(v.svc_id);
    }
    for (const [k, v] of maps.map('nm_lb6_fe').entries()) {
      ids.#hints.set(frontendKey(k.addr, k.port, k.proto), v.svc_id);
      reserve(v.svc_id);
    }
    for (const [id] of maps.map('nm_lb_svc').entries()) reserve(id);
    for (const [id, be] of maps.map('nm_lb_be').entries()) {
      ids.#claimBackend(backendKey(be.addr, be.port), id, be.svc_id);
      ids.#nextBe = Math.max(ids.#nextBe, id === MAX_BACKEND_ID ? 1 : id + 1);
    }
    return ids;
  }

  /** An independent copy (the pure planner works on one). */
  clone(): ServiceIds {
    const c = new ServiceIds();
    for (const [k, v] of this.#svcByKey) c.#svcByKey.set(k, v);
    for (const [k, v] of this.#svcOwner) c.#svcOwner.set(k, v);
    for (const [k, v] of this.#beBySvc) c.#beBySvc.set(k, new Map(v));
    for (const v of this.#beUsed) c.#beUsed.add(v);
    for (const [k, v] of this.#hints) c.#hints.set(k, v);
    c.#nextSvc = this.#nextSvc;
    c.#nextBe = this.#nextBe;
    return c;
  }

  /** Id of an existing service port, if it has one. */
  peekService(key: string): number | undefined {
    return this.#svcByKey.get(key);
  }

  /** Service-port key of an id ('adopted:<id>' while an adopted id waits for its owner). */
  serviceKey(id: number): string | undefined {
    return this.#svcOwner.get(id);
  }

  /** Every (key, id) of service ports that have one. */
  services(): IterableIterator<[string, number]> {
    return this.#svcByKey.entries();
  }

  /**
   * Id of a service port: its own if known, else the id its frontends had in the adopted maps (so
   * a restart keeps ids), else a fresh one.
   */
  serviceId(key: string, frontendKeys: readonly string[] = []): number {
    const known = this.#svcByKey.get(key);
    if (known !== undefined) return known;
    for (const fk of frontendKeys) {
      const hinted = this.#hints.get(fk);
      if (hinted !== undefined && this.#svcOwner.get(hinted) === `${ADOPTED}${hinted}`) {
        this.#svcByKey.set(key, hinted);
        this.#svcOwner.set(hinted, key);
        return hinted;
      }
    }
    for (let i = 0; i < MAX_SERVICE_ID; i++) {
      const id = this.#nextSvc;
      this.#nextSvc = id >= MAX_SERVICE_ID ? 1 : id + 1;
      if (!this.#svcOwner.has(id)) {
        this.#svcByKey.set(key, id);
        this.#svcOwner.set(id, key);
        return id;
      }
    }
    throw new AgentError('NM_ERR_AGENT_PLAN', `service port ${key}: all ${MAX_SERVICE_ID} service ids are in use; the node carries more service ports than nm_lb_svc can hold`);
  }

  /** Id of a backend of a service: stable per (service id, address, port). */
  backendId(svcId: number, addr: string, port: number): number {
    const key = backendKey(addr, port);
    const known = this.#beBySvc.get(svcId)?.get(key);
    if (known !== undefined) return known;
    for (let i = 0; i < 1_000_000; i++) {
      const id = this.#nextBe;
      this.#nextBe = id >= MAX_BACKEND_ID ? 1 : id + 1;
      if (!this.#beUsed.has(id)) {
        this.#claimBackend(key, id, svcId);
        return id;
      }
    }
    throw new AgentError('NM_ERR_AGENT_PLAN', `service id ${svcId}: no free backend id found`);
  }

  #claimBackend(key: string, id: number, svcId: number): void {
    this.#beUsed.add(id);
    let m = this.#beBySvc.get(svcId);
    if (!m) this.#beBySvc.set(svcId, (m = new Map()));
    m.set(key, id);
  }

  /** Frees the backend ids of a service that are not in `keep` (backendKey values). */
  retainBackends(svcId: number, keep: ReadonlySet<string>): void {
    const m = this.#beBySvc.get(svcId);
    if (!m) return;
    if (m.size === keep.size) {
      let all = true;
      for (const k of m.keys()) if (!keep.has(k)) all = false;
      if (all) return;
    }
    for (const [key, id] of m) {
      if (keep.has(key)) continue;
      this.#beUsed.delete(id);
      m.delete(key);
    }
    if (m.size === 0) this.#beBySvc.delete(svcId);
  }

  /** Frees a service port's id and its backends' ids. */
  releaseService(key: string): void {
    const id = this.#svcByKey.get(key);
    if (id === undefined) return;
    this.#svcByKey.delete(key);
    this.#svcOwner.delete(id);
    this.retainBackends(id, new Set());
  }

  /** Frees every service port not in `keep`, and every adopted id nobody claimed. */
  retainServices(keep: ReadonlySet<string>): void {
    for (const key of [...this.#svcByKey.keys()]) if (!keep.has(key)) this.releaseService(key);
    for (const [id, owner] of [...this.#svcOwner]) {
      if (!owner.startsWith(ADOPTED)) continue;
      this.#svcOwner.delete(id);
      this.retainBackends(id, new Set());
    }
    this.#hints.clear();
  }
}
