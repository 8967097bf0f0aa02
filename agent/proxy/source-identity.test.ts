// computeSourceIdentities: a local pod address gets an identity only when the NodeState and this node's Pod watch
// name the same pod. Delete → re-add with the address reused by another service account, in every order the two
// views can see it (istio/istio#46628): the new pod never carries the old identity, and gets its own once both
// views agree.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import type { NodeWorkload } from '../../crds/index.ts';
import { computeSourceIdentities } from './source-identity.ts';
import { planProxy } from './plan-proxy.ts';

const TD = 'cluster.local';
const IP = '10.244.1.7';
const id = (sa: string): string => `spiffe://${TD}/ns/shop/sa/${sa}`;

function wl(name: string, sa: string, ip = IP): NodeWorkload {
  return { namespace: 'shop', name, uid: `uid-${name}`, serviceAccount: sa, spiffeId: id(sa), podIPs: [ip], mtls: { mode: 'STRICT' }, sources: [] };
}
function pod(name: string, sa: string, ip = IP, extra: { phase?: string; deleting?: boolean; hostNetwork?: boolean } = {}): V1Pod {
  return {
    metadata: { namespace: 'shop', name, uid: `uid-${name}`, ...(extra.deleting ? { deletionTimestamp: new Date() } : {}) },
    spec: { nodeName: 'node-a', serviceAccountName: sa, containers: [], ...(extra.hostNetwork ? { hostNetwork: true } : {}) },
    status: { phase: extra.phase ?? 'Running', podIP: ip, podIPs: [{ ip }] },
  };
}

/** The two views an agent holds, changed one event at a time. */
class Views {
  nodeState = new Map<string, NodeWorkload>();
  pods = new Map<string, V1Pod>();
  identityOf(ip = IP): string | undefined {
    return computeSourceIdentities([...this.nodeState.values()], [...this.pods.values()]).identities[ip]?.spiffeId;
  }
}

type Step = [string, (v: Views) => void];
const podADeleted: Step = ['Pod watch: A deleted', (v) => v.pods.delete('a')];
const podBAdded: Step = ['Pod watch: B reports the address', (v) => v.pods.set('b', pod('b', 'admin'))];
const nsADropped: Step = ['NodeState: A compiled out', (v) => v.nodeState.delete('a')];
const nsBAdded: Step = ['NodeState: B compiled in', (v) => v.nodeState.set('b', wl('b', 'admin'))];

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest]));
}

describe('computeSourceIdentities', () => {
  it('gives an address the identity both views agree on', () => {
    const r = computeSourceIdentities([wl('a', 'web'), wl('c', 'api', '10.244.1.8')], [pod('a', 'web'), pod('c', 'api', '10.244.1.8')]);
    assert.deepEqual(r.identities, {
      [IP]: { spiffeId: id('web'), namespace: 'shop', serviceAccount: 'web' },
      '10.244.1.8': { spiffeId: id('api'), namespace: 'shop', serviceAccount: 'api' },
    });
    assert.deepEqual(r.withheld, []);
  });

  it('every order of delete A / re-add B on the same address: never A\'s identity once A is gone from either view, B\'s only when both agree', () => {
    const orders = permutations([podADeleted, podBAdded, nsADropped, nsBAdded]);
    assert.equal(orders.length, 24);
    for (const order of orders) {
      const v = new Views();
      v.nodeState.set('a', wl('a', 'web'));
      v.pods.set('a', pod('a', 'web'));
      assert.equal(v.identityOf(), id('web'));
      const trail: string[] = [];
      for (const [name, step] of order) {
        step(v);
        trail.push(name);
        const got = v.identityOf();
        const aGone = !v.pods.has('a') || !v.nodeState.has('a');
        const where = trail.join(' → ');
        if (got === id('web')) assert.ok(!aGone && !v.pods.has('b'), `${where}: A's identity kept after A left a view or B took the address`);
        if (got === id('admin')) assert.ok(v.pods.has('b') && v.nodeState.has('b') && aGone, `${where}: B's identity before both views agree`);
        assert.ok(got === undefined || got === id('web') || got === id('admin'), where);
      }
      assert.equal(v.identityOf(), id('admin'), `${trail.join(' → ')}: B ends with its own identity`);
    }
  });

  it('terminating pods keep their identity during their grace period; finished ones lose it', () => {
    assert.equal(computeSourceIdentities([wl('a', 'web')], [pod('a', 'web', IP, { deleting: true })]).identities[IP]?.spiffeId, id('web'));
    const done = computeSourceIdentities([wl('a', 'web')], [pod('a', 'web', IP, { phase: 'Succeeded' })]);
    assert.equal(done.identities[IP], undefined);
    assert.match(done.withheld[0]!.reason, /no live pod/);
  });

  it('a finished pod still listing the address does not block the pod that reuses it', () => {
    const r = computeSourceIdentities([wl('b', 'admin')], [pod('a', 'web', IP, { phase: 'Failed' }), pod('b', 'admin')]);
    assert.equal(r.identities[IP]?.spiffeId, id('admin'));
  });

  it('two NodeState workloads with different identities on one address: withheld, naming both', () => {
    const r = computeSourceIdentities([wl('a', 'web'), wl('b', 'admin')], [pod('b', 'admin')]);
    assert.equal(r.identities[IP], undefined);
    assert.match(r.withheld[0]!.reason, /shop\/a .*and shop\/b/);
  });

  it('a pod whose service account differs from the NodeState entry with its uid: withheld', () => {
    const r = computeSourceIdentities([wl('a', 'web')], [pod('a', 'admin')]);
    assert.equal(r.identities[IP], undefined);
    assert.match(r.withheld[0]!.reason, /runs as shop\/admin/);
  });

  it('host-network pods (the node address) never make an address ambiguous or give it an identity', () => {
    const r = computeSourceIdentities([wl('a', 'web')], [pod('a', 'web'), pod('h', 'node-agent', IP, { hostNetwork: true })]);
    assert.equal(r.identities[IP]?.spiffeId, id('web'));
  });

  it('without a Pod watch (plan tests), the NodeState alone decides; ambiguity is still withheld', () => {
    assert.equal(computeSourceIdentities([wl('a', 'web')], undefined).identities[IP]?.spiffeId, id('web'));
    assert.equal(computeSourceIdentities([wl('a', 'web'), wl('b', 'admin')], undefined).identities[IP], undefined);
  });

  it('planProxy reports a withheld address as a problem and leaves it out of identities', () => {
    const plan = planProxy({
      nodeName: 'node-a',
      state: { nodeName: 'node-a', trustDomain: TD, workloads: [wl('a', 'web')], services: [], version: 'v1' },
      services: [], endpointSlices: [], nodes: [],
      localPods: [pod('b', 'admin')],
    });
    assert.deepEqual(plan.identities, {});
    assert.ok(plan.problems.some((p) => p.includes(`source address ${IP}: no identity`) && p.includes('shop/b')), plan.problems.join('\n'));
    // The certificate for A's service account is still wanted (A may be on its way out, not yet gone).
    assert.deepEqual(plan.workloadIdentities, [{ namespace: 'shop', serviceAccount: 'web' }]);
  });
});
