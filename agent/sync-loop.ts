/**
 * The agent's control loop: keeps the informers' objects indexed by service, marks services dirty
 * on events, and runs passes of plan (only what changed) + reconcile. The rules it keeps:
 *   - nothing is written before every watch has listed once (kpng's Sync): a partial cache would
 *     write services without their endpoints, or prune services not listed yet;
 *   - the first pass after sync, and every resync, plans everything and diffs against the maps;
 *   - later passes plan only the services whose objects changed;
 *   - a failed pass is retried with back-off, re-reading the maps first.
 * Each pass logs one line: what changed, how long it took, how old the oldest change was.
 */
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { type MapSet, planServiceEntries } from '../bpf/index.ts';
import { describeError } from './errors.ts';
import type { WatchEvent } from './informers.ts';
import type { Logger } from './logger.ts';
import { type ClusterState, type PlanContext, type PlannedServicePort, computeNodeAddresses, computePlanContext, objectKey, planDatapath, planServicePorts, sliceServiceKey } from './plan-datapath.ts';
import { isNoop, MapReconciler, type ReconcileResult } from './reconcile-maps.ts';
import { ServiceIds } from './service-ids.ts';

/** What the loop reports about itself (health endpoint, tests). */
export interface SyncStatus {
  synced: boolean;
  ready: boolean;
  passes: number;
  failures: number;
  services: number;
  lastPass?: ReconcileResult & { full: boolean; planMs: number; lagMs: number; at: string };
  lastError?: string;
}

/** Options of the loop. */
export interface SyncLoopOptions {
  maps: MapSet;
  nodeName: string;
  log: Logger;
  /** Back-off after failed passes: 100 ms doubling to 10 s. */
  retryBaseMs?: number;
}

/** Keeps one node's maps in step with the cluster. */
export class SyncLoop {
  readonly #log: Logger;
  readonly #nodeName: string;
  readonly #reconciler: MapReconciler;
  #ids: ServiceIds;
  readonly #services = new Map<string, V1Service>();
  readonly #slices = new Map<string, Map<string, V1EndpointSlice>>();
  readonly #sliceOwner = new Map<string, string>();
  readonly #nodes = new Map<string, V1Node>();
  readonly #pods = new Map<string, V1Pod>();
  /** Pod events seen: the mesh side re-plans source identities on them even when no L4 pass follows. */
  #podEvents = 0;
  #meshPorts: ReadonlySet<string> = new Set(); // issue 5: mesh flows from the NodeState (agent/proxy/)
  readonly #planned = new Map<string, PlannedServicePort[]>();
  readonly #dirty = new Set<string>();
  #ctx: PlanContext;
  #full = true;
  #synced = false;
  #ready = false;
  #scheduled = false;
  #running: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #oldestChange: number | undefined;
  #failures = 0;
  #stopped = false;
  readonly #retryBaseMs: number;
  readonly #status: SyncStatus = { synced: false, ready: false, passes: 0, failures: 0, services: 0 };
  readonly #readyWaiters: Array<() => void> = [];

  constructor(opts: SyncLoopOptions) {
    this.#log = opts.log;
    this.#nodeName = opts.nodeName;
    this.#retryBaseMs = opts.retryBaseMs ?? 100;
    // Ids come from what an earlier agent pinned: a restart keeps every service's id.
    this.#ids = ServiceIds.fromMaps(opts.maps);
    this.#reconciler = new MapReconciler(opts.maps);
    this.#ctx = { nodeName: opts.nodeName, nodeAddresses: [], localPodIps: new Set() };
  }

  /** The loop's status. */
  status(): SyncStatus {
    return { ...this.#status, synced: this.#synced, ready: this.#ready, services: this.#planned.size };
  }

  /** Service-port key of each service id in use (for dumps). */
  serviceNames(): Map<number, string> {
    const out = new Map<number, string>();
    for (const [key, id] of this.#ids.services()) out.set(id, key);
    return out;
  }

  /** Resolves after the first complete pass. */
  whenReady(): Promise<void> {
    if (this.#ready) return Promise.resolve();
    return new Promise((r) => this.#readyWaiters.push(r));
  }

  /** The informers' state as the planner sees it. */
  /** How many Pod events this loop has taken (monotonic). */
  podEvents(): number {
    return this.#podEvents;
  }

  snapshot(): ClusterState {
    const slices: V1EndpointSlice[] = [];
    for (const m of this.#slices.values()) slices.push(...m.values());
    return { nodeName: this.#nodeName, services: [...this.#services.values()], endpointSlices: slices, nodes: [...this.#nodes.values()], localPods: [...this.#pods.values()], meshPorts: this.#meshPorts };
  }

  #touch(key: string): void {
    this.#dirty.add(key);
    this.#oldestChange ??= performance.now();
    this.#schedule();
  }

  /** A Service event. */
  onService(type: WatchEvent, s: V1Service): void {
    const key = objectKey(s);
    if (type === 'delete') this.#services.delete(key);
    else this.#services.set(key, s);
    this.#touch(key);
  }

  /** An EndpointSlice event. */
  onEndpointSlice(type: WatchEvent, s: V1EndpointSlice): void {
    const sliceKey = objectKey(s);
    const prevOwner = this.#sliceOwner.get(sliceKey);
    const owner = type === 'delete' ? undefined : sliceServiceKey(s);
    if (prevOwner && prevOwner !== owner) {
      this.#slices.get(prevOwner)?.delete(sliceKey);
      if (this.#slices.get(prevOwner)?.size === 0) this.#slices.delete(prevOwner);
      this.#touch(prevOwner);
    }
    if (owner) {
      let m = this.#slices.get(owner);
      if (!m) this.#slices.set(owner, (m = new Map()));
      m.set(sliceKey, s);
      this.#sliceOwner.set(sliceKey, owner);
      this.#touch(owner);
    } else {
      this.#sliceOwner.delete(sliceKey);
    }
  }

  /** A Node event: only a change of the NodePort addresses matters. */
  onNode(type: WatchEvent, n: V1Node): void {
    const name = n.metadata?.name ?? '';
    if (type === 'delete') this.#nodes.delete(name);
    else this.#nodes.set(name, n);
    const addrs = computeNodeAddresses([...this.#nodes.values()]);
    if (addrs.join(',') === this.#ctx.nodeAddresses.join(',')) return;
    this.#ctx = { ...this.#ctx, nodeAddresses: addrs };
    for (const [key, s] of this.#services) if (s.spec?.type === 'NodePort' || s.spec?.type === 'LoadBalancer') this.#touch(key);
  }

  /** A Pod event (this node's pods): places endpoints whose slices lack nodeName. */
  onPod(type: WatchEvent, p: V1Pod): void {
    this.#podEvents++;
    const key = objectKey(p);
    if (type === 'delete') this.#pods.delete(key);
    else this.#pods.set(key, p);
    const ips = computePlanContext({ nodeName: this.#nodeName, services: [], endpointSlices: [], nodes: [], localPods: [...this.#pods.values()] }).localPodIps;
    const before = this.#ctx.localPodIps;
    if (ips.size === before.size && [...ips].every((ip) => before.has(ip))) return;
    this.#ctx = { ...this.#ctx, localPodIps: ips };
    for (const [svc, slices] of this.#slices) {
      for (const s of slices.values()) {
        if ((s.endpoints ?? []).some((e) => !e.nodeName)) {
          this.#touch(svc);
          break;
        }
      }
    }
  }

  // --- mesh flows (issue 5; owner: agent/proxy/) ---
  /** The service ports the NodeState sends to the node proxy (`<ns>/<service>:<port>`); re-plans those that changed. */
  setMeshPorts(ports: ReadonlySet<string>): void {
    const before = this.#meshPorts;
    this.#meshPorts = ports;
    this.#ctx = { ...this.#ctx, meshPorts: ports };
    for (const p of new Set([...before, ...ports])) {
      if (before.has(p) !== ports.has(p)) this.#touch(p.slice(0, p.lastIndexOf(':')));
    }
  }
  // --- end mesh flows ---

  /** Every watch has listed once: from now on passes run, and the first plans everything. */
  markSynced(): void {
    if (this.#synced) return;
    this.#synced = true;
    this.#full = true;
    this.#oldestChange ??= performance.now();
    this.#schedule();
  }

  /** Plans everything and re-reads the maps on the next pass (periodic drift repair). */
  resync(): void {
    this.#full = true;
    this.#reconciler.readActual();
    this.#schedule();
  }

  #schedule(delayMs = 0): void {
    if (this.#stopped || !this.#synced || this.#scheduled) return;
    this.#scheduled = true;
    const go = (): void => {
      this.#timer = undefined;
      // One pass at a time; a pass that starts after this one sees its leftovers.
      this.#running = (this.#running ?? Promise.resolve()).then(() => this.#pass());
    };
    // setImmediate coalesces a burst of watch events delivered together into one pass.
    if (delayMs > 0) this.#timer = setTimeout(go, delayMs);
    else setImmediate(go);
  }

  #pass(): void {
    this.#scheduled = false;
    if (this.#stopped) return;
    const full = this.#full;
    const lagMs = this.#oldestChange === undefined ? 0 : performance.now() - this.#oldestChange;
    this.#oldestChange = undefined;
    const t0 = performance.now();
    const problems: string[] = [];
    let result: ReconcileResult;
    let planMs = 0;
    try {
      if (full) {
        this.#full = false;
        this.#dirty.clear();
        const state = this.snapshot();
        this.#ctx = computePlanContext(state);
        const plan = planDatapath(state, this.#ids);
        this.#ids = plan.ids;
        problems.push(...plan.problems);
        this.#planned.clear();
        for (const p of plan.services) {
          const list = this.#planned.get(p.service);
          if (list) list.push(p);
          else this.#planned.set(p.service, [p]);
        }
        const entries = [];
        for (const p of plan.services) {
          try {
            entries.push(planServiceEntries(p.spec));
          } catch (err) {
            problems.push(`service ${p.key}: ${describeError(err)}; left as it was`);
          }
        }
        this.#reconciler.replaceAll(entries);
      } else {
        const keys = [...this.#dirty];
        this.#dirty.clear();
        for (const key of keys) this.#planOne(key, problems);
      }
      planMs = performance.now() - t0;
      result = this.#reconciler.reconcile({ prune: true });
    } catch (err) {
      this.#failures++;
      this.#status.failures++;
      this.#status.lastError = describeError(err);
      // The next pass plans everything and re-reads the maps: nothing learnt so far is lost.
      this.#full = true;
      const delay = Math.min(this.#retryBaseMs * 2 ** (this.#failures - 1), 10_000);
      this.#log.error('reconcile failed, retrying', { error: this.#status.lastError, inMs: delay });
      this.#oldestChange ??= performance.now();
      this.#schedule(delay);
      return;
    }
    this.#failures = 0;
    this.#status.passes++;
    this.#status.lastPass = { ...result, full, planMs, lagMs, at: new Date().toISOString() };
    for (const p of problems) this.#log.warn('plan problem', { problem: p });
    for (const c of result.conflicts) this.#log.warn('frontend conflict', { conflict: c });
    if (full || !isNoop(result)) {
      this.#log.info('reconciled', {
        full,
        services: this.#planned.size,
        examined: result.examined,
        svcWritten: result.servicesWritten,
        svcRemoved: result.servicesRemoved,
        feWritten: result.frontendsWritten,
        feDeleted: result.frontendsDeleted,
        slotsWritten: result.slotsWritten,
        slotsDeleted: result.slotsDeleted,
        beWritten: result.backendsWritten,
        beDeleted: result.backendsDeleted,
        planMs: round(planMs),
        applyMs: round(result.ms),
        lagMs: round(lagMs),
      });
    }
    if (!this.#ready) {
      this.#ready = true;
      for (const w of this.#readyWaiters.splice(0)) w();
    }
    if (this.#reconciler.pending) this.#schedule();
  }

  #planOne(svcKey: string, problems: string[]): void {
    const svc = this.#services.get(svcKey);
    const slices = [...(this.#slices.get(svcKey)?.values() ?? [])];
    const next = svc ? planServicePorts(svc, slices, this.#ctx, this.#ids, problems) : [];
    const prev = this.#planned.get(svcKey) ?? [];
    const keep = new Set(next.map((p) => p.key));
    for (const p of prev) {
      if (keep.has(p.key)) continue;
      this.#ids.releaseService(p.key);
      this.#reconciler.removeService(p.spec.id);
    }
    for (const p of next) {
      try {
        this.#reconciler.setService(planServiceEntries(p.spec));
      } catch (err) {
        problems.push(`service ${p.key}: ${describeError(err)}; left as it was`);
      }
    }
    if (next.length) this.#planned.set(svcKey, next);
    else this.#planned.delete(svcKey);
  }

  /** Lets the pass in flight finish, then stops. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
  }

  /** Waits until no pass is scheduled or running (tests, benchmarks). */
  async idle(): Promise<void> {
    for (;;) {
      await new Promise((r) => setImmediate(r));
      const r = this.#running;
      await r;
      if (!this.#scheduled && r === this.#running) return;
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
