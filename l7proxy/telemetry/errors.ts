/** Errors of the proxy's telemetry (tracing config), each with a stable code. */

/** Codes a caller can match on. */
export type TelemetryErrorCode = 'NM_ERR_TELEMETRY_BAD_CONFIG';

/** A telemetry error; the message names the setting, the value and what would be accepted. */
export class TelemetryError extends Error {
  readonly code: TelemetryErrorCode;
  constructor(code: TelemetryErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TelemetryError';
    this.code = code;
  }
}
