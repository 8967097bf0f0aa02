/**
 * TLS session resumption bound to the trust bundle (F10, CVE-2022-21654 class): a session made while a root was
 * trusted must not let a peer in after that root was dropped.
 *
 * Server side: the session-ticket keys belong to the bundle (`ticketKeysFor`): `tlsOptionsFor` puts them in every
 * server context, so a certificate renewal keeps resumption working, while a new bundle means new keys and every
 * ticket issued before it no longer decrypts (full handshake, checked against the new bundle). Independently of
 * that, `guardMeshServer` re-verifies the client's certificate (taken from the session when resumed) against the
 * bundle of now on every connection.
 *
 * Client side: Node skips `checkServerIdentity` when a session is resumed, and OpenSSL reuses the verdict stored
 * in the session, so a client that offers sessions must (1) take them from `BundleBoundSessionCache`, which
 * forgets every session of an older bundle, and (2) run `checkResumedServer` on `secureConnect` (the bundle may
 * change between offering the session and the handshake).
 */
import type { TLSSocket } from 'node:tls';
import { chainFromPeerCertificate } from './mesh-tls.ts';
import type { TrustBundle } from './trust-bundle.ts';
import { verifyPeerChain, type RejectedPeer } from './verify-peer-chain.ts';

export { ticketKeysFor } from './ticket-keys.ts';

/** A stable text for a bundle's contents (roots and intermediates), to tell one generation from the next. */
export function bundleGeneration(bundle: TrustBundle): string {
  return [...bundle.roots, ...bundle.intermediates].map((c) => c.fingerprint).join(',');
}

/**
 * Client sessions per peer, valid only under the bundle they were made with. `get` with a different bundle
 * forgets everything older: those sessions carry a verdict from a trust that may no longer hold.
 */
export class BundleBoundSessionCache {
  readonly #max: number;
  #generation = '';
  readonly #sessions = new Map<string, Buffer>();

  constructor(max = 1024) {
    this.#max = max;
  }

  /** A session to offer to `peer` under `bundle`, if one was saved under the same bundle. */
  get(peer: string, bundle: TrustBundle): Buffer | undefined {
    this.#sync(bundle);
    return this.#sessions.get(peer);
  }

  /** The generation sessions are kept for now (pass it to `checkResumedServer`). */
  get generation(): string {
    return this.#generation;
  }

  /** Saves a session (from the socket's `session` event) made under `bundle`. */
  set(peer: string, bundle: TrustBundle, session: Buffer): void {
    this.#sync(bundle);
    this.#sessions.delete(peer);
    this.#sessions.set(peer, session);
    if (this.#sessions.size > this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
  }

  /** Forgets the session of `peer` (e.g. after it was refused). */
  delete(peer: string): void {
    this.#sessions.delete(peer);
  }

  get size(): number {
    return this.#sessions.size;
  }

  #sync(bundle: TrustBundle): void {
    const g = bundleGeneration(bundle);
    if (g === this.#generation) return;
    this.#generation = g;
    this.#sessions.clear();
  }
}

/** The outcome of `checkResumedServer`. */
export type ResumedServerCheck = { ok: true; resumed: boolean } | RejectedPeer;

/**
 * For a client socket at `secureConnect`. A full handshake passes (OpenSSL and `checkServerIdentity` verified it).
 * A resumed one was verified when the session was made, and Node keeps no server certificate with a resumed
 * session (`getPeerCertificate()` is empty; checked on Node 24), so it cannot be checked again: it is accepted
 * only when the session was made under the bundle of now (`sessionGeneration`, from `BundleBoundSessionCache`),
 * and when a certificate is available after all, that is verified against the bundle of now as well.
 */
export function checkResumedServer(socket: TLSSocket, bundle: TrustBundle, opts: { trustDomain: string; sessionGeneration: string | undefined; expectedSpiffeId?: string; now?: number }): ResumedServerCheck {
  if (!socket.isSessionReused()) return { ok: true, resumed: false };
  if (opts.sessionGeneration !== bundleGeneration(bundle)) {
    return { ok: false, reason: 'untrusted_chain', detail: 'resumed a TLS session made under another trust bundle: its verdict no longer holds' };
  }
  const chain = chainFromPeerCertificate(socket.getPeerCertificate(true));
  if (chain.length === 0) return { ok: true, resumed: true };
  const r = verifyPeerChain(chain, bundle, {
    trustDomain: opts.trustDomain,
    now: opts.now ?? Date.now(),
    peerRole: 'server',
    ...(opts.expectedSpiffeId !== undefined ? { expectedSpiffeId: opts.expectedSpiffeId } : {}),
  });
  return r.ok ? { ok: true, resumed: true } : r;
}
