/**
 * Harness for the operator integration tests: the embedded API server (in this process), a TCP proxy in
 * front of it that the tests cut to simulate an outage (the server keeps its state, like etcd behind a dead
 * API server), operator child processes reached through their status sockets, and helpers that build the
 * cluster objects and compute what the NodeStates should be.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, DiscoveryV1Api, KubeConfig } from '@kubernetes/client-node';
import { stringify as toYaml, parse as parseYaml } from 'yaml';
import { HTTPRouteResource, MeshTLSPolicyResource, NodeStateResource, TrafficPolicyResource, AuthorizationPolicyResource, type HTTPRoute, type NodeState } from '../../../crds/index.ts';
import { compileMesh } from '../../../operator/compile-mesh.ts';
import { computeNodeState } from '../../../operator/compute-node-state.ts';
import type { OperatorStatus } from '../../../operator/main.ts';
import type { Snapshot } from '../../../operator/snapshot.ts';
import { startApiServer, type ApiServer } from '../../../sandbox/apiserver/server.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Retries `check` until it returns without throwing, or fails with its last error after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T> | T, timeoutMs = 30_000, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not true after ${timeoutMs} ms: ${(last as Error)?.message ?? String(last)}`, { cause: last });
    await sleep(intervalMs);
  }
}

/** Waits. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A loopback TCP forwarder that can be taken down (listener closed, connections cut) and brought back on the same port. */
export class TcpProxy {
  readonly #target: number;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;

  private constructor(target: number) {
    this.#target = target;
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const p = new TcpProxy(targetPort);
    await p.up();
    return p;
  }

  /** Accepts connections again (same port as before). */
  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.#target, '127.0.0.1');
      this.#sockets.add(client);
      this.#sockets.add(upstream);
      const drop = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  /** Refuses new connections and cuts the open ones (the API server looks dead). */
  async down(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const sock of this.#sockets) sock.destroy();
    this.#sockets.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

/** Typed clients. */
export interface Clients {
  kc: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  discovery: DiscoveryV1Api;
}

/** The API server, the proxy and the kubeconfigs. */
export interface Cluster {
  api: ApiServer;
  dir: string;
  proxy: TcpProxy;
  /** Kubeconfig the operators use (through the proxy). */
  operatorKubeconfig: string;
  /** Clients talking to the API server directly (the test's own writes work during an "outage"). */
  c: Clients;
  close(): Promise<void>;
}

/** Starts the API server (TLS, CRDs registered) and the proxy. */
export async function startCluster(opts: { watchHistoryWindow: number }): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'nm-opit-'));
  const api = await startApiServer({ port: 0, tls: true, stateDir: join(dir, 'apiserver'), crdDirs: [join(REPO_ROOT, 'crds')], watchHistoryWindow: opts.watchHistoryWindow, gracefulPodDeletion: false });
  const apiPort = Number(new URL(api.url).port);
  const proxy = await TcpProxy.start(apiPort);
  const doc = parseYaml(api.kubeconfig()) as { clusters: { cluster: { server: string } }[] };
  doc.clusters[0]!.cluster.server = `https://127.0.0.1:${proxy.port}`;
  const operatorKubeconfig = join(dir, 'kubeconfig-operator');
  await writeFile(operatorKubeconfig, toYaml(doc), { mode: 0o600 });
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const c: Clients = { kc, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), discovery: kc.makeApiClient(DiscoveryV1Api) };
  return {
    api,
    dir,
    proxy,
    operatorKubeconfig,
    c,
    close: async () => {
      await proxy.down();
      await api.close();
      if (process.env.NM_TEST_KEEP) console.log(`# kept ${dir} (operator logs: *.log)`);
      else await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An operator child process. */
export class OperatorProcess {
  readonly identity: string;
  readonly socket: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(identity: string, socket: string, logFile: string, child: ChildProcess) {
    this.identity = identity;
    this.socket = socket;
    this.logFile = logFile;
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Starts `node operator/main.ts` against the cluster (through the proxy). */
  static start(cluster: Cluster, identity: string, extraArgs: string[] = []): OperatorProcess {
    const socket = join(cluster.dir, `${identity}.sock`);
    const logFile = join(cluster.dir, `${identity}.log`);
    const out = createWriteStream(logFile, { flags: 'a' });
    const child = spawn(process.execPath, [
      join(REPO_ROOT, 'operator/main.ts'),
      '--kubeconfig', cluster.operatorKubeconfig,
      '--identity', identity,
      '--health-addr', '',
      '--status-socket', socket,
      '--ca-addr', '127.0.0.1:0',
      ...extraArgs,
    ], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KUBECONFIG: '' } });
    child.stdout!.pipe(out, { end: false });
    child.stderr!.pipe(out, { end: false });
    child.once('exit', () => out.end());
    return new OperatorProcess(identity, socket, logFile, child);
  }

  /** GET /status over the unix socket. */
  status(): Promise<OperatorStatus> {
    return this.#call('GET', '/status') as Promise<OperatorStatus>;
  }

  /** Restarts the event-loop delay histogram. */
  async resetLoopDelay(): Promise<void> {
    await this.#call('POST', '/status/reset-loop-delay');
  }

  #call(method: string, path: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socket, path, method, timeout: 5_000 }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} on ${this.identity}: no answer`)));
      req.on('error', reject);
      req.end();
    });
  }

  /** Waits until this operator leads and has reconciled once. */
  async waitLeading(timeoutMs = 30_000): Promise<OperatorStatus> {
    return eventually(`${this.identity} leads and reconciled`, async () => {
      const s = await this.status();
      if (!s.leader || !s.lastReconcileAt) throw new Error(`leader=${s.leader} lastReconcileAt=${s.lastReconcileAt} outcome=${s.reconcile.lastOutcome}`);
      return s;
    }, timeoutMs);
  }

  /** Sends a signal and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }

  /** The last lines of its log, for failure messages. */
  async logTail(lines = 30): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }
}

const cr = (r: { group: string; version: string; plural: string }) => ({ group: r.group, version: r.version, plural: r.plural });

/** Creates a namespace unless it exists. */
export async function ensureNamespace(c: Clients, name: string): Promise<void> {
  await c.core.createNamespace({ body: { metadata: { name } } }).catch((err: { code?: number }) => {
    if (err.code !== 409) throw err;
  });
}

/** A Node. */
export async function createNode(c: Clients, name: string): Promise<void> {
  await c.core.createNode({ body: { metadata: { name, labels: { 'kubernetes.io/hostname': name } } } });
}

/** A pod bound to a node (no kubelet here: it stays Pending, which the mesh treats as scheduled). */
export async function createPod(c: Clients, ns: string, name: string, node: string, labels: Record<string, string>, sa = 'default'): Promise<void> {
  await c.core.createNamespacedPod({ namespace: ns, body: { metadata: { name, namespace: ns, labels }, spec: { nodeName: node, serviceAccountName: sa, containers: [{ name: 'app', image: 'app' }] } } });
}

/** A ClusterIP Service on port 80. */
export async function createService(c: Clients, ns: string, name: string, selector: Record<string, string>): Promise<void> {
  await c.core.createNamespacedService({ namespace: ns, body: { metadata: { name, namespace: ns }, spec: { selector, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } } });
}

/** An HTTPRoute whose parent is Service `parent` port 80. */
export function routeBody(ns: string, name: string, parent: string, rules: unknown[]): HTTPRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: parent, port: 80 }], rules: rules as NonNullable<HTTPRoute['spec']['rules']> },
  };
}

/** Creates a custom object (HTTPRoute or one of ours). */
export async function createCustom(c: Clients, body: { apiVersion: string; kind: string; metadata?: { name?: string; namespace?: string }; spec?: unknown }): Promise<unknown> {
  const r = resourceOf(body.kind);
  return c.custom.createNamespacedCustomObject({ ...cr(r), namespace: body.metadata!.namespace!, body });
}

/** Reads a custom object. */
export async function getCustom<T>(c: Clients, kind: string, ns: string, name: string): Promise<T> {
  return (await c.custom.getNamespacedCustomObject({ ...cr(resourceOf(kind)), namespace: ns, name })) as T;
}

/** Deletes a custom object. */
export async function deleteCustom(c: Clients, kind: string, ns: string, name: string): Promise<void> {
  await c.custom.deleteNamespacedCustomObject({ ...cr(resourceOf(kind)), namespace: ns, name });
}

/** Merge-patches a custom object's spec by read-modify-replace (generation moves). */
export async function updateCustom<T extends { spec: unknown }>(c: Clients, kind: string, ns: string, name: string, change: (o: T) => void): Promise<T> {
  for (;;) {
    const o = await getCustom<T>(c, kind, ns, name);
    change(o);
    try {
      return (await c.custom.replaceNamespacedCustomObject({ ...cr(resourceOf(kind)), namespace: ns, name, body: o })) as T;
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
  }
}

function resourceOf(kind: string): { group: string; version: string; plural: string } {
  switch (kind) {
    case 'HTTPRoute': return HTTPRouteResource;
    case 'MeshTLSPolicy': return MeshTLSPolicyResource;
    case 'TrafficPolicy': return TrafficPolicyResource;
    case 'AuthorizationPolicy': return AuthorizationPolicyResource;
    default: throw new Error(`unknown kind ${kind}`);
  }
}

/** Every stored NodeState. */
export async function listNodeStates(c: Clients): Promise<NodeState[]> {
  return ((await c.custom.listClusterCustomObject(cr(NodeStateResource))) as { items: NodeState[] }).items;
}

/** Lists every HTTPRoute of a namespace. */
export async function listRoutes(c: Clients, ns: string): Promise<HTTPRoute[]> {
  return ((await c.custom.listNamespacedCustomObject({ ...cr(HTTPRouteResource), namespace: ns })) as { items: HTTPRoute[] }).items;
}

/** The snapshot the operator would build, read straight from the API server. */
export async function snapshotFromApi(c: Clients): Promise<Snapshot> {
  const all = async (r: { group: string; version: string; plural: string }) => ((await c.custom.listCustomObjectForAllNamespaces(cr(r))) as { items: never[] }).items;
  const [services, slices, pods, nodes, sas, nss, routes, mtls, tps, aps] = await Promise.all([
    c.core.listServiceForAllNamespaces(),
    c.discovery.listEndpointSliceForAllNamespaces(),
    c.core.listPodForAllNamespaces(),
    c.core.listNode(),
    c.core.listServiceAccountForAllNamespaces(),
    c.core.listNamespace(),
    all(HTTPRouteResource),
    all(MeshTLSPolicyResource),
    all(TrafficPolicyResource),
    all(AuthorizationPolicyResource),
  ]);
  return {
    trustDomain: 'cluster.local',
    meshNamespace: 'nodemesh-system',
    services: services.items,
    endpointSlices: slices.items,
    pods: pods.items,
    nodes: nodes.items,
    serviceAccounts: sas.items,
    namespaces: nss.items,
    httpRoutes: routes,
    meshTLSPolicies: mtls,
    trafficPolicies: tps,
    authorizationPolicies: aps,
  };
}

/**
 * Throws unless the stored NodeStates are exactly what the pure layer computes from the API server's current
 * objects (same shard names, same content hashes: no missing, stale or duplicate shards).
 */
export async function assertNodeStatesConverged(c: Clients): Promise<void> {
  const snapshot = await snapshotFromApi(c);
  const compiled = compileMesh(snapshot);
  const want = new Map<string, string>();
  for (const n of snapshot.nodes) for (const s of computeNodeState(snapshot, n.metadata!.name!, compiled)) want.set(s.metadata!.name!, s.spec.contentHash);
  const have = new Map((await listNodeStates(c)).map((s) => [s.metadata!.name!, s.spec.contentHash]));
  const problems: string[] = [];
  for (const [name, hash] of want) if (have.get(name) !== hash) problems.push(`${name}: ${have.has(name) ? 'stale' : 'missing'}`);
  for (const name of have.keys()) if (!want.has(name)) problems.push(`${name}: should not exist`);
  if (problems.length) throw new Error(`NodeStates differ from the desired state: ${problems.slice(0, 8).join('; ')}${problems.length > 8 ? ` and ${problems.length - 8} more` : ''}`);
}

/** The nodemesh parent conditions of a route, by type. */
export function routeConditions(r: HTTPRoute): Map<string, { status: string; reason: string; message: string; observedGeneration?: number }> {
  const parent = r.status?.parents?.find((p) => p.controllerName === 'nodemesh.io/operator');
  return new Map((parent?.conditions ?? []).map((c) => [c.type, c]));
}

/** Throws unless every route of `ns` has nodemesh conditions for its current generation with Programmed=True. */
export async function assertRoutesProgrammed(c: Clients, ns: string): Promise<void> {
  const bad: string[] = [];
  for (const r of await listRoutes(c, ns)) {
    const conds = routeConditions(r);
    const gen = r.metadata?.generation;
    const prog = conds.get('Programmed');
    if (!prog || prog.status !== 'True' || [...conds.values()].some((x) => x.observedGeneration !== gen)) {
      bad.push(`${r.metadata?.name} (generation ${gen}): ${[...conds.values()].map((x) => `${x.observedGeneration}:${x.status}`).join(',') || 'no status'}`);
    }
  }
  if (bad.length) throw new Error(`${bad.length} route(s) not programmed at their generation, e.g. ${bad.slice(0, 5).join('; ')}`);
}
