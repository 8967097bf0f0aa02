/**
 * The operator (as a child process, like a Deployment's pod) against the embedded API server:
 * create/update/delete flows, 410 after compaction, an API outage, SIGKILL mid-churn, bad input, the CA's
 * HTTPS path, and two replicas. Unprivileged. The API server runs in this process behind a TCP proxy that the
 * outage tests cut: the server keeps its state (as etcd would) while the operator cannot reach it.
 *
 * NM_TEST_OUTAGE_MS sets the outage length (default 12 s; the 30 s behaves the same way: informers
 * back off to at most 30 s, and the API probe wakes them within 2 s of the server's return).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { HTTPRoute, NodeState } from '../../crds/index.ts';
import { createCaClient, CaRequestError } from '../../agent/ca-client.ts';
import { generateKeyAndCsr } from '../../agent/certs/workload-key.ts';
import * as x509 from '../../agent/certs/x509.ts';
import { ensureAgentServiceAccount, mintAgentNodeToken } from '../../operator/agent-credentials.ts';
import { opensslVerdict } from '../../operator/ca/testing/csr.ts';
import {
  assertNodeStatesConverged,
  assertRoutesProgrammed,
  createCustom,
  createNode,
  createPod,
  createService,
  deleteCustom,
  ensureNamespace,
  eventually,
  getCustom,
  listNodeStates,
  OperatorProcess,
  routeBody,
  routeConditions,
  sleep,
  startCluster,
  updateCustom,
  type Cluster,
} from './helpers/operator-harness.ts';

const OUTAGE_MS = Number(process.env.NM_TEST_OUTAGE_MS ?? 12_000);

/** Total writes an operator reports. */
function writesOf(s: Awaited<ReturnType<OperatorProcess['status']>>): number {
  const w = s.reconcile.writes;
  return w.nodeStateCreates + w.nodeStateReplaces + w.nodeStateDeletes + w.statuses;
}

/** The service entry of `svc` in a node's NodeStates. */
function serviceEntry(states: NodeState[], node: string, svc: string) {
  return states.filter((s) => s.spec.nodeName === node).flatMap((s) => s.spec.services).find((e) => `${e.namespace}/${e.name}` === svc);
}

describe('operator against the embedded API server', { timeout: 600_000 }, () => {
  let cluster: Cluster;
  let op: OperatorProcess;
  const c = () => cluster.c;

  /** `n` HTTPRoute events (label changes on a route nobody routes with), to compact the watch history. */
  async function churnRoutes(ns: string, n: number): Promise<void> {
    await createCustom(c(), routeBody(ns, 'churn', 'no-such-service', [{ backendRefs: [{ name: 'no-such-service', port: 80 }] }]));
    for (let i = 0; i < n; i++) {
      await updateCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'churn', (r) => {
        r.metadata!.labels = { churn: String(i) };
      });
    }
  }

  before(async () => {
    cluster = await startCluster({ watchHistoryWindow: 200 });
    op = OperatorProcess.start(cluster, 'op-main');
    await op.waitLeading();
  });

  after(async () => {
    await op?.stop('SIGKILL');
    await cluster?.close();
  });

  it('create, update and delete flows end in the right NodeState and status', async () => {
    const ns = 'flow';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'flow-a');
    await createNode(c(), 'flow-b');
    await createPod(c(), ns, 'web-1', 'flow-a', { app: 'web' }, 'web');
    await createPod(c(), ns, 'echo-v1-1', 'flow-b', { app: 'echo', version: 'v1' }, 'echo');
    await createPod(c(), ns, 'echo-v2-1', 'flow-b', { app: 'echo', version: 'v2' }, 'echo');
    await createService(c(), ns, 'echo', { app: 'echo' });
    await createService(c(), ns, 'echo-v1', { app: 'echo', version: 'v1' });
    await createService(c(), ns, 'echo-v2', { app: 'echo', version: 'v2' });
    await createCustom(c(), routeBody(ns, 'echo', 'echo', [{ backendRefs: [{ name: 'echo-v1', port: 80, weight: 90 }, { name: 'echo-v2', port: 80, weight: 10 }] }]));
    await createCustom(c(), { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'default', namespace: ns }, spec: { mode: 'STRICT' } });

    await eventually('the 90/10 route is on both nodes and Programmed', async () => {
      const states = await listNodeStates(c());
      for (const node of ['flow-a', 'flow-b']) {
        const e = serviceEntry(states, node, 'flow/echo');
        assert.deepEqual(e?.ports[0]?.routes[0]?.backends.map((b) => b.weight), [90, 10], `${node} has the split`);
      }
      const r = await getCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'echo');
      const conds = routeConditions(r);
      assert.deepEqual([...conds.values()].map((x) => [x.status, x.observedGeneration]), [['True', 1], ['True', 1], ['True', 1]]);
      await assertNodeStatesConverged(c());
    });

    await updateCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'echo', (r) => {
      r.spec.rules![0]!.backendRefs![0]!.weight = 50;
      r.spec.rules![0]!.backendRefs![1]!.weight = 50;
    });
    await eventually('the update reaches the nodes, observedGeneration 2', async () => {
      const e = serviceEntry(await listNodeStates(c()), 'flow-a', 'flow/echo');
      assert.deepEqual(e?.ports[0]?.routes[0]?.backends.map((b) => b.weight), [50, 50]);
      const conds = routeConditions(await getCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'echo'));
      assert.equal(conds.get('Programmed')?.observedGeneration, 2);
      assert.equal(conds.get('Programmed')?.status, 'True');
    });

    // The second "done when": a missing backend is named in ResolvedRefs.
    await createCustom(c(), routeBody(ns, 'dangling', 'echo-v1', [{ backendRefs: [{ name: 'echo-v3', port: 80 }] }]));
    await eventually('a dangling backend gets ResolvedRefs=False naming it', async () => {
      const rr = routeConditions(await getCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'dangling')).get('ResolvedRefs');
      assert.equal(rr?.status, 'False');
      assert.match(rr?.message ?? '', /echo-v3/);
    });

    await deleteCustom(c(), 'HTTPRoute', ns, 'echo');
    await c().core.deleteNamespacedPod({ name: 'echo-v1-1', namespace: ns });
    await c().core.deleteNamespacedPod({ name: 'echo-v2-1', namespace: ns });
    await c().core.deleteNode({ name: 'flow-b' });
    await eventually('the deleted route leaves the nodes; the deleted node\'s shards are gone', async () => {
      const states = await listNodeStates(c());
      assert.equal(states.filter((s) => s.spec.nodeName === 'flow-b').length, 0, 'flow-b shards deleted');
      const e = serviceEntry(states, 'flow-a', 'flow/echo');
      assert.ok(!e || e.ports.every((p) => p.routes.length === 0), 'no routes left on flow/echo');
      await assertNodeStatesConverged(c());
    });

    // Steady state: no write storm (< 10 writes/min; here: none at all).
    const before1 = writesOf(await op.status());
    await sleep(6_000);
    const after1 = writesOf(await op.status());
    assert.equal(after1 - before1, 0, 'no writes while nothing changes');
  });

  it('a forced compaction (410 Gone) makes it relist, with nothing lost', async () => {
    const ns = 'compact';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'compact-n1');
    await createPod(c(), ns, 'app-1', 'compact-n1', { app: 'app' });
    await createService(c(), ns, 'app', { app: 'app' });
    for (const name of ['a', 'b']) await createCustom(c(), routeBody(ns, name, 'app', [{ matches: [{ path: { type: 'PathPrefix', value: `/${name}` } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    await eventually('routes a and b programmed', () => assertRoutesProgrammed(c(), ns));
    const listsBefore = (await op.status()).informers.find((i) => i.name === 'httpRoutes')!.lists;

    await cluster.proxy.down();
    await deleteCustom(c(), 'HTTPRoute', ns, 'a');
    await createCustom(c(), routeBody(ns, 'c', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/c' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    // 300 more HTTPRoute events push the operator's resourceVersion out of the 200-event history window.
    await churnRoutes(ns, 300);
    await sleep(1_000);
    await cluster.proxy.up();

    await eventually('after the relist: a is gone, c is programmed, NodeStates as desired', async () => {
      await assertNodeStatesConverged(c());
      await assertRoutesProgrammed(c(), ns);
      const entry = serviceEntry(await listNodeStates(c()), 'compact-n1', 'compact/app');
      const prefixes = entry?.ports[0]?.routes.map((r) => (r.match as { path?: { value?: string } }).path?.value).sort();
      assert.deepEqual(prefixes, ['/b', '/c']);
    });
    const s = await op.status();
    const routes = s.informers.find((i) => i.name === 'httpRoutes')!;
    assert.ok(routes.lists > listsBefore, `the route informer relisted (lists ${listsBefore} → ${routes.lists})`);
    assert.deepEqual(s.unhealthyInformers, []);
  });

  it(`the API server unreachable for ${OUTAGE_MS / 1000} s: NodeStates stay, creates and deletes converge within 30 s of its return`, async () => {
    const ns = 'outage';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'outage-n1');
    await createPod(c(), ns, 'app-1', 'outage-n1', { app: 'app' });
    await createPod(c(), ns, 'app-2', 'outage-n1', { app: 'app' });
    await createService(c(), ns, 'app', { app: 'app' });
    await createCustom(c(), routeBody(ns, 'keep', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/keep' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    await createCustom(c(), routeBody(ns, 'drop', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/drop' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    await eventually('routes programmed before the outage', () => assertRoutesProgrammed(c(), ns));
    const statesBefore = await listNodeStates(c());
    const probesBefore = (await op.status()).probes;
    const restartsBefore = (await op.status()).informers.reduce((n, i) => n + i.restarts, 0);

    await cluster.proxy.down();
    const downAt = Date.now();
    await deleteCustom(c(), 'HTTPRoute', ns, 'drop');
    await createCustom(c(), routeBody(ns, 'new', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/new' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    await c().core.deleteNamespacedPod({ name: 'app-2', namespace: ns });
    await churnRoutes(ns, 250); // and the history is compacted when it returns
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
    const during = await op.status();
    assert.ok(during.unhealthyInformers.length > 0, 'the operator knows its view is stale');
    assert.equal(during.leader, false, 'it cannot renew the lease, so it stopped writing');
    const restarts = during.informers.reduce((n, i) => n + i.restarts, 0) - restartsBefore;
    // 11 informers backing off from 800 ms (doubling, jitter): about log2(outage/800ms) tries each, no storm.
    const bound = 11 * Math.ceil(Math.log2(OUTAGE_MS / 800) + 2);
    assert.ok(restarts <= bound, `informer restarts during the outage: ${restarts} (bound ${bound})`);
    assert.ok(during.probes - probesBefore <= OUTAGE_MS / 2000 + 2, `API probes during the outage: ${during.probes - probesBefore}`);
    assert.deepEqual((await listNodeStates(c())).map((s) => s.spec.contentHash).sort(), statesBefore.map((s) => s.spec.contentHash).sort(), 'NodeStates untouched during the outage');

    await cluster.proxy.up();
    const upAt = Date.now();
    await eventually('converged after the outage', async () => {
      await assertNodeStatesConverged(c());
      await assertRoutesProgrammed(c(), ns);
      const entry = serviceEntry(await listNodeStates(c()), 'outage-n1', 'outage/app');
      const prefixes = entry?.ports[0]?.routes.map((r) => (r.match as { path?: { value?: string } }).path?.value).sort();
      assert.deepEqual(prefixes, ['/keep', '/new']);
      const workloads = (await listNodeStates(c())).filter((s) => s.spec.nodeName === 'outage-n1').flatMap((s) => s.spec.workloads).map((w) => w.name);
      assert.deepEqual(workloads, ['app-1'], 'the pod deleted during the outage is gone');
    }, 30_000);
    const took = Date.now() - upAt;
    assert.ok(took < 30_000, `converged ${took} ms after the API server came back`);
    console.log(`# outage ${OUTAGE_MS} ms: converged ${took} ms after the API server returned`);
    await op.waitLeading();
  });
});
