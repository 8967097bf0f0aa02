/** The planner's Kubernetes rules and id stability, without maps. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClusterState, computeEndpoints, computeNodeAddresses, planDatapath } from './plan-datapath.ts';
import { ServiceIds } from './service-ids.ts';
import { makeService, makeSlice } from './testing/scenario.ts';

const ctx = { nodeName: 'node-1', nodeAddresses: [], localPodIps: new Set<string>() };

function state(services: ClusterState['services'], slices: ClusterState['endpointSlices']): ClusterState {
  return { nodeName: 'node-1', services, endpointSlices: slices, nodes: [], localPods: [] };
}

describe('planDatapath', () => {
  it('reads endpoint conditions as kube-proxy does (absent ready = ready, absent serving = ready)', () => {
    const slice = makeSlice('default', 'a', 8080, []);
    slice.endpoints = [
      { addresses: ['10.0.0.1'] },
      { addresses: ['10.0.0.2'], conditions: { ready: false } },
      { addresses: ['10.0.0.3'], conditions: { ready: false, terminating: true } },
      { addresses: ['10.0.0.4'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'node-1' },
    ];
    const eps = computeEndpoints([slice], { port: 80, protocol: 'TCP' }, 4, ctx);
    assert.deepEqual(eps.map((e) => [e.addr, e.ready, e.serving, e.terminating, e.local]), [
      ['10.0.0.1', true, true, false, false],
      ['10.0.0.2', false, false, false, false],
      ['10.0.0.3', false, false, true, false],
      ['10.0.0.4', false, true, true, true],
    ]);
  });

  it('uses terminating endpoints only behind ready ones, and drops the rest', () => {
    const plan = planDatapath(state([makeService('default', 'a', '10.96.0.1', 80)], [makeSlice('default', 'a', 8080, [
      { ip: '10.0.0.1', ready: false, serving: true, terminating: true },
      { ip: '10.0.0.2', ready: false, serving: false, terminating: true },
      '10.0.0.3',
    ])]));
    const s = plan.services[0]?.spec;
    assert.deepEqual(s?.backends.map((b) => [b.addr, b.ready, b.terminating]), [['10.0.0.1', false, true], ['10.0.0.3', true, false]]);
  });

  it('gives NodePorts every node address, IPv6 in canonical form', () => {
    assert.deepEqual(computeNodeAddresses([
      { metadata: { name: 'b' }, status: { addresses: [{ type: 'InternalIP', address: '10.0.0.2' }, { type: 'InternalIP', address: 'fd00:0:0:0::2' }, { type: 'Hostname', address: 'b' }] } },
      { metadata: { name: 'a' }, status: { addresses: [{ type: 'InternalIP', address: '10.0.0.1' }, { type: 'ExternalIP', address: '192.0.2.1' }] } },
    ]), ['10.0.0.1', '10.0.0.2', '192.0.2.1', 'fd00::2']);
  });

  it('keeps ids stable across re-plans and restarts, and does not hand a freed id out again at once', () => {
    const svcs = ['a', 'b', 'c'].map((n, i) => makeService('default', n, `10.96.0.${i + 1}`, 80));
    const slices = svcs.map((s, i) => makeSlice('default', s.metadata?.name ?? '', 8080, [`10.244.1.${i + 1}`]));
    const p1 = planDatapath(state(svcs, slices));
    const ids1 = p1.services.map((s) => [s.key, s.spec.id, s.spec.backends.map((b) => b.id)]);
    const p2 = planDatapath(state([...svcs].reverse(), [...slices].reverse()), p1.ids);
    assert.deepEqual(p2.services.map((s) => [s.key, s.spec.id, s.spec.backends.map((b) => b.id)]), ids1, 'same ids whatever the order');
    // b goes, d comes: d must not get b's id.
    const d = makeService('default', 'd', '10.96.0.4', 80);
    const p3 = planDatapath(state([svcs[0], svcs[2], d] as never, slices), p2.ids);
    const idB = p1.ids.peekService('default/b:80/TCP/v4');
    assert.notEqual(p3.ids.peekService('default/d:80/TCP/v4'), idB);
    assert.equal(p3.ids.peekService('default/b:80/TCP/v4'), undefined);
  });

  it('is pure: the ids passed in are not changed', () => {
    const ids = new ServiceIds();
    planDatapath(state([makeService('default', 'a', '10.96.0.1', 80)], []), ids);
    assert.equal(ids.peekService('default/a:80/TCP/v4'), undefined);
  });

  it('names skipped ports in problems instead of failing', () => {
    const svc = makeService('default', 'a', '10.96.0.1', 80);
    svc.spec?.ports?.push({ port: 9, protocol: 'SCTP' });
    const plan = planDatapath(state([svc], []));
    assert.equal(plan.services.length, 1);
    assert.match(plan.problems[0] ?? '', /default\/a port 9\/SCTP/);
  });
});
