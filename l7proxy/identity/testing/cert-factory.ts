/** Test-only certificate factory: roots, intermediates and leaves with any defect a test needs (B6 matrix). */
import type { webcrypto } from 'node:crypto';
import * as x509 from '../x509.ts';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

/** ECDSA P-256 with SHA-256: the only algorithm the mesh issues. */
export const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate with its key pair. */
export interface TestCert {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  /** DER bytes. */
  der: Uint8Array;
  /** PEM of the certificate alone. */
  pem: string;
  /** PKCS#8 PEM of the private key. */
  keyPem: string;
}

/** Options shared by every certificate kind. */
export interface CertTimes {
  notBefore?: Date;
  notAfter?: Date;
}

const HOUR = 3_600_000;

/** Makes an extractable P-256 key pair. */
export async function makeKeyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** PKCS#8 PEM of a private key. */
export async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: der }]) + '\n';
}

async function finish(cert: x509.X509Certificate, keys: CryptoKeyPair): Promise<TestCert> {
  return { cert, keys, der: new Uint8Array(cert.rawData), pem: cert.toString('pem') + '\n', keyPem: await exportKeyPem(keys.privateKey) };
}

/** A self-signed root CA. */
export async function makeRoot(opts: CertTimes & { name?: string; pathLength?: number } = {}): Promise<TestCert> {
  const keys = await makeKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: opts.name ?? 'CN=test root',
    keys,
    signingAlgorithm: EC_ALG,
    notBefore: opts.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: opts.notAfter ?? new Date(Date.now() + 1000 * HOUR),
    extensions: [
      new x509.BasicConstraintsExtension(true, opts.pathLength, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return finish(cert, keys);
}

/** An intermediate CA signed by `parent`. */
export async function makeIntermediate(
  parent: TestCert,
  opts: CertTimes & { name?: string; pathLength?: number; ca?: boolean; keyUsage?: number } = {},
): Promise<TestCert> {
  const keys = await makeKeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    subject: opts.name ?? 'CN=test intermediate',
    issuer: parent.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: EC_ALG,
    notBefore: opts.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: opts.notAfter ?? new Date(Date.now() + 100 * HOUR),
    extensions: [
      new x509.BasicConstraintsExtension(opts.ca ?? true, opts.pathLength ?? 0, true),
      new x509.KeyUsagesExtension(opts.keyUsage ?? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(parent.keys.publicKey),
    ],
  });
  return finish(cert, keys);
}

/** A raw GeneralName for `rawSan`: context tag number and value bytes. */
export interface RawName {
  kind: number;
  value: Uint8Array | string;
}

/** DER-encodes a subjectAltName extension from raw names, so tests can embed NUL, CRLF or UTF-8 bytes. */
export function rawSan(names: RawName[], critical = false): x509.Extension {
  const entries = names.map((n) => tlv(0x80 | n.kind, typeof n.value === 'string' ? Buffer.from(n.value, 'latin1') : n.value));
  return new x509.Extension('2.5.29.17', critical, tlv(0x30, Buffer.concat(entries)));
}

function tlv(tag: number, content: Uint8Array): Uint8Array {
  const len = content.length;
  const header = len < 0x80 ? [tag, len] : len < 0x100 ? [tag, 0x81, len] : [tag, 0x82, len >> 8, len & 0xff];
  return Buffer.concat([Buffer.from(header), content]);
}

/** Leaf options: by default a correct X.509-SVID; each field swaps in one defect. */
export interface LeafOptions extends CertTimes {
  /** The URI SAN; ignored when `san` is given. */
  spiffeId?: string;
  /** Complete SAN extension (from `rawSan`), or null for none. */
  san?: x509.Extension | null;
  /** basicConstraints cA (default false); null leaves the extension out. */
  ca?: boolean | null;
  /** keyUsage bits (default digitalSignature, critical); null leaves the extension out. */
  keyUsage?: number | null;
  /** EKU OIDs (default serverAuth + clientAuth); null leaves the extension out. */
  eku?: string[] | null;
  /** Extra extensions appended as given. */
  extra?: x509.Extension[];
  /** Reuse this key pair instead of a fresh one. */
  keys?: CryptoKeyPair;
}

/** A leaf signed by `issuer`. */
export async function makeLeaf(issuer: TestCert, opts: LeafOptions = {}): Promise<TestCert> {
  const keys = opts.keys ?? (await makeKeyPair());
  const extensions: x509.Extension[] = [];
  if (opts.ca !== null) extensions.push(new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true));
  if (opts.keyUsage !== null) extensions.push(new x509.KeyUsagesExtension(opts.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true));
  if (opts.eku !== null) extensions.push(new x509.ExtendedKeyUsageExtension(opts.eku ?? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]));
  const san = opts.san === undefined ? rawSan([{ kind: 6, value: opts.spiffeId ?? 'spiffe://td.test/ns/default/sa/web' }], true) : opts.san;
  if (san) extensions.push(san);
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
  extensions.push(...(opts.extra ?? []));
  const cert = await x509.X509CertificateGenerator.create({
    subject: '',
    issuer: issuer.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: EC_ALG,
    notBefore: opts.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: opts.notAfter ?? new Date(Date.now() + HOUR),
    extensions,
  });
  return finish(cert, keys);
}

/** A ready-made mesh PKI: root → intermediate, and a helper for valid leaves under it. */
export interface TestPki {
  root: TestCert;
  intermediate: TestCert;
  /** Leaf signed by the intermediate. */
  leaf(opts?: LeafOptions): Promise<TestCert>;
  /** [leaf, intermediate] as DER, the way a peer presents it. */
  chainOf(leaf: TestCert): Uint8Array[];
  /** PEM chain leaf + intermediate, for `tls` `cert`. */
  chainPemOf(leaf: TestCert): string;
}

/** Makes a root (pathLength 1) and an intermediate (pathLength 0). */
export async function makePki(name = 'test'): Promise<TestPki> {
  const root = await makeRoot({ name: `CN=${name} root`, pathLength: 1 });
  const intermediate = await makeIntermediate(root, { name: `CN=${name} intermediate` });
  return {
    root,
    intermediate,
    leaf: (opts) => makeLeaf(intermediate, opts),
    chainOf: (leaf) => [leaf.der, intermediate.der],
    chainPemOf: (leaf) => leaf.pem + intermediate.pem,
  };
}
