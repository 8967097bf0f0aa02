/**
 * The scheduler: binds each pending pod to the node chooseNode picks, through the pods/binding
 * subresource when the API server has it (as kube-scheduler does), else by setting spec.nodeName.
 * Pods it binds are "assumed" on their node until the cache shows the binding, so a burst of pods
 * spreads instead of piling onto the node that looked emptiest a moment ago.
 */
import type { V1Pod, V1PodCondition } from '@kubernetes/client-node';
import { chooseNode } from './choose-node.ts';
import type { Reconciler, SyncResult } from './controller-runner.ts';
import type { Informers } from './informers.ts';
import { isConflict, isNotFound, mergePatchOptions, patchBody, retryOnConflict, type KubeClients } from './kube-api.ts';
import { formatApiTime, isTerminating, keyOf, splitKey } from './object-meta.ts';
import type { WorkQueue } from './work-queue.ts';

/** Pods naming another scheduler are not ours (spec.schedulerName). */
const schedulerName = 'default-scheduler';
/** How long an unschedulable pod waits before another try without any event (ms). */
const unschedulableRetryMs = 15_000;
/** How long a binding may stay invisible in the cache before the assumption is dropped (ms). */
const assumeTtlMs = 30_000;

/** True when this scheduler should place `pod`. */
export function needsScheduling(pod: V1Pod): boolean {
  return !pod.spec?.nodeName && !isTerminating(pod) && (pod.spec?.schedulerName ?? schedulerName) === schedulerName && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

/** Scheduler reconciler over pod keys. */
export class SchedulerController implements Reconciler {
  readonly name = 'scheduler';
  private readonly assumed = new Map<string, { node: string; atMs: number }>();
  private readonly unschedulable = new Set<string>();
  private readonly informers: Informers;
  private readonly clients: KubeClients;
  private readonly queue: WorkQueue;
  private readonly log: (line: string) => void;
  /** Whether the API server serves pods/binding; decided once at start. */
  useBinding = true;

  constructor(deps: { informers: Informers; clients: KubeClients; queue: WorkQueue; log: (line: string) => void }) {
    this.informers = deps.informers;
    this.clients = deps.clients;
    this.queue = deps.queue;
    this.log = deps.log;
    deps.informers.pods.on((event, pod) => {
      const key = keyOf(pod);
      if (event === 'delete' || pod.spec?.nodeName) this.assumed.delete(key);
      if (event === 'delete') {
        this.unschedulable.delete(key);
        // A pod gone may free the room another one was waiting for.
        if (pod.spec?.nodeName) this.retryUnschedulable();
        return;
      }
      if (needsScheduling(pod)) this.queue.add(key);
    });
    deps.informers.nodes.on(() => this.retryUnschedulable());
  }

  private retryUnschedulable(): void {
    for (const key of this.unschedulable) this.queue.add(key);
  }

  /** Pods as the scheduler sees them: the cache plus the bindings it made that the cache lacks. */
  private boundPods(now: number): V1Pod[] {
    const pods = [...this.informers.pods.list()];
    if (this.assumed.size === 0) return pods;
    return pods.map((pod) => {
      const key = keyOf(pod);
      const a = this.assumed.get(key);
      if (!a || pod.spec?.nodeName) return pod;
      if (now - a.atMs > assumeTtlMs) {
        this.assumed.delete(key);
        return pod;
      }
      return { ...pod, spec: { ...pod.spec, containers: pod.spec?.containers ?? [], nodeName: a.node } };
    });
  }

  async sync(key: string): Promise<SyncResult | void> {
    const { namespace, name } = splitKey(key);
    const pod = this.informers.pods.get(name, namespace);
    if (!pod || !needsScheduling(pod)) {
      this.unschedulable.delete(key);
      return;
    }
    if (this.assumed.has(key)) return;
    const now = Date.now();
    const choice = chooseNode(pod, this.informers.nodes.list(), this.boundPods(now));
    if ('unschedulable' in choice) {
      this.unschedulable.add(key);
      await this.markUnschedulable(pod, choice.unschedulable);
      return { requeueAfterMs: unschedulableRetryMs };
    }
    this.unschedulable.delete(key);
    try {
      await this.bind(pod, choice.nodeName);
    } catch (err) {
      // Gone, or bound by someone else meanwhile: either way nothing is left to do for this pod.
      if (isNotFound(err) || isConflict(err)) return;
      throw err;
    }
    this.assumed.set(key, { node: choice.nodeName, atMs: now });
    this.log(`scheduler ${key}: bound to node ${choice.nodeName}`);
  }

  private async bind(pod: V1Pod, node: string): Promise<void> {
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.metadata?.name ?? '';
    if (this.useBinding) {
      await this.clients.core.createNamespacedPodBinding({
        name,
        namespace,
        body: { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace, uid: pod.metadata?.uid }, target: { apiVersion: 'v1', kind: 'Node', name: node } },
      });
      return;
    }
    // Without pods/binding: set spec.nodeName guarded by the resourceVersion, then report PodScheduled
    // as the binding subresource would have.
    await this.clients.core.patchNamespacedPod({ name, namespace, body: patchBody({ spec: { nodeName: node } }, pod.metadata?.resourceVersion) }, mergePatchOptions);
    await this.setScheduledCondition(pod, { type: 'PodScheduled', status: 'True' });
  }

  private async markUnschedulable(pod: V1Pod, message: string): Promise<void> {
    const current = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
    if (current?.status === 'False' && current.reason === 'Unschedulable' && current.message === message) return;
    this.log(`scheduler ${keyOf(pod)}: unschedulable: ${message}`);
    await this.setScheduledCondition(pod, { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message });
  }

  private async setScheduledCondition(cached: V1Pod, cond: V1PodCondition): Promise<void> {
    const namespace = cached.metadata?.namespace ?? 'default';
    const name = cached.metadata?.name ?? '';
    await retryOnConflict(`pod ${namespace}/${name} status`, async (fresh) => {
      const pod = fresh ? await this.clients.core.readNamespacedPodStatus({ name, namespace }) : cached;
      const others = (pod.status?.conditions ?? []).filter((c) => c.type !== cond.type);
      const previous = pod.status?.conditions?.find((c) => c.type === cond.type);
      const lastTransitionTime = previous?.status === cond.status && previous.lastTransitionTime ? previous.lastTransitionTime : formatApiTime(Date.now());
      const body = patchBody({ status: { conditions: [...others, { ...cond, lastTransitionTime, lastProbeTime: null }] } }, pod.metadata?.resourceVersion);
      await this.clients.core.patchNamespacedPodStatus({ name, namespace, body }, mergePatchOptions);
    });
  }
}
