/**
 * The ReplicaSet controller's decisions as pure functions: which pods it owns (adopting matching orphans,
 * releasing pods that no longer match), how many to create, which to delete first, and its status.
 */
import type { V1OwnerReference, V1Pod, V1ReplicaSet, V1ReplicaSetStatus } from '@kubernetes/client-node';
import { matchLabelMap, matchLabelSelector } from './label-selector.ts';
import { controllerRefOf, isControlledBy, isPodActive, isPodAvailable, isPodReady, isTerminating, podReadySince, podRestarts, toMillis } from './object-meta.ts';

/** What one sync of a ReplicaSet should do. */
export interface ReplicaSetPlan {
  /** Pods to create from the template. */
  create: number;
  /** Active pods to delete, best candidates first. */
  delete: V1Pod[];
  /** Orphan pods matching the selector: to become owned (ownerReference added). */
  adopt: V1Pod[];
  /** Owned pods whose labels stopped matching: to be let go (ownerReference removed). */
  release: V1Pod[];
  /** The pods this ReplicaSet counts (owned or adopted, matching, active). */
  active: V1Pod[];
}

/** The controller ownerReference a ReplicaSet puts on its pods. */
export function ownerRefForReplicaSet(rs: V1ReplicaSet): V1OwnerReference {
  return { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rs.metadata?.name ?? '', uid: rs.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true };
}

/** The pods of `pods` (same namespace) that belong to `rs` after adoption and release. */
export function claimPods(rs: V1ReplicaSet, pods: readonly V1Pod[]): { owned: V1Pod[]; adopt: V1Pod[]; release: V1Pod[] } {
  const uid = rs.metadata?.uid;
  const ns = rs.metadata?.namespace;
  const rsDeleting = isTerminating(rs);
  const owned: V1Pod[] = [];
  const adopt: V1Pod[] = [];
  const release: V1Pod[] = [];
  for (const pod of pods) {
    if (pod.metadata?.namespace !== ns) continue;
    const matches = matchLabelSelector(rs.spec?.selector, pod.metadata?.labels);
    const ref = controllerRefOf(pod);
    if (ref) {
      if (ref.uid !== uid) continue;
      if (matches) owned.push(pod);
      // A ReplicaSet being deleted lets its pods go with it rather than orphaning them.
      else if (!rsDeleting) release.push(pod);
      continue;
    }
    // Never adopt into a dying ReplicaSet, and never adopt a dying pod (controller-ref manager rules).
    if (matches && !rsDeleting && !isTerminating(pod) && Object.keys(rs.spec?.selector?.matchLabels ?? {}).length + (rs.spec?.selector?.matchExpressions?.length ?? 0) > 0) {
      adopt.push(pod);
    }
  }
  return { owned, adopt, release };
}

function phaseRank(pod: V1Pod): number {
  // Pending < Unknown < Running: a pod that has not started costs nothing to lose.
  switch (pod.status?.phase) {
    case 'Pending':
      return 0;
    case 'Running':
      return 2;
    default:
      return 1;
  }
}

/**
 * Orders active pods best-to-delete first, as controller.ActivePodsWithRanks: unscheduled, then
 * pending, then not ready, then on crowded nodes, then ready for the shortest time, then most
 * restarts, then newest.
 */
export function rankPodsForDeletion(pods: readonly V1Pod[]): V1Pod[] {
  const perNode = new Map<string, number>();
  for (const pod of pods) {
    const node = pod.spec?.nodeName;
    if (node) perNode.set(node, (perNode.get(node) ?? 0) + 1);
  }
  const cmp = (a: V1Pod, b: V1Pod): number => {
    const aNode = a.spec?.nodeName ?? '';
    const bNode = b.spec?.nodeName ?? '';
    if ((aNode === '') !== (bNode === '')) return aNode === '' ? -1 : 1;
    const phase = phaseRank(a) - phaseRank(b);
    if (phase !== 0) return phase;
    const aReady = isPodReady(a);
    const bReady = isPodReady(b);
    if (aReady !== bReady) return aReady ? 1 : -1;
    const crowd = (perNode.get(bNode) ?? 0) - (perNode.get(aNode) ?? 0);
    if (crowd !== 0) return crowd;
    if (aReady && bReady) {
      const aSince = podReadySince(a) ?? 0;
      const bSince = podReadySince(b) ?? 0;
      if (aSince !== bSince) return bSince - aSince;
    }
    const restarts = podRestarts(b) - podRestarts(a);
    if (restarts !== 0) return restarts;
    const aCreated = toMillis(a.metadata?.creationTimestamp as Date | string | undefined) ?? Number.MAX_SAFE_INTEGER;
    const bCreated = toMillis(b.metadata?.creationTimestamp as Date | string | undefined) ?? Number.MAX_SAFE_INTEGER;
    if (aCreated !== bCreated) return bCreated - aCreated;
    const aName = a.metadata?.name ?? '';
    const bName = b.metadata?.name ?? '';
    return aName < bName ? -1 : aName > bName ? 1 : 0;
  };
  return [...pods].sort(cmp);
}

/** Plans one sync of `rs` over the pods of its namespace (any owner; the plan sorts out which are its). */
export function planReplicaSet(rs: V1ReplicaSet, pods: readonly V1Pod[]): ReplicaSetPlan {
  const { owned, adopt, release } = claimPods(rs, pods);
  const active = [...owned, ...adopt].filter(isPodActive);
  const want = isTerminating(rs) ? 0 : Math.max(0, rs.spec?.replicas ?? 1);
  const diff = active.length - want;
  if (isTerminating(rs)) return { create: 0, delete: [], adopt: [], release: [], active };
  if (diff < 0) return { create: -diff, delete: [], adopt, release, active };
  if (diff > 0) return { create: 0, delete: rankPodsForDeletion(active).slice(0, diff), adopt, release, active };
  return { create: 0, delete: [], adopt, release, active };
}

/** The status the ReplicaSet should report for its active pods at `nowMs`. */
export function computeReplicaSetStatus(rs: V1ReplicaSet, active: readonly V1Pod[], nowMs: number): V1ReplicaSetStatus {
  const templateLabels = rs.spec?.template?.metadata?.labels ?? {};
  const minReady = rs.spec?.minReadySeconds ?? 0;
  const status: V1ReplicaSetStatus = {
    replicas: active.length,
    fullyLabeledReplicas: active.filter((p) => matchLabelMap(templateLabels, p.metadata?.labels)).length,
    readyReplicas: active.filter(isPodReady).length,
    availableReplicas: active.filter((p) => isPodAvailable(p, minReady, nowMs)).length,
  };
  if (rs.metadata?.generation !== undefined) status.observedGeneration = rs.metadata.generation;
  return status;
}

/**
 * When the status will change without any event: the first moment a Ready pod passes minReadySeconds.
 * The reconciler re-queues the ReplicaSet for then (ms from now), or undefined when nothing is waiting.
 */
export function nextAvailabilityCheckMs(rs: V1ReplicaSet, active: readonly V1Pod[], nowMs: number): number | undefined {
  const minReady = rs.spec?.minReadySeconds ?? 0;
  if (minReady <= 0) return undefined;
  let next: number | undefined;
  for (const pod of active) {
    const since = podReadySince(pod);
    if (since === undefined || !isPodReady(pod)) continue;
    const at = since + minReady * 1000 - nowMs;
    if (at > 0 && (next === undefined || at < next)) next = at;
  }
  return next;
}

/** The pod a ReplicaSet creates: its template, `generateName: <rs>-`, and the controller reference. */
export function buildPodForReplicaSet(rs: V1ReplicaSet): V1Pod {
  const template = structuredClone(rs.spec?.template ?? {});
  const meta = template.metadata ?? {};
  const pod: V1Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: `${rs.metadata?.name ?? 'replicaset'}-`,
      namespace: rs.metadata?.namespace,
      labels: meta.labels ?? {},
      ownerReferences: [ownerRefForReplicaSet(rs)],
    },
    spec: template.spec ?? { containers: [] },
  };
  if (meta.annotations && pod.metadata) pod.metadata.annotations = meta.annotations;
  if (meta.finalizers && pod.metadata) pod.metadata.finalizers = meta.finalizers;
  return pod;
}

/** True when `pod` is one of `rs`'s (by controller uid), whatever its labels. */
export function isOwnedByReplicaSet(pod: V1Pod, rs: V1ReplicaSet): boolean {
  return isControlledBy(pod, rs.metadata?.uid);
}
