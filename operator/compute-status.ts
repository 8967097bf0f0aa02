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
  type NodeService,
  type NodeState,
  type NodeWorkload,
  type ParentReference,
  type PolicyStatus,
  type RouteParentStatus,
} from '../crds/index.ts';
import type { CompiledMesh, ConditionResult, ObjectOutcome, UserKind } from './compile-mesh.ts';
import { selectForNode } from './compute-node-state.ts';
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

/** One NodeState's entries: entry key ("w/ns/name", "s/ns/name") → its source tags, and tag → entry keys. */
interface ShardIndex {
  items: Map<string, Set<string>>;
  byTag: Map<string, string[]>;
}

/** Per node, the index of its entries (its shards merged; a later shard listing an entry wins). */
type NodeIndex = Map<string, ShardIndex>;

/** Merged indexes by their parts, so a node whose shards did not change is not merged again. */
const mergedIndexes = new WeakMap<ShardIndex, { parts: ShardIndex[]; merged: ShardIndex }>();

function mergeShards(parts: ShardIndex[]): ShardIndex {
  if (parts.length === 1) return parts[0]!;
  const hit = mergedIndexes.get(parts[0]!);
  if (hit && hit.parts.length === parts.length && hit.parts.every((p, i) => p === parts[i])) return hit.merged;
  const items = new Map<string, Set<string>>();
  const byTag = new Map<string, string[]>();
  for (const p of parts) {
    for (const [k, tags] of p.items) items.set(k, tags);
    for (const [tag, keys] of p.byTag) {
      const list = byTag.get(tag);
      if (list) list.push(...keys);
      else byTag.set(tag, [...keys]);
    }
  }
  const merged = { items, byTag };
  mergedIndexes.set(parts[0]!, { parts, merged });
  return merged;
}

/**
 * Shard indexes by the spec they were read from. A reconcile reads the same stored and desired NodeStates
 * again and again (informer objects and memoised shards are never edited), so each is indexed once; the
 * entry lists are compared too, so a spec edited in place is indexed again.
 */
const shardIndexes = new WeakMap<object, { workloads: unknown; services: unknown; index: ShardIndex }>();

function indexEntries(entries: Iterable<{ key: string; sources: readonly string[] | undefined }>): ShardIndex {
  const items = new Map<string, Set<string>>();
  const byTag = new Map<string, string[]>();
  for (const { key, sources } of entries) {
    items.set(key, new Set(sources ?? []));
    for (const tag of sources ?? []) {
      const keys = byTag.get(tag);
      if (keys) keys.push(key);
      else byTag.set(tag, [key]);
    }
  }
  return { items, byTag };
}

function* entriesOf(workloads: readonly NodeWorkload[] | undefined, services: readonly NodeService[] | undefined): Generator<{ key: string; sources: readonly string[] | undefined }> {
  for (const w of workloads ?? []) yield { key: `w/${w.namespace}/${w.name}`, sources: w.sources };
  for (const sv of services ?? []) yield { key: `s/${sv.namespace}/${sv.name}`, sources: sv.sources };
}

function indexByNode(states: readonly NodeState[]): NodeIndex {
  const out = new Map<string, ShardIndex[]>();
  for (const state of states) {
    const spec = state.spec;
    if (!spec?.nodeName) continue;
    let hit = shardIndexes.get(spec);
    if (!hit || hit.workloads !== spec.workloads || hit.services !== spec.services) {
      hit = { workloads: spec.workloads, services: spec.services, index: indexEntries(entriesOf(spec.workloads, spec.services)) };
      shardIndexes.set(spec, hit);
    }
    const list = out.get(spec.nodeName);
    if (list) list.push(hit.index);
    else out.set(spec.nodeName, [hit.index]);
  }
  return new Map([...out].map(([node, parts]) => [node, mergeShards(parts)]));
}

/** Where each source tag is needed: per node, the entries that carry it. */
function indexDesired(snapshot: Snapshot, compiled: CompiledMesh, desired: readonly NodeState[] | undefined): NodeIndex {
  // From NodeStates the caller computed (written or not), else by selecting for every node here.
  if (desired) return indexByNode(desired);
  const needs: NodeIndex = new Map();
  const nodes = new Set<string>([...snapshot.nodes.map((n) => n.metadata?.name ?? ''), ...compiled.workloadsByNode.keys()]);
  for (const node of [...nodes].filter(Boolean).sort()) {
    const { workloads, services } = selectForNode(compiled, node);
    needs.set(node, indexEntries(entriesOf(workloads, services)));
  }
  return needs;
}


/** Programmed for one tag, optionally only over the entries matching `keyFilter`. */
function programmed(tag: string | undefined, needs: NodeIndex, written: NodeIndex, keyFilter?: (key: string) => boolean): ConditionResult {
  const waiting: string[] = [];
  let needed = 0;
  for (const [node, index] of tag ? needs : []) {
    const keys = index.byTag.get(tag!);
    if (!keys) continue;
    const relevant = keyFilter ? keys.filter(keyFilter) : keys;
    if (relevant.length === 0) continue;
    needed++;
    const have = written.get(node)?.items;
    if (!relevant.every((k) => have?.get(k)?.has(tag!))) waiting.push(node);
  }
  if (needed === 0) return { status: 'True', reason: 'Programmed', message: 'no node needs it yet: no pod calls or serves what it applies to' };
  if (waiting.length > 0) {
    const shown = waiting.slice(0, 5).join(', ') + (waiting.length > 5 ? ` and ${waiting.length - 5} more` : '');
    return { status: 'False', reason: 'Pending', message: `waiting for the NodeState of ${waiting.length} of ${needed} node(s): ${shown}` };
  }
  return { status: 'True', reason: 'Programmed', message: `programmed on the ${needed} node(s) that need it` };
}

function invalidProgrammed(o: ObjectOutcome, needs: NodeIndex, written: NodeIndex): ConditionResult {
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
  return (a.group ?? '') === (b.group ?? '') && (a.kind ?? 'Service') === (b.kind ?? 'Service') && (a.namespace ?? '') === (b.namespace ?? '') &&
    a.name === b.name && (a.port ?? 0) === (b.port ?? 0) && (a.sectionName ?? '') === (b.sectionName ?? '');
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
  const written = indexByNode(nodeStatesWritten);
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
