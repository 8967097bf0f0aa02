/** A strict, minimal DER reader: just enough structure to read names and SANs from raw certificate bytes. */

/** One DER tag-length-value: `raw` spans header and content, `content` only the value. */
export interface DerTlv {
  /** The identifier octet (class, constructed bit and tag number below 31). */
  tag: number;
  /** The value bytes (a view into the input, not a copy). */
  content: Uint8Array;
  /** Header plus value (a view into the input). */
  raw: Uint8Array;
}

/** Thrown for any encoding DER forbids; callers turn it into a `malformed_cert` verdict. */
export class DerError extends Error {
  /** Stable code for logs and tests. */
  readonly code = 'NM_ERR_IDENTITY_DER_MALFORMED';
}

/**
 * Reads one TLV at `offset`. Rejects what BER allows and DER does not (indefinite and non-minimal lengths),
 * and multi-byte tag numbers, which nothing in a certificate's name or SAN uses: being strict here means two
 * parsers can never disagree about where a SAN entry ends.
 */
export function readDerTlv(buf: Uint8Array, offset: number): DerTlv & { end: number } {
  if (offset + 2 > buf.length) throw new DerError(`DER truncated at offset ${offset}: header needs 2 bytes`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`DER tag at offset ${offset} uses the multi-byte form`);
  const first = buf[offset + 1]!;
  let length: number;
  let header: number;
  if (first < 0x80) {
    length = first;
    header = 2;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new DerError(`DER indefinite length at offset ${offset}`);
    if (n > 4) throw new DerError(`DER length at offset ${offset} uses ${n} bytes`);
    if (offset + 2 + n > buf.length) throw new DerError(`DER truncated in the length at offset ${offset}`);
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[offset + 2 + i]!;
    if (buf[offset + 2] === 0 || length < 0x80) throw new DerError(`DER non-minimal length at offset ${offset}`);
    header = 2 + n;
  }
  const start = offset + header;
  const end = start + length;
  if (end > buf.length) throw new DerError(`DER value at offset ${offset} runs ${end - buf.length} bytes past the end`);
  return { tag, content: buf.subarray(start, end), raw: buf.subarray(offset, end), end };
}

/** Reads consecutive TLVs that must fill `buf` exactly (the content of a SEQUENCE, for instance). */
export function readDerSequenceContent(buf: Uint8Array): DerTlv[] {
  const out: DerTlv[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const tlv = readDerTlv(buf, offset);
    out.push({ tag: tlv.tag, content: tlv.content, raw: tlv.raw });
    offset = tlv.end;
  }
  return out;
}

/** Reads a buffer that must hold exactly one TLV with the given tag. */
export function readDerSingle(buf: Uint8Array, expectedTag: number, what: string): DerTlv {
  const tlv = readDerTlv(buf, 0);
  if (tlv.tag !== expectedTag) throw new DerError(`${what}: expected tag 0x${expectedTag.toString(16)}, got 0x${tlv.tag.toString(16)}`);
  if (tlv.end !== buf.length) throw new DerError(`${what}: ${buf.length - tlv.end} trailing bytes`);
  return { tag: tlv.tag, content: tlv.content, raw: tlv.raw };
}

/** One GeneralName as it sits in the certificate: context tag number and raw value bytes, undecoded. */
export interface RawGeneralName {
  /** GeneralName choice: 0 otherName, 1 rfc822Name, 2 dNSName, 6 uniformResourceIdentifier, 7 iPAddress, ... */
  kind: number;
  /** True when the entry is constructed (required for otherName/directoryName, forbidden for URI/DNS). */
  constructed: boolean;
  /** The value bytes exactly as encoded (IA5String octets for URI and DNS names). */
  value: Uint8Array;
}

/** GeneralName choice number of a uniformResourceIdentifier (RFC 5280 §4.2.1.6). */
export const GENERAL_NAME_URI = 6;

/**
 * Parses a subjectAltName extension value (the OCTET STRING content) into raw GeneralNames. The bytes are
 * kept as bytes so a NUL or CR inside a name can be seen and refused, never silently cut or joined the way
 * a string rendering does (Node CVE-2021-44532, Envoy CVE-2025-66220).
 */
export function parseSubjectAltNames(extnValue: Uint8Array): RawGeneralName[] {
  const seq = readDerSingle(extnValue, 0x30, 'subjectAltName');
  return readDerSequenceContent(seq.content).map((tlv) => {
    if ((tlv.tag & 0xc0) !== 0x80) throw new DerError(`subjectAltName entry has tag 0x${tlv.tag.toString(16)}, not context-specific`);
    return { kind: tlv.tag & 0x1f, constructed: (tlv.tag & 0x20) !== 0, value: tlv.content };
  });
}

/** Decodes an OBJECT IDENTIFIER value to dotted form. */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new DerError('empty OBJECT IDENTIFIER');
  const parts: number[] = [];
  let value = 0;
  for (let i = 0; i < content.length; i++) {
    const b = content[i]!;
    if (value === 0 && b === 0x80) throw new DerError('OBJECT IDENTIFIER arc with a leading 0x80');
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      parts.push(value);
      value = 0;
    } else if (i === content.length - 1) {
      throw new DerError('OBJECT IDENTIFIER truncated');
    }
  }
  const first = parts[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...parts.slice(1)].join('.');
}

/** Decodes a UTCTime (0x17) or GeneralizedTime (0x18) in the `Z` forms RFC 5280 §4.1.2.5 requires, to ms. */
export function decodeTime(tlv: DerTlv): number {
  const s = String.fromCharCode(...tlv.content);
  let m: RegExpExecArray | null;
  let year: number;
  if (tlv.tag === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (tlv.tag === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    year = Number(m[1]);
  } else {
    throw new DerError(`time ${JSON.stringify(s)} (tag 0x${tlv.tag.toString(16)}) is not a UTCTime/GeneralizedTime in Z form`);
  }
  const [mo, d, h, mi, se] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  const ms = Date.UTC(year, mo - 1, d, h, mi, se);
  const check = new Date(ms);
  if (check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) throw new DerError(`time ${s} is not a valid date`);
  return ms;
}

/** Decodes a small non-negative INTEGER (pathLenConstraint). */
export function decodeSmallUint(content: Uint8Array): number {
  if (content.length === 0 || content.length > 4 || (content[0]! & 0x80) !== 0) throw new DerError('INTEGER is negative, empty or too large');
  if (content.length > 1 && content[0] === 0 && (content[1]! & 0x80) === 0) throw new DerError('INTEGER has a non-minimal encoding');
  let v = 0;
  for (const b of content) v = v * 256 + b;
  return v;
}
