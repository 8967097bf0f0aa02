/** Errors of the simulated cluster (topology, state, kubelet, supervisor), each with a stable code. */

/** Codes a caller can match on; the message says which object, which field and the likely cause. */
export type SandboxErrorCode =
  | 'NM_ERR_SANDBOX_NOT_ROOT'
  | 'NM_ERR_SANDBOX_ALREADY_UP'
  | 'NM_ERR_SANDBOX_STALE_STATE'
  | 'NM_ERR_SANDBOX_NOT_UP'
  | 'NM_ERR_SANDBOX_STATE_CORRUPT'
  | 'NM_ERR_SANDBOX_COMMAND_FAILED'
  | 'NM_ERR_SANDBOX_BAD_ARGUMENT'
  | 'NM_ERR_SANDBOX_PORT_IN_USE'
  | 'NM_ERR_SANDBOX_IPAM_EXHAUSTED'
  | 'NM_ERR_SANDBOX_CGROUP2_MISSING'
  | 'NM_ERR_SANDBOX_ISOLATION'
  | 'NM_ERR_SANDBOX_TIMEOUT'
  | 'NM_ERR_SANDBOX_POD_NOT_FOUND'
  | 'NM_ERR_SANDBOX_IMAGE_UNSUPPORTED';

/** An error of the sandbox with its code. */
export class SandboxError extends Error {
  readonly code: SandboxErrorCode;
  constructor(code: SandboxErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxError';
    this.code = code;
  }
}

/** The message of anything thrown, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
