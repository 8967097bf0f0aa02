/**
 * The CA rotation controller (F10): drives `MeshCa`'s rotation steps so that no request fails while the trust
 * bundle changes. Level-triggered: every tick reads the CA Secret, and the pure `planCaRotation` says what the
 * next step is from what is stored and what the agents report; the leader does that step and persists it in the
 * same Secret write, so an operator killed mid-rotation resumes where it was (F6-style).
 *
 *   idle ──(a root or intermediate nears expiry, or a user request)──► add: new root + intermediate (or a new
 *        intermediate) published in the bundle, not issuing                                   phase `propagating`
 *   propagating ──(every live agent reports a bundle holding them, or the bounded wait ran out for silent ones)──►
 *        switch issuer; the CA service renews its own serving certificate at once              phase `switched`
 *   switched ──(one leaf TTL + margin: every leaf of the old chain has been renewed or has expired)──►
 *        drop the old root (root rotation) / nothing to drop (intermediate: the retired one stays until it expires)
 *                                                                                               phase `idle`
 *
 * User request: annotate the Secret `nodemesh.io/rotate=root` (or `intermediate`), optionally with a request id
 * after a colon (`root:2026-11-21`): each distinct value is acted on once. The controller's progress is the
 * annotation `nodemesh.io/ca-rotation` (JSON, see `CaRotationState`), which `kubectl mesh status/check` can show.
 *
 * Every replica runs the tick: followers only reload the CA when the Secret changed (they sign too, and must
 * switch issuer with the leader); the leader also plans and acts.
 */
import { createHash } from 'node:crypto';
import type { CaStore } from './ca-service.ts';
import { CaError } from './ca/errors.ts';
import { MeshCa } from './ca/mesh-ca.ts';
import { CA_EXPIRY_WARNING_MS } from './ca/plan-validity.ts';
import { systemRuntimeClock, type RuntimeClock } from './clock.ts';
import { describeError, type OperatorLogger } from './logger.ts';

/** Annotation a user sets on the CA Secret to ask for a rotation: `root` or `intermediate`, optionally `:<request id>`. */
export const ROTATE_REQUEST_ANNOTATION = 'nodemesh.io/rotate';
/** Annotation holding the controller's persisted progress (JSON `CaRotationState`). */
export const ROTATION_STATE_ANNOTATION = 'nodemesh.io/ca-rotation';

export type CaRotationKind = 'root' | 'intermediate';
export type CaRotationPhase = 'idle' | 'propagating' | 'switched';

/** What is persisted in the Secret annotation. Times are ISO strings. */
export interface CaRotationState {
  phase: CaRotationPhase;
  kind?: CaRotationKind;
  trigger?: 'request' | 'expiry' | 'adopted';
  /** Why this rotation started, in words. */
  reason?: string;
  startedAt?: string;
  /** When the current phase began: the waits count from here. */
  phaseSince?: string;
  /** SHA-256 fingerprints the agents must report before the issuer switches. */
  pendingRoot?: string;
  pendingIntermediate?: string;
  /** The last request annotation value acted on (started, or refused as malformed). */
  handledRequest?: string;
  lastCompleted?: { kind: CaRotationKind; at: string; trigger?: string };
}

/** The CA facts the planner needs (from `MeshCa.inspect()`). */
export interface CaFacts {
  issuingRoot: { fingerprint: string; notBefore: number; notAfter: number };
  issuingIntermediate: { fingerprint: string; notBefore: number; notAfter: number };
  pending: { root: string; intermediate: string } | undefined;
  /** How many roots the bundle trusts. */
  roots: number;
}

/** What an agent last told the CA service about the bundle its proxy serves. */
export interface BundleReport {
  /** SHA-256 fingerprints of every certificate (roots and intermediates) in the applied bundle. */
  fingerprints: ReadonlySet<string>;
  /** When it was received (ms). */
  at: number;
}

/** Thresholds of the controller. */
export interface CaRotationSettings {
  /** Rotate the issuing intermediate once this fraction of its life has passed (default 2/3). */
  intermediateRenewFraction: number;
  /** Rotate the root when it has less than this left (default 60 days: the window `kubectl mesh check` warns in). */
  rootRenewBeforeMs: number;
  /** A node whose agent has not reported within this is not waited for (default 90 s; agents report every 30 s). */
  reportStaleMs: number;
  /** Longest wait for nodes that never report (no agent there, or an older one); live ones are always waited for (default 10 min). */
  propagationTimeoutMs: number;
  /** Extra wait after one leaf TTL before dropping the old root (default max(10 % of the TTL, 5 s)). */
  dropMarginMs?: number;
}

export const DEFAULT_ROTATION_SETTINGS: CaRotationSettings = {
  intermediateRenewFraction: 2 / 3,
  rootRenewBeforeMs: CA_EXPIRY_WARNING_MS,
  reportStaleMs: 90_000,
  propagationTimeoutMs: 10 * 60_000,
};

/** Everything `planCaRotation` decides from. */
export interface CaRotationInput {
  now: number;
  state: CaRotationState;
  ca: CaFacts;
  /** The `nodemesh.io/rotate` annotation value, if any. */
  request: string | undefined;
  /** Names of the cluster's Nodes; undefined while the informer has not listed them. */
  nodes: readonly string[] | undefined;
  reports: ReadonlyMap<string, BundleReport>;
  leafTtlMs: number;
  settings: CaRotationSettings;
}

/** The next step. `none` carries what is being waited for, for status and logs. */
export type CaRotationStep =
  | { action: 'none'; reason: string; waitingFor?: string[] }
  | { action: 'start'; kind: CaRotationKind; trigger: 'request' | 'expiry'; reason: string; request?: string }
  | { action: 'refuse-request'; request: string; reason: string }
  | { action: 'adopt'; reason: string }
  | { action: 'reset'; reason: string }
  | { action: 'switch-issuer'; reason: string; unconfirmed: string[] }
  | { action: 'drop-root'; reason: string }
  | { action: 'finish'; reason: string };

/** A parsed request annotation, or why it is refused. */
export function parseRotateRequest(value: string): { kind: CaRotationKind; id?: string } | { error: string } {
  const m = /^(root|intermediate)(?::([A-Za-z0-9._-]{1,63}))?$/.exec(value.trim());
  if (!m) return { error: `annotation ${ROTATE_REQUEST_ANNOTATION}=${JSON.stringify(value)}: expected "root" or "intermediate", optionally ":<request id>" (letters, digits, . _ -; at most 63)` };
  return { kind: m[1] as CaRotationKind, ...(m[2] ? { id: m[2] } : {}) };
}

/** How long after the issuer switch the old root may go: one leaf TTL (every old leaf renewed or expired) plus a margin. */
export function computeDropAfterMs(leafTtlMs: number, settings: CaRotationSettings): number {
  return leafTtlMs + (settings.dropMarginMs ?? Math.max(leafTtlMs * 0.1, 5_000));
}

/**
 * The next rotation step (pure). Order: repair a state that disagrees with the CA, then advance a rotation in
 * progress, then start one (a user request first, then root expiry, then intermediate expiry).
 */
export function planCaRotation(i: CaRotationInput): CaRotationStep {
  const { state, ca, now } = i;
  const since = state.phaseSince ? Date.parse(state.phaseSince) : NaN;
  const elapsed = Number.isFinite(since) ? now - since : Infinity;

  // The CA is the truth for what is issuing; the annotation only adds when and why.
  if (state.phase === 'propagating' && !ca.pending) return { action: 'reset', reason: 'state says a new CA is propagating, but the CA Secret holds no pending root or intermediate (edited by hand?)' };
  if (state.phase === 'idle' && ca.pending) return { action: 'adopt', reason: 'the CA Secret holds a pending root/intermediate this controller did not add: waiting for the agents, then switching' };
  if (state.phase === 'switched' && ca.pending) return { action: 'adopt', reason: 'state says switched, but a pending root/intermediate is in the Secret: treating it as propagating' };

  if (state.phase === 'propagating') {
    const pending = ca.pending!;
    const need = [pending.root, pending.intermediate];
    const live: string[] = [];
    const silent: string[] = [];
    for (const node of i.nodes ?? []) {
      const r = i.reports.get(node);
      if (r && now - r.at <= i.settings.reportStaleMs) {
        if (!need.every((fp) => r.fingerprints.has(fp))) live.push(node);
      } else silent.push(node);
    }
    if (i.nodes === undefined) return { action: 'none', reason: 'waiting for the Node list before checking bundle propagation', waitingFor: [] };
    // An agent that reports an older bundle is alive and would refuse the new chain: always wait for it.
    if (live.length > 0) return { action: 'none', reason: `waiting for ${live.length} node(s) to serve the new trust bundle`, waitingFor: [...live, ...silent].sort() };
    if (silent.length > 0 && elapsed < i.settings.propagationTimeoutMs) {
      return { action: 'none', reason: `waiting up to ${Math.round(i.settings.propagationTimeoutMs / 1000)} s for ${silent.length} node(s) that have not reported their bundle`, waitingFor: silent.sort() };
    }
    return {
      action: 'switch-issuer',
      reason: silent.length > 0 ? `every reporting node serves the new bundle; ${silent.length} silent node(s) not confirmed after ${Math.round(elapsed / 1000)} s` : 'every node serves the new trust bundle',
      unconfirmed: silent.sort(),
    };
  }

  if (state.phase === 'switched') {
    if (state.kind !== 'root' || ca.roots < 2) return { action: 'finish', reason: state.kind === 'root' ? 'no old root left to drop' : 'new intermediate issuing; the retired one stays in the bundle until it expires' };
    const wait = computeDropAfterMs(i.leafTtlMs, i.settings);
    if (elapsed < wait) return { action: 'none', reason: `old root drops ${Math.ceil((wait - elapsed) / 1000)} s from now (one leaf TTL after the issuer switch, plus margin)` };
    return { action: 'drop-root', reason: `${Math.round(elapsed / 1000)} s since the issuer switch: every old-chain leaf is renewed or expired` };
  }

  // idle
  if (i.request !== undefined && i.request !== state.handledRequest) {
    const r = parseRotateRequest(i.request);
    if ('error' in r) return { action: 'refuse-request', request: i.request, reason: r.error };
    return { action: 'start', kind: r.kind, trigger: 'request', request: i.request, reason: `requested by annotation ${ROTATE_REQUEST_ANNOTATION}=${i.request}` };
  }
  const rootLeft = ca.issuingRoot.notAfter - now;
  if (rootLeft <= i.settings.rootRenewBeforeMs) {
    return { action: 'start', kind: 'root', trigger: 'expiry', reason: `issuing root expires ${new Date(ca.issuingRoot.notAfter).toISOString()} (${Math.max(0, Math.floor(rootLeft / 86_400_000))} days left)` };
  }
  const inter = ca.issuingIntermediate;
  const renewAt = inter.notBefore + (inter.notAfter - inter.notBefore) * i.settings.intermediateRenewFraction;
  if (now >= renewAt) {
    return { action: 'start', kind: 'intermediate', trigger: 'expiry', reason: `issuing intermediate is past ${Math.round(i.settings.intermediateRenewFraction * 100)} % of its life (expires ${new Date(inter.notAfter).toISOString()})` };
  }
  return { action: 'none', reason: 'no rotation due' };
}

/** The state from its annotation; a missing or unreadable one is `idle` (the CA's own pending state then decides). */
export function parseRotationState(text: string | undefined): CaRotationState {
  if (!text) return { phase: 'idle' };
  try {
    const v = JSON.parse(text) as CaRotationState;
    if (v && (v.phase === 'idle' || v.phase === 'propagating' || v.phase === 'switched')) return v;
  } catch {
    // fall through
  }
  return { phase: 'idle' };
}

/** The facts the planner needs from a CA. */
export function caFactsOf(ca: MeshCa): CaFacts {
  const certs = ca.inspect().certificates;
  const t = (c: { fingerprint: string; notBefore: Date; notAfter: Date }) => ({ fingerprint: c.fingerprint, notBefore: c.notBefore.getTime(), notAfter: c.notAfter.getTime() });
  const root = certs.find((c) => c.role === 'root' && c.issuing)!;
  const inter = certs.find((c) => c.role === 'intermediate' && c.issuing)!;
  const pendingInter = certs.find((c) => c.role === 'intermediate' && c.pending);
  const pendingRoot = certs.find((c) => c.role === 'root' && c.pending);
  return {
    issuingRoot: t(root),
    issuingIntermediate: t(inter),
    // An intermediate-only rotation keeps the issuing root: it is already everywhere.
    pending: pendingInter ? { root: pendingRoot?.fingerprint ?? root.fingerprint, intermediate: pendingInter.fingerprint } : undefined,
    roots: certs.filter((c) => c.role === 'root').length,
  };
}

/** SHA-256 fingerprints (hex) of every certificate in a PEM bundle: what agents report and the planner compares. */
export function bundleFingerprints(pem: string): string[] {
  const out: string[] = [];
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----/g)) {
    out.push(createHash('sha256').update(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')).digest('hex'));
  }
  return out;
}

/** Settings of the controller. */
export interface CaRotationControllerOptions {
  store: CaStore;
  trustDomain: string;
  leafTtlMs: number;
  isLeader: () => boolean;
  /** Node names from the informer; undefined until it has listed. */
  nodes: () => readonly string[] | undefined;
  /** What agents reported (the CA service's `bundleReports()`). */
  reports: () => ReadonlyMap<string, BundleReport>;
  /** A new CA state is live (after this replica's own step, or another replica's write): swap it in and publish. */
  onCa: (ca: MeshCa, why: string) => void;
  /** After an issuer switch: renew the CA service's own certificate from the new issuer. */
  onIssuerSwitched?: () => void;
  log: OperatorLogger;
  clock?: RuntimeClock;
  /** Tick period; default clamp(leaf TTL / 20, 2 s, 10 s), so short test TTLs rotate quickly. */
  tickMs?: number;
  settings?: Partial<CaRotationSettings>;
}

/** The controller's view, for /status. */
export interface CaRotationStatus {
  phase: CaRotationPhase;
  kind?: CaRotationKind;
  reason?: string;
  since?: string;
  waitingFor?: string[];
  next?: string;
  lastCompleted?: CaRotationState['lastCompleted'];
  lastError?: string;
  lastTickAt?: string;
}

/** Runs `planCaRotation` on a timer and carries out its steps (see the file comment). */
export class CaRotationController {
  readonly #o: CaRotationControllerOptions;
  readonly #clock: RuntimeClock;
  readonly #settings: CaRotationSettings;
  readonly #tickMs: number;
  #timer: unknown;
  #stopped = false;
  #running: Promise<void> = Promise.resolve();
  #loadedVersion: string | undefined;
  #status: CaRotationStatus = { phase: 'idle' };

  constructor(o: CaRotationControllerOptions) {
    this.#o = o;
    this.#clock = o.clock ?? systemRuntimeClock;
    this.#settings = { ...DEFAULT_ROTATION_SETTINGS, ...o.settings };
    this.#tickMs = o.tickMs ?? Math.min(10_000, Math.max(2_000, o.leafTtlMs / 20));
  }

  start(): void {
    const loop = (): void => {
      if (this.#stopped) return;
      this.#running = this.tick().finally(() => {
        if (!this.#stopped) this.#timer = this.#clock.setTimeout(loop, this.#tickMs);
      });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#timer);
    await this.#running;
  }

  status(): CaRotationStatus {
    return { ...this.#status, ...(this.#status.waitingFor ? { waitingFor: [...this.#status.waitingFor] } : {}) };
  }

  /** One pass: reload the CA if the Secret changed; on the leader, plan and do one step. Never throws. */
  async tick(): Promise<void> {
    const log = this.#o.log;
    try {
      const stored = await this.#o.store.readSecret();
      if (!stored) return;
      if (stored.resourceVersion !== this.#loadedVersion) {
        const ca = await MeshCa.fromSecretData(stored.data, { trustDomain: this.#o.trustDomain, leafTtlMs: this.#o.leafTtlMs });
        if (this.#loadedVersion !== undefined) this.#o.onCa(ca, 'the CA Secret changed');
        this.#loadedVersion = stored.resourceVersion;
      }
      const state = parseRotationState(stored.annotations[ROTATION_STATE_ANNOTATION]);
      this.#status = { ...this.#status, phase: state.phase, ...(state.kind ? { kind: state.kind } : {}), ...(state.reason ? { reason: state.reason } : {}), ...(state.phaseSince ? { since: state.phaseSince } : {}), ...(state.lastCompleted ? { lastCompleted: state.lastCompleted } : {}), lastTickAt: new Date(this.#clock.now()).toISOString() };
      if (!this.#o.isLeader()) return;
      const now = this.#clock.now();
      // A fresh copy: a step changes it, and it goes live only once the Secret write succeeded.
      const next = await MeshCa.fromSecretData(stored.data, { trustDomain: this.#o.trustDomain, leafTtlMs: this.#o.leafTtlMs, now: () => this.#clock.now() });
      const step = planCaRotation({ now, state, ca: caFactsOf(next), request: stored.annotations[ROTATE_REQUEST_ANNOTATION], nodes: this.#o.nodes(), reports: this.#o.reports(), leafTtlMs: this.#o.leafTtlMs, settings: this.#settings });
      if (step.action === 'none') {
        this.#status = { ...this.#status, next: step.reason, ...(step.waitingFor ? { waitingFor: step.waitingFor } : { waitingFor: undefined }) };
        delete this.#status.lastError;
        return;
      }
      const iso = new Date(now).toISOString();
      let newState: CaRotationState;
      let caChanged = false;
      switch (step.action) {
        case 'start': {
          if (step.kind === 'root') await next.rotateAddRoot();
          else await next.rotateIntermediate();
          const facts = caFactsOf(next);
          newState = {
            phase: 'propagating', kind: step.kind, trigger: step.trigger, reason: step.reason, startedAt: iso, phaseSince: iso,
            pendingRoot: facts.pending!.root, pendingIntermediate: facts.pending!.intermediate,
            ...(step.request !== undefined ? { handledRequest: step.request } : state.handledRequest !== undefined ? { handledRequest: state.handledRequest } : {}),
            ...(state.lastCompleted ? { lastCompleted: state.lastCompleted } : {}),
          };
          caChanged = true;
          break;
        }
        case 'refuse-request':
          newState = { ...state, handledRequest: step.request };
          break;
        case 'adopt': {
          const facts = caFactsOf(next);
          newState = { ...state, phase: 'propagating', kind: facts.pending!.root !== facts.issuingRoot.fingerprint ? 'root' : 'intermediate', trigger: 'adopted', reason: step.reason, startedAt: state.startedAt ?? iso, phaseSince: iso, pendingRoot: facts.pending!.root, pendingIntermediate: facts.pending!.intermediate };
          break;
        }
        case 'reset':
          newState = { phase: 'idle', ...(state.handledRequest !== undefined ? { handledRequest: state.handledRequest } : {}), ...(state.lastCompleted ? { lastCompleted: state.lastCompleted } : {}) };
          break;
        case 'switch-issuer':
          next.rotateSwitchIssuer();
          newState = { ...state, phase: 'switched', phaseSince: iso };
          caChanged = true;
          break;
        case 'drop-root':
          await next.rotateDropRoot();
          newState = { phase: 'idle', ...(state.handledRequest !== undefined ? { handledRequest: state.handledRequest } : {}), lastCompleted: { kind: state.kind ?? 'root', at: iso, ...(state.trigger ? { trigger: state.trigger } : {}) } };
          caChanged = true;
          break;
        case 'finish':
          newState = { phase: 'idle', ...(state.handledRequest !== undefined ? { handledRequest: state.handledRequest } : {}), lastCompleted: { kind: state.kind ?? 'intermediate', at: iso, ...(state.trigger ? { trigger: state.trigger } : {}) } };
          break;
      }
      const annotations = { ...stored.annotations, [ROTATION_STATE_ANNOTATION]: JSON.stringify(newState) };
      const data = caChanged ? { ...pickUserKeys(stored.data), ...(await next.toSecretData()) } : stored.data;
      // One write holds the CA and the progress: a restart never sees one without the other. A conflict (another
      // writer, or the user annotating) is simply retried on the next tick from the re-read Secret.
      await this.#o.store.replaceSecret(data, stored.resourceVersion, annotations);
      const fields = { step: step.action, kind: newState.kind ?? state.kind, phase: newState.phase, reason: step.reason, ...(step.action === 'switch-issuer' && step.unconfirmed.length ? { unconfirmedNodes: step.unconfirmed } : {}), ...(caChanged ? { roots: caFactsOf(next).roots } : {}) };
      if (step.action === 'refuse-request' || step.action === 'reset' || (step.action === 'switch-issuer' && step.unconfirmed.length > 0)) log.warn('CA rotation step', fields);
      else log.info('CA rotation step', fields);
      this.#status = { phase: newState.phase, ...(newState.kind ? { kind: newState.kind } : {}), ...(newState.reason ? { reason: newState.reason } : {}), ...(newState.phaseSince ? { since: newState.phaseSince } : {}), ...(newState.lastCompleted ? { lastCompleted: newState.lastCompleted } : {}), lastTickAt: iso };
      if (caChanged) {
        // Our own write: the next tick sees a new resourceVersion and reloads the same state; go live now.
        this.#o.onCa(next, `rotation step ${step.action}`);
        if (step.action === 'switch-issuer') this.#o.onIssuerSwitched?.();
      }
    } catch (err) {
      const msg = err instanceof CaError ? `${err.code}: ${err.message}` : describeError(err);
      this.#status = { ...this.#status, lastError: msg };
      log.warn('CA rotation tick failed; retrying on the next tick', { error: msg });
    }
  }
}

/** Keys a user may have supplied that our state does not rewrite (a kubernetes.io/tls Secret's own). */
function pickUserKeys(data: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['tls.crt', 'tls.key']) if (data[k] !== undefined) out[k] = data[k];
  return out;
}
