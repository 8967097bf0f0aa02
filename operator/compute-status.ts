/**
 * computeStatuses: the status of every user object - Accepted, ResolvedRefs and Programmed, each with
 * observedGeneration, a CamelCase reason and a message naming the field - from the compile outcomes and
 * the NodeStates actually written. Programmed is True once every node that needs the object has a written
 * NodeState entry carrying it (its source tag "Kind/namespace/name@generation").
 */
import {
  CONTROLLER_NAME,
  type Condition,
  type HTTPRoute,
  type HTTPRouteStatus,
  type NodeState,
  type ParentReference,
  type PolicyStatus,
  type RouteParentStatus,
} from '../crds/index.ts';
import type { CompiledMesh, ConditionResult, ObjectOutcome, UserKind } from './compile-mesh.ts';
import { selectForNode } from './compute-node-state.ts';
import { canonicalJson } from './canonical-json.ts';
import type { Snapshot } from './snapshot.ts';

/** The status one user object should have. */
export interface ObjectStatus {
  kind: UserKind;
  namespace: string;
  name: string;
  uid: string;
  /** HTTPRouteStatus for HTTPRoute, PolicyStatus for the nodemesh.io kinds. */
  status: HTTPRouteStatus | PolicyStatus;
}

/** Options of computeStatuses. */
export interface StatusOptions {
  /** RFC 3339 time for lastTransitionTime of conditions that change (default: now). */
  now?: string;
  /**
   * The desired NodeStates of every node, when the caller already computed them from the same compile
   * (saves recomputing the per-node selection); must cover every node.
   */
  desired?: readonly NodeState[];
}

/** Where each source tag is needed: node name → entry keys ("w/ns/name", "s/ns/name"). */
type Needs = Map<string, Map<string, Set<string>>>;

function indexDesired(snapshot: Snapshot, compiled: CompiledMesh, desired: readonly NodeState[] | undefined): Needs {
  const needs: Needs = new Map();
  if (desired) {
    // Same index as below, read from NodeStates the caller computed (written or not).
    const written = indexWritten(desired);
    for (const [node, items] of written) {
      for (const [key, tags] of items) {
        for (const tag of tags) {
          if (!needs.has(tag)) needs.set(tag, new Map());
          const perNode = needs.get(tag)!;
          if (!perNode.has(node)) perNode.set(node, new Set());
          perNode.get(node)!.add(key);
        }
      }
    }
    return needs;
  }
  const nodes = new Set<string>([...snapshot.nodes.map((n) => n.metadata?.name ?? ''), ...compiled.workloadsByNode.keys()]);
  for (const node of [...nodes].filter(Boolean).sort()) {
    const { workloads, services } = selectForNode(compiled, node);
    const add = (tags: string[], key: string): void => {
      for (const tag of tags) {
        if (!needs.has(tag)) needs.set(tag, new Map());
        const perNode = needs.get(tag)!;
        if (!perNode.has(node)) perNode.set(node, new Set());
        perNode.get(node)!.add(key);
      }
    };
    for (const w of workloads) add(w.sources, `w/${w.namespace}/${w.name}`);
    for (const s of services) add(s.sources, `s/${s.namespace}/${s.name}`);
  }
  return needs;
}

function indexWritten(written: readonly NodeState[]): Map<string, Map<string, Set<string>>> {
  const out = new Map<string, Map<string, Set<string>>>();
  for (const state of written) {
    const spec = state.spec;
    if (!spec?.nodeName) continue;
    if (!out.has(spec.nodeName)) out.set(spec.nodeName, new Map());
    const items = out.get(spec.nodeName)!;
    for (const w of spec.workloads ?? []) items.set(`w/${w.namespace}/${w.name}`, new Set(w.sources ?? []));
    for (const s of spec.services ?? []) items.set(`s/${s.namespace}/${s.name}`, new Set(s.sources ?? []));
  }
  return out;
}

/** Programmed for one tag, optionally only over the entries matching `keyFilter`. */
function programmed(tag: string | undefined, needs: Needs, written: Map<string, Map<string, Set<string>>>, keyFilter?: (key: string) => boolean): ConditionResult {
  const perNode = tag ? needs.get(tag) : undefined;
  const waiting: string[] = [];
  let needed = 0;
  for (const [node, keys] of perNode ?? []) {
    const relevant = [...keys].filter((k) => !keyFilter || keyFilter(k));
    if (relevant.length === 0) continue;
    needed++;
    const have = written.get(node);
    if (!relevant.every((k) => have?.get(k)?.has(tag!))) waiting.push(node);
  }
  if (needed === 0) return { status: 'True', reason: 'Programmed', message: 'no node needs it yet: no pod calls or serves what it applies to' };
  if (waiting.length > 0) {
    const shown = waiting.slice(0, 5).join(', ') + (waiting.length > 5 ? ` and ${waiting.length - 5} more` : '');
    return { status: 'False', reason: 'Pending', message: `waiting for the NodeState of ${waiting.length} of ${needed} node(s): ${shown}` };
  }
  return { status: 'True', reason: 'Programmed', message: `programmed on the ${needed} node(s) that need it` };
}

function invalidProgrammed(o: ObjectOutcome, needs: Needs, written: Map<string, Map<string, Set<string>>>): ConditionResult {
  if (o.failClosed) {
    const p = programmed(o.tag, needs, written);
    return { status: 'False', reason: 'Invalid', message: `generation ${o.generation} is invalid; its deny-everything stand-in is ${p.status === 'True' ? 'programmed' : 'pending'}` };
  }
  if (o.effectiveGeneration !== undefined) {
    const p = programmed(o.tag, needs, written);
    return { status: 'False', reason: 'Invalid', message: `generation ${o.generation} is invalid and not programmed; nodes keep generation ${o.effectiveGeneration} (${p.status === 'True' ? 'programmed' : 'pending'})` };
  }
  return { status: 'False', reason: 'Invalid', message: `generation ${o.generation} is invalid; nothing from it is programmed` };
}

function toConditions(results: Array<[string, ConditionResult]>, generation: number, previous: readonly Condition[] | undefined, now: string): Condition[] {
  return results.map(([type, r]) => {
    const before = previous?.find((c) => c.type === type);
    return {
      type,
      status: r.status,
      observedGeneration: generation,
      lastTransitionTime: before && before.status === r.status ? before.lastTransitionTime : now,
      reason: r.reason,
      message: r.message.length > 32768 ? `${r.message.slice(0, 32765)}...` : r.message,
    };
  });
}

function sameParent(a: ParentReference, b: ParentReference): boolean {
  const norm = (p: ParentReference): string => canonicalJson({ g: p.group ?? '', k: p.kind ?? 'Service', n: p.namespace ?? '', name: p.name, port: p.port ?? 0, s: p.sectionName ?? '' });
  return norm(a) === norm(b);
}

/**
 * The statuses of every user object in the snapshot. `compiled` must come from this snapshot;
 * `nodeStatesWritten` is what the writer has confirmed stored (all shards of every node).
 */
export function computeStatuses(
  snapshot: Snapshot,
  compiled: CompiledMesh,
  nodeStatesWritten: readonly NodeState[],
  options: StatusOptions = {},
): ObjectStatus[] {
  const now = options.now ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const needs = indexDesired(snapshot, compiled, options.desired);
  const written = indexWritten(nodeStatesWritten);
  const objects = new Map<string, { status?: unknown }>();
  for (const [kind, list] of [
    ['HTTPRoute', snapshot.httpRoutes],
    ['MeshTLSPolicy', snapshot.meshTLSPolicies],
    ['TrafficPolicy', snapshot.trafficPolicies],
    ['AuthorizationPolicy', snapshot.authorizationPolicies],
  ] as const) {
    for (const o of list) objects.set(`${kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, o);
  }
  return compiled.outcomes.map((o) => {
    const existing = objects.get(`${o.kind}/${o.namespace}/${o.name}`)?.status;
    if (o.kind === 'HTTPRoute') {
      const before = (existing ?? {}) as HTTPRouteStatus;
      const foreign = (before.parents ?? []).filter((p) => p.controllerName !== CONTROLLER_NAME);
      const ours: RouteParentStatus[] = (o.parents ?? []).map((p) => {
        const prev = (before.parents ?? []).find((bp) => bp.controllerName === CONTROLLER_NAME && sameParent(bp.parentRef, p.parentRef));
        let prog: ConditionResult;
        if (!o.valid) prog = invalidProgrammed(o, needs, written);
        else if (p.accepted.status !== 'True') prog = { status: 'False', reason: p.accepted.reason, message: `not programmed for this parent: ${p.accepted.message}` };
        else prog = programmed(o.tag, needs, written, (k) => k === `s/${p.serviceKey}`);
        return {
          parentRef: p.parentRef,
          controllerName: CONTROLLER_NAME,
          conditions: toConditions([['Accepted', p.accepted], ['ResolvedRefs', o.resolvedRefs], ['Programmed', prog]], o.generation, prev?.conditions, now),
        };
      });
      const status: HTTPRouteStatus = { parents: [...foreign, ...ours] };
      return { kind: o.kind, namespace: o.namespace, name: o.name, uid: o.uid, status };
    }
    const before = (existing ?? {}) as PolicyStatus;
    let prog = !o.valid ? invalidProgrammed(o, needs, written) : programmed(o.tag, needs, written);
    if (o.valid && o.accepted.status !== 'True' && prog.message.startsWith('no node needs it')) {
      // A policy that lost every target to an older one is carried nowhere: not programmed, and why.
      prog = { status: 'False', reason: o.accepted.reason, message: `not programmed: ${o.accepted.message}` };
    }
    const status: PolicyStatus = {
      observedGeneration: o.generation,
      conditions: toConditions([['Accepted', o.accepted], ['ResolvedRefs', o.resolvedRefs], ['Programmed', prog]], o.generation, before.conditions, now),
    };
    return { kind: o.kind, namespace: o.namespace, name: o.name, uid: o.uid, status };
  });
}

/** A route's parents of kind Service that nodemesh reports on (for callers that filter status updates). */
export function meshParents(route: HTTPRoute): ParentReference[] {
  return (route.spec?.parentRefs ?? []).filter((p) => (p.kind ?? 'Gateway') === 'Service' && ['', 'core'].includes(p.group ?? 'gateway.networking.k8s.io'));
}
