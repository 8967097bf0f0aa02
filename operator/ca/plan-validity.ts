/** Pure time arithmetic of the CA: leaf validity windows and expiry warnings. */

/** Limits and defaults for leaf lifetimes (ms). */
export const LEAF_TTL = {
  /** Istio's SECRET_TTL and Linkerd's proxy certificates: one day. */
  default: 24 * 3_600_000,
  /** "Configurable down to minutes": one minute is the floor; renewal then happens every ~30 s. */
  min: 60_000,
  /** A leaf is a short-lived credential; a month is already generous. */
  max: 30 * 24 * 3_600_000,
} as const;

/** Default backdating of notBefore, so a peer whose clock runs a little behind still accepts a fresh cert. */
export const DEFAULT_BACKDATE_MS = 60_000;

/** `kubectl mesh check` warns when a root or intermediate expires within this window. */
export const CA_EXPIRY_WARNING_MS = 60 * 24 * 3_600_000;

/** Validity of a new leaf: backdated start, end at now + ttl but never after its issuer's end. */
export function computeLeafValidity(nowMs: number, ttlMs: number, backdateMs: number, issuerNotAfterMs: number): { notBefore: Date; notAfter: Date } {
  // X.509 times have one-second resolution; round so the certificate says exactly what we return.
  const notBefore = Math.floor((nowMs - backdateMs) / 1000) * 1000;
  const notAfter = Math.min(Math.floor((nowMs + ttlMs) / 1000) * 1000, issuerNotAfterMs);
  return { notBefore: new Date(notBefore), notAfter: new Date(notAfter) };
}

/** One CA certificate as `inspect()` reports it. */
export interface CaCertSummary {
  role: 'root' | 'intermediate';
  /** Lowercase hex SHA-256 of the DER. */
  fingerprint: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** This root/intermediate signs new certificates now. */
  issuing: boolean;
  /** Added by a rotation, published in the bundle, not yet issuing. */
  pending: boolean;
}

/** A warning line for each CA certificate that expires within `windowMs` of `nowMs` (or already has). */
export function computeCaExpiryWarnings(certs: readonly CaCertSummary[], nowMs: number, windowMs = CA_EXPIRY_WARNING_MS): string[] {
  const out: string[] = [];
  for (const c of certs) {
    const left = c.notAfter.getTime() - nowMs;
    if (left > windowMs) continue;
    const what = `${c.role} ${c.subject} (sha256 ${c.fingerprint.slice(0, 16)})`;
    out.push(
      left <= 0
        ? `${what} expired at ${c.notAfter.toISOString()}: rotate it now, peers refuse its chains`
        : `${what} expires in ${Math.ceil(left / 86_400_000)} days (${c.notAfter.toISOString()}): rotate it before then`,
    );
  }
  return out;
}
