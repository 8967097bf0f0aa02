import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Deployment, V1ReplicaSet } from '@kubernetes/client-node';
import { planDeployment, resolveFenceposts, resolveIntOrPercent, revisionAnnotation, type DeploymentPlan } from './plan-deployment.ts';
import { computePodTemplateHash } from './pod-template-hash.ts';
import { testDeployment, testPod } from './testing.ts';

/** A tiny cluster: applies plans to ReplicaSets and lets their pods become available when told. */
class Sim {
  rs: V1ReplicaSet[] = [];
  now = 1_000_000;
  uid = 0;
  d: V1Deployment;
  constructor(d: V1Deployment) {
    this.d = d;
  }
  plan(): DeploymentPlan {
    return planDeployment(this.d, { replicaSets: this.rs, pods: [], nowMs: this.now });
  }
  apply(plan: DeploymentPlan): void {
    this.now += 1000;
    if (plan.create) {
      const rs = structuredClone(plan.create);
      rs.metadata = { ...rs.metadata, uid: `rs-${++this.uid}`, creationTimestamp: new Date(this.now), generation: 1, resourceVersion: '1' };
      rs.status = { replicas: 0, availableReplicas: 0, readyReplicas: 0, observedGeneration: 1 };
      this.rs.push(rs);
    }
    for (const u of plan.update) {
      const rs = this.rs.find((r) => r.metadata?.name === u.name);
      assert.ok(rs, `update of unknown ReplicaSet ${u.name}`);
      rs.spec = { ...rs.spec, replicas: u.replicas, minReadySeconds: u.minReadySeconds } as V1ReplicaSet['spec'];
      rs.metadata = { ...rs.metadata, annotations: { ...rs.metadata?.annotations, ...u.annotations } };
    }
    this.rs = this.rs.filter((r) => !plan.delete.includes(r.metadata?.name ?? ''));
    this.d = { ...this.d, status: plan.status };
    if (plan.revision) this.d.metadata = { ...this.d.metadata, annotations: { ...this.d.metadata?.annotations, [revisionAnnotation]: plan.revision } };
  }
  /** Pods of every ReplicaSet catch up with its spec; `available` says whether new pods are available yet. */
  settle(available = true): void {
    for (const rs of this.rs) {
      const want = rs.spec?.replicas ?? 0;
      const was = rs.status?.availableReplicas ?? 0;
      const avail = available ? want : Math.min(was, want);
      rs.status = { replicas: want, readyReplicas: avail, availableReplicas: avail, observedGeneration: rs.metadata?.generation ?? 1 };
    }
  }
  sizes(): Record<string, number> {
    return Object.fromEntries(this.rs.map((r) => [r.metadata?.name ?? '', r.spec?.replicas ?? 0]));
  }
  cond(type: string): string | undefined {
    const c = this.d.status?.conditions?.find((x) => x.type === type);
    return c ? `${c.status}/${c.reason}` : undefined;
  }
  /** Sync, apply, let pods come up; until nothing changes. Checks the rolling-update bounds each step. */
  converge(check?: () => void): number {
    for (let step = 1; step <= 50; step++) {
      const plan = this.plan();
      const quiet = !plan.create && plan.update.length === 0 && plan.delete.length === 0 && JSON.stringify(plan.status) === JSON.stringify(this.d.status);
      if (quiet) return step;
      this.apply(plan);
      check?.();
      this.settle();
    }
    throw new Error('deployment did not converge in 50 syncs');
  }
}

function withImage(d: V1Deployment, image: string, generation: number): V1Deployment {
  const copy = structuredClone(d);
  const c = copy.spec?.template.spec?.containers[0];
  if (c) c.image = image;
  if (copy.metadata) copy.metadata.generation = generation;
  return copy;
}

describe('resolving maxSurge and maxUnavailable', () => {
  it('rounds surge up and unavailability down, never both zero', () => {
    assert.equal(resolveIntOrPercent('25%', '25%', 10, true), 3);
    assert.equal(resolveIntOrPercent('25%', '25%', 10, false), 2);
    assert.equal(resolveIntOrPercent(undefined, '25%', 4, true), 1);
    assert.equal(resolveIntOrPercent(2, '25%', 4, true), 2);
    assert.deepEqual(resolveFenceposts(testDeployment('w', { replicas: 1 })), { maxSurge: 1, maxUnavailable: 0 });
    assert.deepEqual(resolveFenceposts(testDeployment('w', { replicas: 4, strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 0 } } })), { maxSurge: 0, maxUnavailable: 1 });
    assert.deepEqual(resolveFenceposts(testDeployment('w', { strategy: { type: 'Recreate' } })), { maxSurge: 0, maxUnavailable: 0 });
  });
});

describe('planDeployment', () => {
  it('creates the first ReplicaSet with the hash in its name, labels and selector', () => {
    const d = testDeployment('web', { replicas: 3 });
    const plan = planDeployment(d, { replicaSets: [], pods: [], nowMs: 0 });
    const hash = computePodTemplateHash(d.spec?.template);
    assert.equal(plan.create?.metadata?.name, `web-${hash}`);
    assert.deepEqual(plan.create?.metadata?.labels, { app: 'web', 'pod-template-hash': hash });
    assert.deepEqual(plan.create?.spec?.selector.matchLabels, { app: 'web', 'pod-template-hash': hash });
    assert.deepEqual(plan.create?.spec?.template?.metadata?.labels, { app: 'web', 'pod-template-hash': hash });
    assert.equal(plan.create?.spec?.replicas, 3);
    assert.equal(plan.create?.metadata?.annotations?.[revisionAnnotation], '1');
    assert.deepEqual(plan.create?.metadata?.ownerReferences, [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'web', uid: 'deploy-web', controller: true, blockOwnerDeletion: true }]);
    assert.equal(plan.revision, '1');
    assert.equal(plan.status.conditions?.find((c) => c.type === 'Progressing')?.reason, 'NewReplicaSetCreated');
  });

  it('reaches a complete, available status', () => {
    const sim = new Sim(testDeployment('web', { replicas: 3 }));
    sim.converge();
    const s = sim.d.status;
    assert.deepEqual([s?.replicas, s?.updatedReplicas, s?.readyReplicas, s?.availableReplicas, s?.unavailableReplicas, s?.observedGeneration], [3, 3, 3, 3, 0, 1]);
    assert.equal(sim.cond('Available'), 'True/MinimumReplicasAvailable');
    assert.equal(sim.cond('Progressing'), 'True/NewReplicaSetAvailable');
  });

  it('rolls with the default 25% surge and unavailability, step by step', () => {
    const sim = new Sim(testDeployment('web', { replicas: 4 }));
    sim.converge();
    const [oldName] = Object.keys(sim.sizes());
    sim.d = withImage(sim.d, 'nodemesh/echo:v2', 2);

    // First sync: the new set gets the one surge pod, the old one gives up the one unavailable pod.
    const first = sim.plan();
    const newName = first.create?.metadata?.name as string;
    assert.notEqual(newName, oldName);
    assert.equal(first.create?.spec?.replicas, 1);
    assert.deepEqual(first.update.map((u) => [u.name, u.replicas]), [[oldName, 3]]);
    assert.equal(first.create?.metadata?.annotations?.[revisionAnnotation], '2');
    sim.apply(first);
    assert.equal(sim.cond('Progressing'), 'True/NewReplicaSetCreated');

    // While new pods are not available nothing more may be taken down.
    sim.settle(false);
    const stuck = sim.plan();
    assert.deepEqual(stuck.update.map((u) => [u.name, u.replicas]), [[newName, 2]], 'scaling up within the surge is allowed');
    sim.apply(stuck);
    sim.settle(false);
    assert.deepEqual(sim.plan().update, [], 'at max surge with nothing available: wait');

    const bounds = (): void => {
      const total = sim.rs.reduce((n, r) => n + (r.spec?.replicas ?? 0), 0);
      assert.ok(total <= 5, `surge bound broken: ${JSON.stringify(sim.sizes())}`);
    };
    sim.settle();
    sim.converge(bounds);
    assert.deepEqual(sim.sizes(), { [oldName as string]: 0, [newName]: 4 });
    assert.equal(sim.d.status?.updatedReplicas, 4);
    assert.equal(sim.cond('Progressing'), 'True/NewReplicaSetAvailable');
    assert.equal(sim.d.metadata?.annotations?.[revisionAnnotation], '2');
  });

  it('with maxSurge 0 scales the old set down before the new one up', () => {
    const sim = new Sim(testDeployment('web', { replicas: 2, strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } } }));
    sim.converge();
    const [oldName] = Object.keys(sim.sizes());
    sim.d = withImage(sim.d, 'v2', 2);
    const first = sim.plan();
    assert.equal(first.create?.spec?.replicas, 0);
    assert.deepEqual(first.update.map((u) => [u.name, u.replicas]), [[oldName, 1]]);
    sim.apply(first);
    sim.settle();
    sim.converge(() => {
      const available = sim.rs.reduce((n, r) => n + (r.status?.availableReplicas ?? 0), 0);
      assert.ok(available >= 1, 'never below replicas - maxUnavailable');
    });
    assert.equal(sim.sizes()[oldName as string], 0);
  });

  it('recreates: old pods gone before the new set is created', () => {
    const sim = new Sim(testDeployment('web', { replicas: 2, strategy: { type: 'Recreate' } }));
    sim.converge();
    const [oldName] = Object.keys(sim.sizes());
    const oldUid = sim.rs[0]?.metadata?.uid as string;
    sim.d = withImage(sim.d, 'v2', 2);
    const first = sim.plan();
    assert.equal(first.create, undefined);
    assert.deepEqual(first.update.map((u) => [u.name, u.replicas]), [[oldName, 0]]);
    sim.apply(first);
    sim.settle();
    // A terminating old pod still running holds the new set back.
    const lingering = testPod('old-1', { labels: { app: 'web' }, owner: { kind: 'ReplicaSet', name: oldName as string, uid: oldUid }, phase: 'Running', terminating: true });
    assert.equal(planDeployment(sim.d, { replicaSets: sim.rs, pods: [lingering], nowMs: sim.now }).create, undefined);
    const next = sim.plan();
    assert.equal(next.create?.spec?.replicas, 2);
    sim.converge();
    assert.equal(sim.d.status?.updatedReplicas, 2);
  });

  it('scales the only active ReplicaSet on a replicas change', () => {
    const sim = new Sim(testDeployment('web', { replicas: 3 }));
    sim.converge();
    const [name] = Object.keys(sim.sizes());
    sim.d.spec = { ...sim.d.spec, replicas: 5 } as V1Deployment['spec'];
    const plan = sim.plan();
    assert.deepEqual(plan.update.map((u) => [u.name, u.replicas, u.annotations['deployment.kubernetes.io/desired-replicas']]), [[name, 5, '5']]);
    sim.apply(plan);
    sim.settle();
    sim.converge();
    assert.equal(sim.d.status?.availableReplicas, 5);
    sim.d.spec = { ...sim.d.spec, replicas: 1 } as V1Deployment['spec'];
    sim.converge();
    assert.deepEqual(Object.values(sim.sizes()), [1]);
  });

  it('scales proportionally in the middle of a rollout', () => {
    const sim = new Sim(testDeployment('web', { replicas: 10 }));
    sim.converge();
    sim.d = withImage(sim.d, 'v2', 2);
    sim.apply(sim.plan());
    sim.settle(false);
    const before = sim.sizes();
    const total = Object.values(before).reduce((a, b) => a + b, 0);
    assert.equal(total, 11, "3 surge pods up, 2 unavailable pods down");
    sim.d.spec = { ...sim.d.spec, replicas: 20 } as V1Deployment['spec'];
    const plan = sim.plan();
    sim.apply(plan);
    const after = sim.sizes();
    assert.equal(Object.values(after).reduce((a, b) => a + b, 0), 25, 'new total is replicas + maxSurge');
    for (const name of Object.keys(before)) assert.ok((after[name] ?? 0) > (before[name] ?? 0), `${name} grew`);
  });

  it('keeps revisionHistoryLimit old ReplicaSets, deleting the oldest revisions', () => {
    const sim = new Sim(testDeployment('web', { replicas: 1, revisionHistoryLimit: 1 }));
    sim.converge();
    for (let v = 2; v <= 4; v++) {
      sim.d = withImage(sim.d, `v${v}`, v);
      sim.converge();
    }
    const revisions = sim.rs.map((r) => r.metadata?.annotations?.[revisionAnnotation]).sort();
    assert.deepEqual(revisions, ['3', '4']);
  });

  it('rolls back to an old template by reusing its ReplicaSet with a new revision', () => {
    const sim = new Sim(testDeployment('web', { replicas: 2 }));
    sim.converge();
    const first = sim.rs[0]?.metadata?.name;
    sim.d = withImage(sim.d, 'v2', 2);
    sim.converge();
    sim.d = withImage(sim.d, 'nodemesh/echo:v1', 3);
    const plan = sim.plan();
    assert.equal(plan.create, undefined);
    assert.equal(plan.update.find((u) => u.name === first)?.annotations[revisionAnnotation], '3');
    sim.apply(plan);
    sim.settle();
    sim.converge();
    assert.equal(sim.sizes()[first as string], 2);
    assert.equal(sim.rs.length, 2);
  });

  it('reports unavailability and a progress deadline', () => {
    const sim = new Sim(testDeployment('web', { replicas: 2 }));
    sim.apply(sim.plan());
    sim.settle(false);
    sim.apply(sim.plan());
    assert.equal(sim.cond('Available'), 'False/MinimumReplicasUnavailable');
    sim.now += 700_000;
    const plan = sim.plan();
    assert.equal(plan.status.conditions?.find((c) => c.type === 'Progressing')?.reason, 'ProgressDeadlineExceeded');
  });

  it('adopts a matching orphan ReplicaSet and leaves ReplicaSets of other owners alone', () => {
    const d = testDeployment('web', { replicas: 1 });
    const hash = computePodTemplateHash(d.spec?.template);
    const orphan: V1ReplicaSet = {
      metadata: { name: `web-${hash}`, namespace: 'default', uid: 'rs-orphan', labels: { app: 'web', 'pod-template-hash': hash }, annotations: { [revisionAnnotation]: '1' } },
      spec: { replicas: 1, selector: { matchLabels: { app: 'web', 'pod-template-hash': hash } }, template: { ...structuredClone(d.spec?.template ?? {}), metadata: { labels: { app: 'web', 'pod-template-hash': hash } } } },
    };
    const foreign: V1ReplicaSet = { ...structuredClone(orphan), metadata: { ...orphan.metadata, name: 'x', uid: 'rs-x', ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'other', uid: 'd-other', controller: true }] } };
    const plan = planDeployment(d, { replicaSets: [orphan, foreign], pods: [], nowMs: 0 });
    assert.deepEqual(plan.adopt.map((r) => r.metadata?.name), [`web-${hash}`]);
    assert.equal(plan.create, undefined);
  });
});
