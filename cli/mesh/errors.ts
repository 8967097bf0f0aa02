/** Errors of the `kubectl mesh` plugin, each with a stable code and the exit status it maps to. */

/** Codes a caller can match on. */
export type CliErrorCode =
  | 'NM_ERR_CLI_USAGE'
  | 'NM_ERR_CLI_KUBECONFIG'
  | 'NM_ERR_CLI_API'
  | 'NM_ERR_CLI_NOT_FOUND'
  | 'NM_ERR_CLI_NOT_AVAILABLE';

/** A plugin error; the message names the object or flag and suggests the fix. */
export class CliError extends Error {
  readonly code: CliErrorCode;
  constructor(code: CliErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CliError';
    this.code = code;
  }

  /** 2 for usage mistakes (as kubectl), 1 for everything else. */
  get exitCode(): number {
    return this.code === 'NM_ERR_CLI_USAGE' ? 2 : 1;
  }
}

/** The HTTP status of a client-node error (ApiException.code), or undefined for network errors. */
export function httpStatusOf(err: unknown): number | undefined {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'number' ? c : undefined;
}

/** A one-line description of a client-node error: the API's Status message when there is one. */
export function describeApiError(err: unknown): string {
  const body = (err as { body?: unknown })?.body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      // not JSON: fall through to the error's own message
    }
  }
  if (err instanceof Error) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    if (cause?.code === 'ECONNREFUSED') return `connection refused (${cause.message ?? ''}): is the API server up and the kubeconfig's server right?`;
    return err.message.split('\n')[0]!;
  }
  return String(err);
}
