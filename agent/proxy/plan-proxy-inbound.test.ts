// planProxy, destination side (B7): which workload's policy an inbound pod address gets. Only the workload the
// NodeState and this node's Pod watch agree on; an address they disagree on (reused, a delete not compiled out, two
// claims) is held back: a destination that denies every peer, STRICT in the kernel, plaintext refused. Never the
// policy of whichever NodeState claim happened to come last.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Pod, V1Service } from '@kubernetes/client-node';
import type { NodeService, NodeWorkload, WorkloadAuthorization } from '../../crds/index.ts';
import { authorize } from '../../l7proxy/authz.ts';
import { compileSnapshot } from '../../l7proxy/snapshot.ts';
import { HELD_BACK_POLICY, planProxy, type ProxyPlan } from './plan-proxy.ts';

const TD = 'cluster.local';
const IP = '10.244.2.10';
const HELD = `nodemesh-system/held-back:${IP.replaceAll('.', '-')}-8080`;
const id = (sa: string): string => `spiffe://${TD}/ns/shop/sa/${sa}`;

/** ALLOW only `sa` (so anyone else is denied). */
const allowOnly = (sa: string): WorkloadAuthorization => ({ defaultAction: 'Allow', policies: [{ name: `shop/allow-${sa}`, action: 'ALLOW', rules: [{ requiresHttp: false, from: [{ spiffeIds: [id(sa)] }] }] }] });

function wl(name: string, sa: string, mode: 'STRICT' | 'PERMISSIVE', authorization?: WorkloadAuthorization, ip = IP): NodeWorkload {
  return { namespace: 'shop', name, uid: `uid-${name}`, serviceAccount: sa, spiffeId: id(sa), podIPs: [ip], mtls: { mode }, sources: [], ...(authorization ? { authorization } : {}) };
}
function pod(name: string, sa: string, ip = IP): V1Pod {
  return { metadata: { namespace: 'shop', name, uid: `uid-${name}` }, spec: { nodeName: 'node-b', serviceAccountName: sa, containers: [] }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } };
}
const services: V1Service[] = [{ metadata: { namespace: 'shop', name: 'echo' }, spec: { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } }];
const slices: V1EndpointSlice[] = [{
  metadata: { namespace: 'shop', name: 'echo-abc', labels: { 'kubernetes.io/service-name': 'echo' } }, addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }], endpoints: [{ addresses: [IP], nodeName: 'node-b', conditions: { ready: true } }],
}];
const meshSvc: NodeService = { namespace: 'shop', name: 'echo', clusterIPs: ['10.96.0.20'], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes: [] }], sources: [] };

function plan(workloads: NodeWorkload[], localPods: V1Pod[] | undefined): ProxyPlan {
  return planProxy({
    nodeName: 'node-b', state: { nodeName: 'node-b', trustDomain: TD, workloads, services: [meshSvc], version: 'v1' },
    services, endpointSlices: slices, nodes: [{ metadata: { name: 'node-b' }, status: { addresses: [{ type: 'InternalIP', address: '10.200.0.12' }] } }],
    ...(localPods ? { localPods } : {}),
  });
}

/** The destination's name and the verdict it gives `sa` (and an unauthenticated peer) on the pod port. */
function verdicts(p: ProxyPlan): { service: string; web: string; admin: string; anonymous: string } {
  const snap = compileSnapshot(p.inbound);
  const svc = [...snap.services.values()].find((s) => s.config.addresses.some((a) => a.ip === IP && a.port === 8080));
  assert.ok(svc, `an inbound destination for ${IP}:8080 (services: ${p.inbound.services.map((s) => s.name).join(', ')})`);
  const as = (sa: string | undefined): string => authorize({ port: 8080 }, sa ? { spiffeId: id(sa), namespace: 'shop', serviceAccount: sa, authenticated: true } : { authenticated: false }, svc.policies).verdict;
  return { service: svc.config.name, web: as('web'), admin: as('admin'), anonymous: as(undefined) };
}

function assertHeldBack(p: ProxyPlan, why: RegExp): void {
  assert.deepEqual(verdicts(p), { service: HELD, web: 'deny', admin: 'deny', anonymous: 'deny' });
  assert.deepEqual(p.inbound.authorization?.filter((a) => a.targetServices?.includes(HELD)).map((a) => [a.name, a.action]), [[HELD_BACK_POLICY, 'DENY']], 'no workload policy targets a held-back destination');
  assert.deepEqual(p.podIngress, [{ ip: IP, port: 8080 }], 'STRICT in the kernel: only the proxy may connect');
  assert.deepEqual(p.plaintextInbound, [{ ip: IP, port: 8080, handling: 'refuse' }], 'plaintext from outside the mesh is reset');
  assert.deepEqual(p.endpoints[`${IP}:8080`], { via: 'local' }, 'same-node callers go through the held-back destination too, never plain');
  assert.ok(p.problems.some((x) => x.startsWith(`destination address ${IP}: held back: `) && why.test(x)), p.problems.join('\n'));
}

describe('planProxy destination side: identity only when the NodeState and the Pod watch agree', () => {
  it('both views agree: the pod\'s own workload and policy', () => {
    const p = plan([wl('echo-1', 'echo', 'STRICT', allowOnly('web'))], [pod('echo-1', 'echo')]);
    assert.deepEqual(verdicts(p), { service: 'shop/echo-1:8080', web: 'allow', admin: 'deny', anonymous: 'deny' });
    assert.ok(!p.problems.some((x) => x.includes('held back')), p.problems.join('\n'));
  });

  it('two NodeState workloads claim the address: held back in either order (was: the last one\'s policy)', () => {
    const old = wl('old', 'echo', 'STRICT', allowOnly('web'));
    const open = wl('open', 'echo', 'PERMISSIVE', allowOnly('admin'));
    for (const order of [[old, open], [open, old]]) {
      for (const pods of [[pod('old', 'echo')], [pod('open', 'echo')], undefined]) {
        assertHeldBack(plan(order, pods), /claimed by shop\/old \(uid uid-old\) and shop\/open|claimed by shop\/open \(uid uid-open\) and shop\/old/);
      }
    }
  });

  it('same service account, different workloads: the source keeps its identity, the destination is still held back', () => {
    const p = plan([wl('a', 'echo', 'STRICT', allowOnly('web')), wl('b', 'echo', 'STRICT', allowOnly('admin'))], [pod('a', 'echo')]);
    assert.equal(p.identities[IP]?.spiffeId, id('echo'), 'one identity: the address may still call out as it');
    assertHeldBack(p, /claimed by shop\/a .* and shop\/b/);
  });

  it('address reused: the NodeState still names the deleted pod, the Pod watch the new one → held back, not the old policy', () => {
    // The old pod's policy admitted admin; the new pod (another workload) is not compiled in yet.
    assertHeldBack(plan([wl('old', 'echo', 'PERMISSIVE', allowOnly('admin'))], [pod('new', 'other')]), /belongs to pod shop\/new .*NodeState names shop\/old/);
  });

  it('the Pod watch sees two live pods with the address (old pod\'s delete not seen yet) → held back', () => {
    assertHeldBack(plan([wl('new', 'other', 'STRICT', allowOnly('web'))], [pod('old', 'echo'), pod('new', 'other')]), /pods shop\/old and shop\/new both report/);
  });

  it('the pod is gone from the Pod watch (NodeState behind) → held back', () => {
    assertHeldBack(plan([wl('old', 'echo', 'PERMISSIVE')], []), /no live pod with that address/);
  });

  it('once both views agree on the new pod, it gets its own policy', () => {
    const steps: Array<[NodeWorkload[], V1Pod[], string | undefined]> = [
      [[wl('old', 'echo', 'PERMISSIVE', allowOnly('admin'))], [pod('old', 'echo')], 'shop/old:8080'],
      [[wl('old', 'echo', 'PERMISSIVE', allowOnly('admin'))], [pod('old', 'echo'), pod('new', 'other')], undefined],
      [[wl('old', 'echo', 'PERMISSIVE', allowOnly('admin'))], [pod('new', 'other')], undefined],
      [[wl('old', 'echo', 'PERMISSIVE', allowOnly('admin')), wl('new', 'other', 'STRICT', allowOnly('web'))], [pod('new', 'other')], undefined],
      [[wl('new', 'other', 'STRICT', allowOnly('web'))], [pod('new', 'other')], 'shop/new:8080'],
    ];
    for (const [i, [workloads, pods, owner]] of steps.entries()) {
      const v = verdicts(plan(workloads, pods));
      if (owner) assert.equal(v.service, owner, `step ${i}`);
      else assert.deepEqual(v, { service: HELD, web: 'deny', admin: 'deny', anonymous: 'deny' }, `step ${i}`);
    }
    const last = plan([wl('new', 'other', 'STRICT', allowOnly('web'))], [pod('new', 'other')]);
    assert.deepEqual(verdicts(last), { service: 'shop/new:8080', web: 'allow', admin: 'deny', anonymous: 'deny' });
    assert.equal(last.inbound.authorization?.some((a) => a.name === HELD_BACK_POLICY), false, 'no deny-all left once nothing is held back');
  });

  it('a held-back address leaves the other pods of the node alone', () => {
    const other = '10.244.2.11';
    const p = planProxy({
      nodeName: 'node-b', state: { nodeName: 'node-b', trustDomain: TD, workloads: [wl('a', 'echo', 'STRICT'), wl('b', 'admin', 'STRICT'), wl('c', 'echo', 'STRICT', allowOnly('web'), other)], services: [meshSvc], version: 'v1' },
      services, endpointSlices: [{ ...slices[0]!, endpoints: [...slices[0]!.endpoints, { addresses: [other], nodeName: 'node-b', conditions: { ready: true } }] }], nodes: [],
      localPods: [pod('a', 'echo'), pod('c', 'echo', other)],
    });
    compileSnapshot(p.inbound);
    assert.deepEqual(p.inbound.services.map((s) => s.name).sort(), [HELD, 'shop/c:8080']);
    assert.deepEqual(p.inbound.authorization?.map((a) => [a.name, a.targetServices]), [['shop/allow-web', ['shop/c:8080']], [HELD_BACK_POLICY, [HELD]]]);
  });
});
