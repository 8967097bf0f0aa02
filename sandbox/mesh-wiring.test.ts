/** The sandbox's mesh wiring, pure parts: agent flags and env, receivers per node, the loopback status routes, readiness. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSandboxConfig } from './config.ts';
import { computeAgentMeshReadiness, computeAgentWiring, computeOtlpEndpoint, computeSandboxMeshConfig, planOtlpReceiverDaemon, routeAgentRequest } from './mesh-wiring.ts';
import { computeTopology } from './net/topology.ts';

const cfg = resolveSandboxConfig({ NODEMESH_SANDBOX_INSTANCE: 'unit' });
const topo = computeTopology(cfg, 2);

describe('sandbox mesh wiring', () => {
  it('agents get the CA on node-1\'s fabric address, their token pattern and a status socket', () => {
    const w = computeAgentWiring(cfg, topo, 'node-2');
    assert.deepEqual(w.env, { NODEMESH_CA_URL: 'https://10.200.0.11:15012', NODEMESH_CA_TOKEN_FILE: '/run/nodemesh/sandbox-unit/agent-{node}.token' });
    assert.deepEqual(w.args, ['--status-socket', '/run/nodemesh/sandbox-unit/agent-node-2.sock', '--access-log', '/run/nodemesh/sandbox-unit/access-node-2.log', '--run-dir', '/run/nodemesh/sandbox-unit']);
  });
  it('one OTLP receiver per node on its loopback, all writing the one spans file; tracing points there, ratio 1', () => {
    const d = planOtlpReceiverDaemon(cfg, topo);
    assert.deepEqual(d.map((x) => [x.name, x.netns]), [['otlp-receiver/node-1', topo.nodes[0]!.netns], ['otlp-receiver/node-2', topo.nodes[1]!.netns]]);
    assert.ok(d.every((x) => x.argv.includes('127.0.0.1') && x.argv.includes('/run/nodemesh/sandbox-unit/spans.jsonl')));
    assert.equal(computeOtlpEndpoint(topo), 'http://127.0.0.1:4318/v1/traces');
    assert.equal(computeSandboxMeshConfig(topo)['tracing.samplingRatio'], '1');
  });
  it('the loopback endpoint forwards only read-only agent paths of known nodes', () => {
    assert.deepEqual(routeAgentRequest('GET', '/nodes/node-1/statusz', ['node-1']), { node: 'node-1', path: '/statusz' });
    assert.deepEqual(routeAgentRequest('GET', '/nodes/node-1/metrics?x=1', ['node-1']), { node: 'node-1', path: '/metrics' });
    assert.deepEqual(routeAgentRequest('GET', '/nodes/node-1/explain?url=http%3A%2F%2Fecho%2F&src=10.0.0.1', ['node-1']), { node: 'node-1', path: '/explain?url=http%3A%2F%2Fecho%2F&src=10.0.0.1' });
    assert.equal((routeAgentRequest('POST', '/nodes/node-1/explain?url=x', ['node-1']) as { status: number }).status, 405);
    assert.equal((routeAgentRequest('POST', '/nodes/node-1/statusz', ['node-1']) as { status: number }).status, 405);
    assert.equal((routeAgentRequest('GET', '/nodes/node-9/statusz', ['node-1']) as { status: number }).status, 404);
    assert.equal((routeAgentRequest('GET', '/nodes/node-1/../../etc', ['node-1']) as { status: number }).status, 404);
    assert.equal((routeAgentRequest('GET', '/nodes/node-1/debug', ['node-1']) as { status: number }).status, 404);
  });
  it('an agent is mesh-ready once its proxy serves the latest plan with every certificate', () => {
    const ok = { proxy: { listening: true }, mesh: { planned: 'v1', proxy: { applied: 'v1' }, trustBundle: 'loaded', certificates: [{ spiffeId: 'a', state: 'valid' }] } };
    assert.equal(computeAgentMeshReadiness(ok), undefined);
    assert.match(computeAgentMeshReadiness({ ...ok, mesh: { ...ok.mesh, certificates: [{ spiffeId: 'a', state: 'pending' }] } })!, /certificates of a/);
    assert.match(computeAgentMeshReadiness({ ...ok, mesh: { ...ok.mesh, proxy: { applied: 'v0' } } })!, /latest plan/);
    assert.match(computeAgentMeshReadiness({ proxy: { listening: false } })!, /not listening/);
  });
});
