/** TLS 1.3 options and the inbound guard: how the proxy's mTLS listener and connector use SPIFFE verification. */
import type { PeerCertificate, Server, ConnectionOptions, TLSSocket, TlsOptions } from 'node:tls';
import { countVerifyOutcome, type VerifyCounters, type VerifyReason } from './verify-reasons.ts';
import { verifyPeerChain, type RejectedPeer, type VerifiedPeer, type VerifyPeerResult } from './verify-peer-chain.ts';
import type { TrustBundle } from './trust-bundle.ts';
import { ticketKeysFor } from './ticket-keys.ts';

/** The certificate a proxy presents: an SVID chain (leaf first, then intermediate) and its private key. */
export interface MeshTlsIdentity {
  /** PEM, leaf first. */
  certChainPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
}

/** Role-specific settings for `tlsOptionsFor`. */
export type MeshTlsRole =
  | { role: 'server' }
  | {
      role: 'client';
      /** Our trust domain; the server's SVID must be in it. */
      trustDomain: string;
      /** The SPIFFE ID the server must present (the destination workload), when known. */
      expectedSpiffeId?: string;
      /** Clock for the certificate validity check (default Date.now). */
      now?: () => number;
      /** Where refusals of the server are counted. */
      counters?: VerifyCounters;
    };

/** Error given to the client socket when the server's SVID is refused; `reason` is the counter it went to. */
export class PeerRejectedError extends Error {
  /** Stable error code. */
  readonly code = 'NM_ERR_IDENTITY_PEER_REJECTED';
  /** Why the peer was refused. */
  readonly reason: VerifyReason;
  constructor(reason: VerifyReason, detail: string) {
    super(`peer certificate refused (${reason}): ${detail}`);
    this.reason = reason;
  }
}

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;

/**
 * Options for `tls.createServer` (role server) or `tls.connect` (role client) presenting `identity` and
 * trusting `bundle`.
 *
 * Server side: `requestCert: true, rejectUnauthorized: false`, and the connection is accepted by
 * `guardMeshServer` only. Why not let OpenSSL reject: (1) it cannot express SPIFFE rules (exactly one URI SAN,
 * scheme, trust domain, path, no CA leaf), so a second check is needed anyway; (2) when Node rejects at the
 * TLS layer it destroys the socket without telling the server why, so the distinct reason counters B6 asks for
 * would be lost. OpenSSL's verdict is still required: the guard accepts a peer only if `socket.authorized` is
 * true AND our structural verification passes, and nothing is read from the socket before that.
 *
 * Client side: OpenSSL verifies the chain (`rejectUnauthorized: true`) and `checkServerIdentity` runs our
 * structural verification instead of host-name matching (a SPIFFE SVID has no DNS name to match); both run
 * before `secureConnect`, so no request byte is written to an unverified server. Not on a resumed session, where
 * Node skips `checkServerIdentity`: a client that offers sessions must follow session-binding.ts.
 */
export function tlsOptionsFor(identity: MeshTlsIdentity, bundle: TrustBundle, role: { role: 'server' }): TlsOptions;
export function tlsOptionsFor(identity: MeshTlsIdentity, bundle: TrustBundle, role: Extract<MeshTlsRole, { role: 'client' }>): ConnectionOptions;
export function tlsOptionsFor(identity: MeshTlsIdentity, bundle: TrustBundle, role: MeshTlsRole): TlsOptions | ConnectionOptions {
  const common = { ...TLS13, cert: identity.certChainPem, key: identity.keyPem, ca: bundle.pem };
  // Ticket keys bound to the bundle: a renewed certificate keeps resumption, a new bundle voids every older ticket.
  if (role.role === 'server') return { ...common, requestCert: true, rejectUnauthorized: false, ticketKeys: ticketKeysFor(bundle) };
  return {
    ...common,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const result = verifyPeerChain(chainFromPeerCertificate(cert), bundle, {
        trustDomain: role.trustDomain,
        now: (role.now ?? Date.now)(),
        peerRole: 'server',
        ...(role.expectedSpiffeId !== undefined ? { expectedSpiffeId: role.expectedSpiffeId } : {}),
      });
      if (role.counters) countVerifyOutcome(role.counters, result);
      return result.ok ? undefined : new PeerRejectedError(result.reason, result.detail);
    },
  };
}

/** The DER chain (leaf first) from Node's detailed peer certificate, following `issuerCertificate` links. */
export function chainFromPeerCertificate(cert: PeerCertificate | undefined): Uint8Array[] {
  const chain: Uint8Array[] = [];
  let c: PeerCertificate | undefined = cert;
  // Node links a self-signed root to itself; stop on any repeat and after a bound, whatever Node hands us.
  while (c?.raw && c.raw.length > 0 && chain.length < 8 && !chain.some((d) => Buffer.compare(d, c!.raw) === 0)) {
    chain.push(new Uint8Array(c.raw));
    c = (c as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return chain;
}

/** Maps OpenSSL's verify error code (`socket.authorizationError`) to our reasons. */
export function reasonFromOpenSslCode(code: string | undefined): VerifyReason {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return 'expired';
    case 'CERT_NOT_YET_VALID':
      return 'not_yet_valid';
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      return 'unknown_issuer';
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'untrusted_chain';
    case 'CERT_SIGNATURE_FAILURE':
      return 'bad_signature';
    case 'INVALID_CA':
      return 'issuer_not_ca';
    case 'PATH_LENGTH_EXCEEDED':
      return 'path_len_exceeded';
    case 'INVALID_PURPOSE':
      return 'eku_missing_client_auth';
    default:
      return 'tls_handshake_failed';
  }
}

/** Options for `authenticateTlsSocket` and `guardMeshServer`. */
export interface MeshGuardOptions {
  /** Our trust domain. */
  trustDomain: string;
  /** The current bundle; a function so a rotation takes effect for the next connection without a restart. */
  bundle: () => TrustBundle;
  /** Clock (default Date.now). */
  now?: () => number;
  /** Counters to add every outcome to. */
  counters?: VerifyCounters;
  /** Called for each refused connection (after the counter, before the socket is destroyed), e.g. to log. */
  onReject?: (rejected: RejectedPeer, socket: TLSSocket | undefined) => void;
}

/**
 * Authenticates the client of an accepted TLS socket: our structural check on its chain, and OpenSSL's own
 * chain verdict. Also right for resumed sessions: the peer certificate comes from the session and is checked
 * against the bundle of now, so a session from before a root was dropped is refused (CVE-2022-21654 class).
 */
export function authenticateTlsSocket(socket: TLSSocket, opts: MeshGuardOptions): VerifyPeerResult {
  const chain = chainFromPeerCertificate(socket.getPeerCertificate(true));
  const result = verifyPeerChain(chain, opts.bundle(), { trustDomain: opts.trustDomain, now: (opts.now ?? Date.now)(), peerRole: 'client' });
  if (!result.ok) return result;
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? '');
    return { ok: false, reason: reasonFromOpenSslCode(code), detail: `TLS library refused the chain our check accepted: ${code || 'unknown'}` };
  }
  return result;
}

/**
 * Installs the only `secureConnection` handler an mTLS server should have: each connection is authenticated
 * synchronously, before any byte of application data is read; refused sockets are counted and destroyed, and
 * `onPeer` sees only authenticated ones together with the peer's identity. Handshake failures (plaintext,
 * wrong protocol version) are counted as `tls_handshake_failed`.
 */
export function guardMeshServer(server: Server, opts: MeshGuardOptions, onPeer: (socket: TLSSocket, peer: VerifiedPeer) => void): void {
  server.on('secureConnection', (socket: TLSSocket) => {
    const result = authenticateTlsSocket(socket, opts);
    if (opts.counters) countVerifyOutcome(opts.counters, result);
    if (!result.ok) {
      opts.onReject?.(result, socket);
      socket.destroy();
      return;
    }
    onPeer(socket, result);
  });
  server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
    const rejected: RejectedPeer = { ok: false, reason: 'tls_handshake_failed', detail: (err as NodeJS.ErrnoException).code ?? err.message };
    if (opts.counters) countVerifyOutcome(opts.counters, rejected);
    opts.onReject?.(rejected, socket);
  });
}
