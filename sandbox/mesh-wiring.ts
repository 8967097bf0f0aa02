/**
 * What the sandbox supervisor gives the mesh besides its processes, the way a real cluster's install would:
 *   - agent CA credentials: one node-bound token per node (agent-credentials.ts; a projected token in a real
 *     cluster), renewed at half-life, in <stateDir>/agent-<node>.token, and the CA URL (the operator's signing
 *     service on node-1's fabric address);
 *   - the mesh ConfigMap nodemesh-system/nodemesh-config pointing tracing at the sandbox's OTLP receivers with
 *     samplingRatio 1: one per node on the node's own loopback (127.0.0.1:4318, as a per-node collector agent
 *     runs in a real cluster), all appending to <stateDir>/spans.jsonl. Node-local on purpose: span exports never
 *     cross the node link, which must carry mTLS only (the demo and tests capture it);
 *   - the agents' status and metrics on the machine's loopback: each agent also serves its health endpoint on a
 *     unix socket in the state directory (filesystem sockets cross network namespaces); this proxy, in the
 *     supervisor (root namespace), serves them on 127.0.0.1 for tests and people. `kubectl mesh` does not use it:
 *     it reaches the agents through the API server's pods proxy (supervisor-agent-pods.ts), as in a real cluster.
 * Isolation holds: nothing inside the sandbox gets a route out; the supervisor only reaches into it through
 * sockets in its own state directory, and the loopback endpoint forwards three read-only paths per known node.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { writeFileAtomic } from '../agent/atomic-file.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ensureAgentServiceAccount, mintAgentNodeToken } from './agent-credentials.ts';
import { OPERATOR_CA_PORT } from '../operator/status-client.ts';
import { REPO_ROOT, type SandboxConfig } from './config.ts';
import { describeError } from './errors.ts';
import { httpStatusOf } from './kube.ts';
import type { Logger } from './logger.ts';
import type { Topology } from './net/topology.ts';
import type { StateStore } from './state.ts';
import type { DaemonSpec } from './supervisor.ts';

/** The mesh's own namespace (crds DEFAULT_MESH_NAMESPACE). */
export const MESH_NAMESPACE = 'nodemesh-system';
/** Port of the sandbox OTLP/HTTP receiver (the OTLP default). */
export const OTLP_PORT = 4318;
/** Agent tokens live this long; renewed at half-life. */
const TOKEN_SECONDS = 3600;
/** Paths the loopback status endpoint forwards to an agent (read-only). */
const AGENT_PATHS = new Set(['/statusz', '/metrics', '/healthz', '/readyz', '/explain']);
/** Of those, the paths whose query string is forwarded (the question `kubectl mesh explain` asks). */
const QUERY_PATHS = new Set(['/explain']);

/** Where the sandbox keeps per-node agent files and the spans. */
export function meshPaths(cfg: SandboxConfig): { tokenPattern: string; tokenFile(node: string): string; statusSocket(node: string): string; accessLog(node: string): string; spansFile: string } {
  return {
    tokenPattern: join(cfg.stateDir, 'agent-{node}.token'),
    tokenFile: (node) => join(cfg.stateDir, `agent-${node}.token`),
    statusSocket: (node) => join(cfg.stateDir, `agent-${node}.sock`),
    accessLog: (node) => join(cfg.stateDir, `access-${node}.log`),
    spansFile: join(cfg.stateDir, 'spans.jsonl'),
  };
}

/** The operator's CA signing service, as agents on every node reach it (it runs in the first node's namespace). */
export function computeCaUrl(topo: Topology): string | undefined {
  const first = topo.nodes[0];
  return first ? `https://${first.fabricAddr}:${OPERATOR_CA_PORT}` : undefined;
}

/** The OTLP traces endpoint as every node's proxy reaches it: its node's own receiver, on the node's loopback. */
export function computeOtlpEndpoint(topo: Topology): string | undefined {
  return topo.nodes.length > 0 ? `http://127.0.0.1:${OTLP_PORT}/v1/traces` : undefined;
}

/** Environment and flags each agent gets from the sandbox (its DaemonSet's env, in a real cluster). */
export function computeAgentWiring(cfg: SandboxConfig, topo: Topology, node: string): { env: Record<string, string>; args: string[] } {
  const p = meshPaths(cfg);
  const ca = computeCaUrl(topo);
  return {
    env: ca ? { NODEMESH_CA_URL: ca, NODEMESH_CA_TOKEN_FILE: p.tokenPattern } : {},
    args: ['--status-socket', p.statusSocket(node), '--access-log', p.accessLog(node), '--run-dir', cfg.stateDir],
  };
}

/**
 * The OTLP receivers, supervised like the operator: one per node, in its namespace on 127.0.0.1 (only that node's
 * proxy reaches it). Each appends whole batches of lines (O_APPEND) to the one spans file.
 */
export function planOtlpReceiverDaemon(cfg: SandboxConfig, topo: Topology): DaemonSpec[] {
  return topo.nodes.map((n) => ({
    name: `otlp-receiver/${n.name}`,
    node: n.name,
    netns: n.netns,
    argv: [process.execPath, join(REPO_ROOT, 'sandbox/otlp-receiver/main.ts'), '--host', '127.0.0.1', '--port', String(OTLP_PORT), '--out', meshPaths(cfg).spansFile],
    logFile: join(cfg.stateDir, `otlp-receiver-${n.name}.log`),
  }));
}

/** The mesh ConfigMap data the sandbox starts with: tracing to its receiver, every trace sampled. */
export function computeSandboxMeshConfig(topo: Topology): Record<string, string> {
  const endpoint = computeOtlpEndpoint(topo);
  return endpoint ? { 'tracing.otlp.endpoint': endpoint, 'tracing.samplingRatio': '1', 'tracing.scheduledDelayMs': '500' } : {};
}

async function ensureNamespace(core: CoreV1Api, name: string): Promise<void> {
  try {
    await core.createNamespace({ body: { metadata: { name } } });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
  }
}

/** Creates nodemesh-system/nodemesh-config unless it exists (a user's edits are kept). */
export async function ensureMeshConfig(kc: KubeConfig, topo: Topology): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await ensureNamespace(core, MESH_NAMESPACE);
  try {
    await core.createNamespacedConfigMap({ namespace: MESH_NAMESPACE, body: { metadata: { name: 'nodemesh-config', namespace: MESH_NAMESPACE, labels: { 'app.kubernetes.io/part-of': 'nodemesh' } }, data: computeSandboxMeshConfig(topo) } });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
  }
}

/**
 * Mints one CA token per node (bound to its Node) and writes it where the agents read it; renews them at half-life.
 * Files are recorded in the state before they are written. Returns a stop function for the renewal timer.
 */
export async function startAgentTokens(kc: KubeConfig, cfg: SandboxConfig, topo: Topology, store: StateStore, log: Logger): Promise<() => void> {
  const p = meshPaths(cfg);
  const core = kc.makeApiClient(CoreV1Api);
  await ensureNamespace(core, MESH_NAMESPACE);
  await ensureAgentServiceAccount(kc, MESH_NAMESPACE);
  const mint = async (): Promise<void> => {
    for (const n of topo.nodes) {
      const t = await mintAgentNodeToken(kc, MESH_NAMESPACE, n.name, TOKEN_SECONDS);
      await store.record({ kind: 'file', path: p.tokenFile(n.name) });
      // Atomic: the agent re-reads it at any moment, and must never see half a token.
      await writeFileAtomic(p.tokenFile(n.name), t.token, { mode: 0o600 });
    }
  };
  await mint();
  log.info('agent CA tokens written', { nodes: topo.nodes.length, pattern: p.tokenPattern });
  const timer = setInterval(() => {
    mint().catch((err: unknown) => log.warn('renewing agent CA tokens failed; retrying at the next half-life', { error: describeError(err) }));
  }, (TOKEN_SECONDS / 2) * 1000);
  timer.unref();
  return () => clearInterval(timer);
}

/** The loopback endpoint in front of the agents' unix sockets. */
export type AgentStatusProxy = { url: string; close(): Promise<void> };

/** Pure: which agent socket and path a request maps to, or why not (`/nodes/<node>/<statusz|metrics|healthz|readyz|explain>`). */
export function routeAgentRequest(method: string | undefined, url: string | undefined, nodes: readonly string[]): { node: string; path: string } | { status: number; message: string } {
  if (method !== 'GET' && method !== 'HEAD') return { status: 405, message: 'GET only\n' };
  const m = /^\/nodes\/([^/?]+)(\/[a-z]+)(\?.*)?$/.exec(url ?? '');
  if (!m) return { status: 404, message: `try /nodes/<node>/statusz or /nodes/<node>/metrics; nodes: ${nodes.join(', ')}\n` };
  const [, node, path, query] = m;
  if (!nodes.includes(node!)) return { status: 404, message: `no node ${node} in this sandbox (nodes: ${nodes.join(', ')})\n` };
  if (!AGENT_PATHS.has(path!)) return { status: 404, message: `${path} is not forwarded; use ${[...AGENT_PATHS].join(', ')}\n` };
  return { node: node!, path: QUERY_PATHS.has(path!) && query ? `${path!}${query}` : path! };
}

/** Serves the agents' status on 127.0.0.1:`port` (0: any free port), forwarding to each agent's unix socket. */
export async function startAgentStatusProxy(cfg: SandboxConfig, topo: Topology, port: number, log: Logger): Promise<AgentStatusProxy> {
  const p = meshPaths(cfg);
  const nodes = topo.nodes.map((n) => n.name);
  const server = http.createServer((req, res) => {
    const r = routeAgentRequest(req.method, req.url, nodes);
    if ('status' in r) {
      res.writeHead(r.status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(r.message);
      return;
    }
    const up = http.request({ socketPath: p.statusSocket(r.node), path: r.path, method: req.method, headers: { accept: req.headers.accept ?? '*/*', ...(req.headers['accept-encoding'] ? { 'accept-encoding': req.headers['accept-encoding'] } : {}) }, timeout: 5000 }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('timeout', () => up.destroy(new Error('no answer within 5 s')));
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) { res.destroy(); return; }
      res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`agent of ${r.node} not reachable on ${p.statusSocket(r.node)}: ${err.code ?? err.message} (agent down or still starting? see nodemesh sandbox status)\n`);
    });
    up.end();
  });
  const listen = (at: number): Promise<void> => new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  try {
    await listen(port);
  } catch (err) {
    if (port === 0) throw err;
    log.warn('agent status port taken; using a free one', { port, error: describeError(err) });
    await listen(0);
  }
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** The parts of an agent's /statusz that say whether its mesh side is ready (agent/main.ts, agent/proxy/mesh-node.ts). */
export type AgentMeshStatus = {
  proxy?: { listening?: boolean };
  mesh?: { planned?: string; proxy?: { applied?: string }; trustBundle?: string; certificates?: { spiffeId: string; state: string }[] | string };
};

/**
 * Why an agent's mesh side is not ready yet (undefined when it is): its proxy listening with the latest plan, the
 * trust bundle loaded, and a valid certificate for every workload identity of its node (pure). Traffic sent before
 * that fails closed (503 or refused), never in plaintext: demos and tests wait for it.
 */
export function computeAgentMeshReadiness(s: AgentMeshStatus): string | undefined {
  if (!s.proxy?.listening) return 'proxy not listening';
  if (!s.mesh?.planned || s.mesh.proxy?.applied !== s.mesh.planned) return 'proxy does not serve the latest plan yet';
  if (s.mesh.trustBundle !== 'loaded') return 'trust bundle not loaded';
  const certs = s.mesh.certificates;
  if (!Array.isArray(certs)) return `certificates: ${String(certs)}`;
  const pending = certs.filter((c) => c.state !== 'valid');
  return pending.length ? `waiting for certificates of ${pending.map((c) => c.spiffeId).join(', ')}` : undefined;
}

/** Waits until every agent of the instance is mesh-ready (via the loopback status endpoint in the supervisor's report). */
export async function waitForAgentsMeshReady(agentStatusUrl: string, nodes: readonly string[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let why = 'not asked yet';
  while (Date.now() < until) {
    const answers = await Promise.all(nodes.map(async (n) => {
      try {
        const res = await fetch(`${agentStatusUrl}/nodes/${n}/statusz`, { signal: AbortSignal.timeout(3000) });
        const r = res.ok ? computeAgentMeshReadiness((await res.json()) as AgentMeshStatus) : `status ${res.status}`;
        return r ? `${n}: ${r}` : undefined;
      } catch (err) {
        return `${n}: ${describeError(err)}`;
      }
    }));
    const bad = answers.filter((a) => a !== undefined);
    if (bad.length === 0) return;
    why = bad.join('; ');
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`the mesh was not ready after ${timeoutMs / 1000}s: ${why}`);
}
