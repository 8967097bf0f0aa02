/** Structural verification of a peer's X.509-SVID chain against the trust bundle: the mesh's authentication. */
import { GENERAL_NAME_URI, parseSubjectAltNames, type RawGeneralName } from './der.ts';
import { describeCert, isSignedBy, KEY_USAGE, OID, parseCert, type ParsedCert } from './parsed-cert.ts';
import { parseSpiffeUri, type ParsedSpiffeId } from './spiffe-id.ts';
import type { TrustBundle } from './trust-bundle.ts';
import type { VerifyReason } from './verify-reasons.ts';

/** Options for one verification. */
export interface VerifyPeerOptions {
  /** Our trust domain; the SVID's must equal it exactly. */
  trustDomain: string;
  /** The instant validity is checked at (ms since epoch or a Date); injected so tests and callers agree on time. */
  now: number | Date;
  /** Which side the peer is: `client` (our inbound listener, default) requires clientAuth if EKU is present,
   * `server` (our outbound connection) requires serverAuth. */
  peerRole?: 'client' | 'server';
  /** When set, the SVID must name exactly this SPIFFE ID (outbound: the identity we meant to reach). */
  expectedSpiffeId?: string;
}

/** A peer that passed: its identity, usable for authorization and safe to copy into headers. */
export interface VerifiedPeer extends ParsedSpiffeId {
  ok: true;
  /** Leaf notAfter: a long-lived connection should not outlive it. */
  notAfter: Date;
  /** Fingerprint of the bundle root the chain ends at (tells old-root from new-root peers during rotation). */
  rootFingerprint: string;
}

/** A peer that failed: one reason from the closed set, and a human detail for logs (never for metrics labels). */
export interface RejectedPeer {
  ok: false;
  reason: VerifyReason;
  detail: string;
}

/** Outcome of `verifyPeerChain`. */
export type VerifyPeerResult = VerifiedPeer | RejectedPeer;

/** More presented certificates than this is refused outright: our chains are leaf + intermediate (+ root). */
export const MAX_PRESENTED_CERTS = 6;
/** Longest path from leaf to root we walk (leaf, up to three intermediates, root). */
const MAX_PATH_DEPTH = 5;

const KU_DIGITAL_SIGNATURE = KEY_USAGE.digitalSignature;
const KU_KEY_CERT_SIGN = KEY_USAGE.keyCertSign;
const KU_CRL_SIGN = KEY_USAGE.cRLSign;

/**
 * Verifies a peer chain (leaf first, DER) as an X.509-SVID of our trust domain. Synchronous on purpose: it can
 * run inside a TLS callback before any application byte is read. Checks, in order: the leaf's own structure
 * (extensions, CA bit, key usage, EKU, exactly one SPIFFE URI SAN read from the DER), its validity period, then
 * a path to a bundle root with signature, CA, key-usage, validity and path-length checks on every issuer.
 */
export function verifyPeerChain(chainDer: readonly Uint8Array[], bundle: TrustBundle, opts: VerifyPeerOptions): VerifyPeerResult {
  if (chainDer.length === 0) return reject('no_cert', 'peer presented no certificate');
  if (chainDer.length > MAX_PRESENTED_CERTS) return reject('chain_too_long', `peer presented ${chainDer.length} certificates`);
  const now = typeof opts.now === 'number' ? opts.now : opts.now.getTime();
  let certs: ParsedCert[];
  try {
    certs = chainDer.map((der) => parseCert(der));
  } catch (err) {
    return reject('malformed_cert', `certificate does not parse: ${(err as Error).message}`);
  }
  const leaf = certs[0]!;
  const leafResult = checkLeaf(leaf, opts);
  if (!leafResult.ok) return leafResult;
  if (leaf.notBefore > now) return reject('not_yet_valid', `leaf notBefore ${iso(leaf.notBefore)} is in the future`);
  if (leaf.notAfter < now) return reject('expired', `leaf expired at ${iso(leaf.notAfter)}`);
  // Presented intermediates first, then those the bundle knows (the TLS server cannot see the client's).
  const known = new Set(certs.map((c) => c.fingerprint));
  const pool = [...certs.slice(1), ...bundle.intermediates.filter((c) => !known.has(c.fingerprint))];
  const chain = buildPath(leaf, pool, bundle, now);
  if (!chain.ok) return chain;
  return { ...leafResult.id, ok: true, notAfter: new Date(leaf.notAfter), rootFingerprint: chain.root.fingerprint };
}

function checkLeaf(leaf: ParsedCert, opts: VerifyPeerOptions): { ok: true; id: ParsedSpiffeId } | RejectedPeer {
  if (leaf.extensionProblem) return reject(leaf.extensionProblem, 'leaf extension list is not acceptable');
  if (leaf.isCa) return reject('leaf_is_ca', 'leaf has basicConstraints cA=TRUE');
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KU_KEY_CERT_SIGN) !== 0) return reject('leaf_key_cert_sign', 'leaf keyUsage has keyCertSign');
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KU_CRL_SIGN) !== 0) return reject('leaf_crl_sign', 'leaf keyUsage has cRLSign');
  if (leaf.keyUsage === undefined || (leaf.keyUsage & KU_DIGITAL_SIGNATURE) === 0) return reject('leaf_key_usage', 'leaf keyUsage is missing or lacks digitalSignature');
  if (leaf.extKeyUsage !== undefined) {
    const role = opts.peerRole ?? 'client';
    const needed = role === 'client' ? OID.clientAuth : OID.serverAuth;
    if (!leaf.extKeyUsage.includes(needed)) {
      return reject(role === 'client' ? 'eku_missing_client_auth' : 'eku_missing_server_auth', `leaf EKU is ${leaf.extKeyUsage.join(',')}`);
    }
  }
  let names: RawGeneralName[] = [];
  if (leaf.subjectAltName) {
    try {
      names = parseSubjectAltNames(leaf.subjectAltName);
    } catch (err) {
      return reject('malformed_cert', `leaf subjectAltName: ${(err as Error).message}`);
    }
  }
  const uris = names.filter((n) => n.kind === GENERAL_NAME_URI);
  if (uris.some((n) => n.constructed)) return reject('malformed_cert', 'leaf URI SAN is constructed, not an IA5String');
  if (uris.length === 0) return names.length > 0 ? reject('san_not_uri', 'leaf SAN has no URI entry') : reject('san_count', 'leaf has no SAN');
  if (uris.length > 1) return reject('san_count', `leaf has ${uris.length} URI SANs; an SVID has exactly one`);
  const id = parseSpiffeUri(uris[0]!.value, opts.trustDomain);
  if (!id.ok) return reject(id.reason, id.detail);
  if (opts.expectedSpiffeId !== undefined && id.spiffeId !== opts.expectedSpiffeId) {
    return reject('identity_mismatch', `peer is ${id.spiffeId}, expected ${opts.expectedSpiffeId}`);
  }
  const { ok: _ok, ...parsed } = id;
  return { ok: true, id: parsed };
}

/** Walks from the leaf to a bundle root through presented intermediates, checking each link. */
function buildPath(leaf: ParsedCert, presented: ParsedCert[], bundle: TrustBundle, now: number): { ok: true; root: ParsedCert } | RejectedPeer {
  const path: ParsedCert[] = [leaf];
  let current = leaf;
  for (let depth = 0; depth < MAX_PATH_DEPTH; depth++) {
    // A bundle root wins over a presented certificate with the same name: peers cannot substitute anchors.
    const rootCandidates = bundle.roots.filter((r) => r.subjectKey === current.issuerKey);
    const root = rootCandidates.find((r) => isSignedBy(current, r));
    if (root) return checkRoot(root, path, now);
    const interCandidates = presented.filter((c) => c.subjectKey === current.issuerKey && !path.includes(c) && c.fingerprint !== current.fingerprint);
    const next = interCandidates.find((c) => isSignedBy(current, c));
    if (!next) {
      if (rootCandidates.length > 0 || interCandidates.length > 0) return reject('bad_signature', `issuer of ${describe(current)} found by name, but its key did not sign it`);
      if (current === leaf) return reject('unknown_issuer', `the leaf's issuer is neither presented nor in the bundle (an intermediate not sent, or another CA)`);
      return reject('untrusted_chain', `chain ends at ${describe(current)}, whose issuer is not a root in the trust bundle`);
    }
    const issuerProblem = checkIssuer(next, now);
    if (issuerProblem) return issuerProblem;
    // A self-signed certificate among the presented ones is a root that is not ours.
    if (next.subjectKey === next.issuerKey) return reject('untrusted_chain', `chain ends at self-signed ${describe(next)}, not in the trust bundle`);
    path.push(next);
    current = next;
  }
  return reject('chain_too_long', `no trusted root within ${MAX_PATH_DEPTH} certificates`);
}

function checkIssuer(ca: ParsedCert, now: number): RejectedPeer | undefined {
  if (ca.extensionProblem) return reject(ca.extensionProblem, `intermediate ${describe(ca)}: extension list is not acceptable`);
  if (!ca.isCa) return reject('issuer_not_ca', `${describe(ca)} signed a certificate but is not a CA`);
  if (ca.keyUsage !== undefined && (ca.keyUsage & KU_KEY_CERT_SIGN) === 0) return reject('issuer_key_usage', `${describe(ca)} keyUsage lacks keyCertSign`);
  if (ca.notAfter < now) return reject('intermediate_expired', `intermediate ${describe(ca)} expired at ${iso(ca.notAfter)}`);
  if (ca.notBefore > now) return reject('intermediate_not_yet_valid', `intermediate ${describe(ca)} not valid before ${iso(ca.notBefore)}`);
  return undefined;
}

/** Checks the anchor's own validity and every CA's pathLenConstraint along the path (RFC 5280 §4.2.1.9). */
function checkRoot(root: ParsedCert, path: ParsedCert[], now: number): { ok: true; root: ParsedCert } | RejectedPeer {
  if (root.notAfter < now || root.notBefore > now) {
    return reject('root_expired', `trust bundle root ${describe(root)} is outside its validity period`);
  }
  if (root.keyUsage !== undefined && (root.keyUsage & KU_KEY_CERT_SIGN) === 0) return reject('issuer_key_usage', `root ${describe(root)} keyUsage lacks keyCertSign`);
  // path = [leaf, int1 (issued by int2 ...), ..., intN (issued by root)]; intermediates below path[i] = i - 1.
  const intermediates = path.length - 1;
  if (root.pathLength !== undefined && intermediates > root.pathLength) {
    return reject('path_len_exceeded', `root ${describe(root)} allows ${root.pathLength} intermediates, chain has ${intermediates}`);
  }
  for (let i = 1; i < path.length; i++) {
    const limit = path[i]!.pathLength;
    if (limit !== undefined && i - 1 > limit) return reject('path_len_exceeded', `${describe(path[i]!)} allows ${limit} intermediates below it, chain has ${i - 1}`);
  }
  return { ok: true, root };
}

const describe = describeCert;

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function reject(reason: VerifyReason, detail: string): RejectedPeer {
  return { ok: false, reason, detail };
}
