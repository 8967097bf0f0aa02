/** The trust bundle: root certificates a peer chain must end at (several during a rotation), plus the known intermediates. */
import { describeCert, isSignedBy, parseCert, toPem, type ParsedCert } from './parsed-cert.ts';

/**
 * Parsed roots and intermediates. Immutable: a rotation makes a new bundle.
 *
 * Intermediates are here because Node's TLS server does not expose the intermediates of a client chain that
 * OpenSSL verified (`getPeerCertificate(true)` then stops at the leaf; checked on Node 24), so the inbound
 * verifier completes the path from these. They are helpers, never anchors: a path must still end at one of `roots`.
 */
export interface TrustBundle {
  /** Trust anchors (self-signed CA certificates), in the order given. */
  readonly roots: readonly ParsedCert[];
  /** Known intermediate CAs of our mesh CA, used only to complete paths. */
  readonly intermediates: readonly ParsedCert[];
  /** The roots as one PEM string, for the `tls` `ca` option. */
  readonly pem: string;
  /** SHA-256 fingerprints of the roots (hex), e.g. for a status line. */
  readonly fingerprints: readonly string[];
}

/** Thrown when a bundle cannot be used; names which certificate and why. */
export class TrustBundleError extends Error {
  /** Stable error code. */
  readonly code = 'NM_ERR_IDENTITY_BUNDLE_INVALID';
}

/**
 * Parses one or more PEM strings (each may hold several certificates) into a bundle. Every entry must be a
 * CA certificate (a leaf in the bundle would let its holder pose as an issuer); self-signed ones become roots,
 * the others intermediates. Non-certificate PEM blocks are ignored; duplicates collapse to one.
 */
export function parseTrustBundle(pem: string | readonly string[]): TrustBundle {
  const blocks = (typeof pem === 'string' ? [pem] : pem).flatMap((p) => decodePemCertificates(p));
  const roots: ParsedCert[] = [];
  const intermediates: ParsedCert[] = [];
  const seen = new Set<string>();
  blocks.forEach((block, i) => {
    let cert: ParsedCert;
    try {
      cert = parseCert(block);
    } catch (err) {
      throw new TrustBundleError(`trust bundle certificate #${i} does not parse: ${(err as Error).message}`);
    }
    if (!cert.isCa) throw new TrustBundleError(`trust bundle certificate #${i} ${describeCert(cert)} is not a CA (basicConstraints cA is not TRUE)`);
    if (seen.has(cert.fingerprint)) return;
    seen.add(cert.fingerprint);
    if (cert.subjectKey === cert.issuerKey && isSignedBy(cert, cert)) roots.push(cert);
    else intermediates.push(cert);
  });
  if (roots.length === 0) throw new TrustBundleError('trust bundle holds no self-signed root certificate: is the Secret or ConfigMap key empty or holding only intermediates?');
  return {
    roots,
    intermediates,
    pem: roots.map((r) => toPem(r)).join(''),
    fingerprints: roots.map((r) => r.fingerprint),
  };
}

/** The whole bundle (roots then intermediates) as PEM, e.g. to hand it on. */
export function formatTrustBundle(bundle: TrustBundle): string {
  return [...bundle.roots, ...bundle.intermediates].map((c) => toPem(c)).join('');
}

/** The DER of every CERTIFICATE block in `pem` (other block types are skipped); throws on broken base64. */
export function decodePemCertificates(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const m of pem.matchAll(/-----BEGIN CERTIFICATE-----([^-]*)-----END CERTIFICATE-----/g)) {
    const body = m[1]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) throw new TrustBundleError('trust bundle has a CERTIFICATE block with invalid base64');
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  return out;
}
