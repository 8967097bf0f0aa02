/** Key and certificate helpers for the CA: ECDSA key generation, PEM import/export, key-to-certificate match. */
import { createPrivateKey, createPublicKey, randomBytes, type webcrypto } from 'node:crypto';
import { CaError } from './errors.ts';
import * as x509 from './x509.ts';

/** A WebCrypto key (Node's global crypto, typed through node:crypto since the lib has no DOM). */
export type CaKey = webcrypto.CryptoKey;
/** A WebCrypto key pair. */
export type CaKeyPair = webcrypto.CryptoKeyPair;

/** Curves a CA key may use; leaves and our own intermediates are always P-256. */
export type CaCurve = 'P-256' | 'P-384';

/** ECDSA signing parameters for a key on `curve` (SHA-256 for P-256, SHA-384 for P-384, as RFC 5758 pairs them). */
export function signingAlgorithmFor(curve: CaCurve): { name: 'ECDSA'; hash: 'SHA-256' | 'SHA-384' } {
  return { name: 'ECDSA', hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
}

/** Makes an extractable ECDSA key pair (extractable because the CA persists keys in its Secret). */
export async function generateCaKeyPair(curve: CaCurve = 'P-256'): Promise<CaKeyPair> {
  return (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: curve }, true, ['sign', 'verify'])) as CaKeyPair;
}

/** PKCS#8 PEM of a private key. */
export async function exportPrivateKeyPem(key: CaKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: der }]) + '\n';
}

/** PEM of a certificate, newline-terminated so PEMs concatenate safely. */
export function certPem(cert: x509.X509Certificate): string {
  return cert.toString('pem') + '\n';
}

/** The curve of a certificate's ECDSA key, or a CaError naming `what` when it is not P-256/P-384. */
export function curveOf(cert: x509.X509Certificate, what: string): CaCurve {
  const alg = cert.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (alg.name === 'ECDSA' && (alg.namedCurve === 'P-256' || alg.namedCurve === 'P-384')) return alg.namedCurve;
  throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what}: key algorithm is ${alg.name ?? '?'} ${alg.namedCurve ?? ''}; the mesh CA needs ECDSA P-256 or P-384`);
}

/**
 * Imports a PKCS#8 (or SEC1 "EC PRIVATE KEY") PEM as a WebCrypto signing key and checks that it belongs to
 * `cert`: a Secret holding a key of another certificate would otherwise sign certificates nobody can verify.
 */
export async function importKeyFor(cert: x509.X509Certificate, keyPem: string, what: string): Promise<CaKey> {
  let pkcs8: Buffer;
  let spki: Buffer;
  try {
    const priv = createPrivateKey(keyPem);
    pkcs8 = priv.export({ type: 'pkcs8', format: 'der' });
    spki = createPublicKey(priv).export({ type: 'spki', format: 'der' });
  } catch (err) {
    throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what}: private key does not parse as PEM (PKCS#8 or EC): ${(err as Error).message}`, { cause: err });
  }
  if (!Buffer.from(cert.publicKey.rawData).equals(spki)) {
    throw new CaError('NM_ERR_CA_ROOT_INVALID', `${what}: private key does not match the certificate ${cert.subject} (was the wrong key pasted into the Secret?)`);
  }
  const curve = curveOf(cert, what);
  return crypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: curve }, true, ['sign']);
}

/**
 * A random positive serial number (hex) of 16 bytes: unpredictable (CA/B BR style, ≥64 bits of entropy), well
 * under RFC 5280's 20-octet limit, and with the top bit clear so DER does not need a leading zero.
 */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}
