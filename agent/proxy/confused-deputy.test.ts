// B7 "confused deputy" on loopback, no kernel: one node proxy serving two pods of different service accounts that
// call the same destination pod on another node, interleaved on keep-alive connections, over HTTP/1.1 and to an
// h2c backend. Every request must arrive with its own pod's identity (pools, h2 sessions and HBONE tunnels are per
// source identity), never the other's; identity headers a client wrote are dropped at the source proxy and again
// at the destination proxy (a raw HBONE stream carrying forged headers gets them replaced).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { MeshCa } from '../../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../certs/workload-key.ts';
import type { CompiledRoute, NodeService, NodeWorkload } from '../../crds/index.ts';
import { planProxy, type PlanProxyInput, type ProxyPlan } from './plan-proxy.ts';
import { MeshPlugin, type MeshPluginData, type PemIdentity } from './worker-plugin.ts';
import { NodeProxy } from '../../l7proxy/proxy.ts';

const TD = 'cluster.local';
const PROXY_ID = `spiffe://${TD}/ns/nodemesh-system/sa/nodemesh-proxy`;
const NODE_A = '127.0.0.1';
const NODE_B = '127.0.0.2';
const POD_B = '127.0.0.3'; // the destination pod (both backends)
const WEB = '127.0.0.5'; // pod web-1, service account web
const ADMIN = '127.0.0.6'; // pod ops-1, service account admin
const id = (sa: string): string => `spiffe://${TD}/ns/shop/sa/${sa}`;
/** Identity headers a client may try to pass off as the mesh's. */
const FORGED = {
  'x-nodemesh-source-identity': id('root'),
  'x-forwarded-client-cert': `By=${id('root')};URI=${id('root')}`,
  'x-spiffe-id': id('root'),
  forwarded: 'for=10.0.0.1;by=mesh',
  'x-forwarded-for': '10.0.0.1',
  'x-nodemesh-peer': 'root',
};

type Seen = { identity: string | undefined; probe: string | undefined; forged: string[] };

/** What the destination pod saw: the mesh identity header, the caller's probe tag and any forged header left. */
function seenOf(headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders): Seen {
  const forged = Object.keys(FORGED).filter((h) => h !== 'x-forwarded-for' && h !== 'x-nodemesh-source-identity' && headers[h] !== undefined);
  if (headers['x-forwarded-for'] === FORGED['x-forwarded-for']) forged.push('x-forwarded-for');
  return { identity: headers['x-nodemesh-source-identity'] as string | undefined, probe: headers['x-probe'] as string | undefined, forged };
}

async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function issue(ca: MeshCa, namespace: string, serviceAccount: string): Promise<PemIdentity> {
  const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://${TD}/ns/${namespace}/sa/${serviceAccount}`);
  return { certChainPem: (await ca.issue(csrPem, { namespace, serviceAccount })).certChainPem, keyPem };
}

/** A keep-alive GET from `localAddress` through the outbound proxy; the answer is what the destination saw. */
function get(agent: http.Agent, port: number, host: string, probe: string, forge: boolean): Promise<Seen & { status: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: `/p/${probe}`, agent, headers: { host, 'x-probe': probe, ...(forge ? FORGED : {}) } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        try { resolve({ status: res.statusCode ?? 0, ...(JSON.parse(body) as Seen) }); } catch { reject(new Error(`status ${res.statusCode}: ${body}`)); }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('one node proxy, two pods of different service accounts, one destination', () => {
  let ca: MeshCa;
  let h1: http.Server;
  let h2: http2.Http2Server;
  let h1Port = 0;
  let h2Port = 0;
  let pluginA: MeshPlugin;
  let pluginB: MeshPlugin;
  let outA: NodeProxy;
  let portA = 0;
  let planA: ProxyPlan;
  const h1Connections: string[] = [];
  const h2Sessions: string[] = [];

  before(async () => {
    ca = await MeshCa.create({ trustDomain: TD });
    h1 = http.createServer((req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(seenOf(req.headers))); });
    h1.on('connection', (s: net.Socket) => h1Connections.push(`${s.remoteAddress}:${s.remotePort}`));
    await new Promise<void>((r) => h1.listen(0, POD_B, r));
    h1Port = (h1.address() as net.AddressInfo).port;
    h2 = http2.createServer();
    h2.on('session', (s) => h2Sessions.push(`${s.socket?.remoteAddress}:${s.socket?.remotePort}`));
    h2.on('stream', (stream, headers) => { stream.respond({ ':status': 200, 'content-type': 'application/json' }); stream.end(JSON.stringify(seenOf(headers))); });
    await new Promise<void>((r) => h2.listen(0, POD_B, r));
    h2Port = (h2.address() as net.AddressInfo).port;

    const hbonePort = await freePort(NODE_B);
    const svc = (name: string, ip: string, appProtocol?: string): V1Service => ({ metadata: { namespace: 'shop', name }, spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, protocol: 'TCP', ...(appProtocol ? { appProtocol } : {}) }] } });
    const slice = (name: string, port: number): V1EndpointSlice => ({ metadata: { namespace: 'shop', name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } }, addressType: 'IPv4', ports: [{ name: 'http', port, protocol: 'TCP' }], endpoints: [{ addresses: [POD_B], nodeName: 'node-b' }] });
    const nodes: V1Node[] = [
      { metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: NODE_A }] } },
      { metadata: { name: 'node-b' }, status: { addresses: [{ type: 'InternalIP', address: NODE_B }] } },
    ];
    const wl = (name: string, sa: string, ip: string): NodeWorkload => ({ namespace: 'shop', name, uid: `uid-${name}`, serviceAccount: sa, spiffeId: id(sa), podIPs: [ip], mtls: { mode: 'STRICT' }, sources: [] });
    const pod = (name: string, sa: string, ip: string): V1Pod => ({ metadata: { namespace: 'shop', name, uid: `uid-${name}` }, spec: { nodeName: 'node-a', serviceAccountName: sa, containers: [] }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } });
    const route = (name: string): CompiledRoute => ({ route: `shop/${name}`, ruleIndex: 0, matchIndex: 0, match: { path: { type: 'PathPrefix', value: '/' } }, filters: [], backends: [{ namespace: 'shop', name, port: 80, weight: 1, resolved: true }] });
    const meshSvc = (name: string, ip: string, appProtocol?: string): NodeService => ({ namespace: 'shop', name, clusterIPs: [ip], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes: [route(name)], ...(appProtocol ? { appProtocol } : {}) }], sources: [] });
    const svcs = [meshSvc('echo', '10.96.0.20'), meshSvc('echo-h2', '10.96.0.21', 'kubernetes.io/h2c')];
    const input = (nodeName: string, workloads: NodeWorkload[], pods: V1Pod[]): PlanProxyInput => ({
      nodeName, state: { nodeName, trustDomain: TD, workloads, services: svcs, version: nodeName },
      services: [svc('echo', '10.96.0.20'), svc('echo-h2', '10.96.0.21', 'kubernetes.io/h2c')], endpointSlices: [slice('echo', h1Port), slice('echo-h2', h2Port)], nodes, localPods: pods,
    });
    planA = planProxy(input('node-a', [wl('web-1', 'web', WEB), wl('ops-1', 'admin', ADMIN)], [pod('web-1', 'web', WEB), pod('ops-1', 'admin', ADMIN)]));
    const planB = planProxy(input('node-b', [wl('echo-1', 'echo', POD_B)], [{ ...pod('echo-1', 'echo', POD_B), spec: { nodeName: 'node-b', serviceAccountName: 'echo', containers: [] } }]));
    assert.deepEqual(planA.problems, []);
    assert.deepEqual(planB.problems, []);
    assert.equal(planA.identities[WEB]?.spiffeId, id('web'));
    assert.equal(planA.identities[ADMIN]?.spiffeId, id('admin'));

    const bundlePem = ca.bundle().pem;
    const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    pluginA = new MeshPlugin({ nodeName: 'node-a', host: NODE_A, inboundPort: hbonePort, trustDomain: TD, proxySpiffeId: PROXY_ID }, silent);
    pluginB = new MeshPlugin({ nodeName: 'node-b', host: NODE_B, inboundPort: hbonePort, trustDomain: TD, proxySpiffeId: PROXY_ID }, silent);
    const data = (plan: ProxyPlan, proxy: PemIdentity, workloads: Record<string, PemIdentity>): MeshPluginData => ({ version: plan.version, inbound: plan.inbound, endpoints: plan.endpoints, identities: plan.identities, certs: { bundlePem, proxy, workloads } });
    await pluginA.update(data(planA, await issue(ca, 'nodemesh-system', 'nodemesh-proxy'), { [id('web')]: await issue(ca, 'shop', 'web'), [id('admin')]: await issue(ca, 'shop', 'admin') }));
    await pluginB.update(data(planB, await issue(ca, 'nodemesh-system', 'nodemesh-proxy'), {}));
    // The original destination follows the Host the test sends (a stand-in for the kernel's record).
    let next = '10.96.0.20';
    outA = new NodeProxy({ config: planA.outbound, originalDst: () => ({ ip: next, port: 80 }), identifySource: (addr) => planA.identities[addr], connectUpstream: pluginA.connectUpstream });
    portA = (await outA.start({ host: NODE_A, outboundPort: 0 })).outboundPort;
    setDst = (ip: string): void => { next = ip; };
  });
  let setDst: (ip: string) => void = () => {};

  after(async () => {
    await Promise.all([outA?.stop({ drain: false }), pluginA?.stop(), pluginB?.stop()]);
    h2?.close();
    await new Promise<void>((r) => (h1 ? (h1.closeAllConnections(), h1.close(() => r())) : r()));
  });

  for (const [label, dst, host] of [['HTTP/1.1 backend (undici pools)', '10.96.0.20', 'echo.shop'], ['h2c backend (HTTP/2 sessions)', '10.96.0.21', 'echo-h2.shop']] as const) {
    it(`${label}: 2 × 40 interleaved keep-alive requests each carry their own pod's identity, forged headers dropped`, async () => {
      setDst(dst);
      const agents = { web: new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: WEB }), admin: new http.Agent({ keepAlive: true, maxSockets: 2, localAddress: ADMIN }) };
      try {
        const jobs: Promise<{ who: 'web' | 'admin'; probe: string; r: Seen & { status: number } }>[] = [];
        for (let i = 0; i < 40; i++) {
          for (const who of ['web', 'admin'] as const) {
            const probe = `${who}-${i}`;
            jobs.push(get(agents[who], portA, host, probe, i % 2 === 0).then((r) => ({ who, probe, r })));
          }
        }
        const results = await Promise.all(jobs);
        for (const { who, probe, r } of results) {
          assert.equal(r.status, 200, probe);
          assert.equal(r.probe, probe);
          assert.equal(r.identity, id(who), `${probe} arrived as ${r.identity}`);
          assert.deepEqual(r.forged, [], `${probe}: forged headers reached the pod`);
        }
      } finally {
        agents.web.destroy();
        agents.admin.destroy();
      }
    });
  }

  it('the destination proxy drops forged identity headers itself: a raw HBONE stream with them gets the certificate\'s identity', async () => {
    // Straight into the tunnel as `web`, past node A's header cleaning: only node B stands between it and the pod.
    const stream = await pluginA.connectUpstream({ identity: id('web'), ip: POD_B, port: h1Port, timeoutMs: 2000 });
    const forged = Object.entries(FORGED).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const text = await new Promise<string>((resolve, reject) => {
      let buf = '';
      stream.on('data', (d: Buffer) => { buf += d.toString('latin1'); if (buf.includes('\r\n\r\n') && buf.includes('}')) resolve(buf); });
      stream.on('error', reject);
      stream.write(`GET /raw HTTP/1.1\r\nhost: echo.shop\r\nx-probe: raw\r\n${forged}connection: close\r\n\r\n`);
    });
    stream.destroy();
    assert.match(text, /^HTTP\/1\.1 200/);
    const seen = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4).trim().replace(/^[0-9a-f]+\r\n/, '').replace(/\r\n0\r\n[\s\S]*$/, '')) as Seen;
    assert.equal(seen.identity, id('web'));
    assert.deepEqual(seen.forged, []);
  });

  it('an address the plan withholds (no identity) is refused, never sent with another pod\'s certificate', async () => {
    const agent = new http.Agent({ keepAlive: false, localAddress: '127.0.0.7' });
    try {
      setDst('10.96.0.20');
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: portA, path: '/', agent, headers: { host: 'echo.shop', ...FORGED } }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 503);
    } finally {
      agent.destroy();
    }
  });
});
