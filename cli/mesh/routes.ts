/**
 * `kubectl mesh routes [SERVICE]`: HTTPRoutes with their parents, per-rule matches and weighted backends and
 * nodemesh's conditions; with a SERVICE, also the policies that target it and what each node has programmed.
 */
import { AuthorizationPolicyResource, HTTPRouteResource, NodeStateResource, TrafficPolicyResource, type HTTPRouteMatch, type HTTPRouteRule, type ParentReference } from '../../crds/index.ts';
import type { ClusterReader, KubeObject } from './kube.ts';
import { formatConditionCell, formatParentRef, groupNodeStates, policyConditions, routeParentConditions, summarizeConditions } from './mesh-objects.ts';
import { formatJson, formatTable, indent, type OutputFormat } from './output.ts';

/** One rule of a route, as shown. */
export type RuleView = { index: number; name?: string; matches: string[]; backends: { namespace: string; name: string; port?: number; weight: number }[] };

/** One route, as shown. */
export type RouteView = {
  namespace: string;
  name: string;
  parents: string[];
  hostnames: string[];
  rules: RuleView[];
  conditions: Record<string, { status: string; reason: string; message: string } | undefined>;
};

/** What a node has programmed for a service (from its NodeState set). */
export type NodeProgramView = { node: string; port: number; mode: string; mtlsMode: string; routes: string[]; trafficPolicy: boolean };

/** A policy attached to a service. */
export type PolicyView = { kind: string; namespace: string; name: string; accepted: string };

/** The whole answer of `routes`. */
export type RoutesView = { service?: { namespace: string; name: string }; routes: RouteView[]; policies?: PolicyView[]; nodes?: NodeProgramView[]; warnings: string[] };

/** `PathPrefix /api GET header:x-canary=1 query:v=2`. */
export function formatMatch(m: HTTPRouteMatch | undefined): string {
  const parts: string[] = [];
  const p = m?.path;
  parts.push(`${p?.type ?? 'PathPrefix'} ${p?.value ?? '/'}`);
  if (m?.method) parts.push(m.method);
  for (const h of m?.headers ?? []) parts.push(`header:${h.name}${h.type === 'RegularExpression' ? '~' : '='}${h.value}`);
  for (const q of m?.queryParams ?? []) parts.push(`query:${q.name}${q.type === 'RegularExpression' ? '~' : '='}${q.value}`);
  return parts.join(' ');
}

function parentNamesService(ref: ParentReference, routeNs: string, svc: { namespace: string; name: string }): boolean {
  const isService = (ref.kind ?? 'Gateway') === 'Service' && (ref.group ?? 'gateway.networking.k8s.io') === '';
  return isService && ref.name === svc.name && (ref.namespace ?? routeNs) === svc.namespace;
}

/** Builds the view of one route (pure). */
export function computeRouteView(route: KubeObject): RouteView {
  const ns = route.metadata?.namespace ?? '';
  const spec = (route.spec ?? {}) as { parentRefs?: ParentReference[]; hostnames?: string[]; rules?: HTTPRouteRule[] };
  const parentStatuses = routeParentConditions(route);
  const summary = summarizeConditions(parentStatuses.map((p) => p.conditions));
  return {
    namespace: ns,
    name: route.metadata?.name ?? '',
    parents: (spec.parentRefs ?? []).map((r) => formatParentRef(r, ns)),
    hostnames: spec.hostnames ?? [],
    rules: (spec.rules ?? []).map((r, index) => ({
      index,
      ...(r.name ? { name: r.name } : {}),
      matches: (r.matches && r.matches.length > 0 ? r.matches : [undefined]).map(formatMatch),
      backends: (r.backendRefs ?? []).map((b) => ({ namespace: b.namespace ?? ns, name: b.name, ...(b.port !== undefined ? { port: b.port } : {}), weight: b.weight ?? 1 })),
    })),
    conditions: Object.fromEntries(Object.entries(summary).map(([t, c]) => [t, c ? { status: c.status, reason: c.reason, message: c.message } : undefined])),
  };
}

/** Builds the answer of `routes` from what was read (pure). */
export function computeRoutesView(input: { routes: readonly KubeObject[]; service?: { namespace: string; name: string }; trafficPolicies?: readonly KubeObject[]; authorizationPolicies?: readonly KubeObject[]; nodeStates?: readonly KubeObject[]; warnings?: string[] }): RoutesView {
  const svc = input.service;
  const routes = input.routes
    .filter((r) => !svc || ((r.spec?.parentRefs as ParentReference[] | undefined) ?? []).some((p) => parentNamesService(p, r.metadata?.namespace ?? '', svc)))
    .map(computeRouteView)
    .sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  const view: RoutesView = { routes, warnings: input.warnings ?? [] };
  if (!svc) return view;
  view.service = svc;
  const targets = (o: KubeObject): boolean =>
    o.metadata?.namespace === svc.namespace && ((o.spec?.targetRefs as { kind?: string; name?: string }[] | undefined) ?? []).some((t) => t.kind === 'Service' && t.name === svc.name);
  view.policies = [
    ...(input.trafficPolicies ?? []).filter(targets).map((o) => ({ kind: 'TrafficPolicy', o })),
    ...(input.authorizationPolicies ?? []).filter(targets).map((o) => ({ kind: 'AuthorizationPolicy', o })),
  ].map(({ kind, o }) => ({ kind, namespace: o.metadata?.namespace ?? '', name: o.metadata?.name ?? '', accepted: formatConditionCell(policyConditions(o).find((c) => c.type === 'Accepted')) }));
  view.nodes = [];
  for (const set of groupNodeStates(input.nodeStates ?? []).values()) {
    for (const s of set.services) {
      if (s.namespace !== svc.namespace || s.name !== svc.name) continue;
      for (const p of s.ports) {
        view.nodes.push({ node: set.node, port: p.port, mode: p.mode, mtlsMode: s.mtlsMode, routes: [...new Set(p.routes.map((r) => r.route))], trafficPolicy: p.trafficPolicy !== undefined || p.routes.some((r) => r.trafficPolicy !== undefined) });
      }
    }
  }
  return view;
}

function backendCell(r: RuleView): string {
  if (r.backends.length === 0) return '<none>';
  return r.backends.map((b) => `${b.name}${b.port !== undefined ? `:${b.port}` : ''}=${b.weight}`).join(',');
}

/** Renders the answer as tables (one row per route rule). */
export function formatRoutesView(v: RoutesView, format: OutputFormat): string {
  if (format === 'json') return formatJson(v);
  let out = '';
  for (const w of v.warnings) out += `Warning: ${w}\n`;
  if (v.routes.length === 0) out += v.service ? `No HTTPRoutes attach to Service ${v.service.namespace}/${v.service.name}.\n` : 'No HTTPRoutes found.\n';
  else {
    const rows: string[][] = [];
    for (const r of v.routes) {
      const cond = (t: string): string => {
        const c = r.conditions[t];
        return c ? (c.status === 'True' ? 'True' : `${c.status} (${c.reason})`) : '-';
      };
      const rules = r.rules.length > 0 ? r.rules : [{ index: 0, matches: ['PathPrefix /'], backends: [] } as RuleView];
      for (const rule of rules) {
        rows.push([r.namespace, r.name, r.parents.join(','), String(rule.index), rule.matches.join(' | '), backendCell(rule), cond('Accepted'), cond('ResolvedRefs'), cond('Programmed')]);
      }
    }
    out += formatTable(['namespace', 'route', 'parents', 'rule', 'matches', 'backends', 'accepted', 'resolvedrefs', 'programmed'], rows);
  }
  if (v.policies) {
    out += '\nPolicies:\n';
    out += v.policies.length === 0 ? '  <none>\n' : indent(formatTable(['kind', 'namespace', 'name', 'accepted'], v.policies.map((p) => [p.kind, p.namespace, p.name, p.accepted])));
  }
  if (v.nodes) {
    out += '\nProgrammed on nodes:\n';
    out += v.nodes.length === 0 ? '  <none> (no NodeState lists this Service: it stays L4, or the operator has not written it yet)\n' : indent(formatTable(['node', 'port', 'mode', 'mtls', 'routes', 'trafficpolicy'], v.nodes.map((n) => [n.node, String(n.port), n.mode, n.mtlsMode, n.routes.join(',') || '<service>', n.trafficPolicy ? 'yes' : 'no'])));
  }
  return out;
}

/** Reads what `routes` needs and renders it. */
export async function runRoutes(reader: ClusterReader, opts: { namespace: string | undefined; service?: string; format: OutputFormat }): Promise<string> {
  const warnings: string[] = [];
  const routes = await reader.listCustom(HTTPRouteResource, opts.namespace);
  if (routes === undefined) warnings.push('HTTPRoute (gateway.networking.k8s.io/v1) is not served: install the Gateway API CRDs (see deploy/README.md)');
  if (!opts.service) return formatRoutesView(computeRoutesView({ routes: routes ?? [], warnings }), opts.format);
  const ns = opts.namespace ?? 'default';
  const [tps, aps, nss] = await Promise.all([reader.listCustom(TrafficPolicyResource, ns), reader.listCustom(AuthorizationPolicyResource, ns), reader.listCustom(NodeStateResource)]);
  // Routes in other namespaces may attach to this Service (consumer routes): list them all, filter by parent.
  const allRoutes = opts.namespace === undefined ? routes : await reader.listCustom(HTTPRouteResource);
  return formatRoutesView(computeRoutesView({ routes: allRoutes ?? [], service: { namespace: ns, name: opts.service }, trafficPolicies: tps ?? [], authorizationPolicies: aps ?? [], nodeStates: nss ?? [], warnings }), opts.format);
}
