/**
 * `kubectl mesh explain KIND/NAME`: an object's status conditions with their reasons and messages, whether
 * the operator has seen its latest generation, and where it is programmed: which nodes' NodeState entries
 * were compiled from it (source tags `Kind/namespace/name@generation`), and at which generation.
 */
import { AuthorizationPolicyResource, HTTPRouteResource, MeshTLSPolicyResource, NodeStateResource, TrafficPolicyResource, type Condition } from '../../crds/index.ts';
import { CliError } from './errors.ts';
import type { ClusterReader, KubeObject, ResourceRef } from './kube.ts';
import { groupNodeStates, parseSourceTag, policyConditions, routeParentConditions } from './mesh-objects.ts';
import { formatJson, formatTable, indent, type OutputFormat } from './output.ts';
import { runRoutes } from './routes.ts';

type KindInfo = { kind: string; res?: ResourceRef; namespaced: boolean };

const KINDS: Record<string, KindInfo> = {};
for (const [aliases, info] of [
  [['httproute', 'httproutes', 'hr'], { kind: 'HTTPRoute', res: HTTPRouteResource, namespaced: true }],
  [['meshtlspolicy', 'meshtlspolicies', 'mtls'], { kind: 'MeshTLSPolicy', res: MeshTLSPolicyResource, namespaced: true }],
  [['trafficpolicy', 'trafficpolicies', 'tp'], { kind: 'TrafficPolicy', res: TrafficPolicyResource, namespaced: true }],
  [['authorizationpolicy', 'authorizationpolicies', 'authz', 'ap'], { kind: 'AuthorizationPolicy', res: AuthorizationPolicyResource, namespaced: true }],
  [['nodestate', 'nodestates', 'nst'], { kind: 'NodeState', res: NodeStateResource, namespaced: false }],
  [['service', 'services', 'svc'], { kind: 'Service', namespaced: true }],
] as const) {
  for (const a of aliases) KINDS[a] = info;
}

/** Where one node holds entries compiled from the object. */
export type ProgrammedView = { node: string; entry: string; generation: number; current: boolean };

/** The answer of `explain`. */
export type ExplainView = {
  kind: string;
  namespace?: string;
  name: string;
  generation?: number;
  /** Condition groups: one for a policy, one per parent for a route. */
  conditionGroups: { title: string; conditions: Condition[] }[];
  /** Set when the status is older than the object. */
  staleStatus?: string;
  programmed: ProgrammedView[];
  notes: string[];
};

/** Parses `kind/name` (kubectl's shorthand) into the kind's info and name. */
export function parseKindName(arg: string): { info: KindInfo; name: string } {
  const slash = arg.indexOf('/');
  if (slash <= 0 || slash === arg.length - 1) throw new CliError('NM_ERR_CLI_USAGE', `explain: "${arg}" is not KIND/NAME (e.g. httproute/reviews, trafficpolicy/reviews, svc/reviews)`);
  const kindArg = arg.slice(0, slash).toLowerCase().replace(/\..*$/, '');
  const info = KINDS[kindArg];
  if (!info) throw new CliError('NM_ERR_CLI_USAGE', `explain: unknown kind "${arg.slice(0, slash)}"; known: httproute, meshtlspolicy, trafficpolicy, authorizationpolicy, service, nodestate`);
  return { info, name: arg.slice(slash + 1) };
}

/** Builds the answer for a mesh object from it and the NodeStates (pure). */
export function computeExplainView(kind: string, obj: KubeObject, nodeStates: readonly KubeObject[]): ExplainView {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  const generation = obj.metadata?.generation;
  const view: ExplainView = { kind, ...(ns ? { namespace: ns } : {}), name, ...(generation !== undefined ? { generation } : {}), conditionGroups: [], programmed: [], notes: [] };
  if (kind === 'HTTPRoute') {
    const parents = routeParentConditions(obj);
    view.conditionGroups = parents.map((p) => ({ title: `parent ${p.parent}`, conditions: p.conditions }));
    if (parents.length === 0) view.notes.push('no status from nodemesh.io/operator: is the operator running, and does a parentRef name a Service (group: "", kind: Service)?');
  } else if (kind !== 'NodeState') {
    view.conditionGroups = [{ title: 'conditions', conditions: policyConditions(obj) }];
    if (policyConditions(obj).length === 0) view.notes.push('no conditions yet: the operator has not processed this object (is it running?)');
  }
  const observed = view.conditionGroups.flatMap((g) => g.conditions.map((c) => c.observedGeneration)).filter((g): g is number => g !== undefined);
  if (generation !== undefined && observed.length > 0 && Math.min(...observed) < generation) {
    view.staleStatus = `status is for generation ${Math.min(...observed)}; the object is at generation ${generation} (the operator has not processed the change yet)`;
  }
  for (const set of groupNodeStates(nodeStates).values()) {
    const entries: { entry: string; sources: string[] }[] = [
      ...set.services.map((s) => ({ entry: `service ${s.namespace}/${s.name}`, sources: s.sources ?? [] })),
      ...set.workloads.map((w) => ({ entry: `workload ${w.namespace}/${w.name}`, sources: w.sources ?? [] })),
    ];
    for (const e of entries) {
      for (const tag of e.sources) {
        const t = parseSourceTag(tag);
        if (!t || t.kind !== kind || t.namespace !== ns || t.name !== name) continue;
        view.programmed.push({ node: set.node, entry: e.entry, generation: t.generation, current: generation === undefined || t.generation === generation });
      }
    }
  }
  if (kind !== 'NodeState' && view.programmed.length === 0) view.notes.push('no NodeState entry was compiled from this object: no node needs it (no pods call or serve what it selects), or it never compiled');
  return view;
}

function conditionRows(conds: readonly Condition[]): string[][] {
  return conds.map((c) => [c.type, c.status, c.reason, c.observedGeneration === undefined ? '-' : String(c.observedGeneration), c.message]);
}

/** Renders the answer. */
export function formatExplainView(v: ExplainView, format: OutputFormat): string {
  if (format === 'json') return formatJson(v);
  let out = `${v.kind} ${v.namespace ? `${v.namespace}/` : ''}${v.name}${v.generation !== undefined ? ` (generation ${v.generation})` : ''}\n`;
  for (const g of v.conditionGroups) {
    out += `\n${g.title[0]!.toUpperCase()}${g.title.slice(1)}:\n`;
    out += g.conditions.length === 0 ? '  <none>\n' : indent(formatTable(['type', 'status', 'reason', 'observed', 'message'], conditionRows(g.conditions)));
  }
  if (v.staleStatus) out += `\nWarning: ${v.staleStatus}\n`;
  if (v.kind !== 'NodeState') {
    out += '\nProgrammed on:\n';
    out += v.programmed.length === 0 ? '  <none>\n' : indent(formatTable(['node', 'entry', 'generation'], v.programmed.map((p) => [p.node, p.entry, p.current ? String(p.generation) : `${p.generation} (stale)`])));
  }
  for (const n of v.notes) out += `\nNote: ${n}\n`;
  return out;
}

/** Reads the object and the NodeStates, and renders the explanation. */
export async function runExplain(reader: ClusterReader, opts: { target: string; namespace: string; format: OutputFormat }): Promise<string> {
  const { info, name } = parseKindName(opts.target);
  const nodeStates = (await reader.listCustom(NodeStateResource)) ?? [];
  if (info.kind === 'Service') {
    // A Service is explained by what attaches to it and what nodes hold for it: the routes view, scoped.
    return runRoutes(reader, { namespace: opts.namespace, service: name, format: opts.format });
  }
  if (info.kind === 'NodeState') {
    const obj = await reader.getCustom(info.res!, name);
    if (!obj) throw new CliError('NM_ERR_CLI_NOT_FOUND', `NodeState ${name} not found (NodeStates are named <node>-<shard>, e.g. ${name}-0; kubectl get nodestates)`);
    const set = groupNodeStates([obj]).values().next().value;
    const v = computeExplainView('NodeState', obj, []);
    if (set) v.notes.push(`node ${set.node}, shard ${String((obj.spec as { shard?: { index?: number; count?: number } })?.shard?.index)} of ${set.count ?? '?'}: ${set.services.length} service(s), ${set.workloads.length} workload(s), version ${set.version ?? '-'}`);
    return formatExplainView(v, opts.format);
  }
  const obj = await reader.getCustom(info.res!, name, opts.namespace);
  if (!obj) throw new CliError('NM_ERR_CLI_NOT_FOUND', `${info.kind} ${opts.namespace}/${name} not found (wrong namespace? pass -n)`);
  return formatExplainView(computeExplainView(info.kind, obj, nodeStates), opts.format);
}
