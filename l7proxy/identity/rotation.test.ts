// Trust-bundle rotation as the proxy sees it (F10): add root → switch issuer → drop old root.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makePki } from './testing/cert-factory.ts';
import { parseTrustBundle } from './trust-bundle.ts';
import { verifyPeerChain } from './verify-peer-chain.ts';

const TD = 'td.test';

describe('bundle rotation with overlap', () => {
  it('both chains verify during the overlap; after the old root is dropped, old-chain leaves are refused', async () => {
    const oldPki = await makePki('old');
    const newPki = await makePki('new');
    const oldLeaf = await oldPki.leaf();
    const newLeaf = await newPki.leaf();
    const verify = (leafDer: Uint8Array, pem: string[]) => {
      const r = verifyPeerChain([leafDer], parseTrustBundle(pem), { trustDomain: TD, now: Date.now() });
      return r.ok ? 'ok' : r.reason;
    };
    // Before: old root and intermediate only.
    const before = [oldPki.root.pem, oldPki.intermediate.pem];
    assert.equal(verify(oldLeaf.der, before), 'ok');
    assert.equal(verify(newLeaf.der, before), 'unknown_issuer');
    // Overlap: both roots and both intermediates are published (what MeshCa.bundle() gives after rotateAddRoot).
    const overlap = [oldPki.root.pem, newPki.root.pem, oldPki.intermediate.pem, newPki.intermediate.pem];
    assert.equal(verify(oldLeaf.der, overlap), 'ok');
    assert.equal(verify(newLeaf.der, overlap), 'ok');
    // After rotateDropRoot: the old root and its intermediate are gone.
    const after = [newPki.root.pem, newPki.intermediate.pem];
    assert.equal(verify(newLeaf.der, after), 'ok');
    assert.equal(verify(oldLeaf.der, after), 'unknown_issuer');
    // Even a peer that presents its old intermediate gets no further than the missing root.
    const r = verifyPeerChain(oldPki.chainOf(oldLeaf), parseTrustBundle(after), { trustDomain: TD, now: Date.now() });
    assert.equal(r.ok ? 'ok' : r.reason, 'untrusted_chain');
  });
});
