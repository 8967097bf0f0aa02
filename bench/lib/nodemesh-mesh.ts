/**
 * Runs the nodemesh mesh path for a benchmark: two ProxyWorkerPools (one worker each) on loopback, "node A" (source,
 * outbound listener on `--port`) and "node B" (destination, HBONE listener), joined by the agent's mesh plugin
 * (HBONE: TLS 1.3 + HTTP/2 CONNECT, certificates issued by operator/ca MeshCa, read from `--certs`). The client's
 * connections (from 127.0.0.1, the "web" pod) go to service 10.96.0.20:80, whose endpoint is the upstream at
 * `--pod-ip:--upstream` on node B. Prints one JSON line when ready; stops both pools on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { CompiledRoute, NodeService, NodeWorkload } from '../../crds/index.ts';
import { planProxy, type PlanProxyInput, type ProxyPlan } from '../../agent/proxy/plan-proxy.ts';
import type { MeshPluginData, MeshPluginInit, PemIdentity } from '../../agent/proxy/worker-plugin.ts';
import { DEFAULT_WORKER_EXEC_ARGV, ProxyWorkerPool } from '../../l7proxy/workers.ts';

/** PEM material the bench writes: the mesh CA bundle, the source workload's SVID, one SVID per node proxy. */
export type MeshBenchCerts = { trustDomain: string; bundlePem: string; web: PemIdentity; proxyA: PemIdentity; proxyB: PemIdentity };

export const MESH_SERVICE = { ip: '10.96.0.20', port: 80 };

/** NodeState for the two nodes (the same shape the agent builds), planned with planProxy. */
export function planMeshBench(td: string, podIp: string, podPort: number, clientIp: string, nodeA: string, nodeB: string): { a: ProxyPlan; b: ProxyPlan } {
  const services: V1Service[] = [{ metadata: { namespace: 'shop', name: 'echo' }, spec: { clusterIP: MESH_SERVICE.ip, clusterIPs: [MESH_SERVICE.ip], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } }];
  const slices: V1EndpointSlice[] = [{ metadata: { namespace: 'shop', name: 'echo-1', labels: { 'kubernetes.io/service-name': 'echo' } }, addressType: 'IPv4', ports: [{ name: 'http', port: podPort, protocol: 'TCP' }], endpoints: [{ addresses: [podIp], nodeName: 'node-b' }] }];
  const nodes: V1Node[] = [
    { metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: nodeA }] } },
    { metadata: { name: 'node-b' }, status: { addresses: [{ type: 'InternalIP', address: nodeB }] } },
  ];
  const wl = (name: string, sa: string, ip: string): NodeWorkload => ({ namespace: 'shop', name, uid: name, serviceAccount: sa, spiffeId: `spiffe://${td}/ns/shop/sa/${sa}`, podIPs: [ip], mtls: { mode: 'STRICT' }, sources: [] });
  const route: CompiledRoute = { route: 'shop/echo', ruleIndex: 0, matchIndex: 0, match: { path: { type: 'PathPrefix', value: '/' } }, filters: [], backends: [{ namespace: 'shop', name: 'echo', port: 80, weight: 1, resolved: true }] };
  const svcs: NodeService[] = [{ namespace: 'shop', name: 'echo', clusterIPs: [MESH_SERVICE.ip], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes: [route] }], sources: [] }];
  const input = (nodeName: string, workloads: NodeWorkload[]): PlanProxyInput => ({ nodeName, state: { nodeName, trustDomain: td, workloads, services: svcs, version: nodeName }, services, endpointSlices: slices, nodes });
  const a = planProxy(input('node-a', [wl('web-1', 'web', clientIp)]));
  const b = planProxy(input('node-b', [wl('echo-1', 'echo', podIp)]));
  if (a.problems.length || b.problems.length) throw new Error(`planProxy problems: ${JSON.stringify([...a.problems, ...b.problems])}`);
  return { a, b };
}

/** Extra worker flags for profiling by hand (`NM_BENCH_WORKER_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p"`), added to the defaults. */
function workerArgs(): { execArgv?: string[] } {
  const extra = process.env.NM_BENCH_WORKER_ARGS?.split(' ').filter(Boolean) ?? [];
  return extra.length ? { execArgv: [...DEFAULT_WORKER_EXEC_ARGV, ...extra] } : {};
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, 'b-port': { type: 'string' }, hbone: { type: 'string' }, upstream: { type: 'string' }, 'pod-ip': { type: 'string', default: '127.0.0.3' }, certs: { type: 'string' } } });
  if (!values.port || !values['b-port'] || !values.hbone || !values.upstream || !values.certs) {
    console.error('usage: node bench/lib/nodemesh-mesh.ts --port P --b-port P2 --hbone H --upstream U --certs certs.json [--pod-ip 127.0.0.3]');
    process.exit(2);
  }
  const certs = JSON.parse(readFileSync(values.certs, 'utf8')) as MeshBenchCerts;
  const TD = certs.trustDomain;
  const NODE_A = '127.0.0.1'; const NODE_B = '127.0.0.2'; const CLIENT = '127.0.0.1';
  const hbone = Number(values.hbone);
  const { a, b } = planMeshBench(TD, values['pod-ip'], Number(values.upstream), CLIENT, NODE_A, NODE_B);
  const logger = {
    debug: () => {},
    info: (m: string, f?: Record<string, unknown>) => console.error('info', m, JSON.stringify(f ?? {})),
    warn: (m: string, f?: Record<string, unknown>) => console.error('warn', m, JSON.stringify(f ?? {})),
    error: (m: string, f?: Record<string, unknown>) => console.error('error', m, JSON.stringify(f ?? {})),
  };
  const pluginPath = process.env.NM_BENCH_PROBE === '1' ? path.resolve(import.meta.dirname, 'mesh-probe-plugin.ts') : path.resolve(import.meta.dirname, '../../agent/proxy/worker-plugin.ts');
  const proxyId = `spiffe://${TD}/ns/nodemesh-system/sa/nodemesh-proxy`;
  const init = (nodeName: string, host: string): MeshPluginInit => ({ nodeName, host, inboundPort: hbone, trustDomain: TD, proxySpiffeId: proxyId });
  const data = (plan: ProxyPlan, proxy: PemIdentity, workloads: Record<string, PemIdentity>): MeshPluginData => ({ version: plan.version, inbound: plan.inbound, endpoints: plan.endpoints, identities: plan.identities, certs: { bundlePem: certs.bundlePem, proxy, workloads } });
  const poolB = new ProxyWorkerPool({ workers: 1, originalDst: { kind: 'fixed', ...MESH_SERVICE }, config: b.outbound, identities: b.identities, logger, scheduling: 'round-robin', ...workerArgs(), plugin: { path: pluginPath, init: init('node-b', NODE_B) }, pluginData: data(b, certs.proxyB, {}) });
  await poolB.start({ outboundPort: Number(values['b-port']), host: NODE_B });
  const poolA = new ProxyWorkerPool({ workers: 1, originalDst: { kind: 'fixed', ...MESH_SERVICE }, config: a.outbound, identities: a.identities, logger, scheduling: 'round-robin', ...workerArgs(), plugin: { path: pluginPath, init: init('node-a', NODE_A) }, pluginData: data(a, certs.proxyA, { [`spiffe://${TD}/ns/shop/sa/web`]: certs.web }) });
  const ports = await poolA.start({ outboundPort: Number(values.port), host: '127.0.0.1' });
  console.log(JSON.stringify({ ready: true, ...ports, hbone: `${NODE_B}:${hbone}`, pids: [...poolA.status(), ...poolB.status()].map((s) => s.pid) }));
  const stop = (): void => {
    Promise.all([poolA.stop({ drain: false }), poolB.stop({ drain: false })]).then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
