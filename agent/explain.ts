/**
 * `/explain` on the agent's status endpoint (read-only): why a request would be routed or denied, computed from the
 * proxy plan this agent holds with the SAME pure functions the proxy runs (l7proxy/forward.ts `prepare`):
 * normalizeTarget → matchRoute → route filters → weighted backend candidates (on the source's node), and
 * authorize on the destination workload's inbound policies (on the destination's node). Nothing here is sent or
 * changed; the random weighted choice is reported as every candidate with its share.
 */
import { authorize, type AuthzPeer, type AuthzVerdict } from '../l7proxy/authz.ts';
import type { TrafficPolicyConfig } from '../l7proxy/config.ts';
import { normalizeTarget } from '../l7proxy/normalize.ts';
import { computeRewrittenPath, matchRoute, type RouteRequest } from '../l7proxy/route.ts';
import { compileSnapshot } from '../l7proxy/snapshot.ts';
import type { ProxyPlan } from './proxy/plan-proxy.ts';

/** What `/explain` is asked (query parameters of the same names). */
export type ExplainQuery = {
  /** Source pod IP (its identity comes from this node's plan). */
  src?: string;
  /** `ip:port` the client dials (ClusterIP:port or pod IP:port): the routing question. */
  dst?: string;
  method: string;
  /** `http://host[:port]/path?query`; host is what the Host header carries. */
  url: string;
  headers: [string, string][];
  /** `ip:port` of a destination endpoint on this node: the authorization question. */
  endpoint?: string;
  /** The peer to authorize, when the source is not a pod of this node. */
  peer?: { spiffeId?: string; namespace?: string; serviceAccount?: string };
};

export type ExplainIdentity = { spiffeId: string; namespace: string; serviceAccount: string };
export type ExplainEndpoint = { ip: string; port: number; ready: boolean; node?: string; via: string };
export type ExplainBackend = { backend: string; weight: number; share: number; trafficPolicy?: TrafficPolicyConfig; endpoints: ExplainEndpoint[] };

export type ExplainRouting = {
  /** routed: forwarded to a backend; the others say why not (and the status the proxy answers). */
  outcome: 'routed' | 'redirect' | 'no-route' | 'no-backend' | 'bad-request' | 'not-meshed';
  status?: number;
  reason: string;
  service?: string;
  protocol?: string;
  path?: string;
  host?: string;
  route?: { name: string; ruleIndex: number; matchIndex: number; match?: unknown };
  filters: string[];
  /** The path and host forwarded (after URLRewrite): what the destination authorizes. */
  forwardedPath?: string;
  forwardedHost?: string;
  backends: ExplainBackend[];
};

export type ExplainAuthorization = {
  evaluated: boolean;
  endpoint: string;
  service?: string;
  /** The destination workload's identity. */
  identity?: ExplainIdentity;
  peer: AuthzPeer;
  verdict?: AuthzVerdict['verdict'];
  policy?: string;
  rule?: number;
  audit: string[];
  reason: string;
  /** Every policy applying to the destination, in evaluation terms. */
  policies: { name: string; action: string; rules: number }[];
};

export type ExplainAnswer = {
  node: string;
  planVersion: string;
  source?: { ip: string; identity?: ExplainIdentity };
  routing?: ExplainRouting;
  authorization?: ExplainAuthorization;
};

/** Parses the endpoint's query string. */
export function parseExplainQuery(q: URLSearchParams): ExplainQuery | { error: string } {
  const url = q.get('url');
  if (!url) return { error: 'url is required' };
  const headers: [string, string][] = [];
  for (const h of q.getAll('header')) {
    const i = h.indexOf(':');
    if (i <= 0) return { error: `header "${h}" is not "name: value"` };
    headers.push([h.slice(0, i).trim().toLowerCase(), h.slice(i + 1).trim()]);
  }
  const peer = q.get('peer') || q.get('peerNamespace') || q.get('peerServiceAccount')
    ? { ...(q.get('peer') ? { spiffeId: q.get('peer')! } : {}), ...(q.get('peerNamespace') ? { namespace: q.get('peerNamespace')! } : {}), ...(q.get('peerServiceAccount') ? { serviceAccount: q.get('peerServiceAccount')! } : {}) }
    : undefined;
  return {
    url, method: (q.get('method') ?? 'GET').toUpperCase(), headers,
    ...(q.get('src') ? { src: q.get('src')! } : {}), ...(q.get('dst') ? { dst: q.get('dst')! } : {}),
    ...(q.get('endpoint') ? { endpoint: q.get('endpoint')! } : {}), ...(peer ? { peer } : {}),
  };
}

const key = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

function splitUrl(url: string): { target: string; authority: string } | undefined {
  try {
    const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`);
    // URL() resolves dot segments and re-encodes: take the raw path from the text so normalization sees what a client sends.
    const afterAuthority = url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').replace(/^[^/?#]*/, '');
    const target = afterAuthority === '' ? '/' : afterAuthority.startsWith('?') ? `/${afterAuthority}` : afterAuthority;
    return { target, authority: u.host };
  } catch {
    return undefined;
  }
}

/** The explanation of `q` from this node's proxy plan (pure). */
export function computeExplanation(node: string, plan: ProxyPlan, q: ExplainQuery): ExplainAnswer {
  const answer: ExplainAnswer = { node, planVersion: plan.version };
  const idOf = (ip: string): ExplainIdentity | undefined => {
    const s = plan.identities[ip];
    return s ? { spiffeId: s.spiffeId, namespace: s.namespace, serviceAccount: s.serviceAccount } : undefined;
  };
  if (q.src) {
    const identity = idOf(q.src);
    answer.source = { ip: q.src, ...(identity ? { identity } : {}) };
  }
  const parts = splitUrl(q.url);
  const hostHeader = q.headers.find(([n]) => n === 'host')?.[1] ?? parts?.authority ?? '';
  let forwardedPath: string | undefined;
  let forwardedHost: string | undefined;
  if (q.dst) {
    const out = compileSnapshot(plan.outbound);
    const svc = out.services.get(q.dst);
    const r: ExplainRouting = { outcome: 'routed', reason: '', filters: [], backends: [] };
    answer.routing = r;
    const n = parts ? normalizeTarget(parts.target, [hostHeader]) : { ok: false as const, reason: `"${q.url}" is not a URL` };
    if (!svc) {
      Object.assign(r, { outcome: 'not-meshed', reason: `${q.dst} is not a mesh destination of this node's proxy: the datapath sends it straight to the Service's endpoints (no routes, no policies on this side)` });
    } else if (!n.ok) {
      Object.assign(r, { outcome: 'bad-request', status: 400, service: svc.config.name, protocol: svc.config.protocol, reason: `the proxy refuses the request target: ${n.reason}` });
    } else {
      r.service = svc.config.name;
      r.protocol = svc.config.protocol;
      r.path = n.value.path;
      r.host = n.value.host;
      let path = n.value.path;
      let host = n.value.host;
      let backendRefs: { backend: string; weight?: number }[] | undefined = [{ backend: svc.config.defaultBackend }];
      if (svc.config.protocol === 'tcp') {
        r.reason = 'opaque TCP: no HTTP routing, every connection goes to the default backend';
      } else if (svc.routes.length === 0) {
        r.reason = 'no HTTPRoute attached: the Service\'s default backend';
      } else {
        const query = new URLSearchParams(n.value.query ?? '');
        const req: RouteRequest = { method: q.method, path, header: (name) => { const v = q.headers.filter(([hn]) => hn === name).map(([, hv]) => hv); return v.length ? v.join(', ') : undefined; }, query };
        const c = matchRoute(svc.routes, req);
        if (!c) {
          Object.assign(r, { outcome: 'no-route', status: 404, reason: 'no route rule matches (the proxy answers 404)' });
          backendRefs = undefined;
        } else {
          r.route = { name: c.routeName, ruleIndex: c.ruleIndex, matchIndex: c.matchIndex, ...(c.rule.matches?.[c.matchIndex] ? { match: c.rule.matches[c.matchIndex] } : {}) };
          r.reason = `matched ${c.routeName} rule ${c.ruleIndex}`;
          for (const f of c.rule.filters ?? []) {
            r.filters.push(f.type);
            if (f.type === 'URLRewrite') {
              path = computeRewrittenPath(path, f.urlRewrite.path, c.prefix);
              if (f.urlRewrite.hostname) host = f.urlRewrite.hostname;
            }
            if (f.type === 'RequestRedirect') {
              Object.assign(r, { outcome: 'redirect', status: f.requestRedirect.statusCode ?? 302, reason: `${c.routeName} rule ${c.ruleIndex} redirects` });
              backendRefs = undefined;
              break;
            }
          }
          if (backendRefs) backendRefs = c.rule.backendRefs;
        }
      }
      if (backendRefs) {
        const total = backendRefs.reduce((s, b) => s + (b.weight ?? 1), 0);
        if (total <= 0) {
          Object.assign(r, { outcome: 'no-backend', status: 500, reason: 'the rule has no backend with a positive weight (the proxy answers 500)' });
        } else {
          forwardedPath = path;
          forwardedHost = host;
          r.forwardedPath = path;
          r.forwardedHost = host;
          for (const b of backendRefs) {
            const cfg = out.backends.get(b.backend);
            const weight = b.weight ?? 1;
            r.backends.push({
              backend: b.backend, weight, share: weight / total,
              ...(cfg?.trafficPolicy ? { trafficPolicy: cfg.trafficPolicy } : {}),
              endpoints: (cfg?.endpoints ?? []).map((e) => {
                const via = plan.endpoints[key(e.ip, e.port)];
                return { ip: e.ip, port: e.port, ready: e.ready, ...(e.nodeName ? { node: e.nodeName } : {}), via: via ? (via.via === 'hbone' ? `hbone ${via.node}` : via.via) : 'plain' };
              }),
            });
          }
          if (r.backends.every((b) => b.weight === 0 || b.endpoints.every((e) => !e.ready))) Object.assign(r, { outcome: 'no-backend', status: 503, reason: `${r.reason}; but no ready endpoint (the proxy answers 503)` });
        }
      }
    }
  }
  if (q.endpoint) {
    const inbound = compileSnapshot(plan.inbound);
    const svc = inbound.services.get(q.endpoint);
    const local = answer.source?.identity;
    const p = q.peer ?? local;
    const peer: AuthzPeer = { ...(p?.spiffeId ? { spiffeId: p.spiffeId } : {}), ...(p?.namespace ? { namespace: p.namespace } : {}), ...(p?.serviceAccount ? { serviceAccount: p.serviceAccount } : {}), authenticated: !!p?.spiffeId };
    const epIp = q.endpoint.startsWith('[') ? q.endpoint.slice(1, q.endpoint.indexOf(']')) : q.endpoint.slice(0, q.endpoint.lastIndexOf(':'));
    const port = Number(q.endpoint.slice(q.endpoint.lastIndexOf(':') + 1));
    const identity = idOf(epIp);
    const a: ExplainAuthorization = { evaluated: false, endpoint: q.endpoint, ...(identity ? { identity } : {}), peer, audit: [], reason: '', policies: [] };
    answer.authorization = a;
    if (!svc) {
      a.reason = `${q.endpoint} is not a meshed pod port of node ${node}: no inbound policy runs for it here`;
    } else {
      a.service = svc.config.name;
      a.policies = svc.policies.map((x) => ({ name: x.name, action: x.action, rules: x.rules.length }));
      let path = forwardedPath;
      let host = forwardedHost;
      if (path === undefined && parts) {
        const n = normalizeTarget(parts.target, [hostHeader]);
        if (!n.ok) { a.reason = `the proxy refuses the request target: ${n.reason}`; return answer; }
        path = n.value.path;
        host = n.value.host;
      }
      // As the proxy: opaque TCP is authorized on the port alone (l7proxy/proxy.ts), HTTP on what is forwarded.
      const v = svc.config.protocol === 'tcp' ? authorize({ port }, peer, svc.policies) : authorize({ method: q.method, ...(path !== undefined ? { normalizedPath: path } : {}), ...(host ? { host } : {}), port }, peer, svc.policies);
      Object.assign(a, { evaluated: true, verdict: v.verdict, ...(v.policy ? { policy: v.policy } : {}), ...(v.rule !== undefined ? { rule: v.rule } : {}), audit: [...v.audit], reason: v.reason });
    }
  }
  return answer;
}
