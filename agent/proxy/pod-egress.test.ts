// planPodSources: which pod addresses the anti-spoofing filter pins to their veths. The kernel side is checked by
// test/e2e/confused-deputy.test.ts (a pod sending with another pod's address is dropped).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Pod } from '@kubernetes/client-node';
import { planPodSources } from './pod-egress.ts';

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
