/**
 * `kubectl mesh explain FROM-POD URL [--method M] [-H 'name: value']...`: why a request would be routed or denied.
 * The evaluation lives in the agents (agent/explain.ts, GET <agent>/explain): the source pod's node agent answers
 * the routing question (route, filters, weighted backends, endpoints, traffic policy) with the proxy's own
 * functions; each chosen endpoint's node agent answers the authorization question on the destination workload.
 * This file resolves the pod and the URL's Service through the API, asks the agents, and renders the answer.
 */
import type { V1Service } from '@kubernetes/client-node';
import type { ExplainAnswer, ExplainAuthorization, ExplainIdentity, ExplainRouting } from '../../agent/explain.ts';
import { agentFetchFor, describeAgentHttpFailure, describeAgentNetworkFailure, discoverAgentEndpoints, type AgentEndpoint, type AgentFetch } from './agent-status.ts';
import { CliError } from './errors.ts';
import type { ClusterReader } from './kube.ts';
import { formatJson, formatTable, indent, type OutputFormat } from './output.ts';

/** Endpoints authorized at most (one question to a node agent each). */
const MAX_ENDPOINTS = 8;

export type RequestVerdict = 'ALLOW' | 'DENY' | 'PARTIAL' | 'NOT_ROUTED' | 'UNKNOWN';

/** The answer of `explain FROM-POD URL`. */
export type RequestExplanation = {
  request: { method: string; url: string; headers: string[] };
  source: { pod: string; namespace: string; ip: string; node: string; identity?: ExplainIdentity };
  destination: { address: string; service?: string; clusterIP?: string };
  routing?: ExplainRouting & { node: string };
  authorization: (ExplainAuthorization & { node: string; error?: string })[];
  verdict: RequestVerdict;
  reason: string;
  notes: string[];
};

/** Splits `http://host[:port]/...` (scheme optional) into host and port. */
export function parseRequestUrl(url: string): { url: string; host: string; port: number | undefined } {
  const full = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
  let u: URL;
  try { u = new URL(full); } catch { throw new CliError('NM_ERR_CLI_USAGE', `explain: "${url}" is not a URL (e.g. http://echo.default:8080/path)`); }
  if (u.protocol !== 'http:') throw new CliError('NM_ERR_CLI_USAGE', `explain: ${u.protocol} URLs are not explained: the mesh routes plain http:// requests (mTLS is its own)`);
  return { url: full, host: u.hostname.replace(/^\[|\]$/g, '').toLowerCase(), port: u.port ? Number(u.port) : undefined };
}

/** The Service a URL host names (`name`, `name.ns`, `name.ns.svc[.cluster.local]`, or a ClusterIP), and the port dialled. Pure. */
export function resolveDestination(host: string, port: number | undefined, services: readonly V1Service[], podNamespace: string): { address: string; service?: V1Service } {
  const isIp = /^[0-9.]+$/.test(host) || host.includes(':');
  const svc = isIp
    ? services.find((s) => s.spec?.clusterIP === host || (s.spec?.clusterIPs ?? []).includes(host))
    : (() => {
        const labels = host.replace(/\.$/, '').split('.');
        const name = labels[0];
        const ns = labels.length > 1 ? labels[1] : podNamespace;
        if (labels.length > 2 && labels[2] !== 'svc') return undefined;
        return services.find((s) => s.metadata?.name === name && s.metadata?.namespace === ns);
      })();
  if (!svc) {
    if (isIp) return { address: `${host.includes(':') ? `[${host}]` : host}:${port ?? 80}` };
    throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: no Service for host "${host}" (write service, service.namespace or a ClusterIP)`);
  }
  const ports = svc.spec?.ports ?? [];
  const p = port ?? (ports.some((x) => x.port === 80) ? 80 : ports[0]?.port);
  if (p === undefined) throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: Service ${svc.metadata?.namespace}/${svc.metadata?.name} has no ports`);
  if (!ports.some((x) => x.port === p)) throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: Service ${svc.metadata?.namespace}/${svc.metadata?.name} has no port ${p} (ports: ${ports.map((x) => x.port).join(', ')})`);
  const ip = svc.spec?.clusterIP;
  if (!ip || ip === 'None') throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: Service ${svc.metadata?.namespace}/${svc.metadata?.name} is headless: dial a pod address instead`);
  return { address: `${ip.includes(':') ? `[${ip}]` : ip}:${p}`, service: svc };
}

/** The overall verdict from the routing and authorization answers. Pure. */
export function computeRequestVerdict(routing: ExplainRouting | undefined, authz: readonly (ExplainAuthorization & { error?: string })[]): { verdict: RequestVerdict; reason: string } {
  if (!routing) return { verdict: 'UNKNOWN', reason: 'the source node\'s agent gave no routing answer' };
  if (routing.outcome !== 'routed' && routing.outcome !== 'not-meshed') return { verdict: 'NOT_ROUTED', reason: `${routing.outcome}${routing.status ? ` (${routing.status})` : ''}: ${routing.reason}` };
  const decided = authz.filter((a) => a.evaluated && a.verdict);
  if (decided.length === 0) return { verdict: 'UNKNOWN', reason: authz.find((a) => a.error)?.error ?? authz[0]?.reason ?? 'no destination endpoint could be asked' };
  const denied = decided.filter((a) => a.verdict === 'deny');
  const first = denied[0] ?? decided[0]!;
  const by = first.policy ? ` by ${first.policy}${first.rule !== undefined ? ` rule ${first.rule}` : ''}` : '';
  if (denied.length === 0) return { verdict: 'ALLOW', reason: `allowed${by} (${first.reason})` };
  if (denied.length === decided.length) return { verdict: 'DENY', reason: `denied${by} (${first.reason}): the destination's proxy answers 403` };
  return { verdict: 'PARTIAL', reason: `${denied.length} of ${decided.length} endpoints deny${by} (${first.reason})` };
}

const explainUrl = (statusUrl: string): string => {
  const u = new URL(statusUrl);
  u.pathname = u.pathname.replace(/\/statusz$/, '') .replace(/\/$/, '') + '/explain';
  u.search = '';
  return u.toString();
};

async function askAgent(ep: AgentEndpoint, params: URLSearchParams, fetchImpl: AgentFetch): Promise<ExplainAnswer> {
  const base = explainUrl(ep.url!);
  const url = `${base}?${params.toString()}`;
  let res: Response;
  try {
    res = await fetchImpl(url, { signal: AbortSignal.timeout(5000), headers: { accept: 'application/json' } });
  } catch (e) {
    throw new Error(describeAgentNetworkFailure(ep, base, e, 5000));
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`${describeAgentHttpFailure(ep, base, res.status, text)}${res.status === 404 && !ep.pod ? ' (an agent without /explain: older version?)' : ''}`);
  return JSON.parse(text) as ExplainAnswer;
}

/** Resolves, asks the agents, and returns the explanation. */
export async function explainRequest(reader: ClusterReader, opts: { pod: string; namespace: string; url: string; method?: string; headers?: readonly string[]; agentEndpoints: ReadonlyMap<string, string>; fetchImpl?: AgentFetch }): Promise<RequestExplanation> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const headers = [...(opts.headers ?? [])];
  for (const h of headers) if (h.indexOf(':') <= 0) throw new CliError('NM_ERR_CLI_USAGE', `explain: -H "${h}" is not "name: value"`);
  const target = parseRequestUrl(opts.url);
  if (!reader.getPod) throw new CliError('NM_ERR_CLI_NOT_AVAILABLE', 'explain: this cluster reader cannot read pods');
  const [podNs, podName] = opts.pod.includes('/') ? opts.pod.split('/', 2) as [string, string] : [opts.namespace, opts.pod.replace(/^pods?\//, '')];
  const pod = await reader.getPod(podNs, podName);
  if (!pod) throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: pod ${podNs}/${podName} not found (wrong namespace? pass -n)`);
  const ip = pod.status?.podIP;
  const node = pod.spec?.nodeName;
  if (!ip || !node) throw new CliError('NM_ERR_CLI_NOT_FOUND', `explain: pod ${podNs}/${podName} has ${!node ? 'no node yet (pending?)' : 'no IP yet'}`);
  const dest = resolveDestination(target.host, target.port, await reader.listServices(), podNs);
  const endpoints = await discoverAgentEndpoints(reader, await reader.listNodes(), opts.agentEndpoints);
  const agentOf = (n: string): AgentEndpoint => {
    const ep = endpoints.get(n);
    if (!ep?.url) throw new Error(ep?.error ?? `node ${n} is not a Node of this cluster`);
    return ep;
  };
  const f = (ep: AgentEndpoint): AgentFetch => agentFetchFor(ep, reader, opts.fetchImpl);
  const view: RequestExplanation = {
    request: { method, url: target.url, headers },
    source: { pod: podName, namespace: podNs, ip, node },
    destination: { address: dest.address, ...(dest.service ? { service: `${dest.service.metadata?.namespace}/${dest.service.metadata?.name}`, clusterIP: dest.service.spec?.clusterIP } : {}) },
    authorization: [], verdict: 'UNKNOWN', reason: '', notes: [],
  };
  const base = (): URLSearchParams => {
    const p = new URLSearchParams({ method });
    for (const h of headers) p.append('header', h);
    return p;
  };
  // 1. routing, on the source's node
  const q = base();
  q.set('url', target.url);
  q.set('src', ip);
  q.set('dst', dest.address);
  let routed: ExplainAnswer;
  try {
    const ep = agentOf(node);
    routed = await askAgent(ep, q, f(ep));
  } catch (e) {
    throw new CliError('NM_ERR_CLI_NOT_AVAILABLE', `explain: the agent of ${node} (the source's node): ${(e as Error).message}`);
  }
  if (routed.source?.identity) view.source.identity = routed.source.identity;
  else view.notes.push(`${ip} is not a meshed workload of ${node}'s NodeState: its requests carry no identity (policies naming identities do not match it)`);
  if (routed.routing) view.routing = { ...routed.routing, node };
  // 2. authorization, on each chosen endpoint's node
  const r = routed.routing;
  if (r?.outcome === 'routed') {
    const eps = r.backends.filter((b) => b.weight > 0).flatMap((b) => b.endpoints.filter((e) => e.ready));
    const distinct = [...new Map(eps.map((e) => [`${e.ip}:${e.port}`, e])).values()];
    if (distinct.length > MAX_ENDPOINTS) view.notes.push(`${distinct.length} ready endpoints; authorization asked for the first ${MAX_ENDPOINTS}`);
    view.authorization = await Promise.all(distinct.slice(0, MAX_ENDPOINTS).map(async (e) => {
      const epKey = e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
      const epNode = e.node ?? node;
      const p = base();
      p.set('url', `http://${r.forwardedHost ?? target.host}${r.forwardedPath ?? '/'}`);
      p.set('endpoint', epKey);
      const id = routed.source?.identity;
      if (id) { p.set('peer', id.spiffeId); p.set('peerNamespace', id.namespace); p.set('peerServiceAccount', id.serviceAccount); }
      try {
        const ep = agentOf(epNode);
        const a = await askAgent(ep, p, f(ep));
        return { ...(a.authorization ?? { evaluated: false, endpoint: epKey, peer: { authenticated: false }, audit: [], reason: 'no authorization answer', policies: [] }), node: epNode };
      } catch (err) {
        return { evaluated: false, endpoint: epKey, peer: { authenticated: !!id }, audit: [], reason: 'agent not asked', policies: [], node: epNode, error: `agent of ${epNode}: ${(err as Error).message}` };
      }
    }));
  }
  Object.assign(view, computeRequestVerdict(view.routing, view.authorization));
  return view;
}

const pct = (x: number): string => `${Math.round(x * 1000) / 10}%`;

function describeMatch(m: unknown): string {
  const x = m as { path?: { type: string; value: string }; method?: string; headers?: { name: string; value: string }[]; queryParams?: { name: string; value: string }[] } | undefined;
  if (!x) return '';
  const parts = [x.path ? `${x.path.type} ${x.path.value}` : 'PathPrefix /'];
  if (x.method) parts.push(`method ${x.method}`);
  for (const h of x.headers ?? []) parts.push(`header ${h.name}=${h.value}`);
  for (const q of x.queryParams ?? []) parts.push(`query ${q.name}=${q.value}`);
  return parts.join(', ');
}

function describePolicy(tp: object | undefined): string {
  if (!tp) return '-';
  return Object.entries(tp).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' ');
}

/** Renders the explanation: sections and tables, or JSON. Pure. */
export function formatRequestExplanation(v: RequestExplanation, format: OutputFormat): string {
  if (format === 'json') return formatJson(v);
  let out = `Request:      ${v.request.method} ${v.request.url}${v.request.headers.length ? `  (${v.request.headers.join('; ')})` : ''}\n`;
  out += `Source:       pod ${v.source.namespace}/${v.source.pod} (${v.source.ip}) on ${v.source.node}\n`;
  out += `              identity ${v.source.identity?.spiffeId ?? '<none: not a meshed workload>'}\n`;
  out += `Destination:  ${v.destination.service ? `Service ${v.destination.service} (${v.destination.address})` : v.destination.address}\n`;
  const r = v.routing;
  out += `\nRouting (proxy of ${r?.node ?? v.source.node}):\n`;
  if (!r) out += '  <no answer>\n';
  else {
    const lines: string[][] = [['outcome', `${r.outcome}${r.status ? ` (${r.status})` : ''}`]];
    if (r.service) lines.push(['destination', `${r.service} (${r.protocol})`]);
    if (r.path) lines.push(['normalized', `${r.host ?? ''}${r.path}`]);
    if (r.route) lines.push(['route', `${r.route.name} rule ${r.route.ruleIndex} match ${r.route.matchIndex}${r.route.match ? ` (${describeMatch(r.route.match)})` : ''}`]);
    if (r.filters.length) lines.push(['filters', r.filters.join(', ')]);
    if (r.forwardedPath && (r.forwardedPath !== r.path || r.forwardedHost !== r.host)) lines.push(['forwarded', `${r.forwardedHost ?? ''}${r.forwardedPath}`]);
    lines.push(['why', r.reason]);
    out += lines.map(([k, val]) => `  ${`${k}:`.padEnd(13)}${val}\n`).join('');
    if (r.backends.length) {
      out += '\n  Backends:\n';
      out += indent(formatTable(['backend', 'weight', 'share', 'endpoints', 'traffic policy'], r.backends.map((b) => [
        b.backend, String(b.weight), pct(b.share),
        b.endpoints.length ? b.endpoints.map((e) => `${e.ip}:${e.port}${e.ready ? '' : '(not ready)'}@${e.node ?? '?'} via ${e.via}`).join(', ') : '<none>',
        describePolicy(b.trafficPolicy),
      ])), '    ');
    }
  }
  out += '\nAuthorization (destination\'s proxy):\n';
  if (v.authorization.length === 0) out += '  <not evaluated: the request is not forwarded to an endpoint>\n';
  else {
    out += indent(formatTable(['endpoint', 'node', 'workload identity', 'verdict', 'policy', 'rule', 'reason'], v.authorization.map((a) => [
      a.endpoint, a.node, a.identity?.spiffeId ?? '-', a.evaluated ? (a.verdict ?? '-').toUpperCase() : 'NOT EVALUATED',
      a.policy ?? '-', a.rule === undefined ? '-' : String(a.rule), a.error ?? a.reason,
    ])));
    const pols = [...new Map(v.authorization.flatMap((a) => a.policies).map((p) => [p.name, p])).values()];
    out += `  policies applied: ${pols.length ? pols.map((p) => `${p.name} (${p.action}, ${p.rules} rule${p.rules === 1 ? '' : 's'})`).join(', ') : '<none: allowed by default>'}\n`;
    const audit = [...new Set(v.authorization.flatMap((a) => a.audit))];
    if (audit.length) out += `  audit: ${audit.join(', ')}\n`;
  }
  out += `\nVerdict:      ${v.verdict} — ${v.reason}\n`;
  for (const n of v.notes) out += `Note: ${n}\n`;
  return out;
}
