/**
 * Writing status conditions: `planStatusWrites` (pure) keeps only objects whose stored status differs from
 * the computed one (so a steady state writes nothing), `markUnconfirmed` turns Programmed into Unknown when
 * the operator's view is stale, and `applyStatusWrites` replaces the status subresource with optimistic
 * concurrency: a 409 re-reads the object and retries on the fresh copy, keeping other controllers' entries in
 * an HTTPRoute's status.parents (no lost update), and gives up on an object whose generation moved on (the
 * informer event for it brings a new reconcile).
 */
import { CONTROLLER_NAME, type AuthorizationPolicy, type Condition, type HTTPRoute, type HTTPRouteStatus, type MeshTLSPolicy, type PolicyStatus, type TrafficPolicy } from '../crds/index.ts';
import { isConflict, isNotFound, retryOnConflict } from './backoff.ts';
import { canonicalJson, sameJson } from './canonical-json.ts';
import type { UserKind } from './compile-mesh.ts';
import type { ObjectStatus } from './compute-status.ts';
import type { KubeRest } from './kube-rest.ts';
import { describeError, type OperatorLogger } from './logger.ts';
import { USER_RESOURCES } from './snapshot-cache.ts';

/** A user object as stored. */
export type UserObject = HTTPRoute | MeshTLSPolicy | TrafficPolicy | AuthorizationPolicy;

/** One status to write and the object it goes on (as cached). */
export interface StatusWrite {
  target: ObjectStatus;
  current: UserObject;
}

/** True when two statuses say the same (canonical JSON, so key order does not matter). */
export function sameStatus(a: unknown, b: unknown): boolean {
  return sameJson(a ?? {}, b ?? {});
}

/** The writes needed: objects that still exist with the same uid and whose stored status differs. */
export function planStatusWrites(statuses: readonly ObjectStatus[], lookup: (kind: UserKind, namespace: string, name: string) => UserObject | undefined): StatusWrite[] {
  const out: StatusWrite[] = [];
  for (const target of statuses) {
    const current = lookup(target.kind, target.namespace, target.name);
    if (!current || (current.metadata?.uid && target.uid && current.metadata.uid !== target.uid)) continue;
    if (sameStatus(current.status, target.status)) continue;
    out.push({ target, current });
  }
  return out;
}

function unknownCondition(c: Condition, stored: readonly Condition[] | undefined, message: string, now: string): Condition {
  const before = stored?.find((s) => s.type === c.type);
  return { ...c, status: 'Unknown', reason: 'Unconfirmed', message, lastTransitionTime: before?.status === 'Unknown' ? before.lastTransitionTime : now };
}

/**
 * The status with every `Programmed` condition set to Unknown/Unconfirmed (`message` says why), for when the
 * operator cannot confirm what the nodes have (some informer is failing) but can still write status.
 * `stored` is the object's current status, whose lastTransitionTime is kept when it already was Unknown.
 */
export function markUnconfirmed(target: ObjectStatus, stored: unknown, message: string, now: string): ObjectStatus {
  if (target.kind === 'HTTPRoute') {
    const s = target.status as HTTPRouteStatus;
    const before = ((stored ?? {}) as HTTPRouteStatus).parents ?? [];
    const parents = (s.parents ?? []).map((p) => {
      if (p.controllerName !== CONTROLLER_NAME) return p;
      const prev = before.find((b) => b.controllerName === CONTROLLER_NAME && canonicalJson(b.parentRef) === canonicalJson(p.parentRef));
      return { ...p, conditions: (p.conditions ?? []).map((c) => (c.type === 'Programmed' ? unknownCondition(c, prev?.conditions, message, now) : c)) };
    });
    return { ...target, status: { ...s, parents } };
  }
  const s = target.status as PolicyStatus;
  const prev = ((stored ?? {}) as PolicyStatus).conditions;
  return { ...target, status: { ...s, conditions: (s.conditions ?? []).map((c) => (c.type === 'Programmed' ? unknownCondition(c, prev, message, now) : c)) } };
}

/** The status to write on top of a freshly read object: its other controllers' route parents are kept. */
export function mergeOnFresh(target: ObjectStatus, fresh: UserObject): ObjectStatus['status'] {
  if (target.kind !== 'HTTPRoute') return target.status;
  const ours = ((target.status as HTTPRouteStatus).parents ?? []).filter((p) => p.controllerName === CONTROLLER_NAME);
  const foreign = (((fresh.status ?? {}) as HTTPRouteStatus).parents ?? []).filter((p) => p.controllerName !== CONTROLLER_NAME);
  return { parents: [...foreign, ...ours] };
}

/** Status storage. Errors carry the HTTP status in `code`. */
export interface StatusApi {
  get(kind: UserKind, namespace: string, name: string): Promise<UserObject | undefined>;
  /** Writes body.status; body.metadata.resourceVersion is the precondition (409 when the object moved on). */
  replaceStatus(kind: UserKind, body: UserObject): Promise<unknown>;
}

/**
 * StatusApi over the API server: a JSON merge patch of the status subresource carrying the resourceVersion it
 * was computed from (the API server refuses it with 409 if the object changed since). Only `status` travels,
 * and the answer - the whole object, possibly 1 MiB - is not parsed.
 */
export function createKubeStatusApi(rest: KubeRest, timeoutMs = 30_000): StatusApi {
  const path = (kind: UserKind, ns: string, name: string): string => {
    const r = USER_RESOURCES[kind];
    return `/apis/${r.group}/${r.version}/namespaces/${encodeURIComponent(ns)}/${r.plural}/${encodeURIComponent(name)}`;
  };
  return {
    get: (kind, ns, name) => rest.getOrUndefined<UserObject>(path(kind, ns, name), timeoutMs),
    replaceStatus: async (kind, body) => {
      const m = body.metadata!;
      const r = await rest.raw('PATCH', `${path(kind, m.namespace!, m.name!)}/status`, {
        body: { metadata: { resourceVersion: m.resourceVersion }, status: body.status },
        contentType: 'application/merge-patch+json',
        parse: false,
        timeoutMs,
      });
      if (r.status < 200 || r.status >= 300) throw Object.assign(new Error(`status of ${kind} ${m.namespace}/${m.name}: HTTP ${r.status}: ${r.text.slice(0, 300)}`), { code: r.status, body: r.text });
    },
  };
}

/** Outcome of applyStatusWrites. */
export interface StatusApplyResult {
  written: number;
  skipped: number;
  failed: Array<{ object: string; error: string }>;
  conflicts: number;
  aborted: boolean;
}

/** Writes the statuses; `isLeader` is checked before every request. */
export async function applyStatusWrites(
  writes: readonly StatusWrite[],
  api: StatusApi,
  opts: { isLeader: () => boolean; log: OperatorLogger; concurrency?: number; onWrite?: (object: string) => void },
): Promise<StatusApplyResult> {
  const result: StatusApplyResult = { written: 0, skipped: 0, failed: [], conflicts: 0, aborted: false };
  let next = 0;
  const one = async ({ target, current }: StatusWrite): Promise<void> => {
    const id = `${target.kind} ${target.namespace}/${target.name}`;
    try {
      await retryOnConflict(async (attempt) => {
        let base: UserObject | undefined = current;
        let status = target.status;
        if (attempt > 0) {
          result.conflicts++;
          base = await api.get(target.kind, target.namespace, target.name);
          // Gone, recreated, or changed spec: the informer event for it brings a reconcile with the right status.
          if (!base || base.metadata?.uid !== current.metadata?.uid || base.metadata?.generation !== current.metadata?.generation) {
            result.skipped++;
            return;
          }
          status = mergeOnFresh(target, base);
          if (sameStatus(base.status, status)) return;
        }
        if (!opts.isLeader()) {
          result.aborted = true;
          return;
        }
        opts.onWrite?.(id);
        await api.replaceStatus(target.kind, { ...base, status } as UserObject);
        result.written++;
      });
    } catch (err) {
      if (isNotFound(err)) {
        result.skipped++;
        return;
      }
      if (isConflict(err)) result.conflicts++;
      result.failed.push({ object: id, error: describeError(err) });
      opts.log.warn('status write failed', { object: id, error: describeError(err) });
    }
  };
  const worker = async (): Promise<void> => {
    while (next < writes.length && !result.aborted) await one(writes[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 8, writes.length) }, worker));
  return result;
}
