/**
 * computeNodeState: the NodeState objects (shards) of one node - only what its pods need - from a snapshot.
 * What a node gets (decided here, documented in crds/README.md):
 *   - a workload entry for each of its pods (identity, mTLS mode, compiled authorization);
 *   - every Service that needs the mesh and that its pods serve (a backing pod on the node), or may call:
 *     every such Service in a namespace where the node has pods, and in other namespaces every such Service
 *     at least one of its pods' identities may reach under the Service's AuthorizationPolicies;
 *   - nothing for Services that stay L4 (no routes, no traffic policy, DISABLED mTLS, no authorization).
 * Output is sorted and hashed (sha256 of canonical JSON) and sharded by a stable hash of each entry's key
 * into a power-of-two number of shards of about SHARD_TARGET_BYTES (never over SHARD_BUDGET_BYTES), so a
 * change rewrites only the shard holding the changed entry, and that shard is small.
 */
import {
  NODESTATE_MAX_BYTES,
  NODESTATE_NODE_LABEL,
  NodeStateResource,
  type CompiledAuthorizationPolicy,
  type NodeService,
  type NodeServicePort,
  type NodeState,
  type NodeStateSpec,
  type NodeWorkload,
} from '../crds/index.ts';
import { createHash } from 'node:crypto';
import { compileMesh, type CompiledMesh, type CompiledService } from './compile-mesh.ts';
import { ObjectIds } from './compile-memo.ts';
import { canonicalJson, contentHash, jsonBytes } from './canonical-json.ts';
import { OperatorError } from './errors.ts';
import type { Snapshot } from './snapshot.ts';

/** Bytes of entries per shard; the rest of the 512 KiB is left for metadata, keys and the API server's own fields. */
export const SHARD_BUDGET_BYTES = 480 * 1024;

/**
 * Size a shard aims at. A change rewrites a whole shard, so smaller shards make every change cheaper to write,
 * store and watch (with 10,000 Services a node's state is ~800 KiB: one route change rewrote 400 KiB per
 * node with two shards, 100 KiB with eight). The count is the smallest power of two giving shards of about
 * this size on average whose every shard still fits SHARD_BUDGET_BYTES, the hard limit.
 */
export const SHARD_TARGET_BYTES = 128 * 1024;

/** Most shards per node (the schema's bound). */
export const MAX_SHARDS = 1024;

/** Label marking objects the operator owns, so it can find and prune them. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';

/** A source identity on this node, for reachability. */
interface Identity {
  namespace: string;
  spiffeId: string;
}

/** Name of shard `index` of a node: "<node>-<index>", shortened with a hash when over 253 characters. */
export function nodeStateName(nodeName: string, index: number): string {
  const plain = `${nodeName}-${index}`;
  if (plain.length <= 253) return plain;
  const hash = createHash('sha256').update(nodeName).digest('hex').slice(0, 10);
  return `${nodeName.slice(0, 253 - hash.length - String(index).length - 2)}-${hash}-${index}`;
}

/** Value of the nodemesh.io/node label: the node name, or "h-" + a hash when it cannot be a label value. */
export function nodeLabelValue(nodeName: string): string {
  if (nodeName.length <= 63 && /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(nodeName)) return nodeName;
  return `h-${createHash('sha256').update(nodeName).digest('hex').slice(0, 40)}`;
}

function fromMatches(entry: { spiffeIds?: string[]; namespaces?: string[] }, id: Identity): boolean {
  return (!entry.spiffeIds || entry.spiffeIds.includes(id.spiffeId)) && (!entry.namespaces || entry.namespaces.includes(id.namespace));
}

/** True when the workload's policies deny every request from `id`, whatever its port, method or path. */
function deniesEverything(w: NodeWorkload, id: Identity): boolean {
  const policies = w.authorization?.policies ?? [];
  const ruleFrom = (p: CompiledAuthorizationPolicy) => p.rules.filter((r) => !r.from || r.from.some((f) => fromMatches(f, id)));
  for (const p of policies) {
    if (p.action === 'DENY' && ruleFrom(p).some((r) => !r.to)) return true;
  }
  if (w.authorization?.defaultAction === 'Deny') {
    return !policies.some((p) => p.action === 'ALLOW' && ruleFrom(p).length > 0);
  }
  return false;
}

function mayReach(compiled: CompiledMesh, svc: CompiledService, ids: readonly Identity[]): boolean {
  if (svc.backingPods.length === 0) return true;
  for (const podKey of svc.backingPods) {
    const w = compiled.workloads.get(podKey)?.workload;
    if (!w || !w.authorization) return true;
    if (ids.some((id) => !deniesEverything(w, id))) return true;
  }
  return false;
}

/** The Service entry as this node sees it (consumer routes of other namespaces dropped), or undefined. */
function serviceForNode(svc: CompiledService, namespaces: ReadonlySet<string>): NodeService | undefined {
  const sources = new Set<string>();
  const ports: NodeServicePort[] = [];
  for (const p of svc.ports) {
    const routes = p.routes.filter((r) => !r.entry.consumerNamespace || namespaces.has(r.entry.consumerNamespace));
    const http = routes.length > 0 || p.trafficPolicy !== undefined;
    if (!http && !svc.needsTcpMesh) continue;
    const port: NodeServicePort = {
      port: p.port,
      ...(p.name ? { name: p.name } : {}),
      protocol: 'TCP',
      ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
      mode: http ? 'HTTP' : 'TCP',
      routes: routes.map((r) => r.entry),
      ...(p.trafficPolicy ? { trafficPolicy: p.trafficPolicy } : {}),
    };
    for (const r of routes) for (const t of r.tags) sources.add(t);
    for (const t of p.policyTags) sources.add(t);
    ports.push(port);
  }
  if (ports.length === 0) return undefined;
  for (const t of svc.mtlsTags) sources.add(t);
  return {
    namespace: svc.namespace,
    name: svc.name,
    clusterIPs: svc.clusterIPs,
    mtlsMode: svc.mtlsMode,
    ports,
    sources: [...sources].sort(),
  };
}

/** A workload entry too large for a shard fails closed: its authorization becomes deny-everything. */
function fitWorkload(w: NodeWorkload): NodeWorkload {
  // Only authorization makes a workload entry grow; the rest is a few hundred bytes.
  if (!w.authorization || jsonBytes(w) <= SHARD_BUDGET_BYTES / 2) return w;
  return {
    ...w,
    authorization: {
      defaultAction: 'Deny',
      policies: [{ name: `${w.namespace}/(too-many-policies)`, action: 'DENY', failClosed: true, rules: [{ requiresHttp: false }] }],
    },
  };
}

function bucketOf(key: string): number {
  return parseInt(createHash('sha256').update(key).digest('hex').slice(0, 8), 16);
}

/** One NodeState entry, serialized once: its canonical JSON gives its size and, joined, the shard's hash input. */
interface Item {
  key: string;
  json: string;
  bytes: number;
  bucket: number;
  workload?: NodeWorkload;
  service?: NodeService;
}

function itemOf(key: string, value: NodeWorkload | NodeService, kind: 'workload' | 'service'): Item {
  const json = canonicalJson(value);
  return { key, json, bytes: Buffer.byteLength(json, 'utf8') + 1, bucket: bucketOf(key), [kind]: value };
}

/**
 * What computeNodeState keeps between runs when the runtime passes the same memo: each entry's canonical
 * JSON by the compiled object it came from (compileMesh with a CompileMemo returns the same object while its
 * inputs are unchanged), and each shard by the entries in it, so an unchanged shard is neither serialized nor
 * hashed again. Compiled objects are weak keys: they go when the compile drops them.
 */
export class NodeStateMemo {
  readonly #ids = new ObjectIds();
  readonly #workloads = new WeakMap<NodeWorkload, Item>();
  /** Per compiled Service, per node view (its namespaces), the entry or null when the node gets none. */
  readonly #services = new WeakMap<CompiledService, Map<string, Item | null>>();
  readonly #shards = new Map<string, Map<number, { sig: string; state: NodeState }>>();

  workloadItem(w: NodeWorkload): Item {
    let item = this.#workloads.get(w);
    if (!item) {
      const fitted = fitWorkload(w);
      item = itemOf(`w/${fitted.namespace}/${fitted.name}`, fitted, 'workload');
      this.#workloads.set(w, item);
    }
    return item;
  }

  serviceItem(svc: CompiledService, namespaces: ReadonlySet<string>, namespacesKey: string): Item | null {
    let views = this.#services.get(svc);
    if (!views) this.#services.set(svc, (views = new Map()));
    // Only consumer-scoped routes depend on the node's namespaces; without any, every node sees the same entry.
    const viewKey = svc.ports.some((p) => p.routes.some((r) => r.entry.consumerNamespace)) ? namespacesKey : '';
    let item = views.get(viewKey);
    if (item === undefined) {
      const entry = serviceForNode(svc, namespaces);
      item = entry ? itemOf(`s/${entry.namespace}/${entry.name}`, entry, 'service') : null;
      views.set(viewKey, item);
    }
    return item;
  }

  /** The id of an item, for shard signatures. */
  idOf(item: Item): number {
    return this.#ids.of(item);
  }

  shards(nodeName: string): Map<number, { sig: string; state: NodeState }> | undefined {
    return this.#shards.get(nodeName);
  }

  setShards(nodeName: string, shards: Map<number, { sig: string; state: NodeState }>): void {
    this.#shards.set(nodeName, shards);
  }

  /** Forgets the shards of nodes not in `nodes` (nodes that are gone). */
  retainNodes(nodes: ReadonlySet<string>): void {
    for (const n of this.#shards.keys()) if (!nodes.has(n)) this.#shards.delete(n);
  }
}

/** The entries a node needs, sorted (workloads, then services), serialized. */
function selectItems(compiled: CompiledMesh, nodeName: string, memo: NodeStateMemo): Item[] {
  const podKeys = compiled.workloadsByNode.get(nodeName) ?? [];
  const items = podKeys.map((k) => memo.workloadItem(compiled.workloads.get(k)!.workload));
  const workloads = items.map((i) => i.workload!);
  const podSet = new Set(podKeys);
  const namespaces = new Set(workloads.map((w) => w.namespace));
  const namespacesKey = [...namespaces].sort().join(',');
  const seen = new Set<string>();
  const ids: Identity[] = [];
  for (const w of workloads) {
    if (seen.has(w.spiffeId)) continue;
    seen.add(w.spiffeId);
    ids.push({ namespace: w.namespace, spiffeId: w.spiffeId });
  }
  if (workloads.length > 0) {
    for (const svc of compiled.meshServices ?? compiled.services.values()) {
      const maybe = svc.needsTcpMesh || svc.ports.some((p) => p.routes.length > 0 || p.trafficPolicy);
      if (!maybe) continue;
      const needed = svc.backingPods.some((p) => podSet.has(p)) || namespaces.has(svc.namespace) || mayReach(compiled, svc, ids);
      if (!needed) continue;
      const item = memo.serviceItem(svc, namespaces, namespacesKey);
      if (item) items.push(item);
    }
  }
  return items;
}

/** Workloads and services this node needs, sorted, before sharding. */
export function selectForNode(compiled: CompiledMesh, nodeName: string, memo: NodeStateMemo = new NodeStateMemo()): { workloads: NodeWorkload[]; services: NodeService[] } {
  const items = selectItems(compiled, nodeName, memo);
  return { workloads: items.flatMap((i) => (i.workload ? [i.workload] : [])), services: items.flatMap((i) => (i.service ? [i.service] : [])) };
}

/**
 * The NodeState objects of `nodeName`. Pass the CompiledMesh the runtime keeps (it carries the last good
 * forms); without one, the snapshot is compiled with no history. A NodeStateMemo kept between runs makes
 * unchanged entries and shards free; the result is the same with or without it.
 */
export function computeNodeState(snapshot: Snapshot, nodeName: string, compiled: CompiledMesh = compileMesh(snapshot), memo: NodeStateMemo = new NodeStateMemo()): NodeState[] {
  const items = selectItems(compiled, nodeName, memo);
  const total = items.reduce((n, i) => n + i.bytes, 0);
  let count = 1;
  while (count < Math.ceil(total / SHARD_TARGET_BYTES) && count < MAX_SHARDS) count *= 2;
  for (;;) {
    const sizes = new Array<number>(count).fill(0);
    for (const i of items) sizes[i.bucket % count]! += i.bytes;
    if (sizes.every((s) => s <= SHARD_BUDGET_BYTES)) break;
    count *= 2;
    if (count > MAX_SHARDS) {
      throw new OperatorError('NM_ERR_OPERATOR_SHARD_OVERFLOW', `NodeState of node ${nodeName}: ${total} bytes of entries do not fit in ${MAX_SHARDS} shards; an entry is larger than a shard`);
    }
  }
  const perShard: Item[][] = Array.from({ length: count }, () => []);
  for (const i of items) perShard[i.bucket % count]!.push(i);
  const before = memo.shards(nodeName);
  const after = new Map<number, { sig: string; state: NodeState }>();
  const states: NodeState[] = [];
  for (let index = 0; index < count; index++) {
    const mine = perShard[index]!;
    const sig = `${count}|${compiled.trustDomain}|${mine.map((i) => memo.idOf(i)).join(',')}`;
    const kept = before?.get(index);
    const state = kept && kept.sig === sig ? kept.state : buildShard(nodeName, index, count, compiled.trustDomain, mine);
    after.set(index, { sig, state });
    states.push(state);
  }
  memo.setShards(nodeName, after);
  return states;
}

function buildShard(nodeName: string, index: number, count: number, trustDomain: string, mine: readonly Item[]): NodeState {
  const shard = { index, count };
  const workloads = mine.flatMap((i) => (i.workload ? [i.workload] : []));
  const services = mine.flatMap((i) => (i.service ? [i.service] : []));
  // Same text as canonicalJson of the spec without contentHash (keys in sorted order), assembled from the entries' canonical JSON.
  const canonical = `{"nodeName":${JSON.stringify(nodeName)},"services":[${mine.filter((i) => i.service).map((i) => i.json).join(',')}],"shard":${canonicalJson(shard)},"trustDomain":${JSON.stringify(trustDomain)},"workloads":[${mine.filter((i) => i.workload).map((i) => i.json).join(',')}]}`;
  const hash = `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
  const spec: NodeStateSpec = { nodeName, shard, contentHash: hash, trustDomain, workloads, services };
  const state: NodeState = {
    apiVersion: NodeStateResource.apiVersion,
    kind: NodeStateResource.kind,
    metadata: {
      name: nodeStateName(nodeName, index),
      labels: { [NODESTATE_NODE_LABEL]: nodeLabelValue(nodeName), [MANAGED_BY_LABEL]: 'nodemesh-operator' },
    },
    spec,
  };
  // The spec's JSON is the canonical text plus the contentHash field; metadata is under 1 KiB.
  const bytes = Buffer.byteLength(canonical, 'utf8') + hash.length + 1024;
  if (bytes > NODESTATE_MAX_BYTES) {
    throw new OperatorError('NM_ERR_OPERATOR_SHARD_OVERFLOW', `NodeState ${state.metadata!.name}: about ${bytes} bytes exceeds ${NODESTATE_MAX_BYTES}`);
  }
  return state;
}

/** Recomputes a NodeState spec's hash (what contentHash must equal), for writers and checks. */
export function hashOfSpec(spec: NodeStateSpec): string {
  const { contentHash: _hash, version: _version, ...body } = spec;
  return contentHash(body);
}
