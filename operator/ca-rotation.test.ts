// The CA rotation controller: the pure planner, and the controller over an in-memory Secret (restart included).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeCsr } from './ca/testing/csr.ts';
import { memoryCaStore } from './ca/testing/memory-ca-store.ts';
import { MeshCa } from './ca/mesh-ca.ts';
import * as x509 from './ca/x509.ts';
import {
  bundleFingerprints, CaRotationController, caFactsOf, computeDropAfterMs, DEFAULT_ROTATION_SETTINGS, parseRotateRequest, planCaRotation,
  ROTATE_REQUEST_ANNOTATION, ROTATION_STATE_ANNOTATION, type BundleReport, type CaFacts, type CaRotationInput,
} from './ca-rotation.ts';
import { FakeRuntimeClock } from './clock.ts';
import { silentOperatorLogger } from './logger.ts';
import { CA_EXPIRY_WARNING_MS } from './ca/plan-validity.ts';

const DAY = 86_400_000;
const NOW = Date.parse('2027-01-01T00:00:00Z');
const MIN = 60_000;

const facts = (over: Partial<CaFacts> = {}): CaFacts => ({
  issuingRoot: { fingerprint: 'r1', notBefore: NOW - 100 * DAY, notAfter: NOW + 3000 * DAY },
  issuingIntermediate: { fingerprint: 'i1', notBefore: NOW - 10 * DAY, notAfter: NOW + 355 * DAY },
  pending: undefined,
  roots: 1,
  ...over,
});
const report = (fps: string[], at = NOW): BundleReport => ({ fingerprints: new Set(fps), at });
const input = (over: Partial<CaRotationInput> = {}): CaRotationInput => ({
  now: NOW, state: { phase: 'idle' }, ca: facts(), request: undefined, nodes: ['n1', 'n2'], reports: new Map(), leafTtlMs: 24 * 3_600_000, settings: DEFAULT_ROTATION_SETTINGS, ...over,
});
const propagating = (since = NOW) => ({ phase: 'propagating' as const, kind: 'root' as const, phaseSince: new Date(since).toISOString() });
const pending = facts({ pending: { root: 'r2', intermediate: 'i2' }, roots: 2 });

describe('planCaRotation', () => {
  it('starts nothing while the CA is young; rotates the intermediate at 2/3 of its life and the root inside the warning window', () => {
    assert.equal(planCaRotation(input()).action, 'none');
    const inter = planCaRotation(input({ ca: facts({ issuingIntermediate: { fingerprint: 'i1', notBefore: NOW - 244 * DAY, notAfter: NOW + 121 * DAY } }) }));
    assert.deepEqual([inter.action, (inter as { kind?: string }).kind, (inter as { trigger?: string }).trigger], ['start', 'intermediate', 'expiry']);
    assert.equal(planCaRotation(input({ ca: facts({ issuingIntermediate: { fingerprint: 'i1', notBefore: NOW - 242 * DAY, notAfter: NOW + 123 * DAY } }) })).action, 'none');
    const root = planCaRotation(input({ ca: facts({ issuingRoot: { fingerprint: 'r1', notBefore: 0, notAfter: NOW + CA_EXPIRY_WARNING_MS - DAY } }) }));
    assert.deepEqual([root.action, (root as { kind?: string }).kind], ['start', 'root']);
  });

  it('a user request starts once per distinct value; a malformed one is refused (recorded, never acted on)', () => {
    const r = planCaRotation(input({ request: 'root:ticket-42' }));
    assert.deepEqual(r, { action: 'start', kind: 'root', trigger: 'request', request: 'root:ticket-42', reason: `requested by annotation ${ROTATE_REQUEST_ANNOTATION}=root:ticket-42` });
    assert.equal(planCaRotation(input({ request: 'root:ticket-42', state: { phase: 'idle', handledRequest: 'root:ticket-42' } })).action, 'none');
    assert.equal(planCaRotation(input({ request: 'intermediate' })).action, 'start');
    const bad = planCaRotation(input({ request: 'everything' }));
    assert.equal(bad.action, 'refuse-request');
    assert.match((bad as { reason: string }).reason, /nodemesh\.io\/rotate="everything": expected "root" or "intermediate"/);
    assert.ok('error' in parseRotateRequest('root:'));
    assert.deepEqual(parseRotateRequest(' intermediate:a.b_c-1 '), { kind: 'intermediate', id: 'a.b_c-1' });
    // A request during a rotation waits for it to end.
    assert.equal(planCaRotation(input({ request: 'root:x', state: propagating(), ca: pending, reports: new Map([['n1', report(['r2'])]]) })).action, 'none');
  });

  it('switches the issuer only when every live node serves the new root AND intermediate', () => {
    const base = { state: propagating(NOW - 20_000), ca: pending };
    const waiting = planCaRotation(input({ ...base, reports: new Map([['n1', report(['r1', 'r2', 'i1', 'i2'])], ['n2', report(['r1', 'r2', 'i1'])]]) }));
    assert.deepEqual([waiting.action, (waiting as { waitingFor?: string[] }).waitingFor], ['none', ['n2']]);
    const go = planCaRotation(input({ ...base, reports: new Map([['n1', report(['r1', 'r2', 'i1', 'i2'])], ['n2', report(['r2', 'i2', 'r1'])]]) }));
    assert.deepEqual(go, { action: 'switch-issuer', reason: 'every node serves the new trust bundle', unconfirmed: [] });
    // A node still on the old bundle is alive and would refuse the new chain: no timeout lets the switch through.
    const stuck = planCaRotation(input({ ...base, state: propagating(NOW - DAY), reports: new Map([['n1', report(['r2', 'i2'])], ['n2', report(['r1', 'i1'])]]) }));
    assert.equal(stuck.action, 'none');
    assert.equal(planCaRotation(input({ ...base, nodes: undefined })).action, 'none', 'no Node list yet');
  });

  it('nodes that never report (or stopped) are waited for up to the bounded wait, then the switch goes ahead naming them', () => {
    const reports = new Map([['n1', report(['r2', 'i2'])], ['n2', report(['r2', 'i2'], NOW - 5 * MIN)]]);
    const early = planCaRotation(input({ state: propagating(NOW - MIN), ca: pending, reports }));
    assert.deepEqual([early.action, (early as { waitingFor?: string[] }).waitingFor], ['none', ['n2']]);
    const late = planCaRotation(input({ state: propagating(NOW - 11 * MIN), ca: pending, reports }));
    assert.equal(late.action, 'switch-issuer');
    assert.deepEqual((late as { unconfirmed: string[] }).unconfirmed, ['n2']);
  });

  it('drops the old root one leaf TTL (+ margin) after the switch; an intermediate rotation finishes at once', () => {
    const ttl = MIN;
    const switched = (since: number, kind: 'root' | 'intermediate' = 'root') => ({ phase: 'switched' as const, kind, phaseSince: new Date(since).toISOString() });
    assert.equal(computeDropAfterMs(ttl, DEFAULT_ROTATION_SETTINGS), 66_000);
    assert.equal(computeDropAfterMs(24 * 3_600_000, DEFAULT_ROTATION_SETTINGS), 26.4 * 3_600_000);
    assert.equal(planCaRotation(input({ leafTtlMs: ttl, state: switched(NOW - 65_999), ca: facts({ roots: 2 }) })).action, 'none');
    assert.equal(planCaRotation(input({ leafTtlMs: ttl, state: switched(NOW - 66_000), ca: facts({ roots: 2 }) })).action, 'drop-root');
    assert.equal(planCaRotation(input({ leafTtlMs: ttl, state: switched(NOW, 'intermediate'), ca: facts() })).action, 'finish');
  });

  it('repairs a state that disagrees with the CA Secret', () => {
    assert.equal(planCaRotation(input({ state: propagating() })).action, 'reset');
    assert.equal(planCaRotation(input({ ca: pending })).action, 'adopt');
    assert.equal(planCaRotation(input({ state: { phase: 'switched', kind: 'root', phaseSince: new Date(NOW).toISOString() }, ca: pending })).action, 'adopt');
  });
});

describe('CaRotationController', () => {
  it('runs a requested root rotation step by step, resumes after a restart, and the CA signs from the new chain', async () => {
    const clock = new FakeRuntimeClock(Date.now());
    const store = memoryCaStore();
    const first = await MeshCa.create({ trustDomain: 'cluster.local', leafTtlMs: MIN });
    store.secret = { data: await first.toSecretData(), annotations: {}, rv: 1 };
    const oldRoot = caFactsOf(first).issuingRoot.fingerprint;
    const reports = new Map<string, BundleReport>();
    let live: MeshCa = first;
    let switches = 0;
    const controller = () => new CaRotationController({
      store, trustDomain: 'cluster.local', leafTtlMs: MIN, isLeader: () => true, nodes: () => ['n1', 'n2'], reports: () => reports,
      onCa: (ca) => { live = ca; }, onIssuerSwitched: () => { switches++; }, log: silentOperatorLogger, clock,
    });
    const state = () => JSON.parse(store.secret!.annotations[ROTATION_STATE_ANNOTATION] ?? '{"phase":"idle"}') as { phase: string; lastCompleted?: { kind: string }; handledRequest?: string };
    const ack = (node: string) => reports.set(node, { fingerprints: new Set(bundleFingerprints(live.bundle().pem)), at: clock.now() });

    let c = controller();
    await c.tick();
    assert.equal(store.secretWrites, 0, 'nothing due, nothing written');
    store.secret!.annotations[ROTATE_REQUEST_ANNOTATION] = 'root:t1';
    store.secret!.rv++;
    await c.tick();
    assert.equal(state().phase, 'propagating');
    assert.equal(caFactsOf(live).roots, 2, 'the new root is published');
    assert.equal(caFactsOf(live).issuingRoot.fingerprint, oldRoot, 'still issuing from the old chain');
    assert.equal(store.secret!.annotations[ROTATE_REQUEST_ANNOTATION], 'root:t1', 'the user annotation is kept');
    ack('n1');
    await c.tick();
    assert.equal(state().phase, 'propagating');
    assert.deepEqual(c.status().waitingFor, ['n2']);

    // kill -9 and a new leader: it resumes from the Secret alone.
    await c.stop();
    c = controller();
    reports.set('n2', { fingerprints: new Set([oldRoot]), at: clock.now() });
    await c.tick();
    assert.equal(state().phase, 'propagating', 'n2 still serves the old bundle');
    ack('n2');
    await c.tick();
    assert.equal(state().phase, 'switched');
    assert.equal(switches, 1);
    assert.notEqual(caFactsOf(live).issuingRoot.fingerprint, oldRoot);
    const { csrPem } = await makeCsr({ san: ['spiffe://cluster.local/ns/shop/sa/web'] });
    const svid = await live.issue(csrPem, { namespace: 'shop', serviceAccount: 'web' });
    const issuer = new x509.X509Certificate(x509.PemConverter.decode(svid.certChainPem)[1]!);
    assert.equal(issuer.issuer, live.inspect().certificates.find((x) => x.role === 'root' && x.issuing)!.subject, 'new leaves chain to the new root');

    await clock.advance(30_000);
    await c.tick();
    assert.equal(state().phase, 'switched', 'not before one leaf TTL');
    await clock.advance(40_000);
    await c.tick();
    assert.equal(state().phase, 'idle');
    assert.equal(state().lastCompleted?.kind, 'root');
    assert.equal(caFactsOf(live).roots, 1);
    assert.ok(!bundleFingerprints(live.bundle().pem).includes(oldRoot), 'old root gone from the bundle');
    const writes = store.secretWrites;
    await c.tick();
    assert.equal(store.secretWrites, writes, 'a handled request is not acted on again');
    assert.equal(state().handledRequest, 'root:t1');
  });

  it('a follower only reloads the CA when the Secret changed, and never writes', async () => {
    const store = memoryCaStore();
    const ca = await MeshCa.create({ trustDomain: 'cluster.local', leafTtlMs: MIN });
    store.secret = { data: await ca.toSecretData(), annotations: { [ROTATE_REQUEST_ANNOTATION]: 'root' }, rv: 1 };
    let reloads = 0;
    const c = new CaRotationController({ store, trustDomain: 'cluster.local', leafTtlMs: MIN, isLeader: () => false, nodes: () => [], reports: () => new Map(), onCa: () => { reloads++; }, log: silentOperatorLogger });
    await c.tick();
    await c.tick();
    assert.equal(reloads, 0);
    const other = await MeshCa.fromSecretData(store.secret.data, { trustDomain: 'cluster.local' });
    await other.rotateAddRoot();
    store.secret = { data: await other.toSecretData(), annotations: store.secret.annotations, rv: 2 };
    await c.tick();
    assert.equal(reloads, 1);
    assert.equal(store.secretWrites, 0);
  });
});
