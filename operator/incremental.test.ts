/**
 * The memoised compile (CompileMemo, NodeStateMemo kept across runs, as the reconciler does) must give exactly
 * what a compile from scratch gives, whatever the sequence of changes. fast-check drives random sequences of
 * adds, spec changes, status-only updates, deletes and re-creations over a small cluster (pods moving nodes and
 * changing labels, Services gaining ports, EndpointSlices, routes with consumers, conflicts, broken specs,
 * policies of every kind); after every step both results are compared: the compiled mesh, every node's
 * NodeStates and every status.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CompileMemo, compileMesh, type CompiledMesh, type LastGood } from './compile-mesh.ts';
import { computeNodeState, NodeStateMemo } from './compute-node-state.ts';
import { computeStatuses } from './compute-status.ts';
import { buildSnapshot } from './snapshot.ts';
import { canonicalJson, sameJson } from './canonical-json.ts';

type Obj = { apiVersion: string; kind: string; metadata: Record<string, unknown> & { name: string; namespace?: string }; spec?: unknown; status?: unknown; [k: string]: unknown };

const NAMESPACES = ['shop', 'web', 'nodemesh-system'];
const NODES = ['n1', 'n2', 'n3'];
const APPS = ['a', 'b', 'c'];
const SERVICES = ['s0', 's1', 's2', 's3'];

/** One change to the cluster, as small integers fast-check can shrink. */
type Change =
  | { op: 'pod'; i: number; node: number; app: number; sa: number; phase: number }
  | { op: 'service'; i: number; ns: number; ports: number; app: number; type: number }
  | { op: 'slice'; i: number; pods: number[] }
  | { op: 'route'; i: number; ns: number; parent: number; port: number; variant: number; broken: boolean; created: number }
  | { op: 'traffic'; i: number; ns: number; target: number; toRoute: boolean; variant: number; broken: boolean }
  | { op: 'authz'; i: number; ns: number; action: number; target: number; from: number; broken: boolean }
  | { op: 'mtls'; i: number; ns: number; mode: number; selector: number; broken: boolean }
  | { op: 'status'; i: number }
  | { op: 'delete'; i: number };

const small = (n: number) => fc.integer({ min: 0, max: n - 1 });
const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ op: fc.constant('pod' as const), i: small(6), node: small(NODES.length), app: small(APPS.length), sa: small(2), phase: small(6) }),
  fc.record({ op: fc.constant('service' as const), i: small(SERVICES.length), ns: small(2), ports: small(3), app: small(APPS.length), type: small(8) }),
  fc.record({ op: fc.constant('slice' as const), i: small(SERVICES.length), pods: fc.array(small(6), { maxLength: 3 }) }),
  fc.record({ op: fc.constant('route' as const), i: small(5), ns: small(2), parent: small(SERVICES.length), port: small(3), variant: small(4), broken: fc.boolean(), created: small(3) }),
  fc.record({ op: fc.constant('traffic' as const), i: small(3), ns: small(2), target: small(SERVICES.length), toRoute: fc.boolean(), variant: small(3), broken: fc.boolean() }),
  fc.record({ op: fc.constant('authz' as const), i: small(3), ns: small(3), action: small(3), target: small(SERVICES.length + 1), from: small(3), broken: fc.boolean() }),
  fc.record({ op: fc.constant('mtls' as const), i: small(3), ns: small(3), mode: small(3), selector: small(APPS.length + 1), broken: fc.boolean() }),
  fc.record({ op: fc.constant('status' as const), i: small(40) }),
  fc.record({ op: fc.constant('delete' as const), i: small(40) }),
);

/** A cluster that changes the way an informer cache does: every change is a new object, never an edit. */
class Cluster {
  readonly objects = new Map<string, Obj>();
  #rv = 0;
  #uid = 0;

  put(kind: string, apiVersion: string, ns: string | undefined, name: string, body: Omit<Obj, 'apiVersion' | 'kind' | 'metadata'>, meta: Record<string, unknown> = {}): void {
    const key = `${kind}/${ns ?? ''}/${name}`;
    const before = this.objects.get(key);
    const specChanged = !before || JSON.stringify(before.spec) !== JSON.stringify(body.spec);
    const generation = before ? (before.metadata.generation as number) + (specChanged ? 1 : 0) : 1;
    this.objects.set(key, {
      apiVersion,
      kind,
      ...body,
      metadata: {
        name,
        ...(ns ? { namespace: ns } : {}),
        uid: before ? before.metadata.uid : `uid-${++this.#uid}`,
        resourceVersion: String(++this.#rv),
        generation,
        creationTimestamp: before ? before.metadata.creationTimestamp : `2026-11-0${1 + ((meta.created as number | undefined) ?? 0)}T00:00:0${this.#uid % 10}Z`,
        ...meta.extra as object,
      },
    });
  }

  apply(c: Change): void {
    switch (c.op) {
      case 'pod': {
        const phase = ['Running', 'Running', 'Running', 'Pending', 'Succeeded', 'Running'][c.phase]!;
        this.put('Pod', 'v1', NAMESPACES[c.i % 2], `p${c.i}`, {
          spec: { nodeName: c.phase === 3 ? undefined : NODES[c.node], serviceAccountName: `sa${c.sa}`, containers: [{ name: 'c', image: 'i' }], ...(c.phase === 5 ? { hostNetwork: false } : {}) },
          status: { phase, podIP: `10.0.${c.i}.${c.node}`, podIPs: [{ ip: `10.0.${c.i}.${c.node}` }] },
        }, { extra: { labels: { app: APPS[c.app] } } });
        break;
      }
      case 'service': {
        const ports = [{ name: 'http', port: 80, protocol: 'TCP' }, { name: 'alt', port: 8080, protocol: 'TCP' }, { name: 'dns', port: 53, protocol: 'UDP' }].slice(0, c.ports + 1);
        this.put('Service', 'v1', NAMESPACES[c.ns], SERVICES[c.i]!, {
          spec: { selector: { app: APPS[c.app] }, clusterIP: `10.96.0.${c.i}`, clusterIPs: [`10.96.0.${c.i}`], ports, ...(c.type === 7 ? { type: 'ExternalName' } : {}) },
        });
        break;
      }
      case 'slice': {
        const ns = NAMESPACES[0]!;
        this.put('EndpointSlice', 'discovery.k8s.io/v1', ns, `${SERVICES[c.i]}-x`, {
          addressType: 'IPv4',
          endpoints: c.pods.map((p) => ({ addresses: [`10.0.${p}.1`], targetRef: { kind: 'Pod', namespace: NAMESPACES[p % 2], name: `p${p}` } })),
        }, { extra: { labels: { 'kubernetes.io/service-name': SERVICES[c.i] } } });
        break;
      }
      case 'route': {
        const ns = NAMESPACES[c.ns]!;
        const port = [80, 8080, undefined][c.port];
        const backends = [[{ name: SERVICES[c.parent], port: 80 }], [{ name: SERVICES[c.parent], port: 80, weight: 3 }, { name: 'missing', port: 80, weight: 1 }], [{ name: SERVICES[(c.parent + 1) % SERVICES.length], port: 8080 }], [{ name: SERVICES[c.parent], port: 80, namespace: 'web' }]][c.variant]!;
        const matches = c.variant % 2 ? [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-v', value: `v${c.variant}` }] }] : undefined;
        this.put('HTTPRoute', 'gateway.networking.k8s.io/v1', ns, `r${c.i}`, {
          spec: {
            parentRefs: [{ group: '', kind: 'Service', name: SERVICES[c.parent], namespace: 'shop', ...(port ? { port: c.broken ? 70000 : port } : {}) }],
            rules: [{ ...(matches ? { matches } : {}), backendRefs: backends, ...(c.variant === 2 ? { timeouts: { request: '2s' }, retry: {} } : {}) }],
          },
        }, { created: c.created });
        break;
      }
      case 'traffic': {
        const ns = NAMESPACES[c.ns]!;
        this.put('TrafficPolicy', 'nodemesh.io/v1alpha1', ns, `t${c.i}`, {
          spec: {
            targetRefs: [c.toRoute ? { kind: 'HTTPRoute', name: `r${c.target}` } : { kind: 'Service', name: SERVICES[c.target] }],
            timeouts: { connect: c.broken ? 'forever' : `${c.variant + 1}s` },
            ...(c.variant === 1 ? { rateLimit: { requestsPerSecond: 10 } } : {}),
          },
        });
        break;
      }
      case 'authz': {
        const ns = NAMESPACES[c.ns]!;
        const action = (['ALLOW', 'DENY', 'AUDIT'] as const)[c.action];
        const from = [[{ namespaces: ['shop'] }], [{ serviceAccounts: ['sa0'] }], [{ spiffeIds: ['spiffe://cluster.local/ns/web/sa/sa1'] }]][c.from]!;
        this.put('AuthorizationPolicy', 'nodemesh.io/v1alpha1', ns, `z${c.i}`, {
          spec: {
            ...(c.target < SERVICES.length ? { targetRefs: [{ kind: 'Service', name: SERVICES[c.target] }] } : {}),
            action,
            rules: [{ from, ...(c.broken ? { to: [{ ports: [0] }] } : { to: [{ methods: ['GET'] }] }) }],
          },
        });
        break;
      }
      case 'mtls': {
        const ns = NAMESPACES[c.ns]!;
        this.put('MeshTLSPolicy', 'nodemesh.io/v1alpha1', ns, `m${c.i}`, {
          spec: { mode: c.broken ? 'SOMETIMES' : ['STRICT', 'PERMISSIVE', 'DISABLED'][c.mode], ...(c.selector < APPS.length ? { selector: { matchLabels: { app: APPS[c.selector] } } } : {}) },
        });
        break;
      }
      case 'status': {
        // A status-only update: a new object, same spec and generation, new resourceVersion.
        const keys = [...this.objects.keys()];
        if (keys.length === 0) return;
        const o = this.objects.get(keys[c.i % keys.length]!)!;
        this.objects.set(keys[c.i % keys.length]!, { ...o, metadata: { ...o.metadata, resourceVersion: String(++this.#rv) }, status: { observed: this.#rv } });
        break;
      }
      case 'delete': {
        const keys = [...this.objects.keys()].filter((k) => !k.startsWith('Node/'));
        if (keys.length > 0) this.objects.delete(keys[c.i % keys.length]!);
        break;
      }
    }
  }

  snapshot() {
    return buildSnapshot([...this.objects.values()]);
  }
}

/** What the runtime hands on: compiled mesh without the memo-only index of mesh services, as plain data. */
function comparable(c: CompiledMesh) {
  return { trustDomain: c.trustDomain, workloads: c.workloads, workloadsByNode: c.workloadsByNode, services: c.services, outcomes: c.outcomes, lastGood: c.lastGood };
}

test('the memoised compile equals a compile from scratch after every change of a random sequence', () => {
  fc.assert(
    fc.property(fc.array(change, { minLength: 1, maxLength: 40 }), (changes) => {
      const cluster = new Cluster();
      for (const n of NODES) cluster.put('Node', 'v1', undefined, n, {});
      const compileMemo = new CompileMemo();
      const nodeMemo = new NodeStateMemo();
      let lastGood: Map<string, LastGood> = new Map();
      for (const [step, c] of changes.entries()) {
        cluster.apply(c);
        const snapshot = cluster.snapshot();
        const incremental = compileMesh(snapshot, lastGood, compileMemo);
        const full = compileMesh(snapshot, lastGood);
        const where = `after step ${step} (${JSON.stringify(c)})`;
        assert.deepEqual(comparable(incremental), comparable(full), `compiled mesh ${where}`);
        const desired = NODES.flatMap((n) => computeNodeState(snapshot, n, incremental, nodeMemo));
        const expected = NODES.flatMap((n) => computeNodeState(snapshot, n, full));
        assert.deepEqual(desired, expected, `NodeStates ${where}`);
        const now = '2026-11-21T00:00:00Z';
        assert.deepEqual(computeStatuses(snapshot, incremental, desired, { now, desired }), computeStatuses(snapshot, full, expected, { now }), `statuses ${where}`);
        lastGood = incremental.lastGood;
      }
    }),
    { numRuns: Number(process.env.NM_PROPERTY_RUNS ?? 300) },
  );
});

test('the memo reuses what did not change: one route change recompiles that route and its Service only', () => {
  const cluster = new Cluster();
  for (const n of NODES) cluster.put('Node', 'v1', undefined, n, {});
  for (let i = 0; i < SERVICES.length; i++) cluster.apply({ op: 'service', i, ns: 0, ports: 1, app: i % APPS.length, type: 0 });
  for (let i = 0; i < 6; i++) cluster.apply({ op: 'pod', i, node: i % 3, app: i % APPS.length, sa: 0, phase: 0 });
  for (let i = 0; i < 4; i++) cluster.apply({ op: 'route', i, ns: 0, parent: i, port: 0, variant: 0, broken: false, created: 0 });
  const memo = new CompileMemo();
  const nodeMemo = new NodeStateMemo();
  const first = compileMesh(cluster.snapshot(), new Map(), memo);
  const before = NODES.flatMap((n) => computeNodeState(cluster.snapshot(), n, first, nodeMemo));
  const stats0 = memo.stats();
  cluster.apply({ op: 'route', i: 2, ns: 0, parent: 2, port: 0, variant: 1, broken: false, created: 0 });
  const second = compileMesh(cluster.snapshot(), first.lastGood, memo);
  const stats1 = memo.stats();
  assert.equal(stats1.routes!.misses - stats0.routes!.misses, 1, 'one route recompiled');
  assert.equal(stats1.validations!.misses - stats0.validations!.misses, 1, 'one object validated');
  assert.equal(stats1.services!.misses - stats0.services!.misses, 1, 'one Service entry rebuilt');
  assert.equal(second.services.get('shop/s0'), first.services.get('shop/s0'), 'untouched Services are the same objects');
  const after = NODES.flatMap((n) => computeNodeState(cluster.snapshot(), n, second, nodeMemo));
  const same = after.filter((s, i) => s === before[i]).length;
  const changed = after.filter((s, i) => s.spec.contentHash !== before[i]!.spec.contentHash).length;
  assert.equal(same + changed, after.length, 'a shard is either reused as is or has new content');
  assert.ok(changed >= 1, 'the shards carrying s2 changed');
});

test('sameJson agrees with comparing canonical JSON texts', () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small' }, fc.constant(undefined), fc.constant(null), fc.boolean(), fc.integer({ min: -3, max: 3 }), fc.constantFrom('a', 'b', ''), fc.array(tie('value'), { maxLength: 3 }), fc.dictionary(fc.constantFrom('x', 'y', 'z'), tie('value'), { maxKeys: 3 })),
  })).value;
  fc.assert(
    fc.property(json, json, (a, b) => {
      assert.equal(sameJson(a, b), canonicalJson(a) === canonicalJson(b), `${canonicalJson(a)} vs ${canonicalJson(b)}`);
      assert.equal(sameJson(a, a), true);
    }),
    { numRuns: 2000 },
  );
});
