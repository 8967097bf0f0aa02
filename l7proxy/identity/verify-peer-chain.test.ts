// The B6 certificate matrix: every defect gets its own reason; the valid SVID passes with its identity.
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { makeIntermediate, makeLeaf, makePki, makeRoot, rawSan, type TestCert, type TestPki } from './testing/cert-factory.ts';
import { parseTrustBundle, TrustBundleError, type TrustBundle } from './trust-bundle.ts';
import { verifyPeerChain, type VerifyPeerOptions } from './verify-peer-chain.ts';
import { createVerifyCounters, countVerifyOutcome, VERIFY_REASONS } from './verify-reasons.ts';
import * as x509 from './x509.ts';

const TD = 'td.test';
const HOUR = 3_600_000;
const URI = 6;
const DNS = 2;

describe('verifyPeerChain', () => {
  let pki: TestPki;
  let bundle: TrustBundle;
  const opts = (): VerifyPeerOptions => ({ trustDomain: TD, now: Date.now() });

  before(async () => {
    pki = await makePki();
    bundle = parseTrustBundle(pki.root.pem);
  });

  async function reasonOf(chain: Uint8Array[] | Promise<TestCert>, o: Partial<VerifyPeerOptions> = {}): Promise<string> {
    const der = Array.isArray(chain) ? chain : pki.chainOf(await chain);
    const r = verifyPeerChain(der, bundle, { ...opts(), ...o });
    return r.ok ? `ok:${r.spiffeId}` : r.reason;
  }
  const leafWithUri = (uri: string | Uint8Array) => pki.leaf({ san: rawSan([{ kind: URI, value: uri }], true) });

  it('accepts a valid SVID and returns its identity', async () => {
    const leaf = await pki.leaf({ spiffeId: `spiffe://${TD}/ns/shop/sa/cart.v2` });
    const r = verifyPeerChain(pki.chainOf(leaf), bundle, opts());
    assert.equal(r.ok, true);
    assert.ok(r.ok);
    assert.equal(r.spiffeId, `spiffe://${TD}/ns/shop/sa/cart.v2`);
    assert.equal(r.namespace, 'shop');
    assert.equal(r.serviceAccount, 'cart.v2');
    assert.equal(r.rootFingerprint, bundle.fingerprints[0]);
  });

  it('accepts a leaf presented without its intermediate when the bundle knows the intermediate', async () => {
    const withInter = parseTrustBundle([pki.root.pem, pki.intermediate.pem]);
    const leaf = await pki.leaf();
    assert.equal(verifyPeerChain([leaf.der], withInter, opts()).ok, true);
    assert.equal(verifyPeerChain([leaf.der], bundle, opts()).ok, false);
  });

  // Each row: a defect, and the one reason it must produce.
  const matrix: Array<[string, () => Promise<Uint8Array[] | TestCert>, string, Partial<VerifyPeerOptions>?]> = [
    ['no certificate', async () => [], 'no_cert'],
    ['garbage bytes', async () => [new Uint8Array([0x30, 0x03, 1, 2, 3])], 'malformed_cert'],
    ['wrong CA (foreign root + intermediate)', async () => {
      const other = await makePki('other');
      const leaf = await other.leaf();
      return other.chainOf(leaf);
    }, 'untrusted_chain'],
    ['wrong CA presenting its own root too', async () => {
      const other = await makePki('other');
      const leaf = await other.leaf();
      return [...other.chainOf(leaf), other.root.der];
    }, 'untrusted_chain'],
    ['unknown intermediate (not presented)', async () => {
      const inter2 = await makeIntermediate(pki.root, { name: 'CN=unsent intermediate' });
      return [(await makeLeaf(inter2)).der];
    }, 'unknown_issuer'],
    ['forged intermediate with our name but another key', async () => {
      const fakeRoot = await makeRoot({ name: 'CN=test root' });
      const forged = await makeIntermediate(fakeRoot, { name: 'CN=test intermediate' });
      return [(await makeLeaf(forged)).der, forged.der];
    }, 'bad_signature'],
    ['expired leaf', () => pki.leaf({ notBefore: new Date(Date.now() - 3 * HOUR), notAfter: new Date(Date.now() - HOUR) }), 'expired'],
    ['not yet valid leaf', () => pki.leaf({ notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) }), 'not_yet_valid'],
    ['leaf CA:true', () => pki.leaf({ ca: true }), 'leaf_is_ca'],
    ['leaf keyCertSign', () => pki.leaf({ keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }), 'leaf_key_cert_sign'],
    ['leaf cRLSign', () => pki.leaf({ keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign }), 'leaf_crl_sign'],
    ['leaf without keyUsage', () => pki.leaf({ keyUsage: null }), 'leaf_key_usage'],
    ['EKU emailProtection only', () => pki.leaf({ eku: [x509.ExtendedKeyUsage.emailProtection] }), 'eku_missing_client_auth'],
    ['EKU clientAuth only, checked as a server', () => pki.leaf({ eku: [x509.ExtendedKeyUsage.clientAuth] }), 'eku_missing_server_auth', { peerRole: 'server' }],
    ['no SAN at all', () => pki.leaf({ san: null }), 'san_count'],
    ['empty SAN sequence', () => pki.leaf({ san: rawSan([], true) }), 'san_count'],
    ['two URI SANs', () => pki.leaf({ san: rawSan([{ kind: URI, value: `spiffe://${TD}/ns/a/sa/b` }, { kind: URI, value: `spiffe://${TD}/ns/a/sa/admin` }], true) }), 'san_count'],
    ['DNS SAN only', () => pki.leaf({ san: rawSan([{ kind: DNS, value: 'web.default.svc' }]) }), 'san_not_uri'],
    ['https scheme', () => leafWithUri(`https://${TD}/ns/a/sa/b`), 'san_scheme'],
    ['uppercase SPIFFE scheme', () => leafWithUri(`SPIFFE://${TD}/ns/a/sa/b`), 'san_scheme'],
    ['wrong trust domain', () => leafWithUri('spiffe://evil.test/ns/a/sa/b'), 'san_trust_domain'],
    ['trust domain as suffix', () => leafWithUri(`spiffe://${TD}.evil/ns/a/sa/b`), 'san_trust_domain'],
    ['userinfo in authority', () => leafWithUri(`spiffe://x@${TD}/ns/a/sa/b`), 'san_trust_domain'],
    ['port in authority', () => leafWithUri(`spiffe://${TD}:443/ns/a/sa/b`), 'san_trust_domain'],
    ['root path spiffe://td/', () => leafWithUri(`spiffe://${TD}/`), 'san_path'],
    ['root path spiffe://td', () => leafWithUri(`spiffe://${TD}`), 'san_path'],
    ['path not ns/sa', () => leafWithUri(`spiffe://${TD}/workload/a`), 'san_path'],
    ['dot-dot segment', () => leafWithUri(`spiffe://${TD}/ns/a/sa/b/../../ns/kube-system/sa/admin`), 'san_path'],
    ['uppercase namespace', () => leafWithUri(`spiffe://${TD}/ns/A/sa/b`), 'san_path'],
    ['query string', () => leafWithUri(`spiffe://${TD}/ns/a/sa/b?x=1`), 'san_path'],
    ['NUL in SAN', () => leafWithUri(Buffer.from(`spiffe://${TD}/ns/a/sa/b\0.evil`, 'latin1')), 'san_invalid_chars'],
    ['CRLF in SAN', () => leafWithUri(Buffer.from(`spiffe://${TD}/ns/a/sa/b\r\nx-spiffe-id: admin`, 'latin1')), 'san_invalid_chars'],
    ['Unicode (UTF-8) in SAN', () => leafWithUri(Buffer.from(`spiffe://${TD}/ns/a/sa/bе`, 'utf8')), 'san_invalid_chars'],
    ['percent-encoding in SAN', () => leafWithUri(`spiffe://${TD}/ns/a/sa/%61dmin`), 'san_invalid_chars'],
    ['URI SAN over 2048 bytes', () => leafWithUri(`spiffe://${TD}/ns/a/sa/${'b'.repeat(2100)}`), 'san_too_long'],
    ['duplicate SAN extension', () => pki.leaf({ extra: [rawSan([{ kind: URI, value: `spiffe://${TD}/ns/kube-system/sa/admin` }])] }), 'duplicate_extension'],
    ['unknown critical extension', () => pki.leaf({ extra: [new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]))] }), 'unknown_critical_extension'],
    ['expired intermediate', async () => {
      const old = await makeIntermediate(pki.root, { notBefore: new Date(Date.now() - 10 * HOUR), notAfter: new Date(Date.now() - HOUR) });
      const leaf = await makeLeaf(old);
      return [leaf.der, old.der];
    }, 'intermediate_expired'],
    ['not yet valid intermediate', async () => {
      const early = await makeIntermediate(pki.root, { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 10 * HOUR) });
      return [(await makeLeaf(early)).der, early.der];
    }, 'intermediate_not_yet_valid'],
    ['issuer that is not a CA', async () => {
      const notCa = await makeIntermediate(pki.root, { ca: false });
      return [(await makeLeaf(notCa)).der, notCa.der];
    }, 'issuer_not_ca'],
    ['issuer without keyCertSign', async () => {
      const noSign = await makeIntermediate(pki.root, { keyUsage: x509.KeyUsageFlags.digitalSignature });
      return [(await makeLeaf(noSign)).der, noSign.der];
    }, 'issuer_key_usage'],
    ['path length exceeded (two intermediates under a pathLen 1 root)', async () => {
      const i1 = await makeIntermediate(pki.root, { name: 'CN=i1', pathLength: 1 });
      const i2 = await makeIntermediate(i1, { name: 'CN=i2' });
      return [(await makeLeaf(i2)).der, i2.der, i1.der];
    }, 'path_len_exceeded'],
    ['too many presented certificates', async () => Array.from({ length: 7 }, () => pki.intermediate.der), 'chain_too_long'],
    ['valid SVID, other identity than expected', () => pki.leaf(), 'identity_mismatch', { expectedSpiffeId: `spiffe://${TD}/ns/default/sa/other` }],
  ];

  for (const [name, make, expected, extra] of matrix) {
    it(`${name} → ${expected}`, async () => {
      const made = await make();
      const chain = Array.isArray(made) ? made : pki.chainOf(made);
      assert.equal(await reasonOf(chain, extra), expected);
    });
  }

  it('the matrix covers every reason verifyPeerChain can give (except TLS-layer and root validity ones)', () => {
    const covered = new Set(matrix.map(([, , r]) => r));
    const elsewhere = new Set(['tls_handshake_failed', 'root_expired']);
    const missing = VERIFY_REASONS.filter((r) => !covered.has(r) && !elsewhere.has(r));
    assert.deepEqual(missing, []);
  });

  it('refuses a chain ending at an expired root', async () => {
    const oldRoot = await makeRoot({ notBefore: new Date(Date.now() - 10 * HOUR), notAfter: new Date(Date.now() - HOUR) });
    const inter = await makeIntermediate(oldRoot);
    const r = verifyPeerChain([(await makeLeaf(inter)).der, inter.der], parseTrustBundle(oldRoot.pem), opts());
    assert.equal(r.ok ? 'ok' : r.reason, 'root_expired');
  });

  it('accepts a DNS SAN next to the one SPIFFE URI (SPIFFE allows other SAN types)', async () => {
    const leaf = await pki.leaf({ san: rawSan([{ kind: DNS, value: 'web' }, { kind: URI, value: `spiffe://${TD}/ns/a/sa/b` }]) });
    assert.equal(await reasonOf([...pki.chainOf(leaf)]), `ok:spiffe://${TD}/ns/a/sa/b`);
  });

  it('counts outcomes per reason', async () => {
    const counters = createVerifyCounters();
    countVerifyOutcome(counters, verifyPeerChain([], bundle, opts()));
    countVerifyOutcome(counters, verifyPeerChain(pki.chainOf(await pki.leaf()), bundle, opts()));
    assert.equal(counters.no_cert, 1);
    assert.equal(counters.ok, 1);
    assert.equal(counters.san_count, 0);
  });
});

describe('parseTrustBundle', () => {
  it('refuses a leaf in the bundle and an empty bundle', async () => {
    const pki = await makePki();
    const leaf = await pki.leaf();
    assert.throws(() => parseTrustBundle(leaf.pem), TrustBundleError);
    assert.throws(() => parseTrustBundle(''), TrustBundleError);
  });
  it('holds several roots during a rotation and splits off intermediates', async () => {
    const a = await makePki('a');
    const b = await makePki('b');
    const bundle = parseTrustBundle([a.root.pem + b.root.pem, a.intermediate.pem, a.root.pem]);
    assert.equal(bundle.roots.length, 2);
    assert.equal(bundle.intermediates.length, 1);
  });
});
