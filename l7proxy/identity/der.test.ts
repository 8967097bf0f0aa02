// The strict DER reader and certificate parser: refuses what DER forbids; agrees with OpenSSL on what it reads.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { DerError, decodeOid, readDerTlv } from './der.ts';
import { parseCert } from './parsed-cert.ts';
import { makePki, rawSan } from './testing/cert-factory.ts';
import { parseTrustBundle } from './trust-bundle.ts';
import { verifyPeerChain } from './verify-peer-chain.ts';
import * as x509 from './x509.ts';

describe('readDerTlv', () => {
  it('reads short and long lengths', () => {
    assert.equal(readDerTlv(new Uint8Array([0x04, 0x01, 0xaa]), 0).content.length, 1);
    const long = new Uint8Array([0x04, 0x81, 0x80, ...new Array(128).fill(0)]);
    assert.equal(readDerTlv(long, 0).content.length, 128);
  });
  it('refuses indefinite, non-minimal and overrunning lengths, and multi-byte tags', () => {
    assert.throws(() => readDerTlv(new Uint8Array([0x30, 0x80, 0, 0]), 0), DerError);
    assert.throws(() => readDerTlv(new Uint8Array([0x04, 0x81, 0x01, 0xaa]), 0), DerError);
    assert.throws(() => readDerTlv(new Uint8Array([0x04, 0x05, 0xaa]), 0), DerError);
    assert.throws(() => readDerTlv(new Uint8Array([0x1f, 0x81, 0x01, 0x00]), 0), DerError);
  });
  it('decodes OIDs', () => {
    assert.equal(decodeOid(new Uint8Array([0x55, 0x1d, 0x11])), '2.5.29.17');
    assert.equal(decodeOid(new Uint8Array([0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02])), '1.3.6.1.5.5.7.3.2');
  });
});

describe('parseCert', () => {
  it('agrees with OpenSSL on validity, CA flag and fingerprint', async () => {
    const pki = await makePki();
    const leaf = await pki.leaf();
    for (const der of [pki.root.der, pki.intermediate.der, leaf.der]) {
      const ours = parseCert(der);
      const theirs = new NodeX509(der);
      assert.equal(ours.notBefore, theirs.validFromDate.getTime());
      assert.equal(ours.notAfter, theirs.validToDate.getTime());
      assert.equal(ours.isCa, theirs.ca);
      assert.equal(ours.fingerprint, theirs.fingerprint256.replaceAll(':', '').toLowerCase());
    }
  });
  it('reads keyUsage bits like the generator wrote them', async () => {
    const pki = await makePki();
    const flags = x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.decipherOnly;
    const leaf = await pki.leaf({ keyUsage: flags });
    assert.equal(parseCert(leaf.der).keyUsage, flags);
  });
  it('refuses trailing bytes after the certificate', async () => {
    const pki = await makePki();
    const leaf = await pki.leaf();
    const padded = new Uint8Array([...leaf.der, 0x00]);
    assert.throws(() => parseCert(padded), DerError);
    const r = verifyPeerChain([padded, pki.intermediate.der], parseTrustBundle(pki.root.pem), { trustDomain: 'td.test', now: Date.now() });
    assert.equal(r.ok ? 'ok' : r.reason, 'malformed_cert');
  });
  it('refuses a constructed URI SAN and a SAN with trailing bytes', async () => {
    const pki = await makePki();
    const bundle = parseTrustBundle(pki.root.pem);
    const constructed = await pki.leaf({ san: new x509.Extension('2.5.29.17', true, new Uint8Array([0x30, 0x04, 0xa6, 0x02, 0x41, 0x42])) });
    const trailing = await pki.leaf({ san: new x509.Extension('2.5.29.17', true, new Uint8Array([...new Uint8Array(rawSan([{ kind: 6, value: 'spiffe://td.test/ns/a/sa/b' }]).value), 0x00])) });
    for (const leaf of [constructed, trailing]) {
      const r = verifyPeerChain(pki.chainOf(leaf), bundle, { trustDomain: 'td.test', now: Date.now() });
      assert.equal(r.ok ? 'ok' : r.reason, 'malformed_cert');
    }
  });
});
