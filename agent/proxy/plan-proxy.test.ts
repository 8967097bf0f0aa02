// planProxy: NodeState + Services/EndpointSlices/Nodes → outbound and inbound proxy configs, endpoint transports,
// identities, mesh ports and STRICT pod ports. The configs must be accepted by the proxy as they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { CompiledRoute, NodeService, NodeWorkload } from '../../crds/index.ts';
import { compileSnapshot } from '../../l7proxy/snapshot.ts';
import { planProxy, computeTrafficPolicy, type MergedNodeState, type PlanProxyInput } from './plan-proxy.ts';

const TD = 'cluster.local';

function svc(name: string, clusterIP: string, port = 80, targetPort = 8080): V1Service {
  return { metadata: { namespace: 'shop', name }, spec: { clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', port, targetPort, protocol: 'TCP' }] } } as V1Service;
}
function slice(service: string, eps: Array<{ ip: string; node: string; ready?: boolean }>, port = 8080): V1EndpointSlice {
  return {
    metadata: { namespace: 'shop', name: `${service}-abc`, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({ addresses: [e.ip], nodeName: e.node, conditions: { ready: e.ready ?? true } })),
  } as V1EndpointSlice;
}
function node(name: string, ip: string): V1Node {
  return { metadata: { name }, status: { addresses: [{ type: 'InternalIP', address: ip }] } } as V1Node;
}
function workload(name: string, sa: string, ip: string, mode: 'STRICT' | 'PERMISSIVE' | 'DISABLED', extra: Partial<NodeWorkload> = {}): NodeWorkload {
  return { namespace: 'shop', name, uid: `uid-${name}`, serviceAccount: sa, spiffeId: `spiffe://${TD}/ns/shop/sa/${sa}`, podIPs: [ip], mtls: { mode }, sources: [], ...extra };
}
function route(backends: Array<[string, number]>, extra: Partial<CompiledRoute> = {}): CompiledRoute {
  return {
    route: 'shop/echo', ruleIndex: 0, matchIndex: 0, match: { path: { type: 'PathPrefix', value: '/' } }, filters: [],
    backends: backends.map(([name, weight]) => ({ namespace: 'shop', name, port: 80, weight, resolved: true })), ...extra,
  };
}
function meshService(name: string, ip: string, mode: 'HTTP' | 'TCP', routes: CompiledRoute[] = []): NodeService {
  return { namespace: 'shop', name, clusterIPs: [ip], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode, routes }], sources: [] };
}

const services = [svc('echo', '10.96.0.20'), svc('echo-v1', '10.96.0.21'), svc('echo-v2', '10.96.0.22')];
const slices = [
  slice('echo', [{ ip: '10.244.2.10', node: 'node-b' }, { ip: '10.244.2.11', node: 'node-b' }]),
  slice('echo-v1', [{ ip: '10.244.2.10', node: 'node-b' }]),
  slice('echo-v2', [{ ip: '10.244.2.11', node: 'node-b' }]),
];
const nodes = [node('node-a', '10.200.0.11'), node('node-b', '10.200.0.12')];
const canary = [
  route([['echo-v1', 90], ['echo-v2', 10]], { match: { path: { type: 'PathPrefix', value: '/' }, headers: [{ type: 'Exact', name: 'x-canary', value: 'yes' }] }, matchIndex: 0 }),
  route([['echo-v1', 90], ['echo-v2', 10]], { matchIndex: 1 }),
];
const meshServices = [meshService('echo', '10.96.0.20', 'HTTP', canary), meshService('echo-v1', '10.96.0.21', 'TCP'), meshService('echo-v2', '10.96.0.22', 'TCP')];

function input(nodeName: string, workloads: NodeWorkload[], svcs = meshServices): PlanProxyInput {
  const state: MergedNodeState = { nodeName, trustDomain: TD, workloads, services: svcs, version: `v-${nodeName}` };
  return { nodeName, state, services, endpointSlices: slices, nodes };
}

const sourceNode = input('node-a', [workload('web-1', 'web', '10.244.1.10', 'STRICT')]);
const authz = {
  defaultAction: 'Deny' as const,
  policies: [
    { name: 'shop/deny-admin', action: 'DENY' as const, rules: [{ requiresHttp: true, to: [{ paths: [{ prefix: '/admin' }] }] }] },
    { name: 'shop/allow-web', action: 'ALLOW' as const, rules: [{ requiresHttp: false, from: [{ spiffeIds: [`spiffe://${TD}/ns/shop/sa/web`] }] }] },
  ],
};
const destNode = input('node-b', [
  workload('echo-v1-1', 'echo', '10.244.2.10', 'STRICT', { authorization: authz }),
  workload('echo-v2-1', 'echo', '10.244.2.11', 'PERMISSIVE'),
]);

test('source node: service addresses, weighted routes in NodeState order, backends with endpoints over HBONE', () => {
  const plan = planProxy(sourceNode);
  assert.deepEqual(plan.problems, []);
  compileSnapshot(plan.outbound);
  compileSnapshot(plan.inbound);
  const echo = plan.outbound.services.find((s) => s.name === 'shop/echo:80')!;
  assert.deepEqual(echo.addresses, [{ ip: '10.96.0.20', port: 80 }]);
  assert.equal(echo.protocol, 'http');
  assert.deepEqual(echo.routes!.map((r) => r.createdAtMs), [0, 1]);
  assert.deepEqual(echo.routes![0]!.rules[0]!.matches![0]!.headers, [{ type: 'Exact', name: 'x-canary', value: 'yes' }]);
  assert.deepEqual(echo.routes![1]!.rules[0]!.backendRefs, [{ backend: 'shop/echo-v1:80', weight: 90 }, { backend: 'shop/echo-v2:80', weight: 10 }]);
  const v1 = plan.outbound.backends.find((b) => b.name === 'shop/echo-v1:80')!;
  assert.deepEqual(v1.endpoints, [{ ip: '10.244.2.10', port: 8080, ready: true, nodeName: 'node-b' }]);
  assert.deepEqual(plan.endpoints['10.244.2.10:8080'], { via: 'hbone', node: 'node-b', nodeIp: '10.200.0.12' });
  assert.equal(plan.outbound.services.find((s) => s.name === 'shop/echo-v1:80')!.protocol, 'tcp');
  assert.deepEqual(plan.meshPorts, ['shop/echo-v1:80', 'shop/echo-v2:80', 'shop/echo:80']);
  assert.deepEqual(plan.identities, { '10.244.1.10': { spiffeId: `spiffe://${TD}/ns/shop/sa/web`, namespace: 'shop', serviceAccount: 'web' } });
  assert.deepEqual(plan.workloadIdentities, [{ namespace: 'shop', serviceAccount: 'web' }]);
  // No local pod serves a mesh service: nothing inbound, nothing for the kernel to guard.
  assert.equal(plan.inbound.services.length, 0);
  assert.deepEqual(plan.podIngress, []);
});

test('meshed pods dialled directly are destinations of their own, forwarded to exactly that pod', () => {
  const plan = planProxy(sourceNode);
  const direct = plan.outbound.services.filter((s) => s.addresses.some((a) => a.ip.startsWith('10.244.')));
  assert.deepEqual(direct.map((s) => `${s.addresses[0]!.ip}:${s.addresses[0]!.port}`).sort(), ['10.244.2.10:8080', '10.244.2.11:8080']);
  for (const s of direct) {
    const b = plan.outbound.backends.find((x) => x.name === s.defaultBackend)!;
    assert.deepEqual(b.endpoints.map((e) => `${e.ip}:${e.port}`), [`${s.addresses[0]!.ip}:${s.addresses[0]!.port}`]);
    assert.equal(s.routes, undefined);
  }
});

test('destination node: one inbound destination per pod port, authorization on it, STRICT ports for the kernel', () => {
  const plan = planProxy(destNode);
  assert.deepEqual(plan.problems, []);
  compileSnapshot(plan.inbound);
  assert.deepEqual(plan.inbound.services.map((s) => [s.name, s.addresses, s.protocol]), [
    ['shop/echo-v1-1:8080', [{ ip: '10.244.2.10', port: 8080 }], 'auto'],
    ['shop/echo-v2-1:8080', [{ ip: '10.244.2.11', port: 8080 }], 'auto'],
  ]);
  assert.deepEqual(plan.inbound.authorization!.map((p) => [p.name, p.action, p.targetServices]), [
    ['shop/deny-admin', 'DENY', ['shop/echo-v1-1:8080']],
    ['shop/allow-web', 'ALLOW', ['shop/echo-v1-1:8080']],
  ]);
  assert.deepEqual(plan.inbound.authorization![0]!.rules, [{ to: [{ paths: [{ prefix: '/admin' }] }] }]);
  assert.deepEqual(plan.podIngress, [{ ip: '10.244.2.10', port: 8080 }]);
  // Its own pods are reached by the same-node hand-off, which runs the inbound policy without TLS.
  assert.deepEqual(plan.endpoints['10.244.2.10:8080'], { via: 'local' });
});

test('a route the proxy cannot take is left out with a reason; the others stay', () => {
  const bad = route([['echo-v1', 1]], { match: { path: { type: 'PathPrefix', value: '/x' }, headers: [{ type: 'Exact', name: 'x-forwarded-for', value: 'a' }] } });
  const plan = planProxy(input('node-a', [], [meshService('echo', '10.96.0.20', 'HTTP', [bad, ...canary]), meshServices[1]!, meshServices[2]!]));
  compileSnapshot(plan.outbound);
  assert.equal(plan.outbound.services.find((s) => s.name === 'shop/echo:80')!.routes!.length, 2);
  assert.equal(plan.problems.length, 1);
  assert.match(plan.problems[0]!, /route shop\/echo.*x-forwarded-for.*left out/);
});

test('route traffic policies make backend variants; unresolved backends stay empty (503), consumer routes are reported', () => {
  const withPolicy = route([['echo-v1', 1], ['missing', 1]], { trafficPolicy: { timeouts: { connectMs: 250 }, loadBalancer: { algorithm: 'ConsistentHash', hash: { header: 'x-user' } } } });
  withPolicy.backends[1]!.resolved = false;
  const consumer = route([['echo-v2', 1]], { consumerNamespace: 'other' });
  const plan = planProxy(input('node-a', [], [meshService('echo', '10.96.0.20', 'HTTP', [withPolicy, consumer]), meshServices[1]!, meshServices[2]!]));
  compileSnapshot(plan.outbound);
  const refs = plan.outbound.services.find((s) => s.name === 'shop/echo:80')!.routes![0]!.rules[0]!.backendRefs!;
  assert.equal(refs[0]!.backend, 'shop/echo-v1:80-p1');
  assert.equal(refs[1]!.backend, 'shop/missing:unresolved');
  const variant = plan.outbound.backends.find((b) => b.name === 'shop/echo-v1:80-p1')!;
  assert.deepEqual(variant.trafficPolicy, { connectTimeoutMs: 250, loadBalancer: { type: 'ConsistentHash', hashOn: { header: 'x-user' } } });
  assert.deepEqual(plan.outbound.backends.find((b) => b.name === 'shop/missing:unresolved')!.endpoints, []);
  assert.ok(plan.problems.some((p) => /consumer-namespace/.test(p)));
});

test('a workload whose every ALLOW policy failed to compile is denied everything', () => {
  const plan = planProxy(input('node-b', [workload('echo-v1-1', 'echo', '10.244.2.10', 'STRICT', { authorization: { defaultAction: 'Deny', policies: [] } })]));
  assert.deepEqual(plan.inbound.authorization, [{ name: 'nodemesh-system/default-deny', action: 'DENY', targetServices: ['shop/echo-v1-1:8080'], rules: [{}] }]);
});

test('traffic policy units and defaults', () => {
  assert.deepEqual(computeTrafficPolicy({
    timeouts: { connectMs: 1000, idleMs: 300000 }, retryBudget: { percent: 20, minRetriesPerSecond: 3 },
    outlierDetection: { consecutive5xx: 5, baseEjectionTimeMs: 30000 }, rateLimit: { requestsPerSecond: 100, burst: 200, perSourceIdentity: true },
    faultInjection: { delay: { fixedDelayMs: 2000, percent: 10 }, abort: { httpStatus: 503, percent: 5 } },
  }), {
    connectTimeoutMs: 1000, idleTimeoutMs: 300000, retryBudget: { percent: 20, minRetriesPerSecond: 3 },
    outlierDetection: { consecutive5xx: 5, baseEjectionTimeMs: 30000, maxEjectionPercent: 10 }, rateLimit: { requestsPerSecond: 100, burst: 200, perSourceIdentity: true },
    faultInjection: { delay: { percent: 10, durationMs: 2000 }, abort: { percent: 5, httpStatus: 503 } },
  });
  assert.equal(computeTrafficPolicy({}), undefined);
});

test('deterministic: the same input plans the same output', () => {
  assert.deepEqual(planProxy(destNode), planProxy(destNode));
});

test('a Service port with appProtocol kubernetes.io/h2c or grpc makes h2c backends on both sides; others stay HTTP/1.1', () => {
  const grpcSvcs = meshServices.map((s) => (s.name === 'echo-v1' ? { ...s, ports: s.ports.map((p) => ({ ...p, appProtocol: 'kubernetes.io/h2c' })) } : s));
  const src = planProxy({ ...sourceNode, state: { ...sourceNode.state, services: grpcSvcs } });
  compileSnapshot(src.outbound);
  assert.equal(src.outbound.backends.find((b) => b.name === 'shop/echo-v1:80')!.protocol, 'h2c');
  assert.equal(src.outbound.backends.find((b) => b.name === 'shop/echo-v2:80')!.protocol, undefined);
  const dst = planProxy({ ...destNode, state: { ...destNode.state, services: grpcSvcs } });
  compileSnapshot(dst.inbound);
  // echo-v1-1 backs echo (HTTP/1.1) and echo-v1 (h2c) on the same pod port: the port speaks h2c.
  assert.equal(dst.inbound.backends.find((b) => b.name === 'shop/echo-v1-1:8080')!.protocol, 'h2c');
  assert.equal(dst.inbound.backends.find((b) => b.name === 'shop/echo-v2-1:8080')!.protocol, undefined);
});
