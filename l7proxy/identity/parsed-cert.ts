/**
 * A certificate parsed once by our strict DER reader, with what chain building and SVID checks need. Not a
 * general X.509 parser: it reads the fields RFC 5280 fixes in place and the extensions we enforce, refuses
 * anything else that is critical, and never renders names to strings for decisions.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { DerError, decodeOid, decodeSmallUint, decodeTime, readDerSequenceContent, readDerSingle, type DerTlv } from './der.ts';

/** OIDs this module reads. */
export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  commonName: '2.5.4.3',
} as const;

/** Extensions we understand and enforce; any other one marked critical makes the certificate unusable. */
const UNDERSTOOD = new Set<string>([OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectAltName, OID.subjectKeyId, OID.authorityKeyId]);

/** Signature algorithms we verify, and the digest Node's `crypto.verify` needs for each (null: none, Ed25519). */
const SIGNATURE_DIGEST: Record<string, string | null> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3': 'sha384', // ecdsa-with-SHA384
  '1.2.840.10045.4.3.4': 'sha512', // ecdsa-with-SHA512
  '1.2.840.113549.1.1.11': 'sha256', // sha256WithRSAEncryption
  '1.2.840.113549.1.1.12': 'sha384', // sha384WithRSAEncryption
  '1.2.840.113549.1.1.13': 'sha512', // sha512WithRSAEncryption
  '1.3.101.112': null, // Ed25519
};

/** keyUsage bits as flags: bit n of the BIT STRING (n = 0 is digitalSignature) is `1 << n`. */
export const KEY_USAGE = { digitalSignature: 1, keyCertSign: 32, cRLSign: 64 } as const;

/** A parsed certificate. */
export interface ParsedCert {
  /** The DER bytes as received. */
  der: Uint8Array;
  /** tbsCertificate bytes (what the issuer signed). */
  tbs: Uint8Array;
  /** Signature algorithm OID (outer, checked equal to the inner one). */
  signatureAlgorithm: string;
  /** Signature bytes (BIT STRING content without the unused-bits octet). */
  signature: Uint8Array;
  /** subjectPublicKeyInfo DER. */
  spki: Uint8Array;
  /** Issuer Name DER as hex, compared byte for byte while building chains. */
  issuerKey: string;
  /** Subject Name DER as hex. */
  subjectKey: string;
  /** Subject Name DER (for display only). */
  subjectDer: Uint8Array;
  notBefore: number;
  notAfter: number;
  /** Lowercase hex SHA-256 of the DER. */
  fingerprint: string;
  /** basicConstraints cA (false when the extension is absent). */
  isCa: boolean;
  /** basicConstraints pathLenConstraint, when given. */
  pathLength: number | undefined;
  /** keyUsage flags (see KEY_USAGE), or undefined when the extension is absent. */
  keyUsage: number | undefined;
  /** Extended key usage OIDs, or undefined when the extension is absent. */
  extKeyUsage: string[] | undefined;
  /** subjectAltName extnValue (raw), or undefined when absent. */
  subjectAltName: Uint8Array | undefined;
  /** The first problem with the extension list itself, if any. */
  extensionProblem: 'duplicate_extension' | 'unknown_critical_extension' | undefined;
}

/** Parses DER into a ParsedCert; throws DerError on anything malformed (callers map it to `malformed_cert`). */
export function parseCert(input: Uint8Array): ParsedCert {
  const der = new Uint8Array(input);
  const cert = readDerSingle(der, 0x30, 'Certificate');
  const top = readDerSequenceContent(cert.content);
  if (top.length !== 3) throw new DerError(`Certificate has ${top.length} fields, not 3`);
  const [tbsTlv, outerAlg, sigTlv] = top as [DerTlv, DerTlv, DerTlv];
  if (tbsTlv.tag !== 0x30 || outerAlg.tag !== 0x30 || sigTlv.tag !== 0x03) throw new DerError('Certificate fields have the wrong types');
  const fields = readDerSequenceContent(tbsTlv.content);
  let i = 0;
  if (fields[0]?.tag === 0xa0) i = 1; // explicit version
  const [serial, innerAlg, issuer, validity, subject, spki] = fields.slice(i, i + 6);
  if (!serial || serial.tag !== 0x02 || !innerAlg || innerAlg.tag !== 0x30 || !issuer || issuer.tag !== 0x30 || !validity || validity.tag !== 0x30 || !subject || subject.tag !== 0x30 || !spki || spki.tag !== 0x30) {
    throw new DerError('tbsCertificate fields have the wrong types');
  }
  // RFC 5280 §4.1.1.2: the signed and the outer algorithm must be identical, else the signature means nothing.
  if (Buffer.compare(innerAlg.raw, outerAlg.raw) !== 0) throw new DerError('signature algorithm inside and outside tbsCertificate differ');
  const algOid = readDerSequenceContent(outerAlg.content)[0];
  if (!algOid || algOid.tag !== 0x06) throw new DerError('signature algorithm has no OID');
  const times = readDerSequenceContent(validity.content);
  if (times.length !== 2) throw new DerError('validity is not two times');
  if (sigTlv.content.length < 2 || sigTlv.content[0] !== 0) throw new DerError('signature BIT STRING has unused bits');

  const parsed: ParsedCert = {
    der,
    tbs: tbsTlv.raw,
    signatureAlgorithm: decodeOid(algOid.content),
    signature: sigTlv.content.subarray(1),
    spki: spki.raw,
    issuerKey: Buffer.from(issuer.raw).toString('hex'),
    subjectKey: Buffer.from(subject.raw).toString('hex'),
    subjectDer: subject.raw,
    notBefore: decodeTime(times[0]!),
    notAfter: decodeTime(times[1]!),
    fingerprint: createHash('sha256').update(der).digest('hex'),
    isCa: false,
    pathLength: undefined,
    keyUsage: undefined,
    extKeyUsage: undefined,
    subjectAltName: undefined,
    extensionProblem: undefined,
  };
  const rest = fields.slice(i + 6);
  const extWrapper = rest.find((f) => f.tag === 0xa3);
  if (rest.some((f) => f.tag !== 0xa3 && f.tag !== 0x81 && f.tag !== 0x82)) throw new DerError('unexpected field after subjectPublicKeyInfo');
  if (extWrapper) readExtensions(readDerSingle(extWrapper.content, 0x30, 'extensions').content, parsed);
  return parsed;
}

function readExtensions(content: Uint8Array, out: ParsedCert): void {
  const seen = new Set<string>();
  for (const ext of readDerSequenceContent(content)) {
    if (ext.tag !== 0x30) throw new DerError('extension is not a SEQUENCE');
    const parts = readDerSequenceContent(ext.content);
    const oidTlv = parts[0];
    if (!oidTlv || oidTlv.tag !== 0x06) throw new DerError('extension has no OID');
    let critical = false;
    let valueTlv = parts[1];
    if (valueTlv?.tag === 0x01) {
      critical = valueTlv.content.length === 1 && valueTlv.content[0] !== 0;
      valueTlv = parts[2];
    }
    if (!valueTlv || valueTlv.tag !== 0x04) throw new DerError('extension has no OCTET STRING value');
    const oid = decodeOid(oidTlv.content);
    if (seen.has(oid)) out.extensionProblem ??= 'duplicate_extension';
    seen.add(oid);
    if (critical && !UNDERSTOOD.has(oid)) out.extensionProblem ??= 'unknown_critical_extension';
    const value = valueTlv.content;
    // Once a duplicate is seen the certificate is refused; never let a second copy overwrite the first.
    if (out.extensionProblem === 'duplicate_extension') continue;
    switch (oid) {
      case OID.basicConstraints: {
        const items = readDerSequenceContent(readDerSingle(value, 0x30, 'basicConstraints').content);
        let k = 0;
        if (items[0]?.tag === 0x01) {
          out.isCa = items[0].content.length === 1 && items[0].content[0] !== 0;
          k = 1;
        }
        if (items[k]) {
          if (items[k]!.tag !== 0x02) throw new DerError('basicConstraints pathLenConstraint is not an INTEGER');
          out.pathLength = decodeSmallUint(items[k]!.content);
        }
        break;
      }
      case OID.keyUsage: {
        const bits = readDerSingle(value, 0x03, 'keyUsage').content;
        if (bits.length < 1 || bits[0]! > 7) throw new DerError('keyUsage BIT STRING is malformed');
        let flags = 0;
        for (let byte = 1; byte < bits.length && byte <= 2; byte++) {
          for (let bit = 0; bit < 8; bit++) if (bits[byte]! & (0x80 >> bit)) flags |= 1 << ((byte - 1) * 8 + bit);
        }
        out.keyUsage = flags;
        break;
      }
      case OID.extKeyUsage:
        out.extKeyUsage = readDerSequenceContent(readDerSingle(value, 0x30, 'extKeyUsage').content).map((t) => {
          if (t.tag !== 0x06) throw new DerError('extKeyUsage entry is not an OID');
          return decodeOid(t.content);
        });
        break;
      case OID.subjectAltName:
        out.subjectAltName = value;
        break;
      default:
        break;
    }
  }
}

const issuerKeys = new WeakMap<ParsedCert, KeyObject>();
/** Verdicts per (child, issuer) object pair. A signature check is a pure function of the bytes, so this is
 * exact; it pays off for bundle intermediates under bundle roots, checked on every handshake otherwise. */
const verdicts = new WeakMap<ParsedCert, WeakMap<ParsedCert, boolean>>();

/** True when `issuer`'s key produced `child`'s signature over its tbsCertificate. */
export function isSignedBy(child: ParsedCert, issuer: ParsedCert): boolean {
  let perIssuer = verdicts.get(child);
  const known = perIssuer?.get(issuer);
  if (known !== undefined) return known;
  const result = checkSignature(child, issuer);
  if (!perIssuer) verdicts.set(child, (perIssuer = new WeakMap()));
  perIssuer.set(issuer, result);
  return result;
}

function checkSignature(child: ParsedCert, issuer: ParsedCert): boolean {
  const digest = SIGNATURE_DIGEST[child.signatureAlgorithm];
  if (digest === undefined) return false;
  try {
    let key = issuerKeys.get(issuer);
    if (!key) {
      key = createPublicKey({ key: Buffer.from(issuer.spki), format: 'der', type: 'spki' });
      issuerKeys.set(issuer, key);
    }
    return cryptoVerify(digest, child.tbs, key, child.signature);
  } catch {
    return false;
  }
}

/** A short human label for logs: the subject's CN (escaped) and the fingerprint prefix. Never used for decisions. */
export function describeCert(c: ParsedCert): string {
  let cn = '';
  try {
    for (const rdn of readDerSequenceContent(readDerSingle(c.subjectDer, 0x30, 'Name').content)) {
      for (const atv of readDerSequenceContent(rdn.content)) {
        const [oid, val] = readDerSequenceContent(atv.content);
        if (oid && val && decodeOid(oid.content) === OID.commonName) cn = Buffer.from(val.content).toString('latin1').replace(/[^\x20-\x7e]/g, '?');
      }
    }
  } catch {
    cn = '';
  }
  return `certificate ${cn ? `CN=${cn}` : '(no CN)'} [sha256 ${c.fingerprint.slice(0, 16)}]`;
}

/** PEM of a parsed certificate. */
export function toPem(c: ParsedCert): string {
  const b64 = Buffer.from(c.der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}
