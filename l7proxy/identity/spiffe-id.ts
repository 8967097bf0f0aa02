/** SPIFFE IDs of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, parsed from raw SAN bytes. */
import type { VerifyReason } from './verify-reasons.ts';

/** A workload identity: the Kubernetes service account a certificate speaks for. */
export interface WorkloadIdentity {
  /** Kubernetes namespace (a DNS-1123 label). */
  namespace: string;
  /** Service account name (a DNS-1123 subdomain). */
  serviceAccount: string;
}

/** A SPIFFE ID that passed every check, split into its parts. */
export interface ParsedSpiffeId extends WorkloadIdentity {
  /** The full ID, pure printable ASCII, safe to log or to put in a header. */
  spiffeId: string;
  /** The trust domain (lowercase). */
  trustDomain: string;
}

/** Outcome of `parseSpiffeUri`. */
export type SpiffeParseResult = ({ ok: true } & ParsedSpiffeId) | { ok: false; reason: VerifyReason; detail: string };

/** SPIFFE caps a URI SAN at 2048 bytes (SPIFFE-ID.md §2.3 and X509-SVID.md §2). */
export const MAX_SPIFFE_ID_BYTES = 2048;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const PREFIX = 'spiffe://';

/** True for a Kubernetes namespace name (DNS-1123 label, at most 63 characters). */
export function isValidNamespace(name: string): boolean {
  return name.length <= 63 && DNS_LABEL.test(name);
}

/** True for a Kubernetes service account name (DNS-1123 subdomain, at most 253 characters). */
export function isValidServiceAccount(name: string): boolean {
  return name.length <= 253 && name.split('.').every((label) => label.length <= 63 && DNS_LABEL.test(label));
}

/** True for a trust domain SPIFFE allows: lowercase letters, digits, `.`, `-`, `_`; no port, no userinfo. */
export function isValidTrustDomain(td: string): boolean {
  return td.length > 0 && td.length <= 255 && TRUST_DOMAIN.test(td);
}

/** Formats the SPIFFE ID of a workload; throws when a part could not round-trip through `parseSpiffeUri`. */
export function formatSpiffeId(trustDomain: string, identity: WorkloadIdentity): string {
  if (!isValidTrustDomain(trustDomain)) throw new TypeError(`trust domain ${JSON.stringify(trustDomain)} is not a valid SPIFFE trust domain`);
  if (!isValidNamespace(identity.namespace)) throw new TypeError(`namespace ${JSON.stringify(identity.namespace)} is not a DNS-1123 label`);
  if (!isValidServiceAccount(identity.serviceAccount)) throw new TypeError(`service account ${JSON.stringify(identity.serviceAccount)} is not a DNS-1123 subdomain`);
  return `${PREFIX}${trustDomain}/ns/${identity.namespace}/sa/${identity.serviceAccount}`;
}

/**
 * Parses a URI SAN from its raw IA5String bytes and checks it against the expected trust domain.
 * The byte check comes first and is deliberately narrow: only printable ASCII without `%` passes, so NUL,
 * CR/LF (header injection, GHSA-w5w5-487h-qv8q), Unicode look-alikes and percent-encoded tricks never reach
 * the comparison below, and the ID we return is safe to copy into a header.
 */
export function parseSpiffeUri(bytes: Uint8Array, expectedTrustDomain: string): SpiffeParseResult {
  if (bytes.length > MAX_SPIFFE_ID_BYTES) return fail('san_too_long', `URI SAN is ${bytes.length} bytes, SPIFFE allows ${MAX_SPIFFE_ID_BYTES}`);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b < 0x21 || b > 0x7e || b === 0x25) return fail('san_invalid_chars', `URI SAN byte ${i} is 0x${b.toString(16).padStart(2, '0')}`);
  }
  const uri = String.fromCharCode(...bytes);
  // SPIFFE-ID.md §2.1: the scheme is exactly `spiffe`, lowercase; anything else is another kind of name.
  if (!uri.startsWith(PREFIX)) return fail('san_scheme', 'URI SAN does not start with spiffe://');
  const rest = uri.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (!isValidTrustDomain(trustDomain)) return fail('san_trust_domain', 'trust domain has characters SPIFFE forbids (userinfo, port, uppercase?)');
  if (trustDomain !== expectedTrustDomain) return fail('san_trust_domain', `trust domain ${trustDomain} is not ${expectedTrustDomain}`);
  // The root path (spiffe://td or spiffe://td/) names the trust domain itself, never a workload (§2.2).
  if (path === '' || path === '/') return fail('san_path', 'SPIFFE ID has no workload path');
  const segments = path.slice(1).split('/');
  if (segments.length !== 4 || segments[0] !== 'ns' || segments[2] !== 'sa') return fail('san_path', 'path is not /ns/<namespace>/sa/<service-account>');
  const namespace = segments[1]!;
  const serviceAccount = segments[3]!;
  // These patterns also exclude `.`/`..` segments, `?` queries and `#` fragments.
  if (!isValidNamespace(namespace)) return fail('san_path', 'namespace segment is not a DNS-1123 label');
  if (!isValidServiceAccount(serviceAccount)) return fail('san_path', 'service account segment is not a DNS-1123 subdomain');
  return { ok: true, spiffeId: uri, trustDomain, namespace, serviceAccount };
}

function fail(reason: VerifyReason, detail: string): SpiffeParseResult {
  return { ok: false, reason, detail };
}
