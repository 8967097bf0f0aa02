/** Errors of the sandbox controllers: one class, stable codes `NM_ERR_CTRL_<WHAT>`. */

/** The codes a controller error can carry; callers branch on these, never on messages. */
export const ControllerErrorCode = {
  /** startControllers was given options it cannot use (missing kubeconfig, unreadable file). */
  config: 'NM_ERR_CTRL_CONFIG',
  /** A call to the API server failed in a way a retry may fix (network, 5xx, conflict after retries). */
  api: 'NM_ERR_CTRL_API',
  /** The informers did not finish their initial list, so no controller may act yet. */
  notSynced: 'NM_ERR_CTRL_NOT_SYNCED',
  /** A sync was skipped because the cache has not yet seen this controller's own recent writes. */
  staleCache: 'NM_ERR_CTRL_STALE_CACHE',
  /** The API server lacks a resource or subresource a real one serves. */
  unsupported: 'NM_ERR_CTRL_UNSUPPORTED',
} as const;
/** One of the codes above. */
export type ControllerErrorCode = (typeof ControllerErrorCode)[keyof typeof ControllerErrorCode];

/** An error raised by a controller: a stable code plus a message naming the object and the likely cause. */
export class ControllerError extends Error {
  readonly code: ControllerErrorCode;
  constructor(code: ControllerErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'ControllerError';
    this.code = code;
  }
}
