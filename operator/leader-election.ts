/**
 * Leader election on a coordination.k8s.io/v1 Lease, the algorithm of client-go's tools/leaderelection:
 * candidates try every retryPeriod (with jitter); a record held by someone else is respected until
 * leaseDuration has passed since this replica last saw it change (its own clock, so clock skew between
 * replicas does not matter); the leader renews every retryPeriod and steps down when it could not renew
 * for renewDeadline. Optimistic concurrency on the Lease's resourceVersion decides races.
 *
 * `isLeader()` is the fence every writer checks before each write: it turns false as soon as renewDeadline
 * has passed since the start of the last successful renewal, which is earlier than any other replica can
 * take over (leaseDuration after it saw that renewal), so two replicas never both write.
 */
import { isConflict } from './backoff.ts';
import { systemRuntimeClock, type RuntimeClock } from './clock.ts';
import type { KubeRest } from './kube-rest.ts';
import { describeError, silentOperatorLogger, type OperatorLogger } from './logger.ts';

/** The fields of a Lease that election reads and writes. */
export interface LeaseRecord {
  /** '' once released. */
  holderIdentity: string;
  leaseDurationSeconds: number;
  /** RFC 3339 (microseconds). */
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions: number;
}

/** Storage of one Lease; `create`/`update` reject with a 409-coded error when another replica got there first. */
export interface LeaseApi {
  /** What the lease object names, for logs ("nodemesh-system/nodemesh-operator"). */
  readonly description: string;
  get(): Promise<{ record: LeaseRecord; resourceVersion: string } | undefined>;
  create(record: LeaseRecord): Promise<void>;
  update(record: LeaseRecord, resourceVersion: string): Promise<void>;
}

/** Settings of a LeaderElector (client-go's defaults for controllers). */
export interface LeaderElectorOptions {
  /** This replica's identity (pod name, or host_pid). */
  identity: string;
  api: LeaseApi;
  /** How long others wait after the last observed change before taking over. Default 15 s. */
  leaseDurationMs?: number;
  /** How long the leader keeps trying to renew before stepping down. Default 10 s. */
  renewDeadlineMs?: number;
  /** Time between tries. Default 2 s. */
  retryPeriodMs?: number;
  clock?: RuntimeClock;
  log?: OperatorLogger;
  random?: () => number;
  onStartedLeading?: () => void;
  onStoppedLeading?: () => void;
  /** Called when the observed holder changes (undefined: nobody holds a valid lease). */
  onNewLeader?: (identity: string | undefined) => void;
}

/** What /status shows of the election. */
export interface LeaderStatus {
  identity: string;
  leader: boolean;
  /** The holder as last observed ('' or undefined when free). */
  holder: string | undefined;
  lease: string;
  lastRenewAt: string | undefined;
  transitions: number;
}

/** client-go's JitterFactor for candidates' retries. */
const JITTER_FACTOR = 1.2;

function sameRecord(a: LeaseRecord | undefined, b: LeaseRecord | undefined): boolean {
  if (!a || !b) return a === b;
  return a.holderIdentity === b.holderIdentity && a.renewTime === b.renewTime && a.acquireTime === b.acquireTime && a.leaseTransitions === b.leaseTransitions && a.leaseDurationSeconds === b.leaseDurationSeconds;
}

function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/** One replica's participation in the election. */
export class LeaderElector {
  readonly identity: string;
  readonly #o: Required<Omit<LeaderElectorOptions, 'onStartedLeading' | 'onStoppedLeading' | 'onNewLeader' | 'identity' | 'api'>>;
  readonly #api: LeaseApi;
  readonly #cb: Pick<LeaderElectorOptions, 'onStartedLeading' | 'onStoppedLeading' | 'onNewLeader'>;
  #state: 'idle' | 'candidate' | 'leader' | 'stopped' = 'idle';
  #timer: unknown;
  #observed: LeaseRecord | undefined;
  #observedAt = 0;
  /** Start time of the last successful acquire/renew request. */
  #lastRenewAt: number | undefined;
  #reportedHolder: string | undefined = undefined;

  constructor(opts: LeaderElectorOptions) {
    this.identity = opts.identity;
    this.#api = opts.api;
    this.#o = {
      leaseDurationMs: opts.leaseDurationMs ?? 15_000,
      renewDeadlineMs: opts.renewDeadlineMs ?? 10_000,
      retryPeriodMs: opts.retryPeriodMs ?? 2_000,
      clock: opts.clock ?? systemRuntimeClock,
      log: opts.log ?? silentOperatorLogger,
      random: opts.random ?? Math.random,
    };
    if (!(this.#o.leaseDurationMs > this.#o.renewDeadlineMs && this.#o.renewDeadlineMs > JITTER_FACTOR * this.#o.retryPeriodMs)) {
      throw new Error(`leader election for ${opts.api.description}: need leaseDuration (${this.#o.leaseDurationMs} ms) > renewDeadline (${this.#o.renewDeadlineMs} ms) > ${JITTER_FACTOR} × retryPeriod (${this.#o.retryPeriodMs} ms)`);
    }
    if (!opts.identity) throw new Error(`leader election for ${opts.api.description}: identity is empty`);
    this.#cb = { onStartedLeading: opts.onStartedLeading, onStoppedLeading: opts.onStoppedLeading, onNewLeader: opts.onNewLeader };
  }

  /** Starts competing (first try at once). */
  start(): void {
    if (this.#state !== 'idle') return;
    this.#state = 'candidate';
    this.#schedule(0);
  }

  /** True while this replica holds a lease it renewed less than renewDeadline ago: the write fence. */
  isLeader(): boolean {
    return this.#state === 'leader' && this.#lastRenewAt !== undefined && this.#o.clock.now() < this.#lastRenewAt + this.#o.renewDeadlineMs;
  }

  /** The holder of a lease this replica has seen valid, else undefined. */
  holder(): string | undefined {
    const r = this.#observed;
    if (!r?.holderIdentity) return undefined;
    if (r.holderIdentity === this.identity) return this.isLeader() ? this.identity : undefined;
    return this.#observedAt + r.leaseDurationSeconds * 1000 > this.#o.clock.now() ? r.holderIdentity : undefined;
  }

  /** For /status. */
  status(): LeaderStatus {
    return {
      identity: this.identity,
      leader: this.isLeader(),
      holder: this.holder(),
      lease: this.#api.description,
      lastRenewAt: this.#lastRenewAt !== undefined ? new Date(this.#lastRenewAt).toISOString() : undefined,
      transitions: this.#observed?.leaseTransitions ?? 0,
    };
  }

  /** Stops competing; a leader releases the lease (holder '') so another replica takes over at once. */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    if (this.#state === 'stopped') return;
    const wasLeader = this.isLeader();
    this.#state = 'stopped';
    this.#o.clock.clearTimeout(this.#timer);
    // An attempt in flight sees the stopped state after its request and does nothing more; it is not awaited
    // because a hung request only ends at its deadline.
    if (wasLeader) {
      this.#cb.onStoppedLeading?.();
      if (opts.release ?? true) await this.#release();
    }
    this.#lastRenewAt = undefined;
  }

  #schedule(ms: number): void {
    if (this.#state === 'stopped') return;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#tick().catch((err: unknown) => {
        this.#o.log.error('leader election step failed', { lease: this.#api.description, error: describeError(err) });
        this.#schedule(this.#o.retryPeriodMs);
      });
    }, ms);
  }

  async #tick(): Promise<void> {
    if (this.#state === 'stopped') return;
    const started = this.#o.clock.now();
    const ok = await this.#attempt(started);
    if (this.#isStopped()) return;
    const now = this.#o.clock.now();
    if (this.#state === 'leader') {
      if (ok) {
        this.#lastRenewAt = started;
      } else if (this.#lastRenewAt === undefined || now >= this.#lastRenewAt + this.#o.renewDeadlineMs) {
        this.#o.log.warn('lost leadership: could not renew the lease within the renew deadline', { lease: this.#api.description, renewDeadlineMs: this.#o.renewDeadlineMs });
        this.#state = 'candidate';
        this.#lastRenewAt = undefined;
        this.#cb.onStoppedLeading?.();
      }
      this.#schedule(this.#state === 'leader' ? this.#o.retryPeriodMs : this.#jittered());
    } else {
      if (ok) {
        this.#state = 'leader';
        this.#lastRenewAt = started;
        this.#o.log.info('became leader', { lease: this.#api.description, identity: this.identity });
        this.#cb.onStartedLeading?.();
        this.#schedule(this.#o.retryPeriodMs);
      } else {
        this.#schedule(this.#jittered());
      }
    }
    this.#reportHolder();
  }

  /** Re-reads the state after an await (stop() may have run meanwhile). */
  #isStopped(): boolean {
    return this.#state === 'stopped';
  }

  #jittered(): number {
    return Math.round(this.#o.retryPeriodMs * (1 + this.#o.random() * JITTER_FACTOR));
  }

  #reportHolder(): void {
    const h = this.holder();
    if (h !== this.#reportedHolder) {
      this.#reportedHolder = h;
      this.#cb.onNewLeader?.(h);
    }
  }

  /** Races a lease request against a deadline on the election's clock, so a hung API call cannot stall renewal. */
  async #bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: unknown;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.#o.clock.setTimeout(() => reject(new Error(`${what} on ${this.#api.description}: no answer within ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      this.#o.clock.clearTimeout(timer);
    }
  }

  /** client-go's tryAcquireOrRenew. */
  async #attempt(now: number): Promise<boolean> {
    const budget = Math.max(this.#o.retryPeriodMs, 1000);
    const fresh: LeaseRecord = {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    let current: Awaited<ReturnType<LeaseApi['get']>>;
    try {
      current = await this.#bounded(this.#api.get(), budget, 'read');
    } catch (err) {
      this.#o.log.debug('lease read failed', { lease: this.#api.description, error: describeError(err) });
      return false;
    }
    if (!current) {
      try {
        await this.#bounded(this.#api.create(fresh), budget, 'create');
      } catch (err) {
        this.#o.log.debug('lease create failed', { lease: this.#api.description, error: describeError(err) });
        return false;
      }
      this.#observed = fresh;
      this.#observedAt = this.#o.clock.now();
      return true;
    }
    const old = current.record;
    if (!sameRecord(old, this.#observed)) {
      this.#observed = old;
      this.#observedAt = this.#o.clock.now();
    }
    const heldByOther = old.holderIdentity !== '' && old.holderIdentity !== this.identity;
    if (heldByOther && this.#observedAt + old.leaseDurationSeconds * 1000 > now) return false;
    const next: LeaseRecord = old.holderIdentity === this.identity
      ? { ...fresh, acquireTime: old.acquireTime ?? fresh.acquireTime, leaseTransitions: old.leaseTransitions }
      : { ...fresh, leaseTransitions: old.leaseTransitions + 1 };
    try {
      await this.#bounded(this.#api.update(next, current.resourceVersion), budget, 'update');
    } catch (err) {
      this.#o.log.debug('lease update failed', { lease: this.#api.description, error: describeError(err) });
      return false;
    }
    this.#observed = next;
    this.#observedAt = this.#o.clock.now();
    return true;
  }

  async #release(): Promise<void> {
    // A renewal still in flight may land first and make our update conflict: re-read and try again.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const current = await this.#bounded(this.#api.get(), this.#o.retryPeriodMs, 'read');
        if (!current || current.record.holderIdentity !== this.identity) return;
        const now = this.#o.clock.now();
        await this.#bounded(
          this.#api.update({ holderIdentity: '', leaseDurationSeconds: 1, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: current.record.leaseTransitions }, current.resourceVersion),
          this.#o.retryPeriodMs,
          'release',
        );
        this.#o.log.info('released the lease', { lease: this.#api.description });
        return;
      } catch (err) {
        if (isConflict(err) && attempt < 2) continue;
        this.#o.log.warn('could not release the lease; others take over after it expires', { lease: this.#api.description, error: describeError(err) });
        return;
      }
    }
  }
}

/** The spec of a coordination.k8s.io/v1 Lease as JSON. */
interface LeaseJson {
  metadata?: { resourceVersion?: string };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

/** A LeaseApi over a real coordination.k8s.io/v1 Lease. */
export function createKubeLeaseApi(rest: KubeRest, namespace: string, name: string): LeaseApi {
  const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  const toBody = (r: LeaseRecord, resourceVersion?: string): unknown => ({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace, ...(resourceVersion ? { resourceVersion } : {}) },
    spec: {
      holderIdentity: r.holderIdentity,
      leaseDurationSeconds: r.leaseDurationSeconds,
      leaseTransitions: r.leaseTransitions,
      ...(r.acquireTime ? { acquireTime: r.acquireTime } : {}),
      ...(r.renewTime ? { renewTime: r.renewTime } : {}),
    },
  });
  const timeoutMs = 5_000;
  return {
    description: `Lease ${namespace}/${name}`,
    get: async () => {
      const lease = await rest.getOrUndefined<LeaseJson>(`${base}/${encodeURIComponent(name)}`, timeoutMs);
      if (!lease) return undefined;
      const s = lease.spec ?? {};
      return {
        resourceVersion: lease.metadata?.resourceVersion ?? '',
        record: {
          holderIdentity: s.holderIdentity ?? '',
          leaseDurationSeconds: s.leaseDurationSeconds ?? 15,
          acquireTime: s.acquireTime,
          renewTime: s.renewTime,
          leaseTransitions: s.leaseTransitions ?? 0,
        },
      };
    },
    create: async (r) => {
      await rest.json('POST', base, { body: toBody(r), timeoutMs });
    },
    update: async (r, resourceVersion) => {
      await rest.json('PUT', `${base}/${encodeURIComponent(name)}`, { body: toBody(r, resourceVersion), timeoutMs });
    },
  };
}
