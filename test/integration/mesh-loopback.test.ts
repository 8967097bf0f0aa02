// Two "nodes" on loopback, no kernel: NodeState → planProxy → node A's outbound proxy → HBONE (real mesh CA
// certificates) → node B's inbound side (the pod's AuthorizationPolicy on the normalized request) → echo "pod".
// Also the same-node hand-off (no TLS, same policy) and a source without an identity (refused, never plaintext).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { MeshCa } from '../../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../../agent/certs/workload-key.ts';
import type { CompiledRoute, NodeService, NodeWorkload } from '../../crds/index.ts';
import { planProxy, type PlanProxyInput, type ProxyPlan } from '../../agent/proxy/plan-proxy.ts';
import { MeshPlugin, type MeshPluginData, type PemIdentity } from '../../agent/proxy/worker-plugin.ts';
import { NodeProxy } from '../../l7proxy/proxy.ts';
import { startEcho, type EchoServer } from '../../l7proxy/testing/harness.ts';

const TD = 'cluster.local';
const PROXY_ID = `spiffe://${TD}/ns/nodemesh-system/sa/nodemesh-proxy`;
const NODE_A = '127.0.0.1';
const NODE_B = '127.0.0.2';
const POD_B = '127.0.0.3'; // echo-v1 on node B
const POD_A = '127.0.0.4'; // echo-local on node A
const CLIENT = '127.0.0.1'; // the "web" pod's address as node A sees it

async function issue(ca: MeshCa, namespace: string, serviceAccount: string): Promise<PemIdentity> {
  const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://${TD}/ns/${namespace}/sa/${serviceAccount}`);
  return { certChainPem: (await ca.issue(csrPem, { namespace, serviceAccount })).certChainPem, keyPem };
}

async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A raw HTTP/1.1 request (the exact target bytes matter for the normalization cases). */
function rawRequest(port: number, target: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    s.on('data', (d: Buffer) => { buf += d.toString('latin1'); });
    s.on('error', reject);
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      resolve({ status: m ? Number(m[1]) : 0, body: buf.slice(buf.indexOf('\r\n\r\n') + 4) });
    });
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    s.write(`GET ${target} HTTP/1.1\r\nhost: echo.shop\r\nconnection: close\r\n${extra}\r\n`);
  });
}

describe('mesh over loopback: plan → outbound → HBONE → inbound policy → pod', () => {
  let ca: MeshCa;
  let echoB: EchoServer;
  let echoA: EchoServer;
  let pluginA: MeshPlugin;
  let pluginB: MeshPlugin;
  let outA: NodeProxy;
  let outAnon: NodeProxy;
  let portA = 0;
  let portAnon = 0;
  let planA: ProxyPlan;
  let webCert: PemIdentity;

  before(async () => {
    ca = await MeshCa.create({ trustDomain: TD });
    echoB = await startEcho('echo-v1', { host: POD_B });
    echoA = await startEcho('echo-local', { host: POD_A });
  });

  after(async () => {
    await Promise.all([outA?.stop({ drain: false }), outAnon?.stop({ drain: false }), pluginA?.stop(), pluginB?.stop()]);
    await Promise.all([echoA?.close(), echoB?.close()]);
  });

  it('is set up from NodeState through planProxy', async () => {
    const hbonePort = await freePort(NODE_B);
    const services: V1Service[] = [
      { metadata: { namespace: 'shop', name: 'echo' }, spec: { clusterIP: '10.96.0.20', clusterIPs: ['10.96.0.20'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } },
      { metadata: { namespace: 'shop', name: 'echo-local' }, spec: { clusterIP: '10.96.0.30', clusterIPs: ['10.96.0.30'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] } },
    ];
    const slices: V1EndpointSlice[] = [
      { metadata: { namespace: 'shop', name: 'echo-1', labels: { 'kubernetes.io/service-name': 'echo' } }, addressType: 'IPv4', ports: [{ name: 'http', port: echoB.port, protocol: 'TCP' }], endpoints: [{ addresses: [POD_B], nodeName: 'node-b' }] },
      { metadata: { namespace: 'shop', name: 'echo-local-1', labels: { 'kubernetes.io/service-name': 'echo-local' } }, addressType: 'IPv4', ports: [{ name: 'http', port: echoA.port, protocol: 'TCP' }], endpoints: [{ addresses: [POD_A], nodeName: 'node-a' }] },
    ];
    const nodes: V1Node[] = [
      { metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: NODE_A }] } },
      { metadata: { name: 'node-b' }, status: { addresses: [{ type: 'InternalIP', address: NODE_B }] } },
    ];
    const authz = {
      defaultAction: 'Deny' as const,
      policies: [
        { name: 'shop/deny-admin', action: 'DENY' as const, rules: [{ requiresHttp: true, to: [{ paths: [{ prefix: '/admin' }] }] }] },
        { name: 'shop/allow-web', action: 'ALLOW' as const, rules: [{ requiresHttp: false, from: [{ spiffeIds: [`spiffe://${TD}/ns/shop/sa/web`] }] }] },
      ],
    };
    const wl = (name: string, sa: string, ip: string, extra: Partial<NodeWorkload> = {}): NodeWorkload => ({ namespace: 'shop', name, uid: name, serviceAccount: sa, spiffeId: `spiffe://${TD}/ns/shop/sa/${sa}`, podIPs: [ip], mtls: { mode: 'STRICT' }, sources: [], ...extra });
    const route: CompiledRoute = { route: 'shop/echo', ruleIndex: 0, matchIndex: 0, match: { path: { type: 'PathPrefix', value: '/' } }, filters: [], backends: [{ namespace: 'shop', name: 'echo', port: 80, weight: 1, resolved: true }] };
    const meshSvc = (name: string, ip: string, routes: CompiledRoute[]): NodeService => ({ namespace: 'shop', name, clusterIPs: [ip], mtlsMode: 'STRICT', ports: [{ port: 80, name: 'http', protocol: 'TCP', mode: 'HTTP', routes }], sources: [] });
    const svcs = [meshSvc('echo', '10.96.0.20', [route]), meshSvc('echo-local', '10.96.0.30', [])];
    const input = (nodeName: string, workloads: NodeWorkload[]): PlanProxyInput => ({ nodeName, state: { nodeName, trustDomain: TD, workloads, services: svcs, version: nodeName }, services, endpointSlices: slices, nodes });
    planA = planProxy(input('node-a', [wl('web-1', 'web', CLIENT), wl('echo-local-1', 'echo', POD_A, { authorization: authz })]));
    const planB = planProxy(input('node-b', [wl('echo-v1-1', 'echo', POD_B, { authorization: authz })]));
    assert.deepEqual(planA.problems, []);
    assert.deepEqual(planB.problems, []);
    assert.deepEqual(planA.endpoints[`${POD_B}:${echoB.port}`], { via: 'hbone', node: 'node-b', nodeIp: NODE_B });
    assert.deepEqual(planA.endpoints[`${POD_A}:${echoA.port}`], { via: 'local' });

    const bundlePem = ca.bundle().pem;
    webCert = await issue(ca, 'shop', 'web');
    const proxyCertA = await issue(ca, 'nodemesh-system', 'nodemesh-proxy');
    const proxyCertB = await issue(ca, 'nodemesh-system', 'nodemesh-proxy');
    const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    pluginA = new MeshPlugin({ nodeName: 'node-a', host: NODE_A, inboundPort: hbonePort, trustDomain: TD, proxySpiffeId: PROXY_ID }, silent);
    pluginB = new MeshPlugin({ nodeName: 'node-b', host: NODE_B, inboundPort: hbonePort, trustDomain: TD, proxySpiffeId: PROXY_ID }, silent);
    const data = (plan: ProxyPlan, proxy: PemIdentity, workloads: Record<string, PemIdentity>): MeshPluginData => ({ version: plan.version, inbound: plan.inbound, endpoints: plan.endpoints, identities: plan.identities, certs: { bundlePem, proxy, workloads } });
    await pluginA.update(data(planA, proxyCertA, { [`spiffe://${TD}/ns/shop/sa/web`]: webCert }));
    await pluginB.update(data(planB, proxyCertB, {}));
    assert.equal(pluginB.hbonePort, hbonePort);

    outA = new NodeProxy({ config: planA.outbound, originalDst: () => ({ ip: '10.96.0.20', port: 80 }), identifySource: (addr) => planA.identities[addr], connectUpstream: pluginA.connectUpstream });
    portA = (await outA.start({ host: '127.0.0.1', outboundPort: 0 })).outboundPort;
    outAnon = new NodeProxy({ config: planA.outbound, originalDst: () => ({ ip: '10.96.0.20', port: 80 }), identifySource: () => undefined, connectUpstream: pluginA.connectUpstream });
    portAnon = (await outAnon.start({ host: '127.0.0.1', outboundPort: 0 })).outboundPort;
  });

  it('a request crosses the tunnel; the destination knows the source from its certificate only', async () => {
    const r = await rawRequest(portA, '/api/items', { 'x-nodemesh-source-identity': 'spiffe://cluster.local/ns/shop/sa/admin', 'x-forwarded-client-cert': 'By=evil' });
    assert.equal(r.status, 200, r.body);
    const seen = echoB.requests.at(-1)!;
    const headers = Object.fromEntries(seen.rawHeaders.reduce<[string, string][]>((acc, v, i, a) => (i % 2 === 0 ? [...acc, [v.toLowerCase(), a[i + 1]!]] : acc), []));
    assert.equal(headers['x-nodemesh-source-identity'], `spiffe://${TD}/ns/shop/sa/web`);
    assert.equal(headers['x-forwarded-client-cert'], undefined);
    assert.equal(seen.url, '/api/items');
    assert.equal(pluginA.stats.hboneOpened > 0, true);
  });

  it('a denied path gets 403 from the destination, in every spelling, and never reaches the pod', async () => {
    const before = echoB.requests.length;
    for (const target of ['/admin', '//admin', '/./admin', '/x/../admin', '/%61dmin', '/admin/x']) {
      const r = await rawRequest(portA, target);
      assert.equal(r.status, 403, `${target}: ${r.body}`);
      assert.match(r.body, /RBAC: access denied/);
    }
    assert.equal(echoB.requests.length, before);
    assert.ok(!echoB.raw().toString('latin1').includes('admin'));
    assert.ok(pluginB.inbound.stats.authz.deny >= 6);
  });

  it('a source without an identity is refused (no plaintext fallback), nothing reaches the pod', async () => {
    const before = echoB.requests.length;
    const r = await rawRequest(portAnon, '/api/items');
    assert.equal(r.status, 503);
    assert.equal(echoB.requests.length, before);
    assert.ok(pluginA.stats.noIdentity > 0);
  });

  it('same-node traffic skips TLS but not policy', async () => {
    const local = new NodeProxy({ config: planA.outbound, originalDst: () => ({ ip: '10.96.0.30', port: 80 }), identifySource: (addr) => planA.identities[addr], connectUpstream: pluginA.connectUpstream });
    const port = (await local.start({ host: '127.0.0.1', outboundPort: 0 })).outboundPort;
    try {
      const opened = pluginA.stats.hboneOpened;
      assert.equal((await rawRequest(port, '/api/x')).status, 200);
      assert.equal((await rawRequest(port, '//admin')).status, 403);
      assert.equal(echoA.requests.length, 1);
      assert.equal(echoA.requests[0]!.url, '/api/x');
      assert.equal(pluginA.stats.hboneOpened, opened);
      assert.ok(pluginA.stats.local >= 1);
    } finally {
      await local.stop({ drain: false });
    }
  });
});
