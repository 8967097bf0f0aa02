/** The operator's error codes (NM_ERR_OPERATOR_*); user-object problems are conditions, never thrown. */

/** Stable codes of operator errors, for logs and tests. */
export type OperatorErrorCode =
  | 'NM_ERR_OPERATOR_SNAPSHOT_INVALID'
  | 'NM_ERR_OPERATOR_SHARD_OVERFLOW'
  | 'NM_ERR_OPERATOR_UNKNOWN_NODE';

/** An operator error with a stable code; the message names the object, the field and the likely cause. */
export class OperatorError extends Error {
  readonly code: OperatorErrorCode;

  constructor(code: OperatorErrorCode, message: string) {
    super(message);
    this.name = 'OperatorError';
    this.code = code;
  }
}
