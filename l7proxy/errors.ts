/** Errors of the node proxy (config, lifecycle, request path), each with a stable NM_ERR_PROXY_* code. */

/** Codes a caller can match on; the message names the object, the field and the likely cause. */
export type ProxyErrorCode =
  | 'NM_ERR_PROXY_CONFIG_INVALID'
  | 'NM_ERR_PROXY_NOT_STARTED'
  | 'NM_ERR_PROXY_ALREADY_STARTED'
  | 'NM_ERR_PROXY_LISTEN_FAILED'
  | 'NM_ERR_PROXY_BAD_REQUEST'
  | 'NM_ERR_PROXY_HEADERS_TOO_LARGE'
  | 'NM_ERR_PROXY_UPSTREAM_PROTOCOL'
  | 'NM_ERR_PROXY_UPSTREAM_CONNECT'
  | 'NM_ERR_PROXY_UPSTREAM_RESET'
  | 'NM_ERR_PROXY_UPSTREAM_TIMEOUT'
  | 'NM_ERR_PROXY_NO_ENDPOINT'
  | 'NM_ERR_PROXY_REGEX_UNSUPPORTED';

/** An error of the node proxy with its code. */
export class ProxyError extends Error {
  readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProxyError';
    this.code = code;
  }
}

/** One problem found in a proxy config: where (a field path like `services[0].routes[1].name`) and why. */
export type ConfigIssue = { path: string; message: string };

/** A config rejected by `applyConfig`: every issue found, so the agent can report them all at once. */
export class ProxyConfigError extends ProxyError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    const shown = issues.slice(0, 10).map((i) => `${i.path}: ${i.message}`).join('; ');
    const more = issues.length > 10 ? ` (and ${issues.length - 10} more)` : '';
    super('NM_ERR_PROXY_CONFIG_INVALID', `proxy config rejected, previous config kept: ${shown}${more}`);
    this.name = 'ProxyConfigError';
    this.issues = issues;
  }
}

/** A request the proxy refuses before forwarding anything: the status to answer and a short reason. */
export class RequestRejection extends ProxyError {
  readonly status: number;
  constructor(status: number, reason: string) {
    super(status === 431 ? 'NM_ERR_PROXY_HEADERS_TOO_LARGE' : 'NM_ERR_PROXY_BAD_REQUEST', reason);
    this.name = 'RequestRejection';
    this.status = status;
  }
}

/** The message of anything thrown, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return (err as Error & { code?: string }).code ? `${(err as Error & { code?: string }).code}: ${err.message}` : err.message;
  return String(err);
}
