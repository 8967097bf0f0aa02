/**
 * A garbage collector for the objects these controllers own: ReplicaSets whose Deployment is gone and
 * Pods whose ReplicaSet is gone are deleted, as kube-controller-manager's garbage collector does with
 * background propagation. An owner missing from the cache is confirmed with a live read first, so a
 * cache that lags never costs a user their pods.
 */
import type { Reconciler } from './controller-runner.ts';
import { byOwner, type Informers } from './informers.ts';
import { isNotFound, type KubeClients } from './kube-api.ts';
import { controllerRefOf, keyOf, splitKey, type HasMeta } from './object-meta.ts';
import type { WorkQueue } from './work-queue.ts';

/** Dependent kinds and the owner kind that keeps them alive. */
const ownerKindOf = { ReplicaSet: 'Deployment', Pod: 'ReplicaSet' } as const;
type DependentKind = keyof typeof ownerKindOf;

/** Garbage collector over `Kind|ns/name` keys of dependents. */
export class GarbageCollector implements Reconciler {
  readonly name = 'garbage-collector';
  private readonly informers: Informers;
  private readonly clients: KubeClients;
  private readonly log: (line: string) => void;

  constructor(deps: { informers: Informers; clients: KubeClients; queue: WorkQueue; log: (line: string) => void }) {
    this.informers = deps.informers;
    this.clients = deps.clients;
    this.log = deps.log;
    const { informers, queue } = deps;
    const check = (kind: DependentKind, obj: HasMeta): void => {
      const ref = controllerRefOf(obj);
      if (ref?.kind !== ownerKindOf[kind]) return;
      if (this.ownerInCache(kind, obj.metadata?.namespace ?? '', ref.name, ref.uid)) return;
      queue.add(`${kind}|${keyOf(obj)}`);
    };
    const dependentsOf = (kind: DependentKind, owner: HasMeta): void => {
      const uid = owner.metadata?.uid ?? '';
      const list: readonly HasMeta[] = kind === 'ReplicaSet' ? informers.replicaSets.byIndex(byOwner, uid) : informers.pods.byIndex(byOwner, uid);
      for (const obj of list) queue.add(`${kind}|${keyOf(obj)}`);
    };
    informers.replicaSets.on((event, rs) => (event === 'delete' ? dependentsOf('Pod', rs) : check('ReplicaSet', rs)));
    informers.deployments.on((event, d) => {
      if (event === 'delete') dependentsOf('ReplicaSet', d);
    });
    informers.pods.on((event, pod) => {
      if (event !== 'delete') check('Pod', pod);
    });
  }

  private ownerInCache(kind: DependentKind, namespace: string, name: string, uid: string): boolean {
    const owner = kind === 'ReplicaSet' ? this.informers.deployments.get(name, namespace) : this.informers.replicaSets.get(name, namespace);
    return owner?.metadata?.uid === uid;
  }

  async sync(key: string): Promise<void> {
    const bar = key.indexOf('|');
    const kind = key.slice(0, bar) as DependentKind;
    const { namespace, name } = splitKey(key.slice(bar + 1));
    const obj: HasMeta | undefined = kind === 'ReplicaSet' ? this.informers.replicaSets.get(name, namespace) : this.informers.pods.get(name, namespace);
    const ref = obj && controllerRefOf(obj);
    if (!obj || !ref || ref.kind !== ownerKindOf[kind] || obj.metadata?.deletionTimestamp) return;
    if (this.ownerInCache(kind, namespace, ref.name, ref.uid)) return;
    try {
      const owner = kind === 'ReplicaSet' ? await this.clients.apps.readNamespacedDeployment({ name: ref.name, namespace }) : await this.clients.apps.readNamespacedReplicaSet({ name: ref.name, namespace });
      if (owner.metadata?.uid === ref.uid) return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const body = { preconditions: { uid: obj.metadata?.uid }, propagationPolicy: 'Background' };
    try {
      if (kind === 'ReplicaSet') await this.clients.apps.deleteNamespacedReplicaSet({ name, namespace, body });
      else await this.clients.core.deleteNamespacedPod({ name, namespace, body });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.log(`garbage-collector: deleted ${kind} ${namespace}/${name}: its ${ref.kind} ${ref.name} is gone`);
  }
}
