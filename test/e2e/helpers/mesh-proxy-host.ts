/**
 * Runs inside a test "node" network namespace (nsenter --net, so bpffs stays visible): plans the proxy from a
 * NodeState (planProxy), guards the STRICT pod ports (PodIngressGuard: map + tc on the pods' veths), steers plaintext
 * to STRICT and policed PERMISSIVE pod ports through the proxy (PlaintextSteering: nft in this netns), and runs the
 * real proxy process under ProxySupervisor. Prints one JSON line when serving, `{"plaintext":{...}}` whenever the
 * proxy's plaintext counters change, and `{"steering":...}` after a second (idempotent) reconcile; on SIGTERM stops.
 * Usage: node mesh-proxy-host.ts SPEC.json   (see MeshHostSpec)
 */
import { readFileSync } from 'node:fs';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { computePlaintextTable } from '../../../agent/proxy/plan-plaintext.ts';
import { planProxy, type MergedNodeState } from '../../../agent/proxy/plan-proxy.ts';
import { PlaintextSteering, PodIngressGuard } from '../../../agent/proxy/pod-ingress.ts';
import { computeStatsSum } from '../../../l7proxy/workers.ts';
import type { ProxyStats } from '../../../l7proxy/stats.ts';
import { PLAINTEXT_INBOUND_PORT } from '../../../l7proxy/inbound-plaintext.ts';
import { ProxySupervisor } from '../../../agent/proxy/proxy-supervisor.ts';
import { createLogger } from '../../../agent/logger.ts';

/** What the test hands the helper. */
export interface MeshHostSpec {
  nodeName: string;
  host: string;
  outboundPort: number;
  inboundPort: number;
  pinDir: string;
  runDir: string;
  state: MergedNodeState;
  services: V1Service[];
  endpointSlices: V1EndpointSlice[];
  nodes: V1Node[];
  /** Proxy socket mark (the datapath's proxy_mark). */
  mark?: number;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as MeshHostSpec;
const log = createLogger(process.stderr, `mesh-host/${spec.nodeName}`);
const plan = planProxy({ nodeName: spec.nodeName, state: spec.state, services: spec.services, endpointSlices: spec.endpointSlices, nodes: spec.nodes });
const guard = new PodIngressGuard({ pinDir: spec.pinDir, allowSrc: spec.host, log });
const guarded = await guard.reconcile(plan.podIngress);
const steering = spec.mark ? new PlaintextSteering({ proxy: { ip: spec.host, port: PLAINTEXT_INBOUND_PORT, mark: spec.mark }, log }) : undefined;
const steered = await steering?.reconcile(plan.plaintextInbound ?? []);
// The proxy's plaintext counters, summed over its workers (latest batch per worker), printed when they change.
const workerStats = new Map<number, ProxyStats>();
let lastPlaintext = '';
const sup = new ProxySupervisor({
  nodeName: spec.nodeName, host: spec.host, outboundPort: spec.outboundPort, inboundPort: spec.inboundPort, workers: 2,
  pinDir: spec.pinDir, trustDomain: spec.state.trustDomain, runDir: spec.runDir, log, ...(spec.mark ? { mark: spec.mark } : {}),
  onTelemetry: (b) => {
    if (!b.proxyStats) return;
    workerStats.set(b.pid, b.proxyStats);
    const sum = JSON.stringify(computeStatsSum([...workerStats.values()])?.plaintextInbound);
    if (sum !== lastPlaintext) { lastPlaintext = sum; console.log(JSON.stringify({ plaintext: JSON.parse(sum) as unknown })); }
  },
});
await sup.start();
await sup.apply({
  version: plan.version,
  config: plan.outbound,
  identities: plan.identities,
  pluginData: { version: plan.version, inbound: plan.inbound, endpoints: plan.endpoints, identities: plan.identities, certs: { workloads: {} }, plaintext: computePlaintextTable(plan.plaintextInbound ?? []) },
});
await sup.whenServing();
console.log(JSON.stringify({ ready: true, pid: sup.status().pid, pidFile: sup.pidFile, problems: plan.problems, guarded, steered, meshPorts: plan.meshPorts }));
// Level-triggered: a second pass over the same plan finds the table as planned and changes nothing.
if (steering) console.log(JSON.stringify({ steering: await steering.reconcile(plan.plaintextInbound ?? []) }));
// Report every restart of the proxy, so the test can time "serving again".
let last = sup.status().pid;
setInterval(() => {
  const s = sup.status();
  if (s.state === 'serving' && s.pid !== last) {
    last = s.pid;
    console.log(JSON.stringify({ serving: true, pid: s.pid, restarts: s.restarts }));
  }
}, 20);
process.once('SIGTERM', () => {
  guard.close();
  sup.stop(3000).finally(() => process.exit(0));
});
