/** Errors of the agent's metrics and access log, each with a stable code. Thrown at definition (or listener start) time, never per observation. */

/** Codes a caller can match on. */
export type MetricsErrorCode =
  | 'NM_ERR_METRICS_BAD_NAME'
  | 'NM_ERR_METRICS_FORBIDDEN_LABEL'
  | 'NM_ERR_METRICS_DUPLICATE'
  | 'NM_ERR_METRICS_BAD_BUCKETS'
  | 'NM_ERR_METRICS_BAD_OPTION'
  /** The metrics listener could not bind its port. */
  | 'NM_ERR_METRICS_LISTEN';

/** A metrics error; the message names the metric, the label or option, and what is allowed. */
export class MetricsError extends Error {
  readonly code: MetricsErrorCode;
  constructor(code: MetricsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MetricsError';
    this.code = code;
  }
}
