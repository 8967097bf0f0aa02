/**
 * The ReplicaSet controller: keeps the number of active pods of each ReplicaSet at spec.replicas and
 * reports their readiness in status. Creates and deletes are remembered until the cache shows them, so a
 * sync that runs in between does not act twice on the same shortfall.
 */
import type { V1Pod, V1ReplicaSet } from '@kubernetes/client-node';
import { ControllerError, ControllerErrorCode } from './errors.ts';
import type { Reconciler, SyncResult } from './controller-runner.ts';
import { byOwner, selectByLabels, type Informers } from './informers.ts';
import { describeApiError, isNotFound, mergePatchOptions, patchBody, retryOnConflict, type KubeClients } from './kube-api.ts';
import { matchLabelSelector } from './label-selector.ts';
import { controllerRefOf, keyOf, splitKey, toWire } from './object-meta.ts';
import { canonicalJson } from './pod-template-hash.ts';
import { buildPodForReplicaSet, computeReplicaSetStatus, nextAvailabilityCheckMs, ownerRefForReplicaSet, planReplicaSet } from './plan-replica-set.ts';
import type { WorkQueue } from './work-queue.ts';
import { WriteExpectations } from './write-expectations.ts';

/** Pods created in parallel at most per batch; batches double from 1 as client-go's slowStartBatch. */
const maxCreateBatch = 32;

/** ReplicaSet reconciler over ReplicaSet keys. */
export class ReplicaSetController implements Reconciler {
  readonly name = 'replicaset';
  private readonly expectations = new WriteExpectations();
  private readonly informers: Informers;
  private readonly clients: KubeClients;
  private readonly log: (line: string) => void;

  constructor(deps: { informers: Informers; clients: KubeClients; queue: WorkQueue; log: (line: string) => void }) {
    this.informers = deps.informers;
    this.clients = deps.clients;
    this.log = deps.log;
    const { queue } = deps;
    deps.informers.replicaSets.on((_event, rs) => queue.add(keyOf(rs)));
    deps.informers.pods.on((event, pod) => {
      this.expectations.observe(pod, event === 'delete');
      const ref = controllerRefOf(pod);
      if (ref) {
        if (ref.kind === 'ReplicaSet') queue.add(`${pod.metadata?.namespace}/${ref.name}`);
        return;
      }
      // An orphan: every ReplicaSet that could adopt it takes a look.
      if (event === 'delete') return;
      for (const rs of deps.informers.replicaSets.list(pod.metadata?.namespace)) {
        if (matchLabelSelector(rs.spec?.selector, pod.metadata?.labels)) queue.add(keyOf(rs));
      }
    });
  }

  async sync(key: string): Promise<SyncResult | void> {
    const { namespace, name } = splitKey(key);
    const rs = this.informers.replicaSets.get(name, namespace);
    if (!rs) {
      this.expectations.forgetOwner(key);
      return;
    }
    const pending = this.expectations.pending(key, (k) => {
      const p = splitKey(k);
      return this.informers.pods.get(p.name, p.namespace);
    });
    if (pending.length > 0) throw new ControllerError(ControllerErrorCode.staleCache, `ReplicaSet ${key}: waiting for the cache to show pods ${pending.slice(0, 3).join(', ')}`);

    const plan = planReplicaSet(rs, this.candidatePods(rs));
    if (plan.adopt.length > 0) await this.adopt(rs, plan.adopt);
    for (const pod of plan.release) await this.release(rs, pod);
    if (plan.create > 0) await this.createPods(key, rs, plan.create);
    if (plan.delete.length > 0) await this.deletePods(key, rs, plan.delete);

    const now = Date.now();
    const active = plan.active;
    await this.writeStatus(rs, active, now);
    const next = nextAvailabilityCheckMs(rs, active, now);
    return next === undefined ? undefined : { requeueAfterMs: next + 50 };
  }

  /** Pods the ReplicaSet owns, plus those its selector's labels could claim (through the indexes). */
  private candidatePods(rs: V1ReplicaSet): V1Pod[] {
    const namespace = rs.metadata?.namespace;
    const byKey = new Map<string, V1Pod>();
    for (const pod of this.informers.pods.byIndex(byOwner, rs.metadata?.uid ?? '')) byKey.set(keyOf(pod), pod);
    const matchLabels = rs.spec?.selector?.matchLabels ?? {};
    const matching = Object.keys(matchLabels).length > 0 ? selectByLabels(this.informers.pods, namespace, matchLabels) : this.informers.pods.list(namespace);
    for (const pod of matching) byKey.set(keyOf(pod), pod);
    return [...byKey.values()];
  }

  private async adopt(rs: V1ReplicaSet, pods: V1Pod[]): Promise<void> {
    // Re-read the ReplicaSet first: adopting into one that was just deleted would orphan the pods again.
    const fresh = await this.clients.apps.readNamespacedReplicaSet({ name: rs.metadata?.name ?? '', namespace: rs.metadata?.namespace ?? '' });
    if (fresh.metadata?.uid !== rs.metadata?.uid || fresh.metadata?.deletionTimestamp) return;
    for (const pod of pods) {
      const refs = [...(pod.metadata?.ownerReferences ?? []), ownerRefForReplicaSet(rs)];
      try {
        await this.clients.core.patchNamespacedPod({ name: pod.metadata?.name ?? '', namespace: pod.metadata?.namespace ?? '', body: patchBody({ metadata: { ownerReferences: refs } }, pod.metadata?.resourceVersion) }, mergePatchOptions);
        this.log(`replicaset ${keyOf(rs)}: adopted pod ${pod.metadata?.name}`);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }

  private async release(rs: V1ReplicaSet, pod: V1Pod): Promise<void> {
    const refs = (pod.metadata?.ownerReferences ?? []).filter((r) => r.uid !== rs.metadata?.uid);
    try {
      await this.clients.core.patchNamespacedPod({ name: pod.metadata?.name ?? '', namespace: pod.metadata?.namespace ?? '', body: patchBody({ metadata: { ownerReferences: refs } }, pod.metadata?.resourceVersion) }, mergePatchOptions);
      this.log(`replicaset ${keyOf(rs)}: released pod ${pod.metadata?.name} (labels no longer match)`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  private async createPods(key: string, rs: V1ReplicaSet, count: number): Promise<void> {
    const namespace = rs.metadata?.namespace ?? 'default';
    let left = count;
    let batch = 1;
    const names: string[] = [];
    while (left > 0) {
      const n = Math.min(batch, left, maxCreateBatch);
      const results = await Promise.allSettled(
        Array.from({ length: n }, async () => {
          const created = await this.clients.core.createNamespacedPod({ namespace, body: buildPodForReplicaSet(rs) });
          this.expectations.expectPresent(key, created);
          names.push(created.metadata?.name ?? '?');
        }),
      );
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) {
        if (names.length > 0) this.log(`replicaset ${key}: created pods ${names.join(', ')}`);
        // Stop on the first failure (quota, admission, a namespace going away): retrying is the queue's job.
        throw new ControllerError(ControllerErrorCode.api, `ReplicaSet ${key}: creating a pod failed: ${describeApiError(failed.reason)}`, { cause: failed.reason });
      }
      left -= n;
      batch *= 2;
    }
    this.log(`replicaset ${key}: created pods ${names.join(', ')} (want ${rs.spec?.replicas ?? 1})`);
  }

  private async deletePods(key: string, rs: V1ReplicaSet, pods: V1Pod[]): Promise<void> {
    await Promise.all(
      pods.map(async (pod) => {
        try {
          await this.clients.core.deleteNamespacedPod({ name: pod.metadata?.name ?? '', namespace: pod.metadata?.namespace ?? '', body: { preconditions: { uid: pod.metadata?.uid } } });
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
        this.expectations.expectAbsent(key, keyOf(pod));
      }),
    );
    this.log(`replicaset ${key}: deleted pods ${pods.map((p) => p.metadata?.name).join(', ')} (want ${rs.spec?.replicas ?? 1})`);
  }

  private async writeStatus(cached: V1ReplicaSet, active: readonly V1Pod[], now: number): Promise<void> {
    const name = cached.metadata?.name ?? '';
    const namespace = cached.metadata?.namespace ?? '';
    await retryOnConflict(`ReplicaSet ${namespace}/${name} status`, async (fresh) => {
      const rs = fresh ? await this.clients.apps.readNamespacedReplicaSetStatus({ name, namespace }) : cached;
      const want = computeReplicaSetStatus(rs, active, now);
      const have = rs.status ?? {};
      const merged = { ...toWire(have), ...want };
      if (canonicalJson(toWire(have)) === canonicalJson(merged)) return;
      await this.clients.apps.patchNamespacedReplicaSetStatus({ name, namespace, body: patchBody({ status: want }, rs.metadata?.resourceVersion) }, mergePatchOptions);
    });
  }
}
