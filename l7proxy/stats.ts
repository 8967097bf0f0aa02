/** The proxy's counters (plain numbers, read by the agent's Prometheus exporter) and its logger type. */

/** Counters since start; the exporter turns them into metrics, so names stay stable. */
export type ProxyStats = {
  requests: { total: number; byCode: Record<string, number> };
  /**
   * Requests refused before routing: framing (400), header limits (431), path/host rules (400), parse errors by llhttp
   * code, and requests shed with 503 because this worker was overloaded (overload.ts).
   */
  rejected: { malformed: number; headersTooLarge: number; badTarget: number; overloaded: number; parseErrors: Record<string, number> };
  retries: number;
  retryBudgetExhausted: number;
  timeouts: { request: number; backendRequest: number };
  circuitBreaker: { 'max-requests': number; 'max-pending-requests': number; 'max-connections': number };
  rateLimited: number;
  faults: { delayed: number; aborted: number };
  authz: { allow: number; deny: number; audit: number };
  upstream: { connectFailures: number; resets: number; protocolErrors: number; ejections: number; noEndpoint: number };
  /** `overloadRefused`: new connections reset because the worker was far over its overload limits (overload.ts). */
  connections: { accepted: number; active: number; http1: number; http2: number; tcp: number; noOriginalDst: number; unknownDestination: number; tcpDenied: number; overloadRefused: number };
  http2: { rapidResetGoaways: number };
  /** Plaintext from outside the mesh steered to the proxy (inbound-plaintext.ts): served under policy, reset for STRICT, reset as unplaceable. */
  plaintextInbound: { policed: number; strictRefused: number; refused: number };
  upgrades: number;
  mirrors: number;
  config: { applied: number; rejected: number };
};

/** Fresh zeroed counters. */
export function createStats(): ProxyStats {
  return {
    requests: { total: 0, byCode: {} },
    rejected: { malformed: 0, headersTooLarge: 0, badTarget: 0, overloaded: 0, parseErrors: {} },
    retries: 0,
    retryBudgetExhausted: 0,
    timeouts: { request: 0, backendRequest: 0 },
    circuitBreaker: { 'max-requests': 0, 'max-pending-requests': 0, 'max-connections': 0 },
    rateLimited: 0,
    faults: { delayed: 0, aborted: 0 },
    authz: { allow: 0, deny: 0, audit: 0 },
    upstream: { connectFailures: 0, resets: 0, protocolErrors: 0, ejections: 0, noEndpoint: 0 },
    connections: { accepted: 0, active: 0, http1: 0, http2: 0, tcp: 0, noOriginalDst: 0, unknownDestination: 0, tcpDenied: 0, overloadRefused: 0 },
    http2: { rapidResetGoaways: 0 },
    plaintextInbound: { policed: 0, strictRefused: 0, refused: 0 },
    upgrades: 0,
    mirrors: 0,
    config: { applied: 0, rejected: 0 },
  };
}

/** Count a response code. */
export function countResponse(stats: ProxyStats, status: number): void {
  stats.requests.total++;
  // A numeric key is the same property as its decimal string, without building the string per request.
  const byCode = stats.requests.byCode as unknown as Record<number, number>;
  byCode[status] = (byCode[status] ?? 0) + 1;
}

/** What the proxy logs through; the host process decides where lines go. */
export type ProxyLogger = {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
};

/** A logger that drops everything. */
export const silentLogger: ProxyLogger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

/** One line of the access log: what was received, what was forwarded where, and the outcome. */
export type AccessLogEntry = {
  connection: number;
  protocol: 'http1' | 'http2' | 'websocket';
  method: string;
  /** The normalized target as forwarded (after rewrites), or the raw one when the request was refused. */
  target: string;
  authority: string | undefined;
  status: number;
  /** True when bytes of this request were sent upstream. */
  forwarded: boolean;
  backend: string | undefined;
  endpoint: string | undefined;
  attempts: number;
  durationMs: number;
  source: string | undefined;
  /** Why the proxy answered itself (refusal, timeout, overload...). */
  reason: string | undefined;
};
