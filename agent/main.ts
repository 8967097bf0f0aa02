/**
 * nodemesh agent, one per node. Modules, started in this order and stopped in reverse:
 *   1. config       flags and environment (config.ts)
 *   2. datapath     load, or adopt what an earlier agent pinned; attach to the node's cgroup only (node-datapath.ts)
 *   3. sync loop    planner + reconciler over the pinned maps; ids taken from them (sync-loop.ts)
 *   4. watches      Services, EndpointSlices, Nodes, this node's Pods; the loop writes nothing before all listed once (informers.ts)
 *   4b. mesh        NodeState → node proxy, mesh flows, STRICT pod guards, certificates (proxy/mesh-node.ts; issue 5)
 *   4c. telemetry   /metrics registry fed by the proxy's records, BPF counters, map fill, applies, certificates;
 *                   the access log of opted-in namespaces (telemetry.ts)
 *   5. health       /healthz, /readyz, /statusz, /metrics, /explain in the node's network namespace, and on --status-socket (health.ts);
 *                   closed to pods (admin-guard.ts). 5b. metrics: GET /metrics alone on --metrics-port, open to pods (Prometheus)
 *   6. resync       full re-plan and map re-read every --resync-seconds
 * Stopping never detaches or unpins anything: the datapath keeps serving while no agent runs.
 */
import { createWriteStream } from 'node:fs';
import { release } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { readAdminGuardRejected } from './admin-guard.ts';
import { parseAgentConfig } from './config.ts';
import { describeError } from './errors.ts';
import { computeExplanation, parseExplainQuery } from './explain.ts';
import { startHealthServer } from './health.ts';
import { startMetricsServer } from './metrics/handler.ts';
import { setProxyProcessMetrics } from './metrics/mesh-metrics.ts';
import { ClusterWatch } from './informers.ts';
import { createLogger } from './logger.ts';
import { openNodeDatapath } from './node-datapath.ts';
import { MeshNode } from './proxy/mesh-node.ts'; // issue 5 (owner: agent/proxy/)
import { SyncLoop } from './sync-loop.ts';
import { AgentTelemetry } from './telemetry.ts';

/** The agent's version (what `kubectl mesh status` shows). */
export const AGENT_VERSION = '0.1.0';

async function main(): Promise<void> {
  // 1. config
  const cfg = parseAgentConfig(process.argv.slice(2), process.env);
  const log = createLogger(process.stderr, `agent/${cfg.nodeName}`, { debug: cfg.debug });
  log.info('starting', { pid: process.pid, cgroup: cfg.cgroupPath, bpffsDir: cfg.bpffsDir, sockmap: cfg.sockmap });
  const stops: Array<[string, () => Promise<void> | void]> = [];
  let stopping = false;
  const stop = async (why: string, code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      log.info('stopping', { why });
      for (const [name, fn] of stops.reverse()) {
        try {
          await fn();
        } catch (err) {
          log.warn('stop failed', { module: name, error: describeError(err) });
        }
      }
      log.info('stopped');
    }
    process.exit(code);
  };
  process.once('SIGTERM', () => void stop('SIGTERM', 0));
  process.once('SIGINT', () => void stop('SIGINT', 0));
  // A bug that escapes every handler must not leave a half-working agent: die, and let the
  // supervisor (or the DaemonSet) restart us; the pinned datapath keeps serving meanwhile.
  process.on('unhandledRejection', (err) => {
    log.error('unhandled rejection', { error: describeError(err) });
    void stop('unhandled rejection', 1);
  });

  // 2. datapath
  const { datapath, report } = openNodeDatapath(cfg, log.child('datapath'));
  stops.push(['datapath', () => datapath.close()]);
  log.info('datapath open', {
    pinDir: report.pinDir,
    cgroup: report.cgroupPath,
    sockmap: report.sockmap,
    attachments: report.attachments.map((a) => `${a.program}:${a.action}`).join(' '),
    attachedOnce: report.attachedOnce,
  });

  // 3. sync loop
  const loop = new SyncLoop({ maps: datapath, nodeName: cfg.nodeName, log: log.child('sync') });
  stops.push(['sync loop', () => loop.stop()]);

  // 4. watches
  const kc = new KubeConfig();
  if (cfg.kubeconfig) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromDefault();
  const watch = new ClusterWatch(
    kc,
    cfg.nodeName,
    {
      service: (t, o) => loop.onService(t, o),
      endpointSlice: (t, o) => loop.onEndpointSlice(t, o),
      node: (t, o) => loop.onNode(t, o),
      pod: (t, o) => loop.onPod(t, o),
      synced: () => {
        log.info('every watch has listed once; reconciling');
        loop.markSynced();
      },
    },
    log.child('watch'),
  );
  watch.start();
  stops.push(['watches', () => watch.stop()]);

  // 4c. telemetry (made before the mesh: the proxy's first records must have somewhere to go)
  const telemetry = new AgentTelemetry({
    nodeName: cfg.nodeName, maps: datapath, serviceNames: () => loop.serviceNames(), log: log.child('telemetry'),
    adminGuardRejected: readAdminGuardRejected,
    ...(cfg.accessLogFile ? { accessLogStream: createWriteStream(cfg.accessLogFile, { flags: 'a' }) } : {}),
  });
  telemetry.start();
  stops.push(['telemetry', () => telemetry.stop()]);
  stops.push(['namespaces', telemetry.watchNamespaces(kc)]);

  // 4b. mesh (issue 5; owner: agent/proxy/): the node proxy and everything the NodeState asks of this node
  // The configured port is known now; an ephemeral one (0, tests) once the health server has bound it.
  let healthPort = cfg.healthPort;
  const mesh = new MeshNode({
    kc, nodeName: cfg.nodeName, maps: datapath, pinDir: cfg.bpffsDir, sockmap: cfg.sockmap, runDir: cfg.runDir, hostNetwork: cfg.hostNetwork,
    ...(cfg.proxyMemoryMaxBytes !== undefined ? { proxyMemoryMaxBytes: cfg.proxyMemoryMaxBytes } : {}), nodeCgroup: cfg.cgroupPath,
    cluster: () => loop.snapshot(), clusterVersion: () => loop.status().passes + loop.podEvents(), clusterSynced: () => loop.status().synced, setMeshPorts: (ports) => loop.setMeshPorts(ports), log: log.child('mesh'),
    onTelemetry: (b) => telemetry.onBatch(b), onApplied: (a) => telemetry.recordApply(a),
    // The health/status/metrics/explain port is the node's, not the pods' (agent/admin-guard.ts).
    adminPorts: () => (healthPort ? [healthPort] : []),
  });
  const heldCertificates = (): { identity: string; notAfter: Date }[] => {
    const c = mesh.status().certificates;
    return c === 'no CA configured' ? [] : c.flatMap((x) => (x.notAfter && x.state === 'valid' ? [{ identity: x.spiffeId, notAfter: x.notAfter }] : []));
  };
  telemetry.registry.addCollector(() => telemetry.setCertificates(heldCertificates()));
  telemetry.registry.addCollector(() => setProxyProcessMetrics(telemetry.metrics, mesh.status().proxy));
  mesh.start();
  stops.push(['mesh', () => mesh.stop()]);

  // 5. health
  const readiness = (): string | undefined => {
    const unsynced = watch.unsynced();
    if (unsynced.length) return `waiting for the first list of ${unsynced.join(', ')}`;
    const st = loop.status();
    return st.ready ? undefined : `first reconcile not done${st.lastError ? ` (last error: ${st.lastError})` : ''}`;
  };
  const health = await startHealthServer(cfg.healthHost, cfg.healthPort, {
    liveness: () => undefined,
    readiness,
    // The shape `kubectl mesh status` reads (cli/mesh/agent-status.ts), then the details by module.
    status: () => {
      const m = mesh.status();
      const why = readiness();
      return {
        node: cfg.nodeName, version: AGENT_VERSION, ready: why === undefined, ...(why ? { reason: why } : {}),
        sync: loop.status(),
        ...(m.applied ? { nodeState: m.applied } : {}),
        datapath: {
          ...report,
          programs: report.attachments.map((a) => ({ name: a.program, attached: true })),
          maps: telemetry.mapFill().map((f) => ({ name: f.map, entries: f.entries, capacity: f.capacity })),
        },
        ...(m.proxy ? { proxy: { listening: m.proxy.state === 'serving', listeners: m.proxy.listeners ?? [], workers: m.proxy.workers ?? 0, configVersion: m.proxy.applied, state: m.proxy.state, pid: m.proxy.pid, restarts: m.proxy.restarts } } : {}),
        certificates: heldCertificates().map((c) => ({ identity: c.identity, notAfter: c.notAfter.toISOString() })),
        kernel: { release: release(), bpf: true, cgroup2: true, bpffs: true },
        telemetry: { ...telemetry.counts, tracing: m.tracing },
        watches: watch.kinds.map((k) => ({ kind: k.name, synced: k.synced, restarts: k.restarts, objects: k.list().length })),
        mesh: m,
      };
    },
  }, {
    ...(cfg.statusSocket ? { socketPath: cfg.statusSocket } : {}), extra: telemetry.handler(),
    explain: (query) => {
      const q = parseExplainQuery(query);
      if ('error' in q) return { code: 400, body: { error: q.error } };
      const plan = mesh.plan();
      if (!plan) return { code: 503, body: { error: 'no proxy plan yet (no NodeState, or no InternalIP for this node)' } };
      return { code: 200, body: computeExplanation(cfg.nodeName, plan, q) };
    },
  });
  healthPort = health.port;
  stops.push(['health', () => health.close()]);
  log.info('health endpoint listening', { addr: `${cfg.healthHost}:${health.port}`, ...(cfg.statusSocket ? { socket: cfg.statusSocket } : {}) });

  // 5b. metrics: the status port is closed to pods, and Prometheus usually is one; this listener serves /metrics
  // alone (read-only, no status or explain) and is deliberately left out of the admin guard's ports.
  if (cfg.metricsPort !== undefined) {
    const metrics = await startMetricsServer({ registry: telemetry.registry, host: cfg.healthHost, port: cfg.metricsPort, onCollectorError: (e) => log.debug('metrics collector failed', { error: describeError(e) }) });
    stops.push(['metrics', () => metrics.close()]);
    log.info('metrics endpoint listening (open to pods)', { addr: `${cfg.healthHost}:${metrics.port}` });
  }

  // 6. resync
  if (cfg.resyncSeconds > 0) {
    const timer = setInterval(() => loop.resync(), cfg.resyncSeconds * 1000);
    stops.push(['resync', () => clearInterval(timer)]);
  }
  await loop.whenReady();
  log.info('ready', { services: loop.status().services });
}

main().catch((err: unknown) => {
  process.stderr.write(`${new Date().toISOString()} ERROR agent start failed: ${describeError(err)}\n`);
  process.exit(1);
});
