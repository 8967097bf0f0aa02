/** Object builders for this folder's tests: terse literals with the fields the controllers read. */
import type { V1Deployment, V1DeploymentStrategy, V1Node, V1Pod, V1ReplicaSet, V1Service, V1ServicePort } from '@kubernetes/client-node';

let uidCounter = 0;
/** A fresh uid for a test object. */
export function nextUid(prefix = 'uid'): string {
  uidCounter += 1;
  return `${prefix}-${uidCounter}`;
}

/** Options of testPod. */
export interface TestPodOptions {
  ns?: string;
  labels?: Record<string, string>;
  node?: string;
  ip?: string;
  ready?: boolean;
  readySinceMs?: number;
  phase?: string;
  terminating?: boolean;
  owner?: { kind: string; name: string; uid: string };
  createdMs?: number;
  restarts?: number;
  ports?: Array<{ name?: string; containerPort: number; protocol?: string }>;
}

/** A pod with the given state. */
export function testPod(name: string, o: TestPodOptions = {}): V1Pod {
  const pod: V1Pod = {
    metadata: {
      name,
      namespace: o.ns ?? 'default',
      uid: `pod-${name}`,
      labels: o.labels ?? {},
      resourceVersion: '1',
      creationTimestamp: new Date(o.createdMs ?? 1_000_000),
    },
    spec: { containers: [{ name: 'main', image: 'nodemesh/echo', ports: o.ports }] },
    status: { phase: o.phase ?? (o.ready ? 'Running' : 'Pending') },
  };
  if (o.node && pod.spec) pod.spec.nodeName = o.node;
  if (o.ip && pod.status) {
    pod.status.podIP = o.ip;
    pod.status.podIPs = [{ ip: o.ip }];
  }
  if (o.ready !== undefined && pod.status) {
    pod.status.conditions = [{ type: 'Ready', status: o.ready ? 'True' : 'False', lastTransitionTime: new Date(o.readySinceMs ?? 1_000_000) }];
  }
  if (o.restarts !== undefined && pod.status) pod.status.containerStatuses = [{ name: 'main', image: 'x', imageID: '', ready: o.ready ?? false, restartCount: o.restarts }];
  if (o.terminating && pod.metadata) pod.metadata.deletionTimestamp = new Date(2_000_000);
  if (o.owner && pod.metadata) pod.metadata.ownerReferences = [{ apiVersion: 'apps/v1', kind: o.owner.kind, name: o.owner.name, uid: o.owner.uid, controller: true }];
  return pod;
}

/** A Ready node with optional labels, taints and pod capacity. */
export function testNode(name: string, o: { ready?: boolean; labels?: Record<string, string>; taints?: Array<{ key: string; value?: string; effect: string }>; unschedulable?: boolean; maxPods?: number } = {}): V1Node {
  return {
    metadata: { name, uid: `node-${name}`, labels: { 'kubernetes.io/hostname': name, ...o.labels } },
    spec: { taints: o.taints, unschedulable: o.unschedulable },
    status: {
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
      allocatable: o.maxPods !== undefined ? { pods: String(o.maxPods) } : undefined,
    },
  };
}

/** A ReplicaSet selecting `labels`, with the given replicas and status. */
export function testReplicaSet(name: string, o: { ns?: string; replicas?: number; labels?: Record<string, string>; uid?: string; status?: V1ReplicaSet['status'] } = {}): V1ReplicaSet {
  const labels = o.labels ?? { app: 'web' };
  return {
    metadata: { name, namespace: o.ns ?? 'default', uid: o.uid ?? `rs-${name}`, generation: 1, resourceVersion: '1' },
    spec: { replicas: o.replicas ?? 1, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [{ name: 'main', image: 'nodemesh/echo' }] } } },
    status: o.status ?? { replicas: 0 },
  };
}

/** A Deployment of `image` with `replicas`, selecting app=<name>. */
export function testDeployment(name: string, o: { replicas?: number; image?: string; strategy?: V1DeploymentStrategy; generation?: number; revisionHistoryLimit?: number; status?: V1Deployment['status'] } = {}): V1Deployment {
  return {
    metadata: { name, namespace: 'default', uid: `deploy-${name}`, generation: o.generation ?? 1, resourceVersion: '1' },
    spec: {
      replicas: o.replicas ?? 3,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'main', image: o.image ?? 'nodemesh/echo:v1' }] } },
      strategy: o.strategy,
      revisionHistoryLimit: o.revisionHistoryLimit,
    },
    status: o.status ?? {},
  };
}

/** A Service selecting `selector` with the given ports. */
export function testService(name: string, o: { selector?: Record<string, string> | undefined; ports?: V1ServicePort[]; publishNotReady?: boolean; labels?: Record<string, string>; clusterIP?: string } = {}): V1Service {
  return {
    metadata: { name, namespace: 'default', uid: `svc-${name}`, labels: o.labels, resourceVersion: '1' },
    spec: {
      selector: 'selector' in o ? o.selector : { app: name },
      ports: o.ports ?? [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      publishNotReadyAddresses: o.publishNotReady,
      clusterIP: o.clusterIP,
    },
  };
}
