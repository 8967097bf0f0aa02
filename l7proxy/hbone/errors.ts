/** Errors of the HBONE tunnel between node proxies, each with a stable NM_ERR_HBONE_* code. */

/** Codes a caller can match on. `CONNECT` codes mean nothing reached the destination: safe to retry elsewhere. */
export type HboneErrorCode =
  | 'NM_ERR_HBONE_CONNECT' // TCP/TLS to the destination node proxy failed (refused, unreachable, timeout)
  | 'NM_ERR_HBONE_CONNECT_REFUSED' // the destination proxy answered the CONNECT with a non-200 status
  | 'NM_ERR_HBONE_NO_IDENTITY' // the source workload has no certificate (yet, or it expired)
  | 'NM_ERR_HBONE_PEER_REJECTED' // the destination proxy's certificate failed verification
  | 'NM_ERR_HBONE_LISTEN' // the inbound listener could not bind
  | 'NM_ERR_HBONE_CLOSED'; // the connector or server was stopped

/** An error of the tunnel with its code. */
export class HboneError extends Error {
  readonly code: HboneErrorCode;
  constructor(code: HboneErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HboneError';
    this.code = code;
  }
}

/** True for errors after which the request never reached the destination workload (retry on another endpoint is safe). */
export function isHboneConnectError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && (code.startsWith('NM_ERR_HBONE_CONNECT') || code === 'NM_ERR_HBONE_NO_IDENTITY' || code === 'NM_ERR_HBONE_PEER_REJECTED');
}
