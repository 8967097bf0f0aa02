/**
 * The sandbox supervisor: a detached process (own process group, output in the state directory) that hosts
 * the API server, the controllers, one kubelet per node and the per-node daemons, and reports what runs in
 * supervisor-status.json. `nodemesh sandbox up` starts it; `down` stops it by PID.
 *
 * Started in order, stopped in reverse:
 *   1. clean pods a previous supervisor left (their namespaces, cgroups, hosts files)
 *   2. API server on 127.0.0.1:<port> and on the unix socket; both kubeconfigs
 *   3. controllers (scheduler, deployments, replicasets, endpointslices)
 *   4. cluster DNS hosts files, one kubelet per node
 *   5. mesh wiring (mesh-wiring.ts): agent CA tokens, the mesh ConfigMap (tracing to the OTLP receiver), the
 *      agents' status on 127.0.0.1:<api port + 1> (for the supervisor's own readiness waits and tests)
 *   6. per-node daemons (planNodeDaemons: forwarders; planOperatorDaemon: the nodemesh operator;
 *      planOtlpReceiverDaemon: a trace receiver per node; planAgentDaemons: the nodemesh agents), then the agents'
 *      pods in nodemesh-system as the DaemonSet would show them (supervisor-agent-pods.ts: `kubectl mesh` reaches
 *      the agents through the API server's pods proxy, whose dialer uses the agents' unix sockets), then the
 *      kube-dns objects
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { moveToCgroup, killCgroup, locateCgroupRoot, removeCgroupTree } from './cgroup.ts';
import { startApiServerComponent, startControllersComponent, type ApiServerHandle, type ControllersHandle } from './components.ts';
import { NODE_APISERVER_PORT, REPO_ROOT, SERVICE_PREFIX, resolveSandboxConfig, sandboxPaths, type SandboxConfig } from './config.ts';
import { describeError } from './errors.ts';
import { loadKubeConfig } from './kube.ts';
import { startClusterDns } from './kubelet/cluster-dns.ts';
import { HostsFiles } from './kubelet/hosts.ts';
import { Kubelet } from './kubelet/kubelet.ts';
import { computePodLogDir } from './kubelet/pod-worker.ts';
import { createStreamLogger, type Logger } from './logger.ts';
import { computeTopology, deleteNetns, etcNetnsDir, type Topology } from './net/topology.ts';
import { readState, StateStore, writeFileAtomic } from './state.ts';
import { DaemonSupervisor, type DaemonSpec, type DaemonStatus } from './supervisor.ts';
import { createSandboxPodDialer, startAgentPods } from './supervisor-agent-pods.ts';
import { computeAgentWiring, computeCaUrl, computeOtlpEndpoint, ensureMeshConfig, meshPaths, planOtlpReceiverDaemon, startAgentStatusProxy, startAgentTokens, type AgentStatusProxy } from './mesh-wiring.ts';
import { ensureClusterDns } from './workloads/dns.ts'; // nodemesh agent (issue 3): kube-dns Service + Deployment
import { OPERATOR_CA_PORT, OPERATOR_STATUS_SOCKET } from '../operator/status-client.ts'; // nodemesh operator (issue 4)

/** What the supervisor reports in supervisor-status.json. */
export type SupervisorReport = {
  pid: number;
  startedAt: string;
  updatedAt: string;
  ready: boolean;
  error?: string;
  apiserver?: { url: string; socket: string };
  /** The mesh as the sandbox wires it: CA, traces, the agents' status on loopback. */
  mesh?: { caUrl?: string; otlpEndpoint?: string; spansFile: string; agentStatusUrl?: string };
  nodes: { name: string; netns: string; address: string; podCidr: string; pods: { key: string; ip?: string; netns: string; phase: string; containers: { name: string; pid?: number; restarts: number }[] }[] }[];
  daemons: DaemonStatus[];
};

/**
 * The per-node daemons the supervisor keeps running. The API server forwarder lets in-node components use
 * https://127.0.0.1:6443; the agent and the L7 proxy of each node are added here by the datapath issues.
 */
export function planNodeDaemons(cfg: SandboxConfig, topo: Topology): DaemonSpec[] {
  const paths = sandboxPaths(cfg);
  return topo.nodes.map((n) => ({
    name: `forwarder/${n.name}`,
    node: n.name,
    netns: n.netns,
    argv: [process.execPath, join(REPO_ROOT, 'sandbox/net/forwarder-main.ts'), '--listen', `127.0.0.1:${NODE_APISERVER_PORT}`, '--unix', paths.apiSocket],
    logFile: join(cfg.stateDir, `forwarder-${n.name}.log`),
  }));
}

// --- nodemesh agent (issue 3; owner: agent/) -------------------------------------------------
/**
 * One nodemesh agent per node, the way a DaemonSet runs it: inside the node's network namespace (by
 * `nsenter --net`, not `ip netns exec`, which remounts /sys and would hide bpffs and the cgroup2
 * mount), attached to the node's cgroup subtree only, pinning under the instance's bpffs directory.
 * Empty without a cgroup2 hierarchy: the socket programs need one.
 */
export function planAgentDaemons(cfg: SandboxConfig, topo: Topology, cgroupRoot: string | undefined): DaemonSpec[] {
  if (!cgroupRoot) return [];
  const paths = sandboxPaths(cfg);
  return topo.nodes.map((n) => {
    // CA URL and node-bound token file (env), status socket the supervisor proxies (flag): mesh-wiring.ts.
    const wiring = computeAgentWiring(cfg, topo, n.name);
    return {
      name: `agent/${n.name}`,
      node: n.name,
      argv: ['nsenter', `--net=/run/netns/${n.netns}`, '--', process.execPath, join(REPO_ROOT, 'agent/main.ts'),
        '--node', n.name, '--cgroup', join(cgroupRoot, n.name), '--bpffs-dir', join(cfg.bpfDir, n.name), '--kubeconfig', paths.nodeKubeconfig, ...wiring.args],
      env: wiring.env,
      logFile: join(cfg.stateDir, `agent-${n.name}.log`),
    };
  });
}
// --- end nodemesh agent ---------------------------------------------------------------------

// --- nodemesh operator (issue 4; owner: operator/) ----------------------------------------------
/**
 * The operator, once for the cluster, as its Deployment runs it: one replica in the first node's network
 * namespace (a host-network pod there), reaching the API server through that node's forwarder. Agents reach
 * its CA at https://<first node's address>:15012; `sandbox status` reads its /status on a unix socket in the
 * state directory. The identity is stable, so a restarted process takes its Lease back at once (as a
 * restarted container of the same pod does).
 */
export function planOperatorDaemon(cfg: SandboxConfig, topo: Topology): DaemonSpec[] {
  const first = topo.nodes[0];
  if (!first) return [];
  const paths = sandboxPaths(cfg);
  return [{
    name: 'operator',
    node: first.name,
    netns: first.netns,
    argv: [process.execPath, join(REPO_ROOT, 'operator/main.ts'), '--kubeconfig', paths.nodeKubeconfig, '--identity', `nodemesh-operator-${first.name}`,
      '--health-addr', '127.0.0.1:8081', '--status-socket', join(cfg.stateDir, OPERATOR_STATUS_SOCKET), '--ca-addr', `0.0.0.0:${OPERATOR_CA_PORT}`,
      // NODEMESH_SANDBOX_LEAF_TTL (e.g. 1m) shortens SVID lifetimes for rotation tests; the operator's 24h otherwise.
      ...(process.env.NODEMESH_SANDBOX_LEAF_TTL?.trim() ? ['--leaf-ttl', process.env.NODEMESH_SANDBOX_LEAF_TTL.trim()] : [])],
    logFile: join(cfg.stateDir, 'operator.log'),
  }];
}
// --- end nodemesh operator ------------------------------------------------------------------------

/** The in-node kubeconfig: the host's, with the server moved to the node-local forwarder. */
export function computeNodeKubeconfig(hostKubeconfig: string): string {
  const doc = parseYaml(hostKubeconfig) as { clusters?: { cluster?: { server?: string } }[] };
  for (const c of doc.clusters ?? []) if (c.cluster) c.cluster.server = `https://127.0.0.1:${NODE_APISERVER_PORT}`;
  return stringifyYaml(doc);
}

async function cleanLeftoverPods(store: StateStore, cgroupRoot: string | undefined, topo: Topology, log: Logger): Promise<void> {
  const podNetns = store.current.entries.filter((e) => e.kind === 'netns' && e.name.includes('pod-')).map((e) => (e as { name: string }).name);
  if (cgroupRoot) {
    for (const n of topo.nodes) {
      const nodeCg = join(cgroupRoot, n.name);
      await killCgroup(nodeCg).catch(() => {});
      await removeCgroupTree(nodeCg).catch(() => {});
    }
  }
  for (const ns of podNetns) {
    await deleteNetns(ns);
    await rm(etcNetnsDir(ns), { recursive: true, force: true });
  }
  if (podNetns.length) log.info('removed pods left by a previous supervisor', { count: podNetns.length });
  await store.forget((e) => (e.kind === 'netns' && podNetns.includes(e.name)) || (e.kind === 'veth' && e.name.startsWith('nmp')) ||
    (e.kind === 'dir' && podNetns.some((n) => e.path === etcNetnsDir(n))) || (e.kind === 'cgroup' && /\/node-\d+\/pod-/.test(e.path)) ||
    (e.kind === 'process' && (e.role.startsWith('pod:') || e.role.startsWith('daemon:'))));
}

async function main(): Promise<void> {
  const cfg = resolveSandboxConfig();
  const paths = sandboxPaths(cfg);
  const log = createStreamLogger(process.stderr, 'supervisor', { debug: process.env.NODEMESH_DEBUG === '1' });
  const state = await readState(paths.state);
  if (!state) throw new Error(`${paths.state} does not exist; the supervisor is started by \`nodemesh sandbox up\``);
  const store = new StateStore(paths.state, state);
  const topo = computeTopology(cfg, state.nodes);
  const cgroupRoot = await locateCgroupRoot(cfg);
  if (cgroupRoot) await moveToCgroup(join(cgroupRoot, 'supervisor'), process.pid);

  const report: SupervisorReport = { pid: process.pid, startedAt: new Date().toISOString(), updatedAt: '', ready: false, nodes: [], daemons: [] };
  const daemons = new DaemonSupervisor(store, log);
  const kubelets: Kubelet[] = [];
  let api: ApiServerHandle | undefined;
  let controllers: ControllersHandle | undefined;
  let dns: { stop(): Promise<void> } | undefined;
  let stopTokens: (() => void) | undefined;
  let statusProxy: AgentStatusProxy | undefined;
  let agentPods: { stop(): Promise<void> } | undefined;
  const writeReport = async (): Promise<void> => {
    report.updatedAt = new Date().toISOString();
    report.daemons = daemons.status();
    report.nodes = topo.nodes.map((n) => ({
      name: n.name, netns: n.netns, address: n.fabricAddr, podCidr: n.podCidr,
      pods: kubelets.find((k) => k.nodeName === n.name)?.describePods() ?? [],
    }));
    await writeFileAtomic(paths.supervisorStatus, JSON.stringify(report, null, 2) + '\n', 0o644);
  };
  let stopping = false;
  const shutdown = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { why });
    clearInterval(reportTimer);
    await agentPods?.stop().catch((e: unknown) => log.warn('deleting agent pods', { error: describeError(e) }));
    await daemons.stopAll().catch((e: unknown) => log.warn('stopping daemons', { error: describeError(e) }));
    stopTokens?.();
    await statusProxy?.close().catch(() => {});
    for (const k of kubelets.reverse()) await k.stop({ killPods: true }).catch((e: unknown) => log.warn('stopping kubelet', { error: describeError(e) }));
    await dns?.stop().catch(() => {});
    await controllers?.stop().catch((e: unknown) => log.warn('stopping controllers', { error: describeError(e) }));
    await api?.close().catch((e: unknown) => log.warn('stopping API server', { error: describeError(e) }));
    log.info('stopped');
  };
  const reportTimer = setInterval(() => { writeReport().catch(() => {}); }, 2000);
  process.once('SIGTERM', () => { void shutdown('SIGTERM').finally(() => exitNow(0)); });
  process.once('SIGINT', () => { void shutdown('SIGINT').finally(() => exitNow(0)); });

  try {
    await cleanLeftoverPods(store, cgroupRoot, topo, log);
    await rm(paths.apiSocket, { force: true });
    await store.record({ kind: 'file', path: paths.apiSocket }, { kind: 'file', path: paths.hostKubeconfig }, { kind: 'file', path: paths.nodeKubeconfig });
    api = await startApiServerComponent({
      host: '127.0.0.1', port: cfg.apiPort, unixSocketPath: paths.apiSocket, stateDir: paths.apiData,
      crdDirs: [join(REPO_ROOT, 'crds')], serviceCIDR: SERVICE_PREFIX,
      // pods/log reads the files the kubelets below write (same process, same directory).
      podLogDirectory: (namespace, name, uid) => computePodLogDir(paths.podLogs, cfg, namespace, name, uid),
      // pods/proxy reaches the agents' status sockets in the state directory, nothing else (supervisor-agent-pods.ts).
      podProxyDialer: createSandboxPodDialer(cfg, topo),
    }, log.child('apiserver'));
    await api.writeKubeconfig(paths.hostKubeconfig);
    await writeFileAtomic(paths.nodeKubeconfig, computeNodeKubeconfig(api.kubeconfig()), 0o600);
    report.apiserver = { url: api.url, socket: paths.apiSocket };
    log.info('API server up', { url: api.url });
    controllers = await startControllersComponent(paths.hostKubeconfig, log.child('controllers'));
    const kc = loadKubeConfig(paths.hostKubeconfig);
    const hosts = new HostsFiles(log.child('hosts'));
    dns = startClusterDns(kc, hosts, log.child('dns'));
    for (const node of topo.nodes) {
      const k = new Kubelet({ cfg, node, kc, store, cgroupRoot: cgroupRoot ?? '', hosts, log, podLogDir: paths.podLogs });
      await k.start();
      kubelets.push(k);
    }
    for (const spec of planNodeDaemons(cfg, topo)) daemons.add(spec);
    for (const spec of planOperatorDaemon(cfg, topo)) daemons.add(spec); // nodemesh operator (issue 4)
    // Mesh wiring (issues 5, 6): CA tokens before the agents start, the mesh ConfigMap, traces, agent status.
    stopTokens = await startAgentTokens(kc, cfg, topo, store, log.child('mesh'));
    await ensureMeshConfig(kc, topo);
    for (const spec of planOtlpReceiverDaemon(cfg, topo)) daemons.add(spec);
    // No Node annotation any more: `kubectl mesh` finds the agents' pods and asks them through the API server.
    statusProxy = await startAgentStatusProxy(cfg, topo, cfg.apiPort + 1, log.child('mesh'));
    report.mesh = { caUrl: computeCaUrl(topo), otlpEndpoint: computeOtlpEndpoint(topo), spansFile: meshPaths(cfg).spansFile, agentStatusUrl: statusProxy.url };
    // nodemesh agent (issue 3): one per node, then the cluster DNS it serves at 10.96.0.10.
    for (const spec of planAgentDaemons(cfg, topo, cgroupRoot)) daemons.add(spec);
    if (cgroupRoot) agentPods = await startAgentPods({ kc, cfg, topo, daemons: () => daemons.status(), log: log.child('agent-pods') });
    await ensureClusterDns(kc, cfg).catch((e: unknown) => log.warn('cluster DNS objects not created', { error: describeError(e) }));
    report.ready = true;
    await writeReport();
    log.info('sandbox ready', { nodes: topo.nodes.length });
  } catch (err) {
    report.error = describeError(err);
    log.error('start failed', { error: report.error });
    await writeReport().catch(() => {});
    await shutdown('start failed');
    exitNow(1);
  }
}

/** Ends the supervisor: watches and keep-alive sockets of client libraries would otherwise hold the loop open. */
function exitNow(code: number): void {
  // This is the supervisor's main module, which owns its process lifetime.
  // eslint-disable-next-line no-restricted-properties
  process.exit(code);
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`supervisor: ${describeError(err)}\n`);
    exitNow(1);
  });
}
