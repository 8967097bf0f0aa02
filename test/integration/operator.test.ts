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
import { ensureAgentServiceAccount, mintAgentNodeToken } from '../../sandbox/agent-credentials.ts';
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
  async function churnRoutes(forNs: string, n: number): Promise<void> {
    const ns = `${forNs}-churn`;
    await ensureNamespace(c(), ns);
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

  it('schema-invalid objects are rejected by the API server with the field path', async () => {
    const ns = 'schema';
    await ensureNamespace(c(), ns);
    const bad = routeBody(ns, 'bad-port', 'app', [{ backendRefs: [{ name: 'app', port: 80 }] }]);
    bad.spec.parentRefs![0]!.port = 70000;
    const e1 = await createCustom(c(), bad).then(() => undefined, (err: { code?: number; body?: string }) => err);
    assert.equal(e1?.code, 422);
    assert.match(String(e1?.body), /spec\.parentRefs\[0\]\.port/);
    const e2 = await createCustom(c(), { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'm', namespace: ns }, spec: { mode: 'SOMETIMES' } }).then(() => undefined, (err: { code?: number; body?: string }) => err);
    assert.equal(e2?.code, 422);
    assert.match(String(e2?.body), /spec\.mode/);
  });

  it('a CSR for a pod on another node is refused through the real HTTPS path; one on its own node is signed', async () => {
    const ns = 'csr';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'csr-n1');
    await createNode(c(), 'csr-n2');
    await createPod(c(), ns, 'api-1', 'csr-n1', { app: 'api' }, 'api');
    await createPod(c(), ns, 'web-1', 'csr-n2', { app: 'web' }, 'web');
    await ensureAgentServiceAccount(c().kc, 'nodemesh-system');
    const { token } = await mintAgentNodeToken(c().kc, 'nodemesh-system', 'csr-n1');
    const bundle = await eventually('trust bundle published', async () => {
      const cm = await c().core.readNamespacedConfigMap({ name: 'nodemesh-trust-bundle', namespace: 'nodemesh-system' });
      assert.ok(cm.data?.['ca.crt']);
      return cm.data!;
    });
    const url = await eventually('CA service up', async () => {
      const s = await op.status();
      assert.ok('url' in s.ca && s.ca.url);
      return (s.ca as { url: string }).url;
    });
    const request = createCaClient({ url, token, nodeName: 'csr-n1', caPem: bundle['ca.crt']! });
    const identity = (sa: string) => ({ namespace: ns, serviceAccount: sa });

    // Own node: signed, and the chain verifies against the published roots.
    const own = await generateKeyAndCsr(`spiffe://cluster.local/ns/${ns}/sa/api`);
    const signed = await eventually('the operator has seen the pods', () => request(own.csrPem, identity('api')), 10_000);
    const leaf = new x509.X509Certificate(signed.certChainPem);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.items.map((n) => n.value);
    assert.deepEqual(san, [`spiffe://cluster.local/ns/${ns}/sa/api`]);
    const verdict = await opensslVerdict(signed.certChainPem, own.keyPem, bundle['roots.pem']!);
    assert.equal(verdict.authorized, true, verdict.error);

    // Another node's pod: refused with the reason.
    const other = await generateKeyAndCsr(`spiffe://cluster.local/ns/${ns}/sa/web`);
    const refused = await request(other.csrPem, identity('web')).then(() => undefined, (err: unknown) => err);
    assert.ok(refused instanceof CaRequestError, String(refused));
    assert.equal(refused.status, 403);
    assert.equal(refused.reasonCode, 'pod_on_other_node');
    assert.equal(refused.retryable, false);

    // Claiming to be another node, a bad token, the admin token: refused too.
    const liar = createCaClient({ url, token, nodeName: 'csr-n2', caPem: bundle['ca.crt']! });
    assert.equal(((await liar(other.csrPem, identity('web')).catch((e: unknown) => e)) as CaRequestError).reasonCode, 'node_mismatch');
    const forged = createCaClient({ url, token: `${token.slice(0, -4)}AAAA`, nodeName: 'csr-n1', caPem: bundle['ca.crt']! });
    assert.equal(((await forged(own.csrPem, identity('api')).catch((e: unknown) => e)) as CaRequestError).status, 401);
    // The admin token is not issued for the nodemesh-ca audience: TokenReview refuses it.
    const admin = createCaClient({ url, token: cluster.api.token, nodeName: 'csr-n1', caPem: bundle['ca.crt']! });
    assert.equal(((await admin(own.csrPem, identity('api')).catch((e: unknown) => e)) as CaRequestError).status, 401);

    // A client that does not trust the mesh roots does not talk to it at all.
    const untrusting = createCaClient({ url, token, nodeName: 'csr-n1', caPem: cluster.api.caPem! });
    const tlsErr = (await untrusting(own.csrPem, identity('api')).catch((e: unknown) => e)) as CaRequestError;
    assert.equal(tlsErr.status, 0);
    const st = (await op.status()).ca as { issued: number; denied: Record<string, number> };
    assert.ok(st.issued >= 1);
    assert.equal(st.denied['pod_on_other_node'], 1);
  });

  it('killed with SIGKILL in the middle of 500 route updates, it converges on restart', async () => {
    const ns = 'churn';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'churn-n1');
    await createNode(c(), 'churn-n2');
    for (let i = 0; i < 10; i++) {
      await createService(c(), ns, `svc-${i}`, { app: `svc-${i}` });
      await createPod(c(), ns, `pod-${i}`, i % 2 ? 'churn-n1' : 'churn-n2', { app: `svc-${i}` });
    }
    const names = Array.from({ length: 500 }, (_, i) => `r-${i}`);
    const inParallel = async (items: string[], fn: (name: string) => Promise<unknown>): Promise<void> => {
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < items.length) await fn(items[next++]!);
      }));
    };
    const svcOf = (name: string) => `svc-${Number(name.slice(2)) % 10}`;
    await inParallel(names, (name) => createCustom(c(), routeBody(ns, name, svcOf(name), [{ matches: [{ path: { type: 'PathPrefix', value: `/${name}` } }], backendRefs: [{ name: svcOf(name), port: 80 }] }])));
    await eventually('500 routes programmed', () => assertRoutesProgrammed(c(), ns), 60_000, 500);

    let done = 0;
    let killed = false;
    await inParallel(names, async (name) => {
      await updateCustom<HTTPRoute>(c(), 'HTTPRoute', ns, name, (r) => {
        r.spec.rules![0]!.matches![0]!.path!.value = `/v2/${name}`;
      });
      done++;
      if (done === 250 && !killed) {
        killed = true;
        op.child.kill('SIGKILL');
      }
    });
    assert.ok(killed);
    const exit = await op.exited;
    assert.equal(exit.signal, 'SIGKILL');
    op = OperatorProcess.start(cluster, 'op-main');
    await op.waitLeading();
    await eventually('every route at generation 2 programmed; NodeStates as desired, no duplicates', async () => {
      await assertRoutesProgrammed(c(), ns);
      await assertNodeStatesConverged(c());
    }, 60_000, 500);
    const states = await listNodeStates(c());
    const names2 = states.map((s) => s.metadata!.name!);
    assert.equal(new Set(names2).size, names2.length);
    for (const node of ['churn-n1', 'churn-n2']) {
      const mine = states.filter((s) => s.spec.nodeName === node);
      const count = mine[0]!.spec.shard.count;
      assert.deepEqual(mine.map((s) => s.spec.shard.index).sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i), `${node}: shards 0..${count - 1}, once each`);
    }
  });

  it('objects valid by schema but wrong get Accepted=False with the field, others unaffected, the event loop never stalls', async () => {
    const ns = 'bad';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'bad-n1');
    await createPod(c(), ns, 'app-1', 'bad-n1', { app: 'app' });
    await createService(c(), ns, 'app', { app: 'app' });
    await createCustom(c(), routeBody(ns, 'good', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/good' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
    await eventually('the good route is programmed', () => assertRoutesProgrammed(c(), ns));
    await sleep(500);
    await op.resetLoopDelay();

    const regex = routeBody(ns, 'regex', 'app', [{ matches: [{ path: { type: 'RegularExpression', value: '/(a+)+$' } }], backendRefs: [{ name: 'app', port: 80 }] }]);
    const timeouts = routeBody(ns, 'timeouts', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/t' } }], timeouts: { request: '1s', backendRequest: '2s' }, backendRefs: [{ name: 'app', port: 80 }] }]);
    const many = routeBody(ns, 'many-rules', 'app', Array.from({ length: 10_000 }, (_, i) => ({ matches: [{ path: { type: 'PathPrefix', value: `/m${i}` } }], backendRefs: [{ name: 'app', port: 80 }] })));
    const huge = routeBody(ns, 'huge', 'app', [{ matches: Array.from({ length: 270 }, (_, i) => ({ path: { type: 'PathPrefix', value: `/h${i}` }, headers: [{ name: 'x-big', value: 'a'.repeat(4000) }] })), backendRefs: [{ name: 'app', port: 80 }] }]);
    assert.ok(JSON.stringify(huge).length > 1024 * 1024, 'the huge route is over 1 MiB');
    for (const r of [regex, timeouts, many, huge]) await createCustom(c(), r);

    const expect: Record<string, RegExp> = {
      regex: /spec\.rules\[0\]\.matches\[0\]\.path\.value/,
      timeouts: /spec\.rules\[0\]\.timeouts\.backendRequest/,
      // With the API server's defaults filled in, 10,000 rules are 1.4 MiB: the size check speaks first.
      'many-rules': /spec(\.rules)?: .*(has 10000 rules|MiB; at most)/,
      huge: /spec: .*MiB; at most/,
    };
    await eventually('every wrong route is Accepted=False, Invalid, naming the field', async () => {
      for (const [name, re] of Object.entries(expect)) {
        const acc = routeConditions(await getCustom<HTTPRoute>(c(), 'HTTPRoute', ns, name)).get('Accepted');
        assert.equal(acc?.status, 'False', `${name}: Accepted ${acc?.status}`);
        assert.equal(acc?.reason, 'Invalid');
        assert.match(acc?.message ?? '', re, `${name}: ${acc?.message}`);
      }
    });
    // The good route kept working, and NodeStates carry nothing from the wrong ones.
    await assertRoutesProgrammed(c(), ns).catch((err: Error) => assert.match(err.message, /^4 route/));
    assert.equal(routeConditions(await getCustom<HTTPRoute>(c(), 'HTTPRoute', ns, 'good')).get('Programmed')?.status, 'True');
    const entry = serviceEntry(await listNodeStates(c()), 'bad-n1', 'bad/app');
    assert.deepEqual(entry?.ports[0]?.routes.map((r) => (r.match as { path?: { value?: string } }).path?.value), ['/good']);
    const loop = (await op.status()).eventLoopDelay;
    console.log(`# event-loop delay while handling the wrong objects: max ${loop.maxMs} ms, p99 ${loop.p99Ms} ms (10 ms sampling)`);
    // The B8 goal is < 100 ms (printed above, and what bench:operator reports); a wall-clock bound in a test on a
    // shared 2-core machine also counts the time the process waited for a CPU, so the test's bound is what a real
    // stall (a backtracking regex, a recursive walk of a deep object: seconds) could never meet, not the goal itself.
    assert.ok(loop.maxMs < 400, `the operator's event loop stalled ${loop.maxMs} ms`);
    for (const name of Object.keys(expect)) await deleteCustom(c(), 'HTTPRoute', ns, name);
  });

  it('two operators: exactly one writes; the other takes over when the leader steps down', async () => {
    const ns = 'pair';
    await ensureNamespace(c(), ns);
    await createNode(c(), 'pair-n1');
    await createPod(c(), ns, 'app-1', 'pair-n1', { app: 'app' });
    await createService(c(), ns, 'app', { app: 'app' });
    await op.waitLeading();
    const second = OperatorProcess.start(cluster, 'op-second');
    try {
      await eventually('the second replica has synced and follows', async () => {
        const s = await second.status();
        assert.equal(s.synced, true);
        assert.equal(s.leaderIdentity, 'op-main');
      });
      for (let i = 0; i < 20; i++) {
        await createCustom(c(), routeBody(ns, `p-${i}`, 'app', [{ matches: [{ path: { type: 'PathPrefix', value: `/p${i}` } }], backendRefs: [{ name: 'app', port: 80 }] }]));
      }
      await eventually('routes programmed by the leader', () => assertRoutesProgrammed(c(), ns));
      const [a, b] = await Promise.all([op.status(), second.status()]);
      assert.equal([a.leader, b.leader].filter(Boolean).length, 1, 'exactly one leader');
      assert.ok(writesOf(a) > 0);
      assert.equal(writesOf(b), 0, 'the follower wrote nothing');
      assert.equal(b.reconcile.reconciles, 0, 'the follower did not even reconcile');

      // The leader steps down (SIGTERM releases the lease): the follower takes over and carries on.
      await op.stop('SIGTERM');
      const t0 = Date.now();
      await second.waitLeading(20_000);
      console.log(`# takeover after a release: ${Date.now() - t0} ms`);
      await createCustom(c(), routeBody(ns, 'after', 'app', [{ matches: [{ path: { type: 'PathPrefix', value: '/after' } }], backendRefs: [{ name: 'app', port: 80 }] }]));
      await eventually('the new leader programs new routes', async () => {
        await assertRoutesProgrammed(c(), ns);
        await assertNodeStatesConverged(c());
      });
      assert.ok(writesOf(await second.status()) > 0);
    } finally {
      await second.stop('SIGKILL');
    }
  });

});
