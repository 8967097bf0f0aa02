/**
 * The seam to the agents: where each node's agent status endpoint is, fetching its JSON, and reading it into
 * the shape `status` and `check` show. The agent's endpoint owns its JSON; this file documents what the
 * plugin reads from it and tolerates fields that are missing (an older or newer agent).
 *
 * Where an agent is found, first match wins (planAgentEndpoints):
 *   1. `--agent-endpoints node-a=http://10.0.0.1:9880,node-b=...` (or $NODEMESH_AGENT_ENDPOINTS);
 *   2. the Node annotation `nodemesh.io/agent-status-url` (kept for clusters that set it; nothing of ours writes it);
 *   3. the agent DaemonSet's pod on the node (namespace nodemesh-system, label app.kubernetes.io/name=nodemesh-agent,
 *      spec.nodeName), reached through the API server's pods proxy
 *      (`/api/v1/namespaces/nodemesh-system/pods/<pod>:<health port>/proxy/statusz`), with the kubeconfig's
 *      credentials: the default on a real cluster, where the agents' host port is rarely reachable from a laptop.
 *      Needs `get` on `pods/proxy` in nodemesh-system (and `list` on pods there to find them).
 * The plugin GETs `<base>/statusz` (base without a path) or the annotated URL as is; /metrics and /explain sit beside
 * /statusz on every route (stat.ts, explain-request.ts).
 */
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { DEFAULT_MESH_NAMESPACE } from '../../crds/index.ts';
import { CliError, httpStatusOf } from './errors.ts';
import type { ClusterReader } from './kube.ts';
import type { ClockReading } from './skew.ts';

/** Node annotation an agent (or an operator of the cluster) may set to its status URL. */
export const AGENT_STATUS_ANNOTATION = 'nodemesh.io/agent-status-url';
/** The agent DaemonSet (deploy/agent/daemonset.yaml): namespace, name, pod selector, health port name and number. */
export const AGENT_DAEMONSET = { namespace: DEFAULT_MESH_NAMESPACE, name: 'nodemesh-agent', selector: 'app.kubernetes.io/name=nodemesh-agent', portName: 'health', defaultPort: 9880 } as const;

/** Any function shaped like fetch for what the plugin asks agents (global fetch, the API server's authenticated one, a test's fake). */
export type AgentFetch = (url: string, init?: { signal?: AbortSignal; headers?: Record<string, string>; method?: string }) => Promise<Response>;

/**
 * How one node's agent is reached. `url` is its /statusz as requested (directly, or the API server's pods proxy);
 * without it, `error` says why there is none.
 */
export type AgentEndpoint = {
  node: string;
  via: 'flag' | 'annotation' | 'pod-proxy' | 'none';
  url?: string;
  /** The agent pod (`namespace/name`) when found through the API server. */
  pod?: string;
  /** Set when the agent pod is running but not Ready: it is still asked (its status says why), and failures mention it. */
  notReady?: string;
  error?: string;
};

/**
 * What the plugin reads from an agent's status JSON. Every field is optional; `ready` falls back to
 * `sync.ready` (the agent's /statusz today).
 */
export type AgentStatusJson = {
  node?: string;
  version?: string;
  ready?: boolean;
  /** Why not ready. */
  reason?: string;
  sync?: { ready?: boolean; synced?: boolean; lastError?: string; passes?: number; failures?: number };
  /** The NodeState set in effect. */
  nodeState?: { version?: number; contentHash?: string; shards?: number; appliedAt?: string; applySeconds?: number };
  /** BPF programs and their attachment. */
  datapath?: { programs?: { name: string; attached: boolean }[]; attachments?: { program: string; action?: string }[]; maps?: { name: string; entries: number; capacity: number }[] };
  proxy?: { listening?: boolean; listeners?: string[]; workers?: number; configVersion?: string };
  /** Workload certificates held. */
  certificates?: { identity: string; notAfter: string }[];
  kernel?: { release?: string; bpf?: boolean; cgroup2?: boolean; bpffs?: boolean };
};

/** The outcome of asking one node's agent; `clock` times the answer (its Date header) for the clock-skew check. */
export type AgentStatusResult = { node: string; url?: string; via?: AgentEndpoint['via']; pod?: string; status?: AgentStatusJson; error?: string; clock?: ClockReading };

/** Parses `node=url,node=url`. */
export function parseAgentEndpoints(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!text) return out;
  for (const part of text.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError('NM_ERR_CLI_USAGE', `--agent-endpoints: "${p}" is not node=url`);
    out.set(p.slice(0, eq), p.slice(eq + 1));
  }
  return out;
}

/** A base URL gets `/statusz`; a URL with a path is used as is. */
export function normalizeStatusUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/statusz';
    return u.toString();
  } catch {
    return url;
  }
}

/** The port the agent pod serves /statusz on: its container port named `health`, else the first declared, else the DaemonSet's. */
export function agentHealthPort(pod: V1Pod): number {
  const ports = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? []);
  return ports.find((p) => p.name === AGENT_DAEMONSET.portName)?.containerPort ?? ports[0]?.containerPort ?? AGENT_DAEMONSET.defaultPort;
}

/** The API server's pods-proxy URL of a pod's `path` (server URLs with a path prefix, as behind Rancher, keep it). */
export function podProxyUrl(server: string, namespace: string, pod: string, port: number, path: string): string {
  return `${server.replace(/\/+$/, '')}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}:${port}/proxy${path}`;
}

const isReady = (p: V1Pod): boolean => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

/** Of several agent pods on a node (a rolling update), the one to ask: not terminating, Running, Ready, newest. */
function pickAgentPod(pods: readonly V1Pod[]): V1Pod | undefined {
  const score = (p: V1Pod): number => (p.metadata?.deletionTimestamp ? 0 : 4) + (p.status?.phase === 'Running' ? 2 : 0) + (isReady(p) ? 1 : 0);
  const created = (p: V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
  return [...pods].sort((a, b) => score(b) - score(a) || created(b) - created(a))[0];
}

/** Why a pod is not Ready, from its Ready condition and waiting containers. */
function notReadyReason(p: V1Pod): string {
  const cond = p.status?.conditions?.find((c) => c.type === 'Ready');
  const waiting = (p.status?.containerStatuses ?? []).map((c) => c.state?.waiting?.reason).filter((r) => r !== undefined);
  const parts = [cond?.reason ?? (cond ? `Ready=${cond.status}` : 'no Ready condition'), ...waiting];
  return parts.join(', ');
}

/**
 * Decides how each node's agent is reached (pure; see the module comment for the order). `pods` are the agent pods
 * as listed (undefined when no node needed them or the list failed: `podsError` says why).
 */
export function planAgentEndpoints(input: { nodes: readonly V1Node[]; explicit: ReadonlyMap<string, string>; server: string; pods?: readonly V1Pod[]; podsError?: string }): Map<string, AgentEndpoint> {
  const out = new Map<string, AgentEndpoint>();
  const ds = `${AGENT_DAEMONSET.namespace}/${AGENT_DAEMONSET.name}`;
  const [selKey, selValue] = AGENT_DAEMONSET.selector.split('=') as [string, string];
  for (const n of input.nodes) {
    const node = n.metadata?.name;
    if (!node) continue;
    const flag = input.explicit.get(node);
    if (flag !== undefined) { out.set(node, { node, via: 'flag', url: normalizeStatusUrl(flag) }); continue; }
    const annotated = n.metadata?.annotations?.[AGENT_STATUS_ANNOTATION];
    if (annotated !== undefined) { out.set(node, { node, via: 'annotation', url: normalizeStatusUrl(annotated) }); continue; }
    if (!input.pods) {
      out.set(node, { node, via: 'none', error: `no agent endpoint known: ${input.podsError ?? 'the agent pods were not listed'} (or pass --agent-endpoints)` });
      continue;
    }
    const pod = pickAgentPod(input.pods.filter((p) => p.spec?.nodeName === node && p.metadata?.labels?.[selKey] === selValue));
    if (!pod) {
      out.set(node, { node, via: 'pod-proxy', error: `no agent pod on node ${node} (is the DaemonSet running? kubectl -n ${AGENT_DAEMONSET.namespace} get ds ${AGENT_DAEMONSET.name})` });
      continue;
    }
    const ns = pod.metadata?.namespace ?? AGENT_DAEMONSET.namespace;
    const name = `${ns}/${pod.metadata?.name ?? '?'}`;
    const phase = pod.status?.phase ?? 'Pending';
    if (phase !== 'Running' || !pod.status?.podIP) {
      const why = phase !== 'Running' ? `is ${phase}${pod.metadata?.deletionTimestamp ? ' and terminating' : ''}` : 'has no IP address';
      out.set(node, { node, via: 'pod-proxy', pod: name, error: `agent pod ${name} on node ${node} ${why} (${notReadyReason(pod)}): kubectl -n ${ns} describe pod ${pod.metadata?.name ?? ''}; DaemonSet ${ds}` });
      continue;
    }
    out.set(node, {
      node, via: 'pod-proxy', pod: name, url: podProxyUrl(input.server, ns, pod.metadata?.name ?? '', agentHealthPort(pod), '/statusz'),
      ...(isReady(pod) ? {} : { notReady: notReadyReason(pod) }),
    });
  }
  return out;
}

/**
 * Finds how each node's agent is reached: lists the agent pods (only when a node has neither a flag nor an annotation)
 * and plans. A failed list is a reason on the endpoints, not a throw (the other sections still show).
 */
export async function discoverAgentEndpoints(reader: ClusterReader, nodes: readonly V1Node[], explicit: ReadonlyMap<string, string>): Promise<Map<string, AgentEndpoint>> {
  const needPods = nodes.some((n) => n.metadata?.name && !explicit.has(n.metadata.name) && n.metadata.annotations?.[AGENT_STATUS_ANNOTATION] === undefined);
  let pods: V1Pod[] | undefined;
  let podsError: string | undefined;
  if (needPods) {
    if (!reader.listPods) podsError = 'this cluster reader cannot list pods';
    else {
      try {
        pods = await reader.listPods(AGENT_DAEMONSET.namespace, AGENT_DAEMONSET.selector);
      } catch (e) {
        podsError = httpStatusOf((e as Error).cause) === 403
          ? `listing the agent pods is forbidden: your user needs RBAC list on pods in namespace ${AGENT_DAEMONSET.namespace} (and get on pods/proxy there)`
          : `listing the agent pods failed: ${(e as Error).message}`;
      }
    }
  }
  return planAgentEndpoints({ nodes, explicit, server: reader.server, ...(pods ? { pods } : {}), ...(podsError ? { podsError } : {}) });
}

/** The fetch an endpoint needs: through the API server (its credentials) for the pods proxy, plain otherwise. */
export function agentFetchFor(ep: AgentEndpoint, reader: Pick<ClusterReader, 'proxyFetch'>, plain: AgentFetch = fetch): AgentFetch {
  if (ep.via !== 'pod-proxy') return plain;
  return reader.proxyFetch ?? (() => Promise.reject(new Error('this cluster reader cannot reach the API server\'s pods proxy')));
}

/** The Kubernetes Status in a body, when it is one (the API server's own answer, not the agent's). */
function statusOfBody(body: string): { message?: string; reason?: string } | undefined {
  try {
    const v = JSON.parse(body) as { kind?: unknown; apiVersion?: unknown; message?: unknown; reason?: unknown };
    if (v.kind !== 'Status' || v.apiVersion !== 'v1') return undefined;
    return { ...(typeof v.message === 'string' ? { message: v.message } : {}), ...(typeof v.reason === 'string' ? { reason: v.reason } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * Why an agent request answered `status` (pure). Through the pods proxy, an answer that is a Kubernetes Status came
 * from the API server (RBAC, a pod it cannot reach, a pod gone); anything else is the agent's own answer.
 */
export function describeAgentHttpFailure(ep: AgentEndpoint, url: string, status: number, body: string): string {
  const what = ep.pod ? `agent pod ${ep.pod}` : url;
  const st = ep.via === 'pod-proxy' ? statusOfBody(body) : undefined;
  const notReady = ep.notReady ? ` (the pod is not Ready: ${ep.notReady})` : '';
  if (!st) return `${what} answered ${status}${body.trim() ? `: ${body.trim().split('\n')[0]!.slice(0, 160)}` : ''}${notReady}`;
  if (status === 403) return `the API server refused to proxy to ${what} (403 ${st.reason ?? 'Forbidden'}: ${st.message ?? ''}): your user needs RBAC get on pods/proxy in namespace ${ep.pod?.split('/')[0] ?? AGENT_DAEMONSET.namespace}`;
  if (status === 404) return `${what} is gone (${st.message ?? 'not found'}): the DaemonSet replaced it? run the command again`;
  if (status === 502 || status === 503) return `the API server could not reach ${what}: ${st.message ?? st.reason ?? status}${notReady}`;
  return `the API server answered ${status} for ${what}: ${st.message ?? st.reason ?? ''}`;
}

/** Why an agent request failed before any answer (pure). */
export function describeAgentNetworkFailure(ep: AgentEndpoint, url: string, err: unknown, timeoutMs: number): string {
  const e = err as Error & { cause?: { code?: string } };
  const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.message);
  if (ep.via === 'pod-proxy') return `agent pod ${ep.pod ?? '?'} through the API server (${new URL(url).origin}): ${why}${ep.notReady ? ` (the pod is not Ready: ${ep.notReady})` : ''}`;
  return `${url}: ${why} (agent down, or its port unreachable from here?)`;
}

/** Fetches every agent's status in parallel, each within `timeoutMs`; failures are results, not throws. */
export async function fetchAgentStatuses(endpoints: ReadonlyMap<string, AgentEndpoint>, opts: { reader: Pick<ClusterReader, 'proxyFetch'>; timeoutMs?: number; fetchImpl?: AgentFetch }): Promise<AgentStatusResult[]> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  return Promise.all(
    [...endpoints.values()].map(async (ep): Promise<AgentStatusResult> => {
      const { node, url } = ep;
      const base = { node, via: ep.via, ...(ep.pod ? { pod: ep.pod } : {}) };
      if (!url) return { ...base, error: ep.error ?? 'no status endpoint known' };
      const f = agentFetchFor(ep, opts.reader, opts.fetchImpl);
      try {
        const sentMs = Date.now();
        const res = await f(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } });
        // Through the pods proxy the Date header is the agent's: the API server passes the pod's headers on.
        const clock: ClockReading = { sentMs, receivedMs: Date.now(), date: res.headers.get('date') ?? undefined };
        // An error answer through the pods proxy may be the API server's own (its Date, not the agent's): no clock then.
        if (!res.ok) return { ...base, url, error: describeAgentHttpFailure(ep, url, res.status, await res.text().catch(() => '')), ...(ep.via === 'pod-proxy' ? {} : { clock }) };
        return { ...base, url, status: (await res.json()) as AgentStatusJson, clock };
      } catch (e) {
        return { ...base, url, error: describeAgentNetworkFailure(ep, url, e, timeoutMs) };
      }
    }),
  );
}

/** Whether the agent says it is ready (its own field, else its sync loop's). */
export function agentReady(s: AgentStatusJson | undefined): boolean | undefined {
  return s?.ready ?? s?.sync?.ready;
}

/** Earliest certificate expiry the agent holds, in ms since the epoch. */
export function earliestCertificateExpiry(s: AgentStatusJson | undefined): number | undefined {
  const times = (s?.certificates ?? []).map((c) => Date.parse(c.notAfter)).filter((t) => !Number.isNaN(t));
  return times.length ? Math.min(...times) : undefined;
}

/** Programs attached, as `name` list (from `programs`, else from `attachments`). */
export function attachedPrograms(s: AgentStatusJson | undefined): string[] | undefined {
  if (s?.datapath?.programs) return s.datapath.programs.filter((p) => p.attached).map((p) => p.name);
  if (s?.datapath?.attachments) return s.datapath.attachments.map((a) => a.program);
  return undefined;
}

/** Highest map fill as a fraction 0..1 and the map's name. */
export function fullestMap(s: AgentStatusJson | undefined): { name: string; fill: number } | undefined {
  let best: { name: string; fill: number } | undefined;
  for (const m of s?.datapath?.maps ?? []) {
    if (!(m.capacity > 0)) continue;
    const fill = m.entries / m.capacity;
    if (!best || fill > best.fill) best = { name: m.name, fill };
  }
  return best;
}
