// The agent's datapath planner with mesh flows (issue 5): service ports the NodeState lists go to the node proxy
// (l7), and each of their pod addresses becomes a mesh frontend of its own; everything else stays L4. Also
// through the SyncLoop on fake maps: setMeshPorts re-plans only the services whose set changed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeMapSet, nmSvcFlags } from '../../bpf/index.ts';
import { planDatapath, type ClusterState } from '../plan-datapath.ts';
import { SyncLoop } from '../sync-loop.ts';
import { silentLogger } from '../logger.ts';
import { makeService, makeSlice } from '../testing/scenario.ts';

function state(meshPorts?: Set<string>): ClusterState {
  return {
    nodeName: 'node-1',
    services: [makeService('shop', 'echo', '10.96.0.20', 80), makeService('shop', 'plain', '10.96.0.21', 80)],
    endpointSlices: [makeSlice('shop', 'echo', 8080, ['10.244.1.5', '10.244.2.6']), makeSlice('shop', 'plain', 8080, ['10.244.1.7'])],
    nodes: [],
    localPods: [],
    ...(meshPorts ? { meshPorts } : {}),
  };
}

describe('mesh flows in the datapath plan', () => {
  it('marks mesh service ports l7 and adds one mesh frontend per pod address; others stay L4', () => {
    const plan = planDatapath(state(new Set(['shop/echo:80'])));
    const echo = plan.services.find((s) => s.key.startsWith('shop/echo:80/') && !s.key.includes('/pod/'))!;
    assert.equal(echo.spec.l7, true);
    const pods = plan.services.filter((s) => s.key.includes('/pod/'));
    assert.deepEqual(pods.map((p) => p.spec.frontends.map((f) => `${f.addr}:${f.port}`)).flat().sort(), ['10.244.1.5:8080', '10.244.2.6:8080']);
    for (const p of pods) {
      assert.equal(p.spec.l7, true);
      assert.deepEqual(p.spec.backends.map((b) => `${b.addr}:${b.port}`), p.spec.frontends.map((f) => `${f.addr}:${f.port}`));
    }
    const plain = plan.services.find((s) => s.key.startsWith('shop/plain:80/'))!;
    assert.equal(plain.spec.l7, undefined);
    assert.equal(new Set(plan.services.map((s) => s.spec.id)).size, plan.services.length);
  });

  it('without mesh ports the plan is the plain L4 one', () => {
    const plan = planDatapath(state());
    assert.ok(plan.services.every((s) => !s.spec.l7 && !s.key.includes('/pod/')));
  });

  it('SyncLoop.setMeshPorts turns a service into a mesh flow and back', async () => {
    const maps = new FakeMapSet();
    const loop = new SyncLoop({ maps, nodeName: 'node-1', log: silentLogger });
    const s = state();
    for (const svc of s.services) loop.onService('add', svc);
    for (const sl of s.endpointSlices) loop.onEndpointSlice('add', sl);
    loop.markSynced();
    await loop.whenReady();
    const flagsOf = (addr: string): number | undefined => {
      const fe = [...maps.map('nm_lb4_fe').entries()].find(([k]) => k.addr === addr)?.[1];
      return fe ? maps.map('nm_lb_svc').get(fe.svc_id)?.flags : undefined;
    };
    assert.equal(flagsOf('10.96.0.20'), 0);
    assert.equal(flagsOf('10.244.1.5'), undefined);
    loop.setMeshPorts(new Set(['shop/echo:80']));
    await loop.idle();
    assert.equal(flagsOf('10.96.0.20'), nmSvcFlags.NM_SVC_F_L7);
    assert.equal(flagsOf('10.244.1.5'), nmSvcFlags.NM_SVC_F_L7);
    assert.equal(flagsOf('10.96.0.21'), 0);
    loop.setMeshPorts(new Set());
    await loop.idle();
    assert.equal(flagsOf('10.96.0.20'), 0);
    assert.equal(flagsOf('10.244.1.5'), undefined);
    await loop.stop();
  });
});
