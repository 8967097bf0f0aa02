/**
 * The Deployment controller's decisions as one pure function, following kube-controller-manager's
 * deployment controller: find the new ReplicaSet (template equal ignoring the hash) or create it,
 * roll (RollingUpdate with maxSurge/maxUnavailable, or Recreate), scale proportionally on a scaling
 * event, prune old ReplicaSets past revisionHistoryLimit, and compute status with its conditions.
 */
import type { V1Deployment, V1DeploymentCondition, V1DeploymentStatus, V1OwnerReference, V1Pod, V1ReplicaSet } from '@kubernetes/client-node';
import { matchLabelSelector } from './label-selector.ts';
import { controllerRefOf, isPodTerminal, isTerminating, toMillis } from './object-meta.ts';
import { computePodTemplateHash, podTemplateHashLabel, templatesEqualIgnoringHash } from './pod-template-hash.ts';

/** The rollout revision, on ReplicaSets and on their Deployment (what `kubectl rollout history` lists). */
export const revisionAnnotation = 'deployment.kubernetes.io/revision';
/** spec.replicas of the Deployment when it last sized this ReplicaSet: a difference means a scaling event. */
export const desiredReplicasAnnotation = 'deployment.kubernetes.io/desired-replicas';
/** replicas + maxSurge at that time: the base of proportional scaling. */
export const maxReplicasAnnotation = 'deployment.kubernetes.io/max-replicas';

// Deployment annotations that are the controller's or kubectl's own and never copied onto ReplicaSets.
const skipCopyAnnotations = new Set([
  'kubectl.kubernetes.io/last-applied-configuration',
  revisionAnnotation,
  'deployment.kubernetes.io/revision-history',
  desiredReplicasAnnotation,
  maxReplicasAnnotation,
  'deprecated.deployment.rollback.to',
]);

/** One update of an existing ReplicaSet: new spec.replicas and the annotations to set. */
export interface ReplicaSetUpdate {
  name: string;
  replicas: number;
  annotations: Record<string, string>;
  minReadySeconds: number;
}

/** Everything one sync of a Deployment should write. */
export interface DeploymentPlan {
  /** Orphan ReplicaSets matching the selector, to be adopted (controller reference added). */
  adopt: V1ReplicaSet[];
  /** Owned ReplicaSets that no longer match the selector, to be released. */
  release: V1ReplicaSet[];
  /** The new ReplicaSet to create, when none has the current template. */
  create: V1ReplicaSet | undefined;
  /** Updates of existing ReplicaSets, in the order to apply them. */
  update: ReplicaSetUpdate[];
  /** Old ReplicaSets to delete (history beyond revisionHistoryLimit). */
  delete: string[];
  /** The `deployment.kubernetes.io/revision` the Deployment should carry, if it has a new ReplicaSet. */
  revision: string | undefined;
  /** The status to write (compared with the current one by the reconciler). */
  status: V1DeploymentStatus;
  /** Sync again after this long (ms) even without events: the progress deadline check. */
  requeueAfterMs: number | undefined;
}

/** Resolves an IntOrString such as 3 or "25%" against `total`, rounding up or down as the field requires. */
export function resolveIntOrPercent(value: number | string | undefined, fallback: string, total: number, roundUp: boolean): number {
  const v = value ?? fallback;
  if (typeof v === 'number') return v;
  const m = /^(\d+)%$/.exec(v);
  if (!m) {
    const n = Number.parseInt(v, 10);
    return Number.isFinite(n) ? n : 0;
  }
  const scaled = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(scaled) : Math.floor(scaled);
}

function replicasOf(d: V1Deployment): number {
  return d.spec?.replicas ?? 1;
}

function isRolling(d: V1Deployment): boolean {
  return (d.spec?.strategy?.type ?? 'RollingUpdate') === 'RollingUpdate';
}

/** maxSurge and maxUnavailable as pod counts (ResolveFenceposts: never both zero). */
export function resolveFenceposts(d: V1Deployment): { maxSurge: number; maxUnavailable: number } {
  if (!isRolling(d)) return { maxSurge: 0, maxUnavailable: 0 };
  const replicas = replicasOf(d);
  const ru = d.spec?.strategy?.rollingUpdate;
  const maxSurge = resolveIntOrPercent(ru?.maxSurge as number | string | undefined, '25%', replicas, true);
  let maxUnavailable = resolveIntOrPercent(ru?.maxUnavailable as number | string | undefined, '25%', replicas, false);
  if (maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
  return { maxSurge, maxUnavailable };
}

/** MaxUnavailable capped by replicas (a Deployment of 0 tolerates none). */
function maxUnavailableOf(d: V1Deployment): number {
  if (!isRolling(d) || replicasOf(d) === 0) return 0;
  return Math.min(resolveFenceposts(d).maxUnavailable, replicasOf(d));
}

function specReplicas(rs: V1ReplicaSet): number {
  return rs.spec?.replicas ?? 1;
}

function revisionOf(rs: V1ReplicaSet): number {
  const n = Number.parseInt(rs.metadata?.annotations?.[revisionAnnotation] ?? '0', 10);
  return Number.isFinite(n) ? n : 0;
}

function createdMs(rs: V1ReplicaSet): number {
  return toMillis(rs.metadata?.creationTimestamp as Date | string | undefined) ?? 0;
}

function byCreation(a: V1ReplicaSet, b: V1ReplicaSet): number {
  const d = createdMs(a) - createdMs(b);
  if (d !== 0) return d;
  const an = a.metadata?.name ?? '';
  const bn = b.metadata?.name ?? '';
  return an < bn ? -1 : an > bn ? 1 : 0;
}

function sum(list: readonly V1ReplicaSet[], f: (rs: V1ReplicaSet) => number): number {
  return list.reduce((n, rs) => n + f(rs), 0);
}

/** The controller ownerReference a Deployment puts on its ReplicaSets. */
export function ownerRefForDeployment(d: V1Deployment): V1OwnerReference {
  return { apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata?.name ?? '', uid: d.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true };
}

/** The ReplicaSets of the namespace this Deployment owns, adopts or releases. */
export function claimReplicaSets(d: V1Deployment, replicaSets: readonly V1ReplicaSet[]): { owned: V1ReplicaSet[]; adopt: V1ReplicaSet[]; release: V1ReplicaSet[] } {
  const owned: V1ReplicaSet[] = [];
  const adopt: V1ReplicaSet[] = [];
  const release: V1ReplicaSet[] = [];
  const deleting = isTerminating(d);
  for (const rs of replicaSets) {
    if (rs.metadata?.namespace !== d.metadata?.namespace) continue;
    const matches = matchLabelSelector(d.spec?.selector, rs.metadata?.labels);
    const ref = controllerRefOf(rs);
    if (ref) {
      if (ref.uid !== d.metadata?.uid) continue;
      if (matches) owned.push(rs);
      else if (!deleting) release.push(rs);
    } else if (matches && !deleting && !isTerminating(rs)) {
      adopt.push(rs);
    }
  }
  return { owned, adopt, release };
}

/** Sets a condition the way SetDeploymentCondition does: same status and reason leaves it untouched. */
function setCondition(status: V1DeploymentStatus, cond: V1DeploymentCondition): void {
  const list = status.conditions ?? [];
  const current = list.find((c) => c.type === cond.type);
  if (current && current.status === cond.status && current.reason === cond.reason) return;
  if (current && current.status === cond.status) cond.lastTransitionTime = current.lastTransitionTime;
  status.conditions = [...list.filter((c) => c.type !== cond.type), cond];
}

function newCondition(type: string, status: 'True' | 'False', reason: string, message: string, nowMs: number): V1DeploymentCondition {
  const now = new Date(nowMs);
  return { type, status, reason, message, lastUpdateTime: now, lastTransitionTime: now };
}

/** DeploymentComplete: every replica updated and available, and this generation observed. */
function isComplete(d: V1Deployment, s: V1DeploymentStatus): boolean {
  const want = replicasOf(d);
  return (s.updatedReplicas ?? 0) === want && (s.replicas ?? 0) === want && (s.availableReplicas ?? 0) === want && (s.observedGeneration ?? 0) >= (d.metadata?.generation ?? 0);
}

/** DeploymentProgressing: any count moved the right way since the last status. */
function isProgressing(d: V1Deployment, s: V1DeploymentStatus): boolean {
  const old = d.status ?? {};
  const oldOld = (old.replicas ?? 0) - (old.updatedReplicas ?? 0);
  const newOld = (s.replicas ?? 0) - (s.updatedReplicas ?? 0);
  return (s.updatedReplicas ?? 0) > (old.updatedReplicas ?? 0) || newOld < oldOld || (s.readyReplicas ?? 0) > (old.readyReplicas ?? 0) || (s.availableReplicas ?? 0) > (old.availableReplicas ?? 0);
}

/** Input of planDeployment besides the Deployment itself. */
export interface DeploymentWorld {
  /** ReplicaSets of the Deployment's namespace (any owner). */
  replicaSets: readonly V1ReplicaSet[];
  /** Pods of the namespace; only Recreate looks at them (old pods must be gone before new ones start). */
  pods: readonly V1Pod[];
  nowMs: number;
}

/** Plans one sync of a Deployment. */
export function planDeployment(d: V1Deployment, world: DeploymentWorld): DeploymentPlan {
  const { owned, adopt, release } = claimReplicaSets(d, world.replicaSets);
  const all = [...owned, ...adopt].map((rs) => structuredClone(rs));
  const replicas = replicasOf(d);
  const { maxSurge } = resolveFenceposts(d);
  const minReadySeconds = d.spec?.minReadySeconds ?? 0;
  const updates = new Map<string, ReplicaSetUpdate>();
  const plan: DeploymentPlan = { adopt, release, create: undefined, update: [], delete: [], revision: undefined, status: {}, requeueAfterMs: undefined };
  const status: V1DeploymentStatus = structuredClone(d.status ?? {});

  // The new ReplicaSet is the oldest one whose template equals the Deployment's (FindNewReplicaSet).
  const matching = all.filter((rs) => templatesEqualIgnoringHash(rs.spec?.template, d.spec?.template)).sort(byCreation);
  let newRS: V1ReplicaSet | undefined = matching[0];
  const oldRSs = all.filter((rs) => rs !== newRS);
  const maxOldRevision = Math.max(0, ...oldRSs.map(revisionOf));

  /** Records spec.replicas and the replica annotations on a ReplicaSet; true when its size changed. */
  const scale = (rs: V1ReplicaSet, to: number): boolean => {
    const name = rs.metadata?.name ?? '';
    const annotations: Record<string, string> = { [desiredReplicasAnnotation]: String(replicas), [maxReplicasAnnotation]: String(replicas + maxSurge) };
    const sizeChanged = specReplicas(rs) !== to;
    const annChanged = Object.entries(annotations).some(([k, v]) => rs.metadata?.annotations?.[k] !== v);
    if (!sizeChanged && !annChanged) return false;
    if (rs === plan.create) {
      rs.spec = { ...rs.spec, replicas: to } as V1ReplicaSet['spec'];
      rs.metadata = { ...rs.metadata, annotations: { ...rs.metadata?.annotations, ...annotations } };
      return sizeChanged;
    }
    rs.spec = { ...rs.spec, replicas: to } as V1ReplicaSet['spec'];
    rs.metadata = { ...rs.metadata, annotations: { ...rs.metadata?.annotations, ...annotations } };
    const prev = updates.get(name);
    updates.set(name, { name, replicas: to, annotations: { ...prev?.annotations, ...annotations }, minReadySeconds: rs.spec?.minReadySeconds ?? 0 });
    return sizeChanged;
  };

  /** Keeps the existing new ReplicaSet's revision ahead of every old one, and its minReadySeconds in step. */
  const syncNewRevision = (rs: V1ReplicaSet): void => {
    const name = rs.metadata?.name ?? '';
    const annotations: Record<string, string> = {};
    if (revisionOf(rs) <= maxOldRevision) annotations[revisionAnnotation] = String(maxOldRevision + 1);
    const mrsChanged = (rs.spec?.minReadySeconds ?? 0) !== minReadySeconds;
    if (Object.keys(annotations).length === 0 && !mrsChanged) return;
    rs.metadata = { ...rs.metadata, annotations: { ...rs.metadata?.annotations, ...annotations } };
    rs.spec = { ...rs.spec, minReadySeconds } as V1ReplicaSet['spec'];
    const prev = updates.get(name);
    updates.set(name, { name, replicas: specReplicas(rs), annotations: { ...prev?.annotations, ...annotations }, minReadySeconds });
  };

  /** Creates the new ReplicaSet (in the plan) with `initial` replicas. */
  const createNew = (initial: number): V1ReplicaSet => {
    const hash = computePodTemplateHash(d.spec?.template, d.status?.collisionCount ?? 0);
    const template = structuredClone(d.spec?.template ?? {});
    template.metadata = { ...template.metadata, labels: { ...template.metadata?.labels, [podTemplateHashLabel]: hash } };
    // A template's timestamp is always null in practice; dropping it keeps the create body plain.
    delete template.metadata.creationTimestamp;
    const selector = structuredClone(d.spec?.selector ?? {});
    selector.matchLabels = { ...selector.matchLabels, [podTemplateHashLabel]: hash };
    const annotations: Record<string, string> = {};
    for (const [k, v] of Object.entries(d.metadata?.annotations ?? {})) if (!skipCopyAnnotations.has(k)) annotations[k] = v;
    annotations[revisionAnnotation] = String(maxOldRevision + 1);
    annotations[desiredReplicasAnnotation] = String(replicas);
    annotations[maxReplicasAnnotation] = String(replicas + maxSurge);
    const rs: V1ReplicaSet = {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: `${d.metadata?.name ?? 'deployment'}-${hash}`,
        namespace: d.metadata?.namespace,
        labels: template.metadata.labels,
        annotations,
        ownerReferences: [ownerRefForDeployment(d)],
      },
      spec: { replicas: initial, minReadySeconds, selector, template },
    };
    plan.create = rs;
    setCondition(status, newCondition('Progressing', 'True', 'NewReplicaSetCreated', `Created new replica set "${rs.metadata?.name}"`, world.nowMs));
    return rs;
  };

  /** NewRSNewReplicas for RollingUpdate: grow the new ReplicaSet as far as maxSurge allows. */
  const rollingNewReplicas = (current: number): number => {
    const currentPods = sum(all, specReplicas);
    const maxTotal = replicas + maxSurge;
    if (currentPods >= maxTotal) return current;
    return current + Math.min(maxTotal - currentPods, replicas - current);
  };

  // HasProgressDeadline: MaxInt32 is how a user says "no deadline" (the field defaults to 600).
  const hasDeadline = d.spec?.progressDeadlineSeconds !== 2147483647;
  const paused = d.spec?.paused === true;
  const deleting = isTerminating(d);
  const active = (list: readonly V1ReplicaSet[]): V1ReplicaSet[] => list.filter((rs) => specReplicas(rs) > 0);

  if (newRS) {
    syncNewRevision(newRS);
    if (hasDeadline && !status.conditions?.some((c) => c.type === 'Progressing')) {
      setCondition(status, newCondition('Progressing', 'True', 'FoundNewReplicaSet', `Found new replica set "${newRS.metadata?.name}"`, world.nowMs));
    }
  }

  const scalingEvent = active(all).some((rs) => {
    const desired = rs.metadata?.annotations?.[desiredReplicasAnnotation];
    return desired !== undefined && desired !== String(replicas);
  });

  let rolloutScaled = false;
  if (deleting) {
    // A Deployment being deleted only reports status; its ReplicaSets go with it.
  } else if (paused || scalingEvent) {
    scaleProportionally();
    if (paused) cleanup(oldRSs);
  } else if (isRolling(d)) {
    if (!newRS) {
      all.push((newRS = createNew(0)));
      const initial = rollingNewReplicas(0);
      if (newRS.spec) newRS.spec.replicas = initial;
    }
    rolloutScaled = reconcileNewRolling(newRS);
    if (!rolloutScaled) rolloutScaled = reconcileOldRolling(newRS);
    if (!rolloutScaled && isComplete(d, d.status ?? {})) cleanup(oldRSs);
  } else {
    // Recreate: every old pod gone before the first new one starts.
    let scaledDown = false;
    for (const rs of active(oldRSs)) scaledDown = scale(rs, 0) || scaledDown;
    if (!scaledDown && !oldPodsRunning()) {
      if (!newRS) all.push((newRS = createNew(replicas)));
      else scale(newRS, replicas);
      if (isComplete(d, d.status ?? {})) cleanup(oldRSs);
    }
  }

  plan.update = [...updates.values()];
  if (newRS) plan.revision = newRS.metadata?.annotations?.[revisionAnnotation];

  // Status from the ReplicaSets as they will be after this sync's writes (calculateStatus).
  const allAfter = all.filter((rs) => !plan.delete.includes(rs.metadata?.name ?? ''));
  const available = sum(allAfter, (rs) => rs.status?.availableReplicas ?? 0);
  const total = sum(allAfter, specReplicas);
  status.observedGeneration = d.metadata?.generation ?? status.observedGeneration;
  status.replicas = sum(allAfter, (rs) => rs.status?.replicas ?? 0);
  status.updatedReplicas = newRS?.status?.replicas ?? 0;
  status.readyReplicas = sum(allAfter, (rs) => rs.status?.readyReplicas ?? 0);
  status.availableReplicas = available;
  status.unavailableReplicas = Math.max(0, total - available);
  if (available >= replicas - maxUnavailableOf(d)) {
    setCondition(status, newCondition('Available', 'True', 'MinimumReplicasAvailable', 'Deployment has minimum availability.', world.nowMs));
  } else {
    setCondition(status, newCondition('Available', 'False', 'MinimumReplicasUnavailable', 'Deployment does not have minimum availability.', world.nowMs));
  }
  syncProgressing();
  plan.status = status;
  return plan;

  function scaleProportionally(): void {
    const olds = [...oldRSs].sort((a, b) => byCreation(b, a));
    const activeAll = active([...olds, ...(newRS ? [newRS] : [])]);
    let target: V1ReplicaSet | undefined;
    if (activeAll.length === 0) target = newRS ?? olds[0];
    else if (activeAll.length === 1) target = activeAll[0];
    if (target) {
      scale(target, replicas);
      return;
    }
    if (newRS && specReplicas(newRS) === replicas && newRS.metadata?.annotations?.[desiredReplicasAnnotation] === String(replicas) && (newRS.status?.availableReplicas ?? 0) === replicas) {
      for (const rs of active(oldRSs)) scale(rs, 0);
      return;
    }
    if (!isRolling(d)) return;
    const allowed = replicas > 0 ? replicas + maxSurge : 0;
    const toAdd = allowed - sum(activeAll, specReplicas);
    const sorted = [...activeAll].sort((a, b) => {
      const bySize = specReplicas(b) - specReplicas(a);
      if (bySize !== 0) return bySize;
      // Growing, the newer gets the extra pods; shrinking, the older loses them.
      return toAdd > 0 ? byCreation(b, a) : byCreation(a, b);
    });
    let added = 0;
    const sizes = new Map<V1ReplicaSet, number>();
    for (const rs of sorted) {
      let proportion = 0;
      if (toAdd !== 0 && specReplicas(rs) !== 0 && toAdd !== added) {
        const fraction = replicaSetFraction(rs);
        proportion = toAdd > 0 ? Math.min(fraction, toAdd - added) : Math.max(fraction, toAdd - added);
      }
      sizes.set(rs, specReplicas(rs) + proportion);
      added += proportion;
    }
    sorted.forEach((rs, i) => {
      let size = sizes.get(rs) ?? specReplicas(rs);
      if (i === 0 && toAdd !== 0) size = Math.max(0, size + (toAdd - added));
      scale(rs, size);
    });
  }

  function replicaSetFraction(rs: V1ReplicaSet): number {
    if (replicas === 0) return -specReplicas(rs);
    const deploymentReplicas = replicas + maxSurge;
    const annotated = Number.parseInt(rs.metadata?.annotations?.[maxReplicasAnnotation] ?? '', 10);
    const base = Number.isFinite(annotated) && annotated > 0 ? annotated : d.status?.replicas ?? 0;
    if (base === 0) return 0;
    return Math.round((specReplicas(rs) * deploymentReplicas) / base) - specReplicas(rs);
  }

  function reconcileNewRolling(rs: V1ReplicaSet): boolean {
    const current = specReplicas(rs);
    if (current >= replicas) return scale(rs, replicas);
    return scale(rs, rollingNewReplicas(current));
  }

  function reconcileOldRolling(rs: V1ReplicaSet): boolean {
    const activeOld = active(oldRSs).sort(byCreation);
    const oldPods = sum(activeOld, specReplicas);
    if (oldPods === 0) return false;
    const allPods = sum(all, specReplicas);
    const minAvailable = replicas - maxUnavailableOf(d);
    const newUnavailable = specReplicas(rs) - (rs.status?.availableReplicas ?? 0);
    const maxScaledDown = allPods - minAvailable - newUnavailable;
    if (maxScaledDown <= 0) return false;
    // Unhealthy old replicas go first, or they would block the rollout until its deadline.
    let cleaned = 0;
    for (const old of activeOld) {
      if (cleaned >= maxScaledDown) break;
      const unhealthy = specReplicas(old) - (old.status?.availableReplicas ?? 0);
      if (specReplicas(old) === 0 || unhealthy <= 0) continue;
      const n = Math.min(maxScaledDown - cleaned, unhealthy);
      scale(old, specReplicas(old) - n);
      cleaned += n;
    }
    // Then healthy ones, as far as availability allows (scaleDownOldReplicaSetsForRollingUpdate).
    const availablePods = sum(all, (r) => r.status?.availableReplicas ?? 0);
    let scaledDown = 0;
    if (availablePods > minAvailable) {
      const budget = availablePods - minAvailable;
      for (const old of activeOld) {
        if (scaledDown >= budget) break;
        if (specReplicas(old) === 0) continue;
        const n = Math.min(specReplicas(old), budget - scaledDown);
        scale(old, specReplicas(old) - n);
        scaledDown += n;
      }
    }
    return cleaned + scaledDown > 0;
  }

  function oldPodsRunning(): boolean {
    if (sum(oldRSs, (rs) => rs.status?.replicas ?? 0) > 0) return true;
    const oldUids = new Set(oldRSs.map((rs) => rs.metadata?.uid));
    return world.pods.some((pod) => {
      const ref = controllerRefOf(pod);
      return ref !== undefined && oldUids.has(ref.uid) && pod.metadata?.namespace === d.metadata?.namespace && !isPodTerminal(pod);
    });
  }

  function cleanup(olds: readonly V1ReplicaSet[]): void {
    const limit = d.spec?.revisionHistoryLimit ?? 10;
    const alive = olds.filter((rs) => !isTerminating(rs));
    const excess = alive.length - limit;
    if (excess <= 0) return;
    const byRevision = [...alive].sort((a, b) => revisionOf(a) - revisionOf(b) || byCreation(a, b));
    for (const rs of byRevision.slice(0, excess)) {
      const settled = (rs.status?.replicas ?? 0) === 0 && specReplicas(rs) === 0 && (rs.metadata?.generation ?? 0) <= (rs.status?.observedGeneration ?? 0);
      if (settled) plan.delete.push(rs.metadata?.name ?? '');
    }
  }

  function syncProgressing(): void {
    if (!hasDeadline) {
      status.conditions = (status.conditions ?? []).filter((c) => c.type !== 'Progressing');
      return;
    }
    const current = d.status?.conditions?.find((c) => c.type === 'Progressing');
    const completeAlready = status.replicas === status.updatedReplicas && current?.reason === 'NewReplicaSetAvailable';
    if (completeAlready) return;
    const rsName = newRS?.metadata?.name;
    const deadlineMs = (d.spec?.progressDeadlineSeconds ?? 600) * 1000;
    if (isComplete(d, status)) {
      const msg = rsName ? `ReplicaSet "${rsName}" has successfully progressed.` : `Deployment "${d.metadata?.name}" has successfully progressed.`;
      setCondition(status, newCondition('Progressing', 'True', 'NewReplicaSetAvailable', msg, world.nowMs));
    } else if (isProgressing(d, status)) {
      const msg = rsName ? `ReplicaSet "${rsName}" is progressing.` : `Deployment "${d.metadata?.name}" is progressing.`;
      const cond = newCondition('Progressing', 'True', 'ReplicaSetUpdated', msg, world.nowMs);
      const existing = status.conditions?.find((c) => c.type === 'Progressing');
      if (existing?.status === 'True') cond.lastTransitionTime = existing.lastTransitionTime;
      status.conditions = [...(status.conditions ?? []).filter((c) => c.type !== 'Progressing'), cond];
      plan.requeueAfterMs = deadlineMs;
    } else {
      const cond = status.conditions?.find((c) => c.type === 'Progressing');
      if (cond && cond.reason !== 'NewReplicaSetAvailable' && cond.reason !== 'ProgressDeadlineExceeded') {
        const since = toMillis(cond.lastUpdateTime as Date | string | undefined) ?? world.nowMs;
        if (world.nowMs - since > deadlineMs) {
          const msg = rsName ? `ReplicaSet "${rsName}" has timed out progressing.` : `Deployment "${d.metadata?.name}" has timed out progressing.`;
          setCondition(status, newCondition('Progressing', 'False', 'ProgressDeadlineExceeded', msg, world.nowMs));
        } else {
          plan.requeueAfterMs = since + deadlineMs - world.nowMs + 1000;
        }
      }
    }
  }
}
