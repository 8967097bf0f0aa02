/** The agent's certificate manager: one SVID per workload identity on this node, renewed at half-life, kept through CA outages. */
import { systemClock, MAX_TIMER_MS, type Clock } from './clock.ts';
import { CertStore, splitStored } from './cert-store.ts';
import { CertsError } from './errors.ts';
import { computeRenewAt, computeRetryDelay, DEFAULT_JITTER, DEFAULT_RETRY, type RetryPolicy } from './plan-renewal.ts';
import { checkIdentity, checkIssuedChain, generateKeyAndCsr, identityKey, spiffeIdOf, spkiOfKeyPem, type WorkloadIdentity } from './workload-key.ts';

/** The signer's answer. The transport (HTTPS to the operator, or the API server) is the caller's business. */
export interface SignedCertificate {
  /** Leaf first, then intermediate(s), PEM. */
  certChainPem: string;
  /** Informational; the leaf's own notAfter is what counts. */
  notAfter?: Date | string | number;
}

/** Asks the CA to sign `csrPem` for `identity`. Rejects when the CA is unreachable or refuses. */
export type RequestCertificate = (csrPem: string, identity: WorkloadIdentity) => Promise<SignedCertificate>;

/** A certificate the proxy can present. */
export interface WorkloadCertificate {
  identity: WorkloadIdentity;
  spiffeId: string;
  /** Leaf first, PEM: the `cert` of a TLS context. */
  certChainPem: string;
  /** PKCS#8 PEM: the `key` of a TLS context. */
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** Hex serial number of the leaf (changes with every renewal). */
  serialNumber: string;
  /** The leaf's issuer (the CA's intermediate) as a distinguished name. */
  issuer: string;
}

/** Where an identity stands, for status and metrics (certificate expiry, failing renewals). */
export interface IdentityStatus {
  spiffeId: string;
  /** `valid`: have a current cert; `pending`: never had one yet; `expired`: had one, the CA did not renew it in time. */
  state: 'valid' | 'pending' | 'expired';
  notAfter: Date | undefined;
  /** Serial number and issuer of the current certificate: a new serial per renewal, a new issuer after a CA rotation. */
  serialNumber: string | undefined;
  issuer: string | undefined;
  /** Certificates installed since the identity arrived on this node (first issue, restore and renewals). */
  installed: number;
  /** When the next renewal or retry is due (ms since epoch). */
  nextAttemptAt: number | undefined;
  /** Failed attempts since the last success. */
  failures: number;
  lastError: string | undefined;
}

/** Minimal logger; the agent passes its own. */
export interface CertsLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/** Settings of the manager. */
export interface CertManagerOptions {
  /** SPIFFE trust domain. */
  trustDomain: string;
  /** The signer. */
  requestCertificate: RequestCertificate;
  /** Clock (default real time). */
  clock?: Clock;
  /** Random source in [0, 1) for jitter (default Math.random). */
  random?: () => number;
  /** Renewal jitter as a fraction of the half-life (default 0.1 = ±10 %). */
  jitter?: number;
  /** Backoff when the signer fails (see `RetryPolicy`). */
  retry?: Partial<RetryPolicy>;
  /** Keep a copy on disk in this directory (one 0600 file per identity), so a restarted agent serves at once. */
  storeDir?: string;
  logger?: CertsLogger;
}

interface Entry {
  identity: WorkloadIdentity;
  spiffeId: string;
  cert: WorkloadCertificate | undefined;
  hadCert: boolean;
  timer: unknown;
  expiryTimer: unknown;
  nextAttemptAt: number | undefined;
  failures: number;
  lastError: string | undefined;
  running: boolean;
  removed: boolean;
  installed: number;
}

type Listener<T> = (value: T) => void;

const NOOP_LOGGER: CertsLogger = { info: () => {}, warn: () => {} };

/**
 * Holds one certificate per identity the node needs. `setIdentities` says which (level-triggered: the full
 * desired set each time); `current` gives the proxy what to present; `onRotate` tells it when that changed.
 *
 * Never drops a still-valid certificate because a renewal failed (istio/istio#56452): on failure it keeps the
 * old one and retries with backoff that always fires before expiry. Only expiry (or the identity leaving the
 * node) removes a certificate, and `onExpire` says so, so the proxy refuses new handshakes explicitly rather
 * than presenting an expired chain.
 */
export class CertManager {
  #opts: CertManagerOptions;
  #clock: Clock;
  #random: () => number;
  #jitter: number;
  #retry: RetryPolicy;
  #store: CertStore | undefined;
  #log: CertsLogger;
  #entries = new Map<string, Entry>();
  #inflight = new Set<Promise<void>>();
  #rotate = new Set<Listener<WorkloadCertificate>>();
  #expire = new Set<Listener<WorkloadIdentity>>();
  #stopped = false;

  constructor(opts: CertManagerOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#random = opts.random ?? Math.random;
    this.#jitter = opts.jitter ?? DEFAULT_JITTER;
    this.#retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.#store = opts.storeDir ? new CertStore(opts.storeDir) : undefined;
    this.#log = opts.logger ?? NOOP_LOGGER;
  }

  /**
   * Sets the identities this node needs (all of them, every time). New ones are fetched at once (or restored
   * from disk), ones no longer listed are dropped from memory and disk. Throws on an invalid name, changing
   * nothing.
   */
  setIdentities(identities: readonly WorkloadIdentity[]): void {
    for (const id of identities) checkIdentity(id);
    const wanted = new Map(identities.map((id) => [identityKey(id), id]));
    for (const [key, entry] of this.#entries) {
      if (wanted.has(key)) continue;
      this.#drop(key, entry);
    }
    for (const [key, id] of wanted) {
      if (this.#entries.has(key)) continue;
      const entry: Entry = {
        identity: { namespace: id.namespace, serviceAccount: id.serviceAccount },
        spiffeId: spiffeIdOf(this.#opts.trustDomain, id),
        cert: undefined,
        hadCert: false,
        timer: undefined,
        expiryTimer: undefined,
        nextAttemptAt: undefined,
        failures: 0,
        lastError: undefined,
        running: false,
        removed: false,
        installed: 0,
      };
      this.#entries.set(key, entry);
      this.#track(this.#start(key, entry));
    }
  }

  /** The certificate to present for `identity` now, or undefined (none yet, or expired while the CA was away). */
  current(identity: WorkloadIdentity): WorkloadCertificate | undefined {
    const cert = this.#entries.get(identityKey(identity))?.cert;
    if (!cert || cert.notAfter.getTime() <= this.#clock.now()) return undefined;
    return cert;
  }

  /** Calls `fn` with every new certificate (first issue and each renewal). Returns an unsubscribe function. */
  onRotate(fn: Listener<WorkloadCertificate>): () => void {
    this.#rotate.add(fn);
    return () => this.#rotate.delete(fn);
  }

  /** Calls `fn` when an identity's certificate expired without a renewal (the CA stayed unreachable). */
  onExpire(fn: Listener<WorkloadIdentity>): () => void {
    this.#expire.add(fn);
    return () => this.#expire.delete(fn);
  }

  /** Status of every identity, for the agent's status and metrics. */
  status(): IdentityStatus[] {
    const now = this.#clock.now();
    return [...this.#entries.values()].map((e) => ({
      spiffeId: e.spiffeId,
      state: e.cert && e.cert.notAfter.getTime() > now ? 'valid' : e.hadCert ? 'expired' : 'pending',
      notAfter: e.cert?.notAfter,
      serialNumber: e.cert?.serialNumber,
      issuer: e.cert?.issuer,
      installed: e.installed,
      nextAttemptAt: e.nextAttemptAt,
      failures: e.failures,
      lastError: e.lastError,
    }));
  }

  /** Resolves when no fetch, store or restore is running (tests; graceful shutdown). */
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  /** Cancels all timers; certificates stay readable. Waits for running work. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const e of this.#entries.values()) this.#clearTimers(e);
    await this.idle();
  }

  async #start(key: string, entry: Entry): Promise<void> {
    if (this.#store) {
      const restored = await this.#restore(key, entry).catch((err: Error) => {
        this.#log.warn('certs: stored certificate unusable, fetching a new one', { spiffeId: entry.spiffeId, error: err.message });
        return false;
      });
      if (restored) return;
    }
    await this.#fetch(key, entry);
  }

  async #restore(key: string, entry: Entry): Promise<boolean> {
    const text = await this.#store!.read(key);
    const parts = text ? splitStored(text) : undefined;
    if (!parts || entry.removed) return false;
    const now = this.#clock.now();
    const validity = checkIssuedChain(parts.certChainPem, spkiOfKeyPem(parts.keyPem), entry.spiffeId, now);
    // Restored certificates renew from now on the same half-of-what-is-left rule.
    this.#adopt(key, entry, { ...parts, ...validity }, now);
    return true;
  }

  async #fetch(key: string, entry: Entry): Promise<void> {
    if (entry.running || entry.removed || this.#stopped) return;
    entry.running = true;
    entry.nextAttemptAt = undefined;
    try {
      const fresh = await generateKeyAndCsr(entry.spiffeId);
      let signed: SignedCertificate;
      try {
        signed = await this.#opts.requestCertificate(fresh.csrPem, entry.identity);
      } catch (err) {
        throw new CertsError('NM_ERR_CERTS_SIGNER_FAILED', `signer failed for ${entry.spiffeId}: ${(err as Error).message}`, { cause: err });
      }
      if (entry.removed) return;
      const now = this.#clock.now();
      const validity = checkIssuedChain(signed.certChainPem, fresh.spki, entry.spiffeId, now);
      this.#adopt(key, entry, { certChainPem: signed.certChainPem, keyPem: fresh.keyPem, ...validity }, now);
      if (this.#store) {
        await this.#store.write(key, signed.certChainPem, fresh.keyPem).catch((err: Error) => {
          // Disk is a convenience; the in-memory certificate is already live.
          this.#log.warn('certs: could not persist certificate', { spiffeId: entry.spiffeId, error: err.message });
        });
      }
    } catch (err) {
      if (entry.removed) return;
      entry.failures += 1;
      entry.lastError = (err as Error).message;
      const now = this.#clock.now();
      const held = entry.cert && entry.cert.notAfter.getTime() > now ? entry.cert.notAfter.getTime() : undefined;
      const delay = computeRetryDelay(entry.failures, now, held, this.#random(), this.#retry, this.#jitter);
      this.#log.warn('certs: renewal failed, keeping the current certificate and retrying', {
        spiffeId: entry.spiffeId,
        failures: entry.failures,
        retryInMs: Math.round(delay),
        certValidUntil: held === undefined ? null : new Date(held).toISOString(),
        error: entry.lastError,
      });
      this.#schedule(key, entry, now + delay);
    } finally {
      entry.running = false;
    }
  }

  #adopt(key: string, entry: Entry, c: { certChainPem: string; keyPem: string; notBefore: Date; notAfter: Date; serialNumber: string; issuer: string }, now: number): void {
    const cert: WorkloadCertificate = { identity: entry.identity, spiffeId: entry.spiffeId, ...c };
    entry.cert = cert;
    entry.hadCert = true;
    entry.installed += 1;
    entry.failures = 0;
    entry.lastError = undefined;
    const renewAt = computeRenewAt(now, c.notBefore.getTime(), c.notAfter.getTime(), this.#random(), this.#jitter);
    this.#schedule(key, entry, renewAt);
    this.#scheduleExpiry(entry);
    this.#log.info('certs: certificate installed', { spiffeId: entry.spiffeId, serial: c.serialNumber, issuer: c.issuer, notAfter: c.notAfter.toISOString(), renewAt: new Date(renewAt).toISOString() });
    for (const fn of this.#rotate) this.#safely(() => fn(cert));
  }

  /** Arms the renewal/retry timer; long waits are re-armed in steps, so timers never overflow. */
  #schedule(key: string, entry: Entry, at: number): void {
    if (this.#stopped || entry.removed) return;
    if (entry.timer !== undefined) this.#clock.clearTimeout(entry.timer);
    entry.nextAttemptAt = at;
    const delay = Math.min(Math.max(0, at - this.#clock.now()), MAX_TIMER_MS);
    entry.timer = this.#clock.setTimeout(() => {
      entry.timer = undefined;
      if (this.#clock.now() < at) return this.#schedule(key, entry, at);
      this.#track(this.#fetch(key, entry));
    }, delay);
  }

  #scheduleExpiry(entry: Entry): void {
    if (entry.expiryTimer !== undefined) this.#clock.clearTimeout(entry.expiryTimer);
    const cert = entry.cert;
    if (!cert) return;
    const fire = (): void => {
      entry.expiryTimer = undefined;
      if (entry.cert !== cert || entry.removed) return;
      const left = cert.notAfter.getTime() - this.#clock.now();
      if (left > 0) {
        entry.expiryTimer = this.#clock.setTimeout(fire, Math.min(left, MAX_TIMER_MS));
        return;
      }
      entry.cert = undefined;
      this.#log.warn('certs: certificate expired before the CA renewed it; new handshakes for this identity are refused until it does', { spiffeId: entry.spiffeId });
      if (this.#store) this.#track(this.#store.remove(identityKey(entry.identity)).catch(() => {}));
      for (const fn of this.#expire) this.#safely(() => fn(entry.identity));
    };
    entry.expiryTimer = this.#clock.setTimeout(fire, Math.min(Math.max(0, cert.notAfter.getTime() - this.#clock.now()), MAX_TIMER_MS));
  }

  #drop(key: string, entry: Entry): void {
    entry.removed = true;
    entry.cert = undefined;
    this.#clearTimers(entry);
    this.#entries.delete(key);
    if (this.#store) this.#track(this.#store.remove(key).catch(() => {}));
    this.#log.info('certs: identity no longer on this node, certificate dropped', { spiffeId: entry.spiffeId });
  }

  #clearTimers(entry: Entry): void {
    if (entry.timer !== undefined) this.#clock.clearTimeout(entry.timer);
    if (entry.expiryTimer !== undefined) this.#clock.clearTimeout(entry.expiryTimer);
    entry.timer = undefined;
    entry.expiryTimer = undefined;
    entry.nextAttemptAt = undefined;
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch((err: Error) => this.#log.warn('certs: unexpected error', { error: err.message })).finally(() => this.#inflight.delete(tracked));
    this.#inflight.add(tracked);
  }

  #safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.warn('certs: listener threw', { error: (err as Error).message });
    }
  }
}
