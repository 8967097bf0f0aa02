/**
 * The mesh side of the agent (issue 5), as one module main.ts starts and stops:
 *   NodeStateWatch (this node's shards) + the L4 watches' cache (Services, EndpointSlices, Nodes)
 *     → planProxy (pure) → ProxySupervisor.apply (outbound + inbound config, endpoint transports, certificates)
 *                        → SyncLoop.setMeshPorts (connect4 sends those service ports and their pods to the proxy)
 *                        → PodIngressGuard (STRICT pod ports: only the node proxy may connect, in the kernel)
 *                        → PlaintextSteering (plaintext to STRICT / policed PERMISSIVE pod ports → the proxy, nftables)
 *                        → CertManager.setIdentities (one SVID per service account of this node's pods)
 * The datapath is told where the proxy listens with the fail-closed check on: until a proxy registers its
 * listener, mesh flows are refused; L4 flows never notice.
 */
import { readFileSync } from 'node:fs';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { getNetnsCookie, writeDatapathConfig, type MapSet } from '../../bpf/index.ts';
import { DEFAULT_MESH_NAMESPACE } from '../../crds/index.ts';
import { PLAINTEXT_INBOUND_PORT } from '../../l7proxy/inbound-plaintext.ts';
import { computeTracingSettings, type TracingSettings } from '../../l7proxy/telemetry/config.ts';
import { createBundleReporter, createCaClient, pemFingerprints } from '../ca-client.ts';
import { CertManager } from '../certs/cert-manager.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { NodeStateWatch } from '../nodestate-watch.ts';
import type { ClusterState } from '../plan-datapath.ts';
import { computeNodeIps, planProxy, type MergedNodeState, type ProxyPlan } from './plan-proxy.ts';
import { computePlaintextTable } from './plan-plaintext.ts';
import { AdminGuard, planAdminGuard } from '../admin-guard.ts';
import { PodEgressGuard, planPodSources } from './pod-egress.ts';
import { PlaintextSteering, PodIngressGuard, inInitialNetns } from './pod-ingress.ts';
import { ProxySupervisor, type ProxyStatus } from './proxy-supervisor.ts';
import type { TelemetryBatch } from './telemetry-relay.ts';
import type { MeshPluginData, PemIdentity } from './worker-plugin.ts';

/** Ports of the node proxy (Istio's conventions). */
export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15008;
/** SO_MARK of the proxy's own connects ('NM'): connect4 never sends a socket carrying it back to the proxy. */
export const PROXY_MARK = 0x4e4d;
/** ConfigMap the operator publishes the trust bundle in (key ca.crt). */
export const TRUST_BUNDLE_CONFIGMAP = 'nodemesh-trust-bundle';
/** ConfigMap of mesh-wide settings (`tracing.*` keys: l7proxy/telemetry/config.ts). */
export const MESH_CONFIGMAP = 'nodemesh-config';

/** What the mesh side needs from the agent. */
export interface MeshNodeOptions {
  kc: KubeConfig;
  nodeName: string;
  /** The node's datapath maps (nm_dp_cfg is written here) and its pin directory. */
  maps: MapSet;
  pinDir: string;
  /** Same-node socket redirection setting, kept when nm_dp_cfg is rewritten. */
  sockmap: boolean;
  /** The L4 watches' cache (the SyncLoop's snapshot). */
  cluster: () => ClusterState;
  /** Changes whenever the cache may have (the SyncLoop's pass count plus its Pod events): the cache is only fingerprinted then. */
  clusterVersion?: () => number;
  /**
   * Every L4 watch (this node's Pods included) has listed once. No pass before: a Pod cache still empty would
   * withhold every source identity (source-identity.ts) and cut the running proxy's mesh calls after an agent
   * restart. Absent = always (tests).
   */
  clusterSynced?: () => boolean;
  /** Hands mesh service ports to the datapath planner (SyncLoop.setMeshPorts). */
  setMeshPorts: (ports: ReadonlySet<string>) => void;
  log: Logger;
  /** Proxy worker processes; default 2. */
  workers?: number;
  /**
   * The CA: signing service URL and the file holding this node's agent token (re-read per request: bound tokens
   * expire). Default from NODEMESH_CA_URL / NODEMESH_CA_TOKEN_FILE (`{node}` is replaced by the node name); without
   * them, no certificates: only same-node mesh flows work (cross-node ones are refused, never sent in plaintext).
   */
  ca?: { url: string; tokenFile: string };
  /** Where the proxy's pid file lives; default /run/nodemesh. */
  runDir?: string;
  /** The proxy's memory limit in bytes (its own cgroup; proxy-supervisor.ts) and the node cgroup it goes under; absent = none. */
  proxyMemoryMaxBytes?: number;
  nodeCgroup?: string;
  /** The agent runs in the machine's own network namespace (a real node's hostNetwork): steering may be written there. */
  hostNetwork?: boolean;
  meshNamespace?: string;
  /**
   * TCP ports of the node's control endpoints that pods must not reach (the agent's health/status/metrics port);
   * the CA's port is added when the CA listens on this node's address (agent/admin-guard.ts). Absent = none.
   */
  adminPorts?: () => number[];
  /** The proxy workers' telemetry batches (agent/telemetry.ts). */
  onTelemetry?: (batch: TelemetryBatch) => void;
  /** A NodeState set reached the proxy (or failed to): version, shards, seconds from its arrival. */
  onApplied?: (a: { version: number; shards: number; seconds: number; ok: boolean }) => void;
}

/** The mesh side's health, for /statusz. */
export interface MeshNodeStatus {
  host: string | undefined;
  nodeState: ReturnType<NodeStateWatch['status']>;
  planned: string | undefined;
  problems: string[];
  proxy: ProxyStatus | undefined;
  podIngress: { ports: number; problems: string[] };
  /** Pod ports whose plaintext is steered through the proxy (nft table nodemesh_plaintext). */
  plaintextSteering: { ports: number; problems: string[] };
  /** Pods whose veth only lets their own source address out (pod-egress.ts). */
  podEgress: { pods: number; problems: string[] };
  /** Node control ports closed to pods (nft table nodemesh_admin). */
  adminGuard: { ports: number[]; problems: string[] };
  certificates: ReturnType<CertManager['status']> | 'no CA configured';
  trustBundle: 'none' | 'loaded';
  /** The bundle the proxy serves, as last reported to the operator's CA (its rotation waits for it). */
  trustBundleReport?: { fingerprints: string[]; reportedAt?: string; error?: string };
  /** The NodeState set the proxy serves: spec.version (highest of the shards), content hashes, when and how fast. */
  applied: { version: number | undefined; contentHash: string; shards: number; appliedAt: string; applySeconds: number } | undefined;
  tracing: { enabled: boolean; endpoint?: string; samplingRatio?: number; issues?: string[] };
}

/** The agent's mesh side for one node. */
export class MeshNode {
  readonly #o: MeshNodeOptions;
  readonly #log: Logger;
  readonly #watch: NodeStateWatch;
  #certs: CertManager | undefined;
  #proxy: ProxySupervisor | undefined;
  #guard: PodIngressGuard | undefined;
  #steering: PlaintextSteering | undefined;
  #plaintextSteering = { ports: 0, problems: [] as string[] };
  #host: string | undefined;
  #state: MergedNodeState | undefined;
  #bundlePem: string | undefined;
  #plan: ProxyPlan | undefined;
  #lastPushed = '';
  #clusterPrint = '';
  #clusterVersion: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #scheduled = false;
  /** A pass was skipped because the watches had not all listed yet: the timer schedules one once they have. */
  #waitingForSync = false;
  #running: Promise<void> = Promise.resolve();
  #stopped = false;
  #podIngress = { ports: 0, problems: [] as string[] };
  #egress: PodEgressGuard | undefined;
  #podEgress = { pods: 0, problems: [] as string[] };
  #adminGuard: AdminGuard | undefined;
  #adminGuardStatus = { ports: [] as number[], problems: [] as string[] };
  #stateAt = 0;
  #applied: MeshNodeStatus['applied'];
  #tracing: TracingSettings | undefined;
  #tracingKey = '';
  #tracingIssues: string[] = [];
  /** The bundle PEM the proxy workers accepted last, and what was reported of it. */
  #appliedBundlePem: string | undefined;
  #bundleReport: { key: string; at: number; error?: string } | undefined;
  #reportBundle: ((fingerprints: readonly string[]) => Promise<void>) | undefined;

  constructor(o: MeshNodeOptions) {
    this.#o = o;
    this.#log = o.log;
    this.#watch = new NodeStateWatch({ kc: o.kc, nodeName: o.nodeName, log: o.log.child('nodestate'), onState: (s) => { this.#state = s; this.#stateAt = Date.now(); this.#schedule(); } });
    const url = o.ca?.url ?? process.env.NODEMESH_CA_URL;
    // `{node}` in the token file name: one environment for every node's agent (the sandbox supervisor's).
    const tokenFile = (o.ca?.tokenFile ?? process.env.NODEMESH_CA_TOKEN_FILE)?.replaceAll('{node}', o.nodeName);
    this.#ca = url && tokenFile ? { url, tokenFile } : undefined;
    if (!this.#ca) this.#log.warn('no CA configured (NODEMESH_CA_URL, NODEMESH_CA_TOKEN_FILE): no workload certificates, so mesh flows between nodes are refused (never sent in plaintext)');
  }

  readonly #ca: { url: string; tokenFile: string } | undefined;

  /** The certificate manager, made once the trust domain is known (from the NodeState). */
  #certManager(trustDomain: string): CertManager | undefined {
    if (this.#certs || !this.#ca) return this.#certs;
    const { url, tokenFile } = this.#ca;
    const requestCertificate = createCaClient({
      url,
      nodeName: this.#o.nodeName,
      token: () => readFileSync(tokenFile, 'utf8').trim(),
      caPem: () => this.#bundlePem ?? '',
    });
    this.#certs = new CertManager({ trustDomain, requestCertificate, logger: this.#log.child('certs') });
    this.#certs.onRotate(() => this.#schedule());
    this.#certs.onExpire(() => this.#schedule());
    return this.#certs;
  }

  /** Starts watching; the proxy starts once this node's address is known (from its Node object). */
  start(): void {
    this.#watch.start();
    // The L4 cache has no change hook for us: a cheap fingerprint, checked often, re-plans on endpoint changes.
    this.#timer = setInterval(() => {
      if (this.#waitingForSync && this.#o.clusterSynced?.() !== false) { this.#waitingForSync = false; this.#schedule(); }
      const v = this.#o.clusterVersion?.();
      if (v !== undefined && v === this.#clusterVersion) return;
      this.#clusterVersion = v;
      const print = this.#fingerprint();
      if (print !== this.#clusterPrint) { this.#clusterPrint = print; this.#schedule(); }
    }, 250);
    this.#timer.unref();
    this.#pollBundle();
  }

  /** The proxy plan last computed (what `/explain` evaluates), if any. */
  plan(): ProxyPlan | undefined {
    return this.#plan;
  }

  /** The mesh side's state. */
  status(): MeshNodeStatus {
    return {
      host: this.#host,
      nodeState: this.#watch.status(),
      planned: this.#plan?.version,
      problems: this.#plan?.problems.slice(0, 20) ?? [],
      proxy: this.#proxy?.status(),
      podIngress: this.#podIngress,
      plaintextSteering: this.#plaintextSteering,
      podEgress: this.#podEgress,
      adminGuard: this.#adminGuardStatus,
      certificates: this.#certs?.status() ?? 'no CA configured',
      trustBundle: this.#bundlePem ? 'loaded' : 'none',
      ...(this.#appliedBundlePem ? { trustBundleReport: { fingerprints: pemFingerprints(this.#appliedBundlePem), ...(this.#bundleReport && !this.#bundleReport.error ? { reportedAt: new Date(this.#bundleReport.at).toISOString() } : {}), ...(this.#bundleReport?.error ? { error: this.#bundleReport.error } : {}) } } : {}),
      applied: this.#applied,
      tracing: this.#tracing?.enabled
        ? { enabled: true, endpoint: this.#tracing.endpoint, samplingRatio: this.#tracing.samplingRatio, ...(this.#tracingIssues.length ? { issues: this.#tracingIssues } : {}) }
        : { enabled: false, ...(this.#tracingIssues.length ? { issues: this.#tracingIssues } : {}) },
    };
  }

  /** Stops watching and the proxy (the datapath keeps refusing mesh flows: fail closed). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#watch.stop();
    await this.#running;
    await this.#proxy?.stop();
    await this.#certs?.stop();
    this.#guard?.close();
    this.#egress?.close();
  }

  #fingerprint(): string {
    const c = this.#o.cluster();
    const rv = (xs: readonly { metadata?: { resourceVersion?: string; name?: string } }[]): string => xs.map((x) => `${x.metadata?.name}@${x.metadata?.resourceVersion ?? ''}`).join(',');
    // Pods too: a pod's delete (or a new pod reporting a reused address) changes the source identities.
    const pods = c.localPods.map((p) => `${p.metadata?.uid}@${p.metadata?.resourceVersion ?? ''}`).join(',');
    return `${rv(c.services)}|${rv(c.endpointSlices)}|${rv(c.nodes)}|${pods}`;
  }

  #schedule(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    // A burst (shards, endpoint slices, rotations) makes one pass.
    setTimeout(() => {
      this.#scheduled = false;
      this.#running = this.#running.then(() => this.#pass()).catch((err: unknown) => this.#log.error('mesh pass failed', { error: describeError(err) }));
    }, 50);
  }

  async #pass(): Promise<void> {
    if (this.#stopped) return;
    if (this.#o.clusterSynced && !this.#o.clusterSynced()) {
      if (!this.#waitingForSync) this.#log.info('waiting for the first list of every watch (Pods included) before planning the proxy');
      this.#waitingForSync = true;
      return;
    }
    const cluster = this.#o.cluster();
    const host = computeNodeIps(cluster.nodes).get(this.#o.nodeName);
    // Node-level guards need no NodeState: every pod's source address, and the control ports.
    await this.#guardNode(cluster, host);
    if (!this.#state) return;
    if (!host) { this.#log.info('waiting for this node\'s InternalIP before starting the proxy'); return; }
    if (!this.#proxy) await this.#startProxy(host);
    const plan = planProxy({ nodeName: this.#o.nodeName, state: this.#state, services: cluster.services, endpointSlices: cluster.endpointSlices, nodes: cluster.nodes, localPods: cluster.localPods });
    this.#plan = plan;
    // The trust domain is a launch setting of the proxy: a change takes a graceful restart (not awaited: the old
    // proxy drains meanwhile, and this pass goes on).
    this.#proxy!.reconfigure({ trustDomain: plan.trustDomain }).catch((err: unknown) => this.#log.error('proxy restart for a new trust domain failed', { error: describeError(err) }));
    this.#o.setMeshPorts(new Set(plan.meshPorts));
    this.#certManager(plan.trustDomain)?.setIdentities(plan.workloadIdentities);
    try {
      const r = await this.#guard!.reconcile(plan.podIngress);
      this.#podIngress = { ports: plan.podIngress.length, problems: r.problems };
    } catch (err) {
      this.#podIngress = { ports: plan.podIngress.length, problems: [describeError(err)] };
      this.#log.error('STRICT pod ports not guarded', { error: describeError(err) });
    }
    try {
      const r = await this.#steering!.reconcile(plan.plaintextInbound ?? []);
      this.#plaintextSteering = { ports: r.ports, problems: r.problems };
    } catch (err) {
      // STRICT ports stay guarded by tc (dropped rather than refused); policed PERMISSIVE ports are not steered.
      this.#plaintextSteering = { ports: 0, problems: [describeError(err)] };
      this.#log.error('plaintext to pod ports not steered through the proxy', { error: describeError(err) });
    }
    const pluginData = this.#pluginData(plan);
    const key = JSON.stringify([plan.outbound, plan.identities, pluginData]);
    if (key === this.#lastPushed) return;
    const state = this.#state;
    try {
      await this.#proxy!.apply({ version: plan.version, config: plan.outbound, identities: plan.identities, pluginData });
      this.#lastPushed = key;
      if (pluginData.certs.bundlePem && pluginData.certs.bundlePem !== this.#appliedBundlePem) {
        this.#appliedBundlePem = pluginData.certs.bundlePem;
        void this.#sendBundleReport();
      }
      if (this.#applied?.contentHash !== state.version) {
        const seconds = this.#stateAt ? (Date.now() - this.#stateAt) / 1000 : 0;
        const shards = state.version.split(',').length;
        this.#applied = { version: state.specVersion, contentHash: state.version, shards, appliedAt: new Date().toISOString(), applySeconds: seconds };
        this.#o.onApplied?.({ version: state.specVersion ?? 0, shards, seconds, ok: true });
      }
      this.#log.info('proxy config applied', { version: plan.version, services: plan.outbound.services.length, inbound: plan.inbound.services.length, certificates: Object.keys(pluginData.certs.workloads).length, problems: plan.problems.length });
    } catch (err) {
      this.#log.error('proxy config not applied; the proxy keeps its previous one', { error: describeError(err) });
      this.#o.onApplied?.({ version: state.specVersion ?? 0, shards: state.version.split(',').length, seconds: this.#stateAt ? (Date.now() - this.#stateAt) / 1000 : 0, ok: false });
    }
    for (const p of plan.problems) this.#log.warn('proxy plan problem', { problem: p });
  }

  /** Anti-spoofing on every pod veth and the control-port guard; failures are reported, never fatal. */
  async #guardNode(cluster: ClusterState, host: string | undefined): Promise<void> {
    this.#egress ??= new PodEgressGuard({ pinDir: this.#o.pinDir, allowInitialNetns: this.#o.hostNetwork === true, log: this.#log.child('pod-egress') });
    try {
      const r = await this.#egress.reconcile(planPodSources(cluster.localPods));
      this.#podEgress = { pods: r.guarded, problems: r.problems };
    } catch (err) {
      this.#podEgress = { pods: 0, problems: [describeError(err)] };
      this.#log.error('pod source addresses not guarded', { error: describeError(err) });
    }
    if (!this.#o.adminPorts) return;
    this.#adminGuard ??= new AdminGuard({ log: this.#log.child('admin-guard'), inInitialNetns, allowInitialNetns: this.#o.hostNetwork === true });
    const problems: string[] = [];
    const ports = [...this.#o.adminPorts()];
    const ca = this.#ca ? new URL(this.#ca.url) : undefined;
    // The CA is guarded where it listens: on this node's address (node 1 of the sandbox).
    if (ca && host && ca.hostname === host) ports.push(Number(ca.port || 443));
    const spec = planAdminGuard({ ports, nodeAddresses: [...computeNodeIps(cluster.nodes).values()] }, problems);
    try {
      await this.#adminGuard.reconcile(spec);
      this.#adminGuardStatus = { ports: spec?.ports ?? [], problems };
    } catch (err) {
      this.#adminGuardStatus = { ports: [], problems: [...problems, describeError(err)] };
      this.#log.error('node control ports not closed to pods', { error: describeError(err) });
    }
  }

  async #startProxy(host: string): Promise<void> {
    this.#host = host;
    this.#guard = new PodIngressGuard({ pinDir: this.#o.pinDir, allowSrc: host, log: this.#log.child('pod-ingress') });
    this.#steering = new PlaintextSteering({ proxy: { ip: host, port: PLAINTEXT_INBOUND_PORT, mark: PROXY_MARK }, allowInitialNetns: this.#o.hostNetwork === true, log: this.#log.child('plaintext-steering') });
    this.#proxy = new ProxySupervisor({
      nodeName: this.#o.nodeName, host, outboundPort: OUTBOUND_PORT, inboundPort: INBOUND_PORT, workers: this.#o.workers ?? 2,
      pinDir: this.#o.pinDir, mark: PROXY_MARK, trustDomain: this.#state?.trustDomain ?? 'cluster.local', runDir: this.#o.runDir ?? '/run/nodemesh', log: this.#log.child('proxy'),
      ...(this.#o.onTelemetry ? { onTelemetry: this.#o.onTelemetry } : {}),
      // `kill -USR2 <agent>`: a graceful proxy restart (new process next to the old one, then the old one drains).
      restartSignal: 'SIGUSR2',
      ...(this.#o.proxyMemoryMaxBytes !== undefined ? { memoryMaxBytes: this.#o.proxyMemoryMaxBytes, ...(this.#o.nodeCgroup ? { nodeCgroup: this.#o.nodeCgroup } : {}) } : {}),
    });
    await this.#proxy.start();
    // Mesh flows now go to the proxy, and only while its listener is registered (fail closed).
    writeDatapathConfig(this.#o.maps, { sockmap: this.#o.sockmap, hostNetnsCookie: getNetnsCookie(), proxy: { ip4: host, port: OUTBOUND_PORT, mark: PROXY_MARK }, proxyCheck: true });
    this.#log.info('node proxy configured in the datapath', { outbound: `${host}:${OUTBOUND_PORT}`, hbone: `${host}:${INBOUND_PORT}` });
  }

  #pluginData(plan: ProxyPlan): MeshPluginData {
    const workloads: Record<string, PemIdentity> = {};
    for (const id of plan.workloadIdentities) {
      const c = this.#certs?.current(id);
      if (c) workloads[c.spiffeId] = { certChainPem: c.certChainPem, keyPem: c.keyPem };
    }
    // The HBONE listener presents one of this node's workload SVIDs: only node agents get certificates, and only
    // for their own pods, so holding one proves a node of this mesh (the CA has no separate node identity).
    const first = Object.keys(workloads).sort()[0];
    return {
      version: plan.version,
      inbound: plan.inbound,
      endpoints: plan.endpoints,
      identities: plan.identities,
      certs: { ...(this.#bundlePem ? { bundlePem: this.#bundlePem } : {}), ...(first ? { proxy: workloads[first] } : {}), workloads },
      ...(this.#tracing?.enabled ? { tracing: this.#tracing } : {}),
      plaintext: computePlaintextTable(plan.plaintextInbound ?? []),
    };
  }

  /** The trust bundle from the operator's ConfigMap, re-read every 5 s (rotations add roots before use). */
  #pollBundle(): void {
    const core = this.#o.kc.makeApiClient(CoreV1Api);
    const read = async (): Promise<void> => {
      try {
        const cm = await core.readNamespacedConfigMap({ namespace: this.#o.meshNamespace ?? DEFAULT_MESH_NAMESPACE, name: TRUST_BUNDLE_CONFIGMAP });
        const pem = cm.data?.['ca.crt'];
        if (pem && pem !== this.#bundlePem) {
          this.#bundlePem = pem;
          this.#log.info('trust bundle loaded', { bytes: pem.length });
          this.#schedule();
        }
      } catch (err) {
        if (!this.#bundlePem) this.#log.debug('trust bundle not readable yet', { error: describeError(err) });
      }
      await this.#readMeshConfig(core);
      await this.#sendBundleReport();
    };
    void read();
    const t = setInterval(() => { if (!this.#stopped) void read(); }, 5_000);
    t.unref();
  }

  /**
   * Tells the operator's CA which bundle the proxy serves: at once when it changed, else every 30 s (a restarted
   * operator learns it again). The CA rotation switches the issuer only when every live node serves the new root.
   */
  async #sendBundleReport(): Promise<void> {
    const pem = this.#appliedBundlePem;
    if (!pem || !this.#ca || this.#stopped) return;
    const fingerprints = pemFingerprints(pem);
    const key = fingerprints.join(',');
    const last = this.#bundleReport;
    if (last && last.key === key && !last.error && Date.now() - last.at < 30_000) return;
    if (!this.#reportBundle) {
      const { url, tokenFile } = this.#ca;
      this.#reportBundle = createBundleReporter({ url, nodeName: this.#o.nodeName, token: () => readFileSync(tokenFile, 'utf8').trim(), caPem: () => this.#bundlePem ?? '' });
    }
    try {
      await this.#reportBundle(fingerprints);
      this.#bundleReport = { key, at: Date.now() };
    } catch (err) {
      this.#bundleReport = { key, at: Date.now(), error: describeError(err) };
      this.#log.debug('trust bundle report failed; retrying with the next bundle read', { error: describeError(err) });
    }
  }

  /**
   * Tracing settings from ConfigMap nodemesh-config (`tracing.*`), read with the bundle: a change reaches the proxy
   * workers with the next push. A missing ConfigMap means tracing off; bad keys keep their defaults and are reported.
   */
  async #readMeshConfig(core: CoreV1Api): Promise<void> {
    let data: Record<string, string> = {};
    try {
      const cm = await core.readNamespacedConfigMap({ namespace: this.#o.meshNamespace ?? DEFAULT_MESH_NAMESPACE, name: MESH_CONFIGMAP });
      data = cm.data ?? {};
    } catch (err) {
      if ((err as { code?: number }).code !== 404) return; // unreachable API server: keep what we have
    }
    const { settings, issues } = computeTracingSettings(data);
    const next = settings.enabled ? settings : undefined;
    const key = JSON.stringify(next ?? null);
    if (key === this.#tracingKey) return;
    this.#tracingKey = key;
    this.#tracing = next;
    this.#tracingIssues = issues.map((i) => `${i.key}: ${i.message}`);
    for (const i of issues) this.#log.warn(`ConfigMap ${MESH_CONFIGMAP}: ${i.key}: ${i.message}; its default is used`);
    this.#log.info('tracing settings', next ? { enabled: true, endpoint: next.endpoint, samplingRatio: next.samplingRatio } : { enabled: false });
    this.#schedule();
  }
}
