import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { CaService, decideRequester, loadOrCreateMeshCa, publishTrustBundle, type ReviewedUser, type TokenReviewer } from './ca-service.ts';
import { memoryCaStore } from './ca/testing/memory-ca-store.ts';
import { MeshCa } from './ca/mesh-ca.ts';
import { makeCsr } from './ca/testing/csr.ts';
import { silentOperatorLogger } from './logger.ts';

const agent = (node?: string, uid?: string): ReviewedUser => ({
  username: 'system:serviceaccount:nodemesh-system:nodemesh-agent',
  groups: ['system:serviceaccounts'],
  extra: node ? { 'authentication.kubernetes.io/node-name': [node], ...(uid ? { 'authentication.kubernetes.io/node-uid': [uid] } : {}) } : {},
});
const nodes: Record<string, string> = { n1: 'uid-n1', n2: 'uid-n2' };
const nodeUid = (name: string) => nodes[name];

test('decideRequester: a node-bound agent token is that node; unbound, re-created or mismatched nodes are refused', () => {
  assert.deepEqual(decideRequester(agent('n1', 'uid-n1'), { meshNamespace: 'nodemesh-system', nodeUid }), { requester: { kind: 'node', nodeName: 'n1' } });
  assert.equal((decideRequester(agent(), { meshNamespace: 'nodemesh-system', nodeUid }) as { code: string }).code, 'invalid_requester');
  assert.equal((decideRequester(agent('n1', 'old-uid'), { meshNamespace: 'nodemesh-system', nodeUid }) as { code: string }).code, 'unknown_node');
  assert.equal((decideRequester(agent('gone'), { meshNamespace: 'nodemesh-system', nodeUid }) as { code: string }).code, 'unknown_node');
  assert.equal((decideRequester(agent('n1', 'uid-n1'), { meshNamespace: 'nodemesh-system', nodeUid, claimedNode: 'n2' }) as { code: string }).code, 'node_mismatch');
  assert.equal((decideRequester({ username: 'admin', groups: [], extra: {} }, { meshNamespace: 'nodemesh-system', nodeUid }) as { code: string }).code, 'invalid_requester');
  assert.deepEqual(
    decideRequester({ username: 'system:serviceaccount:shop:web', groups: [], extra: { 'authentication.kubernetes.io/pod-name': ['web-1'] } }, { meshNamespace: 'nodemesh-system', nodeUid }),
    { requester: { kind: 'serviceaccount', namespace: 'shop', name: 'web', podName: 'web-1' } },
  );
});

const pods = [
  { metadata: { name: 'web-1', namespace: 'shop' }, spec: { nodeName: 'n2', serviceAccountName: 'web', containers: [] }, status: { phase: 'Running' } },
  { metadata: { name: 'api-1', namespace: 'shop' }, spec: { nodeName: 'n1', serviceAccountName: 'api', containers: [] }, status: { phase: 'Running' } },
] as V1Pod[];

async function service(reviewer: TokenReviewer, podList: V1Pod[] | null = pods): Promise<CaService> {
  const ca = await MeshCa.create({ trustDomain: 'cluster.local' });
  return new CaService({
    ca,
    reviewer,
    pods: () => podList ?? undefined,
    node: (name) => (nodes[name] ? ({ metadata: { name, uid: nodes[name] } } as V1Node) : undefined),
    meshNamespace: 'nodemesh-system',
    log: silentOperatorLogger,
  });
}

const reviewerFor = (users: Record<string, ReviewedUser>): TokenReviewer => ({
  review: async (token) => (token === 'down' ? { ok: false, unavailable: true, error: 'API server unreachable' } : users[token] ? { ok: true, user: users[token]! } : { ok: false, unavailable: false, error: 'invalid bearer token' }),
});

test('sign: authenticates, authorizes against pods, signs; every refusal has its status and code', async () => {
  const svc = await service(reviewerFor({ t1: agent('n1', 'uid-n1') }));
  const { csrPem } = await makeCsr({ san: ['spiffe://cluster.local/ns/shop/sa/api'] });
  const body = (sa: string, extra: Record<string, unknown> = {}) => JSON.stringify({ csr: csrPem, namespace: 'shop', serviceAccount: sa, nodeName: 'n1', ...extra });
  const ok = await svc.sign('Bearer t1', body('api'));
  assert.equal(ok.status, 200);
  assert.equal(ok.body['spiffeId'], 'spiffe://cluster.local/ns/shop/sa/api');
  assert.match(String(ok.body['certChainPem']), /BEGIN CERTIFICATE[\s\S]*BEGIN CERTIFICATE/);
  const other = await svc.sign('Bearer t1', body('web'));
  assert.deepEqual([other.status, other.body['code']], [403, 'pod_on_other_node']);
  assert.equal((await svc.sign(undefined, body('api'))).status, 401);
  assert.equal((await svc.sign('Bearer nope', body('api'))).status, 401);
  assert.equal((await svc.sign('Bearer down', body('api'))).status, 503);
  assert.equal((await svc.sign('Bearer t1', '{not json')).status, 400);
  assert.equal((await svc.sign('Bearer t1', JSON.stringify({ csr: 1 }))).status, 400);
  const mismatch = await svc.sign('Bearer t1', body('api', { csr: (await makeCsr({ san: ['spiffe://cluster.local/ns/shop/sa/web'] })).csrPem }));
  assert.equal(mismatch.status, 400, 'a CSR asking for another SAN is refused');
  assert.deepEqual(svc.status().denied, { pod_on_other_node: 1 });
  assert.equal(svc.status().issued, 1);
});

test('sign: 503 until the pod informer has listed', async () => {
  const svc = await service(reviewerFor({ t1: agent('n1', 'uid-n1') }), null);
  const { csrPem } = await makeCsr();
  assert.equal((await svc.sign('Bearer t1', JSON.stringify({ csr: csrPem, namespace: 'shop', serviceAccount: 'api' }))).status, 503);
});

const memoryStore = memoryCaStore;

test('the CA is created once and reloaded; a user-supplied root gets its intermediate stored; the bundle is written only on change', async () => {
  const store = memoryStore();
  const a = await loadOrCreateMeshCa(store, { trustDomain: 'cluster.local', log: silentOperatorLogger });
  const b = await loadOrCreateMeshCa(store, { trustDomain: 'cluster.local', log: silentOperatorLogger });
  assert.equal(a.bundle().rootsPem, b.bundle().rootsPem, 'the second replica uses the first one\'s CA');
  assert.equal(await publishTrustBundle(store, a), true);
  assert.equal(await publishTrustBundle(store, b), false, 'same bundle: no write');
  assert.equal(store.writes, 1);

  const user = await MeshCa.create({ trustDomain: 'cluster.local' });
  const data = await user.toSecretData();
  const own = memoryStore();
  own.secret = { data: { 'ca.crt': data['ca.crt']!, 'ca.key': data['ca.key']! }, annotations: { 'nodemesh.io/rotate': 'root' }, rv: 1 };
  const loaded = await loadOrCreateMeshCa(own, { trustDomain: 'cluster.local', log: silentOperatorLogger });
  assert.ok(own.secret.data['intermediate.crt'], 'intermediate persisted');
  assert.equal(own.secret.data['ca.crt'], data['ca.crt'], 'the user root is kept');
  assert.equal(own.secret.annotations['nodemesh.io/rotate'], 'root', 'annotations survive our writes');
  const again = await loadOrCreateMeshCa(own, { trustDomain: 'cluster.local', log: silentOperatorLogger });
  assert.equal(again.bundle().intermediatesPem, loaded.bundle().intermediatesPem, 'no new intermediate on restart');
});

test('the sandbox status line says who leads and how far behind', async () => {
  const { formatOperatorStatus } = await import('./status-client.ts');
  const line = formatOperatorStatus({
    version: '0.1.0', identity: 'op-a', leader: true, lastReconcileAt: '2026-11-01T00:00:00.000Z', lagMs: 120, pendingMs: 0, synced: true, unhealthyInformers: [],
    reconcile: { nodes: 3, nodeStates: 3, lastOutcome: 'ok' }, ca: { url: 'https://0.0.0.0:15012', issued: 4 },
  }, Date.parse('2026-11-01T00:00:05.000Z'));
  assert.equal(line, 'operator: leader op-a v0.1.0; last reconcile 5 s ago (lag 120 ms); 3 NodeStates for 3 nodes; CA https://0.0.0.0:15012 (4 issued)');
});

test('reportBundle: only a node\'s own agent reports its bundle; bad bodies and workload tokens are refused', async () => {
  const workload: ReviewedUser = { username: 'system:serviceaccount:shop:api', groups: [], extra: { 'authentication.kubernetes.io/node-name': ['n1'], 'authentication.kubernetes.io/node-uid': ['uid-n1'] } };
  const svc = await service(reviewerFor({ t1: agent('n1', 'uid-n1'), w: workload }));
  const fp = 'a'.repeat(64);
  const ok = await svc.reportBundle('Bearer t1', JSON.stringify({ nodeName: 'n1', fingerprints: [fp] }));
  assert.equal(ok.status, 200);
  assert.deepEqual([...svc.bundleReports().get('n1')!.fingerprints], [fp]);
  assert.equal((await svc.reportBundle('Bearer t1', JSON.stringify({ nodeName: 'n2', fingerprints: [fp] }))).body['code'], 'node_mismatch');
  assert.equal((await svc.reportBundle('Bearer w', JSON.stringify({ nodeName: 'n1', fingerprints: [fp] }))).body['code'], 'invalid_requester');
  assert.equal((await svc.reportBundle('Bearer t1', JSON.stringify({ nodeName: 'n1', fingerprints: ['XYZ'] }))).status, 400);
  assert.equal((await svc.reportBundle(undefined, JSON.stringify({ nodeName: 'n1', fingerprints: [] }))).status, 401);
  assert.equal(svc.bundleReports().size, 1);
});
