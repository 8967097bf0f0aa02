// Plaintext inbound planning (B6): which pod ports are steered through the node proxy per mTLS mode and policy, the
// proxy's lookup table, and the nftables table (rendered, read back, compared) that steers them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { NodeService, NodeWorkload, WorkloadAuthorization } from '../../crds/index.ts';
import {
  STEERING_TABLE, computePlaintextHandling, computePlaintextTable, hasInboundPolicy, parseSteeringState, planSteering, renderSteeringScript, steeringMatches,
  type PlaintextInboundEntry,
} from './plan-plaintext.ts';
import { createStats } from '../../l7proxy/stats.ts';
import { computeStatsSum } from '../../l7proxy/workers.ts';
import { createMeshMetrics, mirrorProxyStats } from '../metrics/mesh-metrics.ts';
import { Registry } from '../metrics/registry.ts';
import { parseExposition, sumSamples } from '../metrics/testing/parse-exposition.ts';
import { planProxy } from './plan-proxy.ts';

const TD = 'cluster.local';
const denyAdmin: WorkloadAuthorization = { defaultAction: 'Allow', policies: [{ name: 'shop/deny-admin', action: 'DENY', rules: [{ requiresHttp: true, to: [{ paths: [{ prefix: '/admin' }] }] }] }] };
const allowWeb: WorkloadAuthorization = { defaultAction: 'Deny', policies: [{ name: 'shop/allow-web', action: 'ALLOW', rules: [{ requiresHttp: false, from: [{ spiffeIds: [`spiffe://${TD}/ns/shop/sa/web`] }] }] }] };
const PROXY = { ip: '10.200.0.11', port: 15006, mark: 0x4e4d };

function workload(name: string, ip: string, mode: 'STRICT' | 'PERMISSIVE' | 'DISABLED', authorization?: WorkloadAuthorization): NodeWorkload {
  return { namespace: 'shop', name, uid: `uid-${name}`, serviceAccount: name, spiffeId: `spiffe://${TD}/ns/shop/sa/${name}`, podIPs: [ip], mtls: { mode }, ...(authorization ? { authorization } : {}), sources: [] };
}

test('handling per mode: STRICT refused, PERMISSIVE policed only under a policy, DISABLED left alone', () => {
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'STRICT')), 'refuse');
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'STRICT', denyAdmin)), 'refuse');
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'PERMISSIVE', denyAdmin)), 'police');
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'PERMISSIVE', allowWeb)), 'police');
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'PERMISSIVE')), undefined);
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'DISABLED', denyAdmin)), undefined);
  assert.equal(computePlaintextHandling(workload('a', '10.0.0.1', 'DISABLED')), undefined);
  // A Deny default whose ALLOW policies all failed to compile still denies: it is a policy.
  assert.equal(hasInboundPolicy({ defaultAction: 'Deny', policies: [] }), true);
  assert.equal(hasInboundPolicy({ defaultAction: 'Allow', policies: [] }), false);
});

test('planProxy: every port of a steered workload is listed with its handling; unpoliced PERMISSIVE and DISABLED are not', () => {
  const pods: Array<[string, string, 'STRICT' | 'PERMISSIVE' | 'DISABLED', WorkloadAuthorization | undefined]> = [
    ['strict', '10.244.1.10', 'STRICT', undefined],
    ['perm-deny', '10.244.1.11', 'PERMISSIVE', denyAdmin],
    ['perm-allow', '10.244.1.12', 'PERMISSIVE', allowWeb],
    ['perm-open', '10.244.1.13', 'PERMISSIVE', undefined],
    ['disabled', '10.244.1.14', 'DISABLED', denyAdmin],
  ];
  const services: V1Service[] = [];
  const slices: V1EndpointSlice[] = [];
  const mesh: NodeService[] = [];
  for (const [name, ip] of pods) {
    services.push({ metadata: { namespace: 'shop', name }, spec: { clusterIP: `10.96.1.${ip.split('.')[3]}`, ports: [{ name: 'http', port: 80, protocol: 'TCP' }, { name: 'admin', port: 9000, protocol: 'TCP' }] } });
    slices.push({ metadata: { namespace: 'shop', name: `${name}-x`, labels: { 'kubernetes.io/service-name': name } }, addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'admin', port: 9090, protocol: 'TCP' }], endpoints: [{ addresses: [ip], nodeName: 'node-a' }] });
    mesh.push({ namespace: 'shop', name, clusterIPs: [`10.96.1.${ip.split('.')[3]}`], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes: [] }, { port: 9000, name: 'admin', protocol: 'TCP', mode: 'TCP', routes: [] }], sources: [] });
  }
  const nodes: V1Node[] = [{ metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: PROXY.ip }] } }];
  const plan = planProxy({
    nodeName: 'node-a', services, endpointSlices: slices, nodes,
    state: { nodeName: 'node-a', trustDomain: TD, version: 'v1', services: mesh, workloads: pods.map(([n, ip, mode, a]) => workload(n, ip, mode, a)) },
  });
  assert.deepEqual(plan.problems, []);
  assert.deepEqual(plan.plaintextInbound, [
    { ip: '10.244.1.10', port: 8080, handling: 'refuse' },
    { ip: '10.244.1.10', port: 9090, handling: 'refuse' },
    { ip: '10.244.1.11', port: 8080, handling: 'police' },
    { ip: '10.244.1.11', port: 9090, handling: 'police' },
    { ip: '10.244.1.12', port: 8080, handling: 'police' },
    { ip: '10.244.1.12', port: 9090, handling: 'police' },
  ]);
  // The tc guard still covers STRICT only; a policed PERMISSIVE port must stay reachable from the proxy and others.
  assert.deepEqual(plan.podIngress, [{ ip: '10.244.1.10', port: 8080 }, { ip: '10.244.1.10', port: 9090 }]);
  // Every steered port is an inbound destination of the proxy, so it can serve what it is sent.
  const inbound = new Set(plan.inbound.services.flatMap((s) => s.addresses.map((a) => `${a.ip}:${a.port}`)));
  for (const e of plan.plaintextInbound!) assert.ok(inbound.has(`${e.ip}:${e.port}`), `${e.ip}:${e.port} steered but not an inbound destination`);
  assert.deepEqual(computePlaintextTable(plan.plaintextInbound!), {
    '10.244.1.10:8080': 'refuse', '10.244.1.10:9090': 'refuse', '10.244.1.11:8080': 'police', '10.244.1.11:9090': 'police', '10.244.1.12:8080': 'police', '10.244.1.12:9090': 'police',
  });
});

test('steering spec: sorted and deduplicated, IPv6 left out with a problem, nothing to steer means no table', () => {
  const problems: string[] = [];
  const entries: PlaintextInboundEntry[] = [
    { ip: '10.244.1.12', port: 8080, handling: 'police' },
    { ip: '10.244.1.10', port: 8080, handling: 'refuse' },
    { ip: '10.244.1.12', port: 8080, handling: 'police' },
    { ip: 'fd00::5', port: 8080, handling: 'police' },
  ];
  assert.deepEqual(planSteering(entries, PROXY, problems), { elements: ['10.244.1.10:8080', '10.244.1.12:8080'], to: '10.200.0.11:15006', mark: 0x4e4d, exemptOthers: true });
  assert.match(problems.join(), /fd00::5 port 8080: plaintext steering is IPv4 only/);
  assert.equal(planSteering([], PROXY), undefined);
  // Without the proxy mark, the proxy's own connect to the pod would be steered back to itself.
  assert.throws(() => planSteering(entries, { ...PROXY, mark: 0 }), /needs the proxy socket mark/);
});

test('nft script: one transaction replacing the table; removal is add+delete (idempotent on an absent table)', () => {
  const spec = planSteering([{ ip: '10.244.1.10', port: 8080, handling: 'refuse' }, { ip: '10.244.1.12', port: 9090, handling: 'police' }], PROXY)!;
  const s = renderSteeringScript(spec);
  assert.ok(s.startsWith(`add table ip ${STEERING_TABLE}\ndelete table ip ${STEERING_TABLE}\ntable ip ${STEERING_TABLE} {`), s);
  assert.match(s, /elements = \{ 10\.244\.1\.10 \. 8080, 10\.244\.1\.12 \. 9090 \}/);
  assert.match(s, /type nat hook prerouting priority -100; policy accept;\n\s+ip daddr \. tcp dport @steered dnat to 10\.200\.0\.11:15006/);
  // The output chain lets the proxy's marked connects through before steering anything else from this node.
  assert.match(s, /hook output priority -100; policy accept;\n\s+meta mark 0x4e4d return\n\s+ip daddr \. tcp dport @steered dnat to 10\.200\.0\.11:15006/);
  assert.doesNotMatch(s, /drop|reject/, 'steering never drops: a closed proxy port refuses with RST');
  // Conntrack only for steered connections and the proxy's side of them; everything else is exempt before conntrack.
  assert.match(s, /chain raw_prerouting \{\n\s+type filter hook prerouting priority -300; policy accept;\n\s+ip daddr \. tcp dport @steered return\n\s+notrack\n/);
  assert.match(s, /chain raw_output \{\n\s+type filter hook output priority -300; policy accept;\n\s+ip daddr \. tcp dport @steered return\n\s+ip saddr 10\.200\.0\.11 tcp sport 15006 return\n\s+notrack\n/);
  assert.equal(renderSteeringScript(undefined), `add table ip ${STEERING_TABLE}\ndelete table ip ${STEERING_TABLE}\n`);
});

/** `nft -j list table ip nodemesh_plaintext` as nftables 1.0.6 prints it for the table above (checked against nft). */
function nftJson(elements: Array<[string, number]>, dnat = { addr: '10.200.0.11', port: 15006 }, mark = 20045, extraRule = false, raw = true): string {
  const match = { match: { op: '==', left: { concat: [{ payload: { protocol: 'ip', field: 'daddr' } }, { payload: { protocol: 'tcp', field: 'dport' } }] }, right: '@steered' } };
  return JSON.stringify({ nftables: [
    { metainfo: { version: '1.0.6', json_schema_version: 1 } },
    { table: { family: 'ip', name: STEERING_TABLE, handle: 1 } },
    { set: { family: 'ip', name: 'steered', table: STEERING_TABLE, type: ['ipv4_addr', 'inet_service'], handle: 3, ...(elements.length ? { elem: elements.map((e) => ({ concat: e })) } : {}) } },
    ...(raw ? [{ chain: { family: 'ip', table: STEERING_TABLE, name: 'raw_prerouting', handle: 10, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } }] : []),
    ...(raw ? [{ chain: { family: 'ip', table: STEERING_TABLE, name: 'raw_output', handle: 11, type: 'filter', hook: 'output', prio: -300, policy: 'accept' } }] : []),
    { chain: { family: 'ip', table: STEERING_TABLE, name: 'prerouting', handle: 1, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } },
    { chain: { family: 'ip', table: STEERING_TABLE, name: 'output', handle: 2, type: 'nat', hook: 'output', prio: -100, policy: 'accept' } },
    ...(raw ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'raw_prerouting', handle: 12, expr: [match, { return: null }] } }] : []),
    ...(raw ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'raw_prerouting', handle: 13, expr: [{ notrack: null }] } }] : []),
    ...(raw ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'raw_output', handle: 14, expr: [match, { return: null }] } }] : []),
    ...(raw ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'raw_output', handle: 15, expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: dnat.addr } }, { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'sport' } }, right: dnat.port } }, { return: null }] } }] : []),
    ...(raw ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'raw_output', handle: 16, expr: [{ notrack: null }] } }] : []),
    { rule: { family: 'ip', table: STEERING_TABLE, chain: 'prerouting', handle: 4, expr: [match, { dnat }] } },
    { rule: { family: 'ip', table: STEERING_TABLE, chain: 'output', handle: 5, expr: [{ match: { op: '==', left: { meta: { key: 'mark' } }, right: mark } }, { return: null }] } },
    { rule: { family: 'ip', table: STEERING_TABLE, chain: 'output', handle: 6, expr: [match, { dnat }] } },
    ...(extraRule ? [{ rule: { family: 'ip', table: STEERING_TABLE, chain: 'prerouting', handle: 7, expr: [{ accept: null }] } }] : []),
  ] });
}

test('read back: the table in force is compared with the plan (level-triggered), and anything foreign forces a rewrite', () => {
  const spec = planSteering([{ ip: '10.244.1.10', port: 8080, handling: 'refuse' }, { ip: '10.244.1.12', port: 9090, handling: 'police' }], PROXY)!;
  const same = parseSteeringState(nftJson([['10.244.1.12', 9090], ['10.244.1.10', 8080]]));
  assert.deepEqual(same, spec);
  assert.ok(steeringMatches(same, spec));
  assert.ok(!steeringMatches(parseSteeringState(nftJson([['10.244.1.10', 8080]])), spec), 'a missing port');
  assert.ok(!steeringMatches(parseSteeringState(nftJson([['10.244.1.12', 9090], ['10.244.1.10', 8080]], { addr: '10.200.0.99', port: 15006 })), spec), 'another proxy address');
  assert.ok(!steeringMatches(parseSteeringState(nftJson([['10.244.1.12', 9090], ['10.244.1.10', 8080]], undefined, 1)), spec), 'another mark');
  assert.ok(!steeringMatches(parseSteeringState(nftJson([['10.244.1.12', 9090], ['10.244.1.10', 8080]], undefined, 20045, true)), spec), 'a rule we did not write');
  assert.equal(parseSteeringState(JSON.stringify({ nftables: [{ metainfo: {} }] })), undefined);
  assert.ok(steeringMatches(undefined, undefined));
  assert.ok(!steeringMatches(same, undefined), 'a table left when nothing is steered is removed');
});

test('the proxy\'s plaintext counters (summed over workers) reach /metrics as nodemesh_plaintext_inbound_connections_total', () => {
  const registry = new Registry();
  const m = createMeshMetrics(registry);
  const a = createStats();
  const b = createStats();
  a.plaintextInbound.strictRefused = 2;
  b.plaintextInbound.strictRefused = 1;
  b.plaintextInbound.policed = 5;
  a.plaintextInbound.refused = 1;
  mirrorProxyStats(m, computeStatsSum([a, b])!);
  const exp = parseExposition(registry.render());
  assert.equal(sumSamples(exp, 'nodemesh_plaintext_inbound_connections_total', { outcome: 'strict_refused' }), 3);
  assert.equal(sumSamples(exp, 'nodemesh_plaintext_inbound_connections_total', { outcome: 'policed' }), 5);
  assert.equal(sumSamples(exp, 'nodemesh_plaintext_inbound_connections_total', { outcome: 'refused' }), 1);
});

test('a real node (agent in the host namespace): nat chains only, no conntrack exemption; read back and compared as such', () => {
  const entries: PlaintextInboundEntry[] = [{ ip: '10.244.1.10', port: 8080, handling: 'refuse' }];
  const spec = planSteering(entries, PROXY, [], { exemptOthers: false })!;
  assert.equal(spec.exemptOthers, false);
  const s = renderSteeringScript(spec);
  // kube-proxy, the CNI and the node's firewall rely on conntrack there: nothing may be exempted from it.
  assert.doesNotMatch(s, /notrack|raw_/);
  assert.match(s, /ip daddr \. tcp dport @steered dnat to 10\.200\.0\.11:15006/);
  const readBack = parseSteeringState(nftJson([['10.244.1.10', 8080]], undefined, undefined, false, false));
  assert.deepEqual(readBack, spec);
  assert.ok(steeringMatches(readBack, spec));
  // The sandbox's table (with the raw chains) is not what a host-namespace agent wants, and vice versa: rewritten.
  assert.ok(!steeringMatches(parseSteeringState(nftJson([['10.244.1.10', 8080]])), spec));
  assert.ok(!steeringMatches(readBack, planSteering(entries, PROXY)!));
});
