/**
 * The Deployment controller: applies planDeployment's writes (create, scale and prune ReplicaSets,
 * status, revision) and re-plans from the cache on the next event. Each write it makes is expected in
 * the cache before the next plan, so a rollout never steps twice on the same stale picture.
 */
import type { V1Deployment, V1ReplicaSet } from '@kubernetes/client-node';
import { ControllerError, ControllerErrorCode } from './errors.ts';
import type { Reconciler, SyncResult } from './controller-runner.ts';
import { byOwner, selectByLabels, type Informers } from './informers.ts';
import { isConflict, isNotFound, mergePatchOptions, patchBody, type KubeClients } from './kube-api.ts';
import { matchLabelSelector } from './label-selector.ts';
import { controllerRefOf, keyOf, splitKey, toWire } from './object-meta.ts';
import { planDeployment, ownerRefForDeployment, revisionAnnotation, type DeploymentPlan } from './plan-deployment.ts';
import { canonicalJson, templatesEqualIgnoringHash } from './pod-template-hash.ts';
import type { WorkQueue } from './work-queue.ts';
import { WriteExpectations } from './write-expectations.ts';

/** Deployment reconciler over Deployment keys. */
export class DeploymentController implements Reconciler {
  readonly name = 'deployment';
  /** Writes of ReplicaSets, and of the Deployment itself, kept apart: their keys may coincide. */
  private readonly expectations = new WriteExpectations();
  private readonly selfWrites = new WriteExpectations();
  private readonly informers: Informers;
  private readonly clients: KubeClients;
  private readonly log: (line: string) => void;

  constructor(deps: { informers: Informers; clients: KubeClients; queue: WorkQueue; log: (line: string) => void }) {
    this.informers = deps.informers;
    this.clients = deps.clients;
    this.log = deps.log;
    const { queue, informers } = deps;
    informers.deployments.on((event, d) => {
      this.selfWrites.observe(d, event === 'delete');
      queue.add(keyOf(d));
    });
    informers.replicaSets.on((event, rs) => {
      this.expectations.observe(rs, event === 'delete');
      const ref = controllerRefOf(rs);
      if (ref) {
        if (ref.kind === 'Deployment') queue.add(`${rs.metadata?.namespace}/${ref.name}`);
        return;
      }
      if (event === 'delete') return;
      for (const d of informers.deployments.list(rs.metadata?.namespace)) {
        if (matchLabelSelector(d.spec?.selector, rs.metadata?.labels)) queue.add(keyOf(d));
      }
    });
    // Recreate waits for old pods to be gone: their deletion is the event that lets it go on.
    informers.pods.on((event, pod) => {
      if (event !== 'delete') return;
      const ref = controllerRefOf(pod);
      if (ref?.kind !== 'ReplicaSet') return;
      const rs = informers.replicaSets.get(ref.name, pod.metadata?.namespace);
      const owner = rs && controllerRefOf(rs);
      if (owner?.kind === 'Deployment') queue.add(`${pod.metadata?.namespace}/${owner.name}`);
    });
  }

  async sync(key: string): Promise<SyncResult | void> {
    const { namespace, name } = splitKey(key);
    const d = this.informers.deployments.get(name, namespace);
    if (!d) {
      this.expectations.forgetOwner(key);
      this.selfWrites.forgetOwner(key);
      return;
    }
    const pending = [
      ...this.selfWrites.pending(key, () => d),
      ...this.expectations.pending(key, (k) => {
        const p = splitKey(k);
        return this.informers.replicaSets.get(p.name, p.namespace);
      }),
    ];
    if (pending.length > 0) throw new ControllerError(ControllerErrorCode.staleCache, `Deployment ${key}: waiting for the cache to show ${pending.slice(0, 3).join(', ')}`);

    const replicaSets = this.candidateReplicaSets(d);
    // Only Recreate reads pods: those of this Deployment's ReplicaSets.
    const pods = d.spec?.strategy?.type === 'Recreate' ? replicaSets.flatMap((rs) => this.informers.pods.byIndex(byOwner, rs.metadata?.uid ?? '')) : [];
    const plan = planDeployment(d, { replicaSets, pods, nowMs: Date.now() });
    try {
      await this.apply(key, d, plan);
    } catch (err) {
      // A 409 means the cache was behind another writer: plan again from the next event or retry.
      if (isConflict(err)) throw new ControllerError(ControllerErrorCode.api, `Deployment ${key}: a ReplicaSet or the Deployment changed under this sync; replanning`, { cause: err });
      throw err;
    }
    return plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs };
  }

  /** ReplicaSets the Deployment owns, plus those its selector's labels could claim. */
  private candidateReplicaSets(d: V1Deployment): V1ReplicaSet[] {
    const byKey = new Map<string, V1ReplicaSet>();
    for (const rs of this.informers.replicaSets.byIndex(byOwner, d.metadata?.uid ?? '')) byKey.set(keyOf(rs), rs);
    const matchLabels = d.spec?.selector?.matchLabels ?? {};
    const matching = Object.keys(matchLabels).length > 0 ? selectByLabels(this.informers.replicaSets, d.metadata?.namespace, matchLabels) : this.informers.replicaSets.list(d.metadata?.namespace);
    for (const rs of matching) byKey.set(keyOf(rs), rs);
    return [...byKey.values()];
  }

  private async apply(key: string, d: V1Deployment, plan: DeploymentPlan): Promise<void> {
    const namespace = d.metadata?.namespace ?? 'default';
    const apps = this.clients.apps;
    for (const rs of plan.adopt) {
      const refs = [...(rs.metadata?.ownerReferences ?? []), ownerRefForDeployment(d)];
      const out = await apps.patchNamespacedReplicaSet({ name: rs.metadata?.name ?? '', namespace, body: patchBody({ metadata: { ownerReferences: refs } }, rs.metadata?.resourceVersion) }, mergePatchOptions);
      this.expectations.expectPresent(key, out);
      this.log(`deployment ${key}: adopted ReplicaSet ${rs.metadata?.name}`);
    }
    for (const rs of plan.release) {
      const refs = (rs.metadata?.ownerReferences ?? []).filter((r) => r.uid !== d.metadata?.uid);
      const out = await apps.patchNamespacedReplicaSet({ name: rs.metadata?.name ?? '', namespace, body: patchBody({ metadata: { ownerReferences: refs } }, rs.metadata?.resourceVersion) }, mergePatchOptions);
      this.expectations.expectPresent(key, out);
    }
    if (plan.create) await this.createReplicaSet(key, d, plan.create);
    for (const u of plan.update) {
      const cached = this.informers.replicaSets.get(u.name, namespace);
      const out = await apps.patchNamespacedReplicaSet(
        { name: u.name, namespace, body: patchBody({ metadata: { annotations: u.annotations }, spec: { replicas: u.replicas, minReadySeconds: u.minReadySeconds } }, cached?.metadata?.resourceVersion) },
        mergePatchOptions,
      );
      this.expectations.expectPresent(key, out);
      if ((cached?.spec?.replicas ?? 1) !== u.replicas) this.log(`deployment ${key}: scaled ReplicaSet ${u.name} from ${cached?.spec?.replicas ?? 1} to ${u.replicas}`);
    }
    for (const rsName of plan.delete) {
      const cached = this.informers.replicaSets.get(rsName, namespace);
      try {
        await apps.deleteNamespacedReplicaSet({ name: rsName, namespace, body: { preconditions: { uid: cached?.metadata?.uid }, propagationPolicy: 'Background' } });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      this.expectations.expectAbsent(key, `${namespace}/${rsName}`);
      this.log(`deployment ${key}: deleted old ReplicaSet ${rsName} (revisionHistoryLimit)`);
    }
    // Status first, guarded by the version this plan was made from; then the revision annotation.
    let rv = d.metadata?.resourceVersion;
    if (canonicalJson(toWire(d.status ?? {})) !== canonicalJson(toWire(plan.status))) {
      const out = await apps.patchNamespacedDeploymentStatus({ name: d.metadata?.name ?? '', namespace, body: patchBody({ status: plan.status }, rv) }, mergePatchOptions);
      this.selfWrites.expectPresent(key, out);
      rv = out.metadata?.resourceVersion;
    }
    if (plan.revision !== undefined && d.metadata?.annotations?.[revisionAnnotation] !== plan.revision) {
      const out = await apps.patchNamespacedDeployment({ name: d.metadata?.name ?? '', namespace, body: patchBody({ metadata: { annotations: { [revisionAnnotation]: plan.revision } } }, rv) }, mergePatchOptions);
      this.selfWrites.expectPresent(key, out);
    }
  }

  private async createReplicaSet(key: string, d: V1Deployment, rs: V1ReplicaSet): Promise<void> {
    const namespace = d.metadata?.namespace ?? 'default';
    const name = rs.metadata?.name ?? '';
    try {
      const out = await this.clients.apps.createNamespacedReplicaSet({ namespace, body: rs });
      this.expectations.expectPresent(key, out);
      this.log(`deployment ${key}: created ReplicaSet ${name} with ${rs.spec?.replicas ?? 0} replicas (revision ${rs.metadata?.annotations?.[revisionAnnotation]})`);
      return;
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    // The name is taken. Ours with this template (the cache lagged): fine. Anything else is a hash
    // collision: bump status.collisionCount so the next plan hashes to another name.
    let existing: V1ReplicaSet | undefined;
    try {
      existing = await this.clients.apps.readNamespacedReplicaSet({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (existing && controllerRefOf(existing)?.uid === d.metadata?.uid && templatesEqualIgnoringHash(existing.spec?.template, d.spec?.template)) {
      this.expectations.expectPresent(key, existing);
      return;
    }
    const collisionCount = (d.status?.collisionCount ?? 0) + 1;
    const out = await this.clients.apps.patchNamespacedDeploymentStatus({ name: d.metadata?.name ?? '', namespace, body: patchBody({ status: { collisionCount } }, d.metadata?.resourceVersion) }, mergePatchOptions);
    this.selfWrites.expectPresent(key, out);
    throw new ControllerError(ControllerErrorCode.api, `Deployment ${key}: ReplicaSet name ${name} is taken by another object (hash collision); collisionCount is now ${collisionCount}`);
  }
}
