/**
 * The nodemesh operator process: `node operator/main.ts [flags]` (flags below, `--help`).
 *
 * Modules, started in this order and stopped in reverse:
 *   1. health server       /healthz, /readyz, /status on TCP (probes) and a unix socket (sandbox status)
 *   2. cluster cache       informers for the mesh kinds, NodeStates, Services, EndpointSlices, Pods, Nodes,
 *                          ServiceAccounts, Namespaces (every replica: a standby has a warm cache)
 *   3. leader election     Lease nodemesh-system/nodemesh-operator (15 s / 10 s / 2 s, like client-go)
 *   4. reconciler          leader only: NodeStates and status conditions, level-triggered
 *   5. mesh CA             load or create the CA Secret, then the HTTPS signing service (every replica);
 *                          the leader publishes the trust bundle ConfigMap
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { DEFAULT_MESH_NAMESPACE } from '../crds/index.ts';
import { CaRotationController } from './ca-rotation.ts';
import { CaService, createKubeCaStore, createKubeTokenReviewer, loadOrCreateMeshCa, publishTrustBundle, retryUntil } from './ca-service.ts';
import type { MeshCa } from './ca/mesh-ca.ts';
import { parseDuration } from './duration.ts';
import { startHealthServer, type HealthServer } from './health-server.ts';
import { KubeRest } from './kube-rest.ts';
import { createKubeLeaseApi, LeaderElector } from './leader-election.ts';
import { createOperatorLogger, describeError, type OperatorLogger } from './logger.ts';
import { createKubeLastGoodStore } from './last-good-store.ts';
import { createKubeNodeStateApi } from './reconcile-node-states.ts';
import { Reconciler } from './reconciler.ts';
import { ClusterCache } from './snapshot-cache.ts';
import { createKubeStatusApi } from './status-writer.ts';

/** Name of the Lease the replicas compete for. */
export const LEASE_NAME = 'nodemesh-operator';

/** Settings of one operator process. */
export interface OperatorOptions {
  kubeconfigPath?: string;
  /** The mesh namespace (Lease, CA Secret, trust bundle, mesh-wide policies). */
  namespace: string;
  identity: string;
  trustDomain: string;
  /** host:port for /healthz and /status; undefined disables TCP. */
  healthAddr?: { host: string; port: number };
  statusSocket?: string;
  /** host:port of the CA signing service; undefined disables the CA. */
  caAddr?: { host: string; port: number };
  leafTtlMs?: number;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  debounceMs: number;
  probeIntervalMs: number;
  staleGraceMs: number;
  log: OperatorLogger;
}

/** A running operator. */
export interface RunningOperator {
  status(): OperatorStatus;
  stop(): Promise<void>;
}

/** The /status document. */
export interface OperatorStatus {
  version: string;
  identity: string;
  pid: number;
  startedAt: string;
  leader: boolean;
  leaderIdentity: string | undefined;
  lastReconcileAt: string | undefined;
  lagMs: number | undefined;
  pendingMs: number;
  synced: boolean;
  unhealthyInformers: string[];
  reconcile: ReturnType<Reconciler['status']>;
  election: ReturnType<LeaderElector['status']>;
  informers: ReturnType<ClusterCache['states']>;
  probes: number;
  ca: ReturnType<CaService['status']> | { state: string };
  /** The CA rotation controller (operator/ca-rotation.ts): phase, what it waits for, last step. */
  caRotation?: ReturnType<CaRotationController['status']>;
  eventLoopDelay: { maxMs: number; p99Ms: number; meanMs: number; sinceMs: number };
  /** process.memoryUsage() in MiB: a heap that stays flat while RSS holds a plateau is V8 keeping pages, not a leak. */
  memoryMiB: { rss: number; heapTotal: number; heapUsed: number; external: number };
}

function memoryMiB(): OperatorStatus['memoryMiB'] {
  const m = process.memoryUsage();
  const mib = (n: number): number => Math.round(n / 2 ** 20);
  return { rss: mib(m.rss), heapTotal: mib(m.heapTotal), heapUsed: mib(m.heapUsed), external: mib(m.external) };
}

function readVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Starts every module (see the list at the top). */
export async function startOperator(o: OperatorOptions): Promise<RunningOperator> {
  const log = o.log;
  const version = readVersion();
  const startedAt = new Date().toISOString();
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let loopSince = Date.now();
  const stops: Array<() => Promise<void>> = [];
  let stopping = false;

  const kc = new KubeConfig();
  if (o.kubeconfigPath) kc.loadFromFile(o.kubeconfigPath);
  else kc.loadFromDefault();
  const rest = new KubeRest(kc);
  stops.push(async () => rest.close());

  // The modules are built first (nothing runs yet) so /status can read them from the first request on; their
  // callbacks refer to each other but fire only once started below.
  let ca: MeshCa | undefined;
  let caService: CaService | undefined;
  let caRotation: CaRotationController | undefined;
  let caState = o.caAddr ? 'loading' : 'disabled';
  const cache: ClusterCache = new ClusterCache({
    rest,
    log: log.child('informers'),
    trustDomain: o.trustDomain,
    meshNamespace: o.namespace,
    probeIntervalMs: o.probeIntervalMs,
    onChange: (informer, type, obj) => reconciler.onInformerChange(informer, type, obj),
    onHealth: () => reconciler.notify({ urgent: true }),
  });
  const caStore = createKubeCaStore(rest, o.namespace);
  const publishBundle = (): void => {
    if (!ca || !elector.isLeader()) return;
    publishTrustBundle(caStore, ca).then(
      (wrote) => {
        if (wrote) log.info('published the trust bundle', { configMap: `${o.namespace}/nodemesh-trust-bundle` });
      },
      (err: unknown) => log.warn('could not publish the trust bundle; retrying later', { error: describeError(err) }),
    );
  };
  const elector = new LeaderElector({
    identity: o.identity,
    api: createKubeLeaseApi(rest, o.namespace, LEASE_NAME),
    leaseDurationMs: o.leaseDurationMs,
    renewDeadlineMs: o.renewDeadlineMs,
    retryPeriodMs: o.retryPeriodMs,
    log: log.child('election'),
    onStartedLeading: () => {
      reconciler.notify({ urgent: true });
      publishBundle();
    },
    onStoppedLeading: () => log.warn('stopped leading: no more writes'),
    onNewLeader: (id) => log.info('leader observed', { leader: id ?? '(none)' }),
  });
  const reconciler: Reconciler = new Reconciler({
    cache,
    nodeStateApi: createKubeNodeStateApi(rest),
    statusApi: createKubeStatusApi(rest),
    lastGoodStore: createKubeLastGoodStore(rest, o.namespace),
    isLeader: () => elector.isLeader(),
    log: log.child('reconcile'),
    debounceMs: o.debounceMs,
    staleGraceMs: o.staleGraceMs,
  });

  const status = (): OperatorStatus => {
    const r = reconciler.status();
    return {
      version,
      identity: o.identity,
      pid: process.pid,
      startedAt,
      leader: elector.isLeader(),
      leaderIdentity: elector.holder(),
      lastReconcileAt: r.lastReconcileAt,
      lagMs: r.lastLagMs,
      pendingMs: r.pendingMs,
      synced: cache.allSynced(),
      unhealthyInformers: cache.unhealthy(),
      reconcile: r,
      election: elector.status(),
      informers: cache.states(),
      probes: cache.group.probes,
      ca: caService?.status() ?? { state: caState },
      ...(caRotation ? { caRotation: caRotation.status() } : {}),
      eventLoopDelay: {
        maxMs: Math.round(loop.max / 1e5) / 10,
        p99Ms: Math.round(loop.percentile(99) / 1e5) / 10,
        meanMs: Math.round(loop.mean / 1e5) / 10 || 0,
        sinceMs: Date.now() - loopSince,
      },
      memoryMiB: memoryMiB(),
    };
  };

  // 1. health server
  const health: HealthServer = await startHealthServer(
    {
      ready: () => cache.allSynced(),
      status,
      resetLoopDelay: () => {
        loop.reset();
        loopSince = Date.now();
      },
    },
    { tcp: o.healthAddr, socketPath: o.statusSocket },
  );
  stops.push(() => health.close());
  if (health.port !== undefined) log.info('health endpoint listening', { addr: `${o.healthAddr!.host}:${health.port}` });

  // 2. cluster cache
  cache.start();
  stops.push(() => cache.stop());

  // 3. leader election
  elector.start();
  stops.push(() => elector.stop({ release: true }));

  // 4. reconciler
  reconciler.start();
  stops.push(() => reconciler.stop());

  // 5. mesh CA (in the background: the API server may not answer yet)
  if (o.caAddr) {
    const caAddr = o.caAddr;
    const bundleTimer = setInterval(publishBundle, 30_000);
    bundleTimer.unref();
    stops.push(async () => {
      clearInterval(bundleTimer);
      await caRotation?.stop();
      await caService?.stop();
    });
    void (async () => {
      ca = await retryUntil(() => loadOrCreateMeshCa(caStore, { trustDomain: o.trustDomain, leafTtlMs: o.leafTtlMs, log: log.child('ca') }), { stopped: () => stopping, log: log.child('ca'), what: 'loading the mesh CA' });
      if (!ca || stopping) return;
      caState = 'starting';
      const svc = new CaService({
        ca,
        reviewer: createKubeTokenReviewer(rest),
        pods: () => (cache.informers.pods.synced ? cache.informers.pods.list() : undefined),
        node: (name) => (cache.informers.nodes.synced ? cache.informers.nodes.get(name) : null),
        meshNamespace: o.namespace,
        host: caAddr.host,
        port: caAddr.port,
        log: log.child('ca'),
      });
      await svc.start();
      caService = svc;
      publishBundle();
      // Rotation (F10): every replica reloads a changed CA Secret; the leader also drives the rotation steps.
      caRotation = new CaRotationController({
        store: caStore,
        trustDomain: o.trustDomain,
        leafTtlMs: o.leafTtlMs ?? 24 * 3_600_000,
        isLeader: () => elector.isLeader(),
        nodes: () => (cache.informers.nodes.synced ? cache.informers.nodes.list().map((n) => n.metadata?.name ?? '').filter((n) => n !== '') : undefined),
        reports: () => svc.bundleReports(),
        onCa: (next, why) => {
          ca = next;
          svc.setCa(next);
          log.child('ca').info('CA state reloaded', { why });
          publishBundle();
        },
        onIssuerSwitched: () => svc.renewServingCertificate(),
        log: log.child('ca-rotation'),
      });
      if (!stopping) caRotation.start();
    })().catch((err: unknown) => {
      caState = `failed: ${describeError(err)}`;
      log.error('the CA signing service could not start', { error: describeError(err) });
    });
  }

  log.info('operator started', { identity: o.identity, version, namespace: o.namespace, trustDomain: o.trustDomain });
  return {
    status,
    stop: async () => {
      if (stopping) return;
      stopping = true;
      for (const s of stops.reverse()) {
        await s().catch((err: unknown) => log.warn('stopping a module failed', { error: describeError(err) }));
      }
      loop.disable();
      log.info('operator stopped');
    },
  };
}

const USAGE = `usage: node operator/main.ts [flags]
  --kubeconfig PATH        kubeconfig (default: $KUBECONFIG, else in-cluster)
  --namespace NS           mesh namespace (default ${DEFAULT_MESH_NAMESPACE})
  --identity ID            leader-election identity (default $POD_NAME, else <hostname>_<pid>)
  --trust-domain TD        SPIFFE trust domain (default cluster.local)
  --health-addr H:P        /healthz, /readyz, /status (default 127.0.0.1:8081; "" disables)
  --status-socket PATH     also serve them on this unix socket
  --ca-addr H:P            CA signing service (default 0.0.0.0:15012; "" disables the CA)
  --leaf-ttl DUR           SVID lifetime (default 24h)
  --lease-duration DUR     (default 15s)   --renew-deadline DUR (default 10s)   --retry-period DUR (default 2s)
  --debounce DUR           change coalescing window (default 25ms)
  --probe-interval DUR     API probe while informers back off (default 2s)
  --stale-grace DUR        failing informer before Programmed=Unknown (default 10s)
  --debug                  debug log lines`;

function parseAddr(v: string, flag: string): { host: string; port: number } | undefined {
  if (v === '') return undefined;
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag} ${JSON.stringify(v)}: expected host:port`);
  return { host: v.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port };
}

function parseDur(v: string, flag: string): number {
  const ms = parseDuration(v);
  if (ms === undefined || ms < 0) throw new Error(`${flag} ${JSON.stringify(v)}: expected a duration like 500ms, 10s, 24h`);
  return ms;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string', default: DEFAULT_MESH_NAMESPACE },
      identity: { type: 'string' },
      'trust-domain': { type: 'string', default: 'cluster.local' },
      'health-addr': { type: 'string', default: '127.0.0.1:8081' },
      'status-socket': { type: 'string' },
      'ca-addr': { type: 'string', default: '0.0.0.0:15012' },
      'leaf-ttl': { type: 'string', default: '24h' },
      'lease-duration': { type: 'string', default: '15s' },
      'renew-deadline': { type: 'string', default: '10s' },
      'retry-period': { type: 'string', default: '2s' },
      debounce: { type: 'string', default: '25ms' },
      'probe-interval': { type: 'string', default: '2s' },
      'stale-grace': { type: 'string', default: '10s' },
      debug: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const log = createOperatorLogger(process.stderr, 'operator', { debug: values.debug });
  const op = await startOperator({
    kubeconfigPath: values.kubeconfig ?? process.env.KUBECONFIG,
    namespace: values.namespace,
    identity: values.identity ?? process.env.POD_NAME ?? `${hostname()}_${process.pid}`,
    trustDomain: values['trust-domain'],
    healthAddr: parseAddr(values['health-addr'], '--health-addr'),
    statusSocket: values['status-socket'],
    caAddr: parseAddr(values['ca-addr'], '--ca-addr'),
    leafTtlMs: parseDur(values['leaf-ttl'], '--leaf-ttl'),
    leaseDurationMs: parseDur(values['lease-duration'], '--lease-duration'),
    renewDeadlineMs: parseDur(values['renew-deadline'], '--renew-deadline'),
    retryPeriodMs: parseDur(values['retry-period'], '--retry-period'),
    debounceMs: parseDur(values.debounce, '--debounce'),
    probeIntervalMs: parseDur(values['probe-interval'], '--probe-interval'),
    staleGraceMs: parseDur(values['stale-grace'], '--stale-grace'),
    log,
  });
  const shutdown = (signal: string): void => {
    log.info('shutting down', { signal });
    op.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { error: describeError(err) });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`operator: ${describeError(err)}\n`);
    process.exit(1);
  });
}
