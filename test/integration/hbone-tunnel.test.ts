// HBONE framing over loopback with real certificates from the mesh CA (operator/ca): CONNECT streams carry bytes,
// the destination learns the source identity from the certificate only, connections are shared per
// (source identity, destination node), and refusals say why.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { MeshCa } from '../../operator/ca/mesh-ca.ts';
import { generateKeyAndCsr } from '../../agent/certs/workload-key.ts';
import { parseTrustBundle, type TrustBundle } from '../../l7proxy/identity/trust-bundle.ts';
import { createVerifyCounters } from '../../l7proxy/identity/verify-reasons.ts';
import { HboneServer, parseAuthority, type HboneStreamInfo } from '../../l7proxy/hbone/hbone-server.ts';
import { HboneConnector, type HboneIdentity } from '../../l7proxy/hbone/hbone-client.ts';
import { isHboneConnectError } from '../../l7proxy/hbone/errors.ts';

const TD = 'cluster.local';

/** Issues an SVID for ns/sa from `ca`, as the agent's CertManager would get it. */
export async function issueIdentity(ca: MeshCa, namespace: string, serviceAccount: string, ttlMs?: number): Promise<HboneIdentity> {
  const spiffeId = `spiffe://${ca.trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
  const svid = await ca.issue(csrPem, { namespace, serviceAccount }, ttlMs);
  return { certChainPem: svid.certChainPem, keyPem, spiffeId };
}

describe('HBONE over loopback with mesh CA certificates', () => {
  let ca: MeshCa;
  let otherCa: MeshCa;
  let bundle: TrustBundle;
  let server: HboneServer;
  let web: HboneIdentity;
  let admin: HboneIdentity;
  let proxyId: HboneIdentity;
  const counters = createVerifyCounters();
  const seen: HboneStreamInfo[] = [];

  before(async () => {
    ca = await MeshCa.create({ trustDomain: TD });
    otherCa = await MeshCa.create({ trustDomain: TD });
    bundle = parseTrustBundle(ca.bundle().pem);
    web = await issueIdentity(ca, 'shop', 'web');
    admin = await issueIdentity(ca, 'shop', 'admin');
    proxyId = await issueIdentity(ca, 'nodemesh-system', 'nodemesh-proxy');
    server = await HboneServer.start({
      host: '127.0.0.1', port: 0, trustDomain: TD, identity: proxyId, bundle: () => bundle, counters,
      admit: (t) => (t.ip === '10.244.1.5' ? 200 : 404),
      onStream: (stream, info) => {
        seen.push(info);
        // An echo "pod": answers with who it was told the peer is, then echoes.
        stream.write(`hello ${info.peer.spiffeId} to ${info.target.ip}:${info.target.port}\n`);
        stream.pipe(stream);
      },
    });
  });

  after(async () => { await server.close(100); });

  function connector(): HboneConnector {
    return new HboneConnector({ trustDomain: TD, bundle: () => bundle, serverSpiffeId: proxyId.spiffeId, connectTimeoutMs: 3000 });
  }

  it('parses only ip:port authorities', () => {
    assert.deepEqual(parseAuthority('10.244.1.5:8080'), { ip: '10.244.1.5', port: 8080 });
    assert.deepEqual(parseAuthority('[fd00::1]:80'), { ip: 'fd00::1', port: 80 });
    for (const bad of ['echo.shop:80', '10.244.1.5', '10.244.1.5:0', '10.244.1.5:65536', '10.244.1.5:080', '1.2.3:80', '[10.0.0.1]:80', '']) assert.equal(parseAuthority(bad), undefined, bad);
  });

  it('carries bytes both ways and tells the destination the certificate identity', async () => {
    const c = connector();
    try {
      const s = await c.open({ identity: web, node: { ip: '127.0.0.1', port: server.port }, target: { ip: '10.244.1.5', port: 8080 } });
      s.write('ping');
      s.end();
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      await once(s, 'end');
      assert.equal(Buffer.concat(chunks).toString(), `hello spiffe://${TD}/ns/shop/sa/web to 10.244.1.5:8080\nping`);
      const info = seen.at(-1)!;
      assert.equal(info.peer.spiffeId, web.spiffeId);
      assert.equal(info.peer.namespace, 'shop');
      assert.equal(info.peer.serviceAccount, 'web');
    } finally { await c.close(100); }
  });

  it('shares one connection per (source identity, node) and separates identities', async () => {
    const c = connector();
    try {
      const before = server.stats.sessions;
      const node = { ip: '127.0.0.1', port: server.port };
      const streams = await Promise.all([
        c.open({ identity: web, node, target: { ip: '10.244.1.5', port: 8080 } }),
        c.open({ identity: web, node, target: { ip: '10.244.1.5', port: 9090 } }),
        c.open({ identity: admin, node, target: { ip: '10.244.1.5', port: 8080 } }),
      ]);
      assert.equal(c.sessionKeys().length, 2);
      assert.equal(server.stats.sessions - before, 2);
      assert.deepEqual(seen.slice(-3).map((s) => s.peer.serviceAccount).sort(), ['admin', 'web', 'web']);
      for (const s of streams) s.destroy();
    } finally { await c.close(100); }
  });

  it('a destination the node does not serve is refused with a connect error (safe to retry elsewhere)', async () => {
    const c = connector();
    try {
      await assert.rejects(c.open({ identity: web, node: { ip: '127.0.0.1', port: server.port }, target: { ip: '10.244.9.9', port: 8080 } }), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'NM_ERR_HBONE_CONNECT_REFUSED');
        assert.ok(isHboneConnectError(err));
        return true;
      });
    } finally { await c.close(100); }
  });

  it('a client certificate from another CA gets nothing through, counted by reason', async () => {
    const stranger = await issueIdentity(otherCa, 'shop', 'web');
    const c = connector();
    const n = seen.length;
    const before = counters.unknown_issuer + counters.untrusted_chain + counters.tls_handshake_failed;
    try {
      await assert.rejects(c.open({ identity: stranger, node: { ip: '127.0.0.1', port: server.port }, target: { ip: '10.244.1.5', port: 8080 } }));
    } finally { await c.close(100); }
    assert.equal(seen.length, n);
    assert.ok(counters.unknown_issuer + counters.untrusted_chain + counters.tls_handshake_failed > before);
  });

  it('the source refuses a destination that is not the node proxy identity', async () => {
    const c = new HboneConnector({ trustDomain: TD, bundle: () => bundle, serverSpiffeId: `spiffe://${TD}/ns/nodemesh-system/sa/someone-else`, connectTimeoutMs: 3000 });
    try {
      await assert.rejects(c.open({ identity: web, node: { ip: '127.0.0.1', port: server.port }, target: { ip: '10.244.1.5', port: 8080 } }), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'NM_ERR_HBONE_PEER_REJECTED');
        return true;
      });
    } finally { await c.close(100); }
  });

  it('a rotated source certificate opens a new connection', async () => {
    const c = connector();
    try {
      const node = { ip: '127.0.0.1', port: server.port };
      const a = await c.open({ identity: web, node, target: { ip: '10.244.1.5', port: 8080 } });
      const before = server.stats.sessions;
      const web2 = await issueIdentity(ca, 'shop', 'web');
      const b = await c.open({ identity: web2, node, target: { ip: '10.244.1.5', port: 8080 } });
      assert.equal(server.stats.sessions - before, 1);
      assert.equal(c.sessionKeys().length, 1);
      a.destroy(); b.destroy();
    } finally { await c.close(100); }
  });

  it('nothing listening: a connect error, quickly', async () => {
    const c = connector();
    const t0 = Date.now();
    try {
      await assert.rejects(c.open({ identity: web, node: { ip: '127.0.0.1', port: 1 }, target: { ip: '10.244.1.5', port: 8080 } }), (err: Error) => isHboneConnectError(err));
    } finally { await c.close(100); }
    assert.ok(Date.now() - t0 < 2000);
  });
});
