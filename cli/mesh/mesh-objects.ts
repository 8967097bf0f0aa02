/** Reading mesh objects as the plugin shows them: conditions, NodeState sets per node, source tags. */
import type { Condition, NodeService, NodeStateSpec, NodeWorkload } from '../../crds/index.ts';
import { CONTROLLER_NAME } from '../../crds/index.ts';
import type { KubeObject } from './kube.ts';

/** The condition types the operator writes on every user object. */
export const CONDITION_TYPES = ['Accepted', 'ResolvedRefs', 'Programmed'] as const;

/** A condition's short form for tables: `True`, `False (Reason)`, `Unknown (Reason)`, or `-` when absent. */
export function formatConditionCell(c: Condition | undefined): string {
  if (!c) return '-';
  return c.status === 'True' ? 'True' : `${c.status} (${c.reason})`;
}

/** The conditions an HTTPRoute carries from nodemesh, per parent. */
export function routeParentConditions(route: KubeObject): { parent: string; conditions: Condition[] }[] {
  const parents = ((route.status?.parents as { parentRef?: { name?: string; namespace?: string; port?: number; sectionName?: string; kind?: string }; controllerName?: string; conditions?: Condition[] }[] | undefined) ?? []);
  return parents
    .filter((p) => p.controllerName === CONTROLLER_NAME)
    .map((p) => ({ parent: formatParentRef(p.parentRef ?? {}, route.metadata?.namespace ?? ''), conditions: p.conditions ?? [] }));
}

/** `svc/reviews:9080` (namespace shown only when it differs from the route's). */
export function formatParentRef(ref: { name?: string; namespace?: string; port?: number; sectionName?: string; kind?: string; group?: string }, routeNamespace: string): string {
  const kind = ref.kind === undefined || ref.kind === 'Service' ? 'svc' : ref.kind;
  const ns = ref.namespace && ref.namespace !== routeNamespace ? `${ref.namespace}/` : '';
  const port = ref.port !== undefined ? `:${ref.port}` : ref.sectionName ? `:${ref.sectionName}` : '';
  return `${kind}/${ns}${ref.name ?? '?'}${port}`;
}

/**
 * One summary per condition type over several condition lists (the parents of a route): True when every list
 * says True, else the first list's non-True condition; undefined when no list has it.
 */
export function summarizeConditions(lists: readonly (readonly Condition[])[]): Record<(typeof CONDITION_TYPES)[number], Condition | undefined> {
  const out = {} as Record<(typeof CONDITION_TYPES)[number], Condition | undefined>;
  for (const t of CONDITION_TYPES) {
    const found = lists.map((l) => l.find((c) => c.type === t)).filter((c): c is Condition => c !== undefined);
    out[t] = found.find((c) => c.status !== 'True') ?? found[0];
  }
  return out;
}

/** The conditions of a policy (status.conditions). */
export function policyConditions(obj: KubeObject): Condition[] {
  return (obj.status?.conditions as Condition[] | undefined) ?? [];
}

/** A node's NodeState set as read: its shards, whether the set is complete, and what it holds. */
export type NodeStateSet = {
  node: string;
  shards: string[];
  /** The count every shard agrees on; undefined when they disagree. */
  count: number | undefined;
  /** Shards 0..count-1 all present with the same count: what an agent applies. */
  complete: boolean;
  /** Highest spec.version among the shards (informational, per the writer). */
  version: number | undefined;
  services: NodeService[];
  workloads: NodeWorkload[];
};

/** Groups NodeState objects by spec.nodeName. */
export function groupNodeStates(objs: readonly KubeObject[]): Map<string, NodeStateSet> {
  const byNode = new Map<string, { name: string; spec: NodeStateSpec }[]>();
  for (const o of objs) {
    const spec = o.spec as NodeStateSpec | undefined;
    if (!spec?.nodeName) continue;
    byNode.set(spec.nodeName, [...(byNode.get(spec.nodeName) ?? []), { name: o.metadata?.name ?? '?', spec }]);
  }
  const out = new Map<string, NodeStateSet>();
  for (const [node, list] of [...byNode].sort(([a], [b]) => a.localeCompare(b))) {
    const counts = new Set(list.map((s) => s.spec.shard?.count));
    const count = counts.size === 1 ? [...counts][0] : undefined;
    const indexes = new Set(list.map((s) => s.spec.shard?.index));
    const complete = count !== undefined && list.length === count && [...Array(count).keys()].every((i) => indexes.has(i));
    const versions = list.map((s) => s.spec.version).filter((v): v is number => typeof v === 'number');
    out.set(node, {
      node,
      shards: list.map((s) => s.name).sort(),
      count,
      complete,
      version: versions.length ? Math.max(...versions) : undefined,
      services: list.flatMap((s) => s.spec.services ?? []),
      workloads: list.flatMap((s) => s.spec.workloads ?? []),
    });
  }
  return out;
}

/** Parses a `Kind/namespace/name@generation` source tag. */
export function parseSourceTag(tag: string): { kind: string; namespace: string; name: string; generation: number } | undefined {
  const m = /^([A-Za-z]+)\/([^/]+)\/([^@/]+)@(\d+)$/.exec(tag);
  return m ? { kind: m[1]!, namespace: m[2]!, name: m[3]!, generation: Number(m[4]) } : undefined;
}
