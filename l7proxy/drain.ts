/**
 * What a draining proxy does, and when (pure; proxy.ts carries it out every few milliseconds until done).
 * Order, from the moment the listeners close (a new proxy already accepts on the same ports):
 *   - HTTP/2 sessions (HBONE tunnels from other nodes' proxies, h2 clients): GOAWAY at once. Streams already
 *     opened finish; the peer opens new ones on a new connection, which reaches the new proxy.
 *   - HTTP/1 connections with a request in flight: the response carries `Connection: close` and the connection
 *     closes after it (forward.ts asks `draining()`), so a client never sends another request on it.
 *   - idle HTTP/1 keep-alive connections: closed only after `idleCloseAfterMs`. HTTP/1 has no way to announce a
 *     close, so closing an idle connection races a client that is just sending on it; waiting first means every
 *     client that is using its connection has been told `Connection: close` by then, and only connections nobody
 *     used for that long are closed (the same idea as Envoy's drain sequence).
 *   - opaque TCP tunnels and WebSockets: untouched until the deadline (the proxy cannot tell a safe moment).
 *   - at `timeoutMs`: everything left is cut.
 */

/** Deadline of a drain and when idle HTTP/1 connections may be closed, in ms from its start. */
export type DrainSettings = { timeoutMs: number; idleCloseAfterMs: number };

/** Default drain deadline of a restart or stop: long requests get 15 s. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 15_000;
/** Longest wait before idle HTTP/1 connections are closed (shorter for a short drain: a quarter of it). */
const IDLE_CLOSE_AFTER_MS = 2_000;

/** Settings for a drain of `timeoutMs` (default 15 s); throws on a negative or non-finite value, naming it. */
export function computeDrainSettings(timeoutMs: number = DEFAULT_DRAIN_TIMEOUT_MS): DrainSettings {
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new RangeError(`drain timeout ${timeoutMs} ms: must be a finite number ≥ 0`);
  return { timeoutMs, idleCloseAfterMs: Math.min(IDLE_CLOSE_AFTER_MS, Math.floor(timeoutMs / 4)) };
}

/** Open connections of a draining proxy, by what they carry. */
export type DrainCensus = {
  http1: number;
  /** HTTP/2 sessions, and how many of them have not been sent GOAWAY yet. */
  http2: number;
  http2WithoutGoaway: number;
  /** Opaque TCP tunnels and upgraded (WebSocket) connections. */
  tunnels: number;
  /** Accepted, protocol not known yet (sniffing the first bytes: bounded by the sniff timeout). */
  pending: number;
};

/** One step of a drain. */
export type DrainStep = {
  /** Send GOAWAY to the HTTP/2 sessions that have not had it. */
  goawayHttp2: boolean;
  /** Close HTTP/1 connections with no request in flight. */
  closeIdleHttp1: boolean;
  /** The deadline passed: cut every connection left. */
  cutAll: boolean;
  /** Nothing left: the drain is over. */
  done: boolean;
};

/** The step to take `elapsedMs` into a drain with `census` connections left. */
export function planDrainStep(census: DrainCensus, elapsedMs: number, s: DrainSettings): DrainStep {
  const left = census.http1 + census.http2 + census.tunnels + census.pending;
  if (left === 0) return { goawayHttp2: false, closeIdleHttp1: false, cutAll: false, done: true };
  if (elapsedMs >= s.timeoutMs) return { goawayHttp2: false, closeIdleHttp1: false, cutAll: true, done: false };
  return {
    goawayHttp2: census.http2WithoutGoaway > 0,
    closeIdleHttp1: census.http1 > 0 && elapsedMs >= s.idleCloseAfterMs,
    cutAll: false,
    done: false,
  };
}
