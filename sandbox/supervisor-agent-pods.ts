/**
 * The sandbox's agents as a real cluster shows them: one Pod per node in nodemesh-system, shaped like the agent
 * DaemonSet's pods (deploy/agent/daemonset.yaml: labels, service account, container and its `health` and `metrics`
 * ports, the Prometheus scrape annotations, hostNetwork), bound to its node, status Running with the node's address as pod IP, Ready while the agent's
 * /readyz answers 200. The supervisor runs the agents itself (planAgentDaemons), so these are mirror pods, as a
 * kubelet publishes for static pods: annotated `kubernetes.io/config.mirror`, which the sandbox kubelet leaves
 * alone; owned by nothing; deleted when the supervisor stops.
 *
 * The API server reaches them through the pods proxy with the dialer here: a hostNetwork pod's port is its node's,
 * and the one node port the supervisor can reach from the machine's namespace is the agent's status endpoint, on
 * the unix socket the agent also serves in the state directory (mesh-wiring.ts). Anything else is refused: the API
 * server never routes into the sandbox's networks.
 */
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { CoreV1Api, type KubeConfig, type V1Pod, type V1PodCondition, type V1PodStatus } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_HEALTH_PORT, DEFAULT_METRICS_PORT } from '../agent/config.ts';
import type { PodProxyDialer, PodProxyTarget } from './apiserver/pod-proxy.ts';
import { REPO_ROOT, type SandboxConfig } from './config.ts';
import { describeError } from './errors.ts';
import { httpStatusOf, MERGE_PATCH } from './kube.ts';
import type { Logger } from './logger.ts';
import { MESH_NAMESPACE, meshPaths } from './mesh-wiring.ts';
import type { Topology } from './net/topology.ts';
import type { DaemonStatus } from './supervisor.ts';

/** The annotation a kubelet puts on the API copy of a pod it runs itself (a static pod's mirror); the sandbox kubelet skips such pods. */
export const MIRROR_POD_ANNOTATION = 'kubernetes.io/config.mirror';
/** The readinessProbe period the pods declare (the DaemonSet's). */
const PROBE_PERIOD_SECONDS = 5;
/**
 * How often the supervisor asks /readyz and rewrites a changed status: more often than the declared probe period,
 * so `kubectl mesh status` right after `sandbox up` does not wait for it.
 */
const SYNC_PERIOD_MS = 1000;

/**
 * What the agent pods copy from the DaemonSet's pod template: labels, service account, container, the names of its
 * status (`health`) and metrics-only (`metrics`) ports, and its `prometheus.io/*` annotations (the port one is set
 * to the port the sandbox's agent really serves metrics on).
 */
export type AgentPodTemplate = {
  labels: Record<string, string>; serviceAccountName: string; container: string; image: string; portName: string;
  metricsPortName: string | undefined; prometheusAnnotations: Record<string, string>;
};

/** Reads the pod template of deploy/agent/daemonset.yaml (the sandbox's pods stay in step with the manifest). */
export function loadAgentPodTemplate(file = join(REPO_ROOT, 'deploy/agent/daemonset.yaml')): AgentPodTemplate {
  const ds = parseYaml(readFileSync(file, 'utf8')) as { spec?: { template?: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: { serviceAccountName?: string; containers?: { name: string; image?: string; ports?: { name?: string }[] }[] } } } };
  const t = ds.spec?.template;
  const c = t?.spec?.containers?.[0];
  if (!t?.metadata?.labels || !c) throw new Error(`${file}: no pod template labels or container (spec.template.metadata.labels, spec.template.spec.containers[0])`);
  // The status port (kubectl mesh's): named `health`; the metrics-only port beside it (Prometheus's): `metrics`.
  const portName = c.ports?.find((p) => p.name === 'health')?.name ?? c.ports?.[0]?.name ?? 'health';
  const metricsPortName = c.ports?.find((p) => p.name === 'metrics')?.name;
  const prometheusAnnotations = Object.fromEntries(Object.entries(t.metadata.annotations ?? {}).filter(([k]) => k.startsWith('prometheus.io/')));
  return { labels: t.metadata.labels, serviceAccountName: t.spec?.serviceAccountName ?? 'default', container: c.name, image: c.image ?? 'nodemesh', portName, metricsPortName, prometheusAnnotations };
}

/** The name of a node's agent pod. */
export function agentPodName(node: string): string {
  return `nodemesh-agent-${node}`;
}

/**
 * A node's agent pod as created (pure): spec and metadata; the status comes from computeAgentPodStatus. The ports are
 * the ones the sandbox's agents serve on (their defaults: the DaemonSet moves both with environment variables), and
 * the Prometheus annotations name the metrics port the pod really has.
 */
export function computeAgentPod(t: AgentPodTemplate, node: string, healthPort = DEFAULT_HEALTH_PORT, metricsPort = DEFAULT_METRICS_PORT): V1Pod {
  const metrics = t.metricsPortName !== undefined;
  const prometheus = metrics && Object.keys(t.prometheusAnnotations).length > 0
    ? { ...t.prometheusAnnotations, ...('prometheus.io/port' in t.prometheusAnnotations ? { 'prometheus.io/port': String(metricsPort) } : {}) }
    : {};
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      name: agentPodName(node), namespace: MESH_NAMESPACE, labels: { ...t.labels },
      annotations: { ...prometheus, [MIRROR_POD_ANNOTATION]: 'nodemesh-sandbox-supervisor', 'kubernetes.io/config.source': 'nodemesh-sandbox-supervisor' },
    },
    spec: {
      nodeName: node, hostNetwork: true, serviceAccountName: t.serviceAccountName, restartPolicy: 'Always', tolerations: [{ operator: 'Exists' }],
      containers: [{
        name: t.container, image: t.image,
        // The sandbox's agents keep their default ports (the DaemonSet moves them to 9880/9881 with NODEMESH_HEALTH_PORT
        // and NODEMESH_METRICS_PORT).
        ports: [
          { name: t.portName, containerPort: healthPort, hostPort: healthPort, protocol: 'TCP' },
          ...(metrics ? [{ name: t.metricsPortName, containerPort: metricsPort, hostPort: metricsPort, protocol: 'TCP' }] : []),
        ],
        readinessProbe: { httpGet: { path: '/readyz', port: t.portName, host: '127.0.0.1' }, periodSeconds: PROBE_PERIOD_SECONDS },
      }],
    },
  };
}

/** What the supervisor knows of one agent: its daemon and the last /readyz answer. */
export type AgentObservation = { address: string; daemon: DaemonStatus | undefined; readyz: { ok: boolean; message: string } | undefined };

/** The pod status of a node's agent (pure): Running while its daemon runs, Ready while /readyz answers 200. */
export function computeAgentPodStatus(t: AgentPodTemplate, o: AgentObservation, startTime: string): V1PodStatus {
  const running = o.daemon?.state === 'running';
  const ready = running && o.readyz?.ok === true;
  const since = o.daemon?.since ?? startTime;
  const cond = (type: string, ok: boolean, reason?: string, message?: string): V1PodCondition =>
    ({ type, status: ok ? 'True' : 'False', lastTransitionTime: new Date(since), ...(ok || reason === undefined ? {} : { reason, message }) });
  const waitingReason = o.daemon?.state === 'backoff' ? 'CrashLoopBackOff' : 'ContainerCreating';
  const notReadyMessage = !running ? `agent ${waitingReason === 'CrashLoopBackOff' ? `exited (${o.daemon?.lastExit ?? 'unknown'}), restarting` : 'not started yet'}` : `readiness: ${o.readyz?.message ?? 'not probed yet'}`;
  return {
    phase: 'Running', hostIP: o.address, hostIPs: [{ ip: o.address }], podIP: o.address, podIPs: [{ ip: o.address }], startTime: new Date(startTime),
    conditions: [
      cond('PodScheduled', true), cond('Initialized', true),
      cond('ContainersReady', ready, 'ContainersNotReady', `containers with unready status: [${t.container}]`),
      cond('Ready', ready, 'ContainersNotReady', notReadyMessage),
    ],
    containerStatuses: [{
      name: t.container, image: t.image, imageID: '', ready, started: running, restartCount: o.daemon?.restarts ?? 0,
      state: running ? { running: { startedAt: new Date(since) } } : { waiting: { reason: waitingReason, ...(o.daemon?.lastExit ? { message: `last exit: ${o.daemon.lastExit}` } : {}) } },
      ...(o.daemon?.lastExit ? { lastState: { terminated: { exitCode: Number(/exit (\d+)/.exec(o.daemon.lastExit)?.[1] ?? 1), reason: o.daemon.lastExit.startsWith('signal') ? 'Signaled' : 'Error', message: o.daemon.lastExit } } } : {}),
    }],
  };
}

/**
 * Where the API server's pods proxy may connect for `target` (pure): a node's agent status port, through the agent's
 * unix socket in the state directory. Every other target is refused, with why.
 */
export function planSandboxPodDial(target: Pick<PodProxyTarget, 'namespace' | 'name' | 'nodeName' | 'hostNetwork' | 'port'>, cfg: SandboxConfig, topo: Topology, healthPort = DEFAULT_HEALTH_PORT): { socketPath: string } | { refused: string } {
  const pod = `${target.namespace}/${target.name}`;
  if (!target.hostNetwork) return { refused: `pod ${pod} is on a pod network, which the sandbox API server has no route into (by design: it runs in the machine's namespace)` };
  const node = topo.nodes.find((n) => n.name === target.nodeName);
  if (!node) return { refused: `pod ${pod} is on node ${target.nodeName ?? '(none)'}, which is not a node of this sandbox` };
  if (target.port !== healthPort) return { refused: `only the agent status port ${healthPort} of ${node.name} is reachable from the sandbox API server, not port ${target.port}` };
  return { socketPath: meshPaths(cfg).statusSocket(node.name) };
}

/** The pods proxy dialer of the sandbox API server. */
export function createSandboxPodDialer(cfg: SandboxConfig, topo: Topology): PodProxyDialer {
  return (target) => {
    const plan = planSandboxPodDial(target, cfg, topo);
    if ('refused' in plan) throw new Error(plan.refused);
    return connect(plan.socketPath);
  };
}

/** Asks one agent's /readyz over its unix socket. */
function probeReadyz(socketPath: string): Promise<{ ok: boolean; message: string }> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/readyz', timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { if (body.length < 500) body += c; });
      res.on('end', () => resolve({ ok: res.statusCode === 200, message: `${res.statusCode ?? 0} ${body.trim().slice(0, 200)}` }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 2 s')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, message: `${socketPath}: ${err.code ?? err.message}` }));
    req.end();
  });
}

/** Publishes the agent pods and keeps their status; `stop` deletes them. */
export async function startAgentPods(o: { kc: KubeConfig; cfg: SandboxConfig; topo: Topology; daemons: () => DaemonStatus[]; log: Logger; template?: AgentPodTemplate }): Promise<{ stop(): Promise<void> }> {
  const core = o.kc.makeApiClient(CoreV1Api);
  const t = o.template ?? loadAgentPodTemplate();
  const startTime = new Date().toISOString();
  const written = new Map<string, string>();
  for (const n of o.topo.nodes) {
    const body = computeAgentPod(t, n.name);
    try {
      await core.createNamespacedPod({ namespace: MESH_NAMESPACE, body });
    } catch (err) {
      if (httpStatusOf(err) !== 409) throw err;
      // Left by an earlier supervisor of a persisted API server: replace it (mirror pods go at once).
      await core.deleteNamespacedPod({ namespace: MESH_NAMESPACE, name: agentPodName(n.name), gracePeriodSeconds: 0 });
      await core.createNamespacedPod({ namespace: MESH_NAMESPACE, body });
    }
  }
  const sync = async (): Promise<void> => {
    const daemons = o.daemons();
    await Promise.all(o.topo.nodes.map(async (n) => {
      const daemon = daemons.find((d) => d.name === `agent/${n.name}`);
      const readyz = daemon?.state === 'running' ? await probeReadyz(meshPaths(o.cfg).statusSocket(n.name)) : undefined;
      const status = computeAgentPodStatus(t, { address: n.fabricAddr, daemon, readyz }, startTime);
      const text = JSON.stringify(status);
      if (written.get(n.name) === text) return;
      await core.patchNamespacedPodStatus({ namespace: MESH_NAMESPACE, name: agentPodName(n.name), body: { status } }, MERGE_PATCH);
      written.set(n.name, text);
    }));
  };
  let busy = false;
  const tick = (): void => {
    if (busy) return;
    busy = true;
    sync().catch((err: unknown) => o.log.warn('agent pod status not written', { error: describeError(err) })).finally(() => { busy = false; });
  };
  await sync().catch((err: unknown) => o.log.warn('agent pod status not written', { error: describeError(err) }));
  const timer = setInterval(tick, SYNC_PERIOD_MS);
  o.log.info('agent pods published', { namespace: MESH_NAMESPACE, pods: o.topo.nodes.map((n) => agentPodName(n.name)) });
  return {
    stop: async () => {
      clearInterval(timer);
      for (const n of o.topo.nodes) {
        await core.deleteNamespacedPod({ namespace: MESH_NAMESPACE, name: agentPodName(n.name), gracePeriodSeconds: 0 }).catch((err: unknown) => {
          if (httpStatusOf(err) !== 404) o.log.warn('agent pod not deleted', { pod: agentPodName(n.name), error: describeError(err) });
        });
      }
    },
  };
}
