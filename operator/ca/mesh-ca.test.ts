// The mesh CA: the SVID profile, CSR handling, TTLs, Secret round trip, supplied roots, rotation with overlap.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate as NodeX509, type webcrypto } from 'node:crypto';
import { MeshCa } from './mesh-ca.ts';
import { CaError } from './errors.ts';
import { makeCsr, opensslVerdict } from './testing/csr.ts';
import * as x509 from './x509.ts';

const TD = 'td.test';
const ID = { namespace: 'shop', serviceAccount: 'web' };
const SPIFFE = `spiffe://${TD}/ns/shop/sa/web`;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function certsOf(chainPem: string): x509.X509Certificate[] {
  return x509.PemConverter.decode(chainPem).map((d) => new x509.X509Certificate(d));
}

/** Does `chainPem` (leaf first) chain to one of the roots in `bundlePem`? Signatures only, via OpenSSL's X509_verify. */
function chainsTo(chainPem: string, bundlePem: string): boolean {
  const chain = x509.PemConverter.decode(chainPem).map((d) => new NodeX509(Buffer.from(d)));
  const roots = x509.PemConverter.decode(bundlePem).map((d) => new NodeX509(Buffer.from(d))).filter((c) => c.issuer === c.subject);
  const [leaf, inter] = chain;
  return !!leaf && !!inter && leaf.verify(inter.publicKey) && roots.some((r) => inter.verify(r.publicKey));
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof CaError && err.code === code);
}

describe('MeshCa', () => {
  let ca: MeshCa;
  let now = Date.parse('2026-11-20T12:00:00Z');
  const clock = () => now;

  before(async () => {
    ca = await MeshCa.create({ trustDomain: TD, now: clock });
  });

  it('issues an X.509-SVID with the SPIFFE profile', async () => {
    const { csrPem } = await makeCsr();
    const svid = await ca.issue(csrPem, ID);
    const [leaf, inter] = certsOf(svid.certChainPem);
    assert.ok(leaf && inter);
    assert.equal(svid.spiffeId, SPIFFE);
    assert.equal(leaf.subject, '', 'no subject: the identity lives in the SAN only');
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
    assert.deepEqual(san?.names.toJSON(), [{ type: 'url', value: SPIFFE }]);
    assert.equal(san?.critical, true, 'SAN critical because the subject is empty');
    const bc = leaf.getExtension(x509.BasicConstraintsExtension);
    assert.equal(bc?.ca, false);
    const ku = leaf.getExtension(x509.KeyUsagesExtension);
    assert.equal(ku?.critical, true);
    assert.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature);
    assert.deepEqual([...(leaf.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? [])], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    assert.equal(leaf.notAfter.getTime(), now + DAY, 'default TTL 24 h');
    assert.equal(leaf.notBefore.getTime(), now - 60_000, 'backdated 60 s for clock skew');
    assert.ok(svid.serialNumber.length <= 40 && /^[0-7]/.test(svid.serialNumber), 'positive serial of at most 20 octets');
    assert.ok(chainsTo(svid.certChainPem, ca.bundle().rootsPem));
    assert.equal(inter.getExtension(x509.BasicConstraintsExtension)?.pathLength, 0);
  });

  it('produces chains OpenSSL accepts as TLS client certificates', async () => {
    now = Date.now();
    try {
      const fresh = await MeshCa.create({ trustDomain: TD });
      const { csrPem, keyPem } = await makeCsr();
      const svid = await fresh.issue(csrPem, ID);
      assert.deepEqual(await opensslVerdict(svid.certChainPem, keyPem, fresh.bundle().rootsPem), { authorized: true, error: undefined });
    } finally {
      now = Date.parse('2026-11-20T12:00:00Z');
    }
  });

  it('serial numbers are random', async () => {
    const { csrPem } = await makeCsr();
    const a = await ca.issue(csrPem, ID);
    const b = await ca.issue(csrPem, ID);
    assert.notEqual(a.serialNumber, b.serialNumber);
  });

  it('takes the identity from the request, never the CSR subject', async () => {
    const { csrPem } = await makeCsr({ name: 'CN=admin, O=system:masters' });
    const [leaf] = certsOf((await ca.issue(csrPem, ID)).certChainPem);
    assert.equal(leaf?.subject, '');
  });

  it('accepts a CSR whose SAN is exactly the authorized identity', async () => {
    const { csrPem } = await makeCsr({ san: [SPIFFE] });
    assert.equal((await ca.issue(csrPem, ID)).spiffeId, SPIFFE);
  });

  it('refuses a CSR asking for another SAN', async () => {
    await rejectsWith(ca.issue((await makeCsr({ san: [`spiffe://${TD}/ns/kube-system/sa/admin`] })).csrPem, ID), 'NM_ERR_CA_CSR_SAN_MISMATCH');
    await rejectsWith(ca.issue((await makeCsr({ san: [SPIFFE, `spiffe://${TD}/ns/shop/sa/db`] })).csrPem, ID), 'NM_ERR_CA_CSR_SAN_MISMATCH');
  });

  it('refuses a CSR whose self-signature does not verify', async () => {
    const { csrPem } = await makeCsr();
    const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
    der[der.length - 1]! ^= 0x01;
    await rejectsWith(ca.issue(x509.PemConverter.encode(der, 'CERTIFICATE REQUEST'), ID), 'NM_ERR_CA_CSR_INVALID');
  });

  it('refuses garbage and keys other than P-256', async () => {
    await rejectsWith(ca.issue('not a csr', ID), 'NM_ERR_CA_CSR_INVALID');
    await rejectsWith(ca.issue((await makeCsr({ curve: 'P-384' })).csrPem, ID), 'NM_ERR_CA_CSR_INVALID');
  });

  it('refuses invalid identities', async () => {
    const { csrPem } = await makeCsr();
    await rejectsWith(ca.issue(csrPem, { namespace: 'shop', serviceAccount: 'web/../admin' }), 'NM_ERR_CA_IDENTITY_INVALID');
    await rejectsWith(ca.issue(csrPem, { namespace: 'Shop', serviceAccount: 'web' }), 'NM_ERR_CA_IDENTITY_INVALID');
  });

  it('honours TTLs down to one minute and refuses shorter ones', async () => {
    const { csrPem } = await makeCsr();
    const svid = await ca.issue(csrPem, ID, 5 * 60_000);
    assert.equal(svid.notAfter.getTime(), now + 5 * 60_000);
    await rejectsWith(ca.issue(csrPem, ID, 30_000), 'NM_ERR_CA_TTL_INVALID');
    await assert.rejects(MeshCa.create({ trustDomain: TD, leafTtlMs: 1000 }), CaError);
  });

  it('never lets a leaf outlive its intermediate', async () => {
    const shortCa = await MeshCa.create({ trustDomain: TD, now: clock, intermediateTtlMs: 2 * HOUR });
    const svid = await shortCa.issue((await makeCsr()).csrPem, ID);
    assert.equal(svid.notAfter.getTime(), now + 2 * HOUR);
  });

  it('round-trips through Secret data', async () => {
    const data = await ca.toSecretData();
    assert.ok(data['ca.key'] && data['intermediate.key'] && data['trust-domain']);
    const restored = await MeshCa.fromSecretData(data, { trustDomain: TD, now: clock });
    assert.equal(restored.bundle().pem, ca.bundle().pem);
    const svid = await restored.issue((await makeCsr()).csrPem, ID);
    assert.ok(chainsTo(svid.certChainPem, ca.bundle().rootsPem));
    await assert.rejects(MeshCa.fromSecretData(data, { trustDomain: 'other.test' }), (e: unknown) => (e as CaError).code === 'NM_ERR_CA_TRUST_DOMAIN_CHANGED');
  });

  it('generates a root when the Secret is absent or empty', async () => {
    const a = await MeshCa.fromSecretData(undefined, { trustDomain: TD });
    const b = await MeshCa.fromSecretData({}, { trustDomain: TD });
    assert.notEqual(a.bundle().rootsPem, b.bundle().rootsPem);
  });

  describe('user-supplied root', () => {
    let rootPem: string;
    let rootKeyPem: string;
    before(async () => {
      const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const root = await x509.X509CertificateGenerator.createSelfSigned({
        name: 'CN=Corp Root, O=Example',
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + 3650 * DAY),
        extensions: [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      rootPem = root.toString('pem') + '\n';
      rootKeyPem = x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: await crypto.subtle.exportKey('pkcs8', keys.privateKey) }]) + '\n';
    });

    it('is used as the root (P-384 accepted), from a kubernetes.io/tls Secret too', async () => {
      const direct = await MeshCa.create({ trustDomain: TD, root: { certPem: rootPem, keyPem: rootKeyPem } });
      assert.equal(direct.bundle().rootsPem.trim(), rootPem.trim());
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      const fromTls = await MeshCa.fromSecretData({ 'tls.crt': b64(rootPem), 'tls.key': b64(rootKeyPem) }, { trustDomain: TD });
      assert.equal(fromTls.bundle().rootsPem.trim(), rootPem.trim());
      const { csrPem, keyPem } = await makeCsr();
      const svid = await fromTls.issue(csrPem, ID);
      assert.deepEqual(await opensslVerdict(svid.certChainPem, keyPem, fromTls.bundle().rootsPem), { authorized: true, error: undefined });
    });

    it('refuses a key that does not belong to the root', async () => {
      const { keyPem } = await makeCsr();
      await assert.rejects(MeshCa.create({ trustDomain: TD, root: { certPem: rootPem, keyPem } }), (e: unknown) => (e as CaError).code === 'NM_ERR_CA_ROOT_INVALID');
    });
  });

  it('inspect() reports expiries and warns within 60 days', async () => {
    let t = Date.now();
    const c = await MeshCa.create({ trustDomain: TD, now: () => t, intermediateTtlMs: 90 * DAY });
    const report = c.inspect();
    assert.equal(report.certificates.filter((x) => x.role === 'root').length, 1);
    assert.deepEqual(report.warnings, []);
    t += 40 * DAY;
    const later = c.inspect();
    assert.equal(later.warnings.length, 1);
    assert.match(later.warnings[0]!, /intermediate .* expires in 50 days/);
  });

  it('rotation: add root → switch issuer → drop old root, with overlap', async () => {
    const c = await MeshCa.create({ trustDomain: TD });
    const oldCsr = await makeCsr();
    const oldSvid = await c.issue(oldCsr.csrPem, ID);
    const { rootFingerprint } = await c.rotateAddRoot();
    const overlapBundle = c.bundle();
    assert.equal(x509.PemConverter.decode(overlapBundle.rootsPem).length, 2);
    assert.equal(x509.PemConverter.decode(overlapBundle.intermediatesPem).length, 2, 'the new intermediate is published before it issues');
    // Still issuing from the old chain until the switch.
    const stillOld = await c.issue((await makeCsr()).csrPem, ID);
    assert.equal(certsOf(stillOld.certChainPem)[1]!.subject, certsOf(oldSvid.certChainPem)[1]!.subject);
    c.rotateSwitchIssuer();
    const newCsr = await makeCsr();
    const newSvid = await c.issue(newCsr.csrPem, ID);
    const duringOverlap = c.bundle();
    assert.ok(chainsTo(oldSvid.certChainPem, duringOverlap.rootsPem), 'old chain verifies during overlap');
    assert.ok(chainsTo(newSvid.certChainPem, duringOverlap.rootsPem), 'new chain verifies during overlap');
    // OpenSSL agrees, in a real handshake.
    assert.equal((await opensslVerdict(oldSvid.certChainPem, oldCsr.keyPem, duringOverlap.rootsPem)).authorized, true);
    assert.equal((await opensslVerdict(newSvid.certChainPem, newCsr.keyPem, duringOverlap.rootsPem)).authorized, true);
    assert.equal(c.inspect().certificates.find((x) => x.role === 'root' && x.issuing)?.fingerprint, rootFingerprint);
    // Persisted mid-rotation and restored, the state is the same.
    const restored = await MeshCa.fromSecretData(await c.toSecretData(), { trustDomain: TD });
    assert.equal(restored.bundle().pem, duringOverlap.pem);
    const { dropped } = await c.rotateDropRoot();
    assert.equal(dropped.length, 1);
    const after = c.bundle();
    assert.equal(x509.PemConverter.decode(after.rootsPem).length, 1);
    assert.equal(x509.PemConverter.decode(after.intermediatesPem).length, 1, 'the old intermediate leaves with its root');
    assert.equal(chainsTo(oldSvid.certChainPem, after.rootsPem), false, 'old chain no longer verifies');
    assert.ok(chainsTo(newSvid.certChainPem, after.rootsPem));
    assert.deepEqual(await opensslVerdict(oldSvid.certChainPem, oldCsr.keyPem, after.rootsPem), { authorized: false, error: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
    assert.equal((await opensslVerdict(newSvid.certChainPem, newCsr.keyPem, after.rootsPem)).authorized, true);
    await assert.rejects(c.rotateDropRoot(), CaError);
    assert.throws(() => c.rotateSwitchIssuer(), CaError);
  });

  it('intermediate rotation publishes first, then switches', async () => {
    const c = await MeshCa.create({ trustDomain: TD });
    await c.rotateIntermediate();
    assert.equal(x509.PemConverter.decode(c.bundle().intermediatesPem).length, 2);
    await assert.rejects(c.rotateAddRoot(), CaError);
    c.rotateSwitchIssuer();
    // Retired intermediate stays in the bundle: leaves it signed are still live.
    assert.equal(x509.PemConverter.decode(c.bundle().intermediatesPem).length, 2);
    assert.equal(x509.PemConverter.decode(c.bundle().rootsPem).length, 1);
  });
});
