/** Errors of the agent's certificate manager, each with a stable NM_ERR_CERTS_* code. */

/** Stable codes. */
export type CertsErrorCode =
  | 'NM_ERR_CERTS_SIGNER_FAILED' // the signer (operator CA) could not be reached or refused
  | 'NM_ERR_CERTS_BAD_RESPONSE' // the signer returned a chain that is not for our key or identity, or already expired
  | 'NM_ERR_CERTS_STORE' // the on-disk copy could not be written or read
  | 'NM_ERR_CERTS_IDENTITY_INVALID'; // an identity with an invalid namespace / service-account name

/** An error from the certificate manager. */
export class CertsError extends Error {
  /** Stable code. */
  readonly code: CertsErrorCode;
  constructor(code: CertsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'CertsError';
  }
}
