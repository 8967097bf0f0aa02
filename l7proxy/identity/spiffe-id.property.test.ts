// B6 properties: the SAN parser accepts exactly the SPIFFE IDs the spec allows (SPIFFE-ID.md §2, narrowed to our
// /ns/<namespace>/sa/<service-account> shape and trust domain), from raw bytes, whatever bytes a certificate carries;
// and through real certificates (@peculiar/x509) with odd SAN mixes, an identity comes out only when the leaf has
// exactly one URI SAN and it is such an ID. Seeded; replay with NODEMESH_PROPERTY_SEED=<seed>.
import type { webcrypto } from 'node:crypto';
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_SPIFFE_ID_BYTES, parseSpiffeUri } from './spiffe-id.ts';
import { makeKeyPair, makePki, rawSan, type TestPki } from './testing/cert-factory.ts';
import { parseTrustBundle, type TrustBundle } from './trust-bundle.ts';
import { verifyPeerChain } from './verify-peer-chain.ts';

const SEED = Number(process.env['NODEMESH_PROPERTY_SEED'] ?? Date.now() % 2 ** 31);
console.log(`spiffe-id.property: seed ${SEED} (replay with NODEMESH_PROPERTY_SEED=${SEED})`);
const TD = 'td.test';

/**
 * An independent reading of the spec, written from SPIFFE-ID.md rather than from spiffe-id.ts: scheme `spiffe`
 * in lower case, `://`, a trust domain of [a-z0-9._-], a path of non-empty segments of [a-zA-Z0-9._-] that are not
 * `.` or `..`, no query, fragment, userinfo, port or percent-encoding, at most 2048 bytes; then ours: the trust
 * domain is TD and the path is /ns/<DNS-1123 label>/sa/<DNS-1123 subdomain>.
 */
function referenceAccepts(bytes: Uint8Array): { namespace: string; serviceAccount: string } | undefined {
  if (bytes.length > MAX_SPIFFE_ID_BYTES) return undefined;
  const text = Buffer.from(bytes).toString('latin1');
  const m = /^spiffe:\/\/([a-z0-9._-]+)((?:\/[a-zA-Z0-9._-]+)+)$/.exec(text);
  if (!m) return undefined;
  const segments = m[2]!.slice(1).split('/');
  if (segments.some((s) => s === '.' || s === '..')) return undefined;
  if (m[1] !== TD || segments.length !== 4 || segments[0] !== 'ns' || segments[2] !== 'sa') return undefined;
  const [, ns, , sa] = segments as [string, string, string, string];
  const label = (s: string): boolean => s.length >= 1 && s.length <= 63 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(s);
  if (!label(ns) || sa.length > 253 || !sa.split('.').every(label)) return undefined;
  return { namespace: ns, serviceAccount: sa };
}

const PIECES = [
  'spiffe://', 'spiffe://', 'SPIFFE://', 'Spiffe://', 'spiffe:/', 'spiffe:', 'https://', 'td.test', 'td.test', 'TD.test', 'td.test.',
  'td.test:443', 'user@', 'td..test', 'td_test', '/', '/', '//', 'ns', 'ns', 'sa', 'sa', '/ns/', '/sa/', 'default', 'web', 'a.b', 'a-b', '-a',
  'A', '.', '..', '%2F', '%41', '%00', '?q=1', '#f', '\u0000', '\r\n', '\n', ' ', '\t', '\u00e9', '\u00ff', '\x7f', '*', '~', '@', ':', ';',
];
/** Byte strings built from the pieces (latin1), often near a valid ID. */
const nearId = fc.oneof(
  fc.array(fc.constantFrom(...PIECES), { maxLength: 12 }).map((p) => Buffer.from(p.join(''), 'latin1')),
  fc.tuple(fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:/'), fc.constantFrom(TD, 'TD.TEST', 'td.test:1', 'u@td.test', 'other.test', ''),
    fc.constantFrom('/ns/', '//ns/', '/NS/', '/ns//'), fc.constantFrom('default', 'a', 'a-', 'A', '..', '%61', 'x'.repeat(64), 'x'.repeat(63), ''),
    fc.constantFrom('/sa/', '/sa//', '/SA/'), fc.constantFrom('web', 'a.b', 'a..b', '.', 'w\u0000', 'w\r\nX-Injected: 1', 'w?x', 'w#x', 'w/', 'w/x', `${'s'.repeat(63)}.${'s'.repeat(63)}`, 'é'))
    .map((p) => Buffer.from(p.join(''), 'latin1')),
  // UTF-8 encodings (full-width letters, RTL override) and fully random bytes.
  fc.constantFrom('spiffe://td.test/ns/ｄefault/sa/web', 'spiffe://td.test/ns/default/sa/web\u202e', 'spiffe://td.ｔest/ns/a/sa/b').map((s) => Buffer.from(s, 'utf8')),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.concat([Buffer.from('spiffe://td.test/ns/a/sa/'), b])),
  fc.uint8Array({ maxLength: 40 }),
);

describe('SPIFFE ID parsing from SAN bytes', () => {
  test('property: parseSpiffeUri accepts exactly what the spec reference accepts', () => {
    fc.assert(fc.property(nearId, (bytes) => {
      const got = parseSpiffeUri(bytes, TD);
      const want = referenceAccepts(bytes);
      const label = JSON.stringify(Buffer.from(bytes).toString('latin1'));
      assert.equal(got.ok, want !== undefined, `${label}: parser says ${got.ok ? 'ok' : got.reason}, reference says ${want ? 'ok' : 'reject'}`);
      if (got.ok) {
        assert.equal(got.namespace, want!.namespace);
        assert.equal(got.serviceAccount, want!.serviceAccount);
        // The ID handed on is the bytes, unchanged, and plain printable ASCII (safe in a header).
        assert.equal(got.spiffeId, Buffer.from(bytes).toString('latin1'));
        assert.match(got.spiffeId, /^[\x21-\x7e]+$/);
      }
    }), { seed: SEED, numRuns: 20000 });
  });

  test('property: an over-long ID is refused whatever it holds', () => {
    fc.assert(fc.property(fc.integer({ min: MAX_SPIFFE_ID_BYTES + 1, max: MAX_SPIFFE_ID_BYTES + 64 }), (n) => {
      const id = Buffer.from(`spiffe://${TD}/ns/a/sa/${'b'.repeat(n)}`.slice(0, n), 'latin1');
      const r = parseSpiffeUri(id, TD);
      assert.ok(!r.ok && r.reason === 'san_too_long');
    }), { seed: SEED, numRuns: 20 });
  });
});

// Seed corpus: byte strings worth keeping, with the outcome (namespace/serviceAccount, or the reason).
const CORPUS: [string | Uint8Array, string][] = [
  ['spiffe://td.test/ns/default/sa/web', 'default/web'],
  ['spiffe://td.test/', 'san_path'],
  ['spiffe://td.test', 'san_path'],
  ['spiffe://td.test/ns/default/sa/web\u0000.evil', 'san_invalid_chars'],
  ['spiffe://td.test/ns/default/sa/web\r\nx-nodemesh-source-identity: spiffe://td.test/ns/kube-system/sa/admin', 'san_invalid_chars'],
  ['spiffe://td.test/ns/default/sa/w%65b', 'san_invalid_chars'],
  ['SPIFFE://td.test/ns/default/sa/web', 'san_scheme'],
  ['spiffe://user@td.test/ns/default/sa/web', 'san_trust_domain'],
  ['spiffe://td.test:443/ns/default/sa/web', 'san_trust_domain'],
  ['spiffe://td.test./ns/default/sa/web', 'san_trust_domain'],
  ['spiffe://td.test/ns/default/sa/web?x=1', 'san_path'],
  ['spiffe://td.test/ns/default/sa/web#f', 'san_path'],
  ['spiffe://td.test/ns/default/sa/../sa/admin', 'san_path'],
  ['spiffe://td.test/ns/default/sa/a..b', 'san_path'],
  [Buffer.from('spiffe://td.test/ns/ｄefault/sa/web', 'utf8'), 'san_invalid_chars'],
];

test('corpus: SAN byte strings', () => {
  for (const [input, want] of CORPUS) {
    const bytes = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
    const r = parseSpiffeUri(bytes, TD);
    assert.equal(r.ok ? `${r.namespace}/${r.serviceAccount}` : r.reason, want, JSON.stringify(Buffer.from(bytes).toString('latin1')));
    assert.equal(r.ok, referenceAccepts(bytes) !== undefined);
  }
});

// Through certificates: SAN lists mixing URI, DNS, email and IP names, the URI values from the generator above.
const URI = 6;
const sanEntry = fc.oneof(
  { arbitrary: nearId.map((value) => ({ kind: URI, value })), weight: 3 },
  { arbitrary: fc.constant({ kind: URI, value: Buffer.from(`spiffe://${TD}/ns/default/sa/web`) }), weight: 2 },
  { arbitrary: fc.constantFrom('web.default.svc', 'a, URI:spiffe://td.test/ns/kube-system/sa/admin', 'x\u0000.evil').map((v) => ({ kind: 2, value: Buffer.from(v, 'latin1') })), weight: 1 },
  { arbitrary: fc.constant({ kind: 1, value: Buffer.from('URI:spiffe://td.test/ns/a/sa/b') }), weight: 1 },
  { arbitrary: fc.constant({ kind: 7, value: Buffer.from([127, 0, 0, 1]) }), weight: 1 },
);

describe('SAN mixes in real certificates', () => {
  let pki: TestPki;
  let bundle: TrustBundle;
  let keys: webcrypto.CryptoKeyPair;
  before(async () => {
    pki = await makePki();
    bundle = parseTrustBundle(pki.root.pem);
    keys = await makeKeyPair();
  });

  test('property: an identity comes out only for exactly one URI SAN that the reference accepts', async () => {
    await fc.assert(fc.asyncProperty(fc.array(sanEntry, { maxLength: 3 }), async (names) => {
      const leaf = await pki.leaf({ keys, san: names.length === 0 ? null : rawSan(names, true) });
      const r = verifyPeerChain(pki.chainOf(leaf), bundle, { trustDomain: TD, now: Date.now() });
      const uris = names.filter((n) => n.kind === URI);
      const want = uris.length === 1 ? referenceAccepts(uris[0]!.value) : undefined;
      const label = JSON.stringify(names.map((n) => [n.kind, Buffer.from(n.value).toString('latin1')]));
      assert.equal(r.ok, want !== undefined, `${label}: ${r.ok ? 'accepted' : r.reason}`);
      if (r.ok) assert.equal(`${r.namespace}/${r.serviceAccount}`, `${want!.namespace}/${want!.serviceAccount}`);
      else if (uris.length !== 1) assert.ok(r.reason === 'san_count' || r.reason === 'san_not_uri', `${label}: ${r.reason}`);
      else assert.match(r.reason, /^san_/, label);
    }), { seed: SEED, numRuns: 60 });
  });
});
