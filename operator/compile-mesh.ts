/**
 * The node-independent half of the operator's compile: validates every user object, keeps the last good
 * form of invalid ones, resolves references, settles conflicts (older wins), and compiles routes, traffic
 * and authorization policies and mTLS modes into the NodeState building blocks. computeNodeState picks
 * from the result per node; computeStatuses turns its outcomes into conditions. Pure and deterministic.
 */
import type { V1EndpointSlice, V1Pod, V1Service } from '@kubernetes/client-node';
import type {
  AuthorizationPolicy,
  AuthorizationPolicySpec,
  CompiledAuthorizationPolicy,
  CompiledAuthorizationRule,
  CompiledBackend,
  CompiledFilter,
  CompiledRoute,
  CompiledRouteMatch,
  CompiledTrafficPolicy,
  HTTPRoute,
  HTTPRouteFilter,
  HTTPRouteMatch,
  HTTPRouteSpec,
  LabelSelector,
  MeshTLSPolicy,
  MeshTLSPolicySpec,
  NodeWorkload,
  ParentReference,
  TrafficPolicy,
  TrafficPolicySpec,
} from '../crds/index.ts';
import { canonicalJson, jsonBytes } from './canonical-json.ts';
import { ObjectIds, SignedMemo, specSignature } from './compile-memo.ts';
import { parseDuration } from './duration.ts';
import { matchesSelector } from './label-selector.ts';
import { compareAge, creationMillis, keyOf, type Snapshot } from './snapshot.ts';
import {
  validateAuthorizationPolicy,
  validateHTTPRoute,
  validateMeshTLSPolicy,
  validateTrafficPolicy,
  type FieldProblem,
} from './validate.ts';

/** The user kinds the operator writes status on. */
export type UserKind = 'HTTPRoute' | 'MeshTLSPolicy' | 'TrafficPolicy' | 'AuthorizationPolicy';

/** An mTLS mode. */
export type MtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLED';

/** The last spec of an object that validated, kept across compiles by the operator runtime (keyed by uid). */
export interface LastGood {
  kind: UserKind;
  generation: number;
  spec: unknown;
}

/** One condition's value before timestamps are added. */
export interface ConditionResult {
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
}

/** What the compile decided for one parentRef (to a Service) of an HTTPRoute. */
export interface ParentOutcome {
  /** Index in spec.parentRefs of the spec the outcome is about. */
  index: number;
  parentRef: ParentReference;
  accepted: ConditionResult;
  /** The Service the parent resolved to ("namespace/name"), when attached. */
  serviceKey?: string;
}

/** What the compile decided for one user object. */
export interface ObjectOutcome {
  kind: UserKind;
  namespace: string;
  name: string;
  uid: string;
  generation: number;
  /** The current generation validated. */
  valid: boolean;
  problems: FieldProblem[];
  /** Generation of the compiled form in effect (current, or last good); undefined when none is. */
  effectiveGeneration?: number;
  /** The deny-everything stand-in of an AuthorizationPolicy that never compiled is in effect. */
  failClosed?: boolean;
  accepted: ConditionResult;
  resolvedRefs: ConditionResult;
  /** HTTPRoute only: one entry per parentRef of kind Service. */
  parents?: ParentOutcome[];
  /** Source tag ("Kind/namespace/name@generation") the NodeState entries carrying it list. */
  tag?: string;
}

/** A compiled route entry and the source tags it carries. */
interface RouteEntry {
  entry: CompiledRoute;
  tags: string[];
  /**
   * The route's creationTimestamp in ms, for precedence ties (older first, then by namespace/name, as
   * compareAge). A property of the route alone, so a memoised entry stays right when other routes come and go.
   */
  created: number;
}

/** compareAge over route entries: older first, then by route key. */
function compareEntryAge(a: RouteEntry, b: RouteEntry): number {
  return a.created - b.created || (a.entry.route < b.entry.route ? -1 : a.entry.route > b.entry.route ? 1 : 0);
}

/** A Service port as compiled before node selection. */
export interface CompiledPort {
  port: number;
  name?: string;
  appProtocol?: string;
  routes: RouteEntry[];
  trafficPolicy?: CompiledTrafficPolicy;
  policyTags: string[];
}

/** A Service that may need the mesh, before node selection. */
export interface CompiledService {
  namespace: string;
  name: string;
  clusterIPs: string[];
  mtlsMode: MtlsMode;
  /** Mesh handling needed on every TCP port (mTLS or authorization behind it). */
  needsTcpMesh: boolean;
  ports: CompiledPort[];
  /** Keys ("namespace/name") of the pods behind it. */
  backingPods: string[];
  /** Source tags of the MeshTLSPolicies deciding the backing pods' modes (mtlsMode comes from them). */
  mtlsTags: string[];
}

/** A pod as compiled: its NodeState entry and the node it runs on. */
export interface CompiledWorkload {
  nodeName: string;
  workload: NodeWorkload;
}

/** Everything computeNodeState and computeStatuses need, computed once per snapshot. */
export interface CompiledMesh {
  trustDomain: string;
  /** Every meshable pod (scheduled, not hostNetwork, not finished), by "namespace/name". */
  workloads: Map<string, CompiledWorkload>;
  /** Pod keys per node name, sorted. */
  workloadsByNode: Map<string, string[]>;
  /** Services with at least one TCP port, by "namespace/name", sorted. */
  services: Map<string, CompiledService>;
  /**
   * The services a node may need (mesh handling on a TCP port, routes or a traffic policy), in the order of
   * `services`; the others stay L4 everywhere. computeNodeState walks only these.
   */
  meshServices?: CompiledService[];
  /** One per user object, sorted by kind, namespace, name. */
  outcomes: ObjectOutcome[];
  /** The last good specs to keep for the next compile (valid objects updated, deleted ones dropped). */
  lastGood: Map<string, LastGood>;
}

/** Largest compiled Service entry; routes beyond it are refused (TooLarge) so every entry fits in a shard. */
export const MAX_SERVICE_ENTRY_BYTES = 384 * 1024;

/** Retry defaults when a rule sets retry without a field (GEP-1731 leaves them to the implementation). */
export const RETRY_DEFAULTS = { attempts: 1, codes: [502, 503, 504], backoffMs: 25 } as const;

/**
 * What compileMesh keeps between compiles when the runtime passes the same memo every time (see
 * compile-memo.ts for the reuse rules). Without one, every piece is computed afresh.
 */
export class CompileMemo {
  readonly ids = new ObjectIds();
  /** Validation problems, by kind/uid. */
  readonly validations = new SignedMemo<FieldProblem[]>();
  /** Compiled route entries and reference problems, by uid; the signature covers the Services they read. */
  readonly routes = new SignedMemo<{ entries: CompiledRoute[]; problems: RefProblem[] }>();
  /** The conflict key of an entry's match and hostnames, by entry. */
  readonly matchKeys = new WeakMap<CompiledRoute, string>();
  readonly trafficPolicies = new SignedMemo<CompiledTrafficPolicy>();
  readonly authorizationPolicies = new SignedMemo<CompiledAuthorizationPolicy>();
  readonly workloads = new SignedMemo<CompiledWorkload>();
  readonly services = new SignedMemo<{ service: CompiledService; leftOut: string[] }>();
  /** A route entry scoped to a consumer namespace, by base entry (so its identity is stable too). */
  readonly consumerEntries = new WeakMap<CompiledRoute, Map<string, CompiledRoute>>();
  /** A Service's TCP ports and cluster IPs, by Service object. */
  readonly serviceBasics = new WeakMap<V1Service, { ports: ReturnType<typeof tcpPorts>; clusterIPs: string[]; portSig: string }>();

  /** Ends a compile: forgets what it did not use. */
  sweep(): void {
    this.validations.sweep();
    this.routes.sweep();
    this.trafficPolicies.sweep();
    this.authorizationPolicies.sweep();
    this.workloads.sweep();
    this.services.sweep();
  }

  /** Hit/miss counters, for tests and /status. */
  stats(): Record<string, { hits: number; misses: number; size: number }> {
    const of = (m: SignedMemo<unknown>) => ({ hits: m.hits, misses: m.misses, size: m.size });
    return {
      validations: of(this.validations),
      routes: of(this.routes),
      trafficPolicies: of(this.trafficPolicies),
      authorizationPolicies: of(this.authorizationPolicies),
      workloads: of(this.workloads),
      services: of(this.services),
    };
  }

  readonly #keys = new WeakMap<object, string>();
  readonly #sliceService = new WeakMap<V1EndpointSlice, string | null>();
  readonly #slicePods = new WeakMap<V1EndpointSlice, string[]>();
  #sortedKeys: string[] = [];
  #sortedKeySet = new Set<string>();

  /** keyOf, remembered per object. */
  keyOf(o: V1Service): string {
    let k = this.#keys.get(o);
    if (k === undefined) this.#keys.set(o, (k = keyOf(o)));
    return k;
  }

  /** "namespace/service" an EndpointSlice belongs to, undefined when it has no service-name label. */
  sliceServiceKey(slice: V1EndpointSlice): string | undefined {
    let k = this.#sliceService.get(slice);
    if (k === undefined) {
      const svc = slice.metadata?.labels?.['kubernetes.io/service-name'];
      k = svc ? `${slice.metadata?.namespace ?? ''}/${svc}` : null;
      this.#sliceService.set(slice, k);
    }
    return k ?? undefined;
  }

  /** Keys of the pods an EndpointSlice's endpoints point at, whether meshable or not. */
  slicePods(slice: V1EndpointSlice, ns: string): readonly string[] {
    let pods = this.#slicePods.get(slice);
    if (!pods) {
      pods = [];
      for (const ep of slice.endpoints ?? []) {
        if (ep.targetRef?.kind !== 'Pod' || !ep.targetRef.name) continue;
        pods.push(`${ep.targetRef.namespace ?? ns}/${ep.targetRef.name}`);
      }
      this.#slicePods.set(slice, pods);
    }
    return pods;
  }

  /** The keys sorted; the previous order is reused when the set is the same (the common case). */
  sortedKeys(keys: ReadonlyMap<string, unknown>): string[] {
    if (keys.size !== this.#sortedKeys.length || [...keys.keys()].some((k) => !this.#sortedKeySet.has(k))) {
      this.#sortedKeys = [...keys.keys()].sort();
      this.#sortedKeySet = new Set(this.#sortedKeys);
    }
    return this.#sortedKeys;
  }

  /** The Services of the last compile and what they were compiled from. */
  lastServices: { index: ReadonlyMap<string, V1Service>; backing: ReadonlyMap<string, string[]>; services: Map<string, CompiledService>; interesting: ReadonlySet<string> } | undefined;
  /** The index of the last compile (see buildIndex). */
  index: Index | undefined;
  readonly #lists = new Map<string, readonly object[]>();

  /** True when `list` holds the same objects in the same order as the list of that name last time. */
  sameList(name: string, list: readonly object[]): boolean {
    const before = this.#lists.get(name);
    this.#lists.set(name, list);
    if (!before || before.length !== list.length) return false;
    for (let i = 0; i < list.length; i++) if (before[i] !== list[i]) return false;
    return true;
  }

  readonly #podSelections = new WeakMap<V1Pod, { sig: string; indexes: number[] }>();

  /** Indexes of the selector policies (named by `sig`) that select `pod`, per pod object. */
  podSelection(pod: V1Pod, sig: string, compute: () => number[]): number[] {
    const hit = this.#podSelections.get(pod);
    if (hit && hit.sig === sig) return hit.indexes;
    const indexes = compute();
    this.#podSelections.set(pod, { sig, indexes });
    return indexes;
  }

  readonly #plainServices = new WeakMap<V1Service, CompiledService>();

  /** The compiled form of a Service nothing is attached to and no pod backs, per Service object. */
  plainService(svc: V1Service, build: () => CompiledService): CompiledService {
    let c = this.#plainServices.get(svc);
    if (!c) this.#plainServices.set(svc, (c = build()));
    return c;
  }

  basics(svc: V1Service): { ports: ReturnType<typeof tcpPorts>; clusterIPs: string[]; portSig: string } {
    let b = this.serviceBasics.get(svc);
    if (!b) {
      const clusterIPs = (svc.spec?.clusterIPs ?? (svc.spec?.clusterIP ? [svc.spec.clusterIP] : [])).filter((ip) => ip && ip !== 'None');
      b = { ports: tcpPorts(svc), clusterIPs, portSig: (svc.spec?.ports ?? []).map((p) => p.port).join(',') };
      this.serviceBasics.set(svc, b);
    }
    return b;
  }
}

const MODE_RANK: Record<MtlsMode, number> = { DISABLED: 0, PERMISSIVE: 1, STRICT: 2 };
const ok = (reason: string, message: string): ConditionResult => ({ status: 'True', reason, message });
const fail = (reason: string, message: string): ConditionResult => ({ status: 'False', reason, message });

type UserObject = HTTPRoute | MeshTLSPolicy | TrafficPolicy | AuthorizationPolicy;

const uidOf = (kind: UserKind, o: UserObject): string => o.metadata?.uid ?? `${kind}/${keyOf(o)}`;
const generationOf = (o: UserObject): number => (typeof o.metadata?.generation === 'number' ? o.metadata.generation : 1);
const tagOf = (kind: UserKind, o: UserObject, generation: number): string => `${kind}/${keyOf(o)}@${generation}`;
const sortedUnique = <T extends string | number>(values: Iterable<T>): T[] =>
  [...new Set(values)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

/** The result of validating one object and choosing the form in effect. */
interface Settled<S> {
  outcome: ObjectOutcome;
  object: UserObject;
  /** The spec in effect (current if valid, else last good), undefined when none. */
  spec?: S;
  /** How the spec in effect is named in memo signatures. */
  specSig?: string;
}

function settle<S>(
  kind: UserKind,
  object: UserObject,
  validate: () => FieldProblem[],
  lastGoodIn: ReadonlyMap<string, LastGood>,
  lastGoodOut: Map<string, LastGood>,
  memo: CompileMemo,
): Settled<S> {
  const uid = uidOf(kind, object);
  const generation = generationOf(object);
  const problems = memo.validations.get(`${kind}/${uid}`, specSignature(memo.ids, object.spec, object.metadata?.uid, object.metadata?.generation), () => {
    try {
      return validate();
    } catch (err) {
      // A shape the validator did not foresee: refuse the object rather than take the whole compile down.
      return [{ path: 'spec', message: `could not be validated (${(err as Error).message})` }];
    }
  });
  const outcome: ObjectOutcome = {
    kind,
    namespace: object.metadata?.namespace ?? '',
    name: object.metadata?.name ?? '',
    uid,
    generation,
    valid: problems.length === 0,
    problems,
    accepted: ok('Accepted', 'accepted'),
    resolvedRefs: ok('ResolvedRefs', 'all references resolved'),
  };
  if (problems.length === 0) {
    lastGoodOut.set(uid, { kind, generation, spec: object.spec });
    outcome.effectiveGeneration = generation;
    outcome.tag = tagOf(kind, object, generation);
    return { outcome, object, spec: object.spec as S, specSig: `${uid}|${specSignature(memo.ids, object.spec, object.metadata?.uid, object.metadata?.generation)}` };
  }
  outcome.resolvedRefs = { status: 'Unknown', reason: 'Invalid', message: 'not evaluated: the spec is invalid (see Accepted)' };
  const listed = problems.slice(0, 5).map((p) => `${p.path}: ${p.message}`).join('; ');
  const more = problems.length > 5 ? ` (and ${problems.length - 5} more)` : '';
  const previous = lastGoodIn.get(uid);
  if (previous && previous.kind === kind) {
    lastGoodOut.set(uid, previous);
    outcome.effectiveGeneration = previous.generation;
    outcome.tag = tagOf(kind, object, previous.generation);
    outcome.accepted = fail('Invalid', `${listed}${more}; the last good generation ${previous.generation} stays in effect`);
    const explicit = typeof object.metadata?.generation === 'number' ? previous.generation : undefined;
    return { outcome, object, spec: previous.spec as S, specSig: `${uid}|${specSignature(memo.ids, previous.spec, object.metadata?.uid, explicit)}` };
  }
  const none = kind === 'AuthorizationPolicy' && (object as AuthorizationPolicy).spec?.action !== 'AUDIT'
    ? '; it never compiled, so the workloads it selects deny every request until it is fixed'
    : '; it never compiled, so nothing from it is in effect';
  outcome.accepted = fail('Invalid', `${listed}${more}${none}`);
  return { outcome, object };
}

/** Indexes over the snapshot shared by the compile steps. */
interface Index {
  services: Map<string, V1Service>;
  podsByNamespace: Map<string, V1Pod[]>;
  /** Meshable pod keys per namespace. */
  podKeysByNamespace: Map<string, Set<string>>;
  /** Inverted label index: namespace → "key=value" → pod keys, so a Service selector costs its matches, not the namespace. */
  podsByLabel: Map<string, Map<string, string[]>>;
  slicesByService: Map<string, V1EndpointSlice[]>;
  routes: Map<string, HTTPRoute>;
  backing: Map<string, string[]>;
  /** Keys of the Services with at least one meshable pod behind them (computed once per index). */
  backedServices?: string[];
}

function isMeshablePod(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return !!pod.spec?.nodeName && !pod.spec.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed';
}

function buildIndex(s: Snapshot, memo: CompileMemo): Index {
  const routes = new Map(s.httpRoutes.map((r) => [keyOf(r), r]));
  // Services, pods and slices rarely change between two reconciles: their part of the index is reused while
  // the snapshot lists the very same objects.
  const sameServices = memo.sameList('services', s.services);
  const samePods = memo.sameList('pods', s.pods);
  const sameSlices = memo.sameList('endpointSlices', s.endpointSlices);
  const previous = memo.index;
  if (previous && sameServices && samePods && sameSlices) {
    memo.index = { ...previous, routes };
    return memo.index;
  }
  memo.index = undefined; // until rebuilt: a throw below must not leave a stale index behind
  const services = sameServices && previous ? previous.services : new Map(s.services.map((svc) => [memo.keyOf(svc), svc]));
  const podsByNamespace = new Map<string, V1Pod[]>();
  const podKeysByNamespace = new Map<string, Set<string>>();
  const podsByLabel = new Map<string, Map<string, string[]>>();
  for (const pod of s.pods) {
    if (!isMeshablePod(pod)) continue;
    const ns = pod.metadata?.namespace ?? '';
    const key = `${ns}/${pod.metadata?.name ?? ''}`;
    if (!podsByNamespace.has(ns)) {
      podsByNamespace.set(ns, []);
      podKeysByNamespace.set(ns, new Set());
      podsByLabel.set(ns, new Map());
    }
    podsByNamespace.get(ns)!.push(pod);
    podKeysByNamespace.get(ns)!.add(key);
    const labels = podsByLabel.get(ns)!;
    for (const [k, v] of Object.entries(pod.metadata?.labels ?? {})) {
      const pair = `${k}=${v}`;
      if (!labels.has(pair)) labels.set(pair, []);
      labels.get(pair)!.push(key);
    }
  }
  const slicesByService = new Map<string, V1EndpointSlice[]>();
  for (const slice of s.endpointSlices) {
    const key = memo.sliceServiceKey(slice);
    if (key === undefined) continue;
    const list = slicesByService.get(key);
    if (list) list.push(slice);
    else slicesByService.set(key, [slice]);
  }
  const index: Index = { services, podsByNamespace, podKeysByNamespace, podsByLabel, slicesByService, routes, backing: new Map() };
  for (const [key, svc] of services) index.backing.set(key, backingPods(index, key, svc, memo));
  memo.index = index;
  return index;
}

const NO_PODS: readonly string[] = Object.freeze([]);

/**
 * The pods behind a Service: from its EndpointSlices when it has any (the truth in a real cluster), else
 * from its selector (what the EndpointSlice controller would compute), so fixtures can skip slices.
 */
function backingPods(index: Index, key: string, svc: V1Service, memo: CompileMemo): string[] {
  const ns = svc.metadata?.namespace ?? '';
  const slices = index.slicesByService.get(key);
  if (slices && slices.length > 0) {
    const meshable = index.podKeysByNamespace.get(ns);
    let pods: string[] | undefined;
    for (const slice of slices) {
      for (const podKey of memo.slicePods(slice, ns)) {
        if (meshable?.has(podKey)) (pods ??= []).push(podKey);
      }
    }
    // Most Services have no meshable pod behind them: one shared empty list, nothing to sort.
    return pods ? sortedUnique(pods) : (NO_PODS as string[]);
  }
  const selector = svc.spec?.selector;
  if (!selector || Object.keys(selector).length === 0) return [];
  const labels = index.podsByLabel.get(ns);
  const postings = Object.entries(selector).map(([k, v]) => labels?.get(`${k}=${v}`) ?? []);
  postings.sort((a, b) => a.length - b.length);
  const [first, ...rest] = postings;
  const others = rest.map((list) => new Set(list));
  return sortedUnique(first!.filter((podKey) => others.every((set) => set.has(podKey))));
}

/** The TCP ports of a Service (the only ones the mesh handles). */
function tcpPorts(svc: V1Service): Array<{ port: number; name?: string; appProtocol?: string }> {
  return (svc.spec?.ports ?? [])
    .filter((p) => (p.protocol ?? 'TCP') === 'TCP' && Number.isInteger(p.port))
    .map((p) => ({ port: p.port, ...(p.name ? { name: p.name } : {}), ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}) }))
    .sort((a, b) => a.port - b.port);
}

// ---------------------------------------------------------------------------------------------- mTLS

interface MtlsDecision {
  mode: MtlsMode;
  policy?: string;
  tag?: string;
}

function resolveMtls(s: Snapshot, index: Index, settled: Array<Settled<MeshTLSPolicySpec>>, memo: CompileMemo): Map<string, MtlsDecision> {
  const live = settled.filter((x) => x.spec).sort((a, b) => compareAge(a.object, b.object));
  const nsWide = new Map<string, Settled<MeshTLSPolicySpec>>();
  for (const x of live) {
    if (x.spec!.selector !== undefined) continue;
    const ns = x.outcome.namespace;
    const winner = nsWide.get(ns);
    if (winner) {
      if (x.outcome.valid) x.outcome.accepted = fail('Conflicted', `spec.selector: namespace ${ns} already has the namespace-wide MeshTLSPolicy ${keyOf(winner.object)}, which is older and wins`);
    } else nsWide.set(ns, x);
  }
  const meshWide = nsWide.get(s.meshNamespace);
  const lost = new Map<Settled<MeshTLSPolicySpec>, { winner: string; pods: number }>();
  const decisions = new Map<string, MtlsDecision>();
  const decide = (x: Settled<MeshTLSPolicySpec>): MtlsDecision => ({ mode: x.spec!.mode, policy: keyOf(x.object), tag: x.outcome.tag! });
  for (const [ns, pods] of index.podsByNamespace) {
    const selecting = live.filter((x) => x.outcome.namespace === ns && x.spec!.selector !== undefined);
    // Which of them select a pod depends on the pod and on these specs only.
    const selectingSig = selecting.map((x) => x.specSig ?? '').join(';');
    for (const pod of pods) {
      const matching = memo.podSelection(pod, selectingSig, () => selecting.flatMap((x, i) => (matchesSelector(x.spec!.selector!, pod.metadata?.labels) ? [i] : []))).map((i) => selecting[i]!);
      for (const loser of matching.slice(1)) {
        const l = lost.get(loser) ?? { winner: keyOf(matching[0]!.object), pods: 0 };
        l.pods++;
        lost.set(loser, l);
      }
      const chosen = matching[0] ?? nsWide.get(ns) ?? meshWide;
      decisions.set(keyOf(pod), chosen ? decide(chosen) : { mode: 'DISABLED' });
    }
  }
  for (const [loser, l] of lost) {
    if (loser.outcome.valid && loser.outcome.accepted.status === 'True') {
      loser.outcome.accepted = fail('Conflicted', `spec.selector: ${l.pods} pod(s) it selects are also selected by the older MeshTLSPolicy ${l.winner}, which wins for them; it still applies to the others`);
    }
  }
  return decisions;
}

// ------------------------------------------------------------------------------------- authorization

function compileAuthorization(trustDomain: string, namespace: string, spec: AuthorizationPolicySpec, name: string): CompiledAuthorizationPolicy {
  const rules: CompiledAuthorizationRule[] = (spec.rules ?? []).map((r) => {
    const rule: CompiledAuthorizationRule = { requiresHttp: false };
    if (r.from) {
      rule.from = r.from.map((f) => {
        const out: { spiffeIds?: string[]; namespaces?: string[] } = {};
        const ids = [
          ...(f.serviceAccounts ?? []).map((sa) => {
            const [ns, n] = sa.includes('/') ? sa.split('/') : [namespace, sa];
            return `spiffe://${trustDomain}/ns/${ns}/sa/${n}`;
          }),
          ...(f.spiffeIds ?? []),
        ];
        if (ids.length > 0) out.spiffeIds = sortedUnique(ids);
        if (f.namespaces) out.namespaces = sortedUnique(f.namespaces);
        return out;
      });
    }
    if (r.to) {
      rule.to = r.to.map((t) => {
        const out: { ports?: number[]; methods?: string[]; paths?: Array<{ exact?: string; prefix?: string }> } = {};
        if (t.ports) out.ports = sortedUnique(t.ports);
        if (t.methods) out.methods = sortedUnique(t.methods);
        if (t.paths) out.paths = t.paths.map((p) => (p.exact !== undefined ? { exact: p.exact } : { prefix: p.prefix! }));
        if (t.methods || t.paths) rule.requiresHttp = true;
        return out;
      });
    }
    return rule;
  });
  return { name, action: spec.action ?? 'ALLOW', rules };
}

interface AuthzApplied {
  policy: CompiledAuthorizationPolicy;
  tag: string;
}

function resolveAuthorization(s: Snapshot, index: Index, settled: Array<Settled<AuthorizationPolicySpec>>, memo: CompileMemo): Map<string, AuthzApplied[]> {
  const perPod = new Map<string, AuthzApplied[]>();
  const apply = (podKey: string, a: AuthzApplied): void => {
    if (!perPod.has(podKey)) perPod.set(podKey, []);
    perPod.get(podKey)!.push(a);
  };
  for (const x of settled) {
    const o = x.object as AuthorizationPolicy;
    const ns = x.outcome.namespace;
    let spec = x.spec;
    let failClosed = false;
    let sig = x.specSig ?? '';
    if (!spec) {
      const action = o.spec?.action ?? 'ALLOW';
      if (action === 'AUDIT') continue;
      // Never compiled: stand in with deny-everything over what it meant to select, or over its whole
      // namespace when even the selection is broken. Narrowing access is the only safe guess.
      const selectionBroken = x.outcome.problems.some((p) => p.path === 'spec' || p.path.startsWith('spec.targetRefs') || p.path.startsWith('spec.selector'));
      spec = selectionBroken ? { action: 'DENY', rules: [{}] } : { targetRefs: o.spec?.targetRefs, selector: o.spec?.selector, action: 'DENY', rules: [{}] } as AuthorizationPolicySpec;
      failClosed = true;
      x.outcome.failClosed = true;
      x.outcome.tag = `AuthorizationPolicy/${keyOf(o)}@${x.outcome.generation}`;
      sig = `failClosed|${selectionBroken}|${specSignature(memo.ids, o.spec, o.metadata?.uid, o.metadata?.generation)}`;
    }
    const standIn = spec;
    const compiled = memo.authorizationPolicies.get(x.outcome.uid, `${sig}|${s.trustDomain}|${keyOf(o)}`, () => {
      const c = compileAuthorization(s.trustDomain, ns, standIn, keyOf(o));
      if (failClosed) c.failClosed = true;
      return c;
    });
    const applied: AuthzApplied = { policy: compiled, tag: x.outcome.tag! };
    let pods: string[];
    if (spec.targetRefs && spec.targetRefs.length > 0) {
      const missing: string[] = [];
      pods = [];
      spec.targetRefs.forEach((t, i) => {
        const key = `${ns}/${t.name}`;
        if (!index.services.has(key)) missing.push(`spec.targetRefs[${i}]: Service "${key}" not found`);
        else pods.push(...(index.backing.get(key) ?? []));
      });
      if (missing.length > 0 && x.outcome.valid) x.outcome.resolvedRefs = fail('TargetNotFound', missing.join('; '));
    } else if (spec.selector) {
      const sel: LabelSelector = spec.selector;
      pods = (index.podsByNamespace.get(ns) ?? []).filter((p) => matchesSelector(sel, p.metadata?.labels)).map((p) => keyOf(p));
    } else if (ns === s.meshNamespace) {
      pods = [...index.podsByNamespace.values()].flat().map((p) => keyOf(p));
    } else {
      pods = (index.podsByNamespace.get(ns) ?? []).map((p) => keyOf(p));
    }
    for (const pod of sortedUnique(pods)) apply(pod, applied);
  }
  return perPod;
}

// --------------------------------------------------------------------------------------------- routes

function normalizeMatch(m: HTTPRouteMatch | undefined): CompiledRouteMatch {
  const path = { type: m?.path?.type ?? 'PathPrefix', value: m?.path?.value ?? '/' };
  const out: CompiledRouteMatch = { path };
  if (m?.method) out.method = m.method;
  if (m?.headers?.length) {
    out.headers = m.headers
      .map((h) => ({ type: h.type ?? 'Exact', name: h.name.toLowerCase(), value: h.value }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  if (m?.queryParams?.length) {
    out.queryParams = m.queryParams
      .map((q) => ({ type: q.type ?? 'Exact', name: q.name, value: q.value }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return out;
}

/** A reference problem found while resolving a backend. */
interface RefProblem {
  reason: 'BackendNotFound' | 'RefNotPermitted' | 'InvalidKind';
  message: string;
}

function resolveBackend(
  index: Index,
  routeNs: string,
  ref: { group?: string; kind?: string; namespace?: string; name: string; port?: number },
  path: string,
  problems: RefProblem[],
): { namespace: string; name: string; port: number; resolved: boolean } {
  const ns = ref.namespace ?? routeNs;
  const base = { namespace: ns, name: ref.name, port: ref.port ?? 0 };
  const group = ref.group ?? '';
  const kind = ref.kind ?? 'Service';
  if ((group !== '' && group !== 'core') || kind !== 'Service') {
    problems.push({ reason: 'InvalidKind', message: `${path}: ${kind}${group ? `.${group}` : ''} "${ns}/${ref.name}" is not a Service; only Services can be backends` });
    return { ...base, resolved: false };
  }
  if (ns !== routeNs) {
    problems.push({ reason: 'RefNotPermitted', message: `${path}: Service "${ns}/${ref.name}" is in another namespace; cross-namespace backends need a ReferenceGrant, which nodemesh does not support yet` });
    return { ...base, resolved: false };
  }
  const svc = index.services.get(`${ns}/${ref.name}`);
  if (!svc) {
    problems.push({ reason: 'BackendNotFound', message: `${path}: Service "${ns}/${ref.name}" not found` });
    return { ...base, resolved: false };
  }
  if (!(svc.spec?.ports ?? []).some((p) => p.port === ref.port)) {
    problems.push({ reason: 'BackendNotFound', message: `${path}.port: Service "${ns}/${ref.name}" has no port ${ref.port}` });
    return { ...base, resolved: false };
  }
  return { ...base, resolved: true };
}

/** A compiled backend with its fields in schema order (readable NodeState YAML). */
function backendOf(b: { namespace: string; name: string; port: number; resolved: boolean }, weight: number): CompiledBackend {
  return { namespace: b.namespace, name: b.name, port: b.port, weight, resolved: b.resolved };
}

function compileFilter(index: Index, routeNs: string, f: HTTPRouteFilter, path: string, problems: RefProblem[]): CompiledFilter {
  switch (f.type) {
    case 'RequestHeaderModifier':
    case 'ResponseHeaderModifier': {
      const m = (f.type === 'RequestHeaderModifier' ? f.requestHeaderModifier : f.responseHeaderModifier) ?? {};
      return { type: f.type, headers: { set: m.set ?? [], add: m.add ?? [], remove: m.remove ?? [] } };
    }
    case 'RequestRedirect': {
      const r = f.requestRedirect ?? {};
      return {
        type: f.type,
        redirect: {
          ...(r.scheme ? { scheme: r.scheme } : {}),
          ...(r.hostname ? { hostname: r.hostname } : {}),
          ...(r.port ? { port: r.port } : {}),
          statusCode: r.statusCode ?? 302,
          ...(r.path?.type === 'ReplaceFullPath' ? { replaceFullPath: r.path.replaceFullPath } : {}),
          ...(r.path?.type === 'ReplacePrefixMatch' ? { replacePrefixMatch: r.path.replacePrefixMatch } : {}),
        },
      };
    }
    case 'URLRewrite': {
      const r = f.urlRewrite ?? {};
      return {
        type: f.type,
        rewrite: {
          ...(r.hostname ? { hostname: r.hostname } : {}),
          ...(r.path?.type === 'ReplaceFullPath' ? { replaceFullPath: r.path.replaceFullPath } : {}),
          ...(r.path?.type === 'ReplacePrefixMatch' ? { replacePrefixMatch: r.path.replacePrefixMatch } : {}),
        },
      };
    }
    case 'RequestMirror': {
      const m = f.requestMirror!;
      const backend = resolveBackend(index, routeNs, m.backendRef, `${path}.requestMirror.backendRef`, problems);
      const percent = m.percent ?? (m.fraction ? (100 * m.fraction.numerator) / (m.fraction.denominator ?? 100) : 100);
      return { type: f.type, mirror: { backend, percent } };
    }
  }
}

/** Entries of one route, per rule and match, with the reference problems found on the way. */
function compileRouteEntries(index: Index, route: HTTPRoute, spec: HTTPRouteSpec, problems: RefProblem[]): CompiledRoute[] {
  const ns = route.metadata?.namespace ?? '';
  const entries: CompiledRoute[] = [];
  (spec.rules ?? []).forEach((rule, ri) => {
    const rp = `spec.rules[${ri}]`;
    const filters = (rule.filters ?? []).map((f, fi) => compileFilter(index, ns, f, `${rp}.filters[${fi}]`, problems));
    const backends: CompiledBackend[] = (rule.backendRefs ?? []).map((b, bi) =>
      backendOf(resolveBackend(index, ns, b, `${rp}.backendRefs[${bi}]`, problems), b.weight ?? 1));
    const timeouts: { requestMs?: number; backendRequestMs?: number } = {};
    const request = parseDuration(rule.timeouts?.request);
    const backendRequest = parseDuration(rule.timeouts?.backendRequest);
    if (request !== undefined) timeouts.requestMs = request;
    if (backendRequest !== undefined) timeouts.backendRequestMs = backendRequest;
    const matches = rule.matches && rule.matches.length > 0 ? rule.matches : [undefined];
    matches.forEach((m, mi) => {
      const entry: CompiledRoute = {
        route: keyOf(route),
        ruleIndex: ri,
        ...(rule.name ? { ruleName: rule.name } : {}),
        matchIndex: mi,
        ...(spec.hostnames?.length ? { hostnames: sortedUnique(spec.hostnames) } : {}),
        match: normalizeMatch(m),
        filters,
        backends,
      };
      if (Object.keys(timeouts).length > 0) entry.timeouts = timeouts;
      if (rule.retry) {
        entry.retry = {
          attempts: rule.retry.attempts ?? RETRY_DEFAULTS.attempts,
          codes: sortedUnique(rule.retry.codes ?? RETRY_DEFAULTS.codes),
          backoffMs: parseDuration(rule.retry.backoff) ?? RETRY_DEFAULTS.backoffMs,
        };
      }
      entries.push(entry);
    });
  });
  return entries;
}

/** Gateway API precedence: Exact, longest prefix, method, most headers, most query params, oldest, rule order. */
function comparePrecedence(a: RouteEntry, b: RouteEntry): number {
  const scope = (a.entry.consumerNamespace ?? '') < (b.entry.consumerNamespace ?? '') ? -1 : (a.entry.consumerNamespace ?? '') > (b.entry.consumerNamespace ?? '') ? 1 : 0;
  if (scope !== 0) return scope;
  const rank = { Exact: 0, PathPrefix: 1, RegularExpression: 2 } as const;
  const pa = a.entry.match.path;
  const pb = b.entry.match.path;
  return (
    rank[pa.type] - rank[pb.type] ||
    pb.value.length - pa.value.length ||
    Number(!!b.entry.match.method) - Number(!!a.entry.match.method) ||
    (b.entry.match.headers?.length ?? 0) - (a.entry.match.headers?.length ?? 0) ||
    (b.entry.match.queryParams?.length ?? 0) - (a.entry.match.queryParams?.length ?? 0) ||
    compareEntryAge(a, b) ||
    a.entry.ruleIndex - b.entry.ruleIndex ||
    a.entry.matchIndex - b.entry.matchIndex
  );
}

function describeMatch(e: CompiledRoute): string {
  const parts = [`path ${e.match.path.type} ${e.match.path.value}`];
  if (e.match.method) parts.push(`method ${e.match.method}`);
  for (const h of e.match.headers ?? []) parts.push(`header ${h.name}=${h.value}`);
  for (const q of e.match.queryParams ?? []) parts.push(`query ${q.name}=${q.value}`);
  if (e.hostnames) parts.push(`hostnames ${e.hostnames.join(',')}`);
  return parts.join(', ');
}

interface RouteAttachment {
  serviceKey: string;
  port: number;
  entries: RouteEntry[];
  route: string;
}

function matchKey(memo: CompileMemo, e: CompiledRoute): string {
  let k = memo.matchKeys.get(e);
  if (k === undefined) {
    k = canonicalJson({ m: e.match, h: e.hostnames ?? [] });
    memo.matchKeys.set(e, k);
  }
  return k;
}

/** The entry as seen from clients in namespace `consumer` (kept per base entry, so its identity is stable). */
function consumerEntry(memo: CompileMemo, e: CompiledRoute, consumer: string): CompiledRoute {
  let byConsumer = memo.consumerEntries.get(e);
  if (!byConsumer) memo.consumerEntries.set(e, (byConsumer = new Map()));
  let scoped = byConsumer.get(consumer);
  if (!scoped) {
    const { route: r, ruleIndex, ruleName, matchIndex, ...rest } = e;
    scoped = { route: r, ruleIndex, ...(ruleName ? { ruleName } : {}), matchIndex, consumerNamespace: consumer, ...rest };
    byConsumer.set(consumer, scoped);
  }
  return scoped;
}

/** Keys ("namespace/name") of every Service a route's backends and mirrors may name. */
function backendServiceKeys(routeNs: string, spec: HTTPRouteSpec): string[] {
  const keys: string[] = [];
  const add = (ref: { namespace?: string; name?: string } | undefined): void => {
    if (ref && typeof ref === 'object') keys.push(`${ref.namespace ?? routeNs}/${ref.name ?? ''}`);
  };
  for (const rule of Array.isArray(spec.rules) ? spec.rules : []) {
    for (const b of Array.isArray(rule?.backendRefs) ? rule.backendRefs : []) add(b);
    for (const f of Array.isArray(rule?.filters) ? rule.filters : []) add(f?.requestMirror?.backendRef);
  }
  return keys;
}

function resolveRoutes(
  index: Index,
  settled: Array<Settled<HTTPRouteSpec>>,
  routePolicies: Map<string, { policy: CompiledTrafficPolicy; tag: string }>,
  memo: CompileMemo,
): RouteAttachment[] {
  const claims = new Map<string, string>();
  const attachments: RouteAttachment[] = [];
  const ordered = [...settled].sort((a, b) => compareAge(a.object, b.object));
  ordered.forEach((x) => {
    const route = x.object as HTTPRoute;
    const routeKey = keyOf(route);
    const routeNs = route.metadata?.namespace ?? '';
    // Parents reported: from the spec in effect, else (invalid, never compiled) from the current one.
    const parentSpec = (x.spec ?? (route.spec as HTTPRouteSpec | undefined)) ?? {};
    const parents: ParentOutcome[] = [];
    x.outcome.parents = parents;
    const parentRefs = Array.isArray(parentSpec.parentRefs) ? parentSpec.parentRefs : [];
    const refProblems: RefProblem[] = [];
    let entries: CompiledRoute[] = [];
    if (x.spec) {
      const spec = x.spec;
      // The entries read the route's spec and, for each backend, whether its Service exists and its ports.
      const deps = backendServiceKeys(routeNs, spec).map((k) => {
        const svc = index.services.get(k);
        return `${k}:${svc ? memo.basics(svc).portSig : '-'}`;
      });
      const compiled = memo.routes.get(x.outcome.uid, `${x.specSig ?? ''}|${deps.join(';')}`, () => {
        const problems: RefProblem[] = [];
        return { entries: compileRouteEntries(index, route, spec, problems), problems };
      });
      entries = compiled.entries;
      refProblems.push(...compiled.problems);
    }
    if (x.spec && refProblems.length > 0) {
      x.outcome.resolvedRefs = fail(refProblems[0]!.reason, refProblems.slice(0, 5).map((p) => p.message).join('; ') + (refProblems.length > 5 ? ` (and ${refProblems.length - 5} more)` : ''));
    }
    if (!x.outcome.valid) x.outcome.resolvedRefs = { status: 'Unknown', reason: 'Invalid', message: 'not evaluated: the spec is invalid (see Accepted)' };
    const attachedHere = new Set<string>();
    parentRefs.forEach((ref, i) => {
      if (!ref || typeof ref !== 'object') return;
      const group = ref.group ?? 'gateway.networking.k8s.io';
      const kind = ref.kind ?? 'Gateway';
      if (kind !== 'Service' || (group !== '' && group !== 'core')) return; // another implementation's parent
      const parentRef: ParentReference = { group: '', kind: 'Service', name: ref.name, ...(ref.namespace ? { namespace: ref.namespace } : {}), ...(ref.port ? { port: ref.port } : {}), ...(ref.sectionName ? { sectionName: ref.sectionName } : {}) };
      const p: ParentOutcome = { index: i, parentRef, accepted: ok('Accepted', '') };
      parents.push(p);
      const svcNs = ref.namespace ?? routeNs;
      const svcKey = `${svcNs}/${ref.name}`;
      const where = `spec.parentRefs[${i}]`;
      if (!x.outcome.valid) {
        p.accepted = x.outcome.accepted;
      }
      const svc = index.services.get(svcKey);
      if (!svc) {
        if (x.outcome.valid) p.accepted = fail('NoMatchingParent', `${where}: Service "${svcKey}" not found`);
        return;
      }
      if (svc.spec?.type === 'ExternalName') {
        if (x.outcome.valid) p.accepted = fail('UnsupportedValue', `${where}: Service "${svcKey}" is an ExternalName Service; the mesh cannot route for it`);
        return;
      }
      let ports = memo.basics(svc).ports;
      if (ref.port !== undefined) ports = ports.filter((sp) => sp.port === ref.port);
      if (ref.sectionName !== undefined) ports = ports.filter((sp) => sp.name === ref.sectionName);
      if (ports.length === 0) {
        const what = ref.port !== undefined ? `port ${ref.port}` : ref.sectionName !== undefined ? `port named ${ref.sectionName}` : 'TCP port';
        if (x.outcome.valid) p.accepted = fail('NoMatchingParent', `${where}: Service "${svcKey}" has no ${what}`);
        return;
      }
      if (!x.spec) return; // invalid and never compiled: nothing to attach
      const consumer = svcNs !== routeNs ? routeNs : undefined;
      const routeEntries: RouteEntry[] = entries.map((e) => {
        const entry: CompiledRoute = consumer ? consumerEntry(memo, e, consumer) : e;
        const tags = [x.outcome.tag!];
        const rp = routePolicies.get(routeKey);
        if (rp) tags.push(rp.tag);
        return { entry, tags, created: creationMillis(route) };
      });
      // Conflicts: the same Service, port, consumer scope and match already claimed by an older route.
      for (const sp of ports) {
        for (const re of routeEntries) {
          const claim = `${svcKey}|${sp.port}|${consumer ?? ''}|${matchKey(memo, re.entry)}`;
          const owner = claims.get(claim);
          if (owner !== undefined && owner !== routeKey) {
            if (x.outcome.valid) p.accepted = fail('Conflicted', `${where}: Service "${svcKey}" port ${sp.port} with match {${describeMatch(re.entry)}} is already claimed by HTTPRoute "${owner}", which is older and wins`);
            return;
          }
        }
      }
      for (const sp of ports) {
        for (const re of routeEntries) {
          claims.set(`${svcKey}|${sp.port}|${consumer ?? ''}|${matchKey(memo, re.entry)}`, routeKey);
        }
      }
      p.serviceKey = svcKey;
      if (x.outcome.valid) p.accepted = ok('Accepted', `attached to Service "${svcKey}" port${ports.length > 1 ? 's' : ''} ${ports.map((sp) => sp.port).join(', ')}${consumer ? ` for clients in namespace ${consumer}` : ''}`);
      for (const sp of ports) {
        const dedupe = `${svcKey}|${sp.port}`;
        if (attachedHere.has(dedupe)) continue;
        attachedHere.add(dedupe);
        attachments.push({ serviceKey: svcKey, port: sp.port, entries: routeEntries, route: routeKey });
      }
    });
  });
  return attachments;
}

// ---------------------------------------------------------------------------------- traffic policies

function compileTrafficPolicy(spec: TrafficPolicySpec): CompiledTrafficPolicy {
  const out: CompiledTrafficPolicy = {};
  if (spec.timeouts) {
    const t: { connectMs?: number; idleMs?: number } = {};
    const c = parseDuration(spec.timeouts.connect);
    const i = parseDuration(spec.timeouts.idle);
    if (c !== undefined) t.connectMs = c;
    if (i !== undefined) t.idleMs = i;
    out.timeouts = t;
  }
  if (spec.retryBudget) out.retryBudget = { percent: spec.retryBudget.percent ?? 20, minRetriesPerSecond: spec.retryBudget.minRetriesPerSecond ?? 3 };
  if (spec.circuitBreaker) out.circuitBreaker = { ...spec.circuitBreaker };
  if (spec.outlierDetection) {
    const o = spec.outlierDetection;
    out.outlierDetection = {
      ...(o.consecutive5xx !== undefined ? { consecutive5xx: o.consecutive5xx } : {}),
      ...(o.consecutiveGatewayErrors !== undefined ? { consecutiveGatewayErrors: o.consecutiveGatewayErrors } : {}),
      ...(o.interval !== undefined ? { intervalMs: parseDuration(o.interval)! } : {}),
      ...(o.baseEjectionTime !== undefined ? { baseEjectionTimeMs: parseDuration(o.baseEjectionTime)! } : {}),
      ...(o.maxEjectionPercent !== undefined ? { maxEjectionPercent: o.maxEjectionPercent } : {}),
    };
  }
  if (spec.loadBalancer) {
    const lb: NonNullable<CompiledTrafficPolicy['loadBalancer']> = { algorithm: spec.loadBalancer.algorithm };
    const h = spec.loadBalancer.hash;
    if (h?.header) lb.hash = { header: h.header.toLowerCase() };
    else if (h?.cookie) lb.hash = { cookie: { name: h.cookie.name, ...(h.cookie.ttl ? { ttlMs: parseDuration(h.cookie.ttl)! } : {}) } };
    else if (h?.sourceIP) lb.hash = { sourceIP: true };
    out.loadBalancer = lb;
  }
  if (spec.rateLimit) {
    out.rateLimit = {
      requestsPerSecond: spec.rateLimit.requestsPerSecond,
      burst: spec.rateLimit.burst ?? spec.rateLimit.requestsPerSecond,
      perSourceIdentity: spec.rateLimit.perSourceIdentity ?? false,
    };
  }
  if (spec.faultInjection) {
    const f: NonNullable<CompiledTrafficPolicy['faultInjection']> = {};
    if (spec.faultInjection.delay) f.delay = { fixedDelayMs: parseDuration(spec.faultInjection.delay.fixedDelay)!, percent: spec.faultInjection.delay.percent };
    if (spec.faultInjection.abort) f.abort = { ...spec.faultInjection.abort };
    out.faultInjection = f;
  }
  return out;
}

function resolveTrafficPolicies(index: Index, settled: Array<Settled<TrafficPolicySpec>>, memo: CompileMemo): {
  services: Map<string, { policy: CompiledTrafficPolicy; tag: string }>;
  routes: Map<string, { policy: CompiledTrafficPolicy; tag: string }>;
} {
  const services = new Map<string, { policy: CompiledTrafficPolicy; tag: string; owner: string }>();
  const routes = new Map<string, { policy: CompiledTrafficPolicy; tag: string; owner: string }>();
  for (const x of [...settled].sort((a, b) => compareAge(a.object, b.object))) {
    if (!x.spec) continue;
    const ns = x.outcome.namespace;
    const spec = x.spec;
    const compiled = memo.trafficPolicies.get(x.outcome.uid, x.specSig ?? '', () => compileTrafficPolicy(spec));
    const missing: string[] = [];
    const lost: string[] = [];
    let won = 0;
    (x.spec.targetRefs ?? []).forEach((t, i) => {
      const key = `${ns}/${t.name}`;
      const isRoute = t.kind === 'HTTPRoute';
      const exists = isRoute ? index.routes.has(key) : index.services.has(key);
      if (!exists) {
        missing.push(`spec.targetRefs[${i}]: ${t.kind} "${key}" not found`);
        return;
      }
      const table = isRoute ? routes : services;
      const owner = table.get(key);
      if (owner && owner.owner !== keyOf(x.object)) {
        lost.push(`spec.targetRefs[${i}]: ${t.kind} "${key}" already has TrafficPolicy "${owner.owner}", which is older and wins`);
        return;
      }
      table.set(key, { policy: compiled, tag: x.outcome.tag!, owner: keyOf(x.object) });
      won++;
    });
    if (x.outcome.valid && missing.length > 0) x.outcome.resolvedRefs = fail('TargetNotFound', missing.join('; '));
    if (x.outcome.valid && lost.length > 0) {
      x.outcome.accepted = fail('Conflicted', `${lost.join('; ')}${won > 0 ? '; it still applies to its other targets' : ''}`);
    }
  }
  return { services, routes };
}

/** Route-level policy fields override the Service-level ones, top-level field by field. */
function mergePolicies(base: CompiledTrafficPolicy | undefined, over: CompiledTrafficPolicy): CompiledTrafficPolicy {
  return { ...(base ?? {}), ...over };
}

// ---------------------------------------------------------------------------------------------- main

/**
 * Compiles a snapshot. `lastGood` is what the previous compile returned in `lastGood` (empty at start):
 * an object that is invalid now keeps the compiled form of its last valid generation.
 */
export function compileMesh(snapshot: Snapshot, lastGood: ReadonlyMap<string, LastGood> = new Map(), memo: CompileMemo = new CompileMemo()): CompiledMesh {
  const ids = memo.ids;
  const index = buildIndex(snapshot, memo);
  const lastGoodOut = new Map<string, LastGood>();
  const routes = snapshot.httpRoutes.map((r) => settle<HTTPRouteSpec>('HTTPRoute', r, () => validateHTTPRoute(r), lastGood, lastGoodOut, memo));
  const mtls = snapshot.meshTLSPolicies.map((p) => settle<MeshTLSPolicySpec>('MeshTLSPolicy', p, () => validateMeshTLSPolicy(p), lastGood, lastGoodOut, memo));
  const traffic = snapshot.trafficPolicies.map((p) => settle<TrafficPolicySpec>('TrafficPolicy', p, () => validateTrafficPolicy(p), lastGood, lastGoodOut, memo));
  const authz = snapshot.authorizationPolicies.map((p) => settle<AuthorizationPolicySpec>('AuthorizationPolicy', p, () => validateAuthorizationPolicy(p), lastGood, lastGoodOut, memo));

  const mtlsByPod = resolveMtls(snapshot, index, mtls, memo);
  const authzByPod = resolveAuthorization(snapshot, index, authz, memo);
  const trafficPolicies = resolveTrafficPolicies(index, traffic, memo);
  const attachments = resolveRoutes(index, routes, trafficPolicies.routes, memo);

  // Workloads: each reads its pod, its mTLS decision and the authorization policies applied to it.
  const workloads = new Map<string, CompiledWorkload>();
  for (const pods of index.podsByNamespace.values()) {
    for (const pod of pods) {
      const key = keyOf(pod);
      const decision = mtlsByPod.get(key) ?? { mode: 'DISABLED' as const };
      const applied = authzByPod.get(key);
      const sig = `${ids.of(pod)}|${snapshot.trustDomain}|${decision.mode}|${decision.policy ?? ''}|${decision.tag ?? ''}|${(applied ?? []).map((a) => `${ids.of(a.policy)}=${a.tag}`).join(',')}`;
      workloads.set(key, memo.workloads.get(key, sig, () => compileWorkload(snapshot.trustDomain, pod, decision, applied)));
    }
  }

  // Services: each reads its Service object, the pods behind it, and what is attached to its ports.
  const byPort = new Map<string, RouteEntry[]>();
  for (const a of attachments) {
    const k = `${a.serviceKey}|${a.port}`;
    if (!byPort.has(k)) byPort.set(k, []);
    byPort.get(k)!.push(...a.entries);
  }
  const attachedServices = new Set(attachments.map((a) => a.serviceKey));
  const routesByKey = new Map(routes.map((x) => [keyOf(x.object), x]));
  const compileService = (key: string): CompiledService | undefined => {
    const svc = index.services.get(key)!;
    if (svc.spec?.type === 'ExternalName') return undefined;
    const { ports, clusterIPs } = memo.basics(svc);
    if (ports.length === 0) return undefined;
    const backing = index.backing.get(key) ?? [];
    const svcPolicy = trafficPolicies.services.get(key);
    if (backing.length === 0 && !svcPolicy && !attachedServices.has(key)) {
      // Nothing attached and no pod behind it (most Services in a large cluster): a function of the object alone.
      return memo.plainService(svc, () => ({
        namespace: svc.metadata?.namespace ?? '',
        name: svc.metadata?.name ?? '',
        clusterIPs,
        mtlsMode: 'DISABLED',
        needsTcpMesh: false,
        ports: ports.map((sp) => ({ ...sp, routes: [], policyTags: [] })),
        backingPods: backing,
        mtlsTags: [],
      }));
    }
    let mode: MtlsMode = 'DISABLED';
    let hasAuthz = false;
    const mtlsTags = new Set<string>();
    for (const podKey of backing) {
      const w = workloads.get(podKey)?.workload;
      if (!w) continue;
      if (MODE_RANK[w.mtls.mode] > MODE_RANK[mode]) mode = w.mtls.mode;
      if (w.authorization) hasAuthz = true;
      const tag = mtlsByPod.get(podKey)?.tag;
      if (tag) mtlsTags.add(tag);
    }
    const attached = ports.map((sp) => [...(byPort.get(`${key}|${sp.port}`) ?? [])].sort(comparePrecedence));
    const sortedTags = [...mtlsTags].sort();
    let sig = `${ids.of(svc)}|${backing.join(',')}|${mode}|${hasAuthz}|${sortedTags.join(',')}|${svcPolicy ? `${ids.of(svcPolicy.policy)}=${svcPolicy.tag}` : ''}`;
    for (const list of attached) {
      sig += '|';
      for (const re of list) {
        const rp = trafficPolicies.routes.get(re.entry.route);
        sig += `${ids.of(re.entry)}/${re.tags.join(',')}/${rp ? `${ids.of(rp.policy)}=${rp.tag}` : ''};`;
      }
    }
    const built = memo.services.get(key, sig, () => {
      const compiledPorts: CompiledPort[] = ports.map((sp, i) => {
        const entries = attached[i]!.map((re) => {
          const rp = trafficPolicies.routes.get(re.entry.route);
          if (!rp) return re;
          return { ...re, entry: { ...re.entry, trafficPolicy: mergePolicies(svcPolicy?.policy, rp.policy) }, tags: sortedUnique([...re.tags, ...(svcPolicy ? [svcPolicy.tag] : [])]) };
        });
        const port: CompiledPort = { ...sp, routes: entries, policyTags: svcPolicy ? [svcPolicy.tag] : [] };
        if (svcPolicy) port.trafficPolicy = svcPolicy.policy;
        return port;
      });
      const service: CompiledService = {
        namespace: svc.metadata?.namespace ?? '',
        name: svc.metadata?.name ?? '',
        clusterIPs,
        mtlsMode: mode,
        needsTcpMesh: mode !== 'DISABLED' || hasAuthz,
        ports: compiledPorts,
        backingPods: backing,
        mtlsTags: sortedTags,
      };
      return { service, leftOut: trimServiceEntry(service) };
    });
    for (const routeKey of built.leftOut) markTooLarge(routesByKey.get(routeKey), key);
    return built.service;
  };
  // A Service is "plain" when nothing is attached and no pod backs it: its entry is then a function of the
  // object alone and never needs the mesh. Only the others are compiled when the Services and their backing
  // pods are the same as in the last compile; the plain ones are carried over.
  const interesting = new Set<string>([...(index.backedServices ??= [...index.backing].filter(([, pods]) => pods.length > 0).map(([k]) => k)), ...trafficPolicies.services.keys(), ...attachedServices]);
  let services: Map<string, CompiledService>;
  const last = memo.lastServices;
  if (last && last.index === index.services && last.backing === index.backing) {
    services = new Map(last.services);
    for (const key of new Set([...interesting, ...last.interesting])) {
      if (!index.services.has(key)) continue; // a target or parent that does not exist
      const c = compileService(key);
      if (c) services.set(key, c);
      else services.delete(key);
    }
  } else {
    services = new Map();
    for (const key of memo.sortedKeys(index.services)) {
      const c = compileService(key);
      if (c) services.set(key, c);
    }
  }
  memo.lastServices = { index: index.services, backing: index.backing, services, interesting };
  const meshServices: CompiledService[] = [];
  for (const key of [...interesting].sort()) {
    const c = services.get(key);
    if (c && (c.needsTcpMesh || c.ports.some((p) => p.routes.length > 0 || p.trafficPolicy))) meshServices.push(c);
  }
  memo.sweep();

  const outcomes = [...routes, ...mtls, ...traffic, ...authz]
    .map((x) => x.outcome)
    .sort((a, b) => (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0) || (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : 0) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const workloadsByNode = new Map<string, string[]>();
  for (const key of [...workloads.keys()].sort()) {
    const node = workloads.get(key)!.nodeName;
    if (!workloadsByNode.has(node)) workloadsByNode.set(node, []);
    workloadsByNode.get(node)!.push(key);
  }
  return { trustDomain: snapshot.trustDomain, workloads, workloadsByNode, services, meshServices, outcomes, lastGood: lastGoodOut };
}

/** A pod's NodeState entry from its mTLS decision and the authorization policies that apply to it. */
function compileWorkload(trustDomain: string, pod: V1Pod, decision: MtlsDecision, applied: AuthzApplied[] | undefined): CompiledWorkload {
  const ns = pod.metadata?.namespace ?? '';
  const sa = pod.spec?.serviceAccountName ?? 'default';
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => !!ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  const sources: string[] = decision.tag ? [decision.tag] : [];
  const workload: NodeWorkload = {
    namespace: ns,
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    serviceAccount: sa,
    spiffeId: `spiffe://${trustDomain}/ns/${ns}/sa/${sa}`,
    podIPs: ips,
    mtls: decision.policy ? { mode: decision.mode, policy: decision.policy } : { mode: decision.mode },
    sources,
  };
  if (applied && applied.length > 0) {
    const order = { DENY: 0, ALLOW: 1, AUDIT: 2 } as const;
    const policies = applied
      .map((a) => a.policy)
      .sort((a, b) => order[a.action] - order[b.action] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    workload.authorization = { defaultAction: policies.some((p) => p.action === 'ALLOW') ? 'Deny' : 'Allow', policies };
    sources.push(...applied.map((a) => a.tag));
  }
  // Re-create in schema order so the NodeState reads naturally (sources last).
  const { sources: _drop, ...rest } = workload;
  return { nodeName: pod.spec!.nodeName!, workload: { ...rest, sources: sortedUnique(sources) } };
}

/**
 * Keeps a Service entry under MAX_SERVICE_ENTRY_BYTES by detaching its youngest routes (returned; their
 * parents then report Accepted=False reason TooLarge). Without it one huge Service could not fit in any shard.
 */
function trimServiceEntry(svc: CompiledService): string[] {
  // Only routes make an entry grow; a Service without any is a few hundred bytes.
  if (!svc.ports.some((p) => p.routes.length > 0) || jsonBytes(svc) <= MAX_SERVICE_ENTRY_BYTES) return [];
  const byRoute = new Map<string, RouteEntry>();
  for (const p of svc.ports) for (const r of p.routes) byRoute.set(r.entry.route, r);
  const youngestFirst = [...byRoute.values()].sort((a, b) => compareEntryAge(b, a)).map((r) => r.entry.route);
  const leftOut: string[] = [];
  for (const routeKey of youngestFirst) {
    if (jsonBytes(svc) <= MAX_SERVICE_ENTRY_BYTES) break;
    for (const p of svc.ports) p.routes = p.routes.filter((r) => r.entry.route !== routeKey);
    leftOut.push(routeKey);
  }
  return leftOut;
}

function markTooLarge(x: Settled<HTTPRouteSpec> | undefined, serviceKey: string): void {
  for (const parent of x?.outcome.parents ?? []) {
    if (parent.serviceKey === serviceKey) {
      parent.accepted = fail('TooLarge', `spec.parentRefs[${parent.index}]: the routes attached to Service "${serviceKey}" exceed ${MAX_SERVICE_ENTRY_BYTES / 1024} KiB compiled; this route, the youngest, was left out`);
      delete parent.serviceKey;
    }
  }
}
