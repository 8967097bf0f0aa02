/** Errors of the mesh CA, each with a stable NM_ERR_CA_* code. */

/** Stable codes; the message names the object, the field and the likely cause. */
export type CaErrorCode =
  | 'NM_ERR_CA_CSR_INVALID' // the CSR does not parse, its self-signature fails, or its key is not ECDSA P-256
  | 'NM_ERR_CA_CSR_SAN_MISMATCH' // the CSR asks for a SAN other than the authorized identity
  | 'NM_ERR_CA_IDENTITY_INVALID' // namespace / service account / trust domain is not a valid name
  | 'NM_ERR_CA_TTL_INVALID' // requested lifetime outside the allowed range
  | 'NM_ERR_CA_ROOT_INVALID' // a supplied root certificate or key is unusable
  | 'NM_ERR_CA_SECRET_INVALID' // the Secret data does not hold a consistent CA state
  | 'NM_ERR_CA_TRUST_DOMAIN_CHANGED' // the stored state belongs to another trust domain
  | 'NM_ERR_CA_ROTATION_STATE'; // a rotation step was called out of order

/** An error from the mesh CA. */
export class CaError extends Error {
  /** Stable code for callers and status conditions. */
  readonly code: CaErrorCode;
  constructor(code: CaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'CaError';
  }
}
