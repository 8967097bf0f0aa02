// The same-node hand-off under the mTLS modes: a source that is no workload of this node (a non-meshed pod that went
// through connect4) has no identity, so a STRICT destination refuses it (counted); a PERMISSIVE one serves it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../l7proxy/stats.ts';
import { MeshPlugin, type MeshPluginData } from './worker-plugin.ts';

const TD = 'cluster.local';
const WEB = `spiffe://${TD}/ns/shop/sa/web`;

function data(): MeshPluginData {
  const dst = (name: string, ip: string) => ({ name, addresses: [{ ip, port: 8080 }], protocol: 'tcp' as const, defaultBackend: name });
  return {
    version: 'v1',
    inbound: {
      version: 'v1',
      services: [dst('shop/strict:8080', '10.244.1.10'), dst('shop/perm:8080', '10.244.1.11')],
      backends: [
        { name: 'shop/strict:8080', endpoints: [{ ip: '10.244.1.10', port: 8080, ready: true }] },
        { name: 'shop/perm:8080', endpoints: [{ ip: '10.244.1.11', port: 8080, ready: true }] },
      ],
    },
    endpoints: { '10.244.1.10:8080': { via: 'local' }, '10.244.1.11:8080': { via: 'local' } },
    identities: { '10.244.1.5': { spiffeId: WEB, namespace: 'shop', serviceAccount: 'web' } },
    certs: { workloads: {} },
    plaintext: { '10.244.1.10:8080': 'refuse', '10.244.1.11:8080': 'police' },
  };
}

test('same-node hand-off: an anonymous source is refused by a STRICT port and counted; a workload and a PERMISSIVE port are not', async (t) => {
  const sink = { connectionOpened: () => {}, connectionClosed: () => {}, requestFinished: () => {} };
  const plugin = new MeshPlugin({ nodeName: 'node-1', host: '127.0.0.1', inboundPort: 0, trustDomain: TD }, silentLogger, sink);
  t.after(() => plugin.stop());
  await plugin.update(data());

  await assert.rejects(
    plugin.connectUpstream({ identity: 'anon:10.244.1.99', ip: '10.244.1.10', port: 8080, timeoutMs: 500 }),
    (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED' && /not a mesh workload and 10\.244\.1\.10:8080 runs mTLS STRICT/.test(err.message),
  );
  assert.equal(plugin.plaintextStats.plaintextInbound.strictRefused, 1);

  // A workload of this node is authenticated by the node's record of it: the hand-off proceeds.
  const fromWorkload = await plugin.connectUpstream({ identity: WEB, ip: '10.244.1.10', port: 8080, timeoutMs: 500 });
  fromWorkload.destroy();
  // PERMISSIVE: the anonymous source is handed on, to be served as unauthenticated under the port's policy.
  const anonPermissive = await plugin.connectUpstream({ identity: 'anon:10.244.1.99', ip: '10.244.1.11', port: 8080, timeoutMs: 500 });
  anonPermissive.destroy();
  assert.equal(plugin.plaintextStats.plaintextInbound.strictRefused, 1);
  assert.equal(plugin.stats.local, 2);
});
