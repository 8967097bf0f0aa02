/** Errors of the sandbox OTLP receiver, each with a stable code. */

/** Codes a caller can match on. */
export type OtlpReceiverErrorCode =
  | 'NM_ERR_OTLP_PROTOBUF_TRUNCATED'
  | 'NM_ERR_OTLP_PROTOBUF_WIRE_TYPE'
  | 'NM_ERR_OTLP_JSON_INVALID'
  | 'NM_ERR_OTLP_BAD_ARGUMENT';

/** An error of the OTLP receiver; the message names the message type and field that failed to decode. */
export class OtlpReceiverError extends Error {
  readonly code: OtlpReceiverErrorCode;
  constructor(code: OtlpReceiverErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OtlpReceiverError';
    this.code = code;
  }
}
