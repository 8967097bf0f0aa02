/** Key pairs and CSRs for workload identities, and the check that a signed chain really is ours. */
import { createPrivateKey, createPublicKey, type webcrypto } from 'node:crypto';
import { CertsError } from './errors.ts';
import * as x509 from './x509.ts';

/** A workload identity the node needs a certificate for. */
export interface WorkloadIdentity {
  /** Kubernetes namespace. */
  namespace: string;
  /** Service account name. */
  serviceAccount: string;
}

/** A fresh private key (PKCS#8 PEM), its SPKI (DER) and a CSR over it. */
export interface KeyAndCsr {
  keyPem: string;
  spki: Uint8Array;
  csrPem: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** The map key and the file-name stem of an identity: `<ns>_<sa>` (`_` appears in neither name, so it is unambiguous). */
export function identityKey(id: WorkloadIdentity): string {
  return `${id.namespace}_${id.serviceAccount}`;
}

/** Throws unless both names are valid Kubernetes names (they end up in file names and SPIFFE IDs). */
export function checkIdentity(id: WorkloadIdentity): void {
  const nsOk = id.namespace.length <= 63 && DNS_LABEL.test(id.namespace);
  const saOk = id.serviceAccount.length <= 253 && id.serviceAccount.split('.').every((l) => l.length <= 63 && DNS_LABEL.test(l));
  if (!nsOk || !saOk) {
    throw new CertsError('NM_ERR_CERTS_IDENTITY_INVALID', `identity ${JSON.stringify(id)}: namespace must be a DNS-1123 label and service account a DNS-1123 subdomain`);
  }
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function spiffeIdOf(trustDomain: string, id: WorkloadIdentity): string {
  return `spiffe://${trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/**
 * Makes a new ECDSA P-256 key and a CSR for `spiffeId`. A new key on every renewal: a leaked key is then good
 * for one certificate lifetime at most. The CSR carries the SAN it wants (the CA refuses a mismatch) and no
 * subject, as the CA ignores subjects anyway.
 */
export async function generateKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])],
  });
  const [pkcs8, spki] = await Promise.all([crypto.subtle.exportKey('pkcs8', keys.privateKey), crypto.subtle.exportKey('spki', keys.publicKey)]);
  return {
    keyPem: x509.PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]) + '\n',
    spki: new Uint8Array(spki),
    csrPem: csr.toString('pem') + '\n',
  };
}

/** SPKI (DER) of a PEM private key. */
export function spkiOfKeyPem(keyPem: string): Uint8Array {
  return new Uint8Array(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' }));
}

/**
 * Checks a chain from the signer before we use it: the leaf must carry our public key, exactly our SPIFFE ID,
 * and not be expired. This is a sanity check of our own signer's answer (peers do the security check); it
 * catches a mixed-up response early instead of at the first handshake. Returns the leaf's validity.
 */
export function checkIssuedChain(certChainPem: string, spki: Uint8Array, spiffeId: string, nowMs: number): { notBefore: Date; notAfter: Date; serialNumber: string; issuer: string } {
  let leaf: x509.X509Certificate;
  try {
    const blocks = x509.PemConverter.decodeWithHeaders(certChainPem).filter((b) => b.type === 'CERTIFICATE');
    if (blocks.length === 0) throw new Error('no CERTIFICATE block');
    leaf = new x509.X509Certificate(blocks[0]!.rawData);
  } catch (err) {
    throw new CertsError('NM_ERR_CERTS_BAD_RESPONSE', `signer response for ${spiffeId} is not a PEM certificate chain: ${(err as Error).message}`, { cause: err });
  }
  if (!Buffer.from(leaf.publicKey.rawData).equals(spki)) {
    throw new CertsError('NM_ERR_CERTS_BAD_RESPONSE', `signer returned a certificate for another key than the CSR's (identity ${spiffeId})`);
  }
  const uris = (leaf.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON() ?? []).filter((n) => n.type === 'url');
  if (uris.length !== 1 || uris[0]!.value !== spiffeId) {
    throw new CertsError('NM_ERR_CERTS_BAD_RESPONSE', `signer returned SAN ${JSON.stringify(uris.map((u) => u.value))} for ${spiffeId}`);
  }
  if (leaf.notAfter.getTime() <= nowMs) throw new CertsError('NM_ERR_CERTS_BAD_RESPONSE', `signer returned a certificate for ${spiffeId} that expired at ${leaf.notAfter.toISOString()} (clock skew between agent and operator?)`);
  // Serial and issuer name go to the agent's status: they show each renewal and which CA chain is in use.
  return { notBefore: leaf.notBefore, notAfter: leaf.notAfter, serialNumber: leaf.serialNumber, issuer: leaf.issuer };
}
