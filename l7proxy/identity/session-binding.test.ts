// Session resumption bound to the trust bundle (F10, CVE-2022-21654 class), with real TLS 1.3 handshakes on loopback.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { makePki, type TestCert, type TestPki } from './testing/cert-factory.ts';
import { parseTrustBundle, type TrustBundle } from './trust-bundle.ts';
import { guardMeshServer, tlsOptionsFor, type MeshTlsIdentity } from './mesh-tls.ts';
import { BundleBoundSessionCache, bundleGeneration, checkResumedServer, ticketKeysFor } from './session-binding.ts';
import { createVerifyCounters } from './verify-reasons.ts';

const TD = 'td.test';
const SERVER_ID = `spiffe://${TD}/ns/mesh/sa/node-proxy`;
const CLIENT_ID = `spiffe://${TD}/ns/shop/sa/web`;

type Outcome = { received: string; reused: boolean; session: Buffer | undefined; error: string | undefined; resumedCheck: string | undefined };

const identityOf = (pki: TestPki, leaf: TestCert): MeshTlsIdentity => ({ certChainPem: pki.chainPemOf(leaf), keyPem: leaf.keyPem });

/** A guarded mesh server whose context and bundle the test swaps like worker-plugin does on a rotation. */
async function meshServer(identity: MeshTlsIdentity, bundle: TrustBundle) {
  let current = bundle;
  const counters = createVerifyCounters();
  const server = tls.createServer(tlsOptionsFor(identity, bundle, { role: 'server' }));
  guardMeshServer(server, { trustDomain: TD, bundle: () => current, counters }, (socket, peer) => {
    socket.on('data', () => socket.write(`hello ${peer.spiffeId}`));
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    counters,
    /** What HboneServer.setIdentity does: a new context from the identity and the bundle of now. */
    rotate(nextIdentity: MeshTlsIdentity, nextBundle: TrustBundle) {
      current = nextBundle;
      server.setSecureContext(tlsOptionsFor(nextIdentity, nextBundle, { role: 'server' }));
    },
    /** Only the guard's bundle changes; the context and its ticket keys stay (a proxy that forgot to rebuild it). */
    setGuardBundle(nextBundle: TrustBundle) {
      current = nextBundle;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function exchange(port: number, options: tls.ConnectionOptions, check?: { bundle: TrustBundle; sessionGeneration: string | undefined }): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { received: '', reused: false, session: undefined, error: undefined, resumedCheck: undefined };
    const socket = tls.connect({ ...options, host: '127.0.0.1', port }, () => {
      out.reused = socket.isSessionReused();
      if (check) {
        const r = checkResumedServer(socket, check.bundle, { trustDomain: TD, expectedSpiffeId: SERVER_ID, sessionGeneration: check.sessionGeneration });
        out.resumedCheck = !r.ok ? r.reason : r.resumed ? 'resumed' : 'full';
        if (!r.ok) { socket.destroy(); return; }
      }
      socket.write('ping');
    });
    socket.on('session', (s: Buffer) => { out.session = s; });
    socket.on('data', (d: Buffer) => { out.received += d.toString(); socket.end(); });
    socket.on('error', (e: NodeJS.ErrnoException) => { out.error = e.code ?? e.message; });
    socket.on('close', () => resolve(out));
    socket.setTimeout(3000, () => socket.destroy(new Error('test timeout')));
  });
}

const clientOpts = (pki: TestPki, leaf: TestCert, bundle: TrustBundle, extra: Partial<tls.ConnectionOptions> = {}): tls.ConnectionOptions =>
  ({ ...tlsOptionsFor(identityOf(pki, leaf), bundle, { role: 'client', trustDomain: TD, expectedSpiffeId: SERVER_ID }), ...extra });

describe('session resumption bound to the trust bundle', () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => { for (const c of closers) await c(); });

  it('ticket keys: one per bundle object, new ones for a new bundle', async () => {
    const pki = await makePki('keys');
    const a = parseTrustBundle([pki.root.pem, pki.intermediate.pem]);
    const b = parseTrustBundle([pki.root.pem, pki.intermediate.pem]);
    assert.equal(ticketKeysFor(a).length, 48);
    assert.ok(ticketKeysFor(a).equals(ticketKeysFor(a)));
    assert.ok(!ticketKeysFor(a).equals(ticketKeysFor(b)), 'a re-parsed (rotated) bundle gets its own keys');
    assert.equal(bundleGeneration(a), bundleGeneration(b));
    const server = tlsOptionsFor(identityOf(pki, await pki.leaf({ spiffeId: SERVER_ID })), a, { role: 'server' });
    assert.ok((server.ticketKeys as Buffer).equals(ticketKeysFor(a)));
  });

  it('server: a certificate renewal keeps resumption; after the old root is dropped, an old ticket resumes nothing and the old-chain peer is refused', async () => {
    const oldPki = await makePki('old');
    const newPki = await makePki('new');
    const before = parseTrustBundle([oldPki.root.pem, oldPki.intermediate.pem]);
    const overlap = parseTrustBundle([oldPki.root.pem, newPki.root.pem, oldPki.intermediate.pem, newPki.intermediate.pem]);
    const afterDrop = parseTrustBundle([newPki.root.pem, newPki.intermediate.pem]);
    const srv = await meshServer(identityOf(oldPki, await oldPki.leaf({ spiffeId: SERVER_ID })), before);
    closers.push(srv.close);
    const oldClient = await oldPki.leaf({ spiffeId: CLIENT_ID });
    // The client trusts both roots throughout, so only the server's decision is under test.
    const first = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap));
    assert.equal(first.received, `hello ${CLIENT_ID}`);
    assert.ok(first.session, 'the server issued a ticket');
    // Renewal of the server's certificate under the same bundle: the ticket still resumes.
    srv.rotate(identityOf(oldPki, await oldPki.leaf({ spiffeId: SERVER_ID })), before);
    const renewed = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap, { session: first.session }));
    assert.equal(renewed.reused, true, 'a renewal must not cost every client a full handshake');
    assert.equal(renewed.received, `hello ${CLIENT_ID}`);
    // Overlap (new root added, a new bundle object): tickets of the old generation are void, old-chain peers still welcome.
    srv.rotate(identityOf(oldPki, await oldPki.leaf({ spiffeId: SERVER_ID })), overlap);
    const inOverlap = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap, { session: renewed.session ?? first.session }));
    assert.equal(inOverlap.reused, false);
    assert.equal(inOverlap.received, `hello ${CLIENT_ID}`);
    assert.ok(inOverlap.session);
    // Drop: the server now presents a new-chain certificate and trusts only the new root.
    srv.rotate(identityOf(newPki, await newPki.leaf({ spiffeId: SERVER_ID })), afterDrop);
    const refusedBefore = srv.counters.untrusted_chain + srv.counters.unknown_issuer;
    const resumedAfterDrop = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap, { session: inOverlap.session }));
    assert.equal(resumedAfterDrop.reused, false, 'a ticket from before the drop must not resume');
    assert.equal(resumedAfterDrop.received, '', 'the old-chain peer got through after the drop');
    assert.equal(srv.counters.untrusted_chain + srv.counters.unknown_issuer, refusedBefore + 1);
    // A new-chain client is served.
    const fresh = await exchange(srv.port, clientOpts(newPki, await newPki.leaf({ spiffeId: CLIENT_ID }), overlap));
    assert.equal(fresh.received, `hello ${CLIENT_ID}`);
  });

  it('server guard, even if a ticket did resume after the drop (keys kept by mistake): the old-chain peer is refused', async () => {
    const oldPki = await makePki('old2');
    const newPki = await makePki('new2');
    const overlap = parseTrustBundle([oldPki.root.pem, newPki.root.pem, oldPki.intermediate.pem, newPki.intermediate.pem]);
    const afterDrop = parseTrustBundle([newPki.root.pem, newPki.intermediate.pem]);
    const srv = await meshServer(identityOf(newPki, await newPki.leaf({ spiffeId: SERVER_ID })), overlap);
    closers.push(srv.close);
    const oldClient = await oldPki.leaf({ spiffeId: CLIENT_ID });
    const first = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap));
    assert.equal(first.received, `hello ${CLIENT_ID}`);
    // Only the guard's bundle changes, the context (and its ticket keys) stays: the session resumes at TLS level.
    srv.setGuardBundle(afterDrop);
    const resumed = await exchange(srv.port, clientOpts(oldPki, oldClient, overlap, { session: first.session }));
    assert.equal(resumed.reused, true);
    assert.equal(resumed.received, '', 'the guard let an old-chain session in');
  });

  it('client: Node accepts a resumed session without checking the server again; checkResumedServer refuses one of an older bundle, the cache never offers it', async () => {
    const oldPki = await makePki('old3');
    const newPki = await makePki('new3');
    const oldBundle = parseTrustBundle([oldPki.root.pem, oldPki.intermediate.pem]);
    const newBundle = parseTrustBundle([newPki.root.pem, newPki.intermediate.pem]);
    // A server still on the old chain (a node that missed the rotation, or an attacker holding an old-chain key).
    const srv = await meshServer(identityOf(oldPki, await oldPki.leaf({ spiffeId: SERVER_ID })), parseTrustBundle([oldPki.root.pem, newPki.root.pem, oldPki.intermediate.pem, newPki.intermediate.pem]));
    closers.push(srv.close);
    const cache = new BundleBoundSessionCache();
    const peer = `127.0.0.1:${srv.port}`;
    const oldLeaf = await oldPki.leaf({ spiffeId: CLIENT_ID });
    const first = await exchange(srv.port, clientOpts(oldPki, oldLeaf, oldBundle), { bundle: oldBundle, sessionGeneration: undefined });
    assert.equal(first.resumedCheck, 'full');
    assert.ok(first.session);
    cache.set(peer, oldBundle, first.session);
    assert.ok(cache.get(peer, oldBundle));
    // Same bundle: resumption is fine (that is what it is for).
    const same = await exchange(srv.port, clientOpts(oldPki, oldLeaf, oldBundle, { session: cache.get(peer, oldBundle)! }), { bundle: oldBundle, sessionGeneration: cache.generation });
    assert.equal(same.resumedCheck, 'resumed');
    assert.equal(same.received, `hello ${CLIENT_ID}`);
    // Our bundle dropped the old root. A full handshake is refused by the client...
    const newLeaf = await newPki.leaf({ spiffeId: CLIENT_ID });
    const full = await exchange(srv.port, clientOpts(newPki, newLeaf, newBundle));
    assert.equal(full.received, '');
    assert.ok(full.error, 'a full handshake with an old-chain server must fail');
    // ...but offering the old session resumes, and Node calls nothing of ours: the hole this module closes.
    const unchecked = await exchange(srv.port, clientOpts(newPki, newLeaf, newBundle, { session: first.session }));
    assert.equal(unchecked.reused, true);
    assert.equal(unchecked.received, `hello ${CLIENT_ID}`, 'Node resumed to an old-chain server without a word');
    const checked = await exchange(srv.port, clientOpts(newPki, newLeaf, newBundle, { session: first.session }), { bundle: newBundle, sessionGeneration: bundleGeneration(oldBundle) });
    assert.equal(checked.reused, true);
    assert.equal(checked.resumedCheck, 'untrusted_chain');
    assert.equal(checked.received, '');
    // The cache forgets sessions of an older bundle generation.
    assert.equal(cache.get(peer, newBundle), undefined);
    assert.equal(cache.size, 0);
    assert.equal(cache.get(peer, oldBundle), undefined, 'gone for good, not kept aside');
  });
});
