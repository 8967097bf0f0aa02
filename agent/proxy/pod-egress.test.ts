// planPodSources: which pod addresses the anti-spoofing filter pins to their veths; planPodEgress: the level-triggered
// steps from what is in place to that. The kernel side is checked by
// test/e2e/confused-deputy.test.ts (a pod sending with another pod's address is dropped).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { nmPodSrcFlags, type NmPod4SrcVal } from '../../bpf/index.ts';
import { parseHostRoutes, parseLinks, planPodEgress, planPodSources, type PodEgressObserved } from './pod-egress.ts';

function pod(name: string, ips: string[], extra: { phase?: string; hostNetwork?: boolean } = {}): V1Pod {
  return {
    metadata: { namespace: 'shop', name, uid: `uid-${name}` },
    spec: { nodeName: 'node-a', containers: [], ...(extra.hostNetwork ? { hostNetwork: true } : {}) },
    status: { phase: extra.phase ?? 'Running', ...(ips[0] ? { podIP: ips[0] } : {}), podIPs: ips.map((ip) => ({ ip })) },
  };
}

test('every live pod with an IPv4 address, sorted; IPv6 noted; finished, host-network and address-less pods left out', () => {
  assert.deepEqual(planPodSources([
    pod('b', ['10.244.1.9']),
    pod('a', ['10.244.1.7', 'fd00::7']),
    pod('done', ['10.244.1.8'], { phase: 'Succeeded' }),
    pod('host', ['10.0.0.2'], { hostNetwork: true }),
    pod('pending', []),
    pod('v6only', ['fd00::9']),
  ]), [
    { ip: '10.244.1.7', ipv6: true, pod: 'shop/a' },
    { ip: '10.244.1.9', ipv6: false, pod: 'shop/b' },
  ]);
});

test('an address two live pods report (reuse, old delete not seen) is guarded once, naming both', () => {
  assert.deepEqual(planPodSources([pod('old', ['10.244.1.7']), pod('new', ['10.244.1.7'])]), [{ ip: '10.244.1.7', ipv6: false, pod: 'shop/old, shop/new' }]);
});

// planPodEgress: level-triggered steps from what is in place (routes, links, our tc slot, the map) to the plan.

const OURS = 41;
function observed(o: { routes?: Record<string, string>; links?: Array<[string, number, boolean?]>; filters?: Record<number, number | undefined>; entries?: Record<number, NmPod4SrcVal> }): PodEgressObserved {
  return {
    routes: new Map(Object.entries(o.routes ?? {})),
    links: new Map((o.links ?? []).map(([dev, ifindex, veth]) => [dev, { dev, ifindex, veth: veth ?? true }])),
    filters: new Map(Object.entries(o.filters ?? {}).map(([k, v]) => [Number(k), v])),
    entries: new Map(Object.entries(o.entries ?? {}).map(([k, v]) => [Number(k), v])),
    progId: OURS,
  };
}
const A = { ip: '10.244.1.7', ipv6: false, pod: 'shop/a' };
const B = { ip: '10.244.1.8', ipv6: true, pod: 'shop/b' };
const node = { routes: { '10.244.1.7': 'veth-a', '10.244.1.8': 'veth-b' }, links: [['lo', 1, false], ['veth-a', 7], ['veth-b', 8]] as Array<[string, number, boolean?]> };

test('a quiet pass: entries right and our program in place → nothing to do', () => {
  const steps = planPodEgress([A, B], observed({ ...node, filters: { 7: OURS, 8: OURS }, entries: { 7: { addr: A.ip, flags: 0 }, 8: { addr: B.ip, flags: nmPodSrcFlags.NM_POD_SRC_F_IPV6 } } }));
  assert.deepEqual([steps.write, steps.attach, steps.detach, steps.forget, steps.problems], [[], [], [], [], []]);
  assert.deepEqual(steps.guarded.map((g) => g.dev), ['veth-a', 'veth-b']);
});

test('a new pod: its entry, then its filter; a changed address or IPv6 flag rewrites the entry only', () => {
  const fresh = planPodEgress([A], observed({ ...node, filters: { 7: undefined, 8: undefined } }));
  assert.deepEqual(fresh.write, [{ ifindex: 7, dev: 'veth-a', value: { addr: A.ip, flags: 0 } }]);
  assert.deepEqual(fresh.attach, [{ ifindex: 7, dev: 'veth-a', why: 'missing' }]);
  const changed = planPodEgress([A, B], observed({ ...node, filters: { 7: OURS, 8: OURS }, entries: { 7: { addr: '10.244.1.99', flags: 0 }, 8: { addr: B.ip, flags: 0 } } }));
  assert.deepEqual(changed.write.map((w) => [w.dev, w.value]), [['veth-a', { addr: A.ip, flags: 0 }], ['veth-b', { addr: B.ip, flags: nmPodSrcFlags.NM_POD_SRC_F_IPV6 }]]);
  assert.deepEqual(changed.attach, []);
});

test('another program in our slot (an earlier agent\'s) is replaced; the entry kept when right', () => {
  const steps = planPodEgress([A], observed({ ...node, filters: { 7: 12, 8: undefined }, entries: { 7: { addr: A.ip, flags: 0 } } }));
  assert.deepEqual(steps.write, []);
  assert.deepEqual(steps.attach, [{ ifindex: 7, dev: 'veth-a', why: 'other program' }]);
});

test('stale: a veth no planned pod owns loses its filter, then its entry; an entry whose veth is gone is forgotten', () => {
  const steps = planPodEgress([A], observed({ ...node, filters: { 7: OURS, 8: OURS }, entries: { 7: { addr: A.ip, flags: 0 }, 8: { addr: B.ip, flags: 0 }, 99: { addr: '10.244.1.50', flags: 0 } } }));
  assert.deepEqual(steps.detach, [{ ifindex: 8, dev: 'veth-b' }]);
  assert.deepEqual(steps.forget, [8, 99]);
  // A filter with no entry at all (entry lost) drops the veth's IPv4: removed too.
  const orphan = planPodEgress([], observed({ ...node, filters: { 7: OURS, 8: undefined } }));
  assert.deepEqual(orphan.detach, [{ ifindex: 7, dev: 'veth-a' }]);
  assert.deepEqual(orphan.forget, []);
});

test('no route yet, or a route out of something that is not a veth: reported, nothing attached there', () => {
  const steps = planPodEgress([A, B, { ip: '10.244.1.9', ipv6: false, pod: 'shop/c' }], observed({ routes: { '10.244.1.7': 'cni0', '10.244.1.8': 'veth-gone' }, links: [['cni0', 3, false]] }));
  assert.deepEqual([steps.write, steps.attach, steps.guarded], [[], [], []]);
  assert.match(steps.problems.join('\n'), /shop\/a \(10\.244\.1\.7\): its route goes out cni0, which is not a veth/);
  assert.match(steps.problems.join('\n'), /shop\/b .*no \/32 route/);
  assert.match(steps.problems.join('\n'), /shop\/c .*no \/32 route/);
});

test('ip -j output: host routes without a gateway (with or without /32), links with their kind', () => {
  const routes = parseHostRoutes(JSON.stringify([
    { dst: 'default', gateway: '10.200.0.1', dev: 'eth0' },
    { dst: '10.244.1.7', dev: 'veth-a', scope: 'link' },
    { dst: '10.244.1.8/32', dev: 'veth-b', scope: 'link' },
    { dst: '10.244.2.0/24', gateway: '10.200.0.12', dev: 'eth0' },
    { dst: '10.200.0.0/24', dev: 'eth0', scope: 'link' },
    { dst: '10.244.1.9', dev: 'lo' },
    { type: 'blackhole', dst: '10.244.1.10' },
  ]));
  assert.deepEqual([...routes], [['10.244.1.7', 'veth-a'], ['10.244.1.8', 'veth-b']]);
  const links = parseLinks(JSON.stringify([{ ifindex: 1, ifname: 'lo' }, { ifindex: 7, ifname: 'veth-a', linkinfo: { info_kind: 'veth' } }, { ifindex: 3, ifname: 'cni0', linkinfo: { info_kind: 'bridge' } }]));
  assert.deepEqual([...links.values()], [{ dev: 'lo', ifindex: 1, veth: false }, { dev: 'veth-a', ifindex: 7, veth: true }, { dev: 'cni0', ifindex: 3, veth: false }]);
});
