/**
 * The sandbox kubelet of one node: registers the Node (addresses, podCIDR, capacity, Ready), renews its Lease,
 * watches the Pods bound to it (fieldSelector spec.nodeName) and runs each through a PodWorker.
 * It runs in the supervisor process, in the machine's own namespace, and reaches pods with `ip netns exec`.
 */
import { CoordinationV1Api, CoreV1Api, type KubeConfig, type V1Lease, type V1Node, type V1Pod } from '@kubernetes/client-node';
import { cpus, totalmem, release, arch } from 'node:os';
import { join } from 'node:path';
import type { SandboxConfig } from '../config.ts';
import { createCgroup } from '../cgroup.ts';
import { describeError } from '../errors.ts';
import { httpStatusOf, MERGE_PATCH, startInformer, type ResilientInformer } from '../kube.ts';
import type { Logger } from '../logger.ts';
import type { StateStore } from '../state.ts';
import { PodIpAllocator } from '../net/ipam.ts';
import type { NodeNet } from '../net/topology.ts';
import type { HostsFiles } from './hosts.ts';
import { PodWorker } from './pod-worker.ts';

/** Version string the sandbox kubelet reports. */
export const KUBELET_VERSION = 'v1.32.0-nodemesh-sandbox';
/** Namespace of node heartbeats. */
export const NODE_LEASE_NAMESPACE = 'kube-node-lease';
/** Lease duration; renewed every quarter of it. */
const LEASE_SECONDS = 40;

/** Settings of one kubelet. */
export type KubeletOptions = {
  cfg: SandboxConfig;
  node: NodeNet;
  kc: KubeConfig;
  store: StateStore;
  /** The instance's cgroup root; the node's cgroup is <root>/<node>. */
  cgroupRoot: string;
  hosts: HostsFiles;
  log: Logger;
  podLogDir: string;
  /** Cap on pod grace periods (default 30 s). */
  maxGraceSeconds?: number;
};

/** The Node object a sandbox node registers (pure). */
export function computeNodeObject(cfg: SandboxConfig, node: NodeNet, now: Date, machine = { cpus: cpus().length, memoryBytes: totalmem(), kernel: release(), arch: arch() }): V1Node {
  const memKi = `${Math.floor(machine.memoryBytes / 1024)}Ki`;
  const resources = { cpu: String(machine.cpus), memory: memKi, pods: '110', 'ephemeral-storage': '10Gi' };
  const goArch = machine.arch === 'x64' ? 'amd64' : machine.arch;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: {
        'kubernetes.io/hostname': node.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': goArch,
        'nodemesh.io/sandbox': cfg.instance,
      },
      annotations: { 'nodemesh.io/netns': node.netns },
    },
    spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] },
    status: {
      addresses: [{ type: 'InternalIP', address: node.fabricAddr }, { type: 'Hostname', address: node.name }],
      capacity: resources,
      allocatable: resources,
      conditions: computeNodeConditions(now, now),
      nodeInfo: {
        kubeletVersion: KUBELET_VERSION,
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: goArch,
        kernelVersion: machine.kernel,
        osImage: 'nodemesh sandbox (network namespace)',
        containerRuntimeVersion: 'nodemesh-sandbox://0.1.0',
        machineID: node.name,
        systemUUID: node.name,
        bootID: `${cfg.instance}-${node.name}`,
      },
      daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    },
  };
}

/** A node's conditions: Ready, and no pressure. */
export function computeNodeConditions(heartbeat: Date, since: Date): NonNullable<NonNullable<V1Node['status']>['conditions']> {
  const c = (type: string, status: string, reason: string, message: string): { type: string; status: string; reason: string; message: string; lastHeartbeatTime: Date; lastTransitionTime: Date } =>
    ({ type, status, reason, message, lastHeartbeatTime: heartbeat, lastTransitionTime: since });
  return [
    c('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
    c('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
    c('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
    c('Ready', 'True', 'KubeletReady', 'sandbox kubelet is posting ready status'),
  ];
}

/** The kubelet of one sandbox node. */
export class Kubelet {
  private readonly o: KubeletOptions;
  private readonly core: CoreV1Api;
  private readonly coord: CoordinationV1Api;
  private readonly ipam: PodIpAllocator;
  private readonly workers = new Map<string, PodWorker>();
  private readonly log: Logger;
  private informer: ResilientInformer<V1Pod> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private readonly since = new Date();
  private nodeCgroup = '';

  constructor(o: KubeletOptions) {
    this.o = o;
    this.core = o.kc.makeApiClient(CoreV1Api);
    this.coord = o.kc.makeApiClient(CoordinationV1Api);
    this.ipam = new PodIpAllocator(o.node.podCidr);
    this.log = o.log.child(`kubelet/${o.node.name}`);
  }

  /** The node this kubelet runs. */
  get nodeName(): string {
    return this.o.node.name;
  }

  /** Registers the node, starts heartbeats and the pod watch. */
  async start(): Promise<void> {
    this.nodeCgroup = join(this.o.cgroupRoot, this.o.node.name);
    await createCgroup(this.o.store, this.nodeCgroup);
    await this.registerNode();
    await this.renewLease();
    this.every(LEASE_SECONDS * 250, () => this.renewLease());
    this.every(30_000, () => this.heartbeatStatus());
    const name = this.o.node.name;
    this.informer = startInformer<V1Pod>({
      kc: this.o.kc,
      path: '/api/v1/pods',
      list: () => this.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${name}` }),
      fieldSelector: `spec.nodeName=${name}`,
      onEvent: (type, pod) => this.onPod(type, pod),
      log: this.log,
    });
    this.every(10_000, async () => this.resync());
    this.log.info('kubelet started', { netns: this.o.node.netns, podCidr: this.o.node.podCidr });
  }

  /** What each pod worker runs (for status output). */
  describePods(): ReturnType<PodWorker['describe']>[] {
    return [...this.workers.values()].map((w) => w.describe());
  }

  /** Stops watching; with `killPods`, also stops every pod and removes its namespace and cgroup (no API writes). */
  async stop(opts: { killPods: boolean }): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.informer?.stop();
    if (opts.killPods) {
      const all = [...this.workers.values()];
      for (const w of all) w.terminate(0, false);
      await Promise.all(all.map((w) => w.done));
    }
  }

  private every(ms: number, fn: () => Promise<void>): void {
    this.timers.push(setInterval(() => {
      fn().catch((err: unknown) => this.log.warn('periodic task failed', { error: describeError(err) }));
    }, ms));
  }

  private onPod(type: 'add' | 'update' | 'delete', pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (!uid || pod.spec?.nodeName !== this.o.node.name) return;
    // A mirror pod is the API copy of something the node runs by other means (the supervisor's agents): not ours to run.
    if (pod.metadata?.annotations?.['kubernetes.io/config.mirror'] !== undefined) return;
    let w = this.workers.get(uid);
    if (type === 'delete') {
      w?.terminate(Math.min(pod.spec?.terminationGracePeriodSeconds ?? 30, this.o.maxGraceSeconds ?? 30), false);
      return;
    }
    if (!w) {
      w = new PodWorker(pod, {
        cfg: this.o.cfg, node: this.o.node, store: this.o.store, nodeCgroup: this.nodeCgroup, ipam: this.ipam,
        hosts: this.o.hosts, core: this.core, log: this.log, podLogDir: this.o.podLogDir, maxGraceSeconds: this.o.maxGraceSeconds ?? 30,
      });
      this.workers.set(uid, w);
      const created = w;
      void created.done.then(() => { if (this.workers.get(uid) === created) this.workers.delete(uid); });
    }
    w.update(pod);
  }

  /** Level-triggered safety net: pods without a worker get one, workers without a pod stop. */
  private async resync(): Promise<void> {
    const cached = this.informer?.list() ?? [];
    const uids = new Set(cached.map((p) => p.metadata?.uid));
    for (const p of cached) if (p.metadata?.uid && !this.workers.has(p.metadata.uid)) this.onPod('add', p);
    for (const [uid, w] of this.workers) if (!uids.has(uid)) w.terminate(0, false);
  }

  private async registerNode(): Promise<void> {
    const desired = computeNodeObject(this.o.cfg, this.o.node, new Date());
    try {
      await this.core.createNode({ body: desired });
    } catch (err) {
      if (httpStatusOf(err) !== 409) throw err;
      await this.core.patchNode({ name: this.o.node.name, body: { metadata: { labels: desired.metadata?.labels, annotations: desired.metadata?.annotations }, spec: desired.spec } }, MERGE_PATCH);
    }
    // The status subresource is where a kubelet's report belongs; create may have dropped it.
    await this.core.patchNodeStatus({ name: this.o.node.name, body: { status: desired.status } }, MERGE_PATCH);
    this.log.info('node registered', { address: this.o.node.fabricAddr });
  }

  private async heartbeatStatus(): Promise<void> {
    await this.core.patchNodeStatus({ name: this.o.node.name, body: { status: { conditions: computeNodeConditions(new Date(), this.since) } } }, MERGE_PATCH);
  }

  private async renewLease(): Promise<void> {
    const name = this.o.node.name;
    const now = new Date();
    const spec = { holderIdentity: name, leaseDurationSeconds: LEASE_SECONDS, renewTime: now };
    try {
      await this.coord.patchNamespacedLease({ name, namespace: NODE_LEASE_NAMESPACE, body: { spec } }, MERGE_PATCH);
      return;
    } catch (err) {
      if (httpStatusOf(err) !== 404) throw err;
    }
    try {
      await this.core.createNamespace({ body: { metadata: { name: NODE_LEASE_NAMESPACE } } });
    } catch (err) {
      if (httpStatusOf(err) !== 409) throw err;
    }
    const lease: V1Lease = {
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
      metadata: { name, namespace: NODE_LEASE_NAMESPACE, ownerReferences: [] },
      spec: { ...spec, acquireTime: now },
    };
    try {
      await this.coord.createNamespacedLease({ namespace: NODE_LEASE_NAMESPACE, body: lease });
    } catch (err) {
      if (httpStatusOf(err) !== 409) throw err;
    }
  }
}
