/** The closed set of reasons a peer certificate chain is refused, and a counter object for metrics. */

/** Every reason `verifyPeerChain` (and the TLS guard) can give; a label value set of fixed size for metrics. */
export const VERIFY_REASONS = [
  'no_cert', // the peer sent no certificate (or a plaintext peer reached an mTLS-only port)
  'malformed_cert', // a certificate or one of its extensions does not parse as strict DER
  'chain_too_long', // more certificates than any chain from our CA can need
  'expired', // leaf notAfter is in the past
  'not_yet_valid', // leaf notBefore is in the future
  'leaf_is_ca', // leaf has basicConstraints cA=TRUE (SPIFFE X509-SVID §4.1)
  'leaf_key_cert_sign', // leaf keyUsage includes keyCertSign (§4.3)
  'leaf_crl_sign', // leaf keyUsage includes cRLSign (§4.3)
  'leaf_key_usage', // leaf has no keyUsage or it lacks digitalSignature (§4.3)
  'eku_missing_client_auth', // EKU present without clientAuth on a client certificate (GHSA-837m-wjrv-vm5g)
  'eku_missing_server_auth', // EKU present without serverAuth on a server certificate
  'san_count', // not exactly one URI SAN (none at all, or two or more)
  'san_not_uri', // SAN holds other name types but no URI
  'san_scheme', // the URI scheme is not exactly `spiffe`
  'san_trust_domain', // trust domain differs from ours, or carries userinfo/port/invalid characters
  'san_path', // path is not /ns/<namespace>/sa/<service-account> with valid Kubernetes names
  'san_invalid_chars', // NUL, CR/LF, space, non-ASCII (Unicode) or percent-encoding in the URI
  'san_too_long', // URI longer than the 2048 bytes SPIFFE allows
  'identity_mismatch', // a valid SVID, but not the identity this connection was expected to reach
  'duplicate_extension', // an extension appears twice (two parsers could read different copies)
  'unknown_critical_extension', // a critical extension we do not process (RFC 5280 §4.2 says reject)
  'unknown_issuer', // the leaf's issuer is neither presented nor a trusted root (e.g. an intermediate not sent)
  'untrusted_chain', // the presented chain leads to a CA that is not in the trust bundle (wrong CA)
  'bad_signature', // an issuer with the right name exists but its key did not sign the certificate
  'issuer_not_ca', // a certificate used as an issuer lacks basicConstraints cA=TRUE
  'issuer_key_usage', // an issuer's keyUsage lacks keyCertSign
  'intermediate_expired', // an intermediate's notAfter is in the past
  'intermediate_not_yet_valid', // an intermediate's notBefore is in the future
  'root_expired', // the trust-bundle root the chain ends at is outside its validity period
  'path_len_exceeded', // a CA's pathLenConstraint is smaller than the intermediates below it
  'tls_handshake_failed', // the TLS layer refused the handshake for a reason not mapped above
] as const;

/** One refusal reason. */
export type VerifyReason = (typeof VERIFY_REASONS)[number];

/** Counts per outcome: `ok` plus one field per reason, all present from the start so metrics show zeros. */
export type VerifyCounters = Record<VerifyReason | 'ok', number>;

/** Makes a counter object with every reason at zero. */
export function createVerifyCounters(): VerifyCounters {
  const counters = { ok: 0 } as VerifyCounters;
  for (const reason of VERIFY_REASONS) counters[reason] = 0;
  return counters;
}

/** Adds one outcome to the counters. */
export function countVerifyOutcome(counters: VerifyCounters, outcome: { ok: true } | { ok: false; reason: VerifyReason }): void {
  counters[outcome.ok ? 'ok' : outcome.reason] += 1;
}

/** True when `value` is one of the closed set (for reasons arriving from outside, e.g. a metrics label). */
export function isVerifyReason(value: string): value is VerifyReason {
  return (VERIFY_REASONS as readonly string[]).includes(value);
}
