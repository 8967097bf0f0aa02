// Real TLS 1.3 handshakes over loopback: valid peers get through with their SPIFFE ID; nothing else does.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { makePki, rawSan, type TestCert, type TestPki } from './testing/cert-factory.ts';
import { parseTrustBundle, type TrustBundle } from './trust-bundle.ts';
import { guardMeshServer, PeerRejectedError, tlsOptionsFor, type MeshTlsIdentity } from './mesh-tls.ts';
import { createVerifyCounters, type VerifyCounters } from './verify-reasons.ts';

const TD = 'td.test';
const SERVER_ID = `spiffe://${TD}/ns/shop/sa/server`;

interface ClientOutcome {
  /** What the server echoed back (only authenticated peers get an echo). */
  received: string;
  error: string | undefined;
  reused: boolean;
  session: Buffer | undefined;
}

describe('mesh TLS (loopback, TLS 1.3)', () => {
  let pki: TestPki;
  let bundle: TrustBundle;
  let server: tls.Server;
  let port: number;
  let counters: VerifyCounters;
  let currentBundle: TrustBundle;
  /** Application bytes the server handed on, per authenticated peer. */
  const delivered: Array<{ peer: string; data: string }> = [];

  const identityOf = (leaf: TestCert): MeshTlsIdentity => ({ certChainPem: pki.chainPemOf(leaf), keyPem: leaf.keyPem });

  before(async () => {
    pki = await makePki();
    // Roots and the mesh's intermediates, as MeshCa.bundle() publishes them: the TLS server cannot see the
    // intermediates a client sends, so the verifier completes paths from the bundle.
    bundle = parseTrustBundle([pki.root.pem, pki.intermediate.pem]);
    currentBundle = bundle;
    counters = createVerifyCounters();
    const serverLeaf = await pki.leaf({ spiffeId: SERVER_ID });
    server = tls.createServer(tlsOptionsFor(identityOf(serverLeaf), bundle, { role: 'server' }));
    guardMeshServer(server, { trustDomain: TD, bundle: () => currentBundle, counters }, (socket, peer) => {
      socket.on('data', (d: Buffer) => {
        delivered.push({ peer: peer.spiffeId, data: d.toString() });
        socket.write(`hello ${peer.spiffeId}`);
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Connects, writes `payload` as soon as the handshake completes, collects what comes back until close. */
  function exchange(options: tls.ConnectionOptions, payload: string): Promise<ClientOutcome> {
    return new Promise((resolve) => {
      const out: ClientOutcome = { received: '', error: undefined, reused: false, session: undefined };
      const socket = tls.connect({ ...options, host: '127.0.0.1', port, servername: undefined }, () => {
        out.reused = socket.isSessionReused();
        socket.write(payload);
      });
      socket.on('session', (s: Buffer) => {
        out.session = s;
      });
      socket.on('data', (d: Buffer) => {
        out.received += d.toString();
        socket.end();
      });
      socket.on('error', (e: NodeJS.ErrnoException) => {
        out.error = e.code ?? e.message;
      });
      socket.on('close', () => resolve(out));
      socket.setTimeout(3000, () => socket.destroy(new Error('test timeout')));
    });
  }

  const clientOptions = (leaf: TestCert | undefined, pkiOfLeaf = pki, extra: Partial<tls.ConnectionOptions> = {}): tls.ConnectionOptions => {
    const opts = tlsOptionsFor(
      leaf ? { certChainPem: pkiOfLeaf.chainPemOf(leaf), keyPem: leaf.keyPem } : { certChainPem: '', keyPem: '' },
      bundle,
      { role: 'client', trustDomain: TD, expectedSpiffeId: SERVER_ID },
    );
    if (!leaf) {
      delete opts.cert;
      delete opts.key;
    }
    return { ...opts, ...extra };
  };

  it('accepts a valid peer and hands on its data with its SPIFFE ID', async () => {
    const leaf = await pki.leaf({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart` });
    const out = await exchange(clientOptions(leaf), 'secret-valid');
    assert.equal(out.error, undefined);
    assert.equal(out.received, `hello spiffe://${TD}/ns/shop/sa/cart`);
    assert.deepEqual(delivered.filter((d) => d.data === 'secret-valid'), [{ peer: `spiffe://${TD}/ns/shop/sa/cart`, data: 'secret-valid' }]);
  });

  it('a peer from another CA gets no data through', async () => {
    const other = await makePki('other');
    const leaf = await other.leaf({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart` });
    const before = counters.untrusted_chain;
    const out = await exchange(clientOptions(leaf, other), 'secret-wrong-ca');
    assert.equal(out.received, '');
    assert.equal(delivered.some((d) => d.data === 'secret-wrong-ca'), false);
    assert.equal(counters.untrusted_chain, before + 1);
  });

  it('a peer without a certificate gets no data through', async () => {
    const before = counters.no_cert;
    const out = await exchange(clientOptions(undefined), 'secret-no-cert');
    assert.equal(out.received, '');
    assert.equal(delivered.some((d) => d.data === 'secret-no-cert'), false);
    assert.equal(counters.no_cert, before + 1);
  });

  it('a chain OpenSSL accepts but SPIFFE rules refuse (two URI SANs) gets no data through', async () => {
    const leaf = await pki.leaf({
      san: rawSan([{ kind: 6, value: `spiffe://${TD}/ns/a/sa/b` }, { kind: 6, value: `spiffe://${TD}/ns/kube-system/sa/admin` }], true),
    });
    const before = counters.san_count;
    const out = await exchange(clientOptions(leaf), 'secret-two-sans');
    assert.equal(out.received, '');
    assert.equal(delivered.some((d) => d.data === 'secret-two-sans'), false);
    assert.equal(counters.san_count, before + 1);
  });

  it('a plaintext client is counted as a handshake failure and gets nothing through', async () => {
    const net = await import('node:net');
    const before = counters.tls_handshake_failed;
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
      s.on('error', () => {});
      s.on('close', () => resolve());
      s.resume();
    });
    assert.equal(delivered.some((d) => d.data.startsWith('GET')), false);
    assert.equal(counters.tls_handshake_failed, before + 1);
  });

  it('the client refuses a server whose SVID is not the expected identity, before writing', async () => {
    const leaf = await pki.leaf({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart` });
    const opts = tlsOptionsFor(identityOf(leaf), bundle, { role: 'client', trustDomain: TD, expectedSpiffeId: `spiffe://${TD}/ns/shop/sa/db` });
    const out = await exchange(opts, 'secret-wrong-server');
    assert.equal(out.error, new PeerRejectedError('identity_mismatch', '').code);
    assert.equal(delivered.some((d) => d.data === 'secret-wrong-server'), false);
  });

  it('a resumed session is re-checked against the bundle of now (old root dropped ⇒ refused)', async () => {
    const leaf = await pki.leaf({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart` });
    const first = await exchange(clientOptions(leaf), 'secret-before-rotation');
    assert.equal(first.received, `hello spiffe://${TD}/ns/shop/sa/cart`);
    assert.ok(first.session, 'server issued a session ticket');
    const resumedOk = await exchange(clientOptions(leaf, pki, { session: first.session }), 'secret-resumed');
    assert.equal(resumedOk.reused, true);
    assert.equal(resumedOk.received, `hello spiffe://${TD}/ns/shop/sa/cart`);
    // The operator dropped our root: only a new, unrelated root remains trusted.
    const next = await makePki('next');
    currentBundle = parseTrustBundle(next.root.pem);
    try {
      const before = counters.ok;
      const resumed = await exchange(clientOptions(leaf, pki, { session: first.session }), 'secret-after-rotation');
      assert.equal(resumed.received, '');
      assert.equal(delivered.some((d) => d.data === 'secret-after-rotation'), false);
      assert.equal(counters.ok, before);
    } finally {
      currentBundle = bundle;
    }
  });
});
