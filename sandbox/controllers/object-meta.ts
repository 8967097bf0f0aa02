/** Small helpers over object metadata: keys, owner references, timestamps, pod state. */
import type { V1ObjectMeta, V1OwnerReference, V1Pod } from '@kubernetes/client-node';

/** Anything with metadata; the informers hand out typed objects, tests hand out literals. */
export interface HasMeta {
  metadata?: V1ObjectMeta;
}

/** The work-queue key of a namespaced or cluster object: `ns/name` or `name`. */
export function keyOf(obj: HasMeta): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  return ns ? `${ns}/${name}` : name;
}

/** Splits a work-queue key back into namespace and name (namespace '' for cluster objects). */
export function splitKey(key: string): { namespace: string; name: string } {
  const slash = key.indexOf('/');
  return slash < 0 ? { namespace: '', name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/**
 * Milliseconds since the epoch of an API timestamp. Objects from a list call carry `Date`s (the client
 * deserialises them), objects from a watch event carry RFC 3339 strings: both arrive in one cache.
 */
export function toMillis(t: Date | string | undefined | null): number | undefined {
  if (t === undefined || t === null) return undefined;
  const ms = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isNaN(ms) ? undefined : ms;
}

/** A timestamp as the API server writes metav1.Time: RFC 3339, whole seconds, UTC. */
export function formatApiTime(t: Date | number): string {
  const date = typeof t === 'number' ? new Date(t) : t;
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * A plain-JSON copy of an object for a write body or a comparison: Dates become API timestamps and
 * undefined fields vanish, whichever path (list or watch) the object came from.
 */
export function toWire<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (v instanceof Date) return formatApiTime(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = walk(x);
      return out;
    }
    return v;
  };
  return walk(value) as T;
}

/** The ownerReference with controller=true, if any. */
export function controllerRefOf(obj: HasMeta): V1OwnerReference | undefined {
  return obj.metadata?.ownerReferences?.find((ref) => ref.controller === true);
}

/** True when `obj` is controlled by the object with this uid. */
export function isControlledBy(obj: HasMeta, ownerUid: string | undefined): boolean {
  return ownerUid !== undefined && controllerRefOf(obj)?.uid === ownerUid;
}

/** True once a deletion was requested: the object still exists but is going away. */
export function isTerminating(obj: HasMeta): boolean {
  return obj.metadata?.deletionTimestamp !== undefined && obj.metadata.deletionTimestamp !== null;
}

/** True when the pod reports condition Ready=True. */
export function isPodReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/** When the pod last became Ready (ms), for minReadySeconds and for ranking pods. */
export function podReadySince(pod: V1Pod): number | undefined {
  const cond = pod.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True');
  return cond ? toMillis(cond.lastTransitionTime as Date | string | undefined) : undefined;
}

/** True when the pod has ended for good (phase Succeeded or Failed): it no longer runs anything. */
export function isPodTerminal(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

/** A pod a ReplicaSet counts: not terminal and not being deleted (controller.IsPodActive). */
export function isPodActive(pod: V1Pod): boolean {
  return !isPodTerminal(pod) && !isTerminating(pod);
}

/**
 * A pod available for minReadySeconds (podutil.IsPodAvailable): Ready, and Ready since at least
 * minReadySeconds. With minReadySeconds 0 every Ready pod is available.
 */
export function isPodAvailable(pod: V1Pod, minReadySeconds: number, nowMs: number): boolean {
  if (!isPodReady(pod)) return false;
  if (minReadySeconds <= 0) return true;
  const since = podReadySince(pod);
  return since !== undefined && since + minReadySeconds * 1000 <= nowMs;
}

/** Restart count summed over the pod's containers (a flapping pod goes first on scale-down). */
export function podRestarts(pod: V1Pod): number {
  return (pod.status?.containerStatuses ?? []).reduce((sum, c) => sum + (c.restartCount ?? 0), 0);
}
