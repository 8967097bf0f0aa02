/** Name rules for SPIFFE IDs the CA issues (kept in step with l7proxy/identity/spiffe-id.ts, which verifies them). */

/** The identity a certificate is issued for. */
export interface SvidIdentity {
  /** Kubernetes namespace. */
  namespace: string;
  /** Service account name in that namespace. */
  serviceAccount: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** True for a Kubernetes namespace name (DNS-1123 label). */
export function isValidNamespace(name: string): boolean {
  return typeof name === 'string' && name.length <= 63 && DNS_LABEL.test(name);
}

/** True for a Kubernetes service account name (DNS-1123 subdomain). */
export function isValidServiceAccount(name: string): boolean {
  return typeof name === 'string' && name.length <= 253 && name.split('.').every((l) => l.length <= 63 && DNS_LABEL.test(l));
}

/** True for a SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`. */
export function isValidTrustDomain(td: string): boolean {
  return typeof td === 'string' && td.length > 0 && td.length <= 255 && /^[a-z0-9._-]+$/.test(td);
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`; callers validate the parts first. */
export function formatSpiffeId(trustDomain: string, id: SvidIdentity): string {
  return `spiffe://${trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}
