/** The status a kubelet reports for a pod, computed from what its containers are doing (pure). */
import type { V1ContainerStatus, V1PodCondition, V1PodStatus } from '@kubernetes/client-node';

/** What the runtime knows about one container. */
export type ContainerRuntimeState = {
  name: string;
  image: string;
  state: 'waiting' | 'running' | 'terminated';
  reason?: string;
  message?: string;
  startedAt?: Date;
  finishedAt?: Date;
  exitCode?: number;
  restartCount: number;
  ready: boolean;
  /** True once it will not be started again (restartPolicy says so). */
  done: boolean;
  lastTerminated?: { exitCode: number; reason: string; startedAt?: Date; finishedAt: Date };
};

/** Inputs of a pod's status. */
export type PodStatusInput = {
  podIp?: string;
  hostIp: string;
  startTime: Date;
  containers: ContainerRuntimeState[];
  /** Conditions last reported, so a condition's lastTransitionTime only moves when its status does. */
  previous?: V1PodCondition[];
  now: Date;
  /** Set when setting the pod up failed (network, cgroup, bad spec): reported as a waiting reason. */
  setupError?: string;
};

/** Pending until every container has started once; Succeeded or Failed when all are done; else Running. */
export function computePhase(containers: ContainerRuntimeState[]): 'Pending' | 'Running' | 'Succeeded' | 'Failed' {
  if (containers.length === 0) return 'Pending';
  if (containers.every((c) => c.done)) return containers.every((c) => c.exitCode === 0) ? 'Succeeded' : 'Failed';
  if (containers.some((c) => c.state === 'running' || c.restartCount > 0 || c.state === 'terminated')) return 'Running';
  return 'Pending';
}

/** The pod status (without fields the kubelet does not own). */
export function computePodStatus(input: PodStatusInput): V1PodStatus {
  const phase = input.setupError ? 'Pending' : computePhase(input.containers);
  const allReady = input.containers.length > 0 && input.containers.every((c) => c.ready);
  const cond = (type: string, ok: boolean, reason?: string): V1PodCondition => {
    const status = ok ? 'True' : 'False';
    const prev = input.previous?.find((p) => p.type === type);
    const c: V1PodCondition = {
      type,
      status,
      lastTransitionTime: prev && prev.status === status && prev.lastTransitionTime ? prev.lastTransitionTime : input.now,
    };
    if (!ok && reason) c.reason = reason;
    return c;
  };
  const notReady = phase === 'Succeeded' || phase === 'Failed' ? 'PodCompleted' : 'ContainersNotReady';
  const status: V1PodStatus = {
    phase,
    hostIP: input.hostIp,
    hostIPs: [{ ip: input.hostIp }],
    startTime: input.startTime,
    conditions: [
      cond('PodReadyToStartContainers', input.podIp !== undefined),
      cond('Initialized', true),
      cond('Ready', allReady, notReady),
      cond('ContainersReady', allReady, notReady),
      cond('PodScheduled', true),
    ],
    containerStatuses: input.containers.map(toContainerStatus),
    qosClass: 'BestEffort',
  };
  if (input.podIp) {
    status.podIP = input.podIp;
    status.podIPs = [{ ip: input.podIp }];
  }
  if (input.setupError) {
    for (const cs of status.containerStatuses ?? []) cs.state = { waiting: { reason: 'CreateContainerError', message: input.setupError } };
  }
  return status;
}

function toContainerStatus(c: ContainerRuntimeState): V1ContainerStatus {
  const s: V1ContainerStatus = {
    name: c.name,
    image: c.image,
    imageID: `nodemesh-sandbox://${c.image}`,
    containerID: `nodemesh-sandbox://${c.name}-${c.restartCount}`,
    ready: c.ready,
    started: c.state === 'running',
    restartCount: c.restartCount,
    state:
      c.state === 'running'
        ? { running: { startedAt: c.startedAt } }
        : c.state === 'terminated'
          ? { terminated: { exitCode: c.exitCode ?? 0, reason: c.reason ?? (c.exitCode === 0 ? 'Completed' : 'Error'), startedAt: c.startedAt, finishedAt: c.finishedAt ?? new Date(0), message: c.message } }
          : { waiting: { reason: c.reason ?? 'ContainerCreating', message: c.message } },
  };
  if (c.lastTerminated) {
    s.lastState = { terminated: { exitCode: c.lastTerminated.exitCode, reason: c.lastTerminated.reason, startedAt: c.lastTerminated.startedAt, finishedAt: c.lastTerminated.finishedAt } };
  }
  return s;
}

/** Restart back-off of the sandbox kubelet: 1s doubling to 30s (shorter than Kubernetes' 10s..5m, so tests stay quick). */
export function computeRestartDelayMs(restartCount: number): number {
  return Math.min(1000 * 2 ** Math.max(0, restartCount), 30_000);
}

/** Whether a container that exited with this code starts again under the pod's restartPolicy. */
export function shouldRestart(policy: string | undefined, exitCode: number): boolean {
  if (policy === 'Never') return false;
  if (policy === 'OnFailure') return exitCode !== 0;
  return true;
}
